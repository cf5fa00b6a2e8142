//! The flags of `faultline-proxy run`. Each flag has a `FAULTLINE_*`
//! variable (clap's `env`, as in `faultline-webhook`); the defaults and
//! the validation live in `config.rs` (so that `Config::from_env` applies
//! them too), so these are all plain optional strings.
use clap::Args;
use faultline_policy::contract::env;

#[derive(Debug, Clone, Default, Args)]
#[command(after_help = "\
MODES
  sidecar (default)   inbound capture on 15406 forwards to 127.0.0.1:<original port>,
                      outbound capture on 15401 forwards to the original destination
                      (recovered with SO_ORIGINAL_DST after faultline-init's iptables rules).
  standalone          --listen ADDR --upstream ADDR: one listener in front of one upstream,
                      matched as inbound traffic to the upstream's port.

POLICY SOURCES
  --faults FILE        a fault policy (YAML or JSON); reloaded when it changes, a bad new
                       file is logged and the last good policy stays.
  --controller-url URL the faultline controller's policy stream (in a pod).
  --control            PUT/DELETE /policy on the admin server (standalone proxy only; the
                       admin address must be loopback unless --control-token is set).
  none of these        no faults: a transparent proxy.

EXAMPLES
  faultline-proxy run --listen 127.0.0.1:8081 --upstream 127.0.0.1:8080 --faults slow.yaml
  faultline-proxy run --listen 127.0.0.1:8081 --upstream 127.0.0.1:8080 --control \\
      --admin-addr 127.0.0.1:15400
  curl -X PUT --data-binary @slow.yaml 127.0.0.1:15400/policy     # then: curl -X DELETE ...
  FAULTLINE_LOG_FORMAT=json faultline-proxy run     # sidecar, env injected by the webhook

Admin endpoints on --admin-addr: /healthz /readyz /metrics /policy (read-only unless --control)")]
pub struct RunArgs {
    /// Admin server address (/healthz /readyz /metrics /policy) [default: 0.0.0.0:15400; standalone: 127.0.0.1:15400]
    #[arg(long, env = env::ADMIN_ADDR, value_name = "ADDR")]
    pub admin_addr: Option<String>,
    /// Inbound capture listener (sidecar mode) [default: 0.0.0.0:15406]
    #[arg(long, env = env::INBOUND_ADDR, value_name = "ADDR")]
    pub inbound_addr: Option<String>,
    /// Outbound capture listener (sidecar mode) [default: 0.0.0.0:15401]
    #[arg(long, env = env::OUTBOUND_ADDR, value_name = "ADDR")]
    pub outbound_addr: Option<String>,
    // These two are read from the environment by `config.rs`, not by clap:
    // clap's `requires` would then turn a half-set pair of variables into a
    // usage error (exit 2) instead of a configuration error (exit 64).
    /// Standalone mode: address to listen on [env: FAULTLINE_LISTEN]
    #[arg(long, value_name = "ADDR", requires = "upstream")]
    pub listen: Option<String>,
    /// Standalone mode: HOST:PORT to forward to [env: FAULTLINE_UPSTREAM]
    #[arg(long, value_name = "HOST:PORT", requires = "listen")]
    pub upstream: Option<String>,
    /// Accept PUT/DELETE /policy on the admin server (standalone only) [env: FAULTLINE_CONTROL=true]
    // Read from the environment by `config.rs`, not by clap, like
    // `--listen`: a bad value is a configuration error (exit 64).
    #[arg(long)]
    pub control: bool,
    /// Bearer token that PUT/DELETE /policy must present
    #[arg(long, env = env::CONTROL_TOKEN, hide_env_values = true, value_name = "TOKEN")]
    pub control_token: Option<String>,
    /// Fault policy file, watched for changes
    #[arg(long, env = env::FAULTS_FILE, value_name = "FILE")]
    pub faults: Option<String>,
    /// Controller policy stream base URL (https)
    #[arg(long, env = env::CONTROLLER_URL, value_name = "URL")]
    pub controller_url: Option<String>,
    /// Projected service account token for the controller [default: /var/run/secrets/faultline/token]
    #[arg(long, env = env::TOKEN_FILE, value_name = "FILE")]
    pub token_file: Option<String>,
    /// PEM text of the controller's CA
    #[arg(long, env = env::CA_PEM, hide_env_values = true, value_name = "PEM")]
    pub ca_pem: Option<String>,
    /// File with the controller's CA
    #[arg(long, env = env::CA_FILE, value_name = "FILE")]
    pub ca_file: Option<String>,
    /// This pod's name
    #[arg(long, env = env::POD_NAME, value_name = "NAME")]
    pub pod_name: Option<String>,
    /// This pod's namespace
    #[arg(long, env = env::POD_NAMESPACE, value_name = "NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// This pod's IP
    #[arg(long, env = env::POD_IP, value_name = "IP")]
    pub pod_ip: Option<String>,
    /// This pod's service account
    #[arg(long, env = env::SERVICE_ACCOUNT, value_name = "NAME")]
    pub service_account: Option<String>,
    /// Log filter, e.g. info or faultline_proxy=debug [default: info]
    #[arg(long, env = env::LOG, value_name = "FILTER")]
    pub log: Option<String>,
    /// Log format: plain or json [default: plain]
    #[arg(long, env = env::LOG_FORMAT, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Seconds in-flight requests may run after SIGTERM [default: 5]
    #[arg(long, env = env::DRAIN_SECONDS, value_name = "SECONDS")]
    pub drain_seconds: Option<String>,
    /// Connections over this are closed on accept [default: 4096]
    #[arg(long, env = env::MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: Option<String>,
    /// Wait this long for a client's first bytes before treating it as raw TCP [default: 200]
    #[arg(long, env = env::DETECT_TIMEOUT_MS, value_name = "MS")]
    pub detect_timeout_ms: Option<String>,
    /// Worker threads for connections [default: available CPUs]
    #[arg(long, env = env::WORKERS, value_name = "N")]
    pub workers: Option<String>,
    /// Controller mode: /readyz turns ready after this long without a first policy [default: 10]
    #[arg(long, env = env::READY_GRACE_SECONDS, value_name = "SECONDS")]
    pub ready_grace_seconds: Option<String>,
    /// The app's listening ports: after SIGTERM the proxy serves until they all refuse connections
    #[arg(long, env = env::APP_PORTS, value_name = "PORT,...")]
    pub app_ports: Option<String>,
    /// After SIGTERM, keep carrying the app's traffic at most this long before draining [default: 0]
    #[arg(long, env = env::WIND_DOWN_SECONDS, value_name = "SECONDS")]
    pub wind_down_seconds: Option<String>,
    /// DNS listener, UDP and TCP (where the pod's DNS is captured) [default: none; in a pod 127.0.0.1:15402]
    #[arg(long, env = env::DNS_ADDR, value_name = "ADDR")]
    pub dns_addr: Option<String>,
    /// Where clean DNS queries go [default: the first nameserver of /etc/resolv.conf]
    #[arg(long, env = env::DNS_UPSTREAM, value_name = "HOST:PORT")]
    pub dns_upstream: Option<String>,
    /// App ports whose rewritten tcpSocket probes the admin server answers at /probe/tcp/PORT (set by the webhook)
    #[arg(long, env = env::PROBE_PORTS, value_name = "PORT,...")]
    pub probe_ports: Option<String>,
}
