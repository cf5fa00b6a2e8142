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

/// Classic layout (1.20): the proxy is an ordinary container. When the app
/// exits, the controller tells the proxy to finish, so the Job completes.
#[tokio::test]
async fn a_job_in_a_labelled_namespace_completes() -> anyhow::Result<()> {
    use k8s_openapi::api::batch::v1::{Job, JobSpec};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ListParams;
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::shared_lock().await;
    let ns = namespace(cluster, "node-job", true).await?;
    let mut spec = apps::client_spec();
    spec.restart_policy = Some("Never".into());
    if let Some(c) = spec.containers.first_mut() {
        c.command = Some(vec![
            "sh".into(),
            "-c".into(),
            "echo working; sleep 2; echo done".into(),
        ]);
    }
    let job = Job {
        metadata: ObjectMeta {
            name: Some("batch".into()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            template: template("batch", spec),
            ..Default::default()
        }),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let jobs: Api<Job> = Api::namespaced(cluster.client(), &ns);
    jobs.create(&PostParams::default(), &job).await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), &ns);
    faultline_e2e::wait_for("the Job to succeed", crate::support::WAIT, || async {
        let succeeded = jobs
            .get("batch")
            .await?
            .status
            .and_then(|s| s.succeeded)
            .unwrap_or(0);
        let list = pods
            .list(&ListParams::default().labels("app=batch"))
            .await?
            .items;
        if succeeded == 1 {
            Ok(list)
        } else {
            Err(anyhow::anyhow!(
                "succeeded {succeeded}: {}",
                apps::describe(&list)
            ))
        }
    })
    .await?;
    let list = pods
        .list(&ListParams::default().labels("app=batch"))
        .await?
        .items;
    let pod = list.first().ok_or_else(|| anyhow::anyhow!("no pod"))?;
    anyhow::ensure!(
        apps::has_sidecar(pod),
        "the Job's pod was injected: {}",
        apps::describe(&list)
    );
    anyhow::ensure!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"),
        "{}",
        apps::describe(&list)
    );
    eprintln!(
        "job completed in {:?}: {}",
        started.elapsed(),
        apps::describe(&list)
    );
    crate::support::cleanup(cluster, &ns).await;
    Ok(())
}

/// A CronJob's Jobs complete too (1.20 serves CronJobs as batch/v1beta1).
#[tokio::test]
async fn a_cronjobs_job_in_a_labelled_namespace_completes() -> anyhow::Result<()> {
    use k8s_openapi::api::batch::v1::Job;
    use kube::api::ListParams;
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::shared_lock().await;
    let ns = namespace(cluster, "node-cron", true).await?;
    let manifest = format!(
        "apiVersion: batch/v1beta1\nkind: CronJob\nmetadata: {{name: tick, namespace: {ns}}}\n\
         spec:\n  schedule: '* * * * *'\n  concurrencyPolicy: Forbid\n  jobTemplate:\n    spec:\n      \
         backoffLimit: 0\n      template:\n        metadata: {{labels: {{app: tick}}}}\n        spec:\n          \
         restartPolicy: Never\n          terminationGracePeriodSeconds: 2\n          containers:\n          \
         - {{name: app, image: {image}, imagePullPolicy: IfNotPresent, command: [sh, -c, 'echo tick']}}\n",
        image = apps::BUSYBOX
    );
    let path = std::env::temp_dir().join(format!("{ns}-cronjob.yaml"));
    std::fs::write(&path, manifest)?;
    let applied = cluster
        .kubectl_ok(&["apply", "-f", &path.display().to_string()])
        .await;
    let _ = std::fs::remove_file(&path);
    applied?;
    let started = std::time::Instant::now();
    let jobs: Api<Job> = Api::namespaced(cluster.client(), &ns);
    // The first run starts at the next minute.
    faultline_e2e::wait_for(
        "a Job of the CronJob to succeed",
        std::time::Duration::from_secs(180),
        || async {
            let list = jobs.list(&ListParams::default()).await?.items;
            let done = list
                .iter()
                .any(|j| j.status.as_ref().and_then(|s| s.succeeded) == Some(1));
            if done {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{} jobs, none succeeded yet", list.len()))
            }
        },
    )
    .await?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cluster.client(), &ns);
    let list = pods
        .list(&ListParams::default().labels("app=tick"))
        .await?
        .items;
    eprintln!(
        "cron job completed {:?} after creation: {}",
        started.elapsed(),
        apps::describe(&list)
    );
    anyhow::ensure!(
        list.iter().any(|p| apps::has_sidecar(p)
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")),
        "an injected pod succeeded: {}",
        apps::describe(&list)
    );
    crate::support::cleanup(cluster, &ns).await;
    Ok(())
}
