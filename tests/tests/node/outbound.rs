//! Outbound: a pod calling another pod gets the abort its policy says, and a
//! `partition` by `podSelector` cuts it off from exactly the selected pods.

use faultline_e2e::node::NodeCluster;
use faultline_e2e::node::apps;
use faultline_e2e::wait_for;

use crate::support::{APPLY, annotate, create_deployment, namespace, ready_app, web_spec};

const ABORT_OUTBOUND: &str = "rules:
- name: server-down
  match: {direction: outbound, port: 8080, path: /api/*}
  abort: {status: 503}
";
const PARTITION: &str = "rules:
- name: cut-off
  match: {direction: outbound, to: {podSelector: {app: server}}}
  partition: {mode: reject}
";

/// `wget` from the client pod: (success, output).
async fn fetch(
    cluster: &NodeCluster,
    ns: &str,
    client: &str,
    url: &str,
) -> anyhow::Result<(bool, String)> {
    cluster
        .exec(ns, client, &format!("wget -q -O - {url} 2>&1"))
        .await
}

async fn until_fetch(
    cluster: &NodeCluster,
    ns: &str,
    client: &str,
    url: &str,
    want: impl Fn(bool, &str) -> bool,
) -> anyhow::Result<String> {
    Ok(wait_for(format!("{url} from {client}"), APPLY, || async {
        let (ok, out) = fetch(cluster, ns, client, url).await?;
        if want(ok, &out) {
            Ok(out)
        } else {
            Err(anyhow::anyhow!("ok={ok}: {}", out.trim()))
        }
    })
    .await?)
}

#[tokio::test]
async fn outbound_abort_and_partition_by_pod_selector() -> anyhow::Result<()> {
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::shared_lock().await;
    let ns = namespace(cluster, "node-outbound", true).await?;
    create_deployment(cluster, &ns, "server", 1, web_spec()).await?;
    create_deployment(cluster, &ns, "other", 1, web_spec()).await?;
    create_deployment(cluster, &ns, "client", 1, apps::client_spec()).await?;
    let server = ready_app(cluster, &ns, "server", 1, true)
        .await?
        .remove(0)
        .1;
    let other = ready_app(cluster, &ns, "other", 1, true).await?.remove(0).1;
    let client = apps::name(
        &ready_app(cluster, &ns, "client", 1, true)
            .await?
            .remove(0)
            .0,
    );
    let server_api = format!("http://{server}:8080/api/x");
    let server_clean = format!("http://{server}:8080/clean.html");
    let other_clean = format!("http://{other}:8080/clean.html");

    let (ok, out) = fetch(cluster, &ns, &client, &server_api).await?;
    anyhow::ensure!(ok && out.trim() == "api", "before any policy: {out}");

    annotate(cluster, &ns, "client", Some(ABORT_OUTBOUND)).await?;
    let out = until_fetch(cluster, &ns, &client, &server_api, |ok, out| {
        !ok && out.contains("503")
    })
    .await?;
    eprintln!("outbound abort seen by the client: {}", out.trim());
    let (ok, out) = fetch(cluster, &ns, &client, &server_clean).await?;
    anyhow::ensure!(ok && out.trim() == "clean", "other paths stay clean: {out}");

    annotate(cluster, &ns, "client", Some(PARTITION)).await?;
    let out = until_fetch(cluster, &ns, &client, &server_clean, |ok, _| !ok).await?;
    eprintln!("partitioned from app=server: {}", out.trim());
    let (ok, out) = fetch(cluster, &ns, &client, &other_clean).await?;
    anyhow::ensure!(
        ok && out.trim() == "clean",
        "a pod outside the selector stays reachable: {out}"
    );

    annotate(cluster, &ns, "client", None).await?;
    until_fetch(cluster, &ns, &client, &server_api, |ok, out| {
        ok && out.trim() == "api"
    })
    .await?;
    crate::support::cleanup(cluster, &ns).await;
    Ok(())
}
