//! `kube-control-plane`: starts the test control plane (see the `kubeenv` crate) for the local demo and
//! keeps it running until interrupted. Prints the kubeconfig paths of both identities.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let plane = kubeenv::ControlPlane::start().await;
    println!("api_server={}", plane.url());
    println!("admin_kubeconfig={}", plane.kubeconfig(kubeenv::Identity::Admin).display());
    println!("agent_kubeconfig={}", plane.kubeconfig(kubeenv::Identity::Agent).display());
    println!("startup_ms={}", plane.startup.as_millis());
    tokio::signal::ctrl_c().await?;
    drop(plane);
    Ok(())
}
