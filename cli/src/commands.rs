//! What each command does: one request (or a few) on the API's wire types, then the output.

use std::collections::BTreeMap;

use anyhow::Context as _;
use hyper::Method;
use serde_json::{Value, json};
use uuid::Uuid;
use wire::{
    Acl as AclView, AclAddRequest, AclEntry, Backup, BackupList, BackupSchedule, BackupScheduleList,
    BackupScheduleRequest, Catalog, ChainVerification, HistoryPage, Instance, InstanceDiff, InstanceList,
    Operation, ProvisionRequest, Retention, Service, UpdateRequest, UserList, UserRequest,
};

use crate::{
    args::{
        Acl, Audit, Backups, Cli, Command, Config, Instances, Maintenance, Operations, Schedules, Users, Wait,
    },
    client::{Client, segment},
    config,
    output::{Format, Rows, cell, or_dash, print, time, wire_name},
};

mod fleet;

/// The API's largest page (`limit`).
const MAX_PAGE: usize = 500;

/// Where and how a command runs.
struct Context {
    client: Client,
    project: String,
    format: Format,
}

/// Runs a parsed command line.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let profile = config::load(cli.config.clone(), cli.profile.as_deref())?;
    let api =
        cli.api.or(profile.api).context("no API given: pass --api, set CPCTL_API or a profile's api")?;
    let token_env = profile.token_env.unwrap_or_else(|| "CPCTL_TOKEN".into());
    let token = std::env::var(&token_env).ok().filter(|t| !t.is_empty());
    let project = cli.project.or(profile.project);
    let needs_project = !matches!(cli.command, Command::Catalog { .. } | Command::Completions { .. });
    let project = match project {
        Some(project) => project,
        None if needs_project => {
            anyhow::bail!("no project given: pass --project, set CPCTL_PROJECT or a profile's project")
        }
        None => String::new(),
    };
    let context = Context { client: Client::new(&api, token)?, project, format: cli.output };
    match cli.command {
        Command::Instances(command) => instances(&context, command).await,
        Command::Backups(command) => backups(&context, command).await,
        Command::Schedules(command) => schedules(&context, command).await,
        Command::Acl(command) => acl(&context, command).await,
        Command::Config(command) => configuration(&context, command).await,
        Command::Maintenance(Maintenance::Get { instance }) => {
            let instance: Instance =
                context.client.get(&context.instance_path(&instance).await?, &[]).await?;
            let shown = json!({"maintenance_window": instance.maintenance_window,
                "pending_maintenance": instance.pending_maintenance});
            print(context.format, &shown, |shown| {
                let window = &shown["maintenance_window"];
                let pending = &shown["pending_maintenance"];
                let held: Vec<String> = pending["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|item| item["parameters"].as_array().into_iter().flatten())
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect();
                Rows::new(&["window", "held", "scheduled for"]).rows([()], |_| {
                    vec![
                        format!(
                            "{} {} for {} min ({})",
                            window["day"].as_str().unwrap_or_default(),
                            window["start"].as_str().unwrap_or_default(),
                            window["duration_minutes"],
                            window["time_zone"].as_str().unwrap_or_default()
                        ),
                        if held.is_empty() { "-".to_owned() } else { held.join(", ") },
                        pending["scheduled_for"].as_str().unwrap_or("-").to_owned(),
                    ]
                })
            })
        }
        Command::Maintenance(Maintenance::Apply { instance, wait }) => {
            let path = format!("{}/maintenance/apply", context.instance_path(&instance).await?);
            context.write::<Value>(Method::POST, &path, None, wait).await
        }
        Command::Users(command) => users(&context, command).await,
        Command::Fleet(command) => fleet::fleet(&context, command).await,
        Command::Catalog { service } => catalog(&context, service).await,
        Command::Operations(Operations::Get { operation, wait }) => {
            let path = format!("/v1/projects/{}/operations/{operation}", context.project);
            let current: Operation = context.client.get(&path, &[]).await?;
            finish(&context, current, wait).await
        }
        Command::History { instance, limit } => history(&context, &instance, limit).await,
        Command::Diff { instance, from, to } => diff(&context, &instance, from, to).await,
        Command::Audit(Audit::Verify { instance }) => verify(&context, &instance).await,
        Command::Completions { .. } => unreachable!("answered before connecting"),
    }
}

impl Context {
    fn instances_path(&self) -> String {
        format!("/v1/projects/{}/instances", self.project)
    }

    /// The path of an instance named by name or id.
    async fn instance_path(&self, instance: &str) -> anyhow::Result<String> {
        Ok(format!("{}/{}", self.instances_path(), self.resolve(instance).await?))
    }

    /// An instance's id from its id or name.
    async fn resolve(&self, instance: &str) -> anyhow::Result<Uuid> {
        if let Ok(id) = instance.parse() {
            return Ok(id);
        }
        let list: InstanceList =
            self.client.get(&self.instances_path(), &[("name", instance.to_owned())]).await?;
        list.items
            .first()
            .map(|i| i.id)
            .with_context(|| format!("no instance named {instance:?} in project {}", self.project))
    }

    /// The items of a paged list at `path`, following `next_page_token` to the last page or until `max`.
    async fn pages<P: serde::de::DeserializeOwned, T>(
        &self,
        path: &str,
        mut query: Vec<(&'static str, String)>,
        max: usize,
        split: impl Fn(P) -> (Vec<T>, Option<String>),
    ) -> anyhow::Result<Vec<T>> {
        let mut items = Vec::new();
        while items.len() < max {
            let (page, next) = split(self.client.get(path, &query).await?);
            items.extend(page);
            let Some(token) = next else { break };
            query.retain(|(k, _)| *k != "page_token");
            query.push(("page_token", token));
        }
        items.truncate(max);
        Ok(items)
    }

    /// Sends a write and finishes with its operation.
    async fn write<B: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        wait: Wait,
    ) -> anyhow::Result<()> {
        let operation: Operation = self.client.send(method, path, &[], body).await?;
        finish(self, operation, wait).await
    }
}

/// Prints an operation, after following it to its end with `--wait`.
async fn finish(context: &Context, operation: Operation, wait: Wait) -> anyhow::Result<()> {
    let operation = if wait.wait {
        crate::wait::operation(&context.client, &context.project, &operation, wait.timeout).await?
    } else {
        operation
    };
    print(context.format, &operation, |op| {
        Rows::new(&["operation", "type", "state", "instance", "error"]).row([
            op.id.to_string(),
            wire_name(&op.operation_type),
            wire_name(&op.state),
            op.instance_id.to_string(),
            or_dash(op.error.as_ref().map(|e| format!("{}: {}", e.reason, e.detail))),
        ])
    })
}

fn instance_rows(items: &[Instance]) -> Rows {
    Rows::new(&["name", "id", "service", "version", "plan", "cluster", "state", "reason"]).rows(items, |i| {
        vec![
            i.name.clone(),
            i.id.to_string(),
            wire_name(&i.service),
            i.version.clone(),
            i.plan.clone(),
            i.cluster.clone(),
            wire_name(&i.status.state),
            or_dash(i.status.reason.clone()),
        ]
    })
}

async fn instances(context: &Context, command: Instances) -> anyhow::Result<()> {
    match command {
        Instances::List { state, name } => {
            let mut query: Vec<(&str, String)> = vec![("limit", MAX_PAGE.to_string())];
            query.extend(state.map(|s| ("state", s)));
            query.extend(name.map(|n| ("name", n)));
            let items = context
                .pages(&context.instances_path(), query, usize::MAX, |p: InstanceList| {
                    (p.items, p.next_page_token)
                })
                .await?;
            print(context.format, &items, |items| instance_rows(items))
        }
        Instances::Get { instance, as_of } => {
            let query: Vec<(&str, String)> = as_of.map(|t| ("as_of", t.to_rfc3339())).into_iter().collect();
            let path = context.instance_path(&instance).await?;
            let instance: Instance = context.client.get(&path, &query).await?;
            print(context.format, &instance, |i| {
                let mut rows = instance_rows(std::slice::from_ref(i));
                for (aspect, health) in &i.status.aspects {
                    rows = rows.row([
                        format!("  {aspect}"),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        wire_name(health),
                        String::new(),
                    ]);
                }
                rows
            })
        }
        Instances::Create {
            name,
            service,
            version,
            plan,
            cluster,
            region,
            storage_gib,
            settings,
            acl,
            description,
            wait,
        } => {
            let service: Service = serde_json::from_value(Value::String(service.clone())).map_err(|_| {
                anyhow::anyhow!("--service: {service:?} is not postgresql, mongodb, influxdb or grafana")
            })?;
            let request = ProvisionRequest {
                name,
                service,
                version,
                plan,
                storage_gib,
                config: pairs(&settings)?,
                description,
                deletion_protection: false,
                cluster,
                acl: acl.into_iter().map(|cidr| AclEntry { cidr, description: String::new() }).collect(),
                allow_public: false,
                region,
                restore_from: None,
                maintenance_window: None,
            };
            context.write(Method::POST, &context.instances_path(), Some(&request), wait).await
        }
        Instances::Update {
            instance,
            version,
            plan,
            storage_gib,
            description,
            deletion_protection,
            wait,
        } => {
            let mut request = UpdateRequest::default();
            request.version = version;
            request.plan = plan;
            request.storage_gib = storage_gib;
            request.description = description;
            request.deletion_protection = deletion_protection;
            let path = context.instance_path(&instance).await?;
            context.write(Method::PATCH, &path, Some(&request), wait).await
        }
        Instances::Delete { instance, wait } => {
            let path = context.instance_path(&instance).await?;
            context.write::<()>(Method::DELETE, &path, None, wait).await
        }
    }
}

/// `KEY=VALUE` pairs as configuration: a value that parses as JSON is that value, anything else a string.
fn pairs(pairs: &[String]) -> anyhow::Result<BTreeMap<String, Value>> {
    pairs
        .iter()
        .map(|pair| {
            let (key, value) = pair.split_once('=').with_context(|| format!("{pair:?} is not KEY=VALUE"))?;
            let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
            Ok((key.to_owned(), value))
        })
        .collect()
}

fn backup_rows(items: &[Backup]) -> Rows {
    Rows::new(&["id", "state", "trigger", "requested", "size", "verified", "error"]).rows(items, |b| {
        vec![
            b.id.to_string(),
            wire_name(&b.state),
            b.trigger.clone(),
            time(&b.requested_at),
            or_dash(b.size_bytes),
            or_dash(b.verified),
            or_dash(b.error.clone()),
        ]
    })
}

async fn backups(context: &Context, command: Backups) -> anyhow::Result<()> {
    match command {
        Backups::List { instance } => {
            let path = format!("{}/backups", context.instance_path(&instance).await?);
            let list: BackupList = context.client.get(&path, &[]).await?;
            print(context.format, &list.items, |items| backup_rows(items))
        }
        Backups::Get { instance, backup } => {
            let path = format!("{}/backups/{backup}", context.instance_path(&instance).await?);
            let backup: Backup = context.client.get(&path, &[]).await?;
            print(context.format, &backup, |b| backup_rows(std::slice::from_ref(b)))
        }
        Backups::Create { instance, wait } => {
            let path = format!("{}/backups", context.instance_path(&instance).await?);
            context.write::<()>(Method::POST, &path, None, wait).await
        }
        Backups::Delete { instance, backup, wait } => {
            let path = format!("{}/backups/{backup}", context.instance_path(&instance).await?);
            context.write::<()>(Method::DELETE, &path, None, wait).await
        }
        Backups::Restore { instance, backup, wait } => {
            let path = format!("{}/restore", context.instance_path(&instance).await?);
            context.write(Method::POST, &path, Some(&json!({ "backup_id": backup })), wait).await
        }
    }
}

async fn schedules(context: &Context, command: Schedules) -> anyhow::Result<()> {
    match command {
        Schedules::List { instance } => {
            let path = format!("{}/backup-schedules", context.instance_path(&instance).await?);
            let list: BackupScheduleList = context.client.get(&path, &[]).await?;
            print(context.format, &list.items, |items| {
                Rows::new(&["id", "name", "cron", "time zone", "enabled", "next run"]).rows(
                    items,
                    |s: &BackupSchedule| {
                        vec![
                            s.id.to_string(),
                            s.name.clone(),
                            s.cron.clone(),
                            s.time_zone.clone(),
                            s.enabled.to_string(),
                            or_dash(s.next_run_at.as_ref().map(time)),
                        ]
                    },
                )
            })
        }
        Schedules::Create { instance, name, cron, time_zone, keep_last, max_age_days, disabled } => {
            let path = format!("{}/backup-schedules", context.instance_path(&instance).await?);
            let request = BackupScheduleRequest {
                name,
                cron,
                time_zone,
                enabled: !disabled,
                retention: Retention { keep_last, max_age_days },
            };
            context.write(Method::POST, &path, Some(&request), Wait::none()).await
        }
        Schedules::Delete { instance, schedule } => {
            let path = format!("{}/backup-schedules/{schedule}", context.instance_path(&instance).await?);
            context.write::<()>(Method::DELETE, &path, None, Wait::none()).await
        }
    }
}

impl Wait {
    fn none() -> Self {
        Self { wait: false, timeout: std::time::Duration::ZERO }
    }
}

async fn acl(context: &Context, command: Acl) -> anyhow::Result<()> {
    match command {
        Acl::Get { instance } => {
            let path = format!("{}/acl", context.instance_path(&instance).await?);
            let acl: AclView = context.client.get(&path, &[]).await?;
            print(context.format, &acl, |acl| {
                Rows::new(&["cidr", "description"])
                    .rows(&acl.entries, |e| vec![e.cidr.clone(), e.description.clone()])
            })
        }
        Acl::Add { instance, cidr, description, allow_public, wait } => {
            let path = format!("{}/acl", context.instance_path(&instance).await?);
            let request = AclAddRequest { cidr, description, allow_public };
            context.write(Method::POST, &path, Some(&request), wait).await
        }
        Acl::Remove { instance, cidr, wait } => {
            let path = format!("{}/acl/{}", context.instance_path(&instance).await?, segment(&cidr));
            context.write::<()>(Method::DELETE, &path, None, wait).await
        }
    }
}

async fn users(context: &Context, command: Users) -> anyhow::Result<()> {
    match command {
        Users::List { instance } => {
            let path = format!("{}/users", context.instance_path(&instance).await?);
            let list: UserList = context.client.get(&path, &[]).await?;
            print(context.format, &list.users, |users| {
                Rows::new(&["name", "role", "state", "reason"]).rows(users, |u| {
                    vec![u.name.clone(), u.role.clone(), wire_name(&u.state), or_dash(u.reason.as_deref())]
                })
            })
        }
        Users::Create { instance, name, role, wait } => {
            let path = format!("{}/users", context.instance_path(&instance).await?);
            context.write(Method::POST, &path, Some(&UserRequest { name, role }), wait).await
        }
        Users::Delete { instance, name, wait } => {
            let path = format!("{}/users/{}", context.instance_path(&instance).await?, segment(&name));
            context.write::<()>(Method::DELETE, &path, None, wait).await
        }
        Users::Rotate { instance, name, wait } => {
            let path = format!(
                "{}/users/{}/password/rotate",
                context.instance_path(&instance).await?,
                segment(&name)
            );
            context.write::<()>(Method::POST, &path, None, wait).await
        }
        Users::Credentials { instance, name } => {
            let path =
                format!("{}/users/{}/credentials", context.instance_path(&instance).await?, segment(&name));
            let credentials: wire::Credentials = context.client.get(&path, &[]).await?;
            print(context.format, &credentials, |c| {
                Rows::new(&["username", "password", "host", "port"]).rows([()], |_| {
                    vec![c.username.clone(), c.password.clone(), c.host.clone(), c.port.to_string()]
                })
            })
        }
    }
}

async fn configuration(context: &Context, command: Config) -> anyhow::Result<()> {
    let patch = |config: BTreeMap<String, Value>| {
        let mut request = UpdateRequest::default();
        request.config = Some(config);
        request
    };
    match command {
        Config::Get { instance } => {
            let instance: Instance =
                context.client.get(&context.instance_path(&instance).await?, &[]).await?;
            print(context.format, &instance.config, |config| {
                Rows::new(&["key", "value"]).rows(config, |(k, v)| vec![k.clone(), cell(v)])
            })
        }
        Config::Set { instance, pairs: set, wait } => {
            let path = context.instance_path(&instance).await?;
            context.write(Method::PATCH, &path, Some(&patch(pairs(&set)?)), wait).await
        }
        Config::Unset { instance, keys, wait } => {
            let path = context.instance_path(&instance).await?;
            let removals = keys.into_iter().map(|k| (k, Value::Null)).collect();
            context.write(Method::PATCH, &path, Some(&patch(removals)), wait).await
        }
    }
}

async fn catalog(context: &Context, service: Option<String>) -> anyhow::Result<()> {
    let catalog: Catalog = context.client.get("/v1/catalog", &[]).await?;
    let services: Vec<_> = catalog
        .services
        .into_iter()
        .filter(|s| service.as_ref().is_none_or(|name| wire_name(&s.service) == *name))
        .collect();
    print(context.format, &services, |services| {
        Rows::new(&["service", "versions", "plans", "parameters"]).rows(services, |s| {
            vec![
                wire_name(&s.service),
                s.versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>().join(", "),
                s.plans.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
                s.parameters.len().to_string(),
            ]
        })
    })
}

async fn history(context: &Context, instance: &str, limit: usize) -> anyhow::Result<()> {
    let path = format!("{}/history", context.instance_path(instance).await?);
    let query = vec![("limit", limit.clamp(1, MAX_PAGE).to_string())];
    let items = context.pages(&path, query, limit, |p: HistoryPage| (p.items, p.next_page_token)).await?;
    print(context.format, &items, |items| {
        Rows::new(&["seq", "time", "source", "event", "actor", "operation"]).rows(items, |e| {
            vec![
                e.sequence.to_string(),
                time(&e.time),
                wire_name(&e.source),
                e.event_type.clone(),
                e.actor.clone(),
                or_dash(e.operation.clone()),
            ]
        })
    })
}

async fn diff(
    context: &Context,
    instance: &str,
    from: chrono::DateTime<chrono::Utc>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<()> {
    let path = format!("{}/diff", context.instance_path(instance).await?);
    let to = to.unwrap_or_else(chrono::Utc::now);
    let query = [("from", from.to_rfc3339()), ("to", to.to_rfc3339())];
    let diff: InstanceDiff = context.client.get(&path, &query).await?;
    print(context.format, &diff, |d| {
        Rows::new(&["field", "from", "to"])
            .rows(&d.changes, |c| vec![c.path.clone(), cell(&c.from), cell(&c.to)])
    })
}

async fn verify(context: &Context, instance: &str) -> anyhow::Result<()> {
    let path = format!("{}/history/verify", context.instance_path(instance).await?);
    let report: ChainVerification = context.client.get(&path, &[]).await?;
    print(context.format, &report, |r| {
        Rows::new(&["intact", "messages", "unchained", "broken at"]).row([
            r.intact.to_string(),
            r.messages.to_string(),
            r.unchained.to_string(),
            or_dash(r.broken_at.as_ref().map(|b| b.sequence)),
        ])
    })?;
    match report.broken_at {
        Some(broken) => anyhow::bail!("{}", broken.detail),
        None => Ok(()),
    }
}
