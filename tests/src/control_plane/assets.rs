//! Finding the control-plane binaries (the envtest layout: one directory
//! with `etcd`, `kube-apiserver`, `kube-controller-manager`), and the skip
//! policy when they are missing.

use std::path::{Path, PathBuf};

use crate::HarnessError;

/// The directory with the binaries, as used by controller-runtime's envtest.
pub const ASSETS_ENV: &str = "KUBEBUILDER_ASSETS";
/// When set (to anything non-empty), missing assets fail the test.
pub const CI_ENV: &str = "CI";

const BINARIES: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

#[derive(Debug, Clone)]
pub struct Assets {
    dir: PathBuf,
}

impl Assets {
    pub fn from_env() -> Result<Assets, HarnessError> {
        let value = std::env::var_os(ASSETS_ENV).filter(|v| !v.is_empty());
        Self::from_dir_setting(value.map(PathBuf::from))
    }

    /// `Some` when the assets are there; otherwise prints why the test is
    /// skipped, or panics when `CI` is set: a CI run must never pass by
    /// skipping its Kubernetes tests.
    pub fn from_env_or_skip() -> Option<Assets> {
        match Self::from_env() {
            Ok(assets) => Some(assets),
            Err(e) => {
                let ci = std::env::var_os(CI_ENV).is_some_and(|v| !v.is_empty());
                if ci {
                    panic!("{e}; {CI_ENV} is set, so this is a failure, not a skip");
                }
                eprintln!(
                    "\n{bar}\n!! SKIPPED: this test needs a real kube-apiserver.\n!! {e}\n{bar}\n",
                    bar = "!".repeat(78)
                );
                None
            }
        }
    }

    fn from_dir_setting(dir: Option<PathBuf>) -> Result<Assets, HarnessError> {
        let dir = dir.ok_or_else(|| HarnessError::AssetsMissing {
            reason: format!("{ASSETS_ENV} is not set"),
        })?;
        let missing: Vec<&str> = BINARIES
            .iter()
            .copied()
            .filter(|b| !is_executable(&dir.join(b)))
            .collect();
        if missing.is_empty() {
            Ok(Assets { dir })
        } else {
            Err(HarnessError::AssetsMissing {
                reason: format!(
                    "{ASSETS_ENV}={} lacks executable {}",
                    dir.display(),
                    missing.join(", ")
                ),
            })
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }
    pub fn kube_apiserver(&self) -> PathBuf {
        self.dir.join("kube-apiserver")
    }
    pub fn kube_controller_manager(&self) -> PathBuf {
        self.dir.join("kube-controller-manager")
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_directory_is_reported() {
        let err = Assets::from_dir_setting(None).expect_err("no dir");
        assert!(
            err.to_string().contains("KUBEBUILDER_ASSETS is not set"),
            "{err}"
        );
    }

    #[test]
    fn missing_and_non_executable_binaries_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let etcd = dir.path().join("etcd");
        std::fs::write(&etcd, "").expect("write");
        std::fs::set_permissions(&etcd, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(dir.path().join("kube-apiserver"), "").expect("write");
        let err = Assets::from_dir_setting(Some(dir.path().to_owned())).expect_err("incomplete");
        let msg = err.to_string();
        assert!(
            msg.contains("lacks executable kube-apiserver, kube-controller-manager"),
            "{msg}"
        );
    }

    #[test]
    fn complete_directory_is_accepted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        for b in BINARIES {
            let p = dir.path().join(b);
            std::fs::write(&p, "").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let assets = Assets::from_dir_setting(Some(dir.path().to_owned())).expect("complete");
        assert_eq!(assets.kube_apiserver(), dir.path().join("kube-apiserver"));
    }
}
