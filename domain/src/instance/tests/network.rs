//! Given / when / then: the network ACL, a set of canonical CIDR blocks.

use super::*;

fn entry(cidr: &str) -> AclEntry {
    AclEntry::new(cidr, "")
}

fn acl_changed(cidrs: &[&str]) -> InstanceEvent {
    InstanceEvent::NetworkAccessChanged { entries: cidrs.iter().map(|c| entry(c)).collect() }
}

fn replace(cidrs: &[&str]) -> InstanceCommand {
    InstanceCommand::ReplaceAcl { entries: cidrs.iter().map(|c| entry(c)).collect(), allow_public: false }
}

fn violations(result: Result<Vec<InstanceEvent>, InstanceError>) -> Vec<(String, &'static str)> {
    match result {
        Err(InstanceError::Invalid { field, rule, .. }) => vec![(field, rule)],
        Err(InstanceError::InvalidFields(all)) => all.into_iter().map(|v| (v.field, v.rule)).collect(),
        other => panic!("expected rule violations, got {other:?}"),
    }
}

#[test]
fn a_provision_with_an_acl_records_it_as_a_sorted_set() {
    let mut cmd = provision(ServiceType::Postgresql, "16");
    cmd.acl = vec![entry("2001:db8::/32"), entry("10.0.0.0/8")];
    InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(cmd))
        .then_expect_events(vec![pg16(), acl_changed(&["10.0.0.0/8", "2001:db8::/32"])]);
}

#[test]
fn replacing_the_acl_with_the_same_set_in_another_order_changes_nothing() {
    InstanceTest::with(services())
        .given(vec![pg16(), acl_changed(&["10.0.0.0/8", "192.0.2.0/24"])])
        .when(replace(&["192.0.2.0/24", "10.0.0.0/8"]))
        .then_expect_events(vec![]);
}

#[test]
fn replacing_the_acl_carries_the_whole_new_set() {
    InstanceTest::with(services())
        .given(vec![pg16(), acl_changed(&["0.0.0.0/0"])])
        .when(replace(&["1.2.3.4/32"]))
        .then_expect_events(vec![acl_changed(&["1.2.3.4/32"])]);
}

#[test]
fn each_bad_entry_is_named_with_its_rule() {
    let cases: [(&[&str], &str, &str); 5] = [
        (&["10.0.0.1/8"], "/entries/0/cidr", "cidr_host_bits_zero"),
        (&["10.0.0.0/8", "10.0.0.0/8"], "/entries/1/cidr", "unique_cidr"),
        (&["10.0.0.0/33"], "/entries/0/cidr", "cidr"),
        (&["2001:DB8::/32"], "/entries/0/cidr", "cidr_canonical"),
        (&["0.0.0.0/0"], "/entries/0/cidr", "public_access_flag"),
    ];
    for (cidrs, field, rule) in cases {
        let result = InstanceTest::with(services()).given(vec![pg16()]).when(replace(cidrs)).inspect_result();
        assert_eq!(violations(result), [(field.to_owned(), rule)], "{cidrs:?}");
    }
    let result = InstanceTest::with(services())
        .given(vec![pg16()])
        .when(replace(&["::/0", "not-a-cidr"]))
        .inspect_result();
    assert_eq!(
        violations(result),
        [("/entries/0/cidr".to_owned(), "public_access_flag"), ("/entries/1/cidr".to_owned(), "cidr")]
    );
}

#[test]
fn the_whole_internet_is_allowed_only_with_the_flag() {
    let command =
        InstanceCommand::ReplaceAcl { entries: vec![entry("::/0"), entry("0.0.0.0/0")], allow_public: true };
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(command)
        .then_expect_events(vec![acl_changed(&["0.0.0.0/0", "::/0"])]);
}

#[test]
fn an_acl_holds_at_most_a_hundred_entries() {
    let cidrs: Vec<String> = (0..=MAX_ACL_ENTRIES).map(|i| format!("10.0.{i}.0/24")).collect();
    let refs: Vec<&str> = cidrs.iter().map(String::as_str).collect();
    let result = InstanceTest::with(services()).given(vec![pg16()]).when(replace(&refs)).inspect_result();
    assert_eq!(violations(result), [("/entries".to_owned(), "max_items")]);
    let result = InstanceTest::with(services())
        .given(vec![pg16()])
        .when(replace(&refs[..MAX_ACL_ENTRIES]))
        .inspect_result();
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn adding_an_entry_keeps_the_set_sorted_and_adding_it_again_changes_nothing() {
    let add = |cidr: &str| InstanceCommand::AddAclEntry { entry: entry(cidr), allow_public: false };
    InstanceTest::with(services())
        .given(vec![pg16(), acl_changed(&["192.0.2.0/24"])])
        .when(add("10.0.0.0/8"))
        .then_expect_events(vec![acl_changed(&["10.0.0.0/8", "192.0.2.0/24"])]);
    InstanceTest::with(services())
        .given(vec![pg16(), acl_changed(&["192.0.2.0/24"])])
        .when(add("192.0.2.0/24"))
        .then_expect_events(vec![]);
    let result =
        InstanceTest::with(services()).given(vec![pg16()]).when(add("192.0.2.1/24")).inspect_result();
    assert_eq!(violations(result), [("/cidr".to_owned(), "cidr_host_bits_zero")]);
}

#[test]
fn removing_an_entry_that_is_not_there_is_not_found() {
    let remove = |cidr: &str| InstanceCommand::RemoveAclEntry { cidr: cidr.into() };
    InstanceTest::with(services())
        .given(vec![pg16(), acl_changed(&["10.0.0.0/8", "192.0.2.0/24"])])
        .when(remove("10.0.0.0/8"))
        .then_expect_events(vec![acl_changed(&["192.0.2.0/24"])]);
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(remove("10.0.0.0/8"))
        .then_expect_error(InstanceError::AclEntryNotFound { cidr: "10.0.0.0/8".into() });
}

#[test]
fn each_aspect_remembers_the_version_that_last_changed_it() {
    let mut instance = Instance::default();
    for event in [
        pg16(),
        InstanceEvent::VersionUpgraded { from: "16".into(), to: "17".into() },
        acl_changed(&["10.0.0.0/8"]),
    ] {
        cqrs_es::Aggregate::apply(&mut instance, event);
    }
    let generations = instance.generations();
    assert_eq!(
        (generations.version, generations.resources, generations.configuration, generations.network_access),
        (2, 1, 1, 3)
    );
}
