//! One control plane per test binary, started on first use by whichever
//! test asks first and kept until the process exits.
//!
//! It is started on a dedicated thread that never ends: children started
//! through `setpriv --pdeathsig` die with the thread that spawned them, and
//! a test's thread ends with the test. Its `Drop` never runs (statics are
//! not dropped); the processes die with the test process and the directory
//! is swept by the next start.

use super::{Assets, ControlPlane};
use crate::HarnessError;
use crate::error_chain;

static SHARED: tokio::sync::OnceCell<Result<ControlPlane, String>> =
    tokio::sync::OnceCell::const_new();

impl ControlPlane {
    /// The control plane of this test binary, started on first use and kept
    /// until the process exits; `None` (after a loud message) when there are
    /// no assets, a panic if `CI` is set or start-up fails.
    ///
    /// Call [`client`](Self::client) in each test: a `kube::Client` belongs
    /// to the tokio runtime it was made in, and every `#[tokio::test]` has
    /// its own.
    pub async fn shared_or_skip() -> Option<&'static ControlPlane> {
        let assets = Assets::from_env_or_skip()?;
        let cp = SHARED
            .get_or_init(|| async move {
                start_on_keeper_thread(assets)
                    .await
                    .map_err(|e| error_chain(&e))
            })
            .await;
        match cp {
            Ok(cp) => Some(cp),
            Err(e) => panic!("{}", HarnessError::Shared(e.clone())),
        }
    }
}

/// Starts the shared control plane on a thread that lives as long as the
/// test process: children started through `setpriv --pdeathsig` die with
/// the thread that spawned them, so that must not be a test's thread.
async fn start_on_keeper_thread(assets: Assets) -> Result<ControlPlane, HarnessError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("faultline-control-plane".to_owned())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| HarnessError::Shared(format!("failed to build a runtime: {e}")))
                .and_then(|rt| rt.block_on(ControlPlane::start_with(&assets)));
            let _ = tx.send(result);
            loop {
                std::thread::park();
            }
        });
    if let Err(e) = spawned {
        return Err(HarnessError::Shared(format!(
            "failed to spawn a thread: {e}"
        )));
    }
    rx.await
        .map_err(|_| HarnessError::Shared("the start-up thread died".to_owned()))?
}
