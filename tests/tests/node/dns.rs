//! DNS: a pod annotated `faultline.dev/capture-dns: "true"` has its lookups
//! go through its proxy, so a DNS rule makes a name fail with NXDOMAIN
//! while other names resolve; a pod without the annotation resolves the
//! same name under the same policy, and its proxy's `/policy` says why.
//! The node has no cluster DNS: the pods' `dnsConfig` names a resolver
//! stand-in this test runs on the node's address (`faultline_test_support::dns`),
//! and the app is busybox's own `nslookup`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context;
use faultline_e2e::node::apps;
use faultline_e2e::node::{NODE_IP, NodeCluster};
use faultline_e2e::wait_for;
use faultline_policy::contract;
use faultline_test_support::dns::{ANSWER_V4, Resolver};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};
use kube::api::{Api, PostParams};

use crate::support::{APPLY, annotate, namespace, ready_app};

const SHOP_GONE: &str = r#"rules:
- name: shop-gone
  match: {protocol: dns, dns: {name: "*.shop.test", types: [A, AAAA]}}
  dns: {rcode: NXDOMAIN}
"#;

/// busybox that resolves with the stand-in on the node's address.
fn client_spec() -> PodSpec {
    let mut spec = apps::client_spec();
    spec.dns_policy = Some("None".into());
    spec.dns_config = Some(PodDNSConfig {
        nameservers: Some(vec![NODE_IP.into()]),
        options: Some(vec![PodDNSConfigOption {
            name: Some("timeout".into()),
            value: Some("1".into()),
        }]),
        searches: None,
    });
    spec
}

async fn create_client(
    cluster: &NodeCluster,
    ns: &str,
    name: &str,
    capture_dns: bool,
) -> anyhow::Result<()> {
    let mut deployment = apps::deployment(name, 1, client_spec());
    if capture_dns {
        let annotations = BTreeMap::from([(
            contract::CAPTURE_DNS_ANNOTATION.to_owned(),
            "true".to_owned(),
        )]);
        if let Some(meta) = deployment
            .spec
            .as_mut()
            .and_then(|s| s.template.metadata.as_mut())
        {
            meta.annotations = Some(annotations);
        }
    }
    Api::<Deployment>::namespaced(cluster.client(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .with_context(|| format!("create deployment {ns}/{name}"))?;
    Ok(())
}

/// `nslookup NAME` in the pod: (success, output).
async fn lookup(
    cluster: &NodeCluster,
    ns: &str,
    pod: &str,
    name: &str,
) -> anyhow::Result<(bool, String)> {
    cluster
        .exec(ns, pod, &format!("nslookup -type=a {name} 2>&1"))
        .await
}

fn resolved(out: &str) -> bool {
    out.contains(&ANSWER_V4.to_string())
}

async fn until_lookup(
    cluster: &NodeCluster,
    ns: &str,
    pod: &str,
    name: &str,
    want: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    Ok(
        wait_for(format!("nslookup {name} in {pod}"), APPLY, || async {
            let (_, out) = lookup(cluster, ns, pod, name).await?;
            if want(&out) {
                Ok(out)
            } else {
                Err(anyhow::anyhow!("{}", out.trim()))
            }
        })
        .await?,
    )
}

async fn admin_get(ip: &str, path: &str) -> anyhow::Result<String> {
    let url = format!("http://{ip}:{}{path}", contract::ADMIN_PORT);
    let (status, body, _) = apps::get(&apps::http_client(), &url).await?;
    anyhow::ensure!(status == 200, "{url}: {status}");
    Ok(body)
}

#[tokio::test]
async fn captured_dns_gets_nxdomain_under_a_policy_and_resolves_otherwise() -> anyhow::Result<()> {
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::shared_lock().await;
    let addr: SocketAddr = format!("{NODE_IP}:53").parse()?;
    let resolver = Resolver::start(addr)
        .await
        .context("start the resolver stand-in on the node's address, port 53")?;
    let ns = namespace(cluster, "node-dns", true).await?;
    create_client(cluster, &ns, "captured", true).await?;
    create_client(cluster, &ns, "plain", false).await?;
    let (captured_pod, captured_ip) = ready_app(cluster, &ns, "captured", 1, true)
        .await?
        .remove(0);
    let (plain_pod, plain_ip) = ready_app(cluster, &ns, "plain", 1, true).await?.remove(0);
    let (captured, plain) = (apps::name(&captured_pod), apps::name(&plain_pod));

    // Before any policy, both resolve; the captured pod's proxy saw it.
    let out = until_lookup(cluster, &ns, &captured, "db.shop.test", resolved).await?;
    eprintln!("captured pod, no policy: {}", out.trim());
    let metrics = admin_get(&captured_ip, "/metrics").await?;
    anyhow::ensure!(
        faultline_test_support::metrics::sum(&metrics, "faultline_dns_queries_total", None) >= 1.0,
        "the proxy carried the lookup: {metrics}"
    );
    let plain_metrics = admin_get(&plain_ip, "/metrics").await?;
    anyhow::ensure!(
        !plain_metrics.contains("faultline_dns_queries_total"),
        "no DNS listener without the annotation"
    );

    annotate(cluster, &ns, "captured", Some(SHOP_GONE)).await?;
    annotate(cluster, &ns, "plain", Some(SHOP_GONE)).await?;
    let out = until_lookup(cluster, &ns, &captured, "db.shop.test", |out| {
        out.contains("NXDOMAIN")
    })
    .await?;
    eprintln!("captured pod under the policy: {}", out.trim());
    let (_, out) = lookup(cluster, &ns, &captured, "api.other.test").await?;
    anyhow::ensure!(resolved(&out), "other names still resolve: {out}");
    let metrics = admin_get(&captured_ip, "/metrics").await?;
    anyhow::ensure!(
        faultline_test_support::metrics::value(
            &metrics,
            "faultline_faults_injected_total{rule=\"shop-gone\",kind=\"dns\"}"
        ) >= 1.0,
        "{metrics}"
    );

    // Without the annotation the same policy does nothing to DNS, and says so.
    let (_, out) = lookup(cluster, &ns, &plain, "db.shop.test").await?;
    anyhow::ensure!(resolved(&out), "the plain pod resolves: {out}");
    let policy = wait_for("the plain pod's proxy to warn", APPLY, || async {
        let body = admin_get(&plain_ip, "/policy").await?;
        if body.contains("faultline.dev/capture-dns") {
            Ok(body)
        } else {
            Err(anyhow::anyhow!("{body}"))
        }
    })
    .await?;
    eprintln!(
        "plain pod's /policy warns: {}",
        policy
            .lines()
            .filter(|l| l.contains("capture-dns"))
            .collect::<String>()
            .trim()
    );

    annotate(cluster, &ns, "captured", None).await?;
    until_lookup(cluster, &ns, &captured, "db.shop.test", resolved).await?;
    anyhow::ensure!(
        !resolver.queries().is_empty(),
        "the stand-in answered the clean lookups"
    );
    crate::support::cleanup(cluster, &ns).await;
    Ok(())
}
