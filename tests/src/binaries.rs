//! The workspace's own binaries the end-to-end tests run: the proxy and the
//! webhook (packed into the node's images) and the `kubectl-fault` plugin.
//!
//! Cargo builds a test's own package's binaries before the test
//! (`CARGO_BIN_EXE_*`), but not other packages'. So the harness builds them
//! itself, once per test binary, with the cargo running the tests (`CARGO`)
//! and the same profile, and the build command `make unit` uses: when they
//! are up to date that is cargo's fingerprint check, and a test can never
//! run binaries older than the sources under test.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use escargot::format::Message;

use crate::HarnessError;

/// The binaries the tests run from [`bin_dir`].
pub const WORKSPACE_BINARIES: [&str; 3] = ["faultline-proxy", "faultline-webhook", "kubectl-fault"];

/// The directory of [`WORKSPACE_BINARIES`], built from the sources under
/// test (`target/debug` for `cargo test`, `target/release` for `cargo test
/// --release`). The first call of a test binary runs `cargo build
/// --workspace --bins`, blocking its thread until it is done; later calls
/// return at once.
pub fn bin_dir() -> Result<&'static Path, HarnessError> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(build)
        .as_deref()
        .map_err(|why| HarnessError::Build(why.clone()))
}

fn build() -> Result<PathBuf, String> {
    let manifest = crate::node::repo_root().join("Cargo.toml");
    let mut cargo = escargot::CargoBuild::new()
        .manifest_path(&manifest)
        .args(["--workspace", "--bins"])
        .current_release();
    for (name, _) in std::env::vars_os() {
        if is_test_package_var(&name.to_string_lossy()) {
            cargo = cargo.env_remove(name);
        }
    }
    let messages = cargo.exec().map_err(|e| e.to_string())?;
    let mut built = Vec::new();
    for message in messages {
        let message = message.map_err(|e| e.to_string())?;
        if let Ok(Message::CompilerArtifact(artifact)) = message.decode()
            && let Some(path) = artifact.executable
            && WORKSPACE_BINARIES.contains(&artifact.target.name.as_ref())
        {
            built.push(path.into_owned());
        }
    }
    one_dir(&built)
}

/// What cargo sets for the test process about its own package
/// (`CARGO_PKG_VERSION`, `CARGO_MANIFEST_DIR`, ...). Left in the build's
/// environment they look like a change to build scripts that watch them
/// (ring's does), which would then rebuild half the dependency tree each
/// time the build alternates with a build from a shell.
fn is_test_package_var(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
        )
}

/// The one directory all of [`WORKSPACE_BINARIES`] are in.
fn one_dir(built: &[PathBuf]) -> Result<PathBuf, String> {
    let dir = built
        .first()
        .and_then(|path| path.parent())
        .ok_or("cargo built none of the binaries")?;
    for binary in WORKSPACE_BINARIES {
        if !built.contains(&dir.join(binary)) {
            return Err(format!(
                "cargo did not build {binary} in {} (built: {built:?})",
                dir.display()
            ));
        }
    }
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modified(path: &Path) -> std::time::SystemTime {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Runs the real build: every binary exists and is newer than each
    /// source it is built from (cargo's dep-info, `<binary>.d`, lists them).
    #[test]
    fn the_binaries_are_built_from_the_sources_under_test() {
        let dir = bin_dir().unwrap();
        let root = crate::node::repo_root();
        for binary in WORKSPACE_BINARIES {
            let built = modified(&dir.join(binary));
            let dep_info = std::fs::read_to_string(dir.join(format!("{binary}.d"))).unwrap();
            let (_, sources) = dep_info.split_once(": ").unwrap();
            let sources: Vec<&Path> = sources.split_whitespace().map(Path::new).collect();
            assert!(
                sources.iter().any(|s| s.starts_with(&root)),
                "{binary}: no workspace source in {dep_info}"
            );
            for source in sources {
                assert!(
                    modified(source) <= built,
                    "{binary} is older than {}",
                    source.display()
                );
            }
        }
        // Built once per test binary.
        assert_eq!(bin_dir().unwrap(), dir);
    }

    #[test]
    fn only_the_test_packages_own_variables_are_left_out() {
        for name in [
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_MANIFEST_DIR",
            "CARGO_CRATE_NAME",
        ] {
            assert!(is_test_package_var(name), "{name}");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_PROFILE_RELEASE_LTO",
            "RUSTFLAGS",
        ] {
            assert!(!is_test_package_var(name), "{name}");
        }
    }

    #[test]
    fn every_binary_is_in_one_directory() {
        let dir = Path::new("/t/debug");
        let all: Vec<PathBuf> = WORKSPACE_BINARIES.iter().map(|b| dir.join(b)).collect();
        assert_eq!(one_dir(&all).unwrap(), dir);
        assert!(one_dir(&all[1..]).unwrap_err().contains("faultline-proxy"));
        assert!(one_dir(&[]).is_err());
    }
}
