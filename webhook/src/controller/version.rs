//! Policy versions: a stable hash, so every controller replica computes the
//! same version for the same input and every proxy of a Deployment sees the
//! same version string.

use std::collections::BTreeMap;
use std::net::IpAddr;

use faultline_policy::wire::NO_FAULTS_VERSION;

/// Hash of the annotation text alone: identifies "this version of the
/// annotation" for expiry bookkeeping (peer IP churn must not restart a
/// `duration`).
pub fn text_version(text: &str) -> String {
    digest(&[text.as_bytes()])
}

/// Version pushed to proxies: the annotation text plus resolved peers, so a
/// selector's pods changing IPs produces a new version. No policy -> `none`.
pub fn policy_version(text: Option<&str>, peers: &BTreeMap<String, Vec<IpAddr>>) -> String {
    let Some(text) = text else {
        return NO_FAULTS_VERSION.to_string();
    };
    // BTreeMap serializes in key order; IP lists are sorted by the caller.
    let peers = serde_json::to_vec(peers).unwrap_or_default();
    digest(&[text.as_bytes(), b"\0", &peers])
}

fn digest(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_stable_and_depend_on_text_and_peers() {
        let none = BTreeMap::new();
        let v1 = policy_version(Some("rules: []"), &none);
        assert_eq!(v1, policy_version(Some("rules: []"), &none));
        assert_eq!(v1.len(), 16);
        assert_ne!(v1, policy_version(Some("rules: [ ]"), &none));
        let peers = BTreeMap::from([("app=nats".to_string(), vec!["10.0.0.7".parse().unwrap()])]);
        assert_ne!(v1, policy_version(Some("rules: []"), &peers));
        assert_eq!(policy_version(None, &peers), "none");
        assert_eq!(text_version("abc"), text_version("abc"));
        // Pinned, so a change of hashing between releases is noticed (replicas
        // of different releases must agree during a rollout).
        assert_eq!(text_version("abc"), "ba7816bf8f01cfea");
    }
}
