//! Users whose token the service makes (InfluxDB, Grafana; `render::user_tokens`): one Job per users generation,
//! level-triggered as MongoDB's users are (`users::mongodb`). The Job is made once the instance serves
//! and every user's Secret is there, after the ServiceAccount, Role and RoleBinding it runs as; the users
//! are applied when it succeeded, and fail with its reason otherwise (`UsersNotApplied: …`). A deleted
//! user's Secret stays until the Job that revokes its authorization is done. The account and its Role go
//! once no Job needs them (and with the instance, `controller::cleanup`).

use k8s_openapi::api::{
    core::v1::ServiceAccount,
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, ResourceExt as _,
    api::{DeleteParams, Patch},
};
use serde::de::DeserializeOwned;

use crate::{
    Result,
    controller::Context,
    crd::ManagedInstance,
    render::{
        ChildKind, apply_params,
        user_tokens::{self, TokenUser, account_name, job_name},
        users::{USERS_GENERATION_ANNOTATION, secret_name},
    },
    users::{Users, apply_job, deleted_users_secrets, every_user, job_failed, password_generation},
};

/// Applies `object` (a namespaced object of type `K`) with the agent's field manager.
async fn apply<K>(ctx: &Context, namespace: &str, object: &serde_json::Value) -> Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.config.client.clone(), namespace);
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(name, &apply_params(), &Patch::Apply(object)).await?;
    Ok(())
}

/// Deletes the object of type `K` called `name`; one already gone is deleted.
async fn delete<K>(ctx: &Context, namespace: &str, name: &str) -> Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.config.client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the users Job's ServiceAccount, Role and RoleBinding of `mi`.
pub(crate) async fn remove_account(mi: &ManagedInstance, ctx: &Context) -> Result<()> {
    if !user_tokens::holds_token(&mi.spec.service) {
        return Ok(());
    }
    let (namespace, name) = (mi.namespace().unwrap_or_default(), account_name(mi));
    delete::<RoleBinding>(ctx, &namespace, &name).await?;
    delete::<Role>(ctx, &namespace, &name).await?;
    delete::<ServiceAccount>(ctx, &namespace, &name).await
}

/// Takes the next step for the users of a token-holding instance.
pub(crate) async fn reconcile(mi: &ManagedInstance, ctx: &Context, writes: &mut u32) -> Result<Users> {
    let wanted = mi.spec.aspect_generations().users;
    let reported = mi.status.as_ref().and_then(|s| s.applied).map_or(0, |a| a.users);
    if wanted == 0 && mi.spec.users.is_empty() {
        return Ok(Users { applied: wanted, ..Users::default() });
    }
    let namespace = mi.namespace().unwrap_or_default();
    if reported >= wanted {
        if ctx.current(ChildKind::Job, &namespace, &job_name(mi, wanted)).is_some() {
            // The Job is done: the account that wrote the tokens has nothing left to write.
            remove_account(mi, ctx).await?;
            *writes += 3;
        }
        return Ok(Users { applied: wanted, observed: every_user(mi, true, None), ..Users::default() });
    }
    let revoked = deleted_users_secrets(mi, ctx);
    let job_name = job_name(mi, wanted);
    let waiting = Users {
        applied: reported,
        observed: every_user(mi, false, None),
        job: Some(job_name.clone()),
        revoking: revoked.iter().map(|(secret, _)| secret.clone()).collect(),
        ..Users::default()
    };
    let names: Vec<String> = mi.spec.users.iter().map(|u| secret_name(&mi.name_any(), &u.name)).collect();
    let secrets: Vec<_> = names.iter().map(|name| ctx.current(ChildKind::Secret, &namespace, name)).collect();
    // An earlier generation's Job still running (a user deleted or rotated while its token was being
    // made): the next waits for it, so it reads what that one handed over and two never race.
    let running: Vec<String> = ctx
        .owned(ChildKind::Job, &mi.spec.instance_id)
        .into_iter()
        .filter(|j| j.name_any() != job_name && j.annotations().contains_key(USERS_GENERATION_ANNOTATION))
        .filter(|j| serde_json::to_value(j.as_ref()).is_ok_and(|j| crate::render::job::outcome(&j).is_none()))
        .map(|j| j.name_any())
        .collect();
    let waiting = Users { running: running.clone(), ..waiting };
    let Some(job) = ctx.current(ChildKind::Job, &namespace, &job_name) else {
        let serving = mi.status.as_ref().is_some_and(|s| s.phase == "Ready");
        if serving && running.is_empty() && secrets.iter().all(Option::is_some) {
            let users: Vec<TokenUser> = mi
                .spec
                .users
                .iter()
                .zip(&secrets)
                .map(|(user, secret)| TokenUser {
                    user,
                    renew: secret.as_ref().is_none_or(|s| password_generation(s) < user.generation),
                })
                .collect();
            let reachable: Vec<String> =
                names.iter().cloned().chain(revoked.iter().map(|(secret, _)| secret.clone())).collect();
            apply::<ServiceAccount>(ctx, &namespace, &user_tokens::service_account(mi)).await?;
            apply::<Role>(ctx, &namespace, &user_tokens::role(mi, &reachable)).await?;
            apply::<RoleBinding>(ctx, &namespace, &user_tokens::role_binding(mi)).await?;
            apply_job(ctx, &namespace, &user_tokens::job(mi, wanted, &users, &revoked)).await?;
            *writes += 4;
        }
        return Ok(waiting);
    };
    match crate::render::job::outcome(&job) {
        None => Ok(waiting),
        Some(Err(why)) => Ok(job_failed(mi, &job_name, &why, waiting)),
        Some(Ok(())) => Ok(Users {
            applied: wanted,
            observed: every_user(mi, true, None),
            job: Some(job_name),
            ..Users::default()
        }),
    }
}
