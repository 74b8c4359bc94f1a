//! The users Job's account on a real API server (RBAC as kube-apiserver enforces it): the rendered
//! ServiceAccount, Role and RoleBinding (`render::user_tokens`) let the account `get` and merge-`patch`
//! the users' Secrets, with the body the Job's `hand_over` sends, and nothing else: not another Secret,
//! not a list, not a delete. And the Jobs' pods meet Pod Security `restricted`.

use std::time::Duration;

use cluster_agent::{crd::UserTarget, render::user_tokens};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use kubeenv::{ControlPlane, Identity};
use serde_json::json;

use crate::fixture;

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("{what}: not forbidden: {other:?}"),
    }
}

#[tokio::test]
async fn the_users_job_s_account_may_get_and_patch_the_users_secrets_and_nothing_else() {
    let plane = ControlPlane::start().await;
    let admin = plane.client(Identity::Admin).await.expect("admin client");
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": "cp-acme"}})).unwrap();
    Api::<Namespace>::all(admin.clone()).create(&PostParams::default(), &namespace).await.expect("namespace");
    let mut mi = fixture::instance("influxdb", "2.7", json!({}));
    mi.spec.users = vec![UserTarget { name: "ingest".into(), role: "write".into(), generation: 7 }];
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "cp-acme");
    for name in ["orders.user.ingest", "orders-credentials"] {
        let secret: Secret = serde_json::from_value(json!({"metadata": {"name": name},
            "stringData": {"username": "ingest"}}))
        .unwrap();
        secrets.create(&PostParams::default(), &secret).await.expect("a Secret");
    }
    let apply = PatchParams::apply("test").force();
    for object in [
        user_tokens::service_account(&mi),
        user_tokens::role(&mi, &["orders.user.ingest".to_owned()]),
        user_tokens::role_binding(&mi),
    ] {
        let resource = match object["kind"].as_str().unwrap() {
            "ServiceAccount" => {
                kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::ServiceAccount>(&())
            }
            "Role" => kube::discovery::ApiResource::erase::<k8s_openapi::api::rbac::v1::Role>(&()),
            _ => kube::discovery::ApiResource::erase::<k8s_openapi::api::rbac::v1::RoleBinding>(&()),
        };
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(admin.clone(), "cp-acme", &resource);
        api.patch(object["metadata"]["name"].as_str().unwrap(), &apply, &Patch::Apply(&object))
            .await
            .expect("applied");
    }

    // As the Job's account (kube-apiserver impersonation: the admin may act as anyone).
    let mut config = plane.config(Identity::Admin).await.expect("admin config");
    config.auth_info.impersonate = Some("system:serviceaccount:cp-acme:orders-users".into());
    let account: Api<Secret> = Api::namespaced(Client::try_from(config).unwrap(), "cp-acme");
    // RBAC's cache takes the new binding within moments: bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match account.get("orders.user.ingest").await {
            Ok(_) => break,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "the account cannot read its Secret: {e}")
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The body `hand_over` sends, as a JSON merge patch.
    let patch = json!({"metadata": {"annotations": {"cp.example.com/password-generation": "7"}},
                       "stringData": {"password": "tok-made-by-influxdb==", "id": "0a00000000000001"}});
    account
        .patch("orders.user.ingest", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patched");
    let written = secrets.get("orders.user.ingest").await.unwrap();
    let data = written.data.unwrap();
    assert_eq!(data["password"].0, b"tok-made-by-influxdb==", "stringData becomes data");
    assert_eq!(data["id"].0, b"0a00000000000001");
    assert_eq!(data["username"].0, b"ingest", "the rest kept");
    assert_eq!(written.metadata.annotations.unwrap()["cp.example.com/password-generation"], "7");

    forbidden(account.get("orders-credentials").await, "get of the admin's Secret");
    forbidden(
        account.patch("orders-credentials", &PatchParams::default(), &Patch::Merge(&patch)).await,
        "patch of another Secret",
    );
    forbidden(account.list(&ListParams::default()).await, "list of Secrets");
    forbidden(account.delete("orders.user.ingest", &DeleteParams::default()).await, "delete of its Secret");
}

/// The users Jobs' pods meet Pod Security `restricted` (k8s.io/pod-security-admission v0.36.1, the
/// `PodSecurity` plugin of kube-apiserver: `policy/check_runAsNonRoot.go`,
/// `check_allowPrivilegeEscalation.go`, `check_capabilities_restricted.go`,
/// `check_seccompProfile_restricted.go`), stricter than the `baseline` the project namespaces enforce;
/// without their security context they do not.
#[tokio::test]
async fn the_users_jobs_pods_are_admitted_under_pod_security_restricted() {
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    use user_tokens::TokenUser;
    let plane = ControlPlane::start().await;
    let admin = plane.client(Identity::Admin).await.expect("admin client");
    let strict = "cp-acme";
    let labelled =
        json!({"metadata": {"name": strict, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &serde_json::from_value(labelled).unwrap())
        .await
        .expect("a namespace enforcing restricted");
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "orders-users"}})).unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), strict)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), strict);
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    for (service, version, role) in [("influxdb", "2.7", "write"), ("grafana", "11.6", "Viewer")] {
        let mut mi = fixture::instance(service, version, json!({}));
        mi.spec.users = vec![UserTarget { name: "app".into(), role: role.into(), generation: 3 }];
        let users = [TokenUser { user: &mi.spec.users[0], renew: true }];
        let job = user_tokens::job(&mi, 3, &users, &[]).object;
        let template = &job["spec"]["template"];
        let pod = |spec: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": format!("{service}-users"),
                "labels": template["metadata"]["labels"]}, "spec": spec}))
            .unwrap()
        };
        if let Err(e) = pods.create(&dry_run, &pod(template["spec"].clone())).await {
            panic!("the {service} users Job's pod is refused under restricted: {e}");
        }
        let mut loose = template["spec"].clone();
        loose["containers"][0].as_object_mut().unwrap().remove("securityContext");
        match pods.create(&dry_run, &pod(loose)).await {
            Err(kube::Error::Api(e)) => {
                assert!(e.message.contains("violates PodSecurity \"restricted"), "{}", e.message)
            }
            other => panic!("a pod without the settings must be refused under restricted: {other:?}"),
        }
    }
}
