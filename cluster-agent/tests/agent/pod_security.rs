//! Pod Security admission on the real API server (k8s.io/pod-security-admission v0.36.1, built into
//! kube-apiserver as the `PodSecurity` plugin): the namespace the agent makes for a project enforces
//! `baseline`, so a pod that breaks it is refused there, while every pod the agent's objects make — each
//! service's StatefulSet pods, its rotation, backup and restore Jobs' pods — is admitted. The simulator
//! has no admission, so this runs on the real API server only.

use crate::common;
use crate::fixture;

use cluster_agent::{
    crd::{ManagedInstance, RestoreTarget},
    mirror::{POD_SECURITY_ENFORCE, POD_SECURITY_LEVEL},
    render::{self, ChildKind, backup, rotation},
};
use common::*;
use domain::ServiceType;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api,
    api::{PostParams, ResourceExt as _},
};
use serde_json::{Value, json};

/// A pod as its owner's controller would make it from `template` (a StatefulSet's claim templates become
/// claim volumes, as the StatefulSet controller adds them).
fn pod_of(name: &str, template: &Value, claims: &[&str]) -> Pod {
    let mut spec = template["spec"].clone();
    for claim in claims {
        let volume =
            json!({"name": claim, "persistentVolumeClaim": {"claimName": format!("{claim}-{name}")}});
        spec["volumes"].as_array_mut().expect("the pod's volumes").push(volume);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": template["metadata"]["labels"]},
        "spec": spec,
    }))
    .expect("a pod")
}

/// Every pod the agent's objects for `mi` make: the workload's, and those of its Jobs.
fn rendered_pods(mi: &ManagedInstance) -> Vec<Pod> {
    let mut pods = Vec::new();
    let service = &mi.spec.service;
    for child in render::render(mi, None) {
        if child.kind == ChildKind::StatefulSet {
            let claims: Vec<&str> = child.object["spec"]["volumeClaimTemplates"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["metadata"]["name"].as_str())
                .collect();
            pods.push(pod_of(&format!("{service}-0"), &child.object["spec"]["template"], &claims));
        }
        // The instance's own Jobs (MongoDB's replica set initiation).
        if child.kind == ChildKind::Job {
            pods.push(pod_of(&format!("{service}-{}", child.name), &child.object["spec"]["template"], &[]));
        }
    }
    let backup_id = uuid::Uuid::nil();
    let jobs = [
        ("rotation", rotation::job(mi, 5)),
        ("backup", backup::job(mi, backup_id, "acme/x/backup")),
        ("restore", backup::restore_job(mi, 5, "acme/x/backup")),
    ];
    for (what, job) in jobs {
        if let Some(job) = job {
            pods.push(pod_of(&format!("{service}-{what}"), &job.object["spec"]["template"], &[]));
        }
    }
    pods
}

#[tokio::test]
async fn a_project_namespace_refuses_a_privileged_pod_and_admits_every_rendered_pod() {
    let world = World::start(Backend::Real, &["c1"]).await;
    let cluster = world.cluster("c1");
    world.provision("c1", "mongo", ServiceType::Mongodb, "7.0").await;
    // The agent makes the project's namespace before the instance's objects: once they are ready there,
    // the namespace is as the agent made it.
    cluster.converges("provisioned", |v| v.ready_at("mongo", 1)).await;
    let Kube::Real { admin, .. } = &cluster.kube else { unreachable!("a real API server") };

    let namespace = Api::<Namespace>::all(admin.clone()).get(NAMESPACE).await.expect("the namespace");
    assert_eq!(
        namespace.labels().get(POD_SECURITY_ENFORCE).map(String::as_str),
        Some(POD_SECURITY_LEVEL),
        "the project namespace enforces a Pod Security level"
    );

    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    // Refused by Pod Security (403 "violates PodSecurity"), not by validation: `privileged` this API server
    // refuses anyway (`--allow-privileged` is off), so the pods break `baseline` otherwise.
    let refused = [
        // policy/check_hostNamespaces.go: hostNetwork, hostPID, hostIPC are refused.
        json!({"hostNetwork": true, "containers": [{"name": "c", "image": "busybox"}]}),
        // policy/check_hostPathVolumes.go: a hostPath volume is refused.
        json!({"containers": [{"name": "c", "image": "busybox"}],
               "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
        // policy/check_capabilities_baseline.go: only the default capabilities may be added.
        json!({"containers": [{"name": "c", "image": "busybox",
                               "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}),
    ];
    for spec in refused {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "escape"}, "spec": spec})).unwrap();
        match pods.create(&dry_run, &pod).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 403, "{e:?}");
                assert!(e.message.contains("violates PodSecurity \"baseline"), "{}", e.message);
            }
            other => panic!("{spec} must be refused in {NAMESPACE}: {other:?}"),
        }
    }

    let mut admitted = Vec::new();
    for (service, version) in [("mongodb", "7.0"), ("influxdb", "2.7"), ("grafana", "11.3.0")] {
        let mut mi = fixture::instance(service, version, json!({}));
        // With a restore asked for, Grafana's pods carry the restore init container.
        mi.spec.restore = Some(RestoreTarget {
            backup_id: uuid::Uuid::nil().to_string(),
            location: "acme/x/backup".into(),
            target_time: None,
        });
        mi.spec.aspects = Some(cluster_agent::crd::AspectGenerations { restore: 5, ..Default::default() });
        for pod in rendered_pods(&mi) {
            let name = pod.name_any();
            if let Err(e) = pods.create(&dry_run, &pod).await {
                panic!("{name} is refused: {e}");
            }
            admitted.push(name);
        }
    }
    for expected in ["mongodb-0", "mongodb-rotation", "mongodb-backup", "mongodb-restore", "grafana-backup"] {
        assert!(admitted.iter().any(|a| a == expected), "{expected} was checked: {admitted:?}");
    }

    // PostgreSQL's configuration check runs in CloudNativePG's image as its own user (`render/
    // pg_settings.rs`): its pod meets `restricted` (policy/check_runAsNonRoot.go,
    // check_allowPrivilegeEscalation.go, check_capabilities_restricted.go, check_seccompProfile_restricted.go),
    // which a pod without those settings does not.
    let strict = "cp-restricted-check";
    let labelled = json!({"metadata": {"name": strict, "labels": {POD_SECURITY_ENFORCE: "restricted"}}});
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &serde_json::from_value(labelled).unwrap())
        .await
        .expect("a namespace enforcing restricted");
    let in_strict: Api<Pod> = Api::namespaced(admin.clone(), strict);
    let mi = fixture::instance("postgresql", "16", json!({"work_mem_kib": 4096}));
    let job = render::render(&mi, None)
        .into_iter()
        .find(render::pg_settings::is_verification_job)
        .expect("PostgreSQL's configuration check Job");
    let template = &job.object["spec"]["template"];
    let pod = |spec: Value| -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "pgconf", "labels": template["metadata"]["labels"]},
            "spec": spec}),
        )
        .unwrap()
    };
    if let Err(e) = in_strict.create(&dry_run, &pod(template["spec"].clone())).await {
        panic!("the configuration check's pod is refused under restricted: {e}");
    }
    let mut loose = template["spec"].clone();
    loose["containers"][0].as_object_mut().unwrap().remove("securityContext");
    match in_strict.create(&dry_run, &pod(loose)).await {
        Err(kube::Error::Api(e)) => {
            assert!(e.message.contains("violates PodSecurity \"restricted"), "{}", e.message)
        }
        other => panic!("a pod without the settings must be refused under restricted: {other:?}"),
    }
}
