//! The injection webhook against a real kube-apiserver (1.20): the webhook
//! runs in this process over TLS on 127.0.0.1, registered with the
//! production webhook configurations (`clientConfig.url` + `caBundle`); the
//! API server calls it, applies its patch and then runs its own validation
//! on the result.
//!
//! Each test runs its own webhook and registration, confined to its own
//! namespaces by a scope label (see `faultline_e2e::webhook`), so tests run
//! in parallel on the binary's one control plane.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use faultline_e2e::webhook::{
    Registration, RunningWebhook, SCOPE_LABEL, check_injected, check_untouched, plain_pod,
    register_scoped, wait_until_injecting,
};
use faultline_e2e::{ControlPlane, unique_name, wait_for};
use faultline_test_support::fixtures::deployment;
use faultline_webhook::Config;
use faultline_webhook::config::{FAULTS_ANNOTATION, INJECT_LABEL, NAMESPACE_INJECTION_LABEL};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

const WAIT: Duration = Duration::from_secs(60);

/// One test's world: the shared control plane, an admin client, this
/// test's webhook and its registration.
struct Scene {
    cp: &'static ControlPlane,
    client: kube::Client,
    scope: String,
    webhook: RunningWebhook,
    registration: Registration,
}

impl Scene {
    async fn start(test: &str) -> anyhow::Result<Option<Scene>> {
        let Some(cp) = ControlPlane::shared_or_skip().await else {
            return Ok(None);
        };
        let client = cp.client();
        let scope = unique_name(test);
        let webhook = RunningWebhook::start(Config::default()).await?;
        let registration = register_scoped(&client, &scope, &webhook).await?;
        Ok(Some(Scene {
            cp,
            client,
            scope,
            webhook,
            registration,
        }))
    }

    /// A namespace of this test; `opted_in` adds `faultline.dev/injection=enabled`.
    async fn namespace(&self, opted_in: bool) -> anyhow::Result<String> {
        let name = unique_name(&self.scope);
        let mut labels = vec![(SCOPE_LABEL, self.scope.as_str())];
        if opted_in {
            labels.push((NAMESPACE_INJECTION_LABEL, "enabled"));
        }
        self.cp.create_namespace(&name, &labels).await?;
        Ok(name)
    }

    /// An opted-in namespace whose pods the webhook already injects.
    async fn injecting_namespace(&self) -> anyhow::Result<String> {
        let ns = self.namespace(true).await?;
        wait_until_injecting(&self.client, &ns).await?;
        Ok(ns)
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn finish(self) -> anyhow::Result<()> {
        self.registration.delete(&self.client).await?;
        self.webhook.stop().await?;
        self.cp.check_running()?;
        Ok(())
    }
}

fn labelled(mut pod: Pod, key: &str, value: &str) -> Pod {
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_owned(), value.to_owned());
    pod
}

#[tokio::test]
async fn pods_in_an_opted_in_namespace_are_injected_and_stored() -> anyhow::Result<()> {
    let Some(scene) = Scene::start("wh-pod").await? else {
        return Ok(());
    };
    let ns = scene.injecting_namespace().await?;
    let pods = scene.pods(&ns);
    let created = pods
        .create(&PostParams::default(), &plain_pod("app-0"))
        .await?;
    check_injected(&created)?;
    // What the API server persisted after its own validation, not just the
    // create response.
    check_injected(&pods.get("app-0").await?)?;

    // Pods of controllers arrive with generateName and no name.
    let mut unnamed = plain_pod("");
    unnamed.metadata.name = None;
    unnamed.metadata.generate_name = Some("gen-".into());
    let created = pods.create(&PostParams::default(), &unnamed).await?;
    assert!(
        created
            .metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("gen-"))
    );
    check_injected(&created)?;
    scene.finish().await
}

#[tokio::test]
async fn unlabelled_namespaces_and_opted_out_pods_are_untouched() -> anyhow::Result<()> {
    let Some(scene) = Scene::start("wh-optout").await? else {
        return Ok(());
    };
    // The webhook is live (proven in an opted-in namespace) before anything
    // is expected to be left alone.
    let opted_in = scene.injecting_namespace().await?;
    let plain_ns = scene.namespace(false).await?;
    let pp = PostParams::default();

    let out = labelled(plain_pod("opted-out"), INJECT_LABEL, "false");
    check_untouched(&scene.pods(&opted_in).create(&pp, &out).await?)?;

    check_untouched(
        &scene
            .pods(&plain_ns)
            .create(&pp, &plain_pod("plain"))
            .await?,
    )?;

    // A pod can opt in on its own in a namespace that did not.
    let opt_in = labelled(plain_pod("opted-in"), INJECT_LABEL, "true");
    check_injected(&scene.pods(&plain_ns).create(&pp, &opt_in).await?)?;
    scene.finish().await
}

const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

fn restarted(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(RESTARTED_AT))
}

#[tokio::test]
async fn deployment_pods_are_injected_also_after_rollout_restart() -> anyhow::Result<()> {
    let Some(scene) = Scene::start("wh-deploy").await? else {
        return Ok(());
    };
    let ns = scene.injecting_namespace().await?;
    Api::<Deployment>::namespaced(scene.client.clone(), &ns)
        .create(
            &PostParams::default(),
            &deployment("web").replicas(2).build(),
        )
        .await?;
    let pods = scene.pods(&ns);
    let lp = ListParams::default().labels("app=web");
    let first = wait_for("2 pods of deployment web", WAIT, || async {
        let items = pods.list(&lp).await?.items;
        match items.len() {
            2 => Ok(items),
            n => Err(anyhow!("{n} pods")),
        }
    })
    .await?;
    for pod in &first {
        check_injected(pod)?;
    }

    let out = scene
        .cp
        .kubectl()
        .args(["rollout", "restart", "deployment/web", "-n", &ns])
        .output()
        .await
        .context("run kubectl (install kubectl or set KUBECTL)")?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let new = wait_for("pods of the restarted template", WAIT, || async {
        let items: Vec<Pod> = pods
            .list(&lp)
            .await?
            .items
            .into_iter()
            .filter(restarted)
            .collect();
        if items.is_empty() {
            bail!("no pod of the new ReplicaSet yet")
        }
        Ok(items)
    })
    .await?;
    for pod in &new {
        check_injected(pod)?;
    }
    scene.finish().await
}

/// A fault rule whose abort status is not an HTTP status.
const INVALID_FAULTS: &str =
    "rules:\n- name: broken\n  match: {direction: inbound}\n  abort: {status: 700}\n";
const VALID_FAULTS: &str =
    "rules:\n- name: slow\n  match: {direction: inbound}\n  delay: {fixed: 100ms}\n";

fn with_template_faults(mut d: Deployment, faults: &str) -> Deployment {
    if let Some(meta) = d.spec.as_mut().and_then(|s| s.template.metadata.as_mut()) {
        meta.annotations = Some(BTreeMap::from([(
            FAULTS_ANNOTATION.to_owned(),
            faults.to_owned(),
        )]));
    }
    d
}

fn assert_names_rule_and_field(err: &kube::Error) {
    let msg = err.to_string();
    assert!(
        msg.contains("denied the request"),
        "not an admission denial: {msg}"
    );
    assert!(msg.contains("rules[0]"), "rule not named: {msg}");
    assert!(msg.contains("abort.status"), "field not named: {msg}");
}

#[tokio::test]
async fn invalid_fault_annotations_are_refused_naming_rule_and_field() -> anyhow::Result<()> {
    let Some(scene) = Scene::start("wh-faults").await? else {
        return Ok(());
    };
    let ns = scene.injecting_namespace().await?;
    let deployments: Api<Deployment> = Api::namespaced(scene.client.clone(), &ns);
    let pp = PostParams::default();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };

    // The validating configuration has its own informer in the API server:
    // wait until it is consulted (dry runs store nothing).
    let bad = with_template_faults(deployment("bad").build(), INVALID_FAULTS);
    wait_for("the validating webhook to refuse", WAIT, || async {
        match deployments.create(&dry, &bad).await {
            Err(kube::Error::Api(e)) if e.message.contains("denied the request") => Ok(()),
            Err(e) => Err(anyhow!("unexpected error: {e}")),
            Ok(_) => Err(anyhow!("still accepted")),
        }
    })
    .await?;

    let err = deployments
        .create(&pp, &bad)
        .await
        .expect_err("invalid policy accepted");
    assert_names_rule_and_field(&err);

    // A valid policy passes, and then changing it to an invalid one is refused.
    let good = with_template_faults(deployment("good").build(), VALID_FAULTS);
    deployments.create(&pp, &good).await?;
    let patch =
        serde_json::json!({"metadata": {"annotations": {FAULTS_ANNOTATION: INVALID_FAULTS}}});
    let err = deployments
        .patch("good", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect_err("invalid update accepted");
    assert_names_rule_and_field(&err);

    // Pods carry policies too.
    let mut pod = plain_pod("bad-pod");
    pod.metadata.annotations = Some(BTreeMap::from([(
        FAULTS_ANNOTATION.to_owned(),
        INVALID_FAULTS.to_owned(),
    )]));
    let err = scene
        .pods(&ns)
        .create(&pp, &pod)
        .await
        .expect_err("invalid pod accepted");
    assert_names_rule_and_field(&err);
    scene.finish().await
}

#[tokio::test]
async fn pods_are_created_uninjected_while_the_webhook_is_down() -> anyhow::Result<()> {
    let Some(scene) = Scene::start("wh-down").await? else {
        return Ok(());
    };
    let ns = scene.injecting_namespace().await?;
    let Scene {
        cp,
        client,
        webhook,
        registration,
        ..
    } = scene;
    let url = webhook.url().to_owned();
    webhook.stop().await?;
    let addr = url.trim_start_matches("https://").to_owned();
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "the webhook still listens on {addr}"
    );

    // failurePolicy: Ignore: the outage must not block pod creation.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = pods
        .create(&PostParams::default(), &plain_pod("during-outage"))
        .await?;
    check_untouched(&pod)?;
    registration.delete(&client).await?;
    cp.check_running()?;
    Ok(())
}
