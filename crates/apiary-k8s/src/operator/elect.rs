//! Leader election through one coordination.k8s.io Lease, so several operators can run and
//! exactly one writes. kube-rs has no elector, so this is a small one in client-go's manner:
//! the holder renews the Lease every `RETRY`; a candidate takes it over when the record has
//! not changed for `DURATION` as measured on the candidate's own clock (so clocks of different
//! machines never need to agree). Every write is a replace carrying the resourceVersion read,
//! so two candidates racing for an expired Lease cannot both win.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// The Lease's name.
pub const LEASE_NAME: &str = "apiary-operator";
/// How long a holder that stopped renewing keeps the Lease.
pub const DURATION: Duration = Duration::from_secs(10);
/// How often the holder renews, and a candidate looks.
const RETRY: Duration = Duration::from_secs(2);

/// Compete for the Lease until `stop` turns true, publishing whether this process holds it on
/// `leader` and waking the operator's loop when that changes. On stop, a Lease this process
/// holds is released (its holder emptied), so a standby takes over at its next look instead of
/// waiting `DURATION`.
pub async fn run(
    client: Client,
    namespace: String,
    identity: String,
    leader: watch::Sender<bool>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    // The record last seen and when it was first seen (this clock).
    let mut seen: Option<(String, Instant)> = None;
    // When this process last renewed successfully: it stops acting as leader once a
    // candidate could have taken over (the apiserver unreachable meanwhile).
    let mut renewed: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            if *leader.borrow() {
                release(&api, &identity).await;
            }
            leader.send_replace(false);
            return;
        }
        let held = attempt(&api, &identity, &mut seen).await;
        let now = Instant::now();
        if held {
            renewed = Some(now);
        }
        let leading = renewed.is_some_and(|r| now.duration_since(r) < DURATION - RETRY);
        if *leader.borrow() != leading {
            if leading {
                tracing::info!(identity = %identity, lease = %format!("{namespace}/{LEASE_NAME}"), "became the leader");
            } else {
                tracing::warn!(identity = %identity, "no longer the leader");
            }
            leader.send_replace(leading);
            wake.notify_one();
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Give the Lease up: empty its holder, if this process still holds it (the resourceVersion read
/// is kept, so a Lease taken over meanwhile is left alone).
async fn release(api: &Api<Lease>, identity: &str) {
    let Ok(Some(mut lease)) = api.get_opt(LEASE_NAME).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(identity) {
        return;
    }
    spec.holder_identity = None;
    match api
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => tracing::info!(identity, "released the operator Lease"),
        Err(e) => tracing::warn!(error = %e, "cannot release the operator Lease"),
    }
}

/// One look at the Lease: create, renew or take it over when allowed. Returns whether this
/// process holds it now.
async fn attempt(api: &Api<Lease>, identity: &str, seen: &mut Option<(String, Instant)>) -> bool {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let current = match api.get_opt(LEASE_NAME).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the operator Lease");
            return false;
        }
    };
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.into()),
                lease_duration_seconds: Some(DURATION.as_secs() as i32),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return api.create(&PostParams::default(), &lease).await.is_ok();
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    // The record's identity: any renewal changes it.
    let version = lease.metadata.resource_version.clone().unwrap_or_default();
    let first_seen = match seen {
        Some((v, at)) if *v == version => *at,
        _ => {
            *seen = Some((version, Instant::now()));
            Instant::now()
        }
    };
    let duration = spec
        .lease_duration_seconds
        .map(|s| Duration::from_secs(s.max(1) as u64))
        .unwrap_or(DURATION);
    let mine = holder == identity;
    let expired = holder.is_empty() || first_seen.elapsed() >= duration;
    if !mine && !expired {
        return false;
    }
    let mut next = spec;
    if !mine {
        tracing::info!(previous = %holder, "the operator Lease expired; taking it over");
        next.holder_identity = Some(identity.into());
        next.acquire_time = Some(now.clone());
        next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
    }
    next.lease_duration_seconds = Some(DURATION.as_secs() as i32);
    next.renew_time = Some(now);
    lease.spec = Some(next);
    // The resourceVersion read is kept: the replace fails if anyone wrote in between.
    match api
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        Ok(l) => {
            *seen = Some((
                l.metadata.resource_version.unwrap_or_default(),
                Instant::now(),
            ));
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "lost the race for the operator Lease");
            false
        }
    }
}
