//! Per-pod overrides read from `faultline.dev/*` annotations: port and CIDR
//! exclusions for traffic capture, DNS capture, proxy resources and the
//! sidecar mode.
//! Every value is checked here so a typo is refused with the annotation's name
//! instead of producing an init container that fails at pod start.
//!
//! Proxy resources are also held within [`PROXY_CPU_BOUNDS`] and
//! [`PROXY_MEMORY_BOUNDS`]: a value that reads but is out of bounds is
//! ignored (the proxy gets the configured default) and reported as an
//! [`Ignored`] override, so a pod is never refused for it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use faultline_policy::contract::PortRange;
use thiserror::Error;

use super::quantity;
use crate::config::{
    CAPTURE_DNS_ANNOTATION, EXCLUDE_INBOUND_PORTS_ANNOTATION, EXCLUDE_OUTBOUND_CIDRS_ANNOTATION,
    EXCLUDE_OUTBOUND_PORTS_ANNOTATION, NATIVE_SIDECAR_ANNOTATION, PROXY_CPU_ANNOTATION,
    PROXY_MEMORY_ANNOTATION,
};

/// An annotation whose value cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("failed to read annotation {annotation}={value:?}: {reason}")]
pub struct OverrideError {
    pub annotation: &'static str,
    pub value: String,
    pub reason: String,
}

/// The range a proxy resource (request or limit) must fall in, as
/// Kubernetes quantities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub min: &'static str,
    pub max: &'static str,
}

/// The proxy needs a few milli-CPUs to answer its probes in time; more than
/// 8 cores is far beyond what one pod's traffic asks of it and is a typo
/// (`1000` for `1000m`).
pub const PROXY_CPU_BOUNDS: Bounds = Bounds {
    min: "1m",
    max: "8",
};

/// The idle proxy's RSS is about 6 MB; 16Mi leaves room for its policy and
/// a few hundred connections, so a lower limit means OOM kills at start.
/// 4Gi is sixteen times the default limit: anything above is a typo
/// (`100Ti`) that would make the pod unschedulable.
pub const PROXY_MEMORY_BOUNDS: Bounds = Bounds {
    min: "16Mi",
    max: "4Gi",
};

impl Bounds {
    /// `Ok(())` when `text` is a quantity within the bounds.
    pub fn check(&self, text: &str) -> Result<(), String> {
        let value = quantity::value(text)?;
        let bound = |q: &str| quantity::value(q).unwrap_or_default();
        if value < bound(self.min) {
            return Err(format!("below the minimum {}", self.min));
        }
        if value > bound(self.max) {
            return Err(format!("above the maximum {}", self.max));
        }
        Ok(())
    }
}

/// An override that was left out (the pod gets the default) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    pub annotation: &'static str,
    pub value: String,
    pub reason: String,
}

impl Ignored {
    /// The AdmissionResponse warning: names the annotation and the bound.
    pub fn warning(&self) -> String {
        format!(
            "faultline: ignored annotation {}={:?}: {}; the proxy gets the default",
            self.annotation, self.value, self.reason
        )
    }
}

/// The pod's overrides, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub exclude_inbound_ports: Vec<PortRange>,
    pub exclude_outbound_ports: Vec<PortRange>,
    pub exclude_outbound_cidrs: Vec<String>,
    pub proxy_cpu: Option<String>,
    pub proxy_memory: Option<String>,
    pub native_sidecar: Option<bool>,
    /// `faultline.dev/capture-dns: "true"`: the pod's DNS goes through the proxy.
    pub capture_dns: bool,
    /// Resource overrides out of bounds, replaced by the default.
    pub ignored: Vec<Ignored>,
}

impl Overrides {
    /// Read the overrides; `named_ports` resolves container port names used in
    /// `exclude-inbound-ports` (e.g. `metrics`) to numbers.
    pub fn read(
        annotations: &BTreeMap<String, String>,
        named_ports: &BTreeMap<String, u16>,
    ) -> Result<Self, OverrideError> {
        let get = |key: &str| {
            annotations
                .get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let mut overrides = Self::default();
        if let Some(v) = get(EXCLUDE_INBOUND_PORTS_ANNOTATION) {
            overrides.exclude_inbound_ports = ports(v, named_ports)
                .map_err(|reason| error(EXCLUDE_INBOUND_PORTS_ANNOTATION, v, reason))?;
        }
        if let Some(v) = get(EXCLUDE_OUTBOUND_PORTS_ANNOTATION) {
            overrides.exclude_outbound_ports = ports(v, &BTreeMap::new())
                .map_err(|reason| error(EXCLUDE_OUTBOUND_PORTS_ANNOTATION, v, reason))?;
        }
        if let Some(v) = get(EXCLUDE_OUTBOUND_CIDRS_ANNOTATION) {
            overrides.exclude_outbound_cidrs =
                cidrs(v).map_err(|reason| error(EXCLUDE_OUTBOUND_CIDRS_ANNOTATION, v, reason))?;
        }
        for (key, bounds, slot) in [
            (
                PROXY_CPU_ANNOTATION,
                PROXY_CPU_BOUNDS,
                &mut overrides.proxy_cpu,
            ),
            (
                PROXY_MEMORY_ANNOTATION,
                PROXY_MEMORY_BOUNDS,
                &mut overrides.proxy_memory,
            ),
        ] {
            let Some(v) = get(key) else { continue };
            quantity::check(v).map_err(|reason| error(key, v, reason))?;
            match bounds.check(v) {
                Ok(()) => *slot = Some(v.to_string()),
                Err(reason) => overrides.ignored.push(Ignored {
                    annotation: key,
                    value: v.to_string(),
                    reason,
                }),
            }
        }
        if let Some(v) = get(NATIVE_SIDECAR_ANNOTATION) {
            overrides.native_sidecar = Some(boolean(NATIVE_SIDECAR_ANNOTATION, v)?);
        }
        if let Some(v) = get(CAPTURE_DNS_ANNOTATION) {
            overrides.capture_dns = boolean(CAPTURE_DNS_ANNOTATION, v)?;
        }
        Ok(overrides)
    }
}

fn boolean(annotation: &'static str, value: &str) -> Result<bool, OverrideError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(error(
            annotation,
            value,
            "expected \"true\" or \"false\"".into(),
        )),
    }
}

fn error(annotation: &'static str, value: &str, reason: String) -> OverrideError {
    OverrideError {
        annotation,
        value: value.to_string(),
        reason,
    }
}

fn ports(list: &str, named_ports: &BTreeMap<String, u16>) -> Result<Vec<PortRange>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let range = match item.split_once('-') {
            Some((a, b)) if a.chars().all(|c| c.is_ascii_digit()) => {
                let (first, last) = (port(a)?, port(b)?);
                if first > last {
                    return Err(format!("range {item:?} is reversed"));
                }
                PortRange::new(first, last)
            }
            _ if item.chars().all(|c| c.is_ascii_digit()) => PortRange::single(port(item)?),
            _ => match named_ports.get(item) {
                Some(p) => PortRange::single(*p),
                None => {
                    return Err(format!(
                        "{item:?} is not a port, a port range (8000-8010) or the name of a container port"
                    ));
                }
            },
        };
        out.push(range);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{text:?} is not a port (1-65535)")),
    }
}

/// CIDRs normalised for `--exclude-outbound-cidrs`; a bare address becomes /32 or /128.
fn cidrs(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (addr, prefix) = item.split_once('/').unwrap_or((item, ""));
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{item:?} is not an IP address or CIDR"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            match prefix.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{item:?} has an invalid prefix length (0-{max})")),
            }
        };
        out.push(format!("{ip}/{prefix}"));
    }
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use faultline_policy::contract::join;

    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Overrides, OverrideError> {
        let annotations = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let named = BTreeMap::from([("metrics".to_string(), 9090u16)]);
        Overrides::read(&annotations, &named)
    }

    #[test]
    fn parses_ports_ranges_and_names() {
        let o = read(&[(EXCLUDE_INBOUND_PORTS_ANNOTATION, "9000-9010, 80,metrics,80")]).unwrap();
        assert_eq!(join(&o.exclude_inbound_ports), "80,9000-9010,9090");
        let o = read(&[(EXCLUDE_OUTBOUND_PORTS_ANNOTATION, "5432")]).unwrap();
        assert_eq!(o.exclude_outbound_ports, vec![PortRange::single(5432)]);
    }

    #[test]
    fn outbound_ports_do_not_resolve_names() {
        let e = read(&[(EXCLUDE_OUTBOUND_PORTS_ANNOTATION, "metrics")]).unwrap_err();
        assert_eq!(e.annotation, EXCLUDE_OUTBOUND_PORTS_ANNOTATION);
    }

    #[test]
    fn rejects_bad_ports_naming_the_annotation() {
        for bad in ["0", "70000", "90-80", "http", "1-x"] {
            let e = read(&[(EXCLUDE_INBOUND_PORTS_ANNOTATION, bad)]).unwrap_err();
            assert!(
                e.to_string()
                    .contains("faultline.dev/exclude-inbound-ports"),
                "{e}"
            );
        }
    }

    #[test]
    fn normalises_cidrs() {
        let o = read(&[(
            EXCLUDE_OUTBOUND_CIDRS_ANNOTATION,
            "10.0.0.0/8, 169.254.169.254,fd00::/8",
        )])
        .unwrap();
        assert_eq!(
            o.exclude_outbound_cidrs,
            ["10.0.0.0/8", "169.254.169.254/32", "fd00::/8"]
        );
        for bad in ["10.0.0.0/33", "nope", "fd00::/129", "10.0.0.0/x"] {
            assert!(
                read(&[(EXCLUDE_OUTBOUND_CIDRS_ANNOTATION, bad)]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn resources_and_sidecar_mode() {
        let o = read(&[
            (PROXY_CPU_ANNOTATION, "50m"),
            (PROXY_MEMORY_ANNOTATION, "64Mi"),
            (NATIVE_SIDECAR_ANNOTATION, "false"),
        ])
        .unwrap();
        assert_eq!(
            (o.proxy_cpu.as_deref(), o.proxy_memory.as_deref()),
            (Some("50m"), Some("64Mi"))
        );
        assert_eq!(o.native_sidecar, Some(false));
        assert!(read(&[(PROXY_CPU_ANNOTATION, "fast")]).is_err());
        assert!(read(&[(NATIVE_SIDECAR_ANNOTATION, "yes")]).is_err());
    }

    #[test]
    fn capture_dns_is_off_unless_the_annotation_says_true() {
        assert!(!read(&[]).unwrap().capture_dns);
        assert!(
            read(&[(CAPTURE_DNS_ANNOTATION, "true")])
                .unwrap()
                .capture_dns
        );
        assert!(
            !read(&[(CAPTURE_DNS_ANNOTATION, "false")])
                .unwrap()
                .capture_dns
        );
        let e = read(&[(CAPTURE_DNS_ANNOTATION, "yes")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to read annotation faultline.dev/capture-dns=\"yes\": expected \"true\" or \"false\""
        );
    }

    #[test]
    fn resources_out_of_bounds_are_ignored_naming_the_bound() {
        for (key, value, bound) in [
            (PROXY_MEMORY_ANNOTATION, "1", "minimum 16Mi"),
            (PROXY_MEMORY_ANNOTATION, "0", "minimum 16Mi"),
            (PROXY_MEMORY_ANNOTATION, "15Mi", "minimum 16Mi"),
            (PROXY_MEMORY_ANNOTATION, "100Ti", "maximum 4Gi"),
            (PROXY_MEMORY_ANNOTATION, "1e999", "maximum 4Gi"),
            (PROXY_CPU_ANNOTATION, "1000", "maximum 8"),
            (PROXY_CPU_ANNOTATION, "0", "minimum 1m"),
            (PROXY_CPU_ANNOTATION, "100u", "minimum 1m"),
        ] {
            let o = read(&[(key, value)]).unwrap();
            assert_eq!(
                (o.proxy_cpu.as_deref(), o.proxy_memory.as_deref()),
                (None, None)
            );
            assert_eq!(o.ignored.len(), 1, "{key}={value}");
            let warning = o.ignored[0].warning();
            assert!(
                warning.contains(key) && warning.contains(value) && warning.contains(bound),
                "{warning}"
            );
        }
    }

    #[test]
    fn resources_at_the_bounds_are_used() {
        for (key, value) in [
            (PROXY_MEMORY_ANNOTATION, "16Mi"),
            (PROXY_MEMORY_ANNOTATION, "4Gi"),
            (PROXY_CPU_ANNOTATION, "1m"),
            (PROXY_CPU_ANNOTATION, "8"),
            (PROXY_CPU_ANNOTATION, "8000m"),
        ] {
            let o = read(&[(key, value)]).unwrap();
            assert!(o.ignored.is_empty(), "{key}={value}: {:?}", o.ignored);
        }
    }

    #[test]
    fn empty_values_mean_unset() {
        assert_eq!(
            read(&[(EXCLUDE_INBOUND_PORTS_ANNOTATION, " ")]).unwrap(),
            Overrides::default()
        );
    }
}
