//! The file policy source (standalone mode, or a sidecar without a
//! controller): load a fault policy file, then poll it every 250 ms and
//! apply it when its content changes. A file that does not parse or
//! validate is logged and counted; the last good policy stays in force.
//!
//! Polling the content hash (rather than inotify) also catches editors that
//! replace the file by rename and mounts (ConfigMaps) that swap symlinks.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use faultline_policy::{PeerIps, PolicyError};

use crate::source::store::{PolicySource, PolicyStore, PolicyUpdate, content_version};

pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum FaultsFileError {
    #[error("failed to read fault policy file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to load fault policy file {path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: PolicyError,
    },
}

/// The version of a file policy: a hash of its content, so the same
/// content always has the same version (and keeps its `first` counters).
pub fn version_of(text: &str) -> String {
    content_version("file", text)
}

/// Reads and parses the file into an update for the store.
pub fn load(path: &Path) -> Result<PolicyUpdate, FaultsFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FaultsFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<PolicyUpdate, FaultsFileError> {
    let policy = faultline_policy::parse(text).map_err(|source| FaultsFileError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    Ok(PolicyUpdate {
        version: version_of(text),
        source: PolicySource::File {
            path: path.to_owned(),
        },
        policy: Some(policy),
        peers: PeerIps::new(),
    })
}

/// Applies `update` to the store, logging the outcome.
pub fn apply(store: &PolicyStore, update: PolicyUpdate, metrics: &Metrics) -> bool {
    let version = update.version.clone();
    match store.apply(update) {
        Ok(active) => {
            let rules = active.policy.as_ref().map_or(0, |p| p.rules.len());
            tracing::info!(%version, rules, "fault policy applied");
            true
        }
        Err(error) => {
            metrics.policy_reload_errors.inc();
            tracing::warn!(%error, "fault policy rejected; the previous policy stays in force");
            false
        }
    }
}

/// Polls `path` until shutdown, applying each new content.
pub async fn watch(
    path: PathBuf,
    store: PolicyStore,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut last_seen = std::fs::read_to_string(&path).ok();
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            // Mid-replace or deleted: keep the policy, try again next tick.
            Err(error) => {
                tracing::debug!(%error, path = %path.display(), "fault policy file unreadable");
                continue;
            }
        };
        if last_seen.as_deref() == Some(text.as_str()) {
            continue;
        }
        match parse(&path, &text) {
            Ok(update) => {
                apply(&store, update, &metrics);
            }
            Err(error) => {
                metrics.policy_reload_errors.inc();
                tracing::warn!(error = %crate::error_chain(&error), "fault policy file rejected; the previous policy stays in force");
            }
        }
        last_seen = Some(text);
    }
}
