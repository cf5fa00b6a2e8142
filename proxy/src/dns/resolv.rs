//! The pod's resolver: the `nameserver` lines of `/etc/resolv.conf`, which
//! the proxy container shares with the app (the kubelet writes one file per
//! pod). Read once at start-up: the kubelet never rewrites it while the pod
//! runs.
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

pub const RESOLV_CONF: &str = "/etc/resolv.conf";

#[derive(Debug, thiserror::Error)]
pub enum ResolvError {
    #[error("failed to read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to find a nameserver in {path} (set --dns-upstream)")]
    NoNameserver { path: String },
}

/// The nameservers of a `resolv.conf`, in order, on port 53. Lines that
/// are not `nameserver <IP>` are ignored, as are IPv6 zone suffixes
/// (`fe80::1%eth0`), which a socket address cannot carry here.
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The first nameserver of the file at `path`.
pub fn first_nameserver(path: &Path) -> Result<SocketAddr, ResolvError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ResolvError::Read {
        path: shown.clone(),
        source,
    })?;
    nameservers(&text)
        .into_iter()
        .next()
        .ok_or(ResolvError::NoNameserver { path: shown })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_in_order_comments_and_options_ignored() {
        let text = "# generated\nsearch shop.svc.cluster.local svc.cluster.local\n\
                    nameserver 10.96.0.10\nnameserver  fd00::a \noptions ndots:5\n\
                    nameserver fe80::1%eth0\nnameserver\n;nameserver 1.1.1.1\n";
        assert_eq!(
            nameservers(text),
            vec![
                "10.96.0.10:53".parse::<SocketAddr>().unwrap(),
                "[fd00::a]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_file_without_nameserver_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "search example.com\n").unwrap();
        let error = first_nameserver(&path).unwrap_err();
        assert!(
            error.to_string().ends_with("(set --dns-upstream)"),
            "{error}"
        );
        assert!(matches!(
            first_nameserver(&dir.path().join("missing")),
            Err(ResolvError::Read { .. })
        ));
    }
}
