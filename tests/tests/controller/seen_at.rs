//! The leader records when it first saw a policy version once, on a real
//! kube-apiserver: every edit of the annotation is followed by other watch
//! events (the Deployment controller copies the annotation onto the
//! ReplicaSet; here also a namespace whose labels change every few
//! milliseconds), and one of them can reach the controller after its
//! `faults-seen-at` write and before the watch echoes that write back, while
//! the object still shows the previous version's record. That must not
//! write the record again (with a later time).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::ensure;
use faultline_e2e::{ControlPlane, unique_name, wait_for};
use faultline_test_support::fixtures::deployment;
use faultline_webhook::config::FAULTS_ANNOTATION;
use faultline_webhook::controller::version::text_version;
use faultline_webhook::controller::{Controller, ControllerConfig, LeaseConfig, ReviewLimits};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use crate::support::init_logs;

const SEEN_AT: &str = "faultline.dev/faults-seen-at";
const WAIT: Duration = Duration::from_secs(60);
const ROUNDS: usize = 12;

/// Every distinct seen-at value the Deployment carried, by the version it names.
type Records = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

fn watch_records(
    api: Api<Deployment>,
    name: &str,
    records: Records,
) -> tokio::task::JoinHandle<()> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, config));
        while let Some(event) = events.next().await {
            let Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) = event else {
                continue;
            };
            let seen = d.metadata.annotations.and_then(|a| a.get(SEEN_AT).cloned());
            if let (Some(seen), Ok(mut records)) = (seen, records.lock())
                && let Some((_, version)) = seen.split_once(';')
            {
                records
                    .entry(version.to_owned())
                    .or_default()
                    .insert(seen.clone());
            }
        }
    })
}

/// Relabels the namespace as fast as the API server answers: a steady
/// stream of watch events for the controller's loop.
fn churn(cp: &ControlPlane, ns: &str, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let namespaces: Api<Namespace> = Api::all(cp.client());
    let ns = ns.to_owned();
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.is_cancelled() {
            i += 1;
            let patch = serde_json::json!({"metadata": {"labels": {"churn": i.to_string()}}});
            let _ = namespaces
                .patch_metadata(&ns, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    })
}

#[tokio::test]
async fn each_policy_version_is_recorded_once() -> anyhow::Result<()> {
    init_logs();
    // Its own API server: no other test's controller may write here.
    let Some(cp) = ControlPlane::start_or_skip().await else {
        return Ok(());
    };
    cp.create_namespace("faultline-system", &[]).await?;
    let ns = unique_name("seen-at");
    cp.create_namespace(&ns, &[]).await?;
    let stop = CancellationToken::new();
    let controller = Controller::new(
        cp.client(),
        ControllerConfig {
            lease: LeaseConfig::new("seen-at"),
            heartbeat: Duration::from_secs(10),
            token_reviews: ReviewLimits::default(),
            streams: faultline_webhook::controller::StreamLimits::default(),
        },
        stop.clone(),
    );
    let metrics = controller.metrics().clone();
    let task = tokio::spawn(controller.run());
    wait_for("the controller to lead", WAIT, || async {
        (metrics.leader.get() == 1)
            .then_some(())
            .ok_or("not leader yet")
    })
    .await?;

    let deployments: Api<Deployment> = Api::namespaced(cp.client(), &ns);
    deployments
        .create(&PostParams::default(), &deployment("web").build())
        .await?;
    let records = Records::default();
    let watch = watch_records(deployments.clone(), "web", records.clone());
    let churning = churn(&cp, &ns, stop.child_token());

    for round in 0..ROUNDS {
        let text = format!(
            "rules:\n- name: r{round}\n  match: {{direction: inbound}}\n  abort: {{status: 503}}\n"
        );
        let version = text_version(&text);
        let patch = serde_json::json!({"metadata": {"annotations": {FAULTS_ANNOTATION: text}}});
        deployments
            .patch_metadata("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        wait_for(
            format!("round {round}: the seen-at record"),
            WAIT,
            || async {
                let recorded = records
                    .lock()
                    .ok()
                    .is_some_and(|r| r.contains_key(&version));
                recorded.then_some(()).ok_or("not recorded yet")
            },
        )
        .await?;
        // Time for a second write to land, if one is coming.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.cancel();
    let _ = churning.await;
    watch.abort();
    task.await?;
    let records = records.lock().map(|r| r.clone()).unwrap_or_default();
    let twice: Vec<_> = records
        .iter()
        .filter(|(_, values)| values.len() > 1)
        .collect();
    ensure!(records.len() == ROUNDS, "versions recorded: {records:?}");
    ensure!(twice.is_empty(), "recorded more than once: {twice:?}");
    Ok(())
}
