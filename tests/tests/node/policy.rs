//! Annotate the Deployment: every pod's proxy applies the policy within a
//! second, other paths stay clean; remove it: clean again. A `duration`
//! removes the annotation itself, with an Event.

use std::time::{Duration, Instant};

use faultline_e2e::node::NodeCluster;
use faultline_e2e::wait_for;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;

use crate::support::{FAULTS, all_answer_now, annotate, until_all_answer, wait_event, web_app};

const SLOW_AND_DOWN: &str = "rules:
- name: slow
  match: {direction: inbound, port: 8080, path: /slow.html}
  delay: {fixed: 400ms}
- name: api-down
  match: {direction: inbound, port: 8080, path: /api/*}
  abort: {status: 503, body: injected by faultline}
";

#[tokio::test]
async fn annotation_applies_on_every_pod_and_removal_recovers() -> anyhow::Result<()> {
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::shared_lock().await;
    let (ns, ips) = web_app(cluster, "node-policy", 2).await?;
    all_answer_now(&ips, "/api/x", 200).await?;

    let start = Instant::now();
    annotate(cluster, &ns, "web", Some(SLOW_AND_DOWN)).await?;
    let applied = until_all_answer(&ips, "/api/x", 503, Duration::ZERO, start).await?;
    until_all_answer(&ips, "/slow.html", 200, Duration::from_millis(400), start).await?;
    eprintln!("policy applied on every pod {applied:?} after the annotation");
    all_answer_now(&ips, "/clean.html", 200).await?;

    let start = Instant::now();
    annotate(cluster, &ns, "web", None).await?;
    let recovered = until_all_answer(&ips, "/api/x", 200, Duration::ZERO, start).await?;
    eprintln!("clean on every pod {recovered:?} after removing the annotation");
    crate::support::cleanup(cluster, &ns).await;
    Ok(())
}

#[tokio::test]
async fn duration_expiry_removes_the_annotation_with_an_event() -> anyhow::Result<()> {
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::shared_lock().await;
    let (ns, ips) = web_app(cluster, "node-expiry", 1).await?;

    let policy = "duration: 4s\nrules:\n- name: brief\n  match: {direction: inbound, path: /api/*}\n  abort: {status: 503}\n";
    let start = Instant::now();
    annotate(cluster, &ns, "web", Some(policy)).await?;
    until_all_answer(&ips, "/api/x", 503, Duration::ZERO, start).await?;

    let api: Api<Deployment> = Api::namespaced(cluster.client(), &ns);
    wait_for(
        "the controller to remove the expired annotation",
        Duration::from_secs(60),
        || async {
            let d = api.get("web").await?;
            match d.metadata.annotations.as_ref().and_then(|a| a.get(FAULTS)) {
                None => Ok(()),
                Some(_) => Err(anyhow::anyhow!(
                    "still annotated after {:?}",
                    start.elapsed()
                )),
            }
        },
    )
    .await?;
    let note = wait_event(cluster, &ns, "web", "FaultsRecovered").await?;
    eprintln!("expired after {:?}: {note}", start.elapsed());
    until_all_answer(&ips, "/api/x", 200, Duration::ZERO, Instant::now()).await?;
    crate::support::cleanup(cluster, &ns).await;
    Ok(())
}
