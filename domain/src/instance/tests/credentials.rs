//! Given / when / then: rotating an instance's generated password.

use super::*;

#[test]
fn a_rotation_is_recorded_without_any_password() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::RotateCredentials)
        .then_expect_events(vec![InstanceEvent::CredentialsRotationRequested {}]);
}

#[test]
fn every_rotation_is_a_new_one() {
    // Unlike a change to a value, asking again is asking for another password: never a no-op.
    InstanceTest::with(services())
        .given(vec![pg16(), InstanceEvent::CredentialsRotationRequested {}])
        .when(InstanceCommand::RotateCredentials)
        .then_expect_events(vec![InstanceEvent::CredentialsRotationRequested {}]);
}

#[test]
fn no_rotation_once_deprovisioning_began_or_before_provisioning() {
    InstanceTest::with(services())
        .given(vec![pg16(), InstanceEvent::DeprovisioningStarted {}])
        .when(InstanceCommand::RotateCredentials)
        .then_expect_error(InstanceError::Deprovisioning);
    InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::RotateCredentials)
        .then_expect_error(InstanceError::NotFound);
}

#[test]
fn a_rotation_changes_the_credentials_aspect_only_and_provisioning_leaves_it_at_zero() {
    let mut instance = Instance::default();
    instance.apply(pg16());
    assert_eq!(instance.generations().credentials, 0, "nothing to apply until a rotation");
    instance.apply(InstanceEvent::CredentialsRotationRequested {});
    let generations = instance.generations();
    assert_eq!(generations.credentials, 2);
    assert_eq!(
        (generations.version, generations.resources, generations.configuration, generations.network_access),
        (1, 1, 1, 1)
    );
}

#[test]
fn generations_written_before_rotations_existed_read_as_never_rotated() {
    let old: Generations = serde_json::from_value(
        serde_json::json!({"version": 3, "resources": 2, "configuration": 1, "network_access": 1}),
    )
    .unwrap();
    assert_eq!(old.credentials, 0);
}
