//! Admission: the `/mutate` and `/validate` endpoints and the pure functions
//! behind them.
//!
//! - [`mutate`] (`admission/mutate.rs`): pod -> JSON patch that injects the
//!   sidecar; the containers it adds are built in `admission/containers.rs`,
//!   per-pod annotations are read in `admission/overrides.rs`.
//! - [`validate`] (`admission/validate.rs`): refuse unparsable fault annotations.
//! - this file: AdmissionReview in, AdmissionReview out, metrics; a review
//!   that cannot be read is answered 400 with the reason, a body over the
//!   limit 413 (the API server then applies `failurePolicy: Ignore`).

pub mod containers;
pub(crate) mod mutate;
pub mod overrides;
pub mod probes;
pub mod quantity;
mod validate;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::TypeMeta;
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND, Operation,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use mutate::{MutateError, Mutation, SkipReason, mutate};
pub use validate::{Denial, check_policy, validate};

use crate::config::Config;
use crate::metrics::{Metrics, Outcome, ReviewKind};

/// Default request body limit: an AdmissionReview carries the object and, on
/// UPDATE, the old object; etcd caps each at 1.5 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Shared by the admission handlers.
#[derive(Clone)]
pub struct AdmissionState {
    pub config: Arc<Config>,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
}

/// `POST /mutate` and `POST /validate`.
pub fn router(state: AdmissionState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/mutate", post(mutate_endpoint))
        .route("/validate", post(validate_endpoint))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn mutate_endpoint(State(state): State<AdmissionState>, body: Bytes) -> Response {
    let started = Instant::now();
    let request = match read_review::<Pod>(&body) {
        Ok(request) => request,
        Err(message) => {
            state.metrics.observe(
                ReviewKind::Mutate,
                Outcome::Error,
                started.elapsed().as_secs_f64(),
            );
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    let (response, outcome) = review_pod(&request, &state.config);
    if let Some(reason) = outcome.1 {
        state.metrics.skipped(reason);
    }
    let body = review_json(response);
    state.metrics.observe(
        ReviewKind::Mutate,
        outcome.0,
        started.elapsed().as_secs_f64(),
    );
    body
}

async fn validate_endpoint(State(state): State<AdmissionState>, body: Bytes) -> Response {
    let started = Instant::now();
    let request = match read_review::<DynamicObject>(&body) {
        Ok(request) => request,
        Err(message) => {
            state.metrics.observe(
                ReviewKind::Validate,
                Outcome::Error,
                started.elapsed().as_secs_f64(),
            );
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    let (response, outcome) = review_object(&request, check_policy);
    let body = review_json(response);
    state.metrics.observe(
        ReviewKind::Validate,
        outcome,
        started.elapsed().as_secs_f64(),
    );
    body
}

/// The AdmissionReview we answer with, serialized in one pass; `patch` is
/// base64 as Kubernetes' `[]byte` fields are (kube-core's own type would
/// write an array of numbers).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'a str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    status: &'a kube::core::Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a Vec<String>>,
}

fn review_json(response: AdmissionResponse) -> Response {
    let patch = response
        .patch
        .as_deref()
        .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    let out = ReviewOut {
        api_version: &response.types.api_version,
        kind: &response.types.kind,
        response: ResponseOut {
            uid: &response.uid,
            allowed: response.allowed,
            status: &response.result,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings: response.warnings.as_ref(),
        },
    };
    match serde_json::to_vec(&out) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to encode the response: {e}\n"),
        )
            .into_response(),
    }
}

/// Parse an AdmissionReview body, or say why not (answered with 400).
fn read_review<T>(body: &[u8]) -> Result<AdmissionRequest<T>, String>
where
    T: kube::Resource + DeserializeOwned,
{
    let review: AdmissionReview<T> = serde_json::from_slice(body)
        .map_err(|e| format!("failed to read AdmissionReview: {e}\n"))?;
    let mut request = review
        .request
        .ok_or_else(|| "failed to read AdmissionReview: it has no request\n".to_string())?;
    // The response must carry the review's apiVersion/kind (the API server
    // rejects it otherwise); they live on the review, not on its request.
    request.types = review.types;
    if request.types.api_version.is_empty() {
        request.types = TypeMeta {
            api_version: META_API_VERSION_V1.into(),
            kind: META_KIND.into(),
        };
    }
    Ok(request)
}

/// Answer a pod review. Pure apart from logging.
pub fn review_pod(
    request: &AdmissionRequest<Pod>,
    config: &Config,
) -> (AdmissionResponse, (Outcome, Option<SkipReason>)) {
    let response = AdmissionResponse::from(request);
    let Some(pod) = request
        .object
        .as_ref()
        .filter(|_| request.operation == Operation::Create)
    else {
        return (response, (Outcome::Allowed, None));
    };
    let who = pod_ident(request, pod);
    match mutate(pod, config) {
        Ok(Mutation {
            skipped: Some(reason),
            warnings,
            ..
        }) => {
            tracing::debug!(pod = %who, reason = reason.as_str(), "pod not injected");
            (
                with_warnings(response, warnings),
                (Outcome::Skipped, Some(reason)),
            )
        }
        Ok(Mutation {
            patch, warnings, ..
        }) => match response.clone().with_patch(patch) {
            Ok(patched) => {
                tracing::debug!(pod = %who, "pod injected");
                (with_warnings(patched, warnings), (Outcome::Injected, None))
            }
            Err(error) => {
                tracing::error!(pod = %who, %error, "failed to encode patch");
                (response.deny(error), (Outcome::Denied, None))
            }
        },
        Err(error) => {
            tracing::info!(pod = %who, %error, "pod refused");
            (response.deny(error), (Outcome::Denied, None))
        }
    }
}

/// Answer a workload/pod review for `/validate`.
pub fn review_object(
    request: &AdmissionRequest<DynamicObject>,
    check: impl Fn(&str) -> Result<(), String>,
) -> (AdmissionResponse, Outcome) {
    let response = AdmissionResponse::from(request);
    let writes = matches!(request.operation, Operation::Create | Operation::Update);
    let Some(object) = request.object.as_ref().filter(|_| writes) else {
        return (response, Outcome::Allowed);
    };
    let to_json = |o: &DynamicObject| serde_json::to_value(o).unwrap_or_default();
    let old = request.old_object.as_ref().map(to_json);
    match validate(&to_json(object), old.as_ref(), check) {
        Ok(()) => (response, Outcome::Allowed),
        Err(denial) => {
            tracing::info!(kind = %request.kind.kind, name = %request.name, namespace = ?request.namespace, %denial, "object refused");
            (response.deny(denial), Outcome::Denied)
        }
    }
}

fn with_warnings(mut response: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

/// `namespace/name`, or `namespace/generateName*` for pods not yet named.
fn pod_ident(request: &AdmissionRequest<Pod>, pod: &Pod) -> String {
    let ns = request
        .namespace
        .as_deref()
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or("");
    match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(name), _) if !name.is_empty() => format!("{ns}/{name}"),
        (_, Some(prefix)) => format!("{ns}/{prefix}*"),
        _ => format!("{ns}/<unnamed>"),
    }
}
