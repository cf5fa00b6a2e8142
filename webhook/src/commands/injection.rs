//! The flags that say what gets injected, shared by `serve` and `inject`.
use std::path::PathBuf;

use clap::Args;
use faultline_policy::contract::env;

use super::error::CommandError;
use crate::config::{Config, DEFAULT_CONTROLLER_URL, DEFAULT_PROXY_IMAGE, ProxyResources};

/// What gets injected; shared by `serve` and `inject`.
#[derive(Args, Clone)]
pub struct InjectionArgs {
    /// Image of the faultline-init and faultline-proxy containers.
    #[arg(long, env = "FAULTLINE_PROXY_IMAGE", default_value = DEFAULT_PROXY_IMAGE)]
    proxy_image: String,
    /// imagePullPolicy of the injected containers (Always, IfNotPresent, Never).
    #[arg(long, env = "FAULTLINE_PROXY_IMAGE_PULL_POLICY")]
    image_pull_policy: Option<String>,
    /// Proxy CPU request (pods override with the faultline.dev/proxy-cpu annotation).
    #[arg(long, env = "FAULTLINE_PROXY_CPU", default_value = "10m")]
    proxy_cpu: String,
    /// Proxy memory request (faultline.dev/proxy-memory overrides).
    #[arg(long, env = "FAULTLINE_PROXY_MEMORY", default_value = "32Mi")]
    proxy_memory: String,
    /// Proxy CPU limit (none by default: throttling would distort injected delays).
    #[arg(long, env = "FAULTLINE_PROXY_CPU_LIMIT")]
    proxy_cpu_limit: Option<String>,
    /// Proxy memory limit.
    #[arg(long, env = "FAULTLINE_PROXY_MEMORY_LIMIT", default_value = "256Mi")]
    proxy_memory_limit: String,
    /// URL proxies use to reach the controller's policy stream.
    #[arg(long, env = env::CONTROLLER_URL, default_value = DEFAULT_CONTROLLER_URL)]
    controller_url: String,
    /// PEM file of the CA proxies trust for the controller (serve: defaults to the managed CA).
    #[arg(long, env = env::CA_FILE)]
    ca_file: Option<PathBuf>,
    /// FAULTLINE_LOG filter given to injected proxies.
    #[arg(long, env = "FAULTLINE_PROXY_LOG")]
    proxy_log: Option<String>,
}

impl InjectionArgs {
    /// The validated injection config; the CA comes from --ca-file or
    /// `managed_ca`. `native_sidecars` is the default layout,
    /// `native_supported` whether the API server runs native sidecars.
    pub(super) fn config(
        &self,
        native_sidecars: bool,
        native_supported: bool,
        managed_ca: Option<String>,
    ) -> Result<Config, CommandError> {
        let ca_pem = match &self.ca_file {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|error| CommandError::CaFile {
                        path: path.clone(),
                        error,
                    })?,
                )
            }
            None => managed_ca,
        };
        let config = Config {
            proxy_image: self.proxy_image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            resources: ProxyResources {
                cpu_request: Some(self.proxy_cpu.clone()),
                memory_request: Some(self.proxy_memory.clone()),
                cpu_limit: self.proxy_cpu_limit.clone(),
                memory_limit: Some(self.proxy_memory_limit.clone()),
            },
            native_sidecars,
            native_supported,
            controller_url: self.controller_url.clone(),
            ca_pem,
            proxy_log: self.proxy_log.clone(),
            ..Config::default()
        };
        config.validate()?;
        Ok(config)
    }
}
