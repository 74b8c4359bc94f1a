//! The shell of the users Jobs that hand a token the service made to the user's Secret
//! (`render::user_tokens`): what every such Job does (the prelude and `hand_over`), then each service's
//! `grant` and `revoke`. Run under `sh` with curl against fakes of the services and of the API server in
//! `cluster-agent/tests/agent/user_jobs.rs`.
//!
//! JSON is read without a JSON tool (the curl image has none): `tr` makes each of JSON's separators a line
//! end, so every `"key": value` pair is a line of its own, whatever the answer's layout, and `sed` picks the
//! first pair of a key, whatever white space surrounds it (InfluxDB indents with tabs:
//! influxdata/influxdb v2.7.12 `kit/transport/http/api.go`, `Respond`, `json.MarshalIndent(v, "", "\t")`;
//! Grafana writes compact JSON).

use kube::ResourceExt as _;

use super::{
    admin_user,
    rotation::connect_host,
    service_port,
    user_tokens::{API_SERVER, INFLUXDB_BUCKET, SERVICE_ACCOUNT_DIR},
};
use crate::crd::ManagedInstance;

/// What every users Job does first: the addresses, the service's admin credentials and the account's
/// bearer token in curl config files (on no command line), and `hand_over USER SECRET`, which PATCHes
/// `/tmp/patch` (a JSON merge patch) into the Secret through the API server.
pub fn prelude(mi: &ManagedInstance) -> Vec<String> {
    let namespace = mi.namespace().unwrap_or_default();
    let host = connect_host(&mi.spec.service, &mi.name_any(), &namespace);
    let port = service_port(&mi.spec.service);
    let admin = admin_user(&mi.spec.service).unwrap_or("admin");
    vec![
        "set -eu".to_owned(),
        format!("base='http://{host}:{port}'"),
        format!("api='{API_SERVER}'"),
        format!("sa='{SERVICE_ACCOUNT_DIR}'"),
        format!("namespace='{namespace}'"),
        super::rotation::curl_credentials("/tmp/admin.curl", admin, "ADMIN_PASSWORD"),
        // The bearer token, read by the shell's builtins into curl's config: on no command line.
        // (`read` ends non-zero at a last line without a newline, as the token file has, having read it.)
        "bearer=''; IFS= read -r bearer < \"$sa/token\" || true".to_owned(),
        "printf 'header = \"Authorization: Bearer %s\"\\n' \"$bearer\" > /tmp/kube.curl".to_owned(),
        "hand_over() {\n\
         \x20 curl -fsS -o /dev/null -K /tmp/kube.curl --cacert \"$sa/ca.crt\" -X PATCH -H 'Content-Type: application/merge-patch+json' --data @/tmp/patch \"$api/api/v1/namespaces/$namespace/secrets/$2\" || { echo \"writing the token of user $1 into Secret $2 failed\" >&2; exit 1; }\n\
         \x20 rm -f /tmp/patch /tmp/created\n\
         }"
        .to_owned(),
    ]
}

/// The patch `hand_over` writes: the user's generation, the token and the keys the revocation takes,
/// each `printf` argument an expression of the shell (`"$3"`).
fn patch_line(arguments: &[(&str, &str)]) -> String {
    let data: Vec<String> = arguments.iter().map(|(key, _)| format!("\"{key}\":\"%s\"")).collect();
    let values: Vec<&str> = arguments.iter().map(|(_, value)| *value).collect();
    format!(
        "\x20 printf '{{\"metadata\":{{\"annotations\":{{\"cp.example.com/password-generation\":\"%s\"}}}},\"stringData\":{{{}}}}}' \"$3\" {} > /tmp/patch\n",
        data.join(","),
        values.join(" ")
    )
}

/// InfluxDB 2.7's `revoke ID` and `grant USER SECRET GENERATION OLD_ID PERMISSIONS`, after signing in
/// and finding the bucket (see `render::user_tokens`). After the hand-over, `grant` revokes every other
/// authorization of the user (its description is `cp user <name>`), listed with `GET
/// /api/v2/authorizations?orgID=` (`authorization/http_server.go`, `handleGetAuthorizations`; each
/// `authResponse` has its `id` before its `description`, and its permissions' resource ids after): the
/// previous one, and one an earlier run made but never handed over.
pub fn influxdb(mi: &ManagedInstance) -> Vec<String> {
    let org = &mi.spec.project;
    vec![
        "curl -fsS -c /tmp/session -o /dev/null -X POST -K /tmp/admin.curl \"$base/api/v2/signin\"".to_owned(),
        format!(
            "curl -fsS -b /tmp/session \"$base/api/v2/buckets?org={org}&name={INFLUXDB_BUCKET}\" | tr ',{{}}[]' '\\n\\n\\n\\n\\n' > /tmp/buckets"
        ),
        "bucket=$(sed -n 's/^[[:space:]]*\"id\":[[:space:]]*\"\\([0-9a-f]*\\)\".*/\\1/p' /tmp/buckets | head -n1)".to_owned(),
        "org=$(sed -n 's/^[[:space:]]*\"orgID\":[[:space:]]*\"\\([0-9a-f]*\\)\".*/\\1/p' /tmp/buckets | head -n1)".to_owned(),
        format!(
            "if [ -z \"$bucket\" ] || [ -z \"$org\" ]; then echo 'bucket {INFLUXDB_BUCKET} of organization {org} not found' >&2; exit 1; fi"
        ),
        // revoke ID: deletes an authorization; one already gone is revoked.
        "revoke() {\n\
         \x20 [ -n \"$1\" ] || return 0\n\
         \x20 code=$(curl -sS -o /dev/null -w '%{http_code}' -b /tmp/session -X DELETE \"$base/api/v2/authorizations/$1\")\n\
         \x20 case \"$code\" in 204|404) ;; *) echo \"revoking authorization $1 failed: HTTP $code\" >&2; exit 1;; esac\n\
         }"
        .to_owned(),
        // sweep USER KEEP_ID: revokes every authorization of the user (description `cp user USER`) but KEEP_ID.
        // The listing goes to a file first: the images' `sh` (dash) has no `pipefail`, so a failed listing on
        // the left of a pipe would revoke nothing and succeed.
        "sweep() {\n\
             \x20 curl -fsS -o /tmp/authorizations -b /tmp/session \"$base/api/v2/authorizations?orgID=$org\" || { echo \"listing the authorizations of user $1 failed\" >&2; exit 1; }\n\
             \x20 tr ',{}[]' '\\n\\n\\n\\n\\n' < /tmp/authorizations | awk -v user=\"$1\" '/^[[:space:]]*\"id\":/ { id = $0; sub(/^[^:]*:[[:space:]]*\"/, \"\", id); sub(/\".*/, \"\", id) } /^[[:space:]]*\"description\":/ { d = $0; sub(/^[^:]*:[[:space:]]*\"/, \"\", d); sub(/\".*/, \"\", d); if (d == \"cp user \" user) print id }' > /tmp/mine\n\
             \x20 while read -r old; do if [ \"$old\" != \"$2\" ]; then revoke \"$old\"; fi; done < /tmp/mine\n\
         }"
        .to_owned(),
        // revoke_user USER ID: a deleted user's authorization, and any other of its.
        "revoke_user() {\n\
         \x20 revoke \"$2\"\n\
         \x20 sweep \"$1\" \"\"\n\
         }"
        .to_owned(),
        // A new authorization, its token and id into the user's Secret, then the old authorization goes
        // (the old token works until the new one is kept).
        format!(
            "grant() {{\n\
             \x20 printf '{{\"orgID\":\"%s\",\"description\":\"cp user %s\",\"permissions\":[%s]}}' \"$org\" \"$1\" \"$5\" > /tmp/body\n\
             \x20 curl -fsS -b /tmp/session -X POST -H 'Content-Type: application/json' --data @/tmp/body \"$base/api/v2/authorizations\" | tr ',{{}}[]' '\\n\\n\\n\\n\\n' > /tmp/created\n\
             \x20 id=$(sed -n 's/^[[:space:]]*\"id\":[[:space:]]*\"\\([0-9a-f]*\\)\".*/\\1/p' /tmp/created | head -n1)\n\
             \x20 token=$(sed -n 's/^[[:space:]]*\"token\":[[:space:]]*\"\\([^\"]*\\)\".*/\\1/p' /tmp/created | head -n1)\n\
             \x20 if [ -z \"$id\" ] || [ -z \"$token\" ]; then echo \"no authorization made for user $1\" >&2; exit 1; fi\n\
             {patch}\
             \x20 hand_over \"$1\" \"$2\"\n\
             \x20 if [ \"$4\" != \"$id\" ]; then revoke \"$4\"; fi\n\
             \x20 sweep \"$1\" \"$id\"\n\
             }}",
            patch = patch_line(&[("password", "\"$token\""), ("id", "\"$id\"")]),
        ),
    ]
}

/// Grafana's `revoke ID` (the user's service account) and
/// `grant USER SECRET GENERATION OLD_ID OLD_TOKEN_ID ROLE`: the user's service account (made once, with
/// its role), a new token of it into the user's Secret, then the old token goes.
///
/// Grafana 11 (grafana/grafana `pkg/services/serviceaccounts/api/api.go` and `token.go`, errors in
/// `pkg/services/serviceaccounts/models.go`), authenticated with the admin's Basic credentials as the
/// rotation is: `POST /api/serviceaccounts` `{name, role, isDisabled}` answers 201 with the account (`id`),
/// 400 "service account already exists" for a name taken (an earlier run's, whose hand-over failed: found
/// by `GET /api/serviceaccounts/search?query=`); `POST /api/serviceaccounts/{id}/tokens` `{name,
/// secondsToLive}` answers 200 with `id` and `key` (400 for a token name taken, so each carries the time);
/// `DELETE /api/serviceaccounts/{id}` and `DELETE /api/serviceaccounts/{id}/tokens/{tokenId}` answer 200,
/// 404 when there is none.
pub fn grafana() -> Vec<String> {
    vec![
        "revoke() {\n\
         \x20 [ -n \"$1\" ] || return 0\n\
         \x20 code=$(curl -sS -o /dev/null -w '%{http_code}' -K /tmp/admin.curl -X DELETE \"$base/api/serviceaccounts/$1\")\n\
         \x20 case \"$code\" in 200|404) ;; *) echo \"revoking service account $1 failed: HTTP $code\" >&2; exit 1;; esac\n\
         }"
        .to_owned(),
        // find_account NAME: the id of the service account called NAME (none: nothing); fails when the
        // search does (to a file first: dash has no `pipefail`). It runs in a command substitution, whose
        // `exit` ends only that subshell, so callers check its status.
        "find_account() {\n\
         \x20 curl -fsS -o /tmp/search -K /tmp/admin.curl \"$base/api/serviceaccounts/search?query=$1\" || { echo \"searching the service account of user $1 failed\" >&2; exit 1; }\n\
         \x20 tr ',{}[]' '\\n\\n\\n\\n\\n' < /tmp/search | awk -v name=\"\\\"name\\\":\\\"$1\\\"\" '/^[[:space:]]*\"id\":/ { sub(/^[[:space:]]*\"id\":[[:space:]]*/, \"\"); id = $0 } $0 == name { print id; exit }'\n\
         }"
        .to_owned(),
        // revoke_user NAME ID: a deleted user's service account, found by its name when its Secret has no
        // id (a run that died before its hand-over).
        "revoke_user() {\n\
         \x20 if [ -n \"$2\" ]; then revoke \"$2\"; else found=$(find_account \"$1\") || exit 1; revoke \"$found\"; fi\n\
         }"
        .to_owned(),
        "account() {\n\
         \x20 if [ -n \"$3\" ]; then echo \"$3\"; return 0; fi\n\
         \x20 printf '{\"name\":\"%s\",\"role\":\"%s\",\"isDisabled\":false}' \"$1\" \"$2\" > /tmp/body\n\
         \x20 code=$(curl -sS -o /tmp/account -w '%{http_code}' -K /tmp/admin.curl -X POST -H 'Content-Type: application/json' --data @/tmp/body \"$base/api/serviceaccounts\")\n\
         \x20 case \"$code\" in\n\
         \x20   201) tr ',{}[]' '\\n\\n\\n\\n\\n' < /tmp/account | sed -n 's/^[[:space:]]*\"id\":[[:space:]]*\\([0-9]*\\).*/\\1/p' | head -n1 ;;\n\
         \x20   400) find_account \"$1\" ;;\n\
         \x20   *) echo \"making the service account of user $1 failed: HTTP $code\" >&2; exit 1 ;;\n\
         \x20 esac\n\
         }"
        .to_owned(),
        format!(
            "grant() {{\n\
             \x20 id=$(account \"$1\" \"$6\" \"$4\")\n\
             \x20 if [ -z \"$id\" ]; then echo \"no service account for user $1\" >&2; exit 1; fi\n\
             \x20 printf '{{\"name\":\"%s-%s-%s\",\"secondsToLive\":0}}' \"$1\" \"$3\" \"$(date +%s)\" > /tmp/body\n\
             \x20 curl -fsS -K /tmp/admin.curl -X POST -H 'Content-Type: application/json' --data @/tmp/body \"$base/api/serviceaccounts/$id/tokens\" | tr ',{{}}[]' '\\n\\n\\n\\n\\n' > /tmp/created\n\
             \x20 token_id=$(sed -n 's/^[[:space:]]*\"id\":[[:space:]]*\\([0-9]*\\).*/\\1/p' /tmp/created | head -n1)\n\
             \x20 key=$(sed -n 's/^[[:space:]]*\"key\":[[:space:]]*\"\\([^\"]*\\)\".*/\\1/p' /tmp/created | head -n1)\n\
             \x20 if [ -z \"$token_id\" ] || [ -z \"$key\" ]; then echo \"no token made for user $1\" >&2; exit 1; fi\n\
             {patch}\
             \x20 hand_over \"$1\" \"$2\"\n\
             \x20 if [ -n \"$5\" ] && [ \"$5\" != \"$token_id\" ]; then\n\
             \x20   code=$(curl -sS -o /dev/null -w '%{{http_code}}' -K /tmp/admin.curl -X DELETE \"$base/api/serviceaccounts/$id/tokens/$5\")\n\
             \x20   case \"$code\" in 200|404) ;; *) echo \"revoking the old token of user $1 failed: HTTP $code\" >&2; exit 1;; esac\n\
             \x20 fi\n\
             }}",
            patch = patch_line(&[("password", "\"$key\""), ("id", "\"$id\""), ("token-id", "\"$token_id\"")]),
        ),
    ]
}
