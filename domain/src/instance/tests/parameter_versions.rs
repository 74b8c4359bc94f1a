//! Given / when / then: a parameter a catalog offers from one version on.

use super::*;
use crate::catalog::{ApplyMode, ConfigKey, ConfigKind};

/// The built-in catalog plus a PostgreSQL parameter offered from 17 on.
fn services_with_a_17_parameter() -> InstanceServices {
    let mut catalog = Catalog::builtin().clone();
    let postgres = catalog.services.iter_mut().find(|o| o.service == ServiceType::Postgresql).unwrap();
    postgres.config_keys.push(ConfigKey {
        name: "summarize_wal".into(),
        kind: ConfigKind::Boolean,
        apply: ApplyMode::Dynamic,
        description: "WAL summaries for incremental backups".into(),
        default: Some(ConfigValue::Bool(false)),
        since: Some("17".into()),
    });
    let mut services = services();
    services.catalog = Arc::new(catalog.validated().expect("a valid catalog"));
    services
}

fn with_summaries(mut cmd: ProvisionInstance) -> ProvisionInstance {
    cmd.config.insert("summarize_wal".into(), ConfigValue::Bool(true));
    cmd
}

#[test]
fn a_parameter_offered_from_a_later_version_is_refused_before_it() {
    let result = InstanceTest::with(services_with_a_17_parameter())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(with_summaries(provision(ServiceType::Postgresql, "16"))))
        .inspect_result();
    assert_eq!(rule_of(result), ("/config/summarize_wal".to_owned(), "parameter_version"));
    let result = InstanceTest::with(services_with_a_17_parameter())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(with_summaries(provision(ServiceType::Postgresql, "17"))))
        .inspect_result();
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn an_upgrade_and_a_parameter_of_the_new_version_may_come_in_one_change() {
    let result = InstanceTest::with(services_with_a_17_parameter())
        .given(vec![pg16()])
        .when(update(|u| {
            u.version = Some("17".into());
            u.config = Some([("summarize_wal".to_owned(), Some(ConfigValue::Bool(true)))].into());
        }))
        .inspect_result();
    let events = result.expect("accepted");
    assert!(matches!(&events[0], InstanceEvent::VersionUpgraded { to, .. } if to == "17"), "{events:?}");
    assert!(
        matches!(&events[1], InstanceEvent::ConfigurationChanged { changed, .. } if changed == &["summarize_wal"])
    );
}
