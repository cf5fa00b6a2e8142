use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[test]
fn seen_at_round_trips_and_rejects_garbage() {
    let seen = SeenAt {
        at: ts("2026-11-26T02:00:00Z"),
        version: "abc".into(),
    };
    assert_eq!(seen.to_annotation(), "2026-11-26T02:00:00Z;abc");
    assert_eq!(SeenAt::parse(&seen.to_annotation()), Some(seen));
    for bad in [
        "",
        "2026-11-26T02:00:00Z",
        "yesterday;abc",
        "2026-11-26T02:00:00Z;",
    ] {
        assert_eq!(SeenAt::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn first_seen_keeps_the_recorded_time_only_for_the_same_version() {
    let now = ts("2026-11-26T03:00:00Z");
    let (seen, write) = first_seen(Some("2026-11-26T02:00:00Z;v1"), "v1", now);
    assert_eq!((seen.at, write), (ts("2026-11-26T02:00:00Z"), false));
    let (seen, write) = first_seen(Some("2026-11-26T02:00:00Z;v1"), "v2", now);
    assert_eq!((seen.at, seen.version.as_str(), write), (now, "v2", true));
    let (seen, write) = first_seen(None, "v1", now);
    assert_eq!((seen.at, write), (now, true));
    let (_, write) = first_seen(Some("garbage"), "v1", now);
    assert!(write);
}

#[test]
fn deadline_is_the_earlier_of_duration_and_until() {
    let seen = ts("2026-11-26T02:00:00Z");
    let d = Some(Duration::from_secs(60));
    assert_eq!(deadline(None, None, seen), None);
    assert_eq!(deadline(d, None, seen), Some(ts("2026-11-26T02:01:00Z")));
    assert_eq!(
        deadline(None, Some(ts("2026-11-26T05:00:00Z")), seen),
        Some(ts("2026-11-26T05:00:00Z"))
    );
    assert_eq!(
        deadline(d, Some(ts("2026-11-26T02:00:30Z")), seen),
        Some(ts("2026-11-26T02:00:30Z"))
    );
    assert_eq!(
        deadline(d, Some(ts("2026-11-26T09:00:00Z")), seen),
        Some(ts("2026-11-26T02:01:00Z"))
    );
    // Absurd durations saturate instead of panicking.
    assert!(deadline(Some(Duration::MAX), None, seen).is_some());
}

#[test]
fn remaining_saturates_at_zero() {
    let now = ts("2026-11-26T02:00:00Z");
    assert_eq!(
        remaining(ts("2026-11-26T02:00:05Z"), now),
        Duration::from_secs(5)
    );
    assert_eq!(remaining(ts("2026-11-26T01:00:00Z"), now), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn expiry_timer_fires_exactly_at_the_earliest_deadline() {
    let now = ts("2026-11-26T02:00:00Z");
    let seen = ts("2026-11-26T01:59:50Z");
    // duration 60s seen 10s ago -> 50s left; another policy with until in 2 min.
    let deadlines = vec![
        deadline(Some(Duration::from_secs(60)), None, seen).unwrap(),
        deadline(None, Some(ts("2026-11-26T02:02:00Z")), seen).unwrap(),
    ];
    let start = tokio::time::Instant::now();
    let timer = tokio::spawn(sleep_until_earliest(deadlines, now));
    tokio::time::sleep(Duration::from_secs(49)).await;
    assert!(!timer.is_finished(), "fired before the deadline");
    tokio::time::sleep(Duration::from_millis(1001)).await;
    tokio::task::yield_now().await;
    assert!(timer.is_finished(), "did not fire at the deadline");
    timer.await.unwrap();
    assert_eq!(start.elapsed().as_secs(), 50);
}

#[tokio::test(start_paused = true)]
async fn expired_policies_fire_at_once() {
    let now = ts("2026-11-26T02:00:00Z");
    let past = deadline(
        Some(Duration::from_secs(5)),
        None,
        ts("2026-11-26T01:00:00Z"),
    )
    .unwrap();
    let start = tokio::time::Instant::now();
    sleep_until_earliest([past], now).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
}
