//! `validate`: refuse objects whose `faultline.dev/faults` annotation does
//! not parse, with the policy module's message (it names rule and field).
//!
//! The annotation is looked for on the object itself and on every pod
//! template it carries (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job:
//! `spec.template`; CronJob: `spec.jobTemplate` and its pod template). On
//! UPDATE only values that changed are checked, so a policy stored before a
//! stricter release never blocks unrelated edits such as scaling.

use serde_json::Value;

use crate::config::FAULTS_ANNOTATION;

/// Where fault annotations can live, as JSON paths of annotation maps.
const ANNOTATION_PATHS: &[&[&str]] = &[
    &["metadata", "annotations"],
    &["spec", "template", "metadata", "annotations"],
    &["spec", "jobTemplate", "metadata", "annotations"],
    &[
        "spec",
        "jobTemplate",
        "spec",
        "template",
        "metadata",
        "annotations",
    ],
];

/// Why an object is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// Dotted path of the annotation map, e.g. `spec.template.metadata.annotations`.
    pub location: String,
    /// The policy parser's message.
    pub reason: String,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid {FAULTS_ANNOTATION} annotation in {}: {}",
            self.location, self.reason
        )
    }
}

/// Check every fault annotation of `object` (and skip unchanged ones on UPDATE).
pub fn validate(
    object: &Value,
    old_object: Option<&Value>,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<(), Denial> {
    for path in ANNOTATION_PATHS {
        let Some(text) = faults_at(object, path) else {
            continue;
        };
        if old_object.and_then(|old| faults_at(old, path)) == Some(text) {
            continue;
        }
        check(text).map_err(|reason| Denial {
            location: path.join("."),
            reason,
        })?;
    }
    Ok(())
}

fn faults_at<'a>(object: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(object, |v, key| v.get(key))?
        .get(FAULTS_ANNOTATION)?
        .as_str()
}

/// The policy check used by the server: the fault language's own parser.
pub fn check_policy(text: &str) -> Result<(), String> {
    faultline_policy::parse(text)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
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
}

/// The real parser, through `check_policy`: messages name rule and field.
#[cfg(test)]
mod policy_tests {
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
