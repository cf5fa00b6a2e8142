//! Command lines for etcd, kube-apiserver and kube-controller-manager, as
//! pure functions of the chosen ports and file paths (unit tested below, so
//! a flag typo shows up without starting anything).

use std::path::{Path, PathBuf};

/// Where everything of one control plane lives; all paths are inside its
/// temporary directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) dir: PathBuf,
    pub(crate) etcd_client_port: u16,
    pub(crate) etcd_peer_port: u16,
    pub(crate) apiserver_port: u16,
}

impl Layout {
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub(crate) fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_client_port)
    }
    pub(crate) fn api_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }
}

/// File names inside [`Layout::dir`].
pub(crate) mod files {
    pub(crate) const CA: &str = "ca.crt";
    pub(crate) const SERVING_CERT: &str = "apiserver.crt";
    pub(crate) const SERVING_KEY: &str = "apiserver.key";
    pub(crate) const SA_KEY: &str = "sa.key";
    pub(crate) const SA_PUB: &str = "sa.pub";
    pub(crate) const TOKENS: &str = "tokens.csv";
    pub(crate) const KUBECONFIG: &str = "kubeconfig";
    pub(crate) const ETCD_DATA: &str = "etcd-data";
}

/// The issuer (and default API audience) of service-account tokens; what a
/// real cluster uses, so tokens look like production ones.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc";

/// Controllers the tests rely on. `serviceaccount` + `serviceaccount-token`
/// create each namespace's `default` ServiceAccount and its token Secret,
/// without which the 1.20 ServiceAccount admission plugin refuses pods;
/// workload controllers turn Deployments, Jobs... into Pods; the garbage
/// collector and namespace controller clean up behind tests. Node-related
/// controllers are left out: there are no nodes.
pub(crate) const CONTROLLERS: &[&str] = &[
    "serviceaccount",
    "serviceaccount-token",
    "deployment",
    "replicaset",
    "statefulset",
    "daemonset",
    "job",
    "cronjob",
    "garbagecollector",
    "namespace",
];

fn p(path: &Path) -> String {
    path.display().to_string()
}

pub(crate) fn etcd_args(l: &Layout) -> Vec<String> {
    let peer = format!("http://127.0.0.1:{}", l.etcd_peer_port);
    vec![
        format!("--data-dir={}", p(&l.path(files::ETCD_DATA))),
        format!("--listen-client-urls={}", l.etcd_url()),
        format!("--advertise-client-urls={}", l.etcd_url()),
        // The peer port defaults to 2380 on every instance: set it, or two
        // test binaries running at once collide.
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=default={peer}"),
        "--name=default".to_owned(),
    ]
}

pub(crate) fn apiserver_args(l: &Layout) -> Vec<String> {
    vec![
        format!("--etcd-servers={}", l.etcd_url()),
        "--bind-address=127.0.0.1".to_owned(),
        "--advertise-address=127.0.0.1".to_owned(),
        format!("--secure-port={}", l.apiserver_port),
        // Deprecated and hidden in 1.20 but still bound to 8080 by default
        // in older builds: make sure nothing listens on a fixed port.
        "--insecure-port=0".to_owned(),
        format!("--tls-cert-file={}", p(&l.path(files::SERVING_CERT))),
        format!("--tls-private-key-file={}", p(&l.path(files::SERVING_KEY))),
        format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
        format!(
            "--service-account-signing-key-file={}",
            p(&l.path(files::SA_KEY))
        ),
        format!("--service-account-key-file={}", p(&l.path(files::SA_PUB))),
        format!("--token-auth-file={}", p(&l.path(files::TOKENS))),
        "--authorization-mode=RBAC".to_owned(),
        "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
        // The injected init container needs NET_ADMIN/NET_RAW, not
        // privileged; allowed anyway so the test cluster refuses nothing a
        // default cluster accepts.
        "--allow-privileged=true".to_owned(),
        // Default admission chain of 1.20 (ServiceAccount, NamespaceLifecycle,
        // MutatingAdmissionWebhook, ValidatingAdmissionWebhook, ...): the
        // webhook must cope with what a real cluster runs before it.
    ]
}

pub(crate) fn controller_manager_args(l: &Layout) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", p(&l.path(files::KUBECONFIG))),
        format!("--controllers={}", CONTROLLERS.join(",")),
        format!(
            "--service-account-private-key-file={}",
            p(&l.path(files::SA_KEY))
        ),
        format!("--root-ca-file={}", p(&l.path(files::CA))),
        "--leader-elect=false".to_owned(),
        // Both serving ports default to fixed numbers (10252, 10257); nothing
        // needs them, readiness is observed through the API instead.
        "--port=0".to_owned(),
        "--secure-port=0".to_owned(),
    ]
}

/// `--token-auth-file` line: token, user, uid, groups.
pub(crate) fn token_file(admin_token: &str) -> String {
    format!("{admin_token},faultline-e2e-admin,faultline-e2e-admin,system:masters\n")
}

pub(crate) fn kubeconfig(l: &Layout, admin_token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {admin_token}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: admin\n    namespace: default\ncurrent-context: envtest\n",
        server = l.api_url(),
        ca = p(&l.path(files::CA)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            dir: PathBuf::from("/tmp/cp"),
            etcd_client_port: 1001,
            etcd_peer_port: 1002,
            apiserver_port: 1003,
        }
    }

    #[test]
    fn no_process_uses_a_default_port() {
        let l = layout();
        let etcd = etcd_args(&l).join(" ");
        assert!(etcd.contains("--listen-client-urls=http://127.0.0.1:1001"));
        assert!(etcd.contains("--listen-peer-urls=http://127.0.0.1:1002"));
        assert!(!etcd.contains("2379") && !etcd.contains("2380"));
        let api = apiserver_args(&l).join(" ");
        assert!(api.contains("--secure-port=1003"));
        assert!(api.contains("--insecure-port=0"));
        assert!(api.contains("--etcd-servers=http://127.0.0.1:1001"));
        let kcm = controller_manager_args(&l);
        assert!(kcm.contains(&"--port=0".to_owned()));
        assert!(kcm.contains(&"--secure-port=0".to_owned()));
    }

    #[test]
    fn service_account_tokens_are_configured_on_both_sides() {
        let l = layout();
        let api = apiserver_args(&l);
        assert!(api.contains(&"--service-account-signing-key-file=/tmp/cp/sa.key".to_owned()));
        assert!(api.contains(&"--service-account-key-file=/tmp/cp/sa.pub".to_owned()));
        assert!(
            api.iter()
                .any(|a| a.starts_with("--service-account-issuer=https://"))
        );
        let kcm = controller_manager_args(&l);
        assert!(kcm.contains(&"--service-account-private-key-file=/tmp/cp/sa.key".to_owned()));
        assert!(kcm.iter().any(|a| a.contains("serviceaccount-token")));
    }

    #[test]
    fn admin_token_is_in_system_masters() {
        let line = token_file("abc");
        let fields: Vec<&str> = line.trim_end().split(',').collect();
        assert_eq!(fields[0], "abc");
        assert_eq!(fields[3], "system:masters");
    }

    #[test]
    fn kubeconfig_parses_and_points_at_the_api_server() {
        let text = kubeconfig(&layout(), "tok");
        let kc = kube::config::Kubeconfig::from_yaml(&text).expect("kubeconfig parses");
        let cluster = kc.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:1003"));
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some("/tmp/cp/ca.crt")
        );
    }
}
