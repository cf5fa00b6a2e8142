//! Auto-recover arithmetic. `duration` counts from the moment the controller
//! first saw this version of the annotation, recorded on the object as
//! `faultline.dev/faults-seen-at: <RFC 3339>;<text version>` so that a
//! restarted or newly elected controller keeps counting from the same
//! instant; `until` is absolute. The earlier of the two wins.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// A parsed `faultline.dev/faults-seen-at` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenAt {
    pub at: Timestamp,
    pub version: String,
}

impl SeenAt {
    /// Parse `RFC3339;VERSION`; anything else is ignored (treated as unseen).
    pub fn parse(value: &str) -> Option<Self> {
        let (at, version) = value.split_once(';')?;
        let at = at.trim().parse::<Timestamp>().ok()?;
        let version = version.trim();
        (!version.is_empty()).then(|| Self {
            at,
            version: version.to_string(),
        })
    }

    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        format!("{};{}", self.at, self.version)
    }
}

/// When the current version was first seen, and whether that must be
/// recorded (the annotation is missing or belongs to an older version).
pub fn first_seen(recorded: Option<&str>, text_version: &str, now: Timestamp) -> (SeenAt, bool) {
    match recorded.and_then(SeenAt::parse) {
        Some(seen) if seen.version == text_version => (seen, false),
        _ => (
            SeenAt {
                at: now,
                version: text_version.to_string(),
            },
            true,
        ),
    }
}

/// The instant the policy expires, if it does.
pub fn deadline(
    duration: Option<Duration>,
    until: Option<Timestamp>,
    seen: Timestamp,
) -> Option<Timestamp> {
    let by_duration = duration.map(|d| {
        let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
        seen.checked_add(d).unwrap_or(Timestamp::MAX)
    });
    match (by_duration, until) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How long to wait from `now` until `deadline` (zero when already past).
pub fn remaining(deadline: Timestamp, now: Timestamp) -> Duration {
    let left = deadline.duration_since(now);
    if left.is_negative() {
        Duration::ZERO
    } else {
        left.unsigned_abs()
    }
}

/// Sleep until the earliest of `deadlines` (wall-clock instants), measured
/// from the wall-clock `now` read once; at once for past deadlines, never
/// for an empty list. The wait itself runs on tokio's clock, so tests can
/// pause and advance it.
pub async fn sleep_until_earliest(deadlines: impl IntoIterator<Item = Timestamp>, now: Timestamp) {
    match deadlines.into_iter().min() {
        Some(earliest) => tokio::time::sleep(remaining(earliest, now)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
