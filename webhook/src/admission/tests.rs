//! Golden-file tests of `mutate`: each `tests/golden/mutate/NAME.input.yaml`
//! pod is mutated, the JSON patch applied with the json-patch crate, and the
//! result (pod, warnings, skip reason) compared with `NAME.golden.yaml`.
//! `UPDATE_GOLDEN=1 cargo test -p faultline-webhook --lib admission::` rewrites
//! the golden files; review the diff by eye before committing.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::*;

const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

/// (fixture, server supports native sidecars)
const FIXTURES: &[(&str, bool)] = &[
    ("plain", false),
    ("bare", false),
    ("multi-container", false),
    ("init-containers", false),
    ("native-init-containers", true),
    ("named-ports", false),
    ("existing-volumes", false),
    ("host-network", false),
    ("opted-out", false),
    ("already-injected", false),
    ("native-override-classic", true),
    ("capture-dns", true),
];

fn config(native: bool) -> Config {
    Config {
        native_sidecars: native,
        native_supported: native,
        ca_pem: Some(CA_PEM.into()),
        version: "0.0.0-test".into(),
        ..Config::default()
    }
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/mutate")
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(golden_dir().join(format!("{name}.input.yaml"))).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Mutate `pod` and apply the patch the way the API server would.
fn apply(pod: &Value, native: bool) -> (Value, Mutation) {
    let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
    let mutation = mutate(&typed, &config(native)).unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &mutation.patch).unwrap();
    (patched, mutation)
}

#[test]
fn golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for (name, native) in FIXTURES {
        let (patched, mutation) = apply(&load(name), *native);
        let actual = json!({
            "skipped": mutation.skipped.map(SkipReason::as_str),
            "warnings": mutation.warnings,
            "pod": patched,
        });
        let path = golden_dir().join(format!("{name}.golden.yaml"));
        if update {
            std::fs::write(&path, serde_yaml::to_string(&actual).unwrap()).unwrap();
            continue;
        }
        let expected: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if expected != actual {
            failures.push(format!(
                "{name}: got\n{}",
                serde_yaml::to_string(&actual).unwrap()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatch (UPDATE_GOLDEN=1 to rewrite):\n{}",
        failures.join("\n")
    );
}

#[test]
fn injected_pods_use_only_real_pod_fields() {
    // Typed round trip drops unknown fields: a typo in a field name would show here.
    for (name, native) in FIXTURES {
        let (patched, _) = apply(&load(name), *native);
        let typed: Pod = serde_json::from_value(patched.clone()).unwrap();
        let mut round_trip = serde_json::to_value(&typed).unwrap();
        // The fixtures carry apiVersion/kind; the typed Pod re-adds them the same way.
        round_trip
            .as_object_mut()
            .unwrap()
            .retain(|k, _| patched.get(k).is_some());
        assert_eq!(round_trip, patched, "{name}");
    }
}

#[test]
fn reinvocation_is_idempotent() {
    for (name, native) in FIXTURES {
        let (patched, _) = apply(&load(name), *native);
        let (again, mutation) = apply(&patched, *native);
        assert_eq!(again, patched, "{name}");
        assert!(mutation.patch.0.is_empty(), "{name}");
        // The API server's reinvocation after our own patch passes silently.
        if patched["metadata"]["annotations"]["faultline.dev/status"].is_string()
            && *name != "already-injected"
        {
            assert!(
                mutation.warnings.is_empty(),
                "{name}: {:?}",
                mutation.warnings
            );
        }
    }
}

#[test]
fn something_that_only_looks_injected_still_warns() {
    // Copied from an injected pod but incomplete (the fixture lists an init container it lacks).
    let (_, copied) = apply(&load("already-injected"), false);
    assert_eq!(copied.skipped, Some(SkipReason::AlreadyInjected));
    assert!(!copied.warnings.is_empty(), "{:?}", copied.warnings);
}

/// The pod keeps its own objects, is not injected, and the warning names
/// what is in the way.
fn assert_conflict(pod: &Value, names: &[&str]) {
    let (patched, mutation) = apply(pod, false);
    assert_eq!(
        mutation.skipped,
        Some(SkipReason::NameConflict),
        "{names:?}"
    );
    assert_eq!(&patched, pod);
    assert_eq!(mutation.warnings.len(), 1);
    for name in names {
        assert!(
            mutation.warnings[0].contains(name),
            "{name}: {:?}",
            mutation.warnings
        );
    }
}

#[test]
fn an_app_container_named_like_ours_is_a_conflict_not_an_injection() {
    for (list, name) in [
        ("containers", "faultline-init"),
        ("containers", "faultline-proxy"),
        ("initContainers", "faultline-init"),
        ("initContainers", "faultline-proxy"),
    ] {
        let mut pod = load("plain");
        pod["spec"][list] = json!([{"name": name, "image": "example/app:1"}]);
        if list == "initContainers" {
            pod["spec"]["containers"] = json!([{"name": "app", "image": "example/app:1"}]);
        }
        assert_conflict(&pod, &[&format!("container \"{name}\"")]);
    }
}

#[test]
fn a_volume_named_like_ours_is_a_conflict() {
    for name in crate::config::INJECTED_VOLUMES {
        let mut pod = load("plain");
        pod["spec"]["volumes"] = json!([{"name": name, "emptyDir": {}}]);
        assert_conflict(&pod, &[&format!("volume \"{name}\"")]);
    }
    let mut pod = load("plain");
    pod["spec"]["volumes"] = json!([{"name": "faultline-token", "emptyDir": {}}]);
    pod["spec"]["containers"][0]["name"] = json!("faultline-proxy");
    assert_conflict(
        &pod,
        &[
            "container \"faultline-proxy\"",
            "volume \"faultline-token\"",
        ],
    );
}

#[test]
fn a_complete_copy_without_the_status_annotation_is_injected_already() {
    let (injected, _) = apply(&load("plain"), false);
    let mut copy = injected.clone();
    copy["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("faultline.dev/status");
    let (again, mutation) = apply(&copy, false);
    assert_eq!(mutation.skipped, Some(SkipReason::AlreadyInjected));
    assert_eq!(again, copy);
}

#[test]
fn a_status_annotation_that_is_not_ours_does_not_stop_injection() {
    let mut pod = load("plain");
    pod["metadata"]["annotations"] = json!({"faultline.dev/status": "hand-written"});
    let (patched, mutation) = apply(&pod, false);
    assert_eq!(mutation.skipped, None);
    let status: crate::config::InjectionStatus = serde_json::from_str(
        patched["metadata"]["annotations"]["faultline.dev/status"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status.containers, ["faultline-init", "faultline-proxy"]);
}

#[test]
fn sidecar_layout_classic_vs_native() {
    let names = |v: &Value, list: &str| -> Vec<String> {
        v["spec"][list]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (classic, m) = apply(&load("init-containers"), false);
    assert_eq!(m.skipped, None);
    assert_eq!(
        names(&classic, "initContainers"),
        ["migrate", "faultline-init"]
    );
    assert_eq!(names(&classic, "containers"), ["faultline-proxy", "app"]);
    assert!(classic["spec"]["containers"][0]["lifecycle"]["postStart"].is_object());
    assert!(
        classic["spec"]["containers"][0]
            .get("restartPolicy")
            .is_none()
    );

    let (native, _) = apply(&load("init-containers"), true);
    assert_eq!(
        names(&native, "initContainers"),
        ["faultline-init", "faultline-proxy", "migrate"]
    );
    assert_eq!(names(&native, "containers"), ["app"]);
    assert_eq!(
        native["spec"]["initContainers"][1]["restartPolicy"],
        "Always"
    );
    assert!(
        native["spec"]["initContainers"][1]
            .get("lifecycle")
            .is_none()
    );
}

#[test]
fn annotation_overrides_server_default() {
    let (pod, _) = apply(&load("native-override-classic"), true);
    assert_eq!(pod["spec"]["containers"][0]["name"], "faultline-proxy");
    // Classic by default on a server that runs native sidecars.
    let typed: Pod = serde_json::from_value(load("existing-volumes")).unwrap();
    let classic_default = Config {
        native_supported: true,
        ..config(false)
    };
    let mutation = mutate(&typed, &classic_default).unwrap();
    assert!(mutation.warnings.is_empty(), "{:?}", mutation.warnings);
    assert!(mutation.fallbacks.is_empty());
    let mut pod = load("existing-volumes");
    json_patch::patch(&mut pod, &mutation.patch).unwrap();
    assert_eq!(pod["spec"]["initContainers"][1]["restartPolicy"], "Always");
}

#[test]
fn native_asked_of_a_server_before_1_29_gets_classic_and_a_warning() {
    let (pod, mutation) = apply(&load("existing-volumes"), false);
    assert_eq!(mutation.skipped, None);
    assert_eq!(mutation.fallbacks, [Fallback::NativeUnsupported]);
    assert_eq!(mutation.warnings.len(), 1);
    assert!(
        mutation.warnings[0].contains("faultline.dev/native-sidecar")
            && mutation.warnings[0].contains("1.29"),
        "{:?}",
        mutation.warnings
    );
    assert_eq!(pod["spec"]["containers"][0]["name"], "faultline-proxy");
    assert!(
        pod["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c.get("restartPolicy").is_none())
    );
    let status = pod["metadata"]["annotations"]["faultline.dev/status"]
        .as_str()
        .unwrap();
    assert!(status.contains("\"nativeSidecar\":false"), "{status}");
}

#[test]
fn resource_overrides_out_of_bounds_get_the_defaults_and_a_warning() {
    let mut pod = load("plain");
    pod["metadata"]["annotations"] = json!({
        "faultline.dev/proxy-memory": "1",
        "faultline.dev/proxy-cpu": "1000",
    });
    let (patched, mutation) = apply(&pod, false);
    assert_eq!(mutation.skipped, None);
    assert_eq!(
        mutation.fallbacks,
        [
            Fallback::ProxyCpuOutOfBounds,
            Fallback::ProxyMemoryOutOfBounds
        ]
    );
    let warnings = mutation.warnings.join("\n");
    assert!(
        warnings.contains("faultline.dev/proxy-memory=\"1\"") && warnings.contains("minimum 16Mi"),
        "{warnings}"
    );
    assert!(
        warnings.contains("faultline.dev/proxy-cpu=\"1000\"") && warnings.contains("maximum 8"),
        "{warnings}"
    );
    let proxy = patched["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "faultline-proxy")
        .unwrap();
    let defaults = crate::config::ProxyResources::default();
    assert_eq!(
        proxy["resources"],
        json!({
            "requests": {"cpu": defaults.cpu_request, "memory": defaults.memory_request},
            "limits": {"memory": defaults.memory_limit},
        })
    );
}

#[test]
fn init_command_carries_ports_and_exclusions() {
    let (pod, _) = apply(&load("named-ports"), false);
    let init = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "faultline-init")
        .unwrap();
    let command: Vec<&str> = init["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        command.join(" "),
        "faultline-proxy init --inbound-capture-port 15406 --outbound-capture-port 15401 \
         --proxy-uid 15400 --proxy-gid 15400 --admin-port 15400 --include-inbound-ports 8080 \
         --exclude-inbound-ports 9000-9010,9102 --exclude-outbound-ports 5432 \
         --exclude-outbound-cidrs 169.254.169.254/32,10.96.0.0/12"
    );
    let (bare, _) = apply(&load("bare"), false);
    let cmd = bare["spec"]["initContainers"][0]["command"]
        .as_array()
        .unwrap();
    let at = cmd
        .iter()
        .position(|v| v == "--include-inbound-ports")
        .unwrap();
    assert_eq!(cmd[at + 1], "*");
}

#[test]
fn dns_is_captured_only_where_the_pod_asks() {
    let init_command = |pod: &Value| -> String {
        pod["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "faultline-init")
            .unwrap()["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let dns_env = |pod: &Value| -> Option<String> {
        let containers = [&pod["spec"]["initContainers"], &pod["spec"]["containers"]];
        containers
            .iter()
            .filter_map(|list| list.as_array())
            .flatten()
            .filter(|c| c["name"] == "faultline-proxy")
            .flat_map(|c| c["env"].as_array().unwrap().iter())
            .find(|e| e["name"] == "FAULTLINE_DNS_ADDR")
            .map(|e| e["value"].as_str().unwrap().to_owned())
    };
    let (with, _) = apply(&load("capture-dns"), true);
    assert!(
        init_command(&with).ends_with("--dns-capture-port 15402 --capture-dns"),
        "{}",
        init_command(&with)
    );
    assert_eq!(dns_env(&with).as_deref(), Some("127.0.0.1:15402"));
    let (without, _) = apply(&load("plain"), true);
    assert!(
        !init_command(&without).contains("dns"),
        "{}",
        init_command(&without)
    );
    assert_eq!(dns_env(&without), None);
}

#[test]
fn patch_paths_are_escaped() {
    let typed: Pod = serde_json::from_value(load("plain")).unwrap();
    let patch = serde_json::to_string(&mutate(&typed, &config(false)).unwrap().patch).unwrap();
    assert!(
        patch.contains("/metadata/labels/faultline.dev~1injected"),
        "{patch}"
    );
    assert!(
        patch.contains("/metadata/annotations/faultline.dev~1status"),
        "{patch}"
    );
}

#[test]
fn security_contexts() {
    let (pod, _) = apply(&load("plain"), false);
    let proxy = &pod["spec"]["containers"][0]["securityContext"];
    assert_eq!(proxy["runAsUser"], 15400);
    assert_eq!(proxy["runAsGroup"], 15400);
    assert_eq!(proxy["runAsNonRoot"], true);
    assert_eq!(proxy["readOnlyRootFilesystem"], true);
    assert_eq!(proxy["allowPrivilegeEscalation"], false);
    assert_eq!(proxy["capabilities"], json!({"drop": ["ALL"]}));
    let init = &pod["spec"]["initContainers"][0]["securityContext"];
    assert_eq!(
        init["capabilities"],
        json!({"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]})
    );
    assert_eq!(init["runAsUser"], 0);
    assert_eq!(init["privileged"], false);
    assert_eq!(pod["spec"]["securityContext"]["fsGroup"], 15400);
}

#[test]
fn bad_override_is_refused_with_the_annotation_name() {
    let mut pod = load("plain");
    pod["metadata"]["annotations"]["faultline.dev/exclude-inbound-ports"] = json!("http");
    let typed: Pod = serde_json::from_value(pod).unwrap();
    let error = mutate(&typed, &config(false)).unwrap_err().to_string();
    assert!(
        error.contains("faultline.dev/exclude-inbound-ports") && error.contains("\"http\""),
        "{error}"
    );
}

#[test]
fn pod_without_spec_is_an_error() {
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    assert!(matches!(
        mutate(&pod, &config(false)),
        Err(MutateError::MissingSpec)
    ));
}

#[test]
fn a_run_to_completion_pod_is_injected_without_warnings() {
    // Classic layout: the controller finishes the proxy when the app exits.
    let mut pod = load("plain");
    pod["spec"]["restartPolicy"] = json!("Never");
    let (_, classic) = apply(&pod, false);
    assert!(classic.warnings.is_empty(), "{:?}", classic.warnings);
    let (_, native) = apply(&pod, true);
    assert!(native.warnings.is_empty(), "{:?}", native.warnings);
}

#[test]
fn tcp_socket_probes_on_captured_ports_check_the_app_through_the_admin_port() {
    let mut pod = load("plain");
    pod["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080, "name": "http"}]);
    pod["spec"]["containers"][0]["livenessProbe"] =
        json!({"tcpSocket": {"port": "http"}, "periodSeconds": 3});
    for native in [false, true] {
        let (patched, mutation) = apply(&pod, native);
        let app = patched["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] != "faultline-proxy")
            .unwrap()
            .clone();
        assert_eq!(
            app["livenessProbe"],
            json!({"httpGet": {"path": "/probe/tcp/8080", "port": 15400, "scheme": "HTTP"}, "periodSeconds": 3}),
            "native={native}: {:?}",
            mutation.patch
        );
        let list = if native {
            "initContainers"
        } else {
            "containers"
        };
        let proxy = patched["spec"][list]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "faultline-proxy")
            .unwrap()
            .clone();
        let env = proxy["env"].as_array().unwrap();
        assert!(
            env.contains(&json!({"name": "FAULTLINE_PROBE_PORTS", "value": "8080"})),
            "{env:?}"
        );
    }
}
