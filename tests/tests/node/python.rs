//! The Python client (`clients/python`) against this node: its pytest suite
//! runs with `FAULTLINE_E2E=1` and the cluster's kubeconfig, so its cluster
//! tests inject with the client, wait for the proxies, see faults with real
//! HTTP requests to pod IPs, and prove the pytest fixture recovers even when
//! a test fails.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use faultline_e2e::node::{NodeCluster, repo_root};

const PYTEST_TIMEOUT: Duration = Duration::from_secs(600);

/// `$FAULTLINE_PYTHON`, else the virtualenv `.ci/run` makes, else `python3`.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FAULTLINE_PYTHON") {
        return p.into();
    }
    let venv = repo_root().join("target/python/bin/python");
    if venv.is_file() {
        venv
    } else {
        "python3".into()
    }
}

#[tokio::test]
async fn python_client_pytest_suite() -> anyhow::Result<()> {
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::shared_lock().await;
    let root = repo_root();
    let python = python();
    let deps = tokio::process::Command::new(&python)
        .args(["-c", "import kubernetes, yaml, pytest"])
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("run {}", python.display()))?;
    anyhow::ensure!(
        deps.status.success(),
        "{} lacks the Python client's dependencies (.ci/run installs them into target/python; \
         or pip install ./clients/python pytest): {}",
        python.display(),
        String::from_utf8_lossy(&deps.stderr)
    );
    let mut path = root.join("clients/python/src").into_os_string();
    if let Some(old) = std::env::var_os("PYTHONPATH") {
        path.push(":");
        path.push(old);
    }
    let started = Instant::now();
    let mut pytest = tokio::process::Command::new(&python);
    pytest
        .args([
            "-m",
            "pytest",
            "clients/python/tests",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
        ])
        .current_dir(&root)
        .env("KUBECONFIG", cluster.cp.kubeconfig_path())
        .env("FAULTLINE_E2E", "1")
        .env("FAULTLINE_BIN_DIR", &cluster.bin_dir)
        .env("PYTHONPATH", path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // The suite takes well under a minute; a hung request must not hang CI.
    let output = tokio::time::timeout(PYTEST_TIMEOUT, pytest.output())
        .await
        .with_context(|| format!("pytest still running after {PYTEST_TIMEOUT:?}; killed"))?
        .context("run pytest")?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{report}");
    anyhow::ensure!(
        output.status.success(),
        "the Python client's tests failed ({}) after {:?}:\n{report}",
        output.status,
        started.elapsed()
    );
    anyhow::ensure!(
        !report.contains("cluster tests run with FAULTLINE_E2E=1"),
        "cluster tests were skipped although FAULTLINE_E2E=1:\n{report}"
    );
    Ok(())
}
