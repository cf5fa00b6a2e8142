//! The reconnect loop and the application of stream messages to the store.

use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::config::ClientConfig;
use super::connect::Endpoint;
use super::error::ClientError;
use crate::source::store::{PolicySource, PolicyStore, PolicyUpdate};
use faultline_policy::wire::{LineBuffer, StreamMessage};

/// Start the client for a proxy's `run` configuration (the data plane's
/// hook). A configuration error is logged and leaves the proxy without
/// faults, which is the safe side: it never blocks traffic.
pub fn spawn(
    controller: &crate::config::ControllerConfig,
    store: &PolicyStore,
    shutdown: &CancellationToken,
) {
    match ClientConfig::from_proxy_config(controller) {
        Ok(config) => {
            let (store, shutdown) = (store.clone(), shutdown.clone());
            tokio::spawn(async move {
                if let Err(error) = run(config, store, shutdown).await {
                    tracing::error!(error = %crate::error_chain(&error), "policy stream client stopped");
                }
            });
        }
        Err(error) => {
            tracing::error!(url = %controller.url, error = %crate::error_chain(&error), "cannot start the policy stream client; running without faults");
        }
    }
}

/// Run the client until `shutdown` is cancelled. Only configuration errors
/// return early; every network error leads to a jittered reconnect.
pub async fn run(
    config: ClientConfig,
    store: PolicyStore,
    shutdown: CancellationToken,
) -> Result<(), ClientError> {
    let endpoint = Endpoint::new(&config.url, &config.ca_pem)?;
    let mut backoff = Backoff::new(config.backoff_base, config.backoff_max);
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => break,
            outcome = session(&endpoint, &config, &store, &shutdown) => outcome,
        };
        store.set_connected(false);
        let delay = match outcome {
            Ok(received) => {
                if received {
                    backoff.reset();
                }
                tracing::info!(url = %config.url, "policy stream closed by the controller; reconnecting");
                backoff.next_delay(&mut rand::rng())
            }
            Err((received, error)) => {
                if received {
                    backoff.reset();
                }
                let delay = retry_delay(&mut backoff, &error);
                tracing::warn!(url = %config.url, error = %error, cause = ?std::error::Error::source(&error).map(ToString::to_string), retry_in_ms = delay.as_millis() as u64, "policy stream failed; keeping the last good policy");
                delay
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    store.set_connected(false);
    Ok(())
}

/// The controller's `Retry-After` when it sent one (it spreads a reconnect
/// storm that way, and the backoff is left as it was), else the backoff.
fn retry_delay(backoff: &mut Backoff, error: &ClientError) -> std::time::Duration {
    match error.retry_after() {
        Some(wait) => super::backoff::after_retry_after(wait, &mut rand::rng()),
        None => backoff.next_delay(&mut rand::rng()),
    }
}

/// One connection. Returns whether any line was received (the connection
/// worked, so the backoff resets), and why it ended.
async fn session(
    endpoint: &Endpoint,
    config: &ClientConfig,
    store: &PolicyStore,
    shutdown: &CancellationToken,
) -> Result<bool, (bool, ClientError)> {
    let token = tokio::fs::read_to_string(&config.token_file)
        .await
        .map_err(|source| {
            (
                false,
                ClientError::Token {
                    path: config.token_file.clone(),
                    source,
                },
            )
        })?;
    let pod = config
        .pod
        .as_ref()
        .map(|(ns, name)| (ns.as_str(), name.as_str()));
    let mut body = endpoint
        .open(token.trim(), pod)
        .await
        .map_err(|e| (false, e))?;
    let mut lines = LineBuffer::default();
    let mut received = false;
    loop {
        let frame = match tokio::time::timeout(config.heartbeat_timeout, body.frame()).await {
            Err(_) => {
                return Err((
                    received,
                    ClientError::HeartbeatTimeout(config.heartbeat_timeout),
                ));
            }
            Ok(None) => return Ok(received),
            Ok(Some(Err(e))) => return Err((received, ClientError::Http(e))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for line in lines.push(&data).map_err(|e| (received, e.into()))? {
            if !received {
                received = true;
                store.set_connected(true);
            }
            match serde_json::from_slice::<StreamMessage>(&line) {
                // The pod's app has exited for good (classic layout): leave
                // like on SIGTERM, so the pod can complete.
                Ok(StreamMessage::Finish) => {
                    tracing::info!(
                        "the controller reports the app has finished: draining and exiting"
                    );
                    store.mark_app_finished();
                    shutdown.cancel();
                }
                Ok(message) => apply_message(store, &config.url, message),
                Err(error) => tracing::warn!(%error, "ignoring a malformed policy stream line"),
            }
        }
    }
}

/// Apply one message. A version the store already runs is not re-applied, so
/// a reconnect does not reset per-rule state such as `first: N` counters.
pub fn apply_message(store: &PolicyStore, url: &str, message: StreamMessage) {
    let StreamMessage::Policy {
        version,
        policy,
        peers,
    } = message
    else {
        return;
    };
    // Same version, same peers: nothing to do (a reconnect). Same version,
    // new peers (a selector's pods moved): applied like a new version.
    let current = store.current();
    if current.version == version && current.peers == peers {
        return;
    }
    let policy = match policy {
        None => None,
        Some(json) => match faultline_policy::parse(&json.to_string()) {
            Ok(p) => Some(p),
            Err(error) => {
                tracing::warn!(%version, %error, "controller sent a policy that does not validate; keeping the last good one");
                return;
            }
        },
    };
    let faults = policy.is_some();
    let update = PolicyUpdate {
        version: version.clone(),
        source: PolicySource::Controller {
            url: url.to_string(),
        },
        policy,
        peers,
    };
    match store.apply(update) {
        Ok(_) => tracing::info!(%version, faults, "applied policy from the controller"),
        Err(error) => {
            tracing::warn!(%version, %error, "failed to apply the controller's policy; keeping the last good one")
        }
    }
}
