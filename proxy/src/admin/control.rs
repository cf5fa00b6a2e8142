//! The standalone proxy's control API: `PUT /policy` (a YAML or JSON
//! document) and `DELETE /policy` on the admin server, enabled only by
//! `--control`. The same parser and validation as every other source, so a
//! bad document is refused with the rule and field and changes nothing. In a
//! pod the controller is the only source of truth, so these writes are
//! refused there (configuration refuses `--control` with a controller too).

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use faultline_policy::{MAX_POLICY_BYTES, PeerIps};

use crate::body::{ProxyBody, full};
use crate::source::store::{PolicySource, PolicyStore, PolicyUpdate, content_version};

/// Handles a write to `/policy` on a proxy started with `--control`
/// (`token`: the `--control-token` it must present, if any).
pub async fn write(
    store: &PolicyStore,
    token: &Option<String>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    if matches!(store.current().source, PolicySource::Controller { .. }) {
        return error(
            StatusCode::FORBIDDEN,
            "the controller is the source of truth for this proxy's policy",
        );
    }
    if let Some(token) = token
        && !authorized(&req, token)
    {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "a valid Authorization: Bearer token is required",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let update = if req.method() == Method::DELETE {
        PolicyUpdate {
            version: "none".into(),
            source: PolicySource::Control,
            policy: None,
            peers: PeerIps::default(),
        }
    } else {
        match read_policy(req).await {
            Ok(update) => update,
            Err(response) => return response,
        }
    };
    let version = update.version.clone();
    match store.apply(update) {
        Ok(active) => {
            tracing::info!(%version, "fault policy set through the control API");
            match serde_json::to_vec_pretty(&*active) {
                Ok(json) => json_response(StatusCode::OK, json),
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("failed to serialize the policy: {e}"),
                ),
            }
        }
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// The body, parsed and validated into an update; an error response if not.
async fn read_policy(req: Request<Incoming>) -> Result<PolicyUpdate, Response<ProxyBody>> {
    let body = Limited::new(req.into_body(), MAX_POLICY_BYTES)
        .collect()
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("a policy document is at most {MAX_POLICY_BYTES} bytes"),
            )
        })?
        .to_bytes();
    let text = std::str::from_utf8(&body)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "the policy document is not UTF-8"))?;
    let policy = faultline_policy::parse(text)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &e.to_string()))?;
    Ok(PolicyUpdate {
        version: content_version("control", text),
        source: PolicySource::Control,
        policy: Some(policy),
        peers: PeerIps::default(),
    })
}

/// `Authorization: Bearer <token>`, compared in constant time.
fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": message }).to_string();
    json_response(status, body.into_bytes())
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
