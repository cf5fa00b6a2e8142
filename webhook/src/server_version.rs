//! The API server's version, for what injection may ask of it: native
//! sidecars (init containers with `restartPolicy: Always`) exist from 1.29;
//! older servers drop or refuse the field, and the pod never starts or is
//! never created. `serve` reads the version at start-up and again every
//! [`REFRESH_INTERVAL`], so an upgrade (or a rollback) of the control plane
//! changes the layout of new pods without a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, native_sidecars_supported};

/// How often `serve` reads the API server's version again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(600);

/// Whether the API server runs native sidecars, from its `/version`.
pub async fn native_supported(client: &kube::Client) -> Result<bool, kube::Error> {
    let info = client.apiserver_version().await?;
    Ok(native_sidecars_supported(&info.major, &info.minor))
}

/// Read the version every `every` until `shutdown`; when the answer
/// changes, publish `configure(supported)`. A failed read keeps the config
/// in force (the last answer is still the best one).
pub async fn refresh(
    client: kube::Client,
    mut supported: bool,
    configure: impl Fn(bool) -> Config,
    config: watch::Sender<Arc<Config>>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match native_supported(&client).await {
            Ok(now) if now != supported => {
                tracing::info!(
                    native_sidecars_supported = now,
                    "the API server's version changed: new pods get the layout it supports"
                );
                supported = now;
                config.send_replace(Arc::new(configure(now)));
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "failed to read the API server version; keeping the current layout")
            }
        }
    }
}
