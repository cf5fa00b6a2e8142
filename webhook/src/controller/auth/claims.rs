//! A look at a token before anyone spends a TokenReview on it. A projected
//! service account token is a JWT whose payload names its audience, expiry
//! and bound pod; anything that cannot be such a token is refused here, for
//! free. Nothing is *accepted* on these claims: the signature is not checked,
//! only the TokenReview can say yes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::AUDIENCE;

/// Longer tokens are refused unread (a projected token is about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What the unverified payload of a plausible token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// `exp`, seconds since the Unix epoch, when present.
    pub expires_unix: Option<u64>,
}

/// Why a token cannot be a pod-bound projected token for us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("token is not a JWT")]
    NotJwt,
    #[error("token is not for audience {AUDIENCE}")]
    Audience,
    #[error("token has expired")]
    Expired,
    #[error("token is not bound to a pod (use a projected service account token)")]
    NotPodBound,
}

impl ClaimsError {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooLong | Self::NotJwt => "malformed",
            Self::Audience => "audience",
            Self::Expired => "expired",
            Self::NotPodBound => "not_pod_bound",
        }
    }
}

#[derive(serde::Deserialize)]
struct Payload {
    #[serde(default)]
    aud: Audience,
    exp: Option<u64>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(serde::Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
    #[default]
    Missing,
}

#[derive(serde::Deserialize)]
struct KubernetesClaims {
    pod: Option<PodClaim>,
}

#[derive(serde::Deserialize)]
struct PodClaim {
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
}

/// Pure: refuse what cannot be a live, pod-bound token for [`AUDIENCE`].
pub fn precheck(token: &str, now_unix: u64) -> Result<Claims, ClaimsError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(ClaimsError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ClaimsError::NotJwt);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| ClaimsError::NotJwt)?;
    let payload: Payload = serde_json::from_slice(&bytes).map_err(|_| ClaimsError::NotJwt)?;
    let audience_ok = match &payload.aud {
        Audience::One(a) => a == AUDIENCE,
        Audience::Many(all) => all.iter().any(|a| a == AUDIENCE),
        Audience::Missing => false,
    };
    if !audience_ok {
        return Err(ClaimsError::Audience);
    }
    if payload.exp.is_some_and(|exp| exp <= now_unix) {
        return Err(ClaimsError::Expired);
    }
    let bound = payload
        .kubernetes
        .and_then(|k| k.pod)
        .is_some_and(|p| !p.name.is_empty() && !p.uid.is_empty());
    if !bound {
        return Err(ClaimsError::NotPodBound);
    }
    Ok(Claims {
        expires_unix: payload.exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JWT with `payload` and a meaningless signature.
    pub(crate) fn jwt(payload: &serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"k"}"#);
        let body = URL_SAFE_NO_PAD.encode(payload.to_string());
        format!("{header}.{body}.c2lnbmF0dXJl")
    }

    fn bound(aud: serde_json::Value, exp: u64) -> serde_json::Value {
        serde_json::json!({
            "aud": aud, "exp": exp, "iss": "https://kubernetes.default.svc",
            "kubernetes.io": {"namespace": "shop", "pod": {"name": "p", "uid": "u"},
                              "serviceaccount": {"name": "default", "uid": "s"}},
            "sub": "system:serviceaccount:shop:default"
        })
    }

    #[test]
    fn a_plausible_bound_token_passes_with_its_expiry() {
        let token = jwt(&bound(serde_json::json!(["faultline"]), 2000));
        assert_eq!(
            precheck(&token, 1000),
            Ok(Claims {
                expires_unix: Some(2000)
            })
        );
        let single = jwt(&bound(serde_json::json!("faultline"), 2000));
        assert!(precheck(&single, 1000).is_ok());
    }

    #[test]
    fn what_cannot_be_our_token_is_refused_with_its_reason() {
        let cases = [
            ("garbage".to_string(), ClaimsError::NotJwt),
            ("a.b.c".to_string(), ClaimsError::NotJwt),
            ("a.b.c.d".to_string(), ClaimsError::NotJwt),
            ("x".repeat(MAX_TOKEN_BYTES + 1), ClaimsError::TooLong),
            (
                jwt(&bound(
                    serde_json::json!(["https://kubernetes.default.svc"]),
                    2000,
                )),
                ClaimsError::Audience,
            ),
            (
                jwt(&bound(serde_json::json!(["faultline"]), 999)),
                ClaimsError::Expired,
            ),
            (
                jwt(&serde_json::json!({"aud": ["faultline"], "exp": 2000,
                    "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "d"}}})),
                ClaimsError::NotPodBound,
            ),
            (
                jwt(&serde_json::json!({"exp": 2000})),
                ClaimsError::Audience,
            ),
        ];
        for (token, want) in cases {
            assert_eq!(precheck(&token, 1000), Err(want), "{token:.60}");
        }
    }
}
