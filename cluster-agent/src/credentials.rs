//! Answers the control plane's requests for an instance's connection credentials
//! (`streams::credentials`): read at request time from the instance's Secret in the cluster, sent to the
//! asking connection's reply subject only, never logged, never published to a stream.

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt as _, api::DynamicObject};
use streams::credentials::{CredentialsReply, CredentialsRequest, RESPONDERS, request_subject};

use crate::{
    AgentConfig,
    controller::api_resource,
    render::{ChildKind, INSTANCE_LABEL, admin_user, namespace, rotation::connect_host, service_port, users},
};

/// Answers until cancelled. Agents of one cluster share the requests (a queue group).
pub(crate) async fn run(config: Arc<AgentConfig>) -> anyhow::Result<()> {
    let mut requests =
        config.nats.queue_subscribe(request_subject(&config.cluster), RESPONDERS.into()).await?;
    while let Some(message) = requests.next().await {
        let Some(reply) = message.reply.clone() else { continue };
        let Ok(request) = serde_json::from_slice::<CredentialsRequest>(&message.payload) else {
            tracing::warn!("a malformed credentials request was ignored");
            continue;
        };
        // Sealed to the asker's one-time key: never in clear on the wire or in a log of NATS traffic.
        let sealed = match answer(&config, &request).await.seal(&request.reply_key) {
            Ok(sealed) => sealed,
            Err(e) => {
                tracing::warn!(error = %e, "a credentials answer could not be sealed");
                continue;
            }
        };
        let body = serde_json::to_vec(&sealed)?;
        if let Err(e) = config.nats.publish(reply, body.into()).await {
            tracing::warn!(error = %e, "answering a credentials request failed");
        }
    }
    Ok(())
}

async fn answer(config: &AgentConfig, request: &CredentialsRequest) -> CredentialsReply {
    if let Some(user) = &request.user {
        return user_answer(config, request, user).await;
    }
    let not_ready = |reason: String| CredentialsReply::NotReady { reason };
    let namespace = namespace(&request.project);
    let postgres = request.service == "postgresql";
    let name =
        if postgres { format!("{}-app", request.name) } else { format!("{}-credentials", request.name) };
    let secrets: Api<Secret> = Api::namespaced(config.client.clone(), &namespace);
    let secret = match secrets.get_opt(&name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return not_ready("the credentials are not created yet".into()),
        Err(e) => return not_ready(format!("reading the credentials failed: {e}")),
    };
    // The name came from the control plane, but the Secret must be this instance's (a same-named
    // Secret of a deprovisioned instance is not).
    let ours = if postgres {
        owned_by_instance_cluster(config, &namespace, request, &secret).await
    } else {
        secret.labels().get(INSTANCE_LABEL) == Some(&request.instance_id.to_string())
    };
    if !ours {
        return not_ready("the credentials found belong to another instance".into());
    }
    let value = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|p| String::from_utf8(p.0.clone()).ok())
            .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).cloned())
    };
    // PostgreSQL: CloudNativePG's application user, as its Secret names it (`username`); the others: the
    // user each image's entrypoint made.
    let username = if postgres { value("username") } else { admin_user(&request.service).map(str::to_owned) };
    match (username, value("password")) {
        (Some(username), Some(password)) => CredentialsReply::Found {
            username,
            password,
            host: connect_host(&request.service, &request.name, &namespace),
            port: service_port(&request.service),
        },
        _ => not_ready("the credentials Secret holds no user name or password".into()),
    }
}

/// Whether CloudNativePG made `secret` for the Cluster of the instance asked about: the Secret's owner is
/// a Cluster that carries the instance's label.
async fn owned_by_instance_cluster(
    config: &AgentConfig,
    namespace: &str,
    request: &CredentialsRequest,
    secret: &Secret,
) -> bool {
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(config.client.clone(), namespace, &api_resource(ChildKind::PostgresCluster));
    let Ok(Some(cluster)) = clusters.get_opt(&request.name).await else { return false };
    cluster.labels().get(INSTANCE_LABEL) == Some(&request.instance_id.to_string())
        && secret
            .owner_references()
            .iter()
            .any(|o| o.kind == "Cluster" && Some(&o.uid) == cluster.uid().as_ref())
}

/// The credentials of user `user` of the instance: its Secret (`render::users`), which must carry the
/// instance's and the user's labels (a same-named Secret of another instance, or one someone else made,
/// is not answered with).
async fn user_answer(config: &AgentConfig, request: &CredentialsRequest, user: &str) -> CredentialsReply {
    let not_ready = |reason: String| CredentialsReply::NotReady { reason };
    let namespace = namespace(&request.project);
    let secrets: Api<Secret> = Api::namespaced(config.client.clone(), &namespace);
    let secret = match secrets.get_opt(&users::secret_name(&request.name, user)).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return not_ready(format!("the password of user {user} is not made yet")),
        Err(e) => return not_ready(format!("reading the user's credentials failed: {e}")),
    };
    let labels = secret.labels();
    if labels.get(INSTANCE_LABEL) != Some(&request.instance_id.to_string())
        || labels.get(users::USER_LABEL).map(String::as_str) != Some(user)
    {
        return not_ready("the credentials found belong to another instance or user".into());
    }
    let value = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|p| String::from_utf8(p.0.clone()).ok())
            .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).cloned())
    };
    match (value("username"), value("password")) {
        (Some(username), Some(password)) if username == user => CredentialsReply::Found {
            username,
            password,
            host: connect_host(&request.service, &request.name, &namespace),
            port: service_port(&request.service),
        },
        _ => not_ready("the user's Secret holds no user name or password".into()),
    }
}
