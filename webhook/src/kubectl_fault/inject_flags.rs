//! Pure helpers of `kubectl fault`: parsing `KIND/NAME` targets and turning
//! the `inject` flags into a fault policy document.

use serde_json::{Map, Value, json};

use super::error::CliError;
use crate::controller::objects::Kind;

/// Parse `deploy/NAME`, `deployment/NAME`, `sts/`, `ds/`, `job/`, `pod/`, ...
pub fn parse_target(target: &str) -> Result<(Kind, String), CliError> {
    let (kind, name) = target
        .split_once('/')
        .ok_or_else(|| CliError::Target(target.to_string()))?;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "deploy" | "deployment" | "deployments" | "deployment.apps" => Kind::Deployment,
        "sts" | "statefulset" | "statefulsets" | "statefulset.apps" => Kind::StatefulSet,
        "ds" | "daemonset" | "daemonsets" | "daemonset.apps" => Kind::DaemonSet,
        "rs" | "replicaset" | "replicasets" | "replicaset.apps" => Kind::ReplicaSet,
        "job" | "jobs" | "job.batch" => Kind::Job,
        "po" | "pod" | "pods" => Kind::Pod,
        _ => return Err(CliError::Target(target.to_string())),
    };
    if name.is_empty() || name.contains('/') {
        return Err(CliError::Target(target.to_string()));
    }
    Ok((kind, name.to_string()))
}

/// The id of the group of every [`FaultFlags`] flag: `-f` conflicts with
/// it, so a flag declared here can never be silently ignored next to a file.
pub const FAULT_FLAGS: &str = "fault_flags";

/// The `inject` flags that shape a policy.
#[derive(Clone, Debug, Default, clap::Args)]
#[group(id = FAULT_FLAGS, multiple = true)]
pub struct FaultFlags {
    /// Delay matching requests by this long (e.g. 200ms, 1s).
    #[arg(long, value_name = "DURATION")]
    pub delay: Option<String>,
    /// Spread the delay uniformly by +/- this much.
    #[arg(long, value_name = "DURATION", requires = "delay")]
    pub jitter: Option<String>,
    /// Delay matching requests by a uniformly drawn time in [MIN, MAX].
    #[arg(long, value_name = "MIN,MAX", conflicts_with = "delay")]
    pub delay_uniform: Option<String>,
    /// Delay matching requests log-normally with this median and p99,
    /// never more than MAX (e.g. 80ms,1.2s or 80ms,1.2s,5s).
    #[arg(long, value_name = "MEDIAN,P99[,MAX]", conflicts_with_all = ["delay", "delay_uniform"])]
    pub delay_lognormal: Option<String>,
    /// Delay matching requests by a Pareto (heavy-tailed) time from SCALE
    /// up, capped at MAX (e.g. 20ms,1.16,5s).
    #[arg(long, value_name = "SCALE,SHAPE,MAX", conflicts_with_all = ["delay", "delay_uniform", "delay_lognormal"])]
    pub delay_pareto: Option<String>,
    /// Let each request ask for a delay up to this long with the
    /// `x-faultline-delay` header (a test facility: fromHeaders).
    #[arg(long, value_name = "DURATION")]
    pub header_max_delay: Option<String>,
    /// Let each request ask for these HTTP statuses with the
    /// `x-faultline-abort` header (e.g. 503,429).
    #[arg(long, value_name = "STATUS[,STATUS]", value_delimiter = ',')]
    pub header_abort: Vec<u16>,
    /// Let each gRPC request ask for these statuses with the
    /// `x-faultline-abort-grpc` header (e.g. UNAVAILABLE).
    #[arg(long, value_name = "CODE[,CODE]", value_delimiter = ',')]
    pub header_abort_grpc: Vec<String>,
    /// Answer matching HTTP requests with this status instead of forwarding.
    #[arg(long, value_name = "STATUS")]
    pub abort: Option<u16>,
    /// Fail matching gRPC calls with this status code (e.g. UNAVAILABLE).
    #[arg(long, value_name = "CODE")]
    pub grpc: Option<String>,
    /// Reset the client's connection (TCP RST) instead of answering; works
    /// for HTTP, raw TCP and TLS (--sni).
    #[arg(long)]
    pub abort_reset: bool,
    /// Replace the status of the upstream's responses with this one.
    #[arg(long, value_name = "STATUS")]
    pub replace_status: Option<u16>,
    /// Replace the body of the upstream's responses with this text.
    #[arg(long, value_name = "TEXT")]
    pub replace_body: Option<String>,
    /// Set this header on the upstream's responses (NAME=VALUE, repeatable).
    #[arg(long = "set-header", value_name = "NAME=VALUE")]
    pub set_headers: Vec<String>,
    /// Remove this header from the upstream's responses (repeatable).
    #[arg(long = "remove-header", value_name = "NAME")]
    pub remove_headers: Vec<String>,
    /// Refuse outbound connections to pods with these labels (k=v[,k=v]).
    #[arg(long, value_name = "LABELS")]
    pub partition_to: Option<String>,
    /// Limit throughput to this rate (e.g. 64KiB/s); with --side, only that side's.
    #[arg(long, value_name = "RATE")]
    pub bandwidth: Option<String>,
    /// Split raw TCP traffic into chunks of about this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub slicer: Option<u64>,
    /// Pause this long between two --slicer chunks.
    #[arg(long, value_name = "DURATION", requires = "slicer")]
    pub slice_delay: Option<String>,
    /// Close the connection after this many bytes (HTTP: truncate responses).
    #[arg(long, value_name = "BYTES")]
    pub limit_data: Option<u64>,
    /// Hold the close of raw TCP connections this long after the peer closed.
    #[arg(long, value_name = "DURATION")]
    pub slow_close: Option<String>,
    /// Which side the fault acts on: request, response (or both).
    #[arg(long, value_name = "SIDE", value_parser = ["request", "response", "both"])]
    pub side: Option<String>,
    /// Answer matching DNS queries with this error: NXDOMAIN, SERVFAIL or REFUSED.
    #[arg(long, value_name = "RCODE")]
    pub dns_rcode: Option<String>,
    /// Drop matching DNS queries (never answered; the client's resolver times out).
    #[arg(long)]
    pub dns_drop: bool,
    /// Match only DNS queries for this name (`*` globs, e.g. '*.nats.svc.cluster.local').
    #[arg(long, value_name = "PATTERN")]
    pub dns_name: Option<String>,
    /// Match only DNS queries of this record type (repeatable, e.g. A, AAAA).
    #[arg(long = "dns-type", value_name = "TYPE")]
    pub dns_types: Vec<String>,
    /// Fault only this share of matching requests (0-100).
    #[arg(long, value_name = "PERCENT")]
    pub percent: Option<f64>,
    /// Match only this request path (exact, prefix `/api/*` or glob).
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Match only these HTTP methods (repeatable).
    #[arg(long = "method", value_name = "METHOD")]
    pub methods: Vec<String>,
    /// Act only on upstream responses with this status, class or range
    /// (503, 5xx, 500-504; repeatable): the fault is decided on the response.
    #[arg(long = "response-status", value_name = "STATUS")]
    pub response_statuses: Vec<String>,
    /// Match only this port.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Match outbound requests to this host instead of inbound requests.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Match outbound TLS connections whose ClientHello names this server
    /// (SNI; `*.example.com` wildcards), without decrypting them.
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// `inbound` (requests the workload serves) or `outbound` (calls it makes).
    #[arg(long, value_name = "DIRECTION", value_parser = ["inbound", "outbound"])]
    pub direction: Option<String>,
    /// Remove the faults automatically after this long (e.g. 60s, 5m).
    #[arg(long = "for", value_name = "DURATION")]
    pub for_: Option<String>,
    /// Remove the faults automatically at this RFC 3339 time.
    #[arg(long, value_name = "TIME", conflicts_with = "for_")]
    pub until: Option<String>,
    /// Name of the rule (shown in metrics and errors).
    #[arg(long, value_name = "NAME", default_value = "kubectl-fault")]
    pub name: String,
}

/// Build the policy document (YAML text) the flags describe. Validation is
/// left to `policy::parse` so the CLI and the webhook agree exactly.
pub fn policy_from_flags(flags: &FaultFlags) -> Result<String, CliError> {
    if flags.sni.is_some()
        && let Some(flag) = http_only_flag(flags)
    {
        return Err(CliError::HttpOnTls(flag));
    }
    let mut faults = Vec::new();
    let mut rule = Map::new();
    rule.insert("name".into(), json!(flags.name));
    let mut matcher = Map::new();
    if let Some(delay) = &flags.delay {
        let mut d = Map::new();
        d.insert("fixed".into(), json!(delay));
        if let Some(j) = &flags.jitter {
            d.insert("jitter".into(), json!(j));
        }
        faults.push(("delay", Value::Object(d)));
    }
    if let Some(spec) = delay_distribution(flags)? {
        faults.push(("delay", spec));
    }
    if flags.header_max_delay.is_some()
        || !flags.header_abort.is_empty()
        || !flags.header_abort_grpc.is_empty()
    {
        let mut spec = Map::new();
        if let Some(max) = &flags.header_max_delay {
            spec.insert("maxDelay".into(), json!(max));
        }
        if !flags.header_abort.is_empty() {
            spec.insert("abortStatuses".into(), json!(flags.header_abort));
        }
        if !flags.header_abort_grpc.is_empty() {
            let codes: Vec<String> = flags
                .header_abort_grpc
                .iter()
                .map(|c| c.trim().to_ascii_uppercase())
                .collect();
            spec.insert("abortGrpc".into(), json!(codes));
        }
        faults.push(("fromHeaders", Value::Object(spec)));
    }
    if let Some(status) = flags.abort {
        faults.push(("abort", json!({"status": status})));
    }
    if flags.abort_reset {
        faults.push(("abort", json!({"reset": true})));
    }
    if flags.replace_status.is_some() || flags.replace_body.is_some() {
        let mut r = Map::new();
        if let Some(status) = flags.replace_status {
            r.insert("status".into(), json!(status));
        }
        if let Some(body) = &flags.replace_body {
            r.insert("body".into(), json!(body));
        }
        faults.push(("replace", Value::Object(r)));
    }
    if !flags.set_headers.is_empty() || !flags.remove_headers.is_empty() {
        let mut set = Map::new();
        for pair in &flags.set_headers {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| CliError::HeaderFlag(pair.clone()))?;
            set.insert(k.trim().into(), json!(v));
        }
        let mut headers = Map::new();
        if !set.is_empty() {
            headers.insert("set".into(), Value::Object(set));
        }
        if !flags.remove_headers.is_empty() {
            headers.insert("remove".into(), json!(flags.remove_headers));
        }
        faults.push(("patch", json!({"headers": headers})));
    }
    if let Some(code) = &flags.grpc {
        faults.push(("abort", json!({"grpc": code.to_ascii_uppercase()})));
        matcher.insert("protocol".into(), json!("grpc"));
    }
    if let Some(labels) = &flags.partition_to {
        let mut selector = Map::new();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| CliError::Labels(labels.clone()))?;
            selector.insert(k.trim().into(), json!(v.trim()));
        }
        if selector.is_empty() {
            return Err(CliError::Labels(labels.clone()));
        }
        faults.push(("partition", json!({"mode": "reject"})));
        matcher.insert("to".into(), json!({"podSelector": selector}));
    }
    faults.extend(byte_faults(flags));
    if let Some(side) = &flags.side {
        side_of(&mut faults, side)?;
    } else if let [("delay", spec)] = faults.as_mut_slice()
        && !flags.response_statuses.is_empty()
    {
        // A delay decided on the response can only wait on the response.
        spec["side"] = json!("response");
    }
    if let Some(rcode) = &flags.dns_rcode {
        faults.push(("dns", json!({"rcode": rcode.to_ascii_uppercase()})));
    }
    if flags.dns_drop {
        faults.push(("hang", json!({})));
    }
    let dns = flags.dns_rcode.is_some()
        || flags.dns_drop
        || flags.dns_name.is_some()
        || !flags.dns_types.is_empty();
    if dns {
        // DNS queries are the pod's own: no direction (validation refuses
        // HTTP matchers and inbound on a DNS rule, naming the field).
        matcher.insert("protocol".into(), json!("dns"));
        let mut query = Map::new();
        if let Some(name) = &flags.dns_name {
            query.insert("name".into(), json!(name));
        }
        if !flags.dns_types.is_empty() {
            query.insert("types".into(), json!(flags.dns_types));
        }
        if !query.is_empty() {
            matcher.insert("dns".into(), Value::Object(query));
        }
    }
    let (fault, spec) = match faults.len() {
        1 => faults.remove(0),
        0 => return Err(CliError::NoFault),
        _ => return Err(CliError::ManyFaults),
    };
    let outbound = flags.host.is_some() || flags.sni.is_some() || flags.partition_to.is_some();
    let direction = match (&flags.direction, dns) {
        (Some(d), _) => Some(d.clone()),
        (None, true) => None,
        (None, false) => Some(if outbound { "outbound" } else { "inbound" }.into()),
    };
    if let Some(direction) = direction {
        matcher.insert("direction".into(), json!(direction));
    }
    if let Some(host) = &flags.host {
        matcher.insert("host".into(), json!(host));
    }
    if let Some(sni) = &flags.sni {
        matcher.insert("sni".into(), json!(sni));
    }
    if let Some(port) = flags.port {
        matcher.insert("port".into(), json!(port));
    }
    if let Some(path) = &flags.path {
        matcher.insert("path".into(), json!(path));
    }
    if !flags.response_statuses.is_empty() {
        let statuses: Vec<Value> = flags
            .response_statuses
            .iter()
            .map(|s| {
                s.trim()
                    .parse::<u16>()
                    .map_or_else(|_| json!(s.trim()), |n| json!(n))
            })
            .collect();
        matcher.insert("response".into(), json!({"status": statuses}));
    }
    if !flags.methods.is_empty() {
        let methods: Vec<String> = flags
            .methods
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        matcher.insert("methods".into(), json!(methods));
    }
    rule.insert("match".into(), Value::Object(matcher));
    rule.insert(fault.into(), spec);
    if let Some(p) = flags.percent {
        rule.insert("percent".into(), json!(p));
    }
    let mut doc = Map::new();
    if let Some(d) = &flags.for_ {
        doc.insert("duration".into(), json!(d));
    }
    if let Some(u) = &flags.until {
        doc.insert("until".into(), json!(u));
    }
    doc.insert("rules".into(), json!([Value::Object(rule)]));
    serde_yaml::to_string(&Value::Object(doc)).map_err(CliError::Yaml)
}

/// The first flag given that needs HTTP requests or responses, which a
/// TLS connection (`--sni`) hides: the proxy does not decrypt it.
fn http_only_flag(flags: &FaultFlags) -> Option<&'static str> {
    [
        ("--abort", flags.abort.is_some()),
        ("--grpc", flags.grpc.is_some()),
        ("--header-max-delay", flags.header_max_delay.is_some()),
        ("--header-abort", !flags.header_abort.is_empty()),
        ("--header-abort-grpc", !flags.header_abort_grpc.is_empty()),
        ("--replace-status", flags.replace_status.is_some()),
        ("--replace-body", flags.replace_body.is_some()),
        ("--set-header", !flags.set_headers.is_empty()),
        ("--remove-header", !flags.remove_headers.is_empty()),
        ("--path", flags.path.is_some()),
        ("--method", !flags.methods.is_empty()),
        ("--response-status", !flags.response_statuses.is_empty()),
    ]
    .into_iter()
    .find_map(|(flag, given)| given.then_some(flag))
}

/// The `delay` of `--delay-uniform`, `--delay-lognormal` or `--delay-pareto`.
fn delay_distribution(flags: &FaultFlags) -> Result<Option<Value>, CliError> {
    let (flag, text, fields): (&'static str, _, &[&str]) = match (
        &flags.delay_uniform,
        &flags.delay_lognormal,
        &flags.delay_pareto,
    ) {
        (Some(t), ..) => ("uniform", t, &["min", "max"]),
        (_, Some(t), _) => ("lognormal", t, &["median", "p99", "max"]),
        (.., Some(t)) => ("pareto", t, &["scale", "shape", "max"]),
        _ => return Ok(None),
    };
    let values: Vec<&str> = text.split(',').map(str::trim).collect();
    let optional_max = flag == "lognormal" && values.len() == fields.len() - 1;
    if values.len() != fields.len() && !optional_max {
        return Err(CliError::DelayValues {
            flag,
            expected: fields.join(","),
            got: text.clone(),
        });
    }
    let mut spec = Map::new();
    for (field, value) in fields.iter().zip(values) {
        // The shape is a number; the parser names the field if it is not.
        let value = match (*field, value.parse::<f64>()) {
            ("shape", Ok(n)) => json!(n),
            _ => json!(value),
        };
        spec.insert((*field).into(), value);
    }
    Ok(Some(json!({ flag: spec })))
}

/// The byte-stream faults the flags ask for (bandwidth, slicer,
/// limitData, slowClose), without their side.
fn byte_faults(flags: &FaultFlags) -> Vec<(&'static str, Value)> {
    let mut faults = Vec::new();
    if let Some(rate) = &flags.bandwidth {
        faults.push(("bandwidth", json!({"rate": rate})));
    }
    if let Some(size) = flags.slicer {
        let mut spec = Map::new();
        spec.insert("averageSize".into(), json!(size));
        if let Some(delay) = &flags.slice_delay {
            spec.insert("delay".into(), json!(delay));
        }
        faults.push(("slicer", Value::Object(spec)));
    }
    if let Some(bytes) = flags.limit_data {
        faults.push(("limitData", json!({"bytes": bytes})));
    }
    if let Some(delay) = &flags.slow_close {
        faults.push(("slowClose", json!({"delay": delay})));
    }
    faults
}

/// `--side`: the `side` of the one fault, or for bandwidth the rate of that
/// side alone. Validation judges the value (limitData has no `both`).
fn side_of(faults: &mut [(&'static str, Value)], side: &str) -> Result<(), CliError> {
    let [(fault, spec)] = faults else {
        return Ok(()); // none or several: reported as such
    };
    match *fault {
        "bandwidth" => {
            if side != "both"
                && let Some(rate) = spec.as_object_mut().and_then(|s| s.remove("rate"))
            {
                spec[side] = rate;
            }
        }
        "delay" | "slicer" | "limitData" | "slowClose" => spec["side"] = json!(side),
        _ => return Err(CliError::Side),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
