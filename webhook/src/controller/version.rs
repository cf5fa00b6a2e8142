//! Policy versions: a stable hash of the annotation text, so every
//! controller replica computes the same version, every proxy of a workload
//! runs the same version string, and `kubectl fault inject`, `list`,
//! `status`, the proxies' `/policy` and the Events all show one identifier.
//! Resolved selector peers travel beside the version: when a selector's pods
//! change IPs the policy is pushed again under the same version.

use faultline_policy::wire::NO_FAULTS_VERSION;

/// Hash of the annotation text alone: identifies "this version of the
/// annotation" for expiry bookkeeping (peer IP churn must not restart a
/// `duration`).
pub fn text_version(text: &str) -> String {
    digest(&[text.as_bytes()])
}

/// Version pushed to proxies: the annotation's [`text_version`]; no policy
/// -> `none`.
pub fn policy_version(text: Option<&str>) -> String {
    text.map_or_else(|| NO_FAULTS_VERSION.to_string(), text_version)
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
    fn versions_are_stable_and_one_identifier_everywhere() {
        let v1 = policy_version(Some("rules: []"));
        assert_eq!(v1, policy_version(Some("rules: []")));
        assert_eq!(v1.len(), 16);
        assert_ne!(v1, policy_version(Some("rules: [ ]")));
        assert_eq!(v1, text_version("rules: []"));
        assert_eq!(policy_version(None), "none");
        assert_eq!(text_version("abc"), text_version("abc"));
        // Pinned, so a change of hashing between releases is noticed (replicas
        // of different releases must agree during a rollout).
        assert_eq!(text_version("abc"), "ba7816bf8f01cfea");
    }
}
