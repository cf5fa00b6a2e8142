//! `faultline-webhook inject`: the sidecar added to manifests offline,
//! like `istioctl kube-inject`.
use std::path::PathBuf;

use clap::Args;

use super::error::CommandError;
use super::injection::InjectionArgs;
use crate::inject;

#[derive(Args)]
pub struct InjectArgs {
    /// File to read (YAML, multi-document, Lists); `-` for stdin.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Inject native sidecars (target clusters 1.29+).
    #[arg(long)]
    native_sidecars: bool,
    #[command(flatten)]
    injection: InjectionArgs,
}

pub(super) fn run(args: InjectArgs) -> Result<(), CommandError> {
    // Offline, the target cluster is unknown: a pod asking for native
    // sidecars by annotation gets them.
    let config = args.injection.config(args.native_sidecars, true, None)?;
    if config.ca_pem.is_none() {
        eprintln!(
            "faultline-webhook: note: no --ca-file; injected proxies will not trust the controller's certificate"
        );
    }
    let input = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(CommandError::Stdin)?
    } else {
        std::fs::read_to_string(&args.file).map_err(|error| CommandError::Input {
            path: args.file.clone(),
            error,
        })?
    };
    let (output, report) = inject::inject_yaml(&input, &config)?;
    print!("{output}");
    for skipped in &report.skipped {
        eprintln!("faultline-webhook: skipped {skipped}");
    }
    Ok(())
}
