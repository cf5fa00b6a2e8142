//! The objects `mutate` adds to a pod: the `faultline-init` container, the
//! `faultline-proxy` sidecar and their volumes. Built as JSON in the API's own
//! field names so they read like the YAML a user would see in `kubectl get -o yaml`
//! (a golden-file test round-trips them through the typed `Pod` to catch typos).

use serde_json::{Value, json};

use faultline_policy::contract::{InboundPorts, PROXY_BINARY, env, init_flag, join, wait_flag};

use super::overrides::Overrides;
use crate::config::{
    ADMIN_PORT, Config, DNS_CAPTURE_PORT, INBOUND_CAPTURE_PORT, INIT_CONTAINER_NAME,
    OUTBOUND_CAPTURE_PORT, PROXY_CONTAINER_NAME, PROXY_GID, PROXY_UID, TOKEN_AUDIENCE,
    TOKEN_EXPIRATION_SECONDS, TOKEN_FILE, TOKEN_MOUNT_PATH, TOKEN_VOLUME_NAME, XTABLES_VOLUME_NAME,
};

/// `faultline-proxy init ...` with exactly the flags of the capture contract.
pub fn init_command(inbound: &InboundPorts, overrides: &Overrides) -> Vec<String> {
    let mut cmd = vec![PROXY_BINARY.to_string(), "init".to_string()];
    let mut flag = |name: &str, value: String| {
        cmd.push(format!("--{name}"));
        cmd.push(value);
    };
    flag(
        init_flag::INBOUND_CAPTURE_PORT,
        INBOUND_CAPTURE_PORT.to_string(),
    );
    flag(
        init_flag::OUTBOUND_CAPTURE_PORT,
        OUTBOUND_CAPTURE_PORT.to_string(),
    );
    flag(init_flag::PROXY_UID, PROXY_UID.to_string());
    flag(init_flag::PROXY_GID, PROXY_GID.to_string());
    flag(init_flag::ADMIN_PORT, ADMIN_PORT.to_string());
    flag(init_flag::INCLUDE_INBOUND_PORTS, inbound.to_string());
    if !overrides.exclude_inbound_ports.is_empty() {
        flag(
            init_flag::EXCLUDE_INBOUND_PORTS,
            join(&overrides.exclude_inbound_ports),
        );
    }
    if !overrides.exclude_outbound_ports.is_empty() {
        flag(
            init_flag::EXCLUDE_OUTBOUND_PORTS,
            join(&overrides.exclude_outbound_ports),
        );
    }
    if !overrides.exclude_outbound_cidrs.is_empty() {
        flag(
            init_flag::EXCLUDE_OUTBOUND_CIDRS,
            overrides.exclude_outbound_cidrs.join(","),
        );
    }
    if overrides.capture_dns {
        flag(init_flag::DNS_CAPTURE_PORT, DNS_CAPTURE_PORT.to_string());
        cmd.push(format!("--{}", init_flag::CAPTURE_DNS));
    }
    cmd
}

pub fn init_container(config: &Config, command: Vec<String>) -> Value {
    let mut c = json!({
        "name": INIT_CONTAINER_NAME,
        "image": config.proxy_image,
        "command": command,
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"memory": "64Mi"},
        },
        // Root is needed to write netfilter rules; NET_ADMIN + NET_RAW are the
        // only capabilities, and nothing else about it is privileged.
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
        "volumeMounts": [{"name": XTABLES_VOLUME_NAME, "mountPath": "/run"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    if let Some(policy) = &config.image_pull_policy {
        c["imagePullPolicy"] = json!(policy);
    }
    c
}

/// The proxy sidecar. `native` makes it an init container that keeps running
/// (`restartPolicy: Always`); otherwise a postStart hook holds the app
/// containers back until the proxy is ready.
pub fn proxy_container(config: &Config, overrides: &Overrides, native: bool) -> Value {
    let field =
        |path: &str| json!({"valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}});
    let mut env = vec![
        env_from(env::POD_NAME, field("metadata.name")),
        env_from(env::POD_NAMESPACE, field("metadata.namespace")),
        env_from(env::POD_IP, field("status.podIP")),
        env_from(env::SERVICE_ACCOUNT, field("spec.serviceAccountName")),
        env_value(env::ADMIN_ADDR, &format!("0.0.0.0:{ADMIN_PORT}")),
        env_value(
            env::INBOUND_ADDR,
            &format!("0.0.0.0:{INBOUND_CAPTURE_PORT}"),
        ),
        env_value(
            env::OUTBOUND_ADDR,
            &format!("0.0.0.0:{OUTBOUND_CAPTURE_PORT}"),
        ),
        env_value(env::CONTROLLER_URL, &config.controller_url),
        env_value(env::TOKEN_FILE, TOKEN_FILE),
        env_value(env::LOG_FORMAT, "json"),
    ];
    if overrides.capture_dns {
        // Loopback: the kernel redirects the pod's own packets there.
        env.push(env_value(
            env::DNS_ADDR,
            &format!("127.0.0.1:{DNS_CAPTURE_PORT}"),
        ));
    }
    if let Some(pem) = &config.ca_pem {
        env.push(env_value(env::CA_PEM, pem));
    }
    if let Some(filter) = &config.proxy_log {
        env.push(env_value(env::LOG, filter));
    }
    let probe = |path: &str, period: u32, failures: u32| {
        json!({
            "httpGet": {"path": path, "port": ADMIN_PORT, "scheme": "HTTP"},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": 1,
        })
    };
    let mut c = json!({
        "name": PROXY_CONTAINER_NAME,
        "image": config.proxy_image,
        "command": [PROXY_BINARY, "run"],
        "ports": [{"name": "faultline-admin", "containerPort": ADMIN_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": resources(config, overrides),
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_GID,
            "runAsNonRoot": true,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
        // The startup probe gates liveness during start and, for a native
        // sidecar, keeps the following containers waiting until it passes.
        "startupProbe": probe("/readyz", 1, 120),
        "readinessProbe": probe("/readyz", 2, 3),
        "livenessProbe": probe("/healthz", 10, 3),
        "volumeMounts": [{"name": TOKEN_VOLUME_NAME, "mountPath": TOKEN_MOUNT_PATH, "readOnly": true}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    if let Some(policy) = &config.image_pull_policy {
        c["imagePullPolicy"] = json!(policy);
    }
    if native {
        c["restartPolicy"] = json!("Always");
    } else {
        // The kubelet starts containers in order and runs each postStart hook
        // to completion first, so the app starts only once the proxy is ready.
        c["lifecycle"] = json!({"postStart": {"exec": {"command": [
            PROXY_BINARY, "wait-ready",
            format!("--{}", wait_flag::ADMIN_PORT), ADMIN_PORT.to_string(),
            format!("--{}", wait_flag::TIMEOUT_SECONDS), config.wait_ready_timeout_seconds.to_string(),
        ]}}});
    }
    c
}

fn env_value(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

fn env_from(name: &str, source: Value) -> Value {
    let mut v = source;
    v["name"] = json!(name);
    v
}

/// Requests/limits from the config; a pod annotation replaces the request
/// and, when the config sets a limit for that resource, the limit too (so a
/// request above the default limit still yields a valid pod).
fn resources(config: &Config, overrides: &Overrides) -> Value {
    let r = &config.resources;
    let pick = |over: &Option<String>, base: &Option<String>| over.clone().or_else(|| base.clone());
    let cpu_limit = r
        .cpu_limit
        .as_ref()
        .map(|l| overrides.proxy_cpu.clone().unwrap_or(l.clone()));
    let memory_limit = r
        .memory_limit
        .as_ref()
        .map(|l| overrides.proxy_memory.clone().unwrap_or(l.clone()));
    let mut requests = serde_json::Map::new();
    let mut limits = serde_json::Map::new();
    let put = |map: &mut serde_json::Map<String, Value>, key: &str, v: Option<String>| {
        if let Some(v) = v {
            map.insert(key.into(), json!(v));
        }
    };
    put(
        &mut requests,
        "cpu",
        pick(&overrides.proxy_cpu, &r.cpu_request),
    );
    put(
        &mut requests,
        "memory",
        pick(&overrides.proxy_memory, &r.memory_request),
    );
    put(&mut limits, "cpu", cpu_limit);
    put(&mut limits, "memory", memory_limit);
    let mut out = serde_json::Map::new();
    if !requests.is_empty() {
        out.insert("requests".into(), Value::Object(requests));
    }
    if !limits.is_empty() {
        out.insert("limits".into(), Value::Object(limits));
    }
    Value::Object(out)
}

/// The projected token (audience `faultline`) the proxy presents to the
/// controller, and the init container's scratch `/run`.
/// Env var: the app ports the proxy checks for rewritten `tcpSocket`
/// probes (`/probe/tcp/<port>` on the admin port); others are refused.
pub const PROBE_PORTS_ENV: &str = env::PROBE_PORTS;

/// Seconds the kubelet waits after SIGTERM when the pod does not say.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;
/// The proxy's own drain after the wind-down (`FAULTLINE_DRAIN_SECONDS`
/// default), plus a second of margin before the kubelet's SIGKILL.
const DRAIN_AND_MARGIN_SECONDS: i64 = 6;

/// How the proxy winds down on SIGTERM: it keeps carrying the app's
/// traffic until the app's `ports` all refuse connections (or the
/// controller reports the app's containers have exited), at most until the
/// pod's grace period, less its own drain, is over.
pub fn set_wind_down(proxy: &mut Value, ports: &[u16], grace_seconds: Option<i64>) {
    let grace = grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    let wind_down = (grace - DRAIN_AND_MARGIN_SECONDS).max(0);
    let Some(env) = proxy.get_mut("env").and_then(Value::as_array_mut) else {
        return;
    };
    env.push(env_value(env::WIND_DOWN_SECONDS, &wind_down.to_string()));
    if !ports.is_empty() {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        env.push(env_value(env::APP_PORTS, &list.join(",")));
    }
}

/// Lets the proxy answer probes for `ports` (none: the variable is absent).
pub fn allow_probe_ports(proxy: &mut Value, ports: &[u16]) {
    if ports.is_empty() {
        return;
    }
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    if let Some(env) = proxy.get_mut("env").and_then(Value::as_array_mut) {
        env.push(env_value(PROBE_PORTS_ENV, &list.join(",")));
    }
}

pub fn volumes() -> Vec<Value> {
    vec![
        json!({
            "name": TOKEN_VOLUME_NAME,
            "projected": {"sources": [{"serviceAccountToken": {
                "audience": TOKEN_AUDIENCE,
                "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                "path": "token",
            }}]},
        }),
        json!({"name": XTABLES_VOLUME_NAME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}),
    ]
}
