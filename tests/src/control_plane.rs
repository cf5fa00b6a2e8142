//! A real Kubernetes control plane for tests: etcd, kube-apiserver and
//! kube-controller-manager from `KUBEBUILDER_ASSETS`, on free loopback
//! ports, in a fresh temporary directory, with freshly generated keys.
//!
//! - [`ControlPlane::start`]: one owned instance; `Drop` kills the
//!   processes and removes the directory.
//! - [`ControlPlane::shared_or_skip`]: one instance per test binary, started
//!   on first use (start-up costs seconds; tests isolate themselves with
//!   unique namespaces).
//! - [`ControlPlane::start_or_skip`]: like `start`, but prints a loud
//!   message and returns `None` when there are no assets (fails instead if
//!   `CI` is set).
//!
//! Layout: `assets.rs` finds the binaries, `pki.rs` makes keys and
//! certificates, `flags.rs` builds the command lines (pure), `process.rs`
//! runs them, `objects.rs` has the helpers tests use (namespaces, pod
//! tokens, kubectl).

mod assets;
mod flags;
pub mod objects;
mod pki;
mod process;
mod shared;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};

pub use assets::{Assets, CI_ENV};
pub use flags::SERVICE_ACCOUNT_ISSUER;
use flags::{Layout, files};
use pki::Pki;
use process::{DIR_PREFIX, Process};

use crate::HarnessError;
use crate::error_chain;
use crate::wait::{Backoff, WaitError};

/// How long kube-apiserver may take to report `/readyz` (it is slow on a
/// busy 2-core machine: a cold start is 3-10 s there).
const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long kube-controller-manager may take to create the first
/// service-account token Secret.
const CONTROLLER_MANAGER_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Start-up is retried with new ports when a process exits early (another
/// process took a port between our probe and its bind).
const START_ATTEMPTS: u32 = 3;

pub struct ControlPlane {
    // Declared before `dir`: the processes stop before their directory goes.
    processes: Mutex<Vec<Process>>,
    layout: Layout,
    admin_token: String,
    ca_pem: String,
    config: kube::Config,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("api_url", &self.layout.api_url())
            .field("dir", &self.layout.dir)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts a control plane from `KUBEBUILDER_ASSETS`.
    pub async fn start() -> Result<ControlPlane, HarnessError> {
        Self::start_with(&Assets::from_env()?).await
    }

    /// [`start`](Self::start), or `None` after a loud skip message when no
    /// assets are configured (a panic if env `CI` is set). Panics if the
    /// control plane fails to start: the test cannot proceed.
    pub async fn start_or_skip() -> Option<ControlPlane> {
        let assets = Assets::from_env_or_skip()?;
        match Self::start_with(&assets).await {
            Ok(cp) => Some(cp),
            Err(e) => panic!("failed to start the control plane: {}", error_chain(&e)),
        }
    }

    pub async fn start_with(assets: &Assets) -> Result<ControlPlane, HarnessError> {
        let mut attempt = 1;
        loop {
            match Self::try_start(assets).await {
                Err(e @ HarnessError::Exited { .. }) if attempt < START_ATTEMPTS => {
                    eprintln!(
                        "faultline-e2e: control-plane start attempt {attempt} failed, \
                         retrying with new ports: {e}"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn try_start(assets: &Assets) -> Result<ControlPlane, HarnessError> {
        let started = Instant::now();
        let base = process::base_dir();
        process::sweep_stale_dirs(&base);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in(&base)
            .map_err(|source| HarnessError::TempDir { base, source })?;
        let layout = free_layout(dir.path())?;
        let pki = Pki::generate()?;
        write_files(&layout, &pki)?;

        let mut processes = vec![Process::spawn(
            "etcd",
            &assets.etcd(),
            &flags::etcd_args(&layout),
            layout.path("etcd.log"),
        )?];
        // kube-apiserver retries etcd until it answers: no need to wait.
        processes.push(Process::spawn(
            "kube-apiserver",
            &assets.kube_apiserver(),
            &flags::apiserver_args(&layout),
            layout.path("kube-apiserver.log"),
        )?);

        let kubeconfig = kube::config::Kubeconfig::read_from(layout.path(files::KUBECONFIG))
            .map_err(HarnessError::Kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(HarnessError::Kubeconfig)?;
        let client = kube::Client::try_from(config.clone()).map_err(HarnessError::Client)?;

        let readyz = || async {
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            client.request_text(req).await.map_err(|e| e.to_string())
        };
        wait_alive(
            &mut processes,
            "kube-apiserver",
            APISERVER_READY_TIMEOUT,
            readyz,
        )
        .await?;
        let api_ready = started.elapsed();

        processes.push(Process::spawn(
            "kube-controller-manager",
            &assets.kube_controller_manager(),
            &flags::controller_manager_args(&layout),
            layout.path("kube-controller-manager.log"),
        )?);
        // Ready when its token controller has issued the first Secret: from
        // then on new namespaces get their `default` account and token.
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
        let token_secret = || async {
            let lp = ListParams::default().fields("type=kubernetes.io/service-account-token");
            let list = secrets.list(&lp).await.map_err(|e| e.to_string())?;
            if list.items.is_empty() {
                Err("no service-account token Secret in namespace default yet".to_owned())
            } else {
                Ok(())
            }
        };
        wait_alive(
            &mut processes,
            "kube-controller-manager",
            CONTROLLER_MANAGER_READY_TIMEOUT,
            token_secret,
        )
        .await?;

        eprintln!(
            "faultline-e2e: control plane at {} ready in {:.1?} (kube-apiserver {:.1?}); files in {}",
            layout.api_url(),
            started.elapsed(),
            api_ready,
            layout.dir.display()
        );
        Ok(ControlPlane {
            processes: Mutex::new(processes),
            layout,
            admin_token: pki.admin_token,
            ca_pem: pki.ca_pem,
            config,
            _dir: dir,
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn api_url(&self) -> String {
        self.layout.api_url()
    }

    /// A kubeconfig with the admin token, for `kubectl --kubeconfig`.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.layout.path(files::KUBECONFIG)
    }

    /// PEM of the CA that signed the API server's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A bearer token in group `system:masters`.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The directory holding keys, kubeconfig and the processes' logs.
    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    /// The admin client configuration (clone it to change e.g. timeouts).
    pub fn kube_config(&self) -> kube::Config {
        self.config.clone()
    }

    /// An admin client; must be called inside a tokio runtime, and used
    /// only in that runtime.
    pub fn try_client(&self) -> Result<kube::Client, HarnessError> {
        kube::Client::try_from(self.config.clone()).map_err(HarnessError::Client)
    }

    /// [`try_client`](Self::try_client) for tests: panics with the reason.
    pub fn client(&self) -> kube::Client {
        self.try_client()
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)))
    }

    /// An error if etcd, kube-apiserver or kube-controller-manager has
    /// died; tests call it when something unexpected fails.
    pub fn check_running(&self) -> Result<(), HarnessError> {
        let mut processes = self
            .processes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        processes.iter_mut().try_for_each(Process::check_running)
    }

    /// The last lines of each process's log, for a failing test's message.
    pub fn log_tails(&self) -> String {
        let processes = self
            .processes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        processes
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name, p.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let processes = self
            .processes
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The controller-manager and API server first, so nothing logs
        // errors about a vanished etcd.
        while let Some(mut p) = processes.pop() {
            p.stop();
        }
    }
}

/// Three distinct free ports: the probing listeners are held together so
/// the kernel cannot hand out the same port twice.
fn free_layout(dir: &Path) -> Result<Layout, HarnessError> {
    let probes = (0..3)
        .map(|_| std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(HarnessError::FreePort)?;
    let port = |i: usize| {
        probes[i]
            .local_addr()
            .map(|a| a.port())
            .map_err(HarnessError::FreePort)
    };
    Ok(Layout {
        dir: dir.to_owned(),
        etcd_client_port: port(0)?,
        etcd_peer_port: port(1)?,
        apiserver_port: port(2)?,
    })
}

fn write_files(layout: &Layout, pki: &Pki) -> Result<(), HarnessError> {
    let entries = [
        (files::CA, pki.ca_pem.clone()),
        // The serving certificate followed by its CA, as the flag expects.
        (
            files::SERVING_CERT,
            format!("{}{}", pki.serving_cert_pem, pki.ca_pem),
        ),
        (files::SERVING_KEY, pki.serving_key_pem.clone()),
        (files::SA_KEY, pki.sa_key_pem.clone()),
        (files::SA_PUB, pki.sa_pub_pem.clone()),
        (files::TOKENS, flags::token_file(&pki.admin_token)),
        (
            files::KUBECONFIG,
            flags::kubeconfig(layout, &pki.admin_token),
        ),
    ];
    for (name, text) in entries {
        let path = layout.path(name);
        std::fs::write(&path, text).map_err(|source| HarnessError::WriteFile { path, source })?;
    }
    Ok(())
}

/// Polls `probe` until it succeeds, failing at once if any process exits.
async fn wait_alive<F, Fut, T>(
    processes: &mut [Process],
    name: &'static str,
    timeout: Duration,
    mut probe: F,
) -> Result<T, HarnessError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut backoff = Backoff::default();
    loop {
        processes.iter_mut().try_for_each(Process::check_running)?;
        let last = match probe().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            let tail = processes
                .iter()
                .find(|p| p.name == name)
                .map(Process::log_tail)
                .unwrap_or_default();
            return Err(HarnessError::NotReady {
                name,
                source: WaitError {
                    what: format!("{name} to become ready"),
                    waited: start.elapsed(),
                    last,
                },
                tail,
            });
        }
        backoff.pause().await;
    }
}
