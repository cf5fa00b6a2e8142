//! The harness's error type: every failure says what it was doing and, for
//! a control-plane process, quotes the end of its log.

use std::path::PathBuf;

use crate::wait::WaitError;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "no Kubernetes control-plane binaries: {reason}. Set KUBEBUILDER_ASSETS to a directory \
         with etcd, kube-apiserver and kube-controller-manager (the envtest layout; \
         see docs/e2e-harness.md)"
    )]
    AssetsMissing { reason: String },

    #[error("failed to create the control plane's directory under {base}")]
    TempDir {
        base: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to {what}")]
    Pki {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },

    #[error("failed to find a free loopback port")]
    FreePort(#[source] std::io::Error),

    #[error("failed to start {name} ({binary})")]
    Spawn {
        name: &'static str,
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to check whether {name} is running")]
    Status {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{name} exited ({status}); log {log}:\n{tail}")]
    Exited {
        name: &'static str,
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error("{name} did not become ready: {source}; log tail:\n{tail}")]
    NotReady {
        name: &'static str,
        #[source]
        source: WaitError,
        tail: String,
    },

    #[error("failed to load the generated kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),

    #[error("failed to build a Kubernetes client")]
    Client(#[source] kube::Error),

    #[error("failed to {what}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },

    #[error(transparent)]
    Wait(#[from] WaitError),

    #[error("{0}")]
    Webhook(String),

    #[error("unexpected answer from the API server: {0}")]
    Unexpected(String),

    #[error("the shared control plane failed to start: {0}")]
    Shared(String),

    #[error("failed to run {what}")]
    RunCommand {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} failed ({status}):\n{output}")]
    CommandFailed {
        what: String,
        status: String,
        output: String,
    },

    #[error("failed to build the workspace binaries the tests run: {0}")]
    Build(String),

    #[error("the test node is not available: {0}")]
    NodeUnavailable(String),
}

impl HarnessError {
    pub(crate) fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Api { what, source }
    }
}
