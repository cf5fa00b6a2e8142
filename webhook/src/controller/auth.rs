//! Who is on the other end of a policy stream. Production uses a
//! TokenReview (audience `faultline`): a bound projected token names its pod
//! in `user.extra`, so a proxy can only ever be served its own pod's policy.
//!
//! `guard` bounds what that costs the API server: `claims` refuses what
//! cannot be our token before any review, `cache` remembers answers by token
//! hash, `limit` caps the review rate and spreads the refused callers' retries.

pub mod cache;
pub mod claims;
pub mod guard;
pub mod limit;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use guard::{GuardedAuthenticator, ReviewLimits};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::Api;
use kube::api::PostParams;

/// The audience proxies' projected tokens are minted for.
pub const AUDIENCE: &str = "faultline";
const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const SA_PREFIX: &str = "system:serviceaccount:";

/// The pod a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub service_account: String,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token is not valid for audience {AUDIENCE}: {0}")]
    Rejected(String),
    #[error("token is not bound to a pod (use a projected service account token)")]
    NotPodBound,
    #[error("failed to review the token with the API server")]
    Review(#[source] kube::Error),
    #[error("token refused without review: {0}")]
    Claims(claims::ClaimsError),
    /// A refusal remembered from a recent review (its message).
    #[error("{0}")]
    Refused(String),
    #[error("too many policy stream logins: TokenReview rate limit reached")]
    RateLimited { retry_after: Duration },
    #[error("too many policy stream logins: TokenReviews in flight at their limit")]
    Busy { retry_after: Duration },
}

impl AuthError {
    /// When the caller should try again, for limits that pass.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::Busy { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Identity, AuthError>> + Send + 'a>>;

/// Turns a bearer token into an [`Identity`].
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a>;
}

/// Authenticates with the `TokenReview` API.
#[derive(Clone)]
pub struct TokenReviewer {
    client: kube::Client,
}

impl TokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl Authenticator for TokenReviewer {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_string()),
                    audiences: Some(vec![AUDIENCE.to_string()]),
                },
                ..TokenReview::default()
            };
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let reviewed = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(AuthError::Review)?;
            identity_from_status(reviewed.status.unwrap_or_default())
        })
    }
}

/// Pure: accept only authenticated, audience-bound, pod-bound service accounts.
pub fn identity_from_status(status: TokenReviewStatus) -> Result<Identity, AuthError> {
    if status.authenticated != Some(true) {
        return Err(AuthError::Rejected(
            status.error.unwrap_or_else(|| "not authenticated".into()),
        ));
    }
    // An API server that ignores audiences returns none; we then cannot know
    // the token was meant for us, so refuse.
    if !status.audiences.iter().flatten().any(|a| a == AUDIENCE) {
        return Err(AuthError::Rejected(
            "audience missing from the review".into(),
        ));
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let Some((namespace, service_account)) = username
        .strip_prefix(SA_PREFIX)
        .and_then(|r| r.split_once(':'))
    else {
        return Err(AuthError::Rejected(format!(
            "{username:?} is not a service account"
        )));
    };
    let extra = user.extra.unwrap_or_default();
    let one = |k: &str| {
        extra
            .get(k)
            .and_then(|v| v.first())
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let (Some(pod), Some(pod_uid)) = (one(EXTRA_POD_NAME), one(EXTRA_POD_UID)) else {
        return Err(AuthError::NotPodBound);
    };
    Ok(Identity {
        namespace: namespace.to_string(),
        pod,
        pod_uid,
        service_account: service_account.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn status(username: &str, extra: &[(&str, &str)], audiences: &[&str]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|s| s.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(username.into()),
                extra: Some(
                    extra
                        .iter()
                        .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..UserInfo::default()
            }),
            error: None,
        }
    }

    #[test]
    fn pod_bound_service_account_tokens_are_accepted() {
        let s = status(
            "system:serviceaccount:shop:checkout",
            &[(EXTRA_POD_NAME, "checkout-1"), (EXTRA_POD_UID, "u-1")],
            &["faultline"],
        );
        let id = identity_from_status(s).unwrap();
        assert_eq!(
            id,
            Identity {
                namespace: "shop".into(),
                pod: "checkout-1".into(),
                pod_uid: "u-1".into(),
                service_account: "checkout".into()
            }
        );
    }

    #[test]
    fn other_tokens_are_refused() {
        let unbound = status("system:serviceaccount:shop:checkout", &[], &["faultline"]);
        assert!(matches!(
            identity_from_status(unbound),
            Err(AuthError::NotPodBound)
        ));
        let user = status(
            "alice",
            &[(EXTRA_POD_NAME, "p"), (EXTRA_POD_UID, "u")],
            &["faultline"],
        );
        assert!(matches!(
            identity_from_status(user),
            Err(AuthError::Rejected(_))
        ));
        let wrong_aud = status(
            "system:serviceaccount:a:b",
            &[(EXTRA_POD_NAME, "p"), (EXTRA_POD_UID, "u")],
            &["api"],
        );
        assert!(matches!(
            identity_from_status(wrong_aud),
            Err(AuthError::Rejected(_))
        ));
        let failed = TokenReviewStatus {
            authenticated: Some(false),
            error: Some("expired".into()),
            ..Default::default()
        };
        assert!(
            identity_from_status(failed)
                .unwrap_err()
                .to_string()
                .contains("expired")
        );
    }
}
