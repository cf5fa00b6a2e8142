//! `kubectl fault`: inject, list, recover and inspect fault policies from
//! the command line (installed as the `kubectl-fault` plugin binary).
//!
//! Layout: `args` is the command line, `error` the errors; `inject_flags`
//! turns flags into a policy (pure); `kube_io` reads and patches objects;
//! `commands` runs each subcommand; `table` prints aligned columns.

mod args;
pub mod commands;
mod error;
pub mod inject_flags;
pub mod kube_io;
pub mod table;

pub use args::{Cli, Command};
pub use error::CliError;
