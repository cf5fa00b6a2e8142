//! `kubectl fault inject / list / status / recover` against running pods:
//! what the plugin writes reaches the proxies, and what it reports is what
//! the proxies run.

use std::time::{Duration, Instant};

use faultline_e2e::node::{NodeCluster, run};
use faultline_e2e::wait_for;

use crate::support::{APPLY, until_all_answer, web_app};

async fn plugin(cluster: &NodeCluster, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = cluster.kubectl_fault();
    cmd.args(args);
    Ok(run(format!("kubectl fault {}", args.join(" ")), &mut cmd).await?)
}

/// The IPs of the ready pods of `web`.
async fn web_ips(cluster: &NodeCluster, ns: &str) -> anyhow::Result<Vec<String>> {
    let pods = cluster.ready_pods(ns, "app=web", 2).await?;
    pods.iter().map(faultline_e2e::node::apps::pod_ip).collect()
}

/// The pod rows of `kubectl fault status` (after the header row).
fn status_rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip_while(|l| !l.starts_with("POD"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .take_while(|l| !l.starts_with("Pods without"))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[tokio::test]
async fn kubectl_fault_inject_list_status_recover() -> anyhow::Result<()> {
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::shared_lock().await;
    let (ns, _) = web_app(cluster, "node-cli", 2).await?;

    // Right after a rollout: only the new pods, counts as integers, no advice.
    cluster
        .kubectl_ok(&["rollout", "restart", "-n", &ns, "deploy/web"])
        .await?;
    cluster.rollout_status(&ns, "deploy/web").await?;
    let fresh = plugin(cluster, &["status", "deploy/web", "-n", &ns]).await?;
    eprintln!("{fresh}");
    let rows = status_rows(&fresh);
    anyhow::ensure!(
        // `-0` as a count: looked for in the pods' cells, since the
        // namespace's random suffix may itself start with 0.
        rows.len() == 2
            && rows.iter().flatten().all(|cell| cell != "-0")
            && !fresh.contains("Pods without a proxy"),
        "status after a rollout: {fresh}"
    );
    let ips = web_ips(cluster, &ns).await?;

    let start = Instant::now();
    let out = plugin(
        cluster,
        &[
            "inject",
            "deploy/web",
            "-n",
            &ns,
            "--abort",
            "503",
            "--path",
            "/api/*",
        ],
    )
    .await?;
    eprintln!("{out}");
    // One identifier: the version inject prints is the one list, status and
    // the proxies show.
    let version = out
        .split("fault policy ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| anyhow::anyhow!("no version in: {out}"))?
        .to_owned();
    until_all_answer(&ips, "/api/x", 503, Duration::ZERO, start).await?;
    until_all_answer(&ips, "/clean.html", 200, Duration::ZERO, start).await?;

    let list = plugin(cluster, &["list", "-n", &ns]).await?;
    eprintln!("{list}");
    anyhow::ensure!(
        list.contains("deployment/web") && list.contains(&version) && list.contains("2/2"),
        "list: {list}"
    );

    let status = wait_for(
        "every proxy connected on the expected version",
        APPLY,
        || async {
            let out = plugin(cluster, &["status", "deploy/web", "-n", &ns]).await?;
            let rows = status_rows(&out);
            let good = rows.len() == 2
                && rows
                    .iter()
                    .all(|r| r.len() >= 5 && r[1] == "yes" && r[2] == "yes" && r[3] == r[4])
                && rows.iter().all(|r| r[3] == version);
            if good {
                Ok(out)
            } else {
                Err(anyhow::anyhow!("{out}"))
            }
        },
    )
    .await?;
    eprintln!("{status}");

    let start = Instant::now();
    plugin(cluster, &["recover", "deploy/web", "-n", &ns]).await?;
    let took = until_all_answer(&ips, "/api/x", 200, Duration::ZERO, start).await?;
    eprintln!("clean {took:?} after kubectl fault recover");
    crate::support::cleanup(cluster, &ns).await;
    Ok(())
}
