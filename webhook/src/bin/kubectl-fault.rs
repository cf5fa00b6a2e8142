//! `kubectl-fault`: the `kubectl fault` plugin (see `faultline_webhook::kubectl_fault`).
use std::process::ExitCode;

use clap::Parser;
use faultline_webhook::kubectl_fault::{Cli, commands};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // Usage errors exit 64 (EX_USAGE) like every faultline binary; --help is success.
            return if error.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match commands::run(cli, &mut std::io::stdout()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", faultline_policy::error_chain(&error));
            ExitCode::from(error.exit_code())
        }
    }
}
