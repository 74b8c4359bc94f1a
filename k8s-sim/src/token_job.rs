//! The users Job of an InfluxDB instance (cluster-agent `render::user_tokens`), played: InfluxDB makes a
//! token per user the Job grants one, and the Job writes it, with the authorization's id and the user's
//! generation, into the user's Secret, as its merge PATCH through the API server does. The simulator
//! reads the Job's `grant` lines (`if <condition>; then grant '<user>' '<secret>' '<generation>' …`): a
//! grant whose condition is `true` (a new token asked) always makes one; the other (`[ -z "$TOKEN_i" ]`)
//! only for a Secret without a token. A revocation needs nothing here: the simulator runs no InfluxDB.

use serde_json::{Value, json};

use crate::store::Store;

/// Label on the pods of the users Jobs that hand tokens over (cluster-agent
/// `render::user_tokens::WRITES_SECRETS_LABEL`).
const WRITES_SECRETS_LABEL: &str = "cp.example.com/writes-user-secrets";

/// Hands over the tokens `job` makes, if it is a users Job that makes any.
pub(crate) fn hand_over(store: &mut Store, namespace: &str, job: &Value) {
    if job["spec"]["template"]["metadata"]["labels"][WRITES_SECRETS_LABEL].is_null() {
        return;
    }
    let Some(ty) = store.types().iter().find(|t| t.key() == "secrets").cloned() else { return };
    let script = job["spec"]["template"]["spec"]["containers"][0]["command"][2].as_str().unwrap_or_default();
    for line in script.lines().filter(|l| l.starts_with("if ") && l.contains("; then grant '")) {
        let always = line.starts_with("if true;");
        let words: Vec<&str> = line.split('\'').collect();
        // if …; then grant '<user>' '<secret>' '<generation>' …: the quoted words are the odd pieces.
        let (Some(secret), Some(generation)) = (words.get(3), words.get(5)) else { continue };
        let Some(current) = store.get(&ty, namespace, secret) else { continue };
        let has_token =
            !current["data"]["password"].is_null() || !current["stringData"]["password"].is_null();
        if has_token && !always {
            continue;
        }
        let token = format!("simtoken{}{}==", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let id = format!("{:016x}", rand_id());
        let patch = json!({
            "metadata": {"annotations": {"cp.example.com/password-generation": generation}},
            "stringData": {"password": token, "id": id},
        });
        let _ = store.merge_patch(&ty, namespace, secret, &patch, false);
    }
}

fn rand_id() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default())
}
