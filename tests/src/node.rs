//! A real Kubernetes node for the story tests: containerd + runc + a CNI
//! bridge + kubelet + kube-scheduler, joined to a [`ControlPlane`] by
//! `tests/node/node.sh`, with faultline's images built offline
//! (`scripts/image-tar.sh`) and imported, and faultline installed from
//! `manifests/` through the overlay `tests/node/overlay` with `kubectl
//! apply -k`, the way a user installs it.
//!
//! Layout: `node/script.rs` runs the node script (up, import, down, and the
//! guardian that takes the node down when the test process ends);
//! `node/cluster.rs` is the one-per-test-binary cluster (control plane +
//! node + faultline) and the skip policy; `node/install.rs` builds the
//! images and installs faultline; `node/apps.rs` holds the test workloads
//! and what tests do with running pods (HTTP from the host, `kubectl exec`,
//! proxy metrics).
//!
//! Pods get `10.88.1.x` on bridge `fl0`; the host (and the node, named by
//! its IP) is [`NODE_IP`]. There is no kube-proxy and no DNS: tests talk to
//! pod IPs, and pods to pod IPs and to the node address.

pub mod apps;
mod cluster;
mod install;
mod script;

pub use cluster::{NodeCluster, StoryLock};
pub use install::{PROXY_IMAGE, WEBHOOK_IMAGE};
pub use script::{NODE_DIR, NODE_IP, repo_root, run};
