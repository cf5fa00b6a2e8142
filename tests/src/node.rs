//! A real Kubernetes node for the story tests: containerd + runc + a CNI
//! bridge + kubelet + kube-scheduler, joined to a [`ControlPlane`] by
//! `tests/node/node.sh`, with faultline's images built offline
//! (`scripts/image-tar.sh`) and imported, and faultline installed from
//! `manifests/` through the overlay `tests/node/overlay` with `kubectl
//! apply -k`, the way a user installs it.
//!
//! Layout: this file runs the node script (up, import, down, and the
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

use std::path::{Path, PathBuf};
use std::process::Stdio;

pub use cluster::{NodeCluster, StoryLock};
pub use install::{PROXY_IMAGE, WEBHOOK_IMAGE};

use crate::HarnessError;

/// The node's name and address: the host side of the pod bridge.
pub const NODE_IP: &str = "10.88.0.1";
/// Where the node script keeps containerd's and the kubelet's state and logs.
pub const NODE_DIR: &str = "/var/lib/faultline-node";

/// The repository's root (the workspace this crate belongs to).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The directory of the workspace's binaries built with this test binary
/// (`target/debug` for `cargo test`): test executables live in its `deps/`.
pub fn bin_dir() -> Result<PathBuf, HarnessError> {
    let exe = std::env::current_exe().map_err(|source| HarnessError::RunCommand {
        what: "find the test executable".into(),
        source,
    })?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            HarnessError::NodeUnavailable(format!("no target dir above {}", exe.display()))
        })
}

/// Runs `cmd`, returning its stdout; a failure carries stdout and stderr.
pub async fn run(
    what: impl Into<String>,
    cmd: &mut tokio::process::Command,
) -> Result<String, HarnessError> {
    let what = what.into();
    let output =
        cmd.stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| HarnessError::RunCommand {
                what: what.clone(),
                source,
            })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(HarnessError::CommandFailed {
        what,
        status: output.status.to_string(),
        output: format!("{stdout}{stderr}"),
    })
}

/// The node script with the environment it needs.
#[derive(Debug, Clone)]
pub struct Node {
    script: PathBuf,
    kubeconfig: PathBuf,
    assets: PathBuf,
}

impl Node {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(&self.script)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBEBUILDER_ASSETS", &self.assets)
            .env("FAULTLINE_NODE_DIR", NODE_DIR);
        cmd
    }

    /// Clears what an earlier run may have left (one node per machine),
    /// starts the node, and arranges for it to go down when this process
    /// ends, however it ends.
    pub async fn up(kubeconfig: &Path, assets: &Path) -> Result<Node, HarnessError> {
        let node = Node {
            script: repo_root().join("tests/node/node.sh"),
            kubeconfig: kubeconfig.to_path_buf(),
            assets: assets.to_path_buf(),
        };
        run("node.sh down (leftovers)", &mut node.command(&["down"])).await?;
        let name = run("node.sh up", &mut node.command(&["up"])).await?;
        if name.trim() != NODE_IP {
            return Err(HarnessError::NodeUnavailable(format!(
                "node.sh up printed {name:?}, expected {NODE_IP}"
            )));
        }
        node.spawn_guardian()?;
        Ok(node)
    }

    /// A detached shell that waits for this process to exit, then runs
    /// `node.sh down`: statics are never dropped, and a killed test must not
    /// leave a kubelet and containers behind.
    fn spawn_guardian(&self) -> Result<(), HarnessError> {
        let pid = std::process::id();
        let log = Path::new(NODE_DIR).join("logs/guardian.log");
        let watch = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; exec bash '{}' down",
            self.script.display()
        );
        let out = std::fs::File::create(&log).map_err(|source| HarnessError::WriteFile {
            path: log.clone(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| HarnessError::WriteFile {
            path: log.clone(),
            source,
        })?;
        std::process::Command::new("setsid")
            .args(["bash", "-c", &watch])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("FAULTLINE_NODE_DIR", NODE_DIR)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| HarnessError::RunCommand {
                what: "start the node guardian (setsid)".into(),
                source,
            })?;
        Ok(())
    }

    /// Imports docker-archive or OCI tarballs into the node's containerd.
    pub async fn import(&self, tars: &[PathBuf]) -> Result<(), HarnessError> {
        let mut cmd = self.command(&["import"]);
        cmd.args(tars);
        run("node.sh import", &mut cmd).await.map(drop)
    }

    /// The end of the kubelet's log, for failure messages.
    pub fn kubelet_log_tail(&self) -> String {
        let path = Path::new(NODE_DIR).join("logs/kubelet.log");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(30).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}
