use serde_json::{Value, json};

use super::*;

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .collect()
}

fn container_names(template: &Value) -> Vec<String> {
    template["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().into())
        .collect()
}

const POD_SPEC: &str =
    "spec: {containers: [{name: app, image: app:1, ports: [{containerPort: 8080}]}]}";

#[test]
fn injects_every_workload_kind_through_its_template() {
    let t = |indent: &str| POD_SPEC.replace("spec:", &format!("{indent}spec:"));
    let input = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\n{POD_SPEC}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec:\n  template:\n{}\n---\n\
         apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: s}}\nspec:\n  template:\n    metadata: {{labels: {{a: b}}}}\n{}\n---\n\
         apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: ds}}\nspec:\n  template:\n{}\n---\n\
         apiVersion: batch/v1\nkind: Job\nmetadata: {{name: j}}\nspec:\n  template:\n{}\n---\n\
         apiVersion: batch/v1beta1\nkind: CronJob\nmetadata: {{name: c}}\nspec:\n  jobTemplate:\n    spec:\n      template:\n{}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: svc}}\nspec: {{ports: [{{port: 80}}]}}\n",
        t("    "),
        t("    "),
        t("    "),
        t("    "),
        t("        "),
    );
    let (out, report) = inject_yaml(&input, &Config::default()).unwrap();
    let out = docs(&out);
    assert_eq!(out.len(), 7);
    assert_eq!(container_names(&out[0]), ["faultline-proxy", "app"]);
    for d in &out[1..5] {
        assert_eq!(
            container_names(&d["spec"]["template"]),
            ["faultline-proxy", "app"],
            "{d}"
        );
        assert_eq!(
            d["spec"]["template"]["metadata"]["labels"]["faultline.dev/injected"],
            "true"
        );
    }
    assert_eq!(out[2]["spec"]["template"]["metadata"]["labels"]["a"], "b");
    assert_eq!(
        container_names(&out[5]["spec"]["jobTemplate"]["spec"]["template"]),
        ["faultline-proxy", "app"]
    );
    assert_eq!(
        out[6],
        docs(&input)[6],
        "non-workloads pass through unchanged"
    );
    assert_eq!(
        report.injected,
        [
            "Pod/p",
            "Deployment/d",
            "StatefulSet/s",
            "DaemonSet/ds",
            "Job/j",
            "CronJob/c"
        ]
    );
}

#[test]
fn lists_and_idempotence() {
    let input = format!(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {{name: a}}\n  {POD_SPEC}\n"
    );
    let (once, report) = inject_yaml(&input, &Config::default()).unwrap();
    assert_eq!(report.injected, ["Pod/a"]);
    assert_eq!(
        container_names(&docs(&once)[0]["items"][0]),
        ["faultline-proxy", "app"]
    );
    let (twice, report) = inject_yaml(&once, &Config::default()).unwrap();
    assert_eq!(docs(&twice), docs(&once));
    assert_eq!(report.skipped, ["Pod/a: already injected"]);
}

#[test]
fn native_sidecars_when_configured() {
    let input = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\n{POD_SPEC}\n");
    let config = Config {
        native_sidecars: true,
        ..Config::default()
    };
    let (out, _) = inject_yaml(&input, &config).unwrap();
    let pod = &docs(&out)[0];
    assert_eq!(container_names(pod), ["app"]);
    assert_eq!(
        pod["spec"]["initContainers"][1],
        json!(pod["spec"]["initContainers"][1])
    );
    assert_eq!(pod["spec"]["initContainers"][1]["restartPolicy"], "Always");
}

#[test]
fn errors_name_the_document_and_object() {
    let input = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\n  annotations: {faultline.dev/proxy-cpu: lots}\nspec: {containers: [{name: a}]}\n";
    let error = inject_yaml(input, &Config::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("document 2") && error.contains("Pod/bad"),
        "{error}"
    );
    let error = inject_yaml("a: [", &Config::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("failed to parse YAML document 1"),
        "{error}"
    );
}
