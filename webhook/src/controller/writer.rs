//! The leader's writes: the seen-at annotation, the conditional removal of
//! an expired policy, and Events: `FaultsApplied`, `FaultsRecovered` and
//! `FaultsInvalid` on the object that carries the annotation, `NotInjected`
//! on a pod that runs without the proxy it should have.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use serde_json::json;

use super::objects::{FAULTS_ANNOTATION, Kind, ObjKey, SEEN_AT_ANNOTATION};
use super::state::Action;

/// Name the controller reports Events as.
pub const REPORTER: &str = "faultline-controller";
/// Event reasons (the contract with users' alerting).
pub const REASON_APPLIED: &str = "FaultsApplied";
pub const REASON_RECOVERED: &str = "FaultsRecovered";
pub const REASON_INVALID: &str = "FaultsInvalid";
pub use super::lifecycle::REASON_NOT_INJECTED;

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("failed to patch {key}")]
    Patch {
        key: ObjKey,
        #[source]
        source: kube::Error,
    },
    #[error("failed to record an Event on {key}")]
    Event {
        key: ObjKey,
        #[source]
        source: kube::Error,
    },
}

/// Performs [`Action`]s against the API server.
#[derive(Clone)]
pub struct Writer {
    client: Client,
    recorder: std::sync::Arc<Recorder>,
}

/// Extra facts an action's Event mentions.
#[derive(Clone, Debug, Default)]
pub struct ActionContext {
    pub uid: String,
    pub pods: usize,
    pub has_seen_at: bool,
    pub expires: Option<jiff::Timestamp>,
}

impl Writer {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: REPORTER.into(),
            instance,
        };
        Self {
            recorder: std::sync::Arc::new(Recorder::new(client.clone(), reporter)),
            client,
        }
    }

    /// Perform one action.
    pub async fn perform(&self, action: &Action, ctx: &ActionContext) -> Result<(), WriteError> {
        match action {
            Action::RecordSeen {
                key,
                value,
                version,
            } => {
                let patch = json!({"metadata": {"annotations": {SEEN_AT_ANNOTATION: value}}});
                self.patch(key, &Patch::Merge(patch)).await?;
                let expires = ctx
                    .expires
                    .map(|t| format!("; expires at {t}"))
                    .unwrap_or_default();
                let note = format!(
                    "fault policy {version} applied to {} pod(s){expires}",
                    ctx.pods
                );
                self.event(
                    key,
                    &ctx.uid,
                    EventType::Normal,
                    REASON_APPLIED,
                    "Apply",
                    note,
                )
                .await
            }
            Action::Expire { key, text, version } => {
                let patch = expire_patch(text, ctx.has_seen_at);
                match self.patch(key, &Patch::Json::<()>(patch)).await {
                    Ok(()) => {}
                    // 422: the `test` op failed (the annotation changed since
                    // we decided); the next reconcile sees the new text.
                    Err(WriteError::Patch {
                        source: kube::Error::Api(s),
                        ..
                    }) if s.code == 422 => {
                        tracing::info!(%key, "policy changed before it could expire; leaving it");
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
                let note =
                    format!("fault policy {version} expired; annotation removed, traffic is clean");
                self.event(
                    key,
                    &ctx.uid,
                    EventType::Normal,
                    REASON_RECOVERED,
                    "Recover",
                    note,
                )
                .await
            }
            Action::ReportNotInjected { key, note } => {
                self.event(
                    key,
                    &ctx.uid,
                    EventType::Warning,
                    REASON_NOT_INJECTED,
                    "Inject",
                    note.clone(),
                )
                .await
            }
            Action::WarnInvalid { key, message } => {
                let note =
                    format!("{FAULTS_ANNOTATION} is invalid, previous policy kept: {message}");
                self.event(
                    key,
                    &ctx.uid,
                    EventType::Warning,
                    REASON_INVALID,
                    "Validate",
                    note,
                )
                .await
            }
        }
    }

    async fn patch<P: serde::Serialize + std::fmt::Debug>(
        &self,
        key: &ObjKey,
        patch: &Patch<P>,
    ) -> Result<(), WriteError> {
        let params = PatchParams::default();
        let ns = key.namespace.as_str();
        let c = self.client.clone();
        let result = match key.kind {
            Kind::Pod => Api::<Pod>::namespaced(c, ns)
                .patch_metadata(&key.name, &params, patch)
                .await
                .map(drop),
            Kind::ReplicaSet => Api::<ReplicaSet>::namespaced(c, ns)
                .patch_metadata(&key.name, &params, patch)
                .await
                .map(drop),
            Kind::Deployment => Api::<Deployment>::namespaced(c, ns)
                .patch_metadata(&key.name, &params, patch)
                .await
                .map(drop),
            Kind::StatefulSet => Api::<StatefulSet>::namespaced(c, ns)
                .patch_metadata(&key.name, &params, patch)
                .await
                .map(drop),
            Kind::DaemonSet => Api::<DaemonSet>::namespaced(c, ns)
                .patch_metadata(&key.name, &params, patch)
                .await
                .map(drop),
            Kind::Job => Api::<Job>::namespaced(c, ns)
                .patch_metadata(&key.name, &params, patch)
                .await
                .map(drop),
        };
        result.map_err(|source| WriteError::Patch {
            key: key.clone(),
            source,
        })
    }

    async fn event(
        &self,
        key: &ObjKey,
        uid: &str,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), WriteError> {
        let reference = ObjectReference {
            api_version: Some(key.kind.api_version().into()),
            kind: Some(key.kind.as_str().into()),
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            uid: (!uid.is_empty()).then(|| uid.to_string()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: action.into(),
            secondary: None,
        };
        self.recorder
            .publish(&event, &reference)
            .await
            .map_err(|source| WriteError::Event {
                key: key.clone(),
                source,
            })
    }
}

/// The conditional removal: `test` that the annotation still holds the text
/// that expired, then remove it (and the seen-at record).
pub fn expire_patch(text: &str, has_seen_at: bool) -> json_patch::Patch {
    let faults = format!("/metadata/annotations/{}", escape(FAULTS_ANNOTATION));
    let mut ops = vec![
        json!({"op": "test", "path": faults, "value": text}),
        json!({"op": "remove", "path": faults}),
    ];
    if has_seen_at {
        ops.push(json!({"op": "remove", "path": format!("/metadata/annotations/{}", escape(SEEN_AT_ANNOTATION))}));
    }
    serde_json::from_value(serde_json::Value::Array(ops))
        .unwrap_or_else(|_| json_patch::Patch(Vec::new()))
}

/// JSON pointer escaping (RFC 6901).
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expire_patch_tests_the_exact_text_before_removing() {
        let patch = serde_json::to_value(expire_patch("rules: []", true)).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/annotations/faultline.dev~1faults", "value": "rules: []"},
                {"op": "remove", "path": "/metadata/annotations/faultline.dev~1faults"},
                {"op": "remove", "path": "/metadata/annotations/faultline.dev~1faults-seen-at"},
            ])
        );
        assert_eq!(
            serde_json::to_value(expire_patch("x", false))
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn expire_patch_fails_when_the_annotation_changed() {
        let mut doc = json!({"metadata": {"annotations": {"faultline.dev/faults": "new text"}}});
        assert!(json_patch::patch(&mut doc, &expire_patch("old text", false)).is_err());
        let mut doc = json!({"metadata": {"annotations": {"faultline.dev/faults": "old text", "faultline.dev/faults-seen-at": "x"}}});
        json_patch::patch(&mut doc, &expire_patch("old text", true)).unwrap();
        assert_eq!(doc, json!({"metadata": {"annotations": {}}}));
    }

    #[test]
    fn notes_are_truncated_on_char_boundaries() {
        assert_eq!(truncate("ééé".into(), 3), "é");
    }
}
