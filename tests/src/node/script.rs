//! The node script (`tests/node/node.sh`): up, import, down, and the
//! guardian that takes the node down when the test process ends; and the
//! command runner and paths the rest of the harness uses with it.
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::HarnessError;

/// The node's name and address: the host side of the pod bridge.
pub const NODE_IP: &str = "10.88.0.1";
/// Where the node script keeps containerd's and the kubelet's state and logs.
pub const NODE_DIR: &str = "/var/lib/faultline-node";
/// One node per machine: the guardian of the process that owns the node
/// holds this lock (flock) from before `up` until after `down`.
const NODE_LOCK: &str = "/run/faultline-node.lock";
/// The pid of the test process whose guardian holds the lock.
const NODE_OWNER: &str = "/run/faultline-node.owner";
/// How long to wait for another test process's node to go down.
const NODE_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The repository's root (the workspace this crate belongs to).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
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

/// Waits until this process's guardian holds the node lock.
async fn wait_for_lock() -> Result<(), HarnessError> {
    let me = std::process::id().to_string();
    let start = std::time::Instant::now();
    let mut said = false;
    loop {
        let owner = std::fs::read_to_string(NODE_OWNER).unwrap_or_default();
        if owner.trim() == me {
            return Ok(());
        }
        if start.elapsed() > NODE_LOCK_TIMEOUT {
            return Err(HarnessError::NodeUnavailable(format!(
                "another test process (pid {}) has owned the node for {:?}",
                owner.trim(),
                start.elapsed()
            )));
        }
        if !said && !owner.trim().is_empty() {
            eprintln!(
                "node: waiting for test process {} to finish with the node",
                owner.trim()
            );
            said = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
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

    /// Waits for the machine's node lock (another test process may own the
    /// node), clears what an earlier run may have left, starts the node, and
    /// arranges for it to go down when this process ends, however it ends.
    pub async fn up(kubeconfig: &Path, assets: &Path) -> Result<Node, HarnessError> {
        let node = Node {
            script: repo_root().join("tests/node/node.sh"),
            kubeconfig: kubeconfig.to_path_buf(),
            assets: assets.to_path_buf(),
        };
        node.spawn_guardian()?;
        wait_for_lock().await?;
        run("node.sh down (leftovers)", &mut node.command(&["down"])).await?;
        let name = run("node.sh up", &mut node.command(&["up"])).await?;
        if name.trim() != NODE_IP {
            return Err(HarnessError::NodeUnavailable(format!(
                "node.sh up printed {name:?}, expected {NODE_IP}"
            )));
        }
        Ok(node)
    }

    /// A detached shell that takes the machine's node lock, says so, waits
    /// for this process to exit, then runs `node.sh down` and lets the lock
    /// go: statics are never dropped, a killed test must not leave a kubelet
    /// and containers behind, and two test processes must never share (or
    /// tear down) one node.
    fn spawn_guardian(&self) -> Result<(), HarnessError> {
        let pid = std::process::id();
        let logs = Path::new(NODE_DIR).join("logs");
        std::fs::create_dir_all(&logs).map_err(|source| HarnessError::WriteFile {
            path: logs.clone(),
            source,
        })?;
        let log = logs.join(format!("guardian-{pid}.log"));
        let watch = format!(
            "echo {pid} > {NODE_OWNER}; while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             bash '{}' down; rm -f {NODE_OWNER}",
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
            .args(["flock", NODE_LOCK, "bash", "-c", &watch])
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
