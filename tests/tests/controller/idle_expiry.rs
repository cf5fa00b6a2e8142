//! Expiry of policies that govern no injected pod, against a real
//! kube-apiserver: a Deployment scaled to zero and one whose pod runs in a
//! namespace that is not opted in still lose their `duration` / `until`
//! policy, with the same `FaultsApplied` and `FaultsRecovered` Events as
//! workloads with injected pods.

use std::time::Duration;

use anyhow::{Context, ensure};
use faultline_e2e::{ControlPlane, unique_name, wait_for};
use faultline_test_support::fixtures::deployment;
use faultline_webhook::config::{FAULTS_ANNOTATION, INJECTED_LABEL};
use faultline_webhook::controller::{Controller, ControllerConfig, LeaseConfig, ReviewLimits};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::support::init_logs;

const WAIT: Duration = Duration::from_secs(60);

fn with_faults(mut d: Deployment, faults: &str) -> Deployment {
    d.metadata.annotations = Some([(FAULTS_ANNOTATION.to_owned(), faults.to_owned())].into());
    d
}

async fn annotation_removed(api: &Api<Deployment>, name: &str) -> anyhow::Result<()> {
    wait_for(
        format!("the controller to remove the expired annotation of {name}"),
        WAIT,
        || async {
            let meta = api.get_metadata(name).await.map_err(|e| e.to_string())?;
            let annotations = meta.metadata.annotations.unwrap_or_default();
            if annotations.contains_key(FAULTS_ANNOTATION) {
                Err(format!("{annotations:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn policies_expire_on_workloads_without_injected_pods() -> anyhow::Result<()> {
    init_logs();
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    let namespaces: Api<Namespace> = Api::all(cp.client());
    if namespaces.get_opt("faultline-system").await?.is_none() {
        cp.create_namespace("faultline-system", &[]).await?;
    }
    // A namespace that is not opted in: nothing here is injected.
    let ns = unique_name("idle-expiry");
    cp.create_namespace(&ns, &[]).await?;

    // Its own Lease, so this controller leads whatever else runs in the binary.
    let mut lease = LeaseConfig::new("idle-expiry");
    lease.name = unique_name("faultline-controller-idle");
    lease.renew = Duration::from_millis(500);
    lease.duration = Duration::from_secs(3);
    let stop = CancellationToken::new();
    let controller = Controller::new(
        cp.client(),
        ControllerConfig {
            lease,
            heartbeat: Duration::from_secs(10),
            token_reviews: ReviewLimits::default(),
            streams: faultline_webhook::controller::StreamLimits::default(),
        },
        stop.clone(),
    );
    let metrics = controller.metrics().clone();
    let task = tokio::spawn(controller.run());

    let deployments: Api<Deployment> = Api::namespaced(cp.client(), &ns);
    let pp = PostParams::default();
    let slow = "rules:\n- name: slow\n  match: {direction: inbound}\n  delay: {fixed: 100ms}\n";
    let until = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(4))
        .context("a time in range")?;
    deployments
        .create(
            &pp,
            &with_faults(
                deployment("scaled-to-zero").replicas(0).build(),
                &format!("duration: 3s\n{slow}"),
            ),
        )
        .await?;
    deployments
        .create(
            &pp,
            &with_faults(
                deployment("uninjected").build(),
                &format!("until: {until}\n{slow}"),
            ),
        )
        .await?;

    // The second one's pod exists, and is not injected.
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    let pod = wait_for("the pod of deployment uninjected", WAIT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=uninjected"))
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .into_iter()
            .next()
            .ok_or_else(|| "no pod yet".to_owned())
    })
    .await?;
    ensure!(
        pod.metadata
            .labels
            .as_ref()
            .is_none_or(|l| !l.contains_key(INJECTED_LABEL)),
        "the pod is injected"
    );

    for name in ["scaled-to-zero", "uninjected"] {
        let (_, note) =
            faultline_e2e::events::wait_event(&cp.client(), &ns, name, "FaultsApplied", WAIT)
                .await?;
        ensure!(note.contains("0 pod(s)"), "{name}: {note}");
        annotation_removed(&deployments, name).await?;
        let (_, note) =
            faultline_e2e::events::wait_event(&cp.client(), &ns, name, "FaultsRecovered", WAIT)
                .await?;
        ensure!(note.contains("expired"), "{name}: {note}");
    }
    ensure!(
        metrics.expired.get() >= 2,
        "expired counter {}",
        metrics.expired.get()
    );
    stop.cancel();
    task.await?;
    Ok(())
}
