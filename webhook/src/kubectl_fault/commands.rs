//! The subcommands. Expected policy versions are computed with the
//! controller's own reconcile code over a fresh list of pods and owners, so
//! `status` can tell whether each proxy runs what the controller serves.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use faultline_policy as policy;
use kube::Client;
use kube::api::Patch;
use serde_json::json;

use super::args::{Cli, Command};
use super::error::CliError;
use super::inject_flags::{FaultFlags, parse_target, policy_from_flags};
use super::kube_io::{self, proxy_get};
use super::table::render;
use crate::controller::expiry;
use crate::controller::objects::{
    FAULTS_ANNOTATION, Kind, ObjKey, ObjectFacts, SEEN_AT_ANNOTATION,
};
use crate::controller::resolve::is_copy;
use crate::controller::state::{Outcome, PodKey, PodSnapshot, PolicyState};
use crate::controller::stores::pod_snapshot;
use crate::controller::version::text_version;

/// Run the parsed command line, writing human output to `out`.
pub async fn run(cli: Cli, out: &mut impl std::io::Write) -> Result<(), CliError> {
    // A dry run only builds and validates: it works without a cluster.
    if let Command::Inject {
        target,
        file,
        flags,
        dry_run: true,
    } = &cli.command
    {
        parse_target(target)?;
        let text = policy_text(file.as_deref(), flags)?;
        let _ = out.write_all(text.as_bytes());
        return Ok(());
    }
    let (client, default_ns) =
        kube_io::connect(cli.kubeconfig.as_deref(), cli.context.as_deref()).await?;
    let namespace = cli.namespace.unwrap_or(default_ns);
    let text = match cli.command {
        Command::Inject {
            target,
            file,
            flags,
            dry_run,
        } => {
            inject(
                &client,
                &namespace,
                &target,
                file.as_deref(),
                &flags,
                dry_run,
            )
            .await?
        }
        Command::Recover { target } => recover(&client, &namespace, &target).await?,
        Command::List { all_namespaces } => {
            list(&client, (!all_namespaces).then_some(namespace.as_str())).await?
        }
        Command::Status { target } => status(&client, &namespace, &target).await?,
    };
    // A closed stdout (e.g. `| head`) is not an error worth reporting.
    let _ = out.write_all(text.as_bytes());
    Ok(())
}

async fn inject(
    client: &Client,
    namespace: &str,
    target: &str,
    file: Option<&Path>,
    flags: &FaultFlags,
    dry_run: bool,
) -> Result<String, CliError> {
    let (kind, name) = parse_target(target)?;
    let text = policy_text(file, flags)?;
    let parsed = policy::parse(&text).map_err(|e| CliError::InvalidPolicy(e.to_string()))?;
    if dry_run {
        return Ok(text);
    }
    kube_io::check_opted_in(client, kind, namespace, &name).await?;
    kube_io::metadata(client, kind, namespace, &name).await?;
    let patch =
        json!({"metadata": {"annotations": {FAULTS_ANNOTATION: text, SEEN_AT_ANNOTATION: null}}});
    kube_io::patch(client, kind, namespace, &name, &Patch::Merge(patch)).await?;
    let expiry = match (parsed.duration(), parsed.until()) {
        (Some(d), _) => format!("; recovers automatically after {}", humantime(d)),
        (None, Some(t)) => format!("; recovers automatically at {t}"),
        (None, None) => format!("; remove with `kubectl fault recover {target} -n {namespace}`"),
    };
    Ok(format!(
        "{target} in {namespace}: fault policy {} written ({} rule(s)){expiry}\n",
        text_version(&text),
        parsed.rules.len()
    ))
}

/// The policy from `-f` or the flags, validated.
fn policy_text(file: Option<&Path>, flags: &FaultFlags) -> Result<String, CliError> {
    let text = match file {
        // Clap refuses fault flags next to `-f` (see `FAULT_FLAGS`).
        Some(path) => read_policy_file(path)?,
        None => policy_from_flags(flags)?,
    };
    policy::parse(&text).map_err(|e| CliError::InvalidPolicy(e.to_string()))?;
    Ok(text)
}

fn read_policy_file(path: &Path) -> Result<String, CliError> {
    let mut text = String::new();
    let result = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(drop)
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    result.map_err(|source| CliError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text)
}

async fn recover(client: &Client, namespace: &str, target: &str) -> Result<String, CliError> {
    let (kind, name) = parse_target(target)?;
    let meta = kube_io::metadata(client, kind, namespace, &name).await?;
    if !meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(FAULTS_ANNOTATION))
    {
        return Ok(format!(
            "{target} in {namespace} has no fault policy; nothing to recover\n"
        ));
    }
    let patch =
        json!({"metadata": {"annotations": {FAULTS_ANNOTATION: null, SEEN_AT_ANNOTATION: null}}});
    kube_io::patch(client, kind, namespace, &name, &Patch::Merge(patch)).await?;
    Ok(format!(
        "{target} in {namespace}: fault policy removed; proxies return to clean traffic\n"
    ))
}

/// Pods and owners of a namespace (or all), with the controller's view of them.
struct Cluster {
    pods: Vec<PodSnapshot>,
    /// Pods being deleted: left out of `status`, like finished ones.
    terminating: std::collections::HashSet<PodKey>,
    owners: HashMap<ObjKey, ObjectFacts>,
    outcome: Outcome,
}

async fn cluster(client: &Client, namespace: Option<&str>) -> Result<Cluster, CliError> {
    let raw = kube_io::pods(client, namespace).await?;
    let terminating = raw
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .filter_map(|p| Some((p.metadata.namespace.clone()?, p.metadata.name.clone()?)))
        .collect();
    let pods: Vec<PodSnapshot> = raw.iter().filter_map(pod_snapshot).collect();
    let mut owners = HashMap::new();
    for kind in [
        Kind::ReplicaSet,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::Job,
    ] {
        for meta in kube_io::list_metadata(client, kind, namespace).await? {
            if let Some(f) = ObjectFacts::from_meta(kind, &meta) {
                owners.insert(f.key.clone(), f);
            }
        }
    }
    let outcome = PolicyState::default().reconcile(&pods, |k| owners.get(k).cloned());
    Ok(Cluster {
        pods,
        terminating,
        owners,
        outcome,
    })
}

/// What a proxy reports about itself on its admin port.
#[derive(Default)]
struct ProxyReport {
    reachable: bool,
    version: Option<String>,
    connected: Option<bool>,
    faults: Option<f64>,
}

async fn proxy_report(client: &Client, namespace: &str, pod: &str) -> ProxyReport {
    let Some(policy) = proxy_get(client, namespace, pod, "/policy").await else {
        return ProxyReport::default();
    };
    let json: serde_json::Value = serde_json::from_str(&policy).unwrap_or_default();
    let metrics = proxy_get(client, namespace, pod, "/metrics").await;
    ProxyReport {
        reachable: true,
        version: json
            .get("version")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        connected: json.get("connected").and_then(serde_json::Value::as_bool),
        faults: metrics.as_deref().map(faults_injected),
    }
}

/// Sum of every `*faults_injected*` sample in a Prometheus text exposition.
pub fn faults_injected(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' '])
                .next()
                .is_some_and(|name| name.contains("faults_injected"))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

async fn list(client: &Client, namespace: Option<&str>) -> Result<String, CliError> {
    let cluster = cluster(client, namespace).await?;
    let mut annotated: Vec<&ObjectFacts> = cluster
        .owners
        .values()
        .filter(|f| f.faults.is_some() && !is_copy(f))
        .collect();
    annotated.extend(
        cluster
            .pods
            .iter()
            .map(|p| &p.facts)
            .filter(|f| f.faults.is_some()),
    );
    annotated.sort_by(|a, b| a.key.cmp(&b.key));
    if annotated.is_empty() {
        let scope = namespace.map_or("any namespace".to_string(), |ns| format!("namespace {ns}"));
        return Ok(format!("No fault policies in {scope}.\n"));
    }
    let now = jiff::Timestamp::now();
    let mut rows = vec![row([
        "NAMESPACE",
        "TARGET",
        "VERSION",
        "RULES",
        "EXPIRES IN",
        "PROXIES ON VERSION",
    ])];
    for facts in annotated {
        let text = facts.faults.as_deref().unwrap_or_default();
        let version = text_version(text);
        let (rules, expires) = match policy::parse(text) {
            Ok(p) => {
                let (seen, _) = expiry::first_seen(facts.seen_at.as_deref(), &version, now);
                let left = expiry::deadline(p.duration(), p.until(), seen.at)
                    .map_or("never".to_string(), |d| {
                        humantime(expiry::remaining(d, now))
                    });
                (p.rules.len().to_string(), left)
            }
            Err(_) => ("INVALID".to_string(), "-".to_string()),
        };
        let governed: Vec<(&(String, String), &str)> = cluster
            .outcome
            .pods
            .iter()
            .filter(|(_, p)| p.source.as_ref() == Some(&facts.key))
            .filter(|(key, _)| !cluster.terminating.contains(*key))
            .map(|(k, p)| (k, p.version.as_str()))
            .collect();
        let mut current = 0;
        let mut unreachable = 0;
        for ((ns, pod), expected) in &governed {
            let report = proxy_report(client, ns, pod).await;
            if !report.reachable {
                unreachable += 1;
            } else if report.version.as_deref() == Some(*expected) {
                current += 1;
            }
        }
        let mut proxies = format!("{current}/{}", governed.len());
        if unreachable > 0 {
            proxies.push_str(&format!(" ({unreachable} unreachable)"));
        }
        rows.push(vec![
            facts.key.namespace.clone(),
            format!(
                "{}/{}",
                facts.key.kind.as_str().to_ascii_lowercase(),
                facts.key.name
            ),
            version,
            rules,
            expires,
            proxies,
        ]);
    }
    Ok(render(&rows))
}

async fn status(client: &Client, namespace: &str, target: &str) -> Result<String, CliError> {
    let (kind, name) = parse_target(target)?;
    let meta = kube_io::metadata(client, kind, namespace, &name).await?;
    let cluster = cluster(client, Some(namespace)).await?;
    let target_key = ObjKey::new(kind, namespace, &name);
    let policy_text = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(FAULTS_ANNOTATION));
    let mut out = match policy_text {
        Some(text) => match policy::parse(text) {
            Ok(_) => format!(
                "{target} in {namespace}: fault policy {}\n\n",
                text_version(text)
            ),
            Err(e) => format!(
                "{target} in {namespace}: fault policy is INVALID ({e}); proxies keep their previous policy\n\n"
            ),
        },
        None => format!("{target} in {namespace}: no fault policy of its own\n\n"),
    };
    let mut rows = vec![row([
        "POD",
        "INJECTED",
        "CONNECTED",
        "VERSION",
        "EXPECTED",
        "FAULTS INJECTED",
    ])];
    let members = cluster
        .pods
        .iter()
        .filter(|p| {
            let key = (p.facts.key.namespace.clone(), p.facts.key.name.clone());
            !p.terminal && !cluster.terminating.contains(&key)
        })
        .filter(|p| belongs_to(&p.facts, &target_key, &cluster.owners));
    for pod in members {
        let pod_key = (pod.facts.key.namespace.clone(), pod.facts.key.name.clone());
        let expected = cluster
            .outcome
            .pods
            .get(&pod_key)
            .map_or("-".to_string(), |p| p.version.clone());
        let report = if pod.injected {
            proxy_report(client, namespace, &pod.facts.key.name).await
        } else {
            ProxyReport::default()
        };
        let unknown = || {
            if pod.injected {
                "unreachable".to_string()
            } else {
                "-".to_string()
            }
        };
        rows.push(vec![
            pod.facts.key.name.clone(),
            if pod.injected { "yes" } else { "no" }.to_string(),
            report
                .connected
                .map_or_else(unknown, |c| if c { "yes" } else { "no" }.to_string()),
            report.version.clone().unwrap_or_else(unknown),
            expected,
            report.faults.map_or_else(unknown, count),
        ]);
    }
    if rows.len() == 1 {
        out.push_str("No pods.\n");
    } else {
        out.push_str(&render(&rows));
        if rows
            .iter()
            .skip(1)
            .any(|r| r.get(1).is_some_and(|i| i == "no"))
        {
            out.push_str(&format!(
                "\nPods without a proxy: is namespace {namespace} labeled faultline.dev/injection=enabled? \
                 Then `kubectl rollout restart {target} -n {namespace}`.\n"
            ));
        }
    }
    Ok(out)
}

/// A counter as a person reads it: an integer, never `-0`.
fn count(value: f64) -> String {
    format!("{}", value.max(0.0).round() as u64)
}

/// Whether `target` is the pod itself or on its owner chain.
fn belongs_to(pod: &ObjectFacts, target: &ObjKey, owners: &HashMap<ObjKey, ObjectFacts>) -> bool {
    let mut current = Some(pod.key.clone());
    let mut owner = pod.owner.clone();
    for _ in 0..4 {
        if current.as_ref() == Some(target) {
            return true;
        }
        current = owner.clone();
        owner = current
            .as_ref()
            .and_then(|k| owners.get(k))
            .and_then(|f| f.owner.clone());
    }
    false
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|s| s.to_string()).collect()
}

/// `90s` -> `1m30s`.
pub fn humantime(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_print_as_integers() {
        assert_eq!(count(-0.0), "0");
        assert_eq!(count(faults_injected("")), "0");
        assert_eq!(count(3.0), "3");
        assert_eq!(count(12.0), "12");
    }

    #[test]
    fn the_pod_label_opt_in_is_read_from_the_pod_template() {
        use super::kube_io::pods_opted_in;
        let deploy = json!({"kind": "Deployment", "metadata": {"labels": {"faultline.dev/inject": "true"}},
                            "spec": {"template": {"metadata": {"labels": {"app": "web"}}}}});
        assert!(
            !pods_opted_in(Kind::Deployment, &deploy),
            "the workload's own label does not count"
        );
        let deploy = json!({"spec": {"template": {"metadata": {"labels": {"faultline.dev/inject": "true"}}}}});
        assert!(pods_opted_in(Kind::Deployment, &deploy));
        let pod = json!({"metadata": {"labels": {"faultline.dev/inject": "true"}}});
        assert!(pods_opted_in(Kind::Pod, &pod));
        let out = json!({"metadata": {"labels": {"faultline.dev/inject": "false"}}});
        assert!(!pods_opted_in(Kind::Pod, &out));
    }

    #[test]
    fn durations_print_compactly() {
        assert_eq!(humantime(std::time::Duration::from_secs(59)), "59s");
        assert_eq!(humantime(std::time::Duration::from_secs(90)), "1m30s");
        assert_eq!(humantime(std::time::Duration::from_secs(120)), "2m");
        assert_eq!(humantime(std::time::Duration::from_secs(3700)), "1h1m");
    }

    #[test]
    fn fault_counters_are_summed_from_the_exposition() {
        let text = "# HELP faultline_faults_injected_total x\n\
                    faultline_faults_injected_total{rule=\"a\",kind=\"delay\"} 3\n\
                    faultline_faults_injected_total{rule=\"b\",kind=\"abort\"} 2\n\
                    faultline_requests_total 10\n";
        assert_eq!(faults_injected(text), 5.0);
    }
}
