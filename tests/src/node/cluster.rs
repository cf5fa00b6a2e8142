//! One cluster per test binary: the shared control plane, a node joined to
//! it, faultline's images on the node and faultline installed. Started by
//! whichever test asks first, kept until the process exits (the node's
//! guardian then takes the node down).
//!
//! Skip policy, as for the control plane: without what a node needs (root,
//! `kubelet` and `kube-scheduler` in `KUBEBUILDER_ASSETS`) the tests say
//! loudly that they were skipped; with `CI` set that is a failure.

use std::path::PathBuf;

use super::install::{build_images, install};
use super::script::Node;
use crate::control_plane::CI_ENV;
use crate::{Assets, ControlPlane, HarnessError, bin_dir, error_chain};

static CLUSTER: tokio::sync::OnceCell<Result<NodeCluster, String>> =
    tokio::sync::OnceCell::const_new();

/// Tests that stop or restart faultline itself take this exclusively; the
/// others share it, so they never see the webhook gone by surprise.
pub type StoryLock = tokio::sync::RwLock<()>;
static STORY: StoryLock = StoryLock::const_new(());

/// A control plane with a node and faultline running on it.
pub struct NodeCluster {
    pub cp: &'static ControlPlane,
    pub node: Node,
    /// Where `kubectl-fault` and the other workspace binaries are.
    pub bin_dir: PathBuf,
}

impl NodeCluster {
    /// The cluster of this test binary; `None` after a loud message when the
    /// machine cannot run a node (a panic instead when `CI` is set).
    pub async fn shared_or_skip() -> Option<&'static NodeCluster> {
        let assets = Assets::from_env_or_skip()?;
        if let Err(reason) = node_prerequisites(&assets) {
            skip_or_fail(&reason);
            return None;
        }
        let cp = ControlPlane::shared_or_skip().await?;
        let cluster = CLUSTER
            .get_or_init(|| async move { start(cp, &assets).await.map_err(|e| error_chain(&e)) })
            .await;
        match cluster {
            Ok(cluster) => Some(cluster),
            Err(e) => panic!("the test node failed to start: {e}"),
        }
    }

    /// Hold while the test runs: shared by ordinary tests.
    pub async fn shared_lock() -> tokio::sync::RwLockReadGuard<'static, ()> {
        STORY.read().await
    }

    /// Hold while the test stops or restarts faultline's own pods.
    pub async fn exclusive_lock() -> tokio::sync::RwLockWriteGuard<'static, ()> {
        STORY.write().await
    }

    pub fn client(&self) -> kube::Client {
        self.cp.client()
    }

    pub fn kubectl(&self) -> tokio::process::Command {
        self.cp.kubectl()
    }

    /// `kubectl-fault --kubeconfig <this cluster>`: the plugin binary under test.
    pub fn kubectl_fault(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.bin_dir.join("kubectl-fault"));
        cmd.arg("--kubeconfig").arg(self.cp.kubeconfig_path());
        cmd.kill_on_drop(true);
        cmd
    }
}

async fn start(cp: &'static ControlPlane, assets: &Assets) -> Result<NodeCluster, HarnessError> {
    let started = std::time::Instant::now();
    let images = build_images().await?;
    eprintln!("node: images built in {:?}", started.elapsed());
    let node = Node::up(&cp.kubeconfig_path(), assets.dir()).await?;
    node.import(&images).await?;
    eprintln!("node: up with images in {:?}", started.elapsed());
    install(cp, &node).await?;
    eprintln!("node: faultline installed in {:?}", started.elapsed());
    Ok(NodeCluster {
        cp,
        node,
        bin_dir: bin_dir()?.to_path_buf(),
    })
}

fn node_prerequisites(assets: &Assets) -> Result<(), String> {
    for binary in ["kubelet", "kube-scheduler"] {
        if !assets.dir().join(binary).exists() {
            return Err(format!(
                "{} has no {binary}: a node needs kubelet and kube-scheduler beside the control plane",
                assets.dir().display()
            ));
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        return Err("a node needs root (containerd, CNI, iptables)".into());
    }
    Ok(())
}

fn skip_or_fail(reason: &str) {
    if std::env::var_os(CI_ENV).is_some_and(|v| !v.is_empty()) {
        panic!("{reason}; {CI_ENV} is set, so this is a failure, not a skip");
    }
    eprintln!(
        "\n{bar}\n!! SKIPPED: this test needs a real node.\n!! {reason}\n{bar}\n",
        bar = "!".repeat(78)
    );
}
