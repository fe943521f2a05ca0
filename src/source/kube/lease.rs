//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it: the holder renews
//! `spec.renewTime` every [`LeaseTimings::retry`]; a candidate takes the Lease over when the record has not
//! changed for `spec.leaseDurationSeconds` *as measured on the candidate's own clock* (so clock skew between
//! nodes does not matter); every write carries the `resourceVersion` it read, so two candidates can never both
//! win; a holder that cannot renew for [`LeaseTimings::renew_deadline`] stops acting as leader before anyone else
//! may take over. On shutdown the holder releases the Lease so the next one takes over at once.

use super::stopped;
use crate::k8s::kube::api::{Api, PostParams};
use crate::k8s::kube::{Client, Error as KubeError};
use crate::k8s::{Lease, LeaseSpec, MicroTime, ObjectMeta};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The name of the Lease.
pub const LEASE_NAME: &str = "portcullis-leader";

/// How long a Lease lasts and how often it is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    /// `spec.leaseDurationSeconds`: a record unchanged for this long may be taken over.
    pub duration: Duration,
    /// A holder that has not renewed for this long stops writing status (must be less than `duration`).
    pub renew_deadline: Duration,
    /// How often the holder renews and candidates look.
    pub retry: Duration,
}

impl Default for LeaseTimings {
    /// 10 s / 7 s / 2 s: a vanished leader is replaced within `duration + retry` = 12 s.
    fn default() -> Self {
        LeaseTimings {
            duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(7),
            retry: Duration::from_secs(2),
        }
    }
}

/// Who we are and which Lease we compete for.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease (`--namespace`).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// Our identity (`spec.holderIdentity`), unique per process.
    pub identity: String,
    /// Timings.
    pub timings: LeaseTimings,
}

/// Starts competing for the Lease. The receiver is `true` while we hold it. The task releases the Lease and
/// returns when `stop` becomes true.
pub fn spawn(
    client: Client,
    cfg: LeaseConfig,
    stop: watch::Receiver<bool>,
) -> (watch::Receiver<bool>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let task = tokio::spawn(run(api, cfg, tx, stop));
    (rx, task)
}

/// What a candidate remembers about the record it last saw.
#[derive(Debug, Default)]
struct Observed {
    resource_version: Option<String>,
    at: Option<Instant>,
}

async fn run(
    api: Api<Lease>,
    cfg: LeaseConfig,
    tx: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut observed = Observed::default();
    let mut last_renew: Option<Instant> = None;
    let mut last_error: Option<String> = None;
    loop {
        let attempt = Instant::now();
        match tokio::time::timeout(
            cfg.timings.retry.max(Duration::from_secs(1)),
            try_acquire_or_renew(&api, &cfg, &mut observed),
        )
        .await
        {
            Ok(Ok(true)) => {
                last_renew = Some(attempt);
                last_error = None;
                set(&tx, true, &cfg);
            }
            Ok(Ok(false)) => {
                last_renew = None;
                last_error = None;
                set(&tx, false, &cfg);
            }
            Ok(Err(e)) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(&msg) {
                    tracing::warn!(lease = %cfg.name, error = %msg, "cannot read or renew the leader lease");
                    last_error = Some(msg);
                }
                step_down_if_late(&tx, &cfg, &mut last_renew);
            }
            Err(_) => {
                tracing::warn!(lease = %cfg.name, "leader lease request timed out");
                step_down_if_late(&tx, &cfg, &mut last_renew);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.timings.retry) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    if *tx.borrow() {
        let _ = tx.send(false);
        match tokio::time::timeout(Duration::from_secs(2), release(&api, &cfg)).await {
            Ok(Ok(())) => tracing::info!(lease = %cfg.name, "leader lease released"),
            Ok(Err(e)) => {
                tracing::warn!(lease = %cfg.name, error = %e, "cannot release the leader lease")
            }
            Err(_) => tracing::warn!(lease = %cfg.name, "releasing the leader lease timed out"),
        }
    }
}

fn step_down_if_late(
    tx: &watch::Sender<bool>,
    cfg: &LeaseConfig,
    last_renew: &mut Option<Instant>,
) {
    if let Some(t) = *last_renew {
        if t.elapsed() >= cfg.timings.renew_deadline {
            *last_renew = None;
            set(tx, false, cfg);
        }
    }
}

fn set(tx: &watch::Sender<bool>, leader: bool, cfg: &LeaseConfig) {
    if *tx.borrow() != leader {
        if leader {
            tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became leader; writing status");
        } else {
            tracing::info!(lease = %cfg.name, identity = %cfg.identity, "not the leader; status is written by the leader");
        }
        let _ = tx.send(leader);
    }
}

fn now() -> MicroTime {
    MicroTime(crate::k8s::k8s_openapi::jiff::Timestamp::now())
}

fn is_conflict(e: &KubeError) -> bool {
    matches!(e, KubeError::Api(s) if s.code == 409)
}

/// One step: `Ok(true)` when we hold the Lease afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    observed: &mut Observed,
) -> Result<bool, KubeError> {
    let duration_secs = i32::try_from(cfg.timings.duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if observed.resource_version != lease.metadata.resource_version || observed.at.is_none() {
        observed.resource_version = lease.metadata.resource_version.clone();
        observed.at = Some(Instant::now());
    }
    let ours = holder == cfg.identity;
    if !ours && !holder.is_empty() {
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(cfg.timings.duration, Duration::from_secs);
        let unchanged_for = observed.at.map_or(Duration::ZERO, |t| t.elapsed());
        if unchanged_for < duration {
            return Ok(false);
        }
        tracing::info!(lease = %cfg.name, previous = %holder, "leader lease expired; taking over");
    }
    let mut next = spec.clone();
    next.holder_identity = Some(cfg.identity.clone());
    next.lease_duration_seconds = Some(duration_secs);
    next.renew_time = Some(now());
    if !ours {
        next.acquire_time = Some(now());
        next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    lease.spec = Some(next);
    // `lease` carries the resourceVersion we read: the API server refuses the write if anyone wrote in between.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(written) => {
            observed.resource_version = written.metadata.resource_version;
            observed.at = Some(Instant::now());
            Ok(true)
        }
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up: no holder, so a candidate takes it at its next look.
async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<(), KubeError> {
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        return Ok(());
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now());
    lease.spec = Some(spec);
    api.replace(&cfg.name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}
