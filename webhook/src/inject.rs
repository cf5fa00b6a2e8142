//! Offline injection (`faultline-webhook inject -f FILE|-`), like
//! `istioctl kube-inject`: reads YAML (multi-document, `List`s), injects every
//! Pod and every pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet,
//! Job, CronJob batch/v1 and v1beta1) with the same [`mutate`] the webhook
//! uses, and leaves every other object untouched.
//!
//! A pod template has the same `metadata`/`spec` layout as a Pod, so the
//! patch computed for the template-as-Pod applies to the template in place.

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use crate::admission::{MutateError, mutate};
use crate::config::Config;

#[derive(Debug, Error)]
pub enum InjectError {
    #[error("failed to parse YAML document {doc}: {source}")]
    Yaml {
        doc: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("failed to read {what} in YAML document {doc}: {source}")]
    Pod {
        doc: usize,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to inject {what} in YAML document {doc}: {source}")]
    Mutate {
        doc: usize,
        what: String,
        #[source]
        source: MutateError,
    },
    #[error("failed to apply the patch to {what} in YAML document {doc}: {source}")]
    Patch {
        doc: usize,
        what: String,
        #[source]
        source: json_patch::PatchError,
    },
    #[error("failed to write YAML: {0}")]
    Write(#[source] serde_yaml::Error),
}

/// Summary for the user (stderr).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InjectReport {
    pub injected: Vec<String>,
    pub skipped: Vec<String>,
}

/// Inject every document of `input`; returns the YAML to print and what was done.
pub fn inject_yaml(input: &str, config: &Config) -> Result<(String, InjectReport), InjectError> {
    let mut report = InjectReport::default();
    let mut out = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let doc = i + 1;
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|source| InjectError::Yaml { doc, source })?;
        if value.is_null() {
            continue;
        }
        let mut json = serde_json::to_value(value).map_err(|source| InjectError::Pod {
            doc,
            what: "document".into(),
            source,
        })?;
        inject_object(&mut json, config, doc, &mut report)?;
        out.push(serde_yaml::to_string(&json).map_err(InjectError::Write)?);
    }
    Ok((out.join("---\n"), report))
}

/// Inject one object (recursing into `List` items).
pub fn inject_object(
    object: &mut Value,
    config: &Config,
    doc: usize,
    report: &mut InjectReport,
) -> Result<(), InjectError> {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_string();
    let what = format!("{kind}/{name}");
    let template_path = match kind.as_str() {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ if kind.ends_with("List") => {
            for item in object
                .get_mut("items")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                inject_object(item, config, doc, report)?;
            }
            None
        }
        _ => None,
    };
    let Some(path) = template_path else {
        return Ok(());
    };
    let Some(target) = object.pointer_mut(path) else {
        return Ok(());
    };
    inject_pod_like(target, config)
        .map_err(|e| e.into_error(doc, what.clone()))?
        .map_or_else(
            || report.injected.push(what.clone()),
            |reason| report.skipped.push(format!("{what}: {reason}")),
        );
    Ok(())
}

enum PodError {
    Read(serde_json::Error),
    Mutate(MutateError),
    Patch(json_patch::PatchError),
}

impl PodError {
    fn into_error(self, doc: usize, what: String) -> InjectError {
        match self {
            Self::Read(source) => InjectError::Pod { doc, what, source },
            Self::Mutate(source) => InjectError::Mutate { doc, what, source },
            Self::Patch(source) => InjectError::Patch { doc, what, source },
        }
    }
}

/// Inject a Pod or pod template in place; `Some(reason)` when skipped.
fn inject_pod_like(target: &mut Value, config: &Config) -> Result<Option<String>, PodError> {
    // Templates lack metadata sometimes; the patch needs the object to exist.
    if target.get("metadata").is_none_or(Value::is_null) {
        target["metadata"] = Value::Object(Default::default());
    }
    let pod: Pod = serde_json::from_value(target.clone()).map_err(PodError::Read)?;
    let mutation = mutate(&pod, config).map_err(PodError::Mutate)?;
    if let Some(reason) = mutation.skipped {
        return Ok(Some(reason.as_str().replace('_', " ")));
    }
    json_patch::patch(target, &mutation.patch).map_err(PodError::Patch)?;
    Ok(None)
}

#[cfg(test)]
mod tests;
