//! Not only Deployments: StatefulSets and DaemonSets are injected too.

use faultline_e2e::node::NodeCluster;
use faultline_e2e::node::apps::{self, app_labels, template};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::support::{all_answer_now, namespace, ready_app, web_spec};

fn selector(app: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(app_labels(app)),
        ..Default::default()
    }
}

#[tokio::test]
async fn statefulsets_and_daemonsets_are_injected() -> anyhow::Result<()> {
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::shared_lock().await;
    let ns = namespace(cluster, "node-workloads", true).await?;
    let sts = StatefulSet {
        metadata: ObjectMeta {
            name: Some("db".into()),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some("db".into()),
            selector: selector("db"),
            template: template("db", web_spec()),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<StatefulSet>::namespaced(cluster.client(), &ns)
        .create(&PostParams::default(), &sts)
        .await?;
    let ds = DaemonSet {
        metadata: ObjectMeta {
            name: Some("agent".into()),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            selector: selector("agent"),
            template: template("agent", web_spec()),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<DaemonSet>::namespaced(cluster.client(), &ns)
        .create(&PostParams::default(), &ds)
        .await?;
    for app in ["db", "agent"] {
        let pods = ready_app(cluster, &ns, app, 1, true).await?;
        let ips: Vec<String> = pods.iter().map(|(_, ip)| ip.clone()).collect();
        all_answer_now(&ips, "/clean.html", 200).await?;
        eprintln!(
            "{app}: {}",
            apps::describe(&pods.into_iter().map(|(p, _)| p).collect::<Vec<_>>())
        );
    }
    crate::support::cleanup(cluster, &ns).await;
    Ok(())
}
