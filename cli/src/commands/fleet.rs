//! `cpctl fleet`: the platform admin's view of the clusters, cordoning and draining one, and moving an
//! instance to another cluster of its region (`api::routes::fleet`).

use hyper::Method;
use wire::{ClusterStatus, DrainRequest, MigrateRequest};

use super::Context;
use crate::{
    args::{Fleet, Wait},
    client::segment,
    output::{Rows, or_dash, print, wire_name},
};

const NO_WAIT: Wait = Wait { wait: false, timeout: std::time::Duration::ZERO };

fn cluster_rows(clusters: &[ClusterStatus]) -> Rows {
    Rows::new(&["cluster", "region", "state", "instances", "cordoned", "draining", "migrating"]).rows(
        clusters,
        |c| {
            vec![
                c.name.clone(),
                c.region.clone(),
                wire_name(&c.state),
                c.instances.to_string(),
                if c.cordoned { "yes" } else { "no" }.to_owned(),
                or_dash(c.draining.map(|p| format!("{p} at a time"))),
                c.migrating.to_string(),
            ]
        },
    )
}

pub(super) async fn fleet(context: &Context, command: Fleet) -> anyhow::Result<()> {
    let cluster_path = |name: &str, action: &str| format!("/v1/admin/clusters/{}/{action}", segment(name));
    let status = match command {
        Fleet::Clusters => {
            let clusters: Vec<ClusterStatus> = context.client.get("/v1/admin/clusters", &[]).await?;
            return print(context.format, &clusters, |c| cluster_rows(c));
        }
        Fleet::Cordon { cluster } => {
            context.client.send(Method::POST, &cluster_path(&cluster, "cordon"), &[], None::<&()>).await?
        }
        Fleet::Uncordon { cluster } => {
            context.client.send(Method::POST, &cluster_path(&cluster, "uncordon"), &[], None::<&()>).await?
        }
        Fleet::Drain { cluster, parallel } => {
            let body = DrainRequest { parallel: Some(parallel) };
            context.client.send(Method::POST, &cluster_path(&cluster, "drain"), &[], Some(&body)).await?
        }
        // The operation records the request; the move itself shows as the instance's `migration` until
        // it ends (`cpctl instances get`).
        Fleet::Migrate { instance, to } => {
            let path = format!("{}/migrate", context.instance_path(&instance).await?);
            return context.write(Method::POST, &path, Some(&MigrateRequest { cluster: to }), NO_WAIT).await;
        }
        Fleet::CancelMigration { instance } => {
            let path = format!("{}/migration", context.instance_path(&instance).await?);
            return context.write::<()>(Method::DELETE, &path, None, NO_WAIT).await;
        }
    };
    let status: ClusterStatus = status;
    print(context.format, &status, |c| cluster_rows(std::slice::from_ref(c)))
}
