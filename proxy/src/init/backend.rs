//! Pure decisions about the host: which iptables backend to use, whether the
//! pod has IPv6, whether this process holds the capabilities it needs. The
//! inputs are the texts the system gives us (`iptables-save` output,
//! `/proc/net/if_inet6`, `/proc/self/status`), so each choice is unit-tested.
use super::rules::Family;

/// The iptables flavour whose binaries we run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Nft => "nft",
        }
    }

    /// e.g. `ip6tables-nft-restore`: the explicit names, so the host's
    /// `iptables` alternative never silently picks the other backend.
    pub fn restore_binary(self, family: Family) -> String {
        format!("{}-{}-restore", family_prefix(family), self.name())
    }

    pub fn save_binary(self, family: Family) -> String {
        format!("{}-{}-save", family_prefix(family), self.name())
    }

    /// Kernel modules whose absence makes a restore fail, for error messages.
    pub fn kernel_modules(self) -> &'static str {
        match self {
            Self::Legacy => {
                "ip_tables/ip6_tables, iptable_nat/ip6table_nat, xt_REDIRECT, xt_owner, xt_comment, xt_tcpudp"
            }
            Self::Nft => {
                "nf_tables, nft_chain_nat, nft_redir, nft_compat, xt_owner, xt_comment, xt_tcpudp"
            }
        }
    }
}

fn family_prefix(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

/// Counts rules (`-A` lines, any table) in `*-save` output.
pub fn count_rules(save: &str) -> usize {
    save.lines()
        .filter(|line| line.trim_start().starts_with("-A "))
        .count()
}

/// `auto`: the backend that already holds rules here wins (mixing both makes
/// the kernel evaluate two rule sets), else nft, the modern default. `None`
/// means that backend's save tool could not run.
pub fn choose_backend(legacy_rules: Option<usize>, nft_rules: Option<usize>) -> Backend {
    let legacy = legacy_rules.unwrap_or(0);
    let nft = nft_rules.unwrap_or(0);
    if legacy > nft {
        Backend::Legacy
    } else {
        Backend::Nft
    }
}

/// True if `/proc/net/if_inet6` lists a global-scope address on a non-loopback
/// interface (link-local `fe80::` exists on every interface and carries no pod traffic).
pub fn has_global_ipv6(if_inet6: &str) -> bool {
    if_inet6.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // address, ifindex, prefix length, scope, flags, interface name
        matches!(fields.as_slice(), [_, _, _, scope, _, name] if *scope == "00" && *name != "lo")
    })
}

/// Linux capability numbers we need (see capabilities(7)).
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;

/// The effective capability set from `/proc/self/status`.
pub fn effective_caps(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Names of the capabilities `backend` needs that `caps` lacks.
pub fn missing_caps(caps: u64, backend: Backend) -> Vec<&'static str> {
    let mut needed = vec![(CAP_NET_ADMIN, "NET_ADMIN")];
    // iptables-legacy talks to the kernel through a raw socket.
    if backend == Backend::Legacy {
        needed.push((CAP_NET_RAW, "NET_RAW"));
    }
    needed
        .into_iter()
        .filter(|(bit, _)| caps & (1 << bit) == 0)
        .map(|(_, name)| name)
        .collect()
}
