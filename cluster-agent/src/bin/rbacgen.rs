//! Prints the agent's service account, cluster role and binding:
//! `cargo run -p cluster-agent --bin rbacgen > deploy/rbac/cluster-agent.yaml`.

fn main() -> anyhow::Result<()> {
    print!("{}", cluster_agent::rbac::manifests_yaml()?);
    Ok(())
}
