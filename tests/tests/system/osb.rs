//! The Open Service Broker API v2.17 facade as a platform sees it: through the real HTTP API, a real
//! nats-server, and the agent on the simulator. One test per rule of the spec the broker follows; each
//! names the section. `osb_conformance.rs` runs schemathesis against the spec's own `openapi.yaml`.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};
use system_tests::{Reply, TestApi};

/// The platform's credentials: HTTP Basic with an API token as password (spec *Platform to Service Broker
/// Authentication*).
fn basic(token: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("platform:{token}")))
}

/// A control plane with the agent of each of its clusters on a simulator whose workloads take
/// `ready_delay` to become ready (long enough that an operation is seen in progress).
pub(crate) struct Stack {
    pub(crate) api: TestApi,
    clusters: Vec<Cluster>,
}

/// A simulated cluster and its agent (none while stopped).
struct Cluster {
    name: &'static str,
    sim: k8s_sim::Simulator,
    address: std::net::SocketAddr,
    agent: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Stack {
    pub(crate) async fn start(ready_delay: Duration) -> Self {
        let api = TestApi::start().await;
        let mut agents = Vec::new();
        for name in ["eu-1", "eu-2"] {
            let (sim, address) = system_tests::cluster::simulator(ready_delay).await;
            let agent = Some(system_tests::cluster::agent(&api, name, address).await);
            agents.push(Cluster { name, sim, address, agent });
        }
        Self { api, clusters: agents }
    }

    /// Stops every agent: nothing the clusters do is reported until [`Self::start_agents`].
    fn stop_agents(&mut self) {
        for cluster in &mut self.clusters {
            if let Some(agent) = cluster.agent.take() {
                agent.abort();
            }
        }
    }

    /// Starts the stopped agents again, on the same clusters.
    async fn start_agents(&mut self) {
        for cluster in &mut self.clusters {
            if cluster.agent.is_none() {
                cluster.agent =
                    Some(system_tests::cluster::agent(&self.api, cluster.name, cluster.address).await);
            }
        }
    }

    /// An object as the simulators hold it, on whichever cluster it is.
    fn object(&self, group: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.clusters.iter().find_map(|Cluster { sim, .. }| {
            let store = sim.store();
            let resource = store.resource_type(group, "v1", kind)?;
            store.get(&resource, namespace, name)
        })
    }

    /// A broker request as the platform admin's token, API version 2.17.
    async fn osb(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        self.osb_as(system_tests::ADMIN_TOKEN, method, path, body, &[]).await
    }

    async fn osb_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let auth = basic(token);
        let mut headers = vec![("authorization", auth.as_str()), ("x-broker-api-version", "2.17")];
        headers.extend_from_slice(extra);
        self.api.call(method, path, body, &headers).await
    }

    /// Provisions `instance` (asynchronously) and awaits its operation's success.
    async fn provisioned(&self, instance: &str, provision: &Value) {
        let path = format!("/v2/service_instances/{instance}?accepts_incomplete=true");
        let created = self.osb(Method::PUT, &path, Some(provision)).await;
        assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
        let done = self.settle(instance, created.body["operation"].as_str().unwrap()).await;
        assert_eq!(done.body["state"], "succeeded", "{}", done.body);
    }

    /// Binds `binding` (a binding's path) with `bind` and awaits the bind's success.
    async fn bound(&self, binding: &str, bind: &Value) {
        let bound = self.osb(Method::PUT, &format!("{binding}?accepts_incomplete=true"), Some(bind)).await;
        assert_eq!(bound.status, StatusCode::ACCEPTED, "{}", bound.body);
        let poll =
            format!("{binding}/last_operation?operation={}", bound.body["operation"].as_str().unwrap());
        let state = self
            .poll_until(&poll, Duration::from_secs(30), |reply| reply.body["state"] != "in progress")
            .await;
        assert_eq!(state.body["state"], "succeeded", "{}", state.body);
    }

    /// Polls `last_operation` (bounded) until it is no longer `in progress`; the final reply.
    async fn settle(&self, instance: &str, operation: &str) -> Reply {
        let path = format!("/v2/service_instances/{instance}/last_operation?operation={operation}");
        self.poll_until(&path, Duration::from_secs(60), |reply| {
            reply.status != StatusCode::OK || reply.body["state"] != "in progress"
        })
        .await
    }

    /// GETs `path` as the platform does until `done` holds or `timeout` passes; the last reply. Between
    /// two asks it awaits the next message the API's read models fold (every answer here changes only
    /// with them), rather than sleeping.
    async fn poll_until(&self, path: &str, timeout: Duration, done: impl Fn(&Reply) -> bool) -> Reply {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = self.api.state.read_models.applied();
            let reply = self.osb(Method::GET, path, None).await;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if done(&reply) || left.is_zero() {
                return reply;
            }
            self.api.state.read_models.wait_for(seen + 1, left).await;
        }
    }
}

fn catalog_ids(catalog: &Value, service: &str, plan: &str) -> (String, String, String) {
    let offering = catalog["services"].as_array().unwrap().iter().find(|s| s["name"] == service).unwrap();
    let plan = offering["plans"].as_array().unwrap().iter().find(|p| p["name"] == plan).unwrap();
    (
        offering["id"].as_str().unwrap().to_owned(),
        plan["id"].as_str().unwrap().to_owned(),
        plan["maintenance_info"]["version"].as_str().unwrap().to_owned(),
    )
}

fn cf_context(space: &str) -> Value {
    json!({"platform": "cloudfoundry", "organization_guid": "org-1", "space_guid": space})
}

#[tokio::test]
async fn the_catalog_answers_the_platform_s_token_and_version_only() {
    let stack = Stack::start(Duration::from_millis(20)).await;
    let catalog = stack.osb(Method::GET, "/v2/catalog", None).await;
    assert_eq!(catalog.status, StatusCode::OK, "{}", catalog.body);
    let services = catalog.body["services"].as_array().unwrap();
    let names: Vec<&str> = services.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["postgresql", "mongodb", "influxdb", "grafana"], "one service per service type");
    let postgresql = &services[0];
    assert_eq!(postgresql["instances_retrievable"], true);
    assert_eq!(postgresql["plan_updateable"], true);
    // Bindings are the instance's users, which the agent makes for PostgreSQL.
    assert_eq!(postgresql["bindable"], true);
    assert_eq!(postgresql["bindings_retrievable"], true);
    let starter = postgresql["plans"].as_array().unwrap().iter().find(|p| p["name"] == "starter").unwrap();
    assert_eq!(starter["maintenance_info"]["version"], "18.0.0", "the newest offered version");
    assert_eq!(starter["binding_rotatable"], true);
    let create = &starter["schemas"]["service_instance"]["create"]["parameters"];
    assert_eq!(create["$schema"], "http://json-schema.org/draft-04/schema#");
    assert_eq!(
        create["properties"]["max_connections"],
        json!({"type": "integer", "minimum": 10, "maximum": 5000, "description": "maximum concurrent connections"})
    );
    // The ids stay the same across queries (spec *Catalog Management*).
    let again = stack.osb(Method::GET, "/v2/catalog", None).await;
    assert_eq!(again.body, catalog.body);

    // Spec *Platform to Service Broker Authentication*: 401 when authentication fails.
    let none = stack
        .api
        .call(Method::GET, "/v2/catalog", None, &[("authorization", ""), ("x-broker-api-version", "2.17")])
        .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(none.header("www-authenticate").is_some_and(|c| c.starts_with("Basic")));
    let wrong = stack.osb_as("cpat_nobody", Method::GET, "/v2/catalog", None, &[]).await;
    assert_eq!(
        (wrong.status, wrong.body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("Unauthorized"))
    );
    // Spec *API Version Header*: 412 for a version the broker does not serve, 400 without the header.
    let auth = basic(system_tests::ADMIN_TOKEN);
    let old = stack
        .api
        .call(Method::GET, "/v2/catalog", None, &[("authorization", &auth), ("x-broker-api-version", "2.12")])
        .await;
    assert_eq!(old.status, StatusCode::PRECONDITION_FAILED, "{}", old.body);
    assert!(old.body["description"].as_str().unwrap().contains("2.13"), "names the versions served");
    let oldest = stack
        .api
        .call(Method::GET, "/v2/catalog", None, &[("authorization", &auth), ("x-broker-api-version", "2.13")])
        .await;
    assert_eq!(oldest.status, StatusCode::OK);
    let missing = stack.api.call(Method::GET, "/v2/catalog", None, &[("authorization", &auth)]).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_instance_is_provisioned_polled_re_put_updated_and_deprovisioned() {
    let stack = Stack::start(Duration::from_secs(2)).await;
    let catalog = stack.osb(Method::GET, "/v2/catalog", None).await.body;
    let (service_id, plan_id, maintenance) = catalog_ids(&catalog, "postgresql", "starter");
    let (_, standard_id, _) = catalog_ids(&catalog, "postgresql", "standard");
    let instance = uuid::Uuid::new_v4().to_string();
    let path = format!("/v2/service_instances/{instance}");
    let provision = json!({
        "service_id": service_id, "plan_id": plan_id, "context": cf_context("space-1"),
        "organization_guid": "org-1", "space_guid": "space-1", "parameters": {"max_connections": 200},
        "maintenance_info": {"version": maintenance},
    });
    let stored = stack.api.stream_messages().await;

    // Spec *Asynchronous Operations*: without accepts_incomplete=true, 422 AsyncRequired, and a 4xx changes
    // nothing (*Service Broker Errors*).
    let sync = stack.osb(Method::PUT, &path, Some(&provision)).await;
    assert_eq!(
        (sync.status, sync.body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("AsyncRequired"))
    );
    assert_eq!(stack.api.stream_messages().await, stored, "the refused provision stored nothing");

    let async_path = format!("{path}?accepts_incomplete=true");
    let created = stack.osb(Method::PUT, &async_path, Some(&provision)).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let operation = created.body["operation"].as_str().expect("an operation").to_owned();
    // The platform's UUID is the instance id, in the project its space maps to.
    let v1 = stack
        .api
        .call(Method::GET, &format!("/v1/projects/cf-space-1/instances/{instance}"), None, &[])
        .await;
    assert_eq!(v1.status, StatusCode::OK, "{}", v1.body);
    assert_eq!(v1.body["config"]["max_connections"], 200);

    // Spec *Provisioning*, 202: a re-sent PUT while provisioning answers with the same operation.
    let resent = stack.osb(Method::PUT, &async_path, Some(&provision)).await;
    assert_eq!(resent.status, StatusCode::ACCEPTED, "{}", resent.body);
    assert_eq!(resent.body["operation"], operation.as_str());
    // 409: the same id with other attributes; nothing stored.
    let before = stack.api.stream_messages().await;
    let mut other = provision.clone();
    other["plan_id"] = json!(standard_id);
    let conflict = stack.osb(Method::PUT, &async_path, Some(&other)).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    // While it is provisioning the instance cannot be fetched (spec *Fetching a Service Instance*, 404).
    let early = stack.osb(Method::GET, &path, None).await;
    assert_eq!(early.status, StatusCode::NOT_FOUND, "{}", early.body);
    assert_eq!(stack.api.stream_messages().await, before, "the conflicting provision stored nothing");

    let polled = stack.osb(Method::GET, &format!("{path}/last_operation?operation={operation}"), None).await;
    assert_eq!((polled.status, polled.body["state"].as_str()), (StatusCode::OK, Some("in progress")));
    assert!(polled.header("retry-after").is_some());
    let done = stack.settle(&instance, &operation).await;
    assert_eq!(done.body["state"], "succeeded", "{}", done.body);

    // Spec *Provisioning*, 200: an identical PUT of a provisioned instance.
    let again = stack.osb(Method::PUT, &async_path, Some(&provision)).await;
    assert_eq!((again.status, &again.body), (StatusCode::OK, &json!({})));
    let fetched = stack.osb(Method::GET, &path, None).await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.body);
    assert_eq!(fetched.body["plan_id"], plan_id.as_str());
    assert_eq!(fetched.body["maintenance_info"]["version"], "18.0.0");
    assert_eq!(fetched.body["parameters"]["max_connections"], 200);

    // Spec *Updating a Service Instance*: a change without accepts_incomplete is 422 AsyncRequired; a
    // maintenance_info the catalog does not have is 422 MaintenanceInfoConflict; neither stores anything.
    let before = stack.api.stream_messages().await;
    let change = json!({"service_id": service_id, "plan_id": standard_id});
    let sync = stack.osb(Method::PATCH, &path, Some(&change)).await;
    assert_eq!(sync.body["error"], "AsyncRequired", "{}", sync.body);
    let stale =
        json!({"service_id": service_id, "plan_id": standard_id, "maintenance_info": {"version": "16.0.0"}});
    let stale = stack.osb(Method::PATCH, &async_path, Some(&stale)).await;
    assert_eq!(
        (stale.status, stale.body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("MaintenanceInfoConflict"))
    );
    assert_eq!(stack.api.stream_messages().await, before, "refused updates stored nothing");

    let updated = stack.osb(Method::PATCH, &async_path, Some(&change)).await;
    assert_eq!(updated.status, StatusCode::ACCEPTED, "{}", updated.body);
    let update_operation = updated.body["operation"].as_str().unwrap().to_owned();
    assert_ne!(update_operation, operation);
    // Spec *Blocking Operations*: another change while it runs is 422 ConcurrencyError …
    let another = json!({"service_id": service_id, "parameters": {"work_mem_kib": 8192}});
    let blocked = stack.osb(Method::PATCH, &async_path, Some(&another)).await;
    assert_eq!(
        (blocked.status, blocked.body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("ConcurrencyError"))
    );
    // … and the same PATCH again is 202 with the same operation (spec *Updating*, 202).
    let resent = stack.osb(Method::PATCH, &async_path, Some(&change)).await;
    assert_eq!(
        (resent.status, resent.body["operation"].as_str()),
        (StatusCode::ACCEPTED, Some(update_operation.as_str()))
    );
    // Fetching while it is being updated is 422 ConcurrencyError (spec *Fetching a Service Instance*).
    let busy = stack.osb(Method::GET, &path, None).await;
    assert_eq!(busy.body["error"], "ConcurrencyError", "{}", busy.body);
    let done = stack.settle(&instance, &update_operation).await;
    assert_eq!(done.body["state"], "succeeded", "{}", done.body);
    // Without `operation`, the last one.
    let last = stack.osb(Method::GET, &format!("{path}/last_operation"), None).await;
    assert_eq!(last.body["state"], "succeeded");
    let fetched = stack.osb(Method::GET, &path, None).await;
    assert_eq!(fetched.body["plan_id"], standard_id.as_str());
    // A request that changes nothing is 200 (spec *Updating*, 200).
    let same = stack.osb(Method::PATCH, &path, Some(&change)).await;
    assert_eq!((same.status, &same.body), (StatusCode::OK, &json!({})));

    // Spec *Deprovisioning*: service_id and plan_id are required; then 202, the same operation for a
    // repeated DELETE, 410 from last_operation once it is gone, and 410 for a DELETE after that.
    let bare = stack.osb(Method::DELETE, &format!("{path}?accepts_incomplete=true"), None).await;
    assert_eq!(bare.status, StatusCode::BAD_REQUEST, "{}", bare.body);
    let delete = format!("{path}?accepts_incomplete=true&service_id={service_id}&plan_id={standard_id}");
    let deleted = stack.osb(Method::DELETE, &delete, None).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED, "{}", deleted.body);
    let delete_operation = deleted.body["operation"].as_str().unwrap().to_owned();
    let repeated = stack.osb(Method::DELETE, &delete, None).await;
    assert_eq!(repeated.body["operation"], delete_operation.as_str(), "{}", repeated.body);
    let gone = stack.settle(&instance, &delete_operation).await;
    assert_eq!(gone.status, StatusCode::GONE, "{}", gone.body);
    let again = stack.osb(Method::DELETE, &delete, None).await;
    assert_eq!(again.status, StatusCode::GONE, "{}", again.body);
}

#[tokio::test]
async fn deleting_an_unknown_instance_is_410_and_stores_nothing() {
    let stack = Stack::start(Duration::from_millis(20)).await;
    let stored = stack.api.stream_messages().await;
    let path = "/v2/service_instances/never-provisioned?accepts_incomplete=true&service_id=s&plan_id=p";
    let reply = stack.osb(Method::DELETE, path, None).await;
    assert_eq!(reply.status, StatusCode::GONE, "{}", reply.body);
    let polled = stack.osb(Method::GET, "/v2/service_instances/never-provisioned/last_operation", None).await;
    assert_eq!(polled.status, StatusCode::NOT_FOUND);
    assert_eq!(stack.api.stream_messages().await, stored);
}

#[tokio::test]
async fn an_update_carrying_only_the_newer_maintenance_info_upgrades_the_version() {
    let stack = Stack::start(Duration::from_millis(200)).await;
    let catalog = stack.osb(Method::GET, "/v2/catalog", None).await.body;
    let (service_id, plan_id, maintenance) = catalog_ids(&catalog, "postgresql", "starter");
    // A platform id that is no UUID: the instance id is derived from it (UUIDv5).
    let instance = "orders-db";
    let path = format!("/v2/service_instances/{instance}?accepts_incomplete=true");
    let context =
        json!({"platform": "kubernetes", "namespace": "shop", "clusterid": "c1", "instance_name": "orders"});
    let provision = json!({"service_id": service_id, "plan_id": plan_id, "context": context,
                           "organization_guid": "o", "space_guid": "s", "parameters": {"version": "16"}});
    let created = stack.osb(Method::PUT, &path, Some(&provision)).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let done = stack.settle(instance, created.body["operation"].as_str().unwrap()).await;
    assert_eq!(done.body["state"], "succeeded", "{}", done.body);
    let fetched = stack.osb(Method::GET, &format!("/v2/service_instances/{instance}"), None).await;
    assert_eq!(fetched.body["maintenance_info"]["version"], "16.0.0", "{}", fetched.body);

    // Originating identity (spec *Originating Identity*): the platform's user is the events' actor.
    let user = base64::engine::general_purpose::STANDARD
        .encode(r#"{"username": "duke", "uid": "u-1", "groups": []}"#);
    let identity = format!("kubernetes {user}");
    let upgrade = json!({"service_id": service_id, "maintenance_info": {"version": maintenance}});
    let upgraded = stack
        .osb_as(
            system_tests::ADMIN_TOKEN,
            Method::PATCH,
            &path,
            Some(&upgrade),
            &[("x-broker-api-originating-identity", &identity)],
        )
        .await;
    assert_eq!(upgraded.status, StatusCode::ACCEPTED, "{}", upgraded.body);
    let done = stack.settle(instance, upgraded.body["operation"].as_str().unwrap()).await;
    assert_eq!(done.body["state"], "succeeded", "{}", done.body);
    let fetched = stack.osb(Method::GET, &format!("/v2/service_instances/{instance}"), None).await;
    assert_eq!(fetched.body["maintenance_info"]["version"], "18.0.0");
    assert_eq!(fetched.body["parameters"]["version"], "18");

    // The instance lives in project k8s-shop under the derived id, and its upgrade names duke.
    let id = api::osb::ids::instance_id(instance);
    assert_eq!(id.get_version_num(), 5);
    let history = stack
        .api
        .state
        .commands
        .store()
        .history(&streams::instances::aggregate_id("k8s-shop", id))
        .await
        .expect("the instance's history");
    let (_, _, metadata) = history.last().expect("events");
    assert_eq!(metadata.actor, "kubernetes user duke via admin@tests (token admin)");
}

#[tokio::test]
async fn a_token_acts_only_in_its_projects() {
    let stack = Stack::start(Duration::from_millis(20)).await;
    let catalog = stack.osb(Method::GET, "/v2/catalog", None).await.body;
    let (service_id, plan_id, _) = catalog_ids(&catalog, "postgresql", "starter");
    let provision = |namespace: &str| {
        json!({"service_id": service_id, "plan_id": plan_id,
               "context": {"platform": "kubernetes", "namespace": namespace, "clusterid": "c1"},
               "organization_guid": "o", "space_guid": "s"})
    };
    // acme's editor names a namespace whose project (k8s-shop) it holds no role in: 403, nothing stored.
    let stored = stack.api.stream_messages().await;
    let path = "/v2/service_instances/9d6e2b8c-4f0a-4c1e-8a55-3f2b7c9d1e20?accepts_incomplete=true";
    let refused =
        stack.osb_as(system_tests::ACME_EDITOR_TOKEN, Method::PUT, path, Some(&provision("shop")), &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(stack.api.stream_messages().await, stored);
    // The platform's instance in k8s-shop is not there for acme's token.
    let created = stack.osb(Method::PUT, path, Some(&provision("shop"))).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let polled = stack
        .osb_as(
            system_tests::ACME_EDITOR_TOKEN,
            Method::GET,
            "/v2/service_instances/9d6e2b8c-4f0a-4c1e-8a55-3f2b7c9d1e20/last_operation",
            None,
            &[],
        )
        .await;
    assert_eq!(polled.status, StatusCode::NOT_FOUND, "{}", polled.body);
    // A namespace that makes no project label is refused, naming the field.
    let long = "n".repeat(60);
    let bad = stack
        .osb(Method::PUT, "/v2/service_instances/x?accepts_incomplete=true", Some(&provision(&long)))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body["description"].as_str().unwrap().contains("context.namespace"), "{}", bad.body);
}

#[tokio::test]
async fn of_two_concurrent_updates_one_is_a_concurrency_error() {
    let stack = Stack::start(Duration::from_millis(500)).await;
    let catalog = stack.osb(Method::GET, "/v2/catalog", None).await.body;
    let (service_id, plan_id, _) = catalog_ids(&catalog, "postgresql", "starter");
    let instance = uuid::Uuid::new_v4().to_string();
    let path = format!("/v2/service_instances/{instance}?accepts_incomplete=true");
    let provision = json!({"service_id": service_id, "plan_id": plan_id, "context": cf_context("space-2"),
                           "organization_guid": "o", "space_guid": "space-2"});
    stack.provisioned(&instance, &provision).await;

    // Dynamic parameters: applied at once (a restart one would be held for the maintenance window).
    let first = json!({"service_id": service_id, "parameters": {"work_mem_kib": 8192}});
    let second = json!({"service_id": service_id, "parameters": {"work_mem_kib": 16384}});
    let (a, b) = tokio::join!(
        stack.osb(Method::PATCH, &path, Some(&first)),
        stack.osb(Method::PATCH, &path, Some(&second)),
    );
    let mut statuses = [(a.status, a.body["error"].clone()), (b.status, b.body["error"].clone())];
    statuses.sort_by_key(|(s, _)| s.as_u16());
    assert_eq!(
        statuses,
        [(StatusCode::ACCEPTED, Value::Null), (StatusCode::UNPROCESSABLE_ENTITY, json!("ConcurrencyError"))],
        "{} / {}",
        a.body,
        b.body
    );
}

#[tokio::test]
async fn every_service_s_plans_are_bindable_now_that_every_service_has_users() {
    let stack = Stack::start(Duration::from_millis(20)).await;
    let catalog = stack.osb(Method::GET, "/v2/catalog", None).await.body;
    for service in catalog["services"].as_array().unwrap() {
        assert_eq!(service["bindable"], true, "{}", service["name"]);
    }
}

fn decoded(secret: &Value, key: &str) -> String {
    let data = secret["data"][key].as_str().unwrap_or_else(|| panic!("no {key} in {secret}"));
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap()
}

#[tokio::test]
async fn a_binding_is_a_user_whose_credentials_come_only_from_fetching_it_and_rotation_keeps_the_old_one() {
    let stack = Stack::start(Duration::from_millis(200)).await;
    let catalog = stack.osb(Method::GET, "/v2/catalog", None).await.body;
    let (service_id, plan_id, _) = catalog_ids(&catalog, "postgresql", "starter");
    let instance = uuid::Uuid::new_v4().to_string();
    let provision = json!({"service_id": service_id, "plan_id": plan_id, "context": cf_context("space-3"),
                           "organization_guid": "o", "space_guid": "space-3"});
    stack.provisioned(&instance, &provision).await;
    let cluster_name = format!("osb-{}", instance.replace('-', ""));
    let stored = stack.api.stream_messages().await;

    // Spec *Binding*: asynchronous only; a bad role is refused naming it; neither stores anything.
    let binding = format!("/v2/service_instances/{instance}/service_bindings/app-1");
    let bind = json!({"service_id": service_id, "plan_id": plan_id, "bind_resource": {"app_guid": "app-1"},
                      "parameters": {"role": "readonly"}});
    let sync = stack.osb(Method::PUT, &binding, Some(&bind)).await;
    assert_eq!(sync.body["error"], "AsyncRequired", "{}", sync.body);
    let mut bad = bind.clone();
    bad["parameters"]["role"] = json!("superuser");
    let refused = stack.osb(Method::PUT, &format!("{binding}?accepts_incomplete=true"), Some(&bad)).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body["description"].as_str().unwrap().contains("parameters.role"), "{}", refused.body);
    assert_eq!(stack.api.stream_messages().await, stored);

    // 202 with an operation and no credentials; the binding cannot be fetched until it succeeded.
    let bound = stack.osb(Method::PUT, &format!("{binding}?accepts_incomplete=true"), Some(&bind)).await;
    assert_eq!(bound.status, StatusCode::ACCEPTED, "{}", bound.body);
    assert_eq!(
        bound.body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["operation"],
        "no credentials in a 202"
    );
    let operation = bound.body["operation"].as_str().unwrap().to_owned();
    let resent = stack.osb(Method::PUT, &format!("{binding}?accepts_incomplete=true"), Some(&bind)).await;
    assert_eq!(
        resent.body["operation"],
        operation.as_str(),
        "a re-sent bind answers with the same operation"
    );
    let poll = format!("{binding}/last_operation?operation={operation}");
    let state =
        stack.poll_until(&poll, Duration::from_secs(30), |reply| reply.body["state"] != "in progress").await;
    assert_eq!(state.body["state"], "succeeded", "{}", state.body);

    // Fetching it gives the user's credentials: the password the engine has for the role it was told.
    let fetched = stack.osb(Method::GET, &binding, None).await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.body);
    let user = fetched.body["credentials"]["username"].as_str().unwrap().to_owned();
    assert_eq!(user, api::osb::ids::binding_user("app-1"));
    let namespace = "cp-cf-space-3";
    let cluster =
        stack.object("postgresql.cnpg.io", "clusters", namespace, &cluster_name).expect("the Cluster");
    let role = cluster["spec"]["managed"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == user.as_str())
        .cloned()
        .unwrap();
    assert_eq!(role["inRoles"], json!(["pg_read_all_data"]), "a readonly role: {role}");
    let secret_name = role["passwordSecret"]["name"].as_str().unwrap();
    let held = stack.object("", "secrets", namespace, secret_name).expect("the user's Secret");
    assert_eq!(fetched.body["credentials"]["password"], decoded(&held, "password").as_str());
    assert_eq!(fetched.header("cache-control"), Some("no-store"));
    assert_eq!(fetched.body["endpoints"][0]["ports"], json!(["5432"]));

    // Rotation (spec *Binding Rotation*): a new binding, a new user with the predecessor's role; both stay.
    let successor = format!("/v2/service_instances/{instance}/service_bindings/app-1-next");
    let rotate = json!({"predecessor_binding_id": "app-1"});
    let rotated =
        stack.osb(Method::PUT, &format!("{successor}?accepts_incomplete=true"), Some(&rotate)).await;
    assert_eq!(rotated.status, StatusCode::ACCEPTED, "{}", rotated.body);
    let fetched_next =
        stack.poll_until(&successor, Duration::from_secs(30), |reply| reply.status == StatusCode::OK).await;
    assert_eq!(fetched_next.status, StatusCode::OK, "{}", fetched_next.body);
    assert_ne!(fetched_next.body["credentials"]["username"], user.as_str());
    assert_eq!(fetched_next.body["parameters"]["role"], "readonly", "the predecessor's role");
    assert_eq!(stack.osb(Method::GET, &binding, None).await.status, StatusCode::OK, "the old binding stays");

    // Unbind: the user is deleted and revoked (`ensure: absent`); a second unbind is 410.
    let unbind = format!("{binding}?accepts_incomplete=true&service_id={service_id}&plan_id={plan_id}");
    let unbound = stack.osb(Method::DELETE, &unbind, None).await;
    assert_eq!(unbound.status, StatusCode::ACCEPTED, "{}", unbound.body);
    let poll = format!("{binding}/last_operation?operation={}", unbound.body["operation"].as_str().unwrap());
    let gone = stack
        .poll_until(&poll, Duration::from_secs(30), |reply| {
            reply.status != StatusCode::OK || reply.body["state"] != "in progress"
        })
        .await;
    assert_eq!(gone.status, StatusCode::GONE, "{}", gone.body);
    let cluster = stack.object("postgresql.cnpg.io", "clusters", namespace, &cluster_name).unwrap();
    let role = cluster["spec"]["managed"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == user.as_str())
        .cloned();
    assert_eq!(role.map(|r| r["ensure"].clone()), Some(json!("absent")), "revoked");
    assert_eq!(stack.osb(Method::GET, &binding, None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(stack.osb(Method::DELETE, &unbind, None).await.status, StatusCode::GONE);
    assert_eq!(stack.osb(Method::GET, &successor, None).await.status, StatusCode::OK, "the successor stays");
}

#[tokio::test]
async fn a_mongodb_binding_is_a_user_with_the_default_role_whose_password_is_the_secret_the_job_read() {
    let stack = Stack::start(Duration::from_millis(50)).await;
    let catalog = stack.osb(Method::GET, "/v2/catalog", None).await.body;
    let (service_id, plan_id, _) = catalog_ids(&catalog, "mongodb", "starter");
    let instance = uuid::Uuid::new_v4().to_string();
    let context = json!({"platform": "kubernetes", "namespace": "shop", "clusterid": "c1"});
    let provision = json!({"service_id": service_id, "plan_id": plan_id, "context": context,
                           "organization_guid": "o", "space_guid": "s"});
    stack.provisioned(&instance, &provision).await;

    let binding = format!("/v2/service_instances/{instance}/service_bindings/catalogue-app");
    let bind = json!({"service_id": service_id, "plan_id": plan_id});
    stack.bound(&binding, &bind).await;
    let fetched = stack.osb(Method::GET, &binding, None).await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.body);
    assert_eq!(fetched.body["parameters"]["role"], "readWrite", "the service's first role");
    assert_eq!(fetched.body["credentials"]["port"], 27017);
    let user = api::osb::ids::binding_user("catalogue-app");
    // The Secret is named after the user with `_` as `-` (a DNS label).
    let name = format!("osb-{}.user.{}", instance.replace('-', ""), user.replace('_', "-"));
    let held = stack.object("", "secrets", "cp-k8s-shop", &name).expect("the user's Secret");
    assert_eq!(fetched.body["credentials"]["password"], decoded(&held, "password").as_str());
}

#[tokio::test]
async fn an_update_held_for_the_maintenance_window_says_so_and_a_re_sent_one_changes_nothing() {
    let stack = Stack::start(Duration::from_millis(50)).await;
    let catalog = stack.osb(Method::GET, "/v2/catalog", None).await.body;
    let (service_id, plan_id, _) = catalog_ids(&catalog, "postgresql", "starter");
    let instance = uuid::Uuid::new_v4().to_string();
    let path = format!("/v2/service_instances/{instance}?accepts_incomplete=true");
    let provision = json!({"service_id": service_id, "plan_id": plan_id, "context": cf_context("space-5"),
                           "organization_guid": "o", "space_guid": "space-5"});
    stack.provisioned(&instance, &provision).await;
    // A window three days from now (the same instance under /v1), so now is outside it whenever this runs.
    let day = (chrono::Utc::now() + chrono::TimeDelta::days(3)).format("%A").to_string().to_lowercase();
    let window = json!({"maintenance_window": {"day": day, "start": "03:00", "duration_minutes": 30, "time_zone": "UTC"}});
    let v1 = format!("/v1/projects/cf-space-5/instances/{instance}");
    let windowed = stack.api.call(Method::PATCH, &v1, Some(&window), &[]).await;
    assert_eq!(windowed.status, StatusCode::ACCEPTED, "{}", windowed.body);
    let windowed = stack.settle(&instance, windowed.body["id"].as_str().unwrap()).await;
    assert_eq!(windowed.body["state"], "succeeded", "{}", windowed.body);

    // max_connections needs a restart: held for the window, and the platform is told so.
    let change = json!({"service_id": service_id, "parameters": {"max_connections": 300}});
    let updated = stack.osb(Method::PATCH, &path, Some(&change)).await;
    assert_eq!(updated.status, StatusCode::ACCEPTED, "{}", updated.body);
    let done = stack.settle(&instance, updated.body["operation"].as_str().unwrap()).await;
    assert_eq!(done.body["state"], "succeeded", "{}", done.body);
    let description = done.body["description"].as_str().unwrap();
    assert!(
        description.contains("max_connections") && description.contains("maintenance/apply"),
        "{description}"
    );
    // Asking for it again changes nothing: 200, nothing stored.
    let stored = stack.api.stream_messages().await;
    let again = stack.osb(Method::PATCH, &path, Some(&change)).await;
    assert_eq!((again.status, &again.body), (StatusCode::OK, &json!({})));
    assert_eq!(stack.api.stream_messages().await, stored);
}

/// Spec *Unbinding*, *Response*: 202 while the deletion is in progress, 410 once the binding does not
/// exist. A second unbind before the cluster has revoked the user is still in progress (its agents are
/// stopped so the revocation cannot be reported in between); `last_operation` without an operation says
/// so too, and both turn to 410 once the revocation is reported.
#[tokio::test]
async fn an_unbind_sent_again_before_the_user_is_revoked_is_in_progress_then_gone() {
    let mut stack = Stack::start(Duration::from_millis(50)).await;
    let catalog = stack.osb(Method::GET, "/v2/catalog", None).await.body;
    let (service_id, plan_id, _) = catalog_ids(&catalog, "postgresql", "starter");
    let instance = uuid::Uuid::new_v4().to_string();
    let provision = json!({"service_id": service_id, "plan_id": plan_id, "context": cf_context("space-4"),
                           "organization_guid": "o", "space_guid": "space-4"});
    stack.provisioned(&instance, &provision).await;
    let binding = format!("/v2/service_instances/{instance}/service_bindings/app-9");
    let bind = json!({"service_id": service_id, "plan_id": plan_id});
    stack.bound(&binding, &bind).await;

    stack.stop_agents();
    let unbind = format!("{binding}?accepts_incomplete=true&service_id={service_id}&plan_id={plan_id}");
    let unbound = stack.osb(Method::DELETE, &unbind, None).await;
    assert_eq!(unbound.status, StatusCode::ACCEPTED, "{}", unbound.body);
    let again = stack.osb(Method::DELETE, &unbind, None).await;
    assert_eq!((again.status, &again.body), (StatusCode::ACCEPTED, &json!({})), "still being unbound");
    let last = format!("{binding}/last_operation");
    let polled = stack.osb(Method::GET, &last, None).await;
    assert_eq!((polled.status, polled.body["state"].as_str()), (StatusCode::OK, Some("in progress")));

    stack.start_agents().await;
    let gone = stack.poll_until(&last, Duration::from_secs(30), |reply| reply.status != StatusCode::OK).await;
    assert_eq!(gone.status, StatusCode::GONE, "revoked: {}", gone.body);
    assert_eq!(stack.osb(Method::DELETE, &unbind, None).await.status, StatusCode::GONE);
}
