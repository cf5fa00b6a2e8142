//! Fuzzes the admission decoder with arbitrary bytes as an AdmissionReview
//! body for `/mutate` and `/validate`: no panic, every answer encodes and
//! carries the review's uid, every patch applies and injects for good (see
//! `faultline_webhook::admission::fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    faultline_webhook::admission::fuzz::check_admission(data);
});
