//! `kubectl-fault`: the `kubectl fault` plugin (see `faultline_webhook::cli`).
use std::process::ExitCode;

use clap::Parser;
use faultline_webhook::cli::{Cli, commands};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli, &mut std::io::stdout()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut message = format!("error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::from(error.exit_code())
        }
    }
}
