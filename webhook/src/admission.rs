//! Admission: the `/mutate` and `/validate` endpoints and the pure functions
//! behind them.
//!
//! - [`mutate`] (`admission/mutate.rs`): pod -> JSON patch that injects the
//!   sidecar; the containers it adds are built in `admission/containers.rs`,
//!   per-pod annotations are read in `admission/overrides.rs`.
//! - [`validate`] (`admission/validate.rs`): refuse unparsable fault annotations.
//! - this file: AdmissionReview in, AdmissionReview out, metrics; a review
//!   that cannot be read is answered 400 with the reason, a body over the
//!   limit 413, a body that does not arrive in time 408 (the API server then
//!   applies `failurePolicy: Ignore`).
//! - `admission/intake.rs`: the bounds on buffered bodies and concurrent
//!   decoding; a review over them is answered 429 with `Retry-After`.

pub mod containers;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod intake;
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
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::TypeMeta;
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND, Operation,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

pub use intake::{ReviewGate, ReviewLimits};
pub use mutate::{Fallback, MutateError, Mutation, SkipReason, mutate};
pub use validate::{Denial, check_policy, validate};

use crate::config::Config;
use crate::metrics::{Metrics, Outcome, ReviewKind};

/// Default request body limit: an AdmissionReview carries the object and, on
/// UPDATE, the old object; etcd caps each at 1.5 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Shared by the admission handlers.
#[derive(Clone)]
pub struct AdmissionState {
    /// The current injection config: `serve` replaces it when the API
    /// server's version (and so its native sidecar support) changes.
    pub config: watch::Receiver<Arc<Config>>,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    /// Bounds concurrent decoding and buffered bodies; clones share them.
    pub reviews: ReviewGate,
}

impl AdmissionState {
    /// State with the default review bounds.
    pub fn new(config: Config, metrics: Metrics, max_body_bytes: usize) -> Self {
        Self {
            config: fixed_config(config),
            metrics,
            max_body_bytes,
            reviews: ReviewGate::new(ReviewLimits::default()),
        }
    }
}

/// A config that never changes, for [`AdmissionState::config`].
pub fn fixed_config(config: Config) -> watch::Receiver<Arc<Config>> {
    watch::channel(Arc::new(config)).1
}

/// How a pod review ended, for metrics and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    pub outcome: Outcome,
    pub skipped: Option<SkipReason>,
    pub fallbacks: Vec<Fallback>,
}

/// `POST /mutate` and `POST /validate`.
pub fn router(state: AdmissionState) -> Router {
    Router::new()
        .route("/mutate", post(mutate_endpoint))
        .route("/validate", post(validate_endpoint))
        .with_state(state)
}

async fn mutate_endpoint(State(state): State<AdmissionState>, request: Request) -> Response {
    let started = Instant::now();
    let admitted = match admit(&state, request).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let config = state.config.borrow().clone();
    let answer = answer_mutate(&admitted.body, &config);
    // Decoded and decided: the slot and the body's budget go back.
    drop(admitted);
    let (response, review) = match answer {
        Ok(answer) => answer,
        Err(message) => {
            state.metrics.observe(
                ReviewKind::Mutate,
                Outcome::Error,
                started.elapsed().as_secs_f64(),
            );
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    if let Some(reason) = review.skipped {
        state.metrics.skipped(reason);
    }
    for fallback in &review.fallbacks {
        state.metrics.fallback(*fallback);
    }
    let body = review_json(response);
    state.metrics.observe(
        ReviewKind::Mutate,
        review.outcome,
        started.elapsed().as_secs_f64(),
    );
    body
}

async fn validate_endpoint(State(state): State<AdmissionState>, request: Request) -> Response {
    let started = Instant::now();
    let admitted = match admit(&state, request).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let answer = answer_validate(&admitted.body);
    drop(admitted);
    let (response, outcome) = match answer {
        Ok(answer) => answer,
        Err(message) => {
            state.metrics.observe(
                ReviewKind::Validate,
                Outcome::Error,
                started.elapsed().as_secs_f64(),
            );
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    let body = review_json(response);
    state.metrics.observe(
        ReviewKind::Validate,
        outcome,
        started.elapsed().as_secs_f64(),
    );
    body
}

/// What `/mutate` answers to `body`, or the message of its 400. No I/O
/// apart from logging.
pub fn answer_mutate(body: &[u8], config: &Config) -> Result<(AdmissionResponse, Review), String> {
    let request = read_review::<Pod>(body)?;
    Ok(review_pod(&request, config))
}

/// What `/validate` answers to `body`, or the message of its 400.
pub fn answer_validate(body: &[u8]) -> Result<(AdmissionResponse, Outcome), String> {
    let request = read_review::<DynamicObject>(body)?;
    Ok(review_object(&request, check_policy))
}

/// The review's body, within the review bounds, or the answer to send.
async fn admit(state: &AdmissionState, request: Request) -> Result<intake::Admitted, Response> {
    let (parts, body) = request.into_parts();
    state
        .reviews
        .admit(&parts.headers, body, state.max_body_bytes, &state.metrics)
        .await
        .map_err(intake_response)
}

fn intake_response(error: intake::IntakeError) -> Response {
    use intake::IntakeError;
    let message = format!("{error}\n");
    match error {
        IntakeError::Busy(_) | IntakeError::BodyBudget(_) | IntakeError::QueueFull(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            message,
        )
            .into_response(),
        IntakeError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, message).into_response(),
        IntakeError::Timeout => (StatusCode::REQUEST_TIMEOUT, message).into_response(),
        IntakeError::Read(_) => (StatusCode::BAD_REQUEST, message).into_response(),
    }
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
    match encode_review(&response) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to encode the response: {e}\n"),
        )
            .into_response(),
    }
}

/// The AdmissionReview body answering with `response`.
pub fn encode_review(response: &AdmissionResponse) -> Result<Vec<u8>, serde_json::Error> {
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
    serde_json::to_vec(&out)
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
pub fn review_pod(request: &AdmissionRequest<Pod>, config: &Config) -> (AdmissionResponse, Review) {
    let response = AdmissionResponse::from(request);
    let review = |outcome, skipped, fallbacks| Review {
        outcome,
        skipped,
        fallbacks,
    };
    let Some(pod) = request
        .object
        .as_ref()
        .filter(|_| request.operation == Operation::Create)
    else {
        return (response, review(Outcome::Allowed, None, Vec::new()));
    };
    let who = pod_ident(request, pod);
    match mutate(pod, config) {
        Ok(Mutation {
            skipped: Some(reason),
            warnings,
            ..
        }) => {
            log_skip(&who, reason, &warnings);
            (
                with_warnings(response, warnings),
                review(Outcome::Skipped, Some(reason), Vec::new()),
            )
        }
        Ok(Mutation {
            patch,
            warnings,
            fallbacks,
            ..
        }) => match response.clone().with_patch(patch) {
            Ok(patched) => {
                if fallbacks.is_empty() {
                    tracing::debug!(pod = %who, "pod injected");
                } else {
                    let reasons: Vec<&str> = fallbacks.iter().map(|f| f.as_str()).collect();
                    tracing::info!(pod = %who, fallbacks = ?reasons, warnings = ?warnings, "pod injected with defaults in place of what it asked for");
                }
                (
                    with_warnings(patched, warnings),
                    review(Outcome::Injected, None, fallbacks),
                )
            }
            Err(error) => {
                tracing::error!(pod = %who, %error, "failed to encode patch");
                (
                    response.deny(error),
                    review(Outcome::Denied, None, Vec::new()),
                )
            }
        },
        Err(error) => {
            tracing::info!(pod = %who, %error, "pod refused");
            (
                response.deny(error),
                review(Outcome::Denied, None, Vec::new()),
            )
        }
    }
}

/// A name conflict needs a person to act (the pod runs without the proxy
/// it asked for); the other skips are expected.
fn log_skip(who: &str, reason: SkipReason, warnings: &[String]) {
    if reason == SkipReason::NameConflict {
        tracing::info!(pod = %who, reason = reason.as_str(), warning = ?warnings.first(), "pod not injected");
    } else {
        tracing::debug!(pod = %who, reason = reason.as_str(), "pod not injected");
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
