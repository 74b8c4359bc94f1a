//! `kube-control-plane`: starts the test control plane (see the `kubeenv` crate) for the local demo
//! (`./dev up --real-kube`) and keeps it running until SIGINT or SIGTERM, then stops every component.
//! Prints `key=value` lines: the API server's URL, both identities' kubeconfigs, the start-up time.

use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let plane = kubeenv::ControlPlane::start().await;
    println!("api_server={}", plane.url());
    println!("admin_kubeconfig={}", plane.kubeconfig(kubeenv::Identity::Admin).display());
    println!("agent_kubeconfig={}", plane.kubeconfig(kubeenv::Identity::Agent).display());
    println!("startup_ms={}", plane.startup.as_millis());
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    // Dropping the plane kills etcd, the Kubernetes components and kwok, and removes their directory.
    drop(plane);
    Ok(())
}
