//! MongoDB as a replica set, built by the agent (ARCHITECTURE.md, *HA plans*): every MongoDB instance is
//! one, of one member on a single-replica plan and of three on `ha`, so growing or shrinking a plan is a
//! membership change and never a conversion, and every instance has the oplog that a point-in-time dump
//! (`mongodump --oplog`) needs.
//!
//! - **Members** are the StatefulSet's pods, addressed through its headless Service:
//!   `<set>-<ordinal>.<service>.<namespace>.svc.cluster.local` (Kubernetes docs, *StatefulSets*, "Stable
//!   Network ID"). The Service publishes the members' addresses before they are ready
//!   (`publishNotReadyAddresses`: "the primary use case for setting this field is for a StatefulSet's
//!   Headless Service to propagate SRV DNS records for its Pods for the purpose of peer discovery",
//!   k8s.io/api v0.36.1 core/v1/types.go `ServiceSpec`), so a member that is not initiated yet can be
//!   found by its peers and by the initiation Job.
//! - **Internal authentication** with a keyfile: `mongod --replSet rs0 --keyFile <path>` ("Keyfiles use
//!   SCRAM challenge and response authentication mechanism where the keyfiles contain the shared password
//!   for the members"; "a key's length must be between 6 and 1024 characters and may only contain
//!   characters in the base64 set"; "on UNIX systems, the keyfile must not have group or world
//!   permissions": MongoDB manual, *Self-Managed Internal/Membership Authentication*). The key is made
//!   once by the agent ([`new_key`]) and kept in a Secret that is never rewritten ([`keyfile_secret`]).
//! - **The admin user** is created once, on member 0: the image's entrypoint creates
//!   `MONGO_INITDB_ROOT_USERNAME` on an empty data directory with a temporary server it starts *without*
//!   `--replSet` and `--keyFile` (docker-library/mongo 7.0/docker-entrypoint.sh: `_mongod_hack_ensure_no_arg_val
//!   --keyFile`, `_mongod_hack_ensure_no_arg_val --replSet` "for our initial startup"), i.e. on every
//!   member whose volume is empty. Only member 0 is given the variables (the pod's command unsets them on
//!   the others), so the others start empty and take everything, users included, from the primary by
//!   initial sync.
//! - **Initiation and membership** are one idempotent Job per member list ([`job`]): it initiates the
//!   set on member 0 only when `replSetGetStatus` answers `NotYetInitialized` (code 94, mongo
//!   src/mongo/base/error_codes.yml), then moves the configuration towards the desired members one member
//!   per `replSetReconfig` (MongoDB manual, *replSetReconfig*: since 4.4 a reconfiguration adds or removes
//!   at most one voting member, and a new member is `newlyAdded`, non-voting, until its initial sync is
//!   done), stepping a primary that is to go down first (`replSetStepDown`). Run again, it changes nothing.
//!   On a scale-down the agent keeps the StatefulSet's pods until that Job has removed the members
//!   ([`hold_scale_down`]): a member removed by deleting its pod first could take the majority with it.

use kube::ResourceExt as _;
use serde_json::{Value, json};

use super::{Child, ChildKind, GENERATION_LABEL, admin_user, credentials_name, metadata, service_port};
use crate::crd::ManagedInstance;

/// The replica set's name (`--replSet`), the same for every instance: clients name it in `replicaSet=`.
pub const REPLICA_SET: &str = "rs0";
/// Where mongod reads the keyfile: a copy owned by the image's `mongodb` user, mode 0400 (see
/// [`keyfile_init_container`]).
pub const KEYFILE_PATH: &str = "/etc/cp-mongo-keyfile/keyfile";
const KEYFILE_DIR: &str = "/etc/cp-mongo-keyfile";
/// Where the keyfile Secret is mounted, readable by root only, for the copy.
const KEYFILE_SECRET_DIR: &str = "/etc/cp-mongo-keyfile-secret";
/// Key of the keyfile in its Secret.
pub const KEYFILE_KEY: &str = "keyfile";
/// The image's `mongodb` user and group, which the entrypoint runs mongod as (docker-library/mongo
/// 7.0/Dockerfile: `groupadd --gid 999 --system mongodb; useradd --uid 999 --system --gid mongodb`;
/// docker-entrypoint.sh: `exec gosu mongodb "$BASH_SOURCE" "$@"`).
pub const MONGODB_UID: u32 = 999;
/// Random bytes in a key: the manual's `openssl rand -base64 756`, i.e. 1008 base64 characters, within
/// the 6 to 1024 a key may have.
pub const KEY_BYTES: usize = 756;
/// Label on the pod of a replica set's initiation Job naming the instance (not the instance label: the
/// pod is not a member).
pub const REPLSET_OF_LABEL: &str = "cp.example.com/replset-of";

/// Name of the keyfile Secret.
pub fn keyfile_secret_name(mi: &ManagedInstance) -> String {
    format!("{}-keyfile", mi.name_any())
}

/// A fresh key: [`KEY_BYTES`] random bytes, base64, on one line (mongod strips whitespace anyway).
pub fn new_key() -> String {
    use rand::Rng as _;
    let mut bytes = vec![0u8; KEY_BYTES];
    rand::rng().fill(bytes.as_mut_slice());
    // `ByteString` serializes as standard base64 (as a Secret's `data`).
    let encoded = serde_json::to_value(k8s_openapi::ByteString(bytes)).expect("bytes serialize");
    encoded.as_str().expect("a base64 string").to_owned()
}

/// The keyfile Secret holding `key`, made once when absent and never applied again (a new key on a
/// running set would lock its members out of each other).
pub fn keyfile_secret(mi: &ManagedInstance, key: &str) -> Child {
    let name = keyfile_secret_name(mi);
    let mut object = json!({"apiVersion": "v1", "kind": "Secret", "metadata": metadata(mi, &name), "type": "Opaque",
        "stringData": {KEYFILE_KEY: key}});
    // The generation label would change on every update; a Secret is written once.
    object["metadata"]["labels"].as_object_mut().map(|l| l.remove(GENERATION_LABEL));
    Child { kind: ChildKind::Secret, name, object }
}

/// Each member's address, `host:port`, in ordinal order: the desired member list.
pub fn members(mi: &ManagedInstance) -> Vec<String> {
    let name = mi.name_any();
    let namespace = mi.namespace().unwrap_or_default();
    let port = service_port("mongodb");
    (0..mi.spec.replicas).map(|i| format!("{name}-{i}.{name}.{namespace}.svc.cluster.local:{port}")).collect()
}

/// The connection string of the replica set, without credentials: every desired member as seed, the set
/// named (MongoDB manual, *Connection Strings*: with `replicaSet` the driver discovers the members and
/// sends writes to the primary), then `options` (`&`-joined).
pub fn uri(mi: &ManagedInstance, database: &str, options: &[&str]) -> String {
    let mut query = vec![format!("replicaSet={REPLICA_SET}")];
    query.extend(options.iter().map(|o| (*o).to_owned()));
    format!("mongodb://{}/{database}?{}", members(mi).join(","), query.join("&"))
}

/// mongod's arguments beyond its config file: the replica set and the keyfile. Given as arguments, which
/// the entrypoint leaves out of its temporary first server (docker-library/mongo
/// 7.0/docker-entrypoint.sh).
pub fn mongod_args() -> Vec<Value> {
    vec![json!("--replSet"), json!(REPLICA_SET), json!("--keyFile"), json!(KEYFILE_PATH)]
}

/// The main container's command: the image's entrypoint, with the root user's variables only on member
/// 0 (a StatefulSet pod's hostname is its name, `<set>-<ordinal>`: Kubernetes docs, *StatefulSets*). The
/// entrypoint's arguments follow as the container's `args`.
pub fn mongod_command() -> Value {
    const SCRIPT: &str = "if [ \"${HOSTNAME##*-}\" != 0 ]; then unset MONGO_INITDB_ROOT_USERNAME MONGO_INITDB_ROOT_PASSWORD; fi\n\
         exec docker-entrypoint.sh \"$@\"\n";
    json!(["/bin/sh", "-c", SCRIPT, "docker-entrypoint.sh"])
}

/// The init container that puts the keyfile where mongod accepts it. A Secret volume's files belong to
/// root, and with a pod `fsGroup` the kubelet adds group read to them (k8s.io/kubernetes v1.36.1
/// pkg/volume/volume_linux.go, `SetVolumeOwnership` → `changeFilePermission`: `roMask = 0440`), which
/// mongod refuses ("permissions on … are too open", mongo src/mongo/db/auth/security_file.cpp); mongod runs
/// as uid 999 and could not read a root-owned 0400 file either. So the Secret is mounted 0400 for root
/// (no `fsGroup` on the pod) and this container, root as the image's default user, copies it into an
/// `emptyDir` owned by `mongodb`, mode 0400, before mongod starts.
pub fn keyfile_init_container(image: &str) -> Value {
    let script = format!(
        "set -eu\n\
         rm -f {KEYFILE_PATH}\n\
         install -o {MONGODB_UID} -g {MONGODB_UID} -m 0400 {KEYFILE_SECRET_DIR}/{KEYFILE_KEY} {KEYFILE_PATH}\n"
    );
    json!({
        "name": "keyfile", "image": image, "command": ["/bin/sh", "-c", script],
        "volumeMounts": [
            {"name": "keyfile-secret", "mountPath": KEYFILE_SECRET_DIR, "readOnly": true},
            {"name": "keyfile", "mountPath": KEYFILE_DIR},
        ],
    })
}

/// The pod volumes for the keyfile: the Secret, mode 0400 (root only), and the `emptyDir` mongod reads
/// the copy from; with the main container's mount of the latter.
pub fn keyfile_volumes(mi: &ManagedInstance) -> (Vec<Value>, Value) {
    (
        vec![
            json!({"name": "keyfile-secret", "secret": {"secretName": keyfile_secret_name(mi), "defaultMode": 0o400}}),
            json!({"name": "keyfile", "emptyDir": {}}),
        ],
        json!({"name": "keyfile", "mountPath": KEYFILE_DIR, "readOnly": true}),
    )
}

/// The JavaScript the initiation Job runs in mongosh, connected directly to member 0: initiate when not
/// initiated, then reconfigure towards `members` one member at a time.
pub fn initiation_script(members: &[String], user: &str) -> String {
    let list = serde_json::to_string(members).expect("strings serialize");
    format!(
        r#"const members = {list};
const replicaSet = "{REPLICA_SET}";
// The instance's password, or the one a rotation in progress is moving to.
function authenticate(database) {{
  for (const password of [process.env.PASSWORD, process.env.NEXT_PASSWORD]) {{
    if (!password) continue;
    try {{
      if (database.getSiblingDB("admin").auth("{user}", password)) return;
    }} catch (e) {{
      print("authentication refused: " + e.message);
    }}
  }}
  throw new Error("neither the instance's password nor the next one is accepted");
}}
authenticate(db);
const status = db.adminCommand({{ replSetGetStatus: 1 }});
if (status.ok !== 1) {{
  // 94 NotYetInitialized (mongo src/mongo/base/error_codes.yml): initiate, with member 0 alone.
  if (status.code !== 94) throw new Error("replSetGetStatus: " + JSON.stringify(status));
  const initiated = db.adminCommand({{ replSetInitiate: {{ _id: replicaSet, members: [{{ _id: 0, host: members[0] }}] }} }});
  if (initiated.ok !== 1) throw new Error("replSetInitiate: " + JSON.stringify(initiated));
  print("initiated " + replicaSet + " on " + members[0]);
}}
// The set, through its primary (the driver follows the members named in the seed's configuration).
const set = new Mongo("mongodb://" + members.join(",") + "/admin?replicaSet=" + replicaSet);
const admin = set.getDB("admin");
authenticate(admin);
function reachable(host) {{
  try {{
    return new Mongo("mongodb://" + host + "/?directConnection=true").getDB("admin").runCommand({{ hello: 1 }}).ok === 1;
  }} catch (e) {{
    return false;
  }}
}}
let done = false;
for (let attempt = 0; attempt < 600 && !done; attempt++) {{
  try {{
    const config = admin.runCommand({{ replSetGetConfig: 1 }}).config;
    const hosts = config.members.map((m) => m.host);
    const extra = config.members.find((m) => !members.includes(m.host));
    const missing = members.find((h) => !hosts.includes(h));
    if (!extra && !missing) {{
      done = true;
      break;
    }}
    if (extra) {{
      // A primary that is to go steps down first; the driver then finds the new one.
      if (admin.runCommand({{ hello: 1 }}).me === extra.host) {{
        admin.runCommand({{ replSetStepDown: 60 }});
        sleep(2000);
        continue;
      }}
      config.members = config.members.filter((m) => m.host !== extra.host);
    }} else {{
      if (!reachable(missing)) {{
        sleep(2000);
        continue;
      }}
      config.members.push({{ _id: Math.max(...config.members.map((m) => m._id)) + 1, host: missing }});
    }}
    config.version += 1;
    const result = admin.runCommand({{ replSetReconfig: config }});
    if (result.ok !== 1) print("replSetReconfig refused, trying again: " + JSON.stringify(result));
    else print("members now: " + config.members.map((m) => m.host).join(", "));
  }} catch (e) {{
    print("trying again: " + e.message);
  }}
  sleep(2000);
}}
if (!done) throw new Error("the members did not reach " + members.join(", "));
print("replica set " + replicaSet + " has the members " + members.join(", "));
"#
    )
}

/// The shell script of the initiation Job: wait until member 0 answers (unauthenticated `hello`), then
/// run [`initiation_script`] from `$REPLSET_JS` against it directly. No password is on a command line:
/// the script reads them from its environment (`process.env`).
pub fn initiation_shell(members: &[String]) -> String {
    let first = &members[0];
    format!(
        "set -eu\n\
         first='mongodb://{first}/admin?directConnection=true'\n\
         until mongosh \"$first\" --quiet --eval 'db.hello()' >/dev/null 2>&1; do sleep 2; done\n\
         mongosh \"$first\" --quiet --eval \"$REPLSET_JS\"\n"
    )
}

/// The Job that initiates the replica set and gives it the desired members. Named after a digest of its
/// pod template: a Job's template cannot change (batch/v1, `spec.template` is immutable), so another
/// member list or image is another Job, and the same one is the same Job, run once.
pub fn job(mi: &ManagedInstance) -> Child {
    let user = admin_user("mongodb").unwrap_or("root");
    let members = members(mi);
    let secret = credentials_name(mi);
    let template = json!({
        "metadata": {"labels": {
            REPLSET_OF_LABEL: mi.spec.instance_id,
            super::job::CLIENT_OF_LABEL: mi.spec.instance_id,
        }},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "replset",
                "image": format!("mongo:{}", mi.spec.version),
                "command": ["/bin/sh", "-c", initiation_shell(&members)],
                "env": [
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}},
                    {"name": "NEXT_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret,
                        "key": super::rotation::NEXT_PASSWORD_KEY, "optional": true}}},
                    {"name": "REPLSET_JS", "value": initiation_script(&members, user)},
                ],
            }],
        },
    });
    let digest = super::digest::digest(&template);
    let name = super::job::name(mi, &format!("-replset-{}", &digest[..10]));
    let object = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(mi, &name),
        "spec": {
            // Members that are still starting are waited for inside; a few more tries for the rest.
            "backoffLimit": 6,
            "activeDeadlineSeconds": super::job::DATA_DEADLINE_SECONDS,
            "template": template,
        },
    });
    Child { kind: ChildKind::Job, name, object }
}

/// Whether `child` is an instance's replica set Job.
pub fn is_replset_job(child: &Child) -> bool {
    child.kind == ChildKind::Job
        && child.object["spec"]["template"]["metadata"]["labels"][REPLSET_OF_LABEL].is_string()
}

/// On a scale-down the StatefulSet keeps its pods until the Job for the new member list has completed
/// (`removed`): the members leave the configuration first, then their pods go. Deleting a member's pod
/// first could leave fewer than a majority of the configured voters, and no primary.
pub fn hold_scale_down(desired: &mut Child, current: &Value, removed: bool) {
    if desired.kind != ChildKind::StatefulSet
        || desired.object["metadata"]["labels"]["app.kubernetes.io/name"] != "mongodb"
    {
        return;
    }
    let (want, have) = (desired.object["spec"]["replicas"].as_u64(), current["spec"]["replicas"].as_u64());
    if let (Some(want), Some(have)) = (want, have)
        && want < have
        && !removed
    {
        desired.object["spec"]["replicas"] = json!(have);
    }
}
