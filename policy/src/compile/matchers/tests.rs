use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// The definition of a `*` glob, by backtracking: obviously right, and
/// exponential, so only for short inputs.
fn reference(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| reference(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && reference(rest, &text[1..]),
    }
}

fn random_string(rng: &mut StdRng, alphabet: &[u8], max: usize) -> String {
    let len = rng.random_range(0..=max);
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

#[test]
fn patterns_agree_with_the_reference_on_generated_inputs() {
    let mut rng = StdRng::seed_from_u64(0x006c_6f62);
    for _ in 0..50_000 {
        // A small alphabet makes near-misses and repeated pieces common.
        let pattern = random_string(&mut rng, b"ab/*", 8);
        let text = random_string(&mut rng, b"ab/", 12);
        assert_eq!(
            Pattern::new(&pattern).matches(text.as_bytes()),
            reference(pattern.as_bytes(), text.as_bytes()),
            "pattern {pattern:?} against {text:?}"
        );
    }
}

#[test]
fn documented_examples() {
    let cases = [
        ("/healthz", "/healthz", true),
        ("/healthz", "/healthz/x", false),
        ("/api/*", "/api/checkout", true),
        ("/api/*", "/api", false),
        ("/api/checkout*", "/api/checkout/1", true),
        ("/api/checkout*", "/api/check", false),
        ("/users/*/orders", "/users/42/orders", true),
        ("/users/*/orders", "/users/42/orders/7", false),
        ("*", "", true),
        ("*a*a*", "aa", true),
        ("*a*a*", "a", false),
        ("/a*b*c", "/abcabc", true),
        ("/ab*ba", "/aba", false),
    ];
    for (pattern, text, expected) in cases {
        assert_eq!(
            Pattern::new(pattern).matches(text.as_bytes()),
            expected,
            "{pattern} against {text}"
        );
    }
}

/// Bytes of the text the glob hands to its substring searches (up to where
/// each search stopped); memmem itself is worst-case linear in what it is
/// handed.
fn searched_bytes(glob: &Glob, text: &[u8]) -> (bool, usize) {
    let mut work = 0;
    let matched = glob.matches_with(text, |finder, window| {
        let found = finder.find(window);
        work += found.map_or(window.len(), |at| at + finder.needle().len());
        found
    });
    (matched, work)
}

#[test]
fn long_pieces_against_a_long_path_cost_linear_work() {
    // Pieces that almost match everywhere: a naive search compares ~1000
    // bytes at each of the 60,000 offsets.
    let piece = format!("{}b", "a".repeat(999));
    let pattern = format!("/*{piece}*{piece}*{piece}*/end");
    let Pattern::Glob(glob) = Pattern::new(&pattern) else {
        panic!("{pattern} is a glob");
    };
    let text = format!("/{}/end", "a".repeat(60_000));
    let (matched, work) = searched_bytes(&glob, text.as_bytes());
    assert!(!matched);
    assert!(work <= text.len(), "{work} bytes searched");

    // A match that needs every piece: still each byte handed over once.
    let text = format!("/{piece}x{piece}{piece}{}/end", "a".repeat(60_000));
    let (matched, work) = searched_bytes(&glob, text.as_bytes());
    assert!(matched);
    assert!(work <= text.len(), "{work} bytes searched");
}
