//! Test harness for faultline's end-to-end tests: a real Kubernetes control
//! plane (etcd + kube-apiserver + kube-controller-manager from
//! `KUBEBUILDER_ASSETS`) and the helpers tests need around it.
//!
//! ```ignore
//! let Some(cp) = ControlPlane::shared_or_skip().await else { return };
//! let client = cp.client();
//! let ns = unique_name("my-test");
//! cp.create_namespace(&ns, &[("faultline.dev/injection", "enabled")]).await?;
//! let token = cp.pod_token(&ns, "web-0", "default", "faultline").await?;
//! wait_for("2 pods", Duration::from_secs(30), || async { ... }).await?;
//! ```
//!
//! Layout: `binaries` (the workspace's binaries the tests run, built
//! fresh), `control_plane` (start, stop, clients; submodules for assets,
//! keys, flags, processes, object helpers), `wait` (polling with a
//! deadline, from `faultline-test-support`), `webhook` (faultline's webhook in-process and registered with
//! the API server), `node` (a real node joined to the control plane, with
//! faultline installed from its manifests), `error`. Tests live in `tests/tests/*.rs`.

pub mod binaries;
pub mod control_plane;
mod error;
pub mod events;
pub mod node;
pub mod webhook;

pub use binaries::{WORKSPACE_BINARIES, bin_dir};
pub use control_plane::objects::{KUBECTL_ENV, unique_name};
pub use control_plane::{Assets, ControlPlane, SERVICE_ACCOUNT_ISSUER};
pub use error::HarnessError;
pub use faultline_policy::error_chain;
pub use faultline_test_support::wait;
pub use faultline_test_support::{Backoff, WaitError, wait_for};
