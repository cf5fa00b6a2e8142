//! The admission decoder's properties, for the fuzz target
//! (`webhook/fuzz/fuzz_targets/admission.rs`) and for a test that runs them
//! over the seed corpus (`webhook/fuzz/seeds/`), so CI exercises them
//! without a nightly toolchain.
//!
//! For any body: `/mutate` and `/validate` answer or refuse with a message,
//! never panic; every answer encodes; an answer carries the review's uid;
//! an injected pod's patch applies to the pod it was computed from, and the
//! patched pod is injected already (a second pass changes nothing).

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionReview;

use super::{Outcome, answer_mutate, answer_validate, encode_review, mutate};
use crate::config::Config;

/// Check every property on one input; panics (for the fuzzer) when one fails.
pub fn check_admission(data: &[u8]) {
    for native in [false, true] {
        let config = Config {
            native_sidecars: native,
            native_supported: native,
            ..Config::default()
        };
        check_mutate(data, &config);
    }
    check_validate(data);
}

fn check_mutate(data: &[u8], config: &Config) {
    let Ok((response, review)) = answer_mutate(data, config) else {
        return;
    };
    let body = encode_review(&response).expect("a mutate answer encodes");
    let echoed: serde_json::Value = serde_json::from_slice(&body).expect("a mutate answer is JSON");
    assert_eq!(echoed["response"]["uid"], response.uid.as_str());
    if review.outcome != Outcome::Injected {
        assert!(response.patch.is_none(), "a patch without injection");
        return;
    }
    let review: AdmissionReview<Pod> =
        serde_json::from_slice(data).expect("an answered review reads again");
    let pod = review
        .request
        .and_then(|r| r.object)
        .expect("an injected review has a pod");
    let patch: json_patch::Patch = serde_json::from_slice(
        response
            .patch
            .as_deref()
            .expect("an injected pod has a patch"),
    )
    .expect("the patch is a JSON patch");
    let mut patched = serde_json::to_value(&pod).expect("a pod serializes");
    json_patch::patch(&mut patched, &patch).expect("the patch applies to the pod it was made for");
    let patched: Pod = serde_json::from_value(patched).expect("the patched pod is a pod");
    let again = mutate(&patched, config).expect("the patched pod mutates");
    assert!(again.patch.0.is_empty(), "a second pass patched again");
}

fn check_validate(data: &[u8]) {
    let Ok((response, _)) = answer_validate(data) else {
        return;
    };
    let body = encode_review(&response).expect("a validate answer encodes");
    serde_json::from_slice::<serde_json::Value>(&body).expect("a validate answer is JSON");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;

    /// The fuzz target's seeds, each checked as the fuzzer checks its
    /// inputs; between them they reach every outcome of both endpoints.
    #[test]
    fn seed_corpus_holds_every_property() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        let mut reached = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).expect("webhook/fuzz/seeds exists") {
            let data = std::fs::read(entry.expect("a seed").path()).expect("a readable seed");
            check_admission(&data);
            match answer_mutate(&data, &Config::default()) {
                Ok((_, review)) => reached.insert(format!("mutate {}", review.outcome.as_str())),
                Err(_) => reached.insert("mutate error".into()),
            };
            if let Ok((_, outcome)) = answer_validate(&data) {
                reached.insert(format!("validate {}", outcome.as_str()));
            }
        }
        for outcome in [
            "mutate injected",
            "mutate skipped",
            "mutate denied",
            "mutate allowed",
            "mutate error",
            "validate allowed",
            "validate denied",
        ] {
            assert!(
                reached.contains(outcome),
                "no seed reaches {outcome}: {reached:?}"
            );
        }
    }
}
