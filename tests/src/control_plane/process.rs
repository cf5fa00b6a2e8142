//! Child processes of a control plane: spawning with output to log files,
//! noticing early exits, stopping, and never outliving the test process.
//!
//! A test binary may be killed, or keep a control plane in a static whose
//! `Drop` never runs. So every child is started through `setpriv
//! --pdeathsig KILL` (util-linux): the kernel kills it when the thread that
//! spawned it ends. Left-over directories of dead test processes are
//! removed by [`sweep_stale_dirs`] at the next start.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::HarnessError;

/// How many trailing log lines an error message quotes.
const LOG_TAIL_LINES: usize = 25;

/// Prefix of control-plane directories; followed by the owning pid.
pub(crate) const DIR_PREFIX: &str = "faultline-envtest-";

pub(crate) struct Process {
    pub(crate) name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    pub(crate) fn spawn(
        name: &'static str,
        binary: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Process, HarnessError> {
        let spawn_err = |source| HarnessError::Spawn {
            name,
            binary: binary.to_owned(),
            source,
        };
        let out = File::create(&log).map_err(spawn_err)?;
        let err = out.try_clone().map_err(spawn_err)?;
        let with_setpriv = Command::new("setpriv")
            .arg("--pdeathsig=KILL")
            .arg("--")
            .arg(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(spawn_err)?)
            .stderr(err.try_clone().map_err(spawn_err)?)
            .spawn();
        let child = match with_setpriv {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "faultline-e2e: `setpriv` (util-linux) not found; {name} will outlive this \
                     test process if it is killed"
                );
                Command::new(binary)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .map_err(spawn_err)?
            }
            Err(e) => return Err(spawn_err(e)),
        };
        Ok(Process { name, child, log })
    }

    /// An error if the process has exited (it never should while the
    /// control plane is in use), quoting the end of its log.
    pub(crate) fn check_running(&mut self) -> Result<(), HarnessError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(HarnessError::Exited {
                name: self.name,
                status: status.to_string(),
                log: self.log.clone(),
                tail: log_tail(&self.log),
            }),
            Err(source) => Err(HarnessError::Status {
                name: self.name,
                source,
            }),
        }
    }

    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    pub(crate) fn stop(&mut self) {
        // Nothing of a throw-away control plane needs a graceful shutdown.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Where control-plane directories go: tmpfs when there is one (etcd
/// fsyncs on every write; on disk that dominates the API latency).
pub(crate) fn base_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// Removes control-plane directories whose owning process is gone (a test
/// binary that was killed, or one that kept its control plane in a static).
pub(crate) fn sweep_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = owner_pid(&name.to_string_lossy()) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `faultline-envtest-<pid>-<random>` -> pid.
fn owner_pid(dir_name: &str) -> Option<u32> {
    dir_name
        .strip_prefix(DIR_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_is_read_from_the_directory_name() {
        assert_eq!(owner_pid("faultline-envtest-1234-AbC9x"), Some(1234));
        assert_eq!(owner_pid("faultline-envtest-x-AbC9x"), None);
        assert_eq!(owner_pid("other-1234-x"), None);
    }

    #[test]
    fn stale_dirs_of_dead_processes_are_removed_and_live_ones_kept() {
        let base = tempfile::tempdir().expect("tempdir");
        // pid_max is at most 2^22, so this pid cannot exist.
        let dead = base.path().join(format!("{DIR_PREFIX}99999999-x"));
        let live = base
            .path()
            .join(format!("{DIR_PREFIX}{}-y", std::process::id()));
        let other = base.path().join("unrelated");
        for d in [&dead, &live, &other] {
            std::fs::create_dir(d).expect("mkdir");
        }
        sweep_stale_dirs(base.path());
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(other.exists());
    }
}
