//! Injection configuration: what `mutate` puts into a pod, plus the names of
//! the webhook's own objects. The names and ports shared with the proxy and
//! with users live in `faultline_policy::contract`.
//!
//! Every server-side knob is a field of [`Config`]; the `serve` and `inject`
//! commands fill it from flags/env and call [`Config::validate`] before any
//! socket is bound, so `mutate` can trust it.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::admission::overrides::{Bounds, PROXY_CPU_BOUNDS, PROXY_MEMORY_BOUNDS};
use crate::admission::quantity;

/// The names, ports and identities shared with the proxy and with users
/// (defined once, in `faultline_policy::contract`).
pub use faultline_policy::contract::{
    ADMIN_PORT, CAPTURE_DNS_ANNOTATION, DNS_CAPTURE_PORT, EXCLUDE_INBOUND_PORTS_ANNOTATION,
    EXCLUDE_OUTBOUND_CIDRS_ANNOTATION, EXCLUDE_OUTBOUND_PORTS_ANNOTATION, FAULTS_ANNOTATION,
    INBOUND_CAPTURE_PORT, INIT_CONTAINER_NAME, INJECT_LABEL, INJECTED_CONTAINERS, INJECTED_LABEL,
    INJECTED_VOLUMES, NAMESPACE_INJECTION_LABEL, NATIVE_SIDECAR_ANNOTATION, OUTBOUND_CAPTURE_PORT,
    PROXY_CONTAINER_NAME, PROXY_CPU_ANNOTATION, PROXY_GID, PROXY_MEMORY_ANNOTATION, PROXY_UID,
    STATUS_ANNOTATION, TOKEN_AUDIENCE, TOKEN_FILE, TOKEN_MOUNT_PATH, TOKEN_VOLUME_NAME,
    XTABLES_VOLUME_NAME,
};

/// Standard annotation read by `kubectl logs/exec`; we point it at the app so
/// the sidecar placed first (classic mode) does not become the default.
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

pub const TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// Kubernetes names of our own objects.
pub const SYSTEM_NAMESPACE: &str = "faultline-system";
pub const WEBHOOK_SERVICE: &str = "faultline-webhook";
pub const WEBHOOK_CONFIG_NAME: &str = "faultline-webhook";
pub const TLS_SECRET_NAME: &str = "faultline-webhook-tls";
pub const DEFAULT_CONTROLLER_URL: &str = "https://faultline-webhook.faultline-system.svc:443";
pub const DEFAULT_PROXY_IMAGE: &str = "ghcr.io/faultline-dev/faultline-proxy:latest";

/// What [`crate::admission::mutate`] injects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Image of both `faultline-init` and `faultline-proxy`.
    pub proxy_image: String,
    pub image_pull_policy: Option<String>,
    pub resources: ProxyResources,
    /// The layout pods get unless their `faultline.dev/native-sidecar`
    /// annotation says otherwise: native sidecars when true (which implies
    /// the API server takes them).
    pub native_sidecars: bool,
    /// Whether the API server takes native sidecars (1.29+), as discovered
    /// from its version. A pod asking for them on a server that does not
    /// gets the classic layout and a warning: older servers drop or refuse
    /// `restartPolicy` on init containers.
    pub native_supported: bool,
    /// Where proxies fetch their policy stream (`FAULTLINE_CONTROLLER_URL`).
    pub controller_url: String,
    /// PEM of the CA that signed the controller's certificate (`FAULTLINE_CA_PEM`).
    pub ca_pem: Option<String>,
    /// `FAULTLINE_LOG` filter for injected proxies.
    pub proxy_log: Option<String>,
    /// How long the classic-mode postStart hook waits for the proxy.
    pub wait_ready_timeout_seconds: u32,
    /// Recorded in `faultline.dev/status`.
    pub version: String,
}

/// Requests and limits of the proxy sidecar, as Kubernetes quantities.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyResources {
    pub cpu_request: Option<String>,
    pub memory_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

impl Default for ProxyResources {
    fn default() -> Self {
        Self {
            cpu_request: Some("10m".into()),
            memory_request: Some("32Mi".into()),
            cpu_limit: None,
            memory_limit: Some("256Mi".into()),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            proxy_image: DEFAULT_PROXY_IMAGE.into(),
            image_pull_policy: None,
            resources: ProxyResources::default(),
            native_sidecars: false,
            native_supported: false,
            controller_url: DEFAULT_CONTROLLER_URL.into(),
            ca_pem: None,
            proxy_log: None,
            wait_ready_timeout_seconds: 120,
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid proxy image: must not be empty")]
    EmptyImage,
    #[error("invalid image pull policy {0:?}: expected Always, IfNotPresent or Never")]
    PullPolicy(String),
    #[error("invalid proxy {field} {value:?}: {reason}")]
    Quantity {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid controller URL {0:?}: expected https://host[:port]")]
    ControllerUrl(String),
    #[error("invalid CA PEM: expected a PEM \"CERTIFICATE\" block")]
    CaPem,
    #[error("invalid wait-ready timeout: must be between 1 and 3600 seconds")]
    WaitReadyTimeout,
    #[error("invalid proxy {resource} request {request:?}: above its limit {limit:?}")]
    RequestAboveLimit {
        resource: &'static str,
        request: String,
        limit: String,
    },
}

impl Config {
    /// Whether a pod may get the native layout.
    pub fn supports_native(&self) -> bool {
        self.native_sidecars || self.native_supported
    }

    /// Check every field `mutate` copies into pods, so a bad flag is reported
    /// at startup instead of as pods the API server rejects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.proxy_image.trim().is_empty() {
            return Err(ConfigError::EmptyImage);
        }
        if let Some(policy) = &self.image_pull_policy
            && !matches!(policy.as_str(), "Always" | "IfNotPresent" | "Never")
        {
            return Err(ConfigError::PullPolicy(policy.clone()));
        }
        self.resources.validate()?;
        let url = self.controller_url.as_str();
        let host = url.strip_prefix("https://").unwrap_or_default();
        if host.is_empty() || host.starts_with('/') || host.contains(char::is_whitespace) {
            return Err(ConfigError::ControllerUrl(self.controller_url.clone()));
        }
        if let Some(pem) = &self.ca_pem
            && !pem.contains("-----BEGIN CERTIFICATE-----")
        {
            return Err(ConfigError::CaPem);
        }
        if !(1..=3600).contains(&self.wait_ready_timeout_seconds) {
            return Err(ConfigError::WaitReadyTimeout);
        }
        Ok(())
    }
}

impl ProxyResources {
    /// Every value is a quantity within the bounds pod overrides are held
    /// to, and no request is above its limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(&'static str, &Option<String>, Bounds); 4] = [
            ("cpu request", &self.cpu_request, PROXY_CPU_BOUNDS),
            ("memory request", &self.memory_request, PROXY_MEMORY_BOUNDS),
            ("cpu limit", &self.cpu_limit, PROXY_CPU_BOUNDS),
            ("memory limit", &self.memory_limit, PROXY_MEMORY_BOUNDS),
        ];
        for (field, value, bounds) in checks {
            if let Some(value) = value {
                bounds
                    .check(value)
                    .map_err(|reason| ConfigError::Quantity {
                        field,
                        value: value.clone(),
                        reason,
                    })?;
            }
        }
        for (resource, request, limit) in [
            ("cpu", &self.cpu_request, &self.cpu_limit),
            ("memory", &self.memory_request, &self.memory_limit),
        ] {
            if let (Some(request), Some(limit)) = (request, limit)
                && quantity::value(request).unwrap_or_default()
                    > quantity::value(limit).unwrap_or_default()
            {
                return Err(ConfigError::RequestAboveLimit {
                    resource,
                    request: request.clone(),
                    limit: limit.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The `faultline.dev/status` annotation: what was injected, so reinvocations
/// and the controller can tell an injected pod from a plain one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InjectionStatus {
    pub version: String,
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
    pub native_sidecar: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn rejects_bad_fields() {
        let bad = |f: fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.proxy_image = " ".into()), ConfigError::EmptyImage);
        assert!(matches!(
            bad(|c| c.image_pull_policy = Some("Sometimes".into())),
            ConfigError::PullPolicy(_)
        ));
        assert!(matches!(
            bad(|c| c.resources.cpu_request = Some("lots".into())),
            ConfigError::Quantity {
                field: "cpu request",
                ..
            }
        ));
        assert!(matches!(
            bad(|c| c.controller_url = "http://x".into()),
            ConfigError::ControllerUrl(_)
        ));
        assert!(matches!(
            bad(|c| c.controller_url = "https://".into()),
            ConfigError::ControllerUrl(_)
        ));
        assert!(matches!(
            bad(|c| c.resources.memory_limit = Some("8Mi".into())),
            ConfigError::Quantity {
                field: "memory limit",
                ..
            }
        ));
        assert!(matches!(
            bad(|c| c.resources.cpu_request = Some("64".into())),
            ConfigError::Quantity {
                field: "cpu request",
                ..
            }
        ));
        assert!(matches!(
            bad(|c| c.resources.memory_request = Some("512Mi".into())),
            ConfigError::RequestAboveLimit {
                resource: "memory",
                ..
            }
        ));
        assert_eq!(bad(|c| c.ca_pem = Some("nope".into())), ConfigError::CaPem);
        assert_eq!(
            bad(|c| c.wait_ready_timeout_seconds = 0),
            ConfigError::WaitReadyTimeout
        );
    }
}

/// Native sidecars (`restartPolicy: Always` init containers) are on by
/// default from Kubernetes 1.29. `minor` may carry a suffix (`"29+"` on GKE/EKS).
pub fn native_sidecars_supported(major: &str, minor: &str) -> bool {
    let number = |s: &str| {
        s.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse::<u32>()
            .ok()
    };
    match (number(major), number(minor)) {
        (Some(major), Some(minor)) => major > 1 || (major == 1 && minor >= 29),
        _ => false,
    }
}

#[cfg(test)]
mod version_tests {
    use super::native_sidecars_supported as supported;

    #[test]
    fn native_sidecars_from_1_29() {
        assert!(!supported("1", "20"));
        assert!(!supported("1", "28"));
        assert!(supported("1", "29"));
        assert!(supported("1", "33+"));
        assert!(supported("2", "0"));
        assert!(!supported("", "x"));
    }
}
