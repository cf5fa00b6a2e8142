use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, Pod, PodSpec,
    PodStatus,
};

use super::*;

fn life(policy: &str, containers: &[(&str, Option<i32>)]) -> PodLife {
    PodLife {
        host_network: false,
        restart_policy: policy.into(),
        containers: containers
            .iter()
            .map(|(n, c)| ((*n).to_owned(), *c))
            .collect(),
        terminating: false,
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn a_job_pod_is_finished_when_every_app_container_has_exited() {
    let never = |app: Option<i32>| life("Never", &[("faultline-proxy", None), ("app", app)]);
    assert!(never(Some(0)).app_finished());
    assert!(
        never(Some(1)).app_finished(),
        "Never: a failure is final too"
    );
    assert!(!never(None).app_finished());
    let on_failure =
        |app: Option<i32>| life("OnFailure", &[("faultline-proxy", None), ("app", app)]);
    assert!(on_failure(Some(0)).app_finished());
    assert!(
        !on_failure(Some(2)).app_finished(),
        "OnFailure: the kubelet restarts it"
    );
    let two = life(
        "Never",
        &[("faultline-proxy", None), ("a", Some(0)), ("b", None)],
    );
    assert!(!two.app_finished(), "one app container still runs");
}

#[test]
fn a_deleted_pod_is_finished_once_its_app_has_exited_whatever_its_restart_policy() {
    let deleted = |app: Option<i32>| PodLife {
        terminating: true,
        ..life("Always", &[("faultline-proxy", None), ("app", app)])
    };
    assert!(deleted(Some(0)).app_finished());
    assert!(deleted(Some(137)).app_finished());
    assert!(!deleted(None).app_finished(), "the app still winds down");
}

#[test]
fn long_running_pods_and_native_sidecars_are_never_finished() {
    assert!(!life("Always", &[("faultline-proxy", None), ("app", Some(0))]).app_finished());
    // Native layout: the proxy is an init container, not listed here.
    assert!(!life("Never", &[("app", Some(0))]).app_finished());
    assert!(!life("Never", &[("faultline-proxy", None)]).app_finished());
}

#[test]
fn pod_life_reads_spec_and_statuses_and_survives_stripping() {
    let status = |name: &str, state: ContainerState| ContainerStatus {
        name: name.into(),
        image: "busybox".into(),
        image_id: "sha256:x".into(),
        state: Some(state),
        ..Default::default()
    };
    let mut pod = Pod {
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            host_network: Some(false),
            ..Default::default()
        }),
        status: Some(PodStatus {
            container_statuses: Some(vec![
                status(
                    "faultline-proxy",
                    ContainerState {
                        running: Some(ContainerStateRunning::default()),
                        ..Default::default()
                    },
                ),
                status(
                    "app",
                    ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 0,
                            reason: Some("Completed".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let before = PodLife::from_pod(&pod);
    assert!(before.app_finished());
    strip_pod(&mut pod);
    assert_eq!(PodLife::from_pod(&pod), before);
    let statuses = pod.status.unwrap().container_statuses.unwrap();
    assert!(statuses.iter().all(|c| c.image.is_empty()));
}

#[test]
fn missed_injection_needs_an_opt_in_and_no_opt_out() {
    let plain = life("Always", &[("app", None)]);
    let enabled = labels(&[("faultline.dev/injection", "enabled")]);
    let none = labels(&[]);
    assert!(missed_injection(
        &none,
        "shop",
        Some(&enabled),
        &plain,
        false
    ));
    assert!(!missed_injection(&none, "shop", Some(&none), &plain, false));
    assert!(!missed_injection(&none, "shop", None, &plain, false));
    let pod_in = labels(&[("faultline.dev/inject", "true")]);
    assert!(missed_injection(&pod_in, "shop", None, &plain, false));
    let pod_out = labels(&[("faultline.dev/inject", "false")]);
    assert!(!missed_injection(
        &pod_out,
        "shop",
        Some(&enabled),
        &plain,
        false
    ));
    let injected = labels(&[("faultline.dev/injected", "true")]);
    assert!(!missed_injection(
        &injected,
        "shop",
        Some(&enabled),
        &plain,
        false
    ));
    assert!(
        !missed_injection(&none, "shop", Some(&enabled), &plain, true),
        "finished pods"
    );
    assert!(!missed_injection(
        &none,
        "kube-system",
        Some(&enabled),
        &plain,
        false
    ));
    let host = PodLife {
        host_network: true,
        ..plain
    };
    assert!(!missed_injection(
        &none,
        "shop",
        Some(&enabled),
        &host,
        false
    ));
}

#[test]
fn the_note_says_how_to_fix_it() {
    let note = not_injected_note("shop", Some(("deployment", "web")));
    assert!(
        note.contains("kubectl rollout restart deployment/web -n shop"),
        "{note}"
    );
    let note = not_injected_note("shop", None);
    assert!(note.contains("recreate the pod"), "{note}");
}
