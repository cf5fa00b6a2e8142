//! ClientHellos from a real TLS client (rustls), whole, in pieces, split
//! over records, without a server name, and mangled.
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// The first flight of a rustls client connecting to `name` (a DNS name or
/// an IP address, which is never sent as SNI).
fn client_hello(name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).unwrap();
    }
    out
}

/// The same handshake message framed in records of at most `size` bytes.
fn in_records(hello: &[u8], size: usize) -> Vec<u8> {
    let (header, message) = hello.split_at(5);
    let len = u16::from_be_bytes([header[3], header[4]]) as usize;
    let mut out = Vec::new();
    for piece in message[..len].chunks(size) {
        out.extend_from_slice(&header[..3]);
        out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
        out.extend_from_slice(piece);
    }
    out
}

fn name(s: &str) -> Hello {
    Hello::Done(Some(s.into()))
}

#[test]
fn a_real_client_hello_gives_its_server_name() {
    let hello = client_hello("api.stripe.com");
    assert_eq!(parse(&hello), name("api.stripe.com"));
    // Bytes after the ClientHello (early data, the next record) change nothing.
    let mut more = hello.clone();
    more.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0xff]);
    assert_eq!(parse(&more), name("api.stripe.com"));
}

#[test]
fn every_prefix_asks_for_more_within_the_bound() {
    for hello in [
        client_hello("api.stripe.com"),
        in_records(&client_hello("api.stripe.com"), 40),
    ] {
        for end in 0..hello.len() {
            match parse(&hello[..end]) {
                Hello::NeedMore(want) => {
                    assert!(want > end && want <= hello.len(), "{end}: wants {want}")
                }
                done => panic!("{end} of {} bytes: {done:?}", hello.len()),
            }
        }
    }
}

#[test]
fn a_client_hello_split_over_records_is_joined() {
    let hello = client_hello("payments.example.com");
    for size in [1, 7, 100, 512] {
        let split = in_records(&hello, size.max(hello.len() / MAX_HELLO_RECORDS + 1));
        assert_eq!(parse(&split), name("payments.example.com"), "{size}");
    }
    // Past the record bound, the name is not looked for.
    assert_eq!(parse(&in_records(&hello, 4)), Hello::Done(None));
}

#[test]
fn no_server_name_without_the_extension() {
    // rustls sends no SNI for an IP address (RFC 6066).
    assert_eq!(parse(&client_hello("10.1.2.3")), Hello::Done(None));
}

#[test]
fn other_records_and_messages_have_no_server_name() {
    let hello = client_hello("a.example");
    let mut alert = hello.clone();
    alert[0] = 0x15;
    assert_eq!(parse(&alert), Hello::Done(None));
    let mut server_hello = hello.clone();
    server_hello[5] = 0x02;
    assert_eq!(parse(&server_hello), Hello::Done(None));
}

#[test]
fn lengths_over_the_bound_are_not_followed() {
    // A handshake message declaring 1 MiB: never read.
    let mut huge = client_hello("a.example");
    huge[6..9].copy_from_slice(&[0x10, 0x00, 0x00]);
    assert_eq!(parse(&huge), Hello::Done(None));
    // A record longer than the bound allows.
    let mut long = vec![0x16, 0x03, 0x01, 0x41, 0x00, 0x01];
    long.resize(64, 0);
    assert_eq!(parse(&long), Hello::Done(None));
}

#[test]
fn mangled_client_hellos_never_panic_and_stay_bounded() {
    let hello = client_hello("api.stripe.com");
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let mut bytes = hello.clone();
        for _ in 0..rng.random_range(1..8) {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
        bytes.truncate(rng.random_range(0..=bytes.len()));
        if let Hello::NeedMore(want) = parse(&bytes) {
            assert!(want > bytes.len() && want <= MAX_CLIENT_HELLO);
        }
    }
}

/// The fuzz seeds are ClientHellos from another implementation (OpenSSL,
/// through Python's `ssl`), one of them longer than detection's first read.
#[test]
fn the_fuzz_seeds_are_read_as_expected() {
    let seed = |name: &str| {
        let path = format!("{}/fuzz/seeds/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    assert_eq!(parse(&seed("openssl-sni.bin")), name("api.stripe.com"));
    assert_eq!(
        parse(&seed("openssl-sni-records-200.bin")),
        name("api.stripe.com")
    );
    let large = seed("openssl-sni-large.bin");
    assert!(large.len() > crate::traffic::detect::MAX_REQUEST_LINE);
    assert_eq!(parse(&large), name("payments.example.com"));
    assert_eq!(parse(&seed("openssl-no-sni.bin")), Hello::Done(None));
    let truncated = seed("openssl-sni-truncated.bin");
    assert!(matches!(parse(&truncated), Hello::NeedMore(n) if n > truncated.len()));
}
