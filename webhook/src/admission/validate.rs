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
mod tests;
