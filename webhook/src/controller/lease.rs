//! The writer role. Every replica serves streams, but only the holder of the
//! `faultline-controller` Lease (in the controller's own namespace) patches
//! objects and writes Events, so replicas never fight over an expiry.
//!
//! `decide` is the pure rule; `run` renews on a timer and publishes
//! leadership on a `watch` channel. Writes use the Lease's resourceVersion,
//! so two replicas racing for an expired Lease cannot both win.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Lease name (RBAC grants exactly this) and the default namespace (the
/// controller's own, `--namespace` / `FAULTLINE_POD_NAMESPACE`, wins).
pub const LEASE_NAME: &str = "faultline-controller";
pub const LEASE_NAMESPACE: &str = "faultline-system";

/// Election timing.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// A holder that has not renewed for this long has lost the Lease.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew: Duration,
    /// How often a follower looks: a released Lease is taken over within this.
    pub follow: Duration,
}

impl LeaseConfig {
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            namespace: LEASE_NAMESPACE.into(),
            name: LEASE_NAME.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
            follow: Duration::from_secs(1),
        }
    }

    /// The Lease in `namespace` (the controller's own).
    pub fn in_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }
}

/// What to do with the Lease as found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// The holder is gone (expired or released): take it over.
    TakeOver,
    /// Someone else holds it.
    Follow { holder: String },
}

/// Pure: decide from the current Lease spec.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(at) if at.checked_add(duration).is_ok_and(|end| end > now) => Decision::Follow {
            holder: holder.into(),
        },
        _ => Decision::TakeOver,
    }
}

fn spec_for(
    config: &LeaseConfig,
    previous: Option<&LeaseSpec>,
    now: Timestamp,
    take_over: bool,
) -> LeaseSpec {
    let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX)),
        acquire_time: if take_over || previous.is_none() {
            Some(MicroTime(now))
        } else {
            previous.and_then(|s| s.acquire_time.clone())
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if take_over {
            transitions.saturating_add(1)
        } else {
            transitions
        }),
        ..LeaseSpec::default()
    }
}

/// One election round: returns whether we hold the Lease afterwards.
pub async fn round(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let current = api.get_opt(&config.name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    match decide(spec, &config.identity, now) {
        Decision::Follow { .. } => Ok(false),
        Decision::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec_for(config, None, now, true)),
            };
            conflict_is_false(api.create(&PostParams::default(), &lease).await)
        }
        decision @ (Decision::Renew | Decision::TakeOver) => {
            let Some(mut lease) = current else {
                return Ok(false);
            };
            lease.spec = Some(spec_for(
                config,
                lease.spec.as_ref(),
                now,
                decision == Decision::TakeOver,
            ));
            conflict_is_false(
                api.replace(&config.name, &PostParams::default(), &lease)
                    .await,
            )
        }
    }
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        // 409: another replica wrote first; it is the leader now.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Keep electing until shutdown; `leader` follows the outcome. A leader that
/// cannot renew steps down before its Lease could be taken over.
pub async fn run(
    client: kube::Client,
    config: LeaseConfig,
    leader: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut last_renewed: Option<tokio::time::Instant> = None;
    loop {
        let held = match round(&api, &config).await {
            Ok(true) => {
                last_renewed = Some(tokio::time::Instant::now());
                true
            }
            Ok(false) => false,
            Err(error) => {
                tracing::warn!(%error, lease = %config.name, "failed to renew the controller Lease");
                // Step down early: at 2/3 of the duration another replica may soon take over.
                last_renewed.is_some_and(|t| t.elapsed() < config.duration * 2 / 3)
            }
        };
        leader.send_if_modified(|was| {
            if *was != held {
                tracing::info!(identity = %config.identity, leader = held, "controller writer role changed");
                *was = held;
                true
            } else {
                false
            }
        });
        // A follower looks often (one GET), so a released Lease is taken over
        // at once rather than a renew interval later.
        let pause = if held { config.renew } else { config.follow };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    if *leader.borrow() {
        release(&api, &config).await;
        leader.send_replace(false);
    }
}

/// Give the Lease up on shutdown so another replica takes over at once.
async fn release(api: &Api<Lease>, config: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&config.name).await else {
        return;
    };
    if let Some(spec) = lease
        .spec
        .as_mut()
        .filter(|s| s.holder_identity.as_deref() == Some(&config.identity))
    {
        spec.holder_identity = None;
        if let Err(error) = api
            .replace(&config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::debug!(%error, "failed to release the controller Lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: &str, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            lease_duration_seconds: Some(secs),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn election_rules() {
        let now: Timestamp = "2026-11-26T02:00:10Z".parse().unwrap();
        assert_eq!(decide(None, "a", now), Decision::Create);
        assert_eq!(
            decide(Some(&spec("a", "2026-11-26T01:00:00Z", 15)), "a", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&spec("b", "2026-11-26T02:00:00Z", 15)), "a", now),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&spec("b", "2026-11-26T02:00:00Z", 5)), "a", now),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&spec("", "2026-11-26T02:00:09Z", 15)), "a", now),
            Decision::TakeOver
        );
        let never_renewed = LeaseSpec {
            holder_identity: Some("b".into()),
            ..LeaseSpec::default()
        };
        assert_eq!(decide(Some(&never_renewed), "a", now), Decision::TakeOver);
    }

    #[test]
    fn take_over_counts_a_transition_and_renew_keeps_acquire_time() {
        let config = LeaseConfig::new("a");
        let now: Timestamp = "2026-11-26T02:00:10Z".parse().unwrap();
        let old = LeaseSpec {
            acquire_time: Some(MicroTime("2026-11-26T01:00:00Z".parse().unwrap())),
            lease_transitions: Some(2),
            ..spec("a", "2026-11-26T02:00:00Z", 15)
        };
        let renewed = spec_for(&config, Some(&old), now, false);
        assert_eq!(renewed.lease_transitions, Some(2));
        assert_eq!(renewed.acquire_time, old.acquire_time);
        let taken = spec_for(&config, Some(&old), now, true);
        assert_eq!(taken.lease_transitions, Some(3));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));
    }
}
