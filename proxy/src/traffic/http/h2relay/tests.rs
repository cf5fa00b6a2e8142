//! What a hostile client can send the relay's decoding: random frames and
//! header blocks, which must neither panic nor grow past the bounds.
use loona_hpack::Encoder;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use super::frames::{FrameHead, Scanner, Sink};
use super::{MAX_HPACK_TABLE, Requests};

/// Counts what the scanner reports; the block bytes are checked against
/// the frames' lengths.
#[derive(Default)]
struct Tally {
    frames: usize,
    ends: usize,
    fragment_bytes: u64,
    announced: u64,
}

impl Sink for Tally {
    fn frame(&mut self, head: FrameHead) {
        self.frames += 1;
        self.announced += u64::from(head.len);
    }
    fn fragment(&mut self, bytes: &[u8]) {
        self.fragment_bytes += bytes.len() as u64;
    }
    fn end(&mut self, _: FrameHead) {
        self.ends += 1;
    }
}

#[test]
fn random_bytes_never_panic_the_scanner_and_blocks_stay_inside_frames() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..200 {
        let mut bytes = vec![0u8; rng.random_range(0..20_000)];
        rng.fill_bytes(&mut bytes);
        // Small lengths, so many frames end inside the bytes.
        for at in (0..bytes.len()).step_by(97) {
            bytes[at] = 0;
        }
        let mut scanner = Scanner::client();
        let mut tally = Tally::default();
        for piece in bytes.chunks(rng.random_range(1..3000)) {
            scanner.feed(piece, &mut tally);
        }
        assert!(tally.ends <= tally.frames && tally.frames <= tally.ends + 1);
        assert!(tally.fragment_bytes <= tally.announced);
    }
}

#[test]
fn random_header_blocks_never_panic_the_decoder_and_a_table_past_the_bound_stops_it() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut requests = Requests::new();
    for round in 0..5_000 {
        if requests.hpack.is_none() {
            requests = Requests::new();
        }
        let mut block = vec![0u8; rng.random_range(0..512)];
        rng.fill_bytes(&mut block);
        let oversized = round % 3 == 0;
        if oversized {
            // A table size update to 128 KiB, past the bound.
            block.splice(0..0, [0x3f, 0xe1, 0xff, 0x07]);
        }
        requests.block = block;
        requests.decode();
        assert!(requests.block.is_empty());
        if oversized {
            assert!(requests.hpack.is_none(), "decoding stopped");
        }
    }
    // A well-formed gRPC request decodes as one, on a table in step.
    let mut requests = Requests::new();
    let mut encoder = Encoder::new();
    for (i, content_type) in ["application/grpc+proto", "text/plain", "application/grpc"]
        .iter()
        .enumerate()
    {
        let path = format!("/svc/{i}");
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":path", path.as_bytes()),
            (b"content-type", content_type.as_bytes()),
        ];
        requests.block = encoder.encode(headers);
        assert_eq!(
            requests.decode(),
            content_type.starts_with("application/grpc")
        );
    }
    assert!(requests.hpack.is_some());
    // The bound itself is a size a client may ask for.
    let mut requests = Requests::new();
    let size = MAX_HPACK_TABLE - 31;
    let mut block = vec![0x3f];
    let mut rest = size;
    while rest >= 128 {
        block.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    block.push(rest as u8);
    block.extend(encoder.encode(vec![(&b":method"[..], &b"GET"[..])]));
    requests.block = block;
    requests.decode();
    assert!(requests.hpack.is_some());
}
