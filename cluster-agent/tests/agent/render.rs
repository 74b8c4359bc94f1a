//! Golden files of the rendered objects per service type, and the committed CRD.
//!
//! On an intended change, regenerate with `UPDATE_GOLDEN=1 cargo test -p cluster-agent --test agent render::`
//! and review the diff.

use std::path::PathBuf;

use crate::fixture;

use cluster_agent::{crd::ManagedInstance, render};
use kube::CustomResourceExt as _;
use serde_json::json;

fn fixture(service: &str, version: &str, config: serde_json::Value) -> ManagedInstance {
    fixture::instance(service, version, config)
}

fn check(path: PathBuf, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(expected, actual, "{} differs; run with UPDATE_GOLDEN=1 and review the diff", path.display());
}

#[test]
fn rendered_objects_match_the_golden_files() {
    let cases = [
        (
            "postgresql",
            "16",
            json!({"max_connections": 200, "wal_level": "logical", "work_mem_kib": 8192,
                   "log_min_duration_statement_ms": 500, "track_io_timing": true,
                   "data_checksums": true}),
        ),
        ("mongodb", "7.0", json!({"slow_op_threshold_ms": 250})),
        ("influxdb", "2.7", json!({"log_level": "info"})),
        ("grafana", "11.6", json!({"allow_sign_up": false})),
    ];
    for (service, version, config) in cases {
        let mi = fixture(service, version, config);
        let mut objects: Vec<_> = render::render(&mi, None).into_iter().map(|c| c.object).collect();
        objects.extend(render::credentials(&mi, "<generated in the cluster>").map(|c| c.object));
        let text = serde_json::to_string_pretty(&objects).unwrap() + "\n";
        check(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{service}.json")), &text);
    }
}

#[test]
fn an_instance_without_an_acl_gets_no_endpoint_and_a_policy_admitting_only_its_own_pods_and_jobs() {
    let mut mi = fixture("mongodb", "7.0", json!({}));
    mi.spec.acl.clear();
    let children = render::render(&mi, None);
    assert!(!children.iter().any(|c| c.name == "orders-endpoint"), "an empty ACL must not open an endpoint");
    let policy = children.iter().find(|c| c.name == "orders-access").expect("the NetworkPolicy");
    assert_eq!(render::network::admitted_blocks(&policy.object), Vec::<String>::new());
    // Its own pods, and the agent's Jobs that connect to it (see `tests/workloads.rs`).
    assert_eq!(policy.object["spec"]["ingress"].as_array().map(Vec::len), Some(2), "{:#}", policy.object);
}

#[test]
fn the_committed_rbac_manifests_match_the_agents_rules() {
    let yaml = cluster_agent::rbac::manifests_yaml().unwrap();
    check(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/rbac/cluster-agent.yaml"), &yaml);
}

#[test]
fn the_committed_crd_matches_the_rust_types() {
    let yaml = serde_saphyr::to_string(&ManagedInstance::crd()).unwrap();
    check(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/managedinstances.yaml"), &yaml);
}

#[test]
fn applied_means_every_desired_field_is_present_whatever_the_server_added() {
    let desired = json!({"metadata": {"labels": {"a": "1", "cp.example.com/generation": "4"}}, "spec": {"replicas": 3, "ports": [{"port": 1}]}});
    let actual = json!({"metadata": {"labels": {"a": "1", "cp.example.com/generation": "2"}, "uid": "x"}, "spec": {"replicas": 3, "ports": [{"port": 1, "protocol": "TCP"}]}, "status": {}});
    assert!(render::is_applied(&desired, &actual), "server defaults and an older generation label are fine");
    let drifted =
        json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 5, "ports": [{"port": 1}]}});
    assert!(!render::is_applied(&desired, &drifted));
}

/// A real API server returns quantities canonicalised; what the agent applied must still count as applied.
#[test]
fn quantities_compare_by_value_as_a_real_api_server_canonicalises_them() {
    for (written, returned) in [
        ("2000m", "2"),
        ("8192Mi", "8Gi"),
        ("1024Mi", "1Gi"),
        ("1.5Gi", "1536Mi"),
        ("1e3", "1k"),
        ("500m", "0.5"),
    ] {
        assert!(render::quantities_equal(written, returned), "{written} = {returned}");
    }
    for (a, b) in [("1Gi", "1G"), ("2", "2001m"), ("10Gi", "100Gi"), ("x", "y")] {
        assert!(!render::quantities_equal(a, b), "{a} != {b}");
    }
    let mi = fixture("mongodb", "7.0", json!({}));
    let rendered = render::render(&mi, None);
    let set = rendered.iter().find(|c| c.kind == render::ChildKind::StatefulSet).unwrap();
    let mut canonical = set.object.clone();
    let resources = &mut canonical["spec"]["template"]["spec"]["containers"][0]["resources"];
    resources["requests"] = json!({"cpu": "2", "memory": "8Gi"});
    resources["limits"] = json!({"cpu": "2", "memory": "8Gi"});
    // ... and without apiVersion/kind, as the items of a list come.
    canonical.as_object_mut().unwrap().remove("apiVersion");
    canonical.as_object_mut().unwrap().remove("kind");
    assert!(render::is_applied(&set.object, &canonical), "canonical quantities are the same amounts");
    // Quantities are compared by value only where they are quantities: an image tag is a string.
    let mut other_image = set.object.clone();
    other_image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("mongo:7");
    assert!(!render::is_applied(&set.object, &other_image));
    let mut fewer = canonical.clone();
    fewer["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = json!("1999m");
    assert!(!render::is_applied(&set.object, &fewer));
}

#[test]
fn no_object_is_owned_by_the_managed_instance_and_claims_outlive_the_statefulset() {
    for service in ["postgresql", "mongodb", "influxdb", "grafana"] {
        let mi = fixture(service, "16", json!({}));
        for child in render::render(&mi, None).into_iter().chain(render::credentials(&mi, "p")) {
            assert!(child.object["metadata"].get("ownerReferences").is_none(), "{service}: {}", child.name);
            if child.kind == render::ChildKind::StatefulSet {
                assert_eq!(
                    child.object["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
                    "Retain"
                );
            }
        }
    }
}

/// Each image initialises its database from its environment only when every variable its entrypoint
/// requires is set: MongoDB's refuses to start with a root password and no user
/// (docker-library/mongo docker-entrypoint.sh), InfluxDB's sets up only in `setup` mode with a user,
/// password, org and bucket (influxdata-docker influxdb/2.7/entrypoint.sh, REQUIRED_INIT_VARS), or else
/// the server starts open for anyone to claim; Grafana's admin user is named explicitly.
#[test]
fn each_image_gets_every_variable_its_entrypoint_needs_to_create_the_admin_user() {
    let required: [(&str, &str, &[&str]); 3] = [
        ("mongodb", "7.0", &["MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD"]),
        (
            "influxdb",
            "2.7",
            &[
                "DOCKER_INFLUXDB_INIT_MODE",
                "DOCKER_INFLUXDB_INIT_USERNAME",
                "DOCKER_INFLUXDB_INIT_PASSWORD",
                "DOCKER_INFLUXDB_INIT_ORG",
                "DOCKER_INFLUXDB_INIT_BUCKET",
            ],
        ),
        ("grafana", "11.6", &["GF_SECURITY_ADMIN_USER", "GF_SECURITY_ADMIN_PASSWORD"]),
    ];
    for (service, version, names) in required {
        let mi = fixture(service, version, json!({}));
        let set = render::render(&mi, None)
            .into_iter()
            .find(|c| c.object["kind"] == "StatefulSet")
            .expect("a set")
            .object;
        let env = set["spec"]["template"]["spec"]["containers"][0]["env"].as_array().expect("env").clone();
        let present: Vec<&str> = env.iter().filter_map(|e| e["name"].as_str()).collect();
        for name in names {
            assert!(present.contains(name), "{service}: {name} missing from {present:?}");
        }
        let password =
            env.iter().find(|e| e["name"].as_str().is_some_and(|n| n.ends_with("PASSWORD"))).unwrap();
        assert_eq!(password["valueFrom"]["secretKeyRef"]["name"], "orders-credentials", "{service}");
        if service == "influxdb" {
            assert!(env.iter().any(|e| e["name"] == "DOCKER_INFLUXDB_INIT_MODE" && e["value"] == "setup"));
        }
    }
}

/// The Jobs a rotation and a backup run: what the services' own tools are asked to do.
#[test]
fn rotation_and_backup_jobs_match_the_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for (service, version) in [("mongodb", "7.0"), ("influxdb", "2.7"), ("grafana", "11.6")] {
        let mi = fixture(service, version, json!({}));
        let job = render::rotation::job(&mi, 5).expect("a rotation Job");
        check(
            dir.join(format!("{service}-rotation-job.json")),
            &(serde_json::to_string_pretty(&job.object).unwrap() + "\n"),
        );
    }
    assert!(
        render::rotation::job(&fixture("postgresql", "16", json!({})), 5).is_none(),
        "CloudNativePG rotates its own"
    );
    let backup = uuid::Uuid::parse_str("0193a0b0-0000-7000-8000-0000000000b1").unwrap();
    for (service, version) in [("mongodb", "7.0"), ("influxdb", "2.7"), ("grafana", "11.6")] {
        let mi = fixture(service, version, json!({}));
        let key = format!("acme/{}/{backup}", mi.spec.instance_id);
        let job = render::backup::job(&mi, backup, &key).expect("a backup Job");
        check(
            dir.join(format!("{service}-backup-job.json")),
            &(serde_json::to_string_pretty(&job.object).unwrap() + "\n"),
        );
        // Restored by a Job against the running service, or (Grafana) by its StatefulSet's init container.
        let mut mi = mi;
        mi.spec.restore = Some(cluster_agent::crd::RestoreTarget {
            backup_id: backup.to_string(),
            location: key.clone(),
            target_time: None,
        });
        let mut generations = mi.spec.aspect_generations();
        generations.restore = 5;
        mi.spec.aspects = Some(generations);
        let restore = match render::backup::restore_job(&mi, 5, &key) {
            Some(job) => job.object,
            None => render::render(&mi, None)
                .into_iter()
                .find(|c| c.kind == render::ChildKind::StatefulSet)
                .expect("a StatefulSet")
                .object["spec"]["template"]
                .clone(),
        };
        check(
            dir.join(format!("{service}-restore.json")),
            &(serde_json::to_string_pretty(&restore).unwrap() + "\n"),
        );
    }
}

/// A PostgreSQL fork with the cluster's backup store: its Cluster archives to its own ObjectStore and
/// bootstraps by recovering the source's base backup to the point in time, read through a second
/// ObjectStore at the source's path; and the Backup a backup of it makes.
#[test]
fn a_postgresql_fork_recovers_from_the_source_s_store_and_archives_to_its_own() {
    let mut mi = fixture("postgresql", "16", json!({"data_checksums": true}));
    mi.spec.restore = Some(cluster_agent::crd::RestoreTarget {
        backup_id: "0193a0b0-0000-7000-8000-0000000000b1".into(),
        location: "acme/0193a0b0-0000-7000-8000-000000000000/ledger/base/20261201T013000".into(),
        target_time: Some("2026-12-01T02:30:00Z".into()),
    });
    let store = render::backup::StoreTarget {
        endpoint: "http://s3.example:8333".into(),
        bucket: "cp-backups".into(),
    };
    let mut objects: Vec<_> = render::render(&mi, Some(&store)).into_iter().map(|c| c.object).collect();
    let backup = uuid::Uuid::parse_str("0193a0b0-0000-7000-8000-0000000000b2").unwrap();
    objects.push(render::barman::backup(&mi, backup));
    let text = serde_json::to_string_pretty(&objects).unwrap() + "\n";
    assert!(!text.contains("never-rendered"), "keys reach the cluster only through the store Secret");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    check(dir.join("postgresql-fork-with-backups.json"), &text);
}
