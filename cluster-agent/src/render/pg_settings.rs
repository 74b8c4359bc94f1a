//! Whether a PostgreSQL instance runs the parameters it was given: a short Job that asks the primary.
//!
//! CloudNativePG v1.30.0 offers no Kubernetes-visible sign that an instance loaded a given
//! `spec.postgresql.parameters` (ARCHITECTURE.md, *Readiness and failures where Kubernetes reports
//! them*): each instance manager writes the parameters into its own `postgresql.conf` and reloads
//! (`internal/management/controller/instance_controller.go`, `refreshConfigurationFiles`, `Reload`,
//! `processConfigReloadAndManageRestart`); the operator restarts the instances whose PostgreSQL reports
//! a pending restart (`internal/controller/cluster_upgrade.go`, `isInstanceNeedingRollout`: "Postgres
//! needs a restart to apply some configuration changes"); a reload-only change never leaves
//! `PhaseHealthy` and writes no status at all. So the running PostgreSQL is asked, as a client would:
//! the Job connects to the primary through CloudNativePG's read-write Service `<cluster>-rw`
//! (`GetServiceReadWriteName`) as the application user of CloudNativePG's `<cluster>-app` Secret
//! (`pkg/specs/secrets.go`, keys `username`, `password`, `dbname`) and reads `pg_settings` (PostgreSQL
//! docs, *pg_settings*: `setting` is the current value in the parameter's `unit`, `pending_restart` is
//! true "if the value has been changed in the configuration file but needs a restart"; readable by every
//! user, unlike `pg_file_settings`, which only superusers may read). It waits until every wanted value is
//! live and none is pending a restart, and gives up after [`WAIT_SECONDS`]. The instance counts as running
//! the configuration once the Job has completed (`controller/observe/cnpg.rs`).
//!
//! One Job per set of wanted values and image, named after a digest of its template (a Job's template
//! cannot change, batch/v1): a change of parameters is a new Job, and the old one goes. It is made once
//! the Cluster has been Ready ([`cluster_ready`]), so its wait never includes a bootstrap.

use serde_json::{Value, json};

use super::{Child, ChildKind, metadata, rotation::postgres_app_secret_name, service_port};
use crate::crd::ManagedInstance;

/// Label on the verification Job's pod naming the instance whose configuration it checks.
pub const VERIFIES_LABEL: &str = "cp.example.com/configuration-of";
/// How long the script waits for the wanted values to be live before it fails: long enough for
/// CloudNativePG to restart every instance of an `ha` cluster one by one.
pub const WAIT_SECONDS: u32 = 20 * 60;
/// The Job's `activeDeadlineSeconds`: the wait, plus time for the pod to be scheduled and pulled.
pub const DEADLINE_SECONDS: u32 = WAIT_SECONDS + 5 * 60;
/// The user CloudNativePG's PostgreSQL images run as (cloudnative-pg v1.30.0 `api/v1/cluster_types.go`,
/// `defaultPostgresUID = 26`, which `pkg/specs/pods.go` sets as the instance pods' `runAsUser`).
pub const POSTGRES_UID: u32 = 26;

/// The query: one line per wanted parameter that is not live (unknown, another value, or pending a
/// restart); none when all are. The wanted values come as a JSON object in the psql variable `wanted`.
/// Values are compared as PostgreSQL reads them (docs, *Setting Parameters*: memory units B, kB, MB, GB,
/// TB are powers of 1024, time units us, ms, s, min, h, d; a number without a unit is in the parameter's
/// own unit, which `pg_settings.unit` names, possibly with a multiplier such as `8kB`; booleans accept
/// on/off, true/false, yes/no, 1/0; enumerations are case-insensitive).
pub const CHECK_SQL: &str = r#"WITH units(u, f) AS (VALUES
    ('B', 1::numeric), ('kB', 1024), ('MB', 1048576), ('GB', 1073741824), ('TB', 1099511627776),
    ('us', 0.001), ('ms', 1), ('s', 1000), ('min', 60000), ('h', 3600000), ('d', 86400000)),
wanted AS (SELECT key AS name, value AS want FROM json_each_text(:'wanted'::json)),
live AS (
  SELECT w.name, w.want, s.setting, s.unit, s.vartype, coalesce(s.pending_restart, false) AS pending,
         substring(w.want FROM '^\s*(-?[0-9]+(?:\.[0-9]+)?)\s*[a-zA-Z]*\s*$') AS num,
         coalesce(substring(w.want FROM '^\s*-?[0-9]+(?:\.[0-9]+)?\s*([a-zA-Z]+)\s*$'), '') AS want_unit,
         coalesce(substring(s.unit FROM '^([0-9]+)'), '1')::numeric
           * coalesce((SELECT f FROM units WHERE u = substring(s.unit FROM '([a-zA-Z]+)$')), 1) AS unit_factor
  FROM wanted w LEFT JOIN pg_settings s ON s.name = w.name),
judged AS (
  SELECT *, CASE
    WHEN setting IS NULL THEN false
    WHEN vartype = 'bool' THEN setting = CASE lower(trim(want))
      WHEN 'true' THEN 'on' WHEN 'yes' THEN 'on' WHEN '1' THEN 'on' WHEN 'on' THEN 'on'
      WHEN 'false' THEN 'off' WHEN 'no' THEN 'off' WHEN '0' THEN 'off' WHEN 'off' THEN 'off' END
    WHEN vartype IN ('integer', 'real') AND num IS NOT NULL THEN
      setting::numeric * unit_factor = num::numeric * CASE WHEN want_unit = '' THEN unit_factor
        ELSE (SELECT f FROM units WHERE u = want_unit) END
    ELSE lower(setting) = lower(trim(want)) END AS same
  FROM live)
SELECT name || ': wanted ' || want || ', live ' || coalesce(setting || coalesce(' ' || unit, ''), '(no such parameter)')
       || CASE WHEN pending THEN ' (pending restart)' ELSE '' END
FROM judged WHERE pending OR same IS NOT TRUE ORDER BY name;
"#;

/// The Job's shell script: ask until every wanted value is live ([`CHECK_SQL`] prints nothing), or fail
/// after `$WAIT_SECONDS`. A failed connection (the instance restarting, the Service between primaries) is
/// asked again. The password reaches psql in `PGPASSWORD` from the Secret, never on a command line.
pub fn script() -> String {
    let lines = [
        "set -u",
        "deadline=$(( $(date +%s) + WAIT_SECONDS ))",
        "last='no answer yet'",
        "while :; do",
        "if out=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -v wanted=\"$WANTED\" 2>&1 <<'SQL'",
        CHECK_SQL.trim_end(),
        "SQL",
        "); then",
        "if [ -z \"$out\" ]; then echo 'every wanted parameter is live on the primary'; exit 0; fi",
        "fi",
        "last=$out",
        "if [ \"$(date +%s)\" -ge \"$deadline\" ]; then",
        "echo \"parameters not live after $WAIT_SECONDS s: $last\" >&2",
        "exit 1",
        "fi",
        "sleep 2",
        "done",
    ];
    lines.join("\n") + "\n"
}

/// The verification Job for `parameters` (as written into the Cluster's `postgresql.parameters`), or
/// none when there are none to check.
pub fn job(mi: &ManagedInstance, parameters: &std::collections::BTreeMap<String, String>) -> Option<Child> {
    if parameters.is_empty() {
        return None;
    }
    let name = kube::ResourceExt::name_any(mi);
    let secret = postgres_app_secret_name(mi);
    let from_secret = |env: &str, key: &str| json!({"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}});
    let template = json!({
        "metadata": {"labels": {
            VERIFIES_LABEL: mi.spec.instance_id,
            super::job::CLIENT_OF_LABEL: mi.spec.instance_id,
        }},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": super::job::restricted_pod(),
            "containers": [{
                "name": "verify",
                "image": format!("ghcr.io/cloudnative-pg/postgresql:{}", mi.spec.version),
                "command": ["/bin/sh", "-c", script()],
                // Pod Security `restricted`, as the image's own user.
                "securityContext": super::job::restricted_container(POSTGRES_UID),
                "env": [
                    {"name": "PGHOST", "value": format!("{name}-rw")},
                    {"name": "PGPORT", "value": service_port("postgresql").to_string()},
                    from_secret("PGUSER", "username"),
                    from_secret("PGPASSWORD", "password"),
                    from_secret("PGDATABASE", "dbname"),
                    {"name": "PGCONNECT_TIMEOUT", "value": "5"},
                    {"name": "WANTED", "value": serde_json::to_string(parameters).expect("strings serialize")},
                    {"name": "WAIT_SECONDS", "value": WAIT_SECONDS.to_string()},
                ],
            }],
        },
    });
    let digest = super::digest::digest(&template);
    let job_name = super::job::name(mi, &format!("-pgconf-{}", &digest[..10]));
    let object = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(mi, &job_name),
        "spec": {
            // The script asks again itself; one more pod for a lost node.
            "backoffLimit": 1,
            "activeDeadlineSeconds": DEADLINE_SECONDS,
            "template": template,
        },
    });
    Some(Child { kind: ChildKind::Job, name: job_name, object })
}

/// Whether the Cluster has been Ready (CloudNativePG's `Ready` condition, True exactly in `PhaseHealthy`:
/// v1.30.0 `pkg/resources/status/transactions.go`). The check Job is made only then (`controller/
/// converge.rs`): a change to a running Cluster finds the old `Ready=True` standing, so its check starts
/// at once, while a new Cluster's bootstrap (an initdb, or a recovery from a backup, which may take hours)
/// is not counted against the check's wait.
pub fn cluster_ready(cluster: &Value) -> bool {
    cluster["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Whether `child` is an instance's configuration verification Job.
pub fn is_verification_job(child: &Child) -> bool {
    child.kind == ChildKind::Job
        && child.object["spec"]["template"]["metadata"]["labels"][VERIFIES_LABEL].is_string()
}
