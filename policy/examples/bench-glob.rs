//! The cost of matching a 60 KB request path against `path` patterns,
//! through the public decision API (`compile`, `decide_request`), with an
//! ordinary glob and with globs of long literal pieces that almost match
//! everywhere. The baseline, measured in the same run, is the same glob
//! matched with a naive substring search (what faultline did before:
//! pattern length x path length). Prints nanoseconds per decision and the
//! ratios; `bench/glob.sh` runs it.
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use faultline_policy::{CompiledPolicy, Direction, PeerIps, Policy, Protocol, RequestInfo};
use http::{HeaderMap, Method};
use rand::SeedableRng;
use rand::rngs::SmallRng;

/// `validate` refuses patterns over 1 KiB; `compile` alone does not, which
/// lets the benchmark show how cost grows with the pattern.
fn policy(path: &str) -> CompiledPolicy {
    let doc = format!("rules:\n- match: {{path: \"{path}\"}}\n  hang: {{}}\n");
    match serde_yaml::from_str::<Policy>(&doc) {
        Ok(policy) => faultline_policy::compile(&policy, &PeerIps::new()),
        Err(error) => panic!("the benchmark's policy does not parse: {error}"),
    }
}

/// Median nanoseconds per decision over `rounds` rounds.
fn measure(policy: &CompiledPolicy, path: &str, iterations: u32, rounds: usize) -> f64 {
    let headers = HeaderMap::new();
    let method = Method::GET;
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let req = RequestInfo {
        direction: Direction::Inbound,
        destination_port: 8080,
        protocol: Protocol::Http,
        method: &method,
        path,
        headers: &headers,
        source_ip: ip,
        destination_ip: ip,
        host: None,
    };
    let mut rng = SmallRng::seed_from_u64(1);
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                black_box(policy.decide_request(black_box(&req), &mut rng));
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The glob as faultline matched it before: leftmost placement, but each
/// piece found by comparing it at every offset.
fn naive_glob(pattern: &str, text: &[u8]) -> bool {
    let parts: Vec<&[u8]> = pattern.as_bytes().split(|b| *b == b'*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    let mut window = &text[first.len()..text.len() - last.len()];
    for piece in &parts[1..parts.len() - 1] {
        if piece.is_empty() {
            continue;
        }
        match window.windows(piece.len()).position(|w| w == *piece) {
            Some(at) => window = &window[at + piece.len()..],
            None => return false,
        }
    }
    true
}

fn measure_naive(pattern: &str, path: &str, iterations: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(naive_glob(black_box(pattern), black_box(path.as_bytes())));
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn main() {
    let long = format!("/{}/end", "a".repeat(60_000));
    let ordinary = policy("/*/orders/*");
    println!("60 KB path ({} bytes), ns per decision", long.len());
    println!(
        "{:<48} {:>12} {:>12} {:>8}",
        "pattern", "faultline", "naive", "ratio"
    );
    let plain = measure(&ordinary, &long, 2_000, 5);
    println!("{:<48} {plain:>12.0}", "/*/orders/* (one scan of the path)");
    for piece_len in [10, 300, 3_000, 10_000] {
        let piece = format!("{}b", "a".repeat(piece_len - 1));
        let pattern = format!("/*{piece}*{piece}*{piece}*/end");
        let iterations = 200;
        let ours = measure(&policy(&pattern), &long, iterations, 5);
        let naive = measure_naive(&pattern, &long, (3_000 / piece_len as u32).clamp(3, 100));
        let name = format!("3 pieces of {piece_len} B ({} B pattern)", pattern.len());
        println!(
            "{name:<48} {ours:>12.0} {naive:>12.0} {:>8.1}",
            naive / ours
        );
    }
    println!("patterns over 1024 B are refused by validation since the bound");
}
