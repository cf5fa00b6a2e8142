//! Pure rule generation: [`CaptureConfig`] + the current nat table (as
//! `iptables-save` prints it) -> the `iptables-restore --noflush` input.
//!
//! Our rules live in chains of our own, so re-running only has to flush and
//! refill them; the two hook rules in the built-in PREROUTING/OUTPUT chains
//! are kept when they are already exactly right and otherwise deleted and
//! re-added, which makes `init` idempotent without touching anyone else's rules.
use std::collections::BTreeSet;

use super::config::{CaptureConfig, InboundPorts, PortRange};

/// Prefix of every chain we create (anything else in the table is not ours).
pub const CHAIN_PREFIX: &str = "FAULTLINE_";
/// Inbound dispatch, hooked from PREROUTING.
pub const INBOUND: &str = "FAULTLINE_INBOUND";
/// Inbound redirect to the inbound capture port.
pub const IN_REDIRECT: &str = "FAULTLINE_IN_REDIRECT";
/// Outbound dispatch, hooked from OUTPUT.
pub const OUTPUT: &str = "FAULTLINE_OUTPUT";
/// Outbound redirect to the outbound capture port.
pub const REDIRECT: &str = "FAULTLINE_REDIRECT";
/// DNS over UDP, hooked from OUTPUT (with `--capture-dns`).
pub const DNS: &str = "FAULTLINE_DNS";
const OUR_CHAINS: [&str; 4] = [INBOUND, IN_REDIRECT, OUTPUT, REDIRECT];

const HOOK_INBOUND: &str = "-A PREROUTING -p tcp -m comment --comment \"faultline: capture inbound TCP\" -j FAULTLINE_INBOUND";
const HOOK_OUTPUT: &str =
    "-A OUTPUT -p tcp -m comment --comment \"faultline: capture outbound TCP\" -j FAULTLINE_OUTPUT";
const HOOK_DNS: &str = "-A OUTPUT -p udp -m udp --dport 53 -m comment --comment \"faultline: capture DNS over UDP\" -j FAULTLINE_DNS";

/// Address family of one rule set: `iptables` or `ip6tables`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// What of ours is already in the nat table, read from `iptables-save` output.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NatState {
    /// Our chains that exist (`FAULTLINE_*`).
    pub chains: BTreeSet<String>,
    /// Rules in chains that are not ours which jump into ours, exactly as saved.
    pub hooks: Vec<String>,
}

impl NatState {
    /// Reads the `*nat` section of `iptables-save` output; other tables are ignored.
    pub fn parse(save: &str) -> Self {
        let mut state = Self::default();
        let mut in_nat = false;
        for line in save.lines().map(str::trim) {
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table == "nat";
            } else if !in_nat {
                continue;
            } else if line == "COMMIT" {
                in_nat = false;
            } else if let Some(chain) = line.strip_prefix(':') {
                let name = chain.split_whitespace().next().unwrap_or_default();
                if name.starts_with(CHAIN_PREFIX) {
                    state.chains.insert(name.to_string());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let chain = rule.split_whitespace().next().unwrap_or_default();
                let jumps_to_ours = rule
                    .split_once(" -j ")
                    .is_some_and(|(_, target)| target.trim().starts_with(CHAIN_PREFIX));
                if jumps_to_ours && !chain.starts_with(CHAIN_PREFIX) {
                    state.hooks.push(line.to_string());
                }
            }
        }
        state
    }

    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.hooks.is_empty()
    }
}

/// The restore input that installs `config` for `family`, given what is there now.
pub fn render(config: &CaptureConfig, family: Family, current: &NatState) -> String {
    let mut out = vec![
        format!(
            "# faultline capture rules ({}), for {} --noflush",
            family.name(),
            family.restore()
        ),
        "*nat".to_string(),
    ];
    let mut chains = OUR_CHAINS.to_vec();
    let mut wanted = vec![HOOK_INBOUND, HOOK_OUTPUT];
    if config.dns_capture_port.is_some() {
        chains.push(DNS);
        wanted.push(HOOK_DNS);
    }
    let stale: Vec<&String> = current
        .chains
        .iter()
        .filter(|c| !chains.contains(&c.as_str()))
        .collect();
    // Declaring a chain in a --noflush restore creates it or flushes it.
    out.extend(chains.iter().map(|c| format!(":{c} - [0:0]")));
    out.extend(stale.iter().map(|c| format!(":{c} - [0:0]")));

    let keep_hooks = current.hooks.len() == wanted.len()
        && wanted.iter().all(|w| current.hooks.iter().any(|h| h == w));
    if !keep_hooks {
        out.extend(current.hooks.iter().map(|h| delete(h)));
    }
    out.extend(stale.iter().map(|c| format!("-X {c}")));

    out.push(rule(
        IN_REDIRECT,
        "",
        "to the inbound capture port",
        &format!("REDIRECT --to-ports {}", config.inbound_capture_port),
    ));
    out.push(rule(
        REDIRECT,
        "",
        "to the outbound capture port",
        &format!("REDIRECT --to-ports {}", config.outbound_capture_port),
    ));
    inbound_rules(config, &mut out);
    outbound_rules(config, family, &mut out);
    if let Some(port) = config.dns_capture_port {
        dns_rules(config, port, &mut out);
    }
    if !keep_hooks {
        out.extend(wanted.iter().map(|w| w.to_string()));
    }
    out.push("COMMIT".to_string());
    out.join("\n") + "\n"
}

/// The restore input that removes everything of ours, or `None` if nothing is there.
pub fn render_clean(family: Family, current: &NatState) -> Option<String> {
    if current.is_empty() {
        return None;
    }
    let mut out = vec![
        format!(
            "# faultline clean-up ({}), for {} --noflush",
            family.name(),
            family.restore()
        ),
        "*nat".to_string(),
    ];
    out.extend(current.chains.iter().map(|c| format!(":{c} - [0:0]")));
    out.extend(current.hooks.iter().map(|h| delete(h)));
    out.extend(current.chains.iter().map(|c| format!("-X {c}")));
    out.push("COMMIT".to_string());
    Some(out.join("\n") + "\n")
}

fn inbound_rules(config: &CaptureConfig, out: &mut Vec<String>) {
    // The admin port must stay reachable for probes and scrapes even when a
    // rule would fault every inbound connection.
    out.push(rule(
        INBOUND,
        &format!("-m tcp --dport {}", config.admin_port),
        "proxy admin port is never captured",
        "RETURN",
    ));
    for ports in dports(&config.exclude_inbound) {
        out.push(rule(INBOUND, &ports, "excluded inbound port", "RETURN"));
    }
    match &config.include_inbound {
        InboundPorts::All => out.push(rule(INBOUND, "", "capture inbound", IN_REDIRECT)),
        InboundPorts::Only(ranges) => {
            for ports in dports(ranges) {
                out.push(rule(INBOUND, &ports, "included inbound port", IN_REDIRECT));
            }
        }
    }
}

fn outbound_rules(config: &CaptureConfig, family: Family, out: &mut Vec<String>) {
    // The proxy's own connections (its upstreams) must never come back to it.
    out.push(rule(
        OUTPUT,
        &format!("-m owner --uid-owner {}", config.proxy_uid),
        "proxy own traffic (uid)",
        "RETURN",
    ));
    out.push(rule(
        OUTPUT,
        &format!("-m owner --gid-owner {}", config.proxy_gid),
        "proxy own traffic (gid)",
        "RETURN",
    ));
    // DNS goes to the DNS listener whatever the resolver's address, loopback
    // ones (127.0.0.53) included, before the exclusions: the pod asked for it.
    if let Some(port) = config.dns_capture_port {
        out.push(rule(
            OUTPUT,
            "-m tcp --dport 53",
            "DNS to the DNS capture port",
            &format!("REDIRECT --to-ports {port}"),
        ));
    }
    // Loopback is the proxy forwarding inbound to the app and the app talking
    // to itself; neither leaves the pod.
    out.push(format!(
        "-A {OUTPUT} -o lo -p tcp -m comment --comment \"faultline: loopback\" -j RETURN"
    ));
    for cidr in config
        .exclude_outbound_cidrs
        .iter()
        .filter(|c| c.is_ipv4() == (family == Family::V4))
    {
        out.push(format!(
            "-A {OUTPUT} -d {cidr} -p tcp -m comment --comment \"faultline: excluded outbound CIDR\" -j RETURN"
        ));
    }
    for ports in dports(&config.exclude_outbound) {
        out.push(rule(OUTPUT, &ports, "excluded outbound port", "RETURN"));
    }
    out.push(rule(OUTPUT, "", "capture outbound", REDIRECT));
}

/// DNS over UDP: every datagram to port 53 but the proxy's own (its
/// forwarded queries) goes to the DNS listener. Its TCP twin sits in
/// [`OUTPUT`], after the same exceptions.
fn dns_rules(config: &CaptureConfig, port: u16, out: &mut Vec<String>) {
    for (owner, why) in [
        (format!("--uid-owner {}", config.proxy_uid), "uid"),
        (format!("--gid-owner {}", config.proxy_gid), "gid"),
    ] {
        out.push(format!(
            "-A {DNS} -p udp -m owner {owner} -m comment --comment \"faultline: proxy own traffic ({why})\" -j RETURN"
        ));
    }
    out.push(format!(
        "-A {DNS} -p udp -m comment --comment \"faultline: DNS to the DNS capture port\" -j REDIRECT --to-ports {port}"
    ));
}

/// One rule in `iptables-save`'s canonical spelling, so a re-read compares equal.
fn rule(chain: &str, matches: &str, why: &str, target: &str) -> String {
    let matches = if matches.is_empty() {
        String::new()
    } else {
        format!(" {matches}")
    };
    format!("-A {chain} -p tcp{matches} -m comment --comment \"faultline: {why}\" -j {target}")
}

/// How many ports one `multiport` match takes; a range counts as two.
const MULTIPORT_MAX: usize = 15;

/// The port matches for `ranges` (already sorted and merged), as few as the
/// `multiport` match allows, so thousands of listed ports stay a few hundred
/// rules. A lone range keeps the plain `tcp` match. Spelled as
/// `iptables-save` prints them.
fn dports(ranges: &[PortRange]) -> Vec<String> {
    let mut groups: Vec<Vec<&PortRange>> = Vec::new();
    let mut used = MULTIPORT_MAX;
    for range in ranges {
        let cost = if range.start == range.end { 1 } else { 2 };
        if used + cost > MULTIPORT_MAX {
            groups.push(Vec::new());
            used = 0;
        }
        used += cost;
        if let Some(group) = groups.last_mut() {
            group.push(range);
        }
    }
    groups
        .iter()
        .map(|group| match group.as_slice() {
            [one] => format!("-m tcp --dport {}", port_spec(one)),
            many => {
                let list: Vec<String> = many.iter().map(|r| port_spec(r)).collect();
                format!("-m multiport --dports {}", list.join(","))
            }
        })
        .collect()
}

/// iptables' spelling of a range: `8080` or `8000:8010`.
fn port_spec(range: &PortRange) -> String {
    if range.start == range.end {
        range.start.to_string()
    } else {
        format!("{}:{}", range.start, range.end)
    }
}

/// `-A CHAIN spec` -> `-D CHAIN spec`.
fn delete(saved_rule: &str) -> String {
    format!("-D {}", saved_rule.trim_start_matches("-A "))
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }

    fn restore(self) -> &'static str {
        match self {
            Self::V4 => "iptables-restore",
            Self::V6 => "ip6tables-restore",
        }
    }
}
