use super::*;
use serde_json::json;

fn strict(text: &str) -> Result<(), String> {
    if text.contains("bad") {
        Err(format!("rules[0]: abort.status: {text}"))
    } else {
        Ok(())
    }
}

fn deployment(annotation_in_template: &str) -> Value {
    json!({
        "kind": "Deployment",
        "metadata": {"name": "d", "annotations": {"other": "x"}},
        "spec": {"template": {"metadata": {"annotations": {FAULTS_ANNOTATION: annotation_in_template}}}},
    })
}

#[test]
fn denies_bad_template_annotation_naming_the_location() {
    let denial = validate(&deployment("bad"), None, strict).unwrap_err();
    assert_eq!(denial.location, "spec.template.metadata.annotations");
    assert_eq!(
        denial.to_string(),
        "invalid faultline.dev/faults annotation in spec.template.metadata.annotations: rules[0]: abort.status: bad"
    );
}

#[test]
fn checks_object_and_cronjob_paths() {
    let pod = json!({"metadata": {"annotations": {FAULTS_ANNOTATION: "bad"}}});
    assert_eq!(
        validate(&pod, None, strict).unwrap_err().location,
        "metadata.annotations"
    );
    let cron = json!({"spec": {"jobTemplate": {"spec": {"template": {"metadata": {"annotations": {FAULTS_ANNOTATION: "bad"}}}}}}});
    assert_eq!(
        validate(&cron, None, strict).unwrap_err().location,
        "spec.jobTemplate.spec.template.metadata.annotations"
    );
}

#[test]
fn allows_good_missing_and_unchanged() {
    assert_eq!(validate(&deployment("good"), None, strict), Ok(()));
    assert_eq!(validate(&json!({"metadata": {}}), None, strict), Ok(()));
    assert_eq!(
        validate(&deployment("bad"), Some(&deployment("bad")), strict),
        Ok(())
    );
    assert!(validate(&deployment("bad"), Some(&deployment("good")), strict).is_err());
}

/// The real parser, through `check_policy`: messages name rule and field.
mod policy {
    use super::*;
    use serde_json::json;

    #[test]
    fn real_policy_errors_name_rule_and_field() {
        let bad = "rules:\n- name: payments-down\n  match: {direction: outbound, port: 80}\n  abort: {status: 700}\n";
        let pod = json!({"metadata": {"annotations": {FAULTS_ANNOTATION: bad}}});
        let denial = validate(&pod, None, check_policy).unwrap_err().to_string();
        assert!(
            denial.contains("payments-down") && denial.contains("abort.status"),
            "{denial}"
        );
        let good = "rules:\n- name: slow\n  match: {direction: inbound}\n  delay: {fixed: 100ms}\n";
        let pod = json!({"metadata": {"annotations": {FAULTS_ANNOTATION: good}}});
        assert_eq!(validate(&pod, None, check_policy), Ok(()));
    }
}

/// The example policies shipped in `manifests/examples/policies/` stay valid
/// (and the one meant to be refused stays refused).
#[cfg(test)]
mod example_tests {
    use super::check_policy;

    #[test]
    fn example_policies_parse() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../manifests/examples/policies"
        );
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let result = check_policy(&text);
            if path.ends_with("invalid.yaml") {
                let error = result.unwrap_err();
                assert!(
                    error.contains("payments-down") && error.contains("abort.status"),
                    "{error}"
                );
            } else {
                assert_eq!(result, Ok(()), "{}", path.display());
            }
            seen += 1;
        }
        assert!(seen >= 4);
    }
}
