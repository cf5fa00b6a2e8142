//! The flags of `faultline-proxy init`: the `faultline-init` container's
//! command line, which the webhook writes with `contract::init_flag`.
use clap::Args;
use faultline_policy::contract::{self, init_flag};

/// Flags of `faultline-proxy init` (the webhook builds exactly this command line).
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:\n  \
faultline-proxy init --dry-run                          # print the iptables-restore input\n  \
faultline-proxy init --exclude-inbound-ports 8081,9000-9010  # let these bypass the proxy\n  \
faultline-proxy init --include-inbound-ports 8080       # capture only inbound port 8080\n  \
faultline-proxy init --capture-dns                      # also send DNS (port 53) to the proxy\n  \
faultline-proxy init --clean                            # remove every faultline rule")]
pub struct InitArgs {
    /// Port the proxy accepts redirected inbound connections on.
    #[arg(long = init_flag::INBOUND_CAPTURE_PORT, value_name = "PORT", default_value_t = contract::INBOUND_CAPTURE_PORT)]
    pub inbound_capture_port: u16,
    /// Port the proxy accepts redirected outbound connections on.
    #[arg(long = init_flag::OUTBOUND_CAPTURE_PORT, value_name = "PORT", default_value_t = contract::OUTBOUND_CAPTURE_PORT)]
    pub outbound_capture_port: u16,
    /// UID the proxy runs as; its own connections are never redirected.
    #[arg(long = init_flag::PROXY_UID, value_name = "UID", default_value_t = contract::PROXY_UID)]
    pub proxy_uid: u32,
    /// GID the proxy runs as; its own connections are never redirected.
    #[arg(long = init_flag::PROXY_GID, value_name = "GID", default_value_t = contract::PROXY_GID)]
    pub proxy_gid: u32,
    /// The proxy's admin port (health, metrics); never redirected.
    #[arg(long = init_flag::ADMIN_PORT, value_name = "PORT", default_value_t = contract::ADMIN_PORT)]
    pub admin_port: u16,
    /// Inbound ports to capture: "*" for all, or a list like 8080,9000-9010 (empty: none).
    #[arg(long = init_flag::INCLUDE_INBOUND_PORTS, value_name = "LIST", default_value = "*")]
    pub include_inbound_ports: String,
    /// Inbound ports that bypass the proxy, e.g. 8081,9000-9010.
    #[arg(long = init_flag::EXCLUDE_INBOUND_PORTS, value_name = "LIST", default_value = "")]
    pub exclude_inbound_ports: String,
    /// Outbound destination ports that bypass the proxy, e.g. 5432,6379.
    #[arg(long = init_flag::EXCLUDE_OUTBOUND_PORTS, value_name = "LIST", default_value = "")]
    pub exclude_outbound_ports: String,
    /// Outbound destination networks that bypass the proxy, e.g. 169.254.169.254/32,fd00::/8.
    #[arg(long = init_flag::EXCLUDE_OUTBOUND_CIDRS, value_name = "LIST", default_value = "")]
    pub exclude_outbound_cidrs: String,
    /// Redirect the pod's DNS queries (UDP and TCP port 53) to the proxy's DNS listener.
    #[arg(long = init_flag::CAPTURE_DNS)]
    pub capture_dns: bool,
    /// Port of the proxy's DNS listener on loopback (with --capture-dns).
    #[arg(long = init_flag::DNS_CAPTURE_PORT, value_name = "PORT", default_value_t = contract::DNS_CAPTURE_PORT)]
    pub dns_capture_port: u16,
    /// iptables backend; auto uses the one that already has rules here, else nft.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Mirror the rules for IPv6 with ip6tables; auto does so when the pod has a global IPv6 address.
    #[arg(long, value_enum, default_value_t = Ipv6Mode::Auto)]
    pub ipv6: Ipv6Mode,
    /// Print the iptables-restore input instead of applying it (needs no privileges).
    #[arg(long)]
    pub dry_run: bool,
    /// Remove every rule and chain init added (combine with --dry-run to preview).
    #[arg(long)]
    pub clean: bool,
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// Use the backend that already has rules in this network namespace, else nft.
    Auto,
    /// iptables-legacy (x_tables).
    Legacy,
    /// iptables-nft (nf_tables).
    Nft,
}

/// `--ipv6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ipv6Mode {
    /// Mirror the rules with ip6tables when the pod has a non-link-local IPv6 address.
    Auto,
    /// Always write ip6tables rules (fail if that is not possible).
    On,
    /// Never touch ip6tables.
    Off,
}
