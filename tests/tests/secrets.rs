//! Secrets never leak: after a run that used each kind (API tokens, a wrong token, the control plane's
//! NATS password, an agent's nkey seed, the database passwords generated in the cluster and read back
//! through `GET …/credentials`, a database user's passwords (made, rotated, read through
//! `GET …/users/{name}/credentials`), an Open Service Broker binding's (read by fetching the binding) and
//! the platform's Basic credentials, the backup store's keys with which the agent sent a backup of every
//! service and the control plane verified them), none of them is in the event stream, in any other stream or KV
//! bucket, or in the logs of the API, the projector, the backup worker and the agent (all in this process,
//! logging everything down to TRACE).

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use futures::StreamExt as _;
use projections::Health;
use serde_json::json;
use system_tests::{ACME_EDITOR_TOKEN, ADMIN_TOKEN, TestApi};
use uuid::Uuid;

/// Every log line of the process, at every level.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every message of every stream on the server (KV buckets are streams too): subjects, headers, payloads.
async fn everything_stored(js: &async_nats::jetstream::Context) -> Vec<u8> {
    let mut all = Vec::new();
    let mut names = js.stream_names();
    let mut streams = Vec::new();
    while let Some(name) = names.next().await {
        streams.push(name.expect("a stream name"));
    }
    for name in streams {
        let mut stream = js.get_stream(&name).await.expect("the stream");
        let info = stream.info().await.expect("its info").clone();
        let last = info.state.last_sequence;
        if last == 0 {
            continue;
        }
        // A work queue (a cluster's intake, `streams::intake`) takes no ordered consumer: read what it
        // still holds message by message (what left it is in the event stream, read below or above).
        if info.config.retention == async_nats::jetstream::stream::RetentionPolicy::WorkQueue {
            for sequence in info.state.first_sequence..=last {
                if let Ok(message) = stream.get_raw_message(sequence).await {
                    all.extend_from_slice(message.subject.as_bytes());
                    all.extend_from_slice(format!("{:?}", message.headers).as_bytes());
                    all.extend_from_slice(&message.payload);
                    all.push(b'\n');
                }
            }
            continue;
        }
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await
            .expect("an ordered consumer");
        let mut messages = consumer.messages().await.expect("its messages");
        while let Some(message) =
            tokio::time::timeout(Duration::from_secs(5), messages.next()).await.ok().flatten()
        {
            let message = message.expect("a message");
            all.extend_from_slice(message.subject.as_bytes());
            if let Some(headers) = &message.headers {
                for (name, values) in headers.iter() {
                    all.extend_from_slice(name.to_string().as_bytes());
                    for value in values {
                        all.extend_from_slice(value.as_str().as_bytes());
                    }
                }
            }
            all.extend_from_slice(&message.payload);
            all.push(b'\n');
            if message.info().expect("its info").stream_sequence >= last {
                break;
            }
        }
    }
    all
}

#[tokio::test]
async fn no_token_password_or_key_reaches_the_stream_the_buckets_or_the_logs() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let api = TestApi::start().await;
    let s3 = system_tests::backups::BackupStoreRig::start();
    let _keys = s3.serve_keys(&api).await;
    let (sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _agent = system_tests::cluster::agent_with_backups(&api, "eu-1", address, Some(s3.target())).await;
    let jetstream = async_nats::jetstream::new(api.nats_server.connect().await);
    let _worker = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(projections::backup_worker::run(
        api.state.read_models.clone(),
        s3.store(),
        jetstream,
    )));
    let editor = format!("Bearer {ACME_EDITOR_TOKEN}");
    let mut ids = Vec::new();
    for service in [("mongodb", "7.0"), ("grafana", "11.6"), ("influxdb", "2.7"), ("postgresql", "16")] {
        let body = json!({"name": service.0, "service": service.0, "version": service.1, "plan": "starter",
                          "cluster": "eu-1", "acl": [{"cidr": "10.0.0.0/8"}]});
        let created = api
            .call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[("authorization", &editor)])
            .await;
        assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
        ids.push(created.body["instance_id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    for id in &ids {
        assert!(
            api.wait_for_state(*id, Health::Healthy, Duration::from_secs(30)).await,
            "{id} never healthy"
        );
    }
    // The passwords the cluster holds, by instance name (PostgreSQL's in CloudNativePG's Secret).
    let held = || -> Vec<String> {
        let store = sim.store();
        let secrets_type = store.resource_type("", "v1", "secrets").expect("secrets");
        [
            ("mongodb", "credentials"),
            ("grafana", "credentials"),
            ("influxdb", "credentials"),
            ("postgresql", "app"),
        ]
        .iter()
        .map(|(name, suffix)| {
            let secret = store.get(&secrets_type, "cp-acme", &format!("{name}-{suffix}")).expect("a Secret");
            let data = secret["data"]["password"].as_str().expect("a password");
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap()
        })
        .collect()
    };
    let mut passwords = held();
    // Each instance's credentials read through the API (from the cluster, through its agent), rotated,
    // and read again.
    for id in &ids {
        let path = format!("/v1/projects/acme/instances/{id}/credentials");
        let read = api.call(Method::GET, &path, None, &[("authorization", &editor)]).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.body);
        let rotate = format!("/v1/projects/acme/instances/{id}/credentials/rotate");
        let rotated = api.call(Method::POST, &rotate, None, &[("authorization", &editor)]).await;
        assert_eq!(rotated.status, StatusCode::ACCEPTED, "{}", rotated.body);
        assert!(
            api.wait_for_operation(rotated.operation_id(), "succeeded", Duration::from_secs(30)).await,
            "the rotation of {id} never succeeded"
        );
        let again = api.call(Method::GET, &path, None, &[("authorization", &editor)]).await;
        assert_ne!(again.body["password"], read.body["password"], "a new password");
    }
    // A user of the PostgreSQL instance (issue 27): created, its credentials read, its password rotated and
    // read again; both of its passwords are searched for below.
    let users = format!("/v1/projects/acme/instances/{}/users", ids[3]);
    let created = api
        .call(
            Method::POST,
            &users,
            Some(&json!({"name": "reporting", "role": "readonly"})),
            &[("authorization", &editor)],
        )
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    assert!(
        api.wait_for_operation(created.operation_id(), "succeeded", Duration::from_secs(30)).await,
        "the user was never applied"
    );
    let mut user_passwords = Vec::new();
    for step in ["created", "rotated"] {
        if step == "rotated" {
            let rotate = format!("{users}/reporting/password/rotate");
            let rotated = api.call(Method::POST, &rotate, None, &[("authorization", &editor)]).await;
            assert_eq!(rotated.status, StatusCode::ACCEPTED, "{}", rotated.body);
            assert!(
                api.wait_for_operation(rotated.operation_id(), "succeeded", Duration::from_secs(30)).await,
                "the user's rotation never succeeded"
            );
        }
        let path = format!("{users}/reporting/credentials");
        let read = api.call(Method::GET, &path, None, &[("authorization", &editor)]).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.body);
        user_passwords.push(read.body["password"].as_str().expect("the user's password").to_owned());
    }
    assert_ne!(user_passwords[0], user_passwords[1], "a new password");
    // A user of the InfluxDB and of the Grafana instance: a token the service made (on the simulator, the
    // simulator's), handed to the user's Secret by the users Job; read, rotated (a new token), read again.
    for (id, name, role) in [(ids[2], "ingest", "write"), (ids[1], "viewer_app", "Viewer")] {
        let token_users = format!("/v1/projects/acme/instances/{id}/users");
        let created = api
            .call(
                Method::POST,
                &token_users,
                Some(&json!({"name": name, "role": role})),
                &[("authorization", &editor)],
            )
            .await;
        assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
        assert!(
            api.wait_for_operation(created.operation_id(), "succeeded", Duration::from_secs(30)).await,
            "the user {name} was never applied"
        );
        let mut tokens = Vec::new();
        for step in ["created", "rotated"] {
            if step == "rotated" {
                let rotate = format!("{token_users}/{name}/password/rotate");
                let rotated = api.call(Method::POST, &rotate, None, &[("authorization", &editor)]).await;
                assert_eq!(rotated.status, StatusCode::ACCEPTED, "{}", rotated.body);
                assert!(
                    api.wait_for_operation(rotated.operation_id(), "succeeded", Duration::from_secs(30))
                        .await,
                    "the rotation of {name} never succeeded"
                );
            }
            let path = format!("{token_users}/{name}/credentials");
            let read = api.call(Method::GET, &path, None, &[("authorization", &editor)]).await;
            assert_eq!(read.status, StatusCode::OK, "{}", read.body);
            assert_eq!(read.body["username"], name, "{}", read.body);
            tokens.push(read.body["password"].as_str().expect("the user's token").to_owned());
        }
        assert_ne!(tokens[0], tokens[1], "a new token");
        user_passwords.extend(tokens);
    }
    // An Open Service Broker binding of the same instance (a user too), its credentials fetched through
    // `/v2` with the platform's Basic credentials.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("platform:{ACME_EDITOR_TOKEN}"))
    );
    let osb = [("authorization", basic.as_str()), ("x-broker-api-version", "2.17")];
    let binding = format!("/v2/service_instances/{}/service_bindings/app-1", ids[3]);
    let postgresql = domain::ServiceType::Postgresql;
    let bind = json!({"service_id": api::osb::ids::service_id(postgresql),
                      "plan_id": api::osb::ids::plan_id(postgresql, "starter")});
    let bound = api.call(Method::PUT, &format!("{binding}?accepts_incomplete=true"), Some(&bind), &osb).await;
    assert_eq!(bound.status, StatusCode::ACCEPTED, "{}", bound.body);
    let operation: Uuid = bound.body["operation"].as_str().unwrap().parse().unwrap();
    assert!(
        api.wait_for_operation(operation, "succeeded", Duration::from_secs(30)).await,
        "the binding was never applied"
    );
    let fetched = api.call(Method::GET, &binding, None, &osb).await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.body);
    user_passwords
        .push(fetched.body["credentials"]["password"].as_str().expect("the binding's password").to_owned());
    // A backup of each, sent to the store with its keys and verified there with the control plane's.
    for id in &ids {
        let path = format!("/v1/projects/acme/instances/{id}/backups");
        let asked = api.call(Method::POST, &path, None, &[("authorization", &editor)]).await;
        assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
        let backup: Uuid = asked.body["backup_id"].as_str().unwrap().parse().unwrap();
        let verified = api
            .state
            .read_models
            .wait_until(Duration::from_secs(30), |m| {
                m.backups().get("acme", backup).is_some_and(|b| b.verified == Some(true))
            })
            .await;
        assert!(verified, "the backup of {id} was never made and verified");
    }
    let wrong =
        api.call(Method::GET, "/v1/catalog", None, &[("authorization", "Bearer cpat_wrong_guess")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    // The secrets the run used: tokens, NATS credentials, and every password before and after rotation.
    let mut secrets =
        vec![ADMIN_TOKEN.to_owned(), ACME_EDITOR_TOKEN.to_owned(), "cpat_wrong_guess".to_owned()];
    secrets.extend(api.nats_server.client_secrets());
    // The platform's Basic credentials as sent (the token inside them is searched for too).
    secrets.push(basic.trim_start_matches("Basic ").to_owned());
    secrets.extend([s3.s3.access_key().to_owned(), s3.s3.secret_key().to_owned()]);
    // Each instance's own store keys, as its store Secret in the cluster holds them: given to the agent
    // sealed, so no log line or stored message shows them either.
    {
        let store = sim.store();
        let secrets_type = store.resource_type("", "v1", "secrets").expect("secrets");
        for name in ["mongodb", "grafana", "influxdb", "postgresql"] {
            let secret = store
                .get(&secrets_type, "cp-acme", &format!("{name}-backup-store"))
                .unwrap_or_else(|| panic!("{name}'s store Secret"));
            let key = secret["data"]["secret-access-key"].as_str().expect("a secret key").to_owned();
            let plain =
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(&key).unwrap()).unwrap();
            assert_ne!(plain, s3.s3.secret_key(), "{name} holds the control plane's own key");
            secrets.extend([key, plain]);
        }
    }
    passwords.extend(held());
    passwords.extend(user_passwords);
    assert_eq!(passwords.len(), 15);
    for password in &passwords {
        assert!(password.len() >= 16, "a generated password");
        secrets.push(base64::engine::general_purpose::STANDARD.encode(password));
    }
    secrets.extend(passwords);

    let js = async_nats::jetstream::new(api.nats_server.connect().await);
    let stored = everything_stored(&js).await;
    assert!(stored.len() > 1000, "the scan read the streams");
    let logged = logs.0.lock().unwrap().clone();
    assert!(logged.len() > 1000, "the logs were captured");
    for secret in &secrets {
        let found = |haystack: &[u8]| haystack.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found(&stored), "a secret ({}…) is in a stream or bucket", &secret[..4]);
        assert!(!found(&logged), "a secret ({}…) is in the logs", &secret[..4]);
    }
}
