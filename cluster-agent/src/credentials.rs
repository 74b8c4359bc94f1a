//! Answers the control plane's requests for an instance's connection credentials
//! (`streams::credentials`): read at request time from the instance's Secret in the cluster, sent to the
//! asking connection's reply subject only, never logged, never published to a stream.

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt as _};
use streams::credentials::{CredentialsReply, CredentialsRequest, RESPONDERS, request_subject};

use crate::{
    AgentConfig,
    render::{INSTANCE_LABEL, admin_user, namespace, service_port},
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
    let not_ready = |reason: String| CredentialsReply::NotReady { reason };
    let Some(username) = admin_user(&request.service) else {
        return not_ready(format!("credentials of {} instances are not delivered yet", request.service));
    };
    let namespace = namespace(&request.project);
    let name = format!("{}-credentials", request.name);
    let secrets: Api<Secret> = Api::namespaced(config.client.clone(), &namespace);
    let secret = match secrets.get_opt(&name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return not_ready("the credentials are not created yet".into()),
        Err(e) => return not_ready(format!("reading the credentials failed: {e}")),
    };
    // The name came from the control plane, but the Secret must be this instance's (a same-named
    // Secret of a deprovisioned instance is not).
    if secret.labels().get(INSTANCE_LABEL) != Some(&request.instance_id.to_string()) {
        return not_ready("the credentials found belong to another instance".into());
    }
    let password = secret
        .data
        .as_ref()
        .and_then(|d| d.get("password"))
        .and_then(|p| String::from_utf8(p.0.clone()).ok())
        .or_else(|| secret.string_data.as_ref().and_then(|d| d.get("password")).cloned());
    match password {
        Some(password) => CredentialsReply::Found {
            username: username.to_owned(),
            password,
            host: format!("{}.{namespace}.svc", request.name),
            port: service_port(&request.service),
        },
        None => not_ready("the credentials Secret holds no password".into()),
    }
}
