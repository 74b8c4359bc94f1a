//! Prints the ManagedInstance CRD as YAML: `cargo run -p cluster-agent --bin crdgen > deploy/crds/managedinstances.yaml`.

use kube::CustomResourceExt as _;

fn main() -> anyhow::Result<()> {
    print!("{}", serde_saphyr::to_string(&cluster_agent::crd::ManagedInstance::crd())?);
    Ok(())
}
