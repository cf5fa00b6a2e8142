//! The open-file limit (`RLIMIT_NOFILE`).
//!
//! Every client connection costs the proxy a file descriptor, a raw TCP one
//! two (it holds its upstream connection too), and pooled upstream
//! connections more. The soft limit a process starts with is often 1024
//! while the hard limit is far higher, so `faultline-proxy run` raises its
//! soft limit to the hard one at start-up, as Go's runtime and nginx's
//! `worker_rlimit_nofile` do. Raising the soft limit needs no privilege;
//! failing to is a warning, not a reason to stop: the proxy still serves
//! what it holds, and past the limit accept fails (the accept loop backs
//! off and retries) while new connections wait in the listen backlog.
//!
//! [`plan`] and [`below_connection_limit`] decide; [`raise_open_file_limit`]
//! does the system calls and logs.
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Linux refuses a `RLIMIT_NOFILE` above `fs.nr_open`, so an unlimited hard
/// limit cannot be copied into the soft one; this is `fs.nr_open`'s default.
pub const NR_OPEN_DEFAULT: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("failed to raise the open file limit from {from} to {to}")]
    Raise {
        from: u64,
        to: u64,
        #[source]
        source: std::io::Error,
    },
}

/// The soft limit to ask for, or `None` when the current one is already as
/// high as it may go (or unlimited).
pub fn plan(limit: &Rlimit) -> Option<u64> {
    let soft = limit.current?;
    let target = limit.maximum.unwrap_or(NR_OPEN_DEFAULT);
    (soft < target).then_some(target)
}

/// Whether `soft` descriptors cannot even hold `max_connections` clients
/// (each needs at least one), so the connection limit would never be the
/// one that applies.
pub fn below_connection_limit(soft: Option<u64>, max_connections: usize) -> bool {
    soft.is_some_and(|soft| soft < u64::try_from(max_connections).unwrap_or(u64::MAX))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft
/// limit in force afterwards (`None`: unlimited).
pub fn raise_nofile() -> Result<Option<u64>, LimitsError> {
    let limit = getrlimit(Resource::Nofile);
    let (Some(from), Some(to)) = (limit.current, plan(&limit)) else {
        return Ok(limit.current);
    };
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(to),
            maximum: limit.maximum,
        },
    )
    .map_err(|errno| LimitsError::Raise {
        from,
        to,
        source: errno.into(),
    })?;
    Ok(Some(to))
}

/// Start-up step of `faultline-proxy run`: raise the limit, log what
/// happened, warn when it is lower than `max_connections`.
pub fn raise_open_file_limit(max_connections: usize) {
    let before = getrlimit(Resource::Nofile);
    let soft = match raise_nofile() {
        Ok(soft) => {
            tracing::debug!(
                old = %show(before.current),
                new = %show(soft),
                hard = %show(before.maximum),
                "open file limit"
            );
            soft
        }
        Err(error) => {
            tracing::warn!(
                error = %crate::error_chain(&error),
                "keeping the open file limit; connections past it will fail to accept"
            );
            before.current
        }
    };
    if below_connection_limit(soft, max_connections) {
        tracing::warn!(
            open_files = %show(soft),
            max_connections,
            "the open file limit is below the connection limit; raise the hard limit \
             (ulimit -Hn, the container runtime's default) or lower FAULTLINE_MAX_CONNECTIONS"
        );
    }
}

fn show(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(current: Option<u64>, maximum: Option<u64>) -> Rlimit {
        Rlimit { current, maximum }
    }

    #[test]
    fn a_soft_limit_below_the_hard_one_is_raised_to_it() {
        assert_eq!(plan(&limit(Some(1024), Some(524_288))), Some(524_288));
    }

    #[test]
    fn a_soft_limit_at_the_hard_one_stays() {
        assert_eq!(plan(&limit(Some(20_000), Some(20_000))), None);
    }

    #[test]
    fn an_unlimited_hard_limit_raises_to_nr_open() {
        assert_eq!(plan(&limit(Some(1024), None)), Some(NR_OPEN_DEFAULT));
        assert_eq!(plan(&limit(Some(NR_OPEN_DEFAULT * 2), None)), None);
    }

    #[test]
    fn an_unlimited_soft_limit_stays() {
        assert_eq!(plan(&limit(None, None)), None);
    }

    #[test]
    fn the_connection_limit_is_compared_with_the_soft_limit() {
        assert!(below_connection_limit(Some(1024), 20_000));
        assert!(!below_connection_limit(Some(20_000), 20_000));
        assert!(!below_connection_limit(None, 20_000));
    }

    #[test]
    fn raising_keeps_the_hard_limit_and_never_lowers_the_soft_one() {
        let before = getrlimit(Resource::Nofile);
        let soft = raise_nofile().unwrap();
        let after = getrlimit(Resource::Nofile);
        assert_eq!(after.maximum, before.maximum);
        assert_eq!(after.current, soft);
        assert!(after.current >= before.current || after.current.is_none());
        assert_eq!(plan(&after), None);
    }
}
