//! The harness itself: a StatefulSet with a volume claim becomes ready through the real controllers, and
//! the agent's identity is held to its ClusterRole.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::ConfigMap};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
    runtime::wait::await_condition,
};
use kubeenv::{ControlPlane, Identity};

#[tokio::test]
async fn a_statefulset_with_a_claim_becomes_ready_and_the_agent_identity_is_confined() {
    let plane = ControlPlane::start().await;
    eprintln!("control plane ready in {:?}", plane.startup);
    let admin = plane.client(Identity::Admin).await.unwrap();
    let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), "default");
    let set: StatefulSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2, "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "example.invalid/web:1",
                                                  "resources": {"requests": {"cpu": "2000m", "memory": "8192Mi"}}}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    }))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    let two_ready = |set: Option<&StatefulSet>| {
        set.and_then(|s| s.status.as_ref()).and_then(|s| s.ready_replicas) == Some(2)
    };
    let ready =
        tokio::time::timeout(Duration::from_secs(60), await_condition(sets.clone(), "web", two_ready))
            .await
            .expect("both replicas ready within 60 s")
            .unwrap()
            .expect("the set exists");
    // The real API server canonicalises quantities.
    let requests =
        ready.spec.template.spec.unwrap().containers[0].resources.clone().unwrap().requests.unwrap();
    assert_eq!(requests["cpu"].0, "2");
    assert_eq!(requests["memory"].0, "8Gi");

    let agent = plane.client(Identity::Agent).await.unwrap();
    // Allowed by deploy/rbac: configmaps in any namespace.
    let patch = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    Api::<ConfigMap>::namespaced(agent.clone(), "default")
        .patch("x", &PatchParams::apply("test"), &Patch::Apply(&patch))
        .await
        .expect("the agent may apply configmaps");
    // Not granted: nodes.
    let denied = Api::<k8s_openapi::api::core::v1::Node>::all(agent).list(&Default::default()).await;
    assert!(matches!(denied, Err(kube::Error::Api(ref e)) if e.code == 403), "{denied:?}");
}
