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
mod mutate;
pub mod overrides;
pub mod quantity;
mod validate;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
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
        Err(response) => {
            state.metrics.observe(ReviewKind::Mutate, Outcome::Error, started.elapsed().as_secs_f64());
            return response;
        }
    };
    let (response, outcome) = review_pod(&request, &state.config);
    if let Some(reason) = outcome.1 {
        state.metrics.skipped(reason);
    }
    state.metrics.observe(ReviewKind::Mutate, outcome.0, started.elapsed().as_secs_f64());
    Json(response.into_review()).into_response()
}

async fn validate_endpoint(State(state): State<AdmissionState>, body: Bytes) -> Response {
    let started = Instant::now();
    let request = match read_review::<DynamicObject>(&body) {
        Ok(request) => request,
        Err(response) => {
            state.metrics.observe(ReviewKind::Validate, Outcome::Error, started.elapsed().as_secs_f64());
            return response;
        }
    };
    let (response, outcome) = review_object(&request, check_policy);
    state.metrics.observe(ReviewKind::Validate, outcome, started.elapsed().as_secs_f64());
    Json(response.into_review()).into_response()
}

/// Parse an AdmissionReview body, or the 400 response that explains why not.
fn read_review<T>(body: &[u8]) -> Result<AdmissionRequest<T>, Response>
where
    T: kube::Resource + DeserializeOwned,
{
    let bad = |message: String| (StatusCode::BAD_REQUEST, message).into_response();
    let review: AdmissionReview<T> =
        serde_json::from_slice(body).map_err(|e| bad(format!("failed to read AdmissionReview: {e}\n")))?;
    review.request.ok_or_else(|| bad("failed to read AdmissionReview: it has no request\n".into()))
}

/// Answer a pod review. Pure apart from logging.
pub fn review_pod(request: &AdmissionRequest<Pod>, config: &Config) -> (AdmissionResponse, (Outcome, Option<SkipReason>)) {
    let response = AdmissionResponse::from(request);
    let Some(pod) = request.object.as_ref().filter(|_| request.operation == Operation::Create) else {
        return (response, (Outcome::Allowed, None));
    };
    let who = pod_ident(request, pod);
    match mutate(pod, config) {
        Ok(Mutation { skipped: Some(reason), warnings, .. }) => {
            tracing::debug!(pod = %who, reason = reason.as_str(), "pod not injected");
            (with_warnings(response, warnings), (Outcome::Skipped, Some(reason)))
        }
        Ok(Mutation { patch, warnings, .. }) => match response.clone().with_patch(patch) {
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
    let ns = request.namespace.as_deref().or(pod.metadata.namespace.as_deref()).unwrap_or("");
    match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(name), _) if !name.is_empty() => format!("{ns}/{name}"),
        (_, Some(prefix)) => format!("{ns}/{prefix}*"),
        _ => format!("{ns}/<unnamed>"),
    }
}
