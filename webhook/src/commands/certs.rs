//! `faultline-webhook certs`: the webhook's CA and serving certificate, as
//! files (local runs) or as the in-cluster Secret with the caBundle patched.
use std::path::{Path, PathBuf};

use clap::Args;
use faultline_policy::contract::env;

use super::error::CommandError;
use crate::certs::{self, CertManager};
use crate::config::{SYSTEM_NAMESPACE, TLS_SECRET_NAME, WEBHOOK_CONFIG_NAME, WEBHOOK_SERVICE};

#[derive(Args)]
pub struct CertsArgs {
    /// Write ca.crt, tls.crt and tls.key into this directory.
    #[arg(long, required_unless_present = "secret", conflicts_with = "secret")]
    out_dir: Option<PathBuf>,
    /// Create/renew the Secret faultline-webhook-tls and patch caBundle into our webhook configurations.
    #[arg(long)]
    secret: bool,
    /// Namespace of the webhook Service.
    #[arg(long, env = env::POD_NAMESPACE, default_value = SYSTEM_NAMESPACE)]
    namespace: String,
    /// Extra DNS names or IPs for the serving certificate (e.g. 127.0.0.1 for local runs).
    #[arg(long = "san", value_delimiter = ',')]
    extra_sans: Vec<String>,
}

pub(super) async fn run(args: CertsArgs) -> Result<(), CommandError> {
    if let Some(dir) = &args.out_dir {
        let mut names = certs::dns_names(WEBHOOK_SERVICE, &args.namespace);
        names.extend(args.extra_sans.iter().cloned());
        let bundle = certs::generate(&names, time::OffsetDateTime::now_utc())?;
        std::fs::create_dir_all(dir).map_err(|error| CommandError::CreateDir {
            path: dir.clone(),
            error,
        })?;
        for (file, pem, private) in [
            ("ca.crt", &bundle.ca_cert_pem, false),
            ("tls.crt", &bundle.cert_pem, false),
            ("tls.key", &bundle.key_pem, true),
        ] {
            write_file(&dir.join(file), pem, private)?;
        }
        println!(
            "wrote {}/{{ca.crt,tls.crt,tls.key}} for {}",
            dir.display(),
            names.join(", ")
        );
        return Ok(());
    }
    let client = kube::Client::try_default()
        .await
        .map_err(|error| CommandError::Kube(Box::new(error)))?;
    let manager =
        CertManager::new(client.clone(), &args.namespace).with_extra_names(&args.extra_sans);
    let bundle = manager.ensure().await?;
    certs::patch_ca_bundle(&client, WEBHOOK_CONFIG_NAME, &bundle.ca_cert_pem).await?;
    println!(
        "Secret {}/{TLS_SECRET_NAME} is current; caBundle patched",
        args.namespace
    );
    Ok(())
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), CommandError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if private { 0o600 } else { 0o644 };
    let error = |error| CommandError::WriteFile {
        path: path.to_path_buf(),
        error,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    file.write_all(contents.as_bytes()).map_err(error)
}
