//! Fuzzes the TLS ClientHello reader with arbitrary first bytes of a
//! connection: it must never panic, never ask to read past its bound, and
//! only ever return a plausible server name. Detection must not panic on
//! the same bytes either.
#![no_main]

use faultline_proxy::traffic::client_hello::{self, Hello, MAX_CLIENT_HELLO};
use faultline_proxy::traffic::detect;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = detect::classify(data);
    match client_hello::parse(data) {
        Hello::NeedMore(want) => {
            assert!(want > data.len(), "asks for {want} bytes with {} read", data.len());
            assert!(want <= MAX_CLIENT_HELLO, "asks for {want} bytes");
        }
        Hello::Done(Some(name)) => {
            assert!(!name.is_empty() && name.len() <= 254, "{name:?}");
            assert!(name.bytes().all(|b| b.is_ascii_graphic()), "{name:?}");
        }
        Hello::Done(None) => {}
    }
});
