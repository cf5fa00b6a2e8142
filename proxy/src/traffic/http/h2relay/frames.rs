//! HTTP/2 frames as the relay sees them go by (RFC 9113 section 4): where
//! each frame starts and ends, and the header-block bytes inside HEADERS
//! and CONTINUATION frames. The scanner holds nothing back and copies
//! nothing: the relay forwards the bytes as they came, and the scanner
//! only follows them, a few bytes of state per direction whatever the
//! frame sizes a peer announces.

/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, which the client sends before its
/// first frame.
pub const PREFACE_LEN: usize = 24;
const HEAD_LEN: usize = 9;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const PUSH_PROMISE: u8 = 0x5;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// A frame's 9-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHead {
    fn parse(b: &[u8; HEAD_LEN]) -> Self {
        FrameHead {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            // The reserved high bit is not part of the identifier.
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// HEADERS, PUSH_PROMISE and CONTINUATION carry a header block.
    fn carries_block(&self) -> bool {
        matches!(self.kind, HEADERS | PUSH_PROMISE | CONTINUATION)
    }
}

/// A GOAWAY frame with no error: the sender will not take new streams,
/// and every stream up to `last_stream` may still be processed.
pub fn goaway(last_stream: u32) -> [u8; HEAD_LEN + 8] {
    let mut frame = [0u8; HEAD_LEN + 8];
    frame[2] = 8;
    frame[3] = GOAWAY;
    frame[HEAD_LEN..HEAD_LEN + 4].copy_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    frame
}

/// What the scanner tells as the bytes go by.
pub trait Sink {
    /// A frame's header was read.
    fn frame(&mut self, head: FrameHead);
    /// Header-block bytes of a HEADERS or CONTINUATION frame, without the
    /// padding and priority fields around them.
    fn fragment(&mut self, bytes: &[u8]);
    /// The frame's payload has all gone by.
    fn end(&mut self, head: FrameHead);
}

#[derive(Debug)]
enum State {
    Preface { left: usize },
    Head { have: usize, bytes: [u8; HEAD_LEN] },
    Payload(Payload),
}

#[derive(Debug)]
struct Payload {
    head: FrameHead,
    /// Payload bytes already gone by.
    at: u32,
    /// Where the header-block fragment starts; known once the pad length
    /// (the first payload byte of a padded frame) has gone by.
    block_start: u32,
    block_end: Option<u32>,
}

/// One direction of a connection, followed frame by frame.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// Inside a header block that continues in CONTINUATION frames: no
    /// other frame may come in between (RFC 9113 section 6.10).
    in_block: bool,
}

impl Scanner {
    /// The client's side starts with the connection preface.
    pub fn client() -> Self {
        Scanner {
            state: State::Preface { left: PREFACE_LEN },
            in_block: false,
        }
    }

    pub fn server() -> Self {
        Scanner {
            state: State::Head {
                have: 0,
                bytes: [0; HEAD_LEN],
            },
            in_block: false,
        }
    }

    /// Between two frames and outside a header block: a frame of the
    /// proxy's own may go in here.
    pub fn may_insert(&self) -> bool {
        matches!(self.state, State::Head { have: 0, .. }) && !self.in_block
    }

    /// How many bytes until the current frame (or preface) ends: reading
    /// no more than this lands on a frame boundary.
    pub fn to_boundary(&self) -> usize {
        match &self.state {
            State::Preface { left } => *left,
            State::Head { have, .. } => HEAD_LEN - have,
            State::Payload(p) => (p.head.len - p.at) as usize,
        }
    }

    /// Follows `bytes`, telling `sink` what they hold.
    pub fn feed(&mut self, mut bytes: &[u8], sink: &mut impl Sink) {
        while !bytes.is_empty() {
            let used = self.step(bytes, sink);
            bytes = &bytes[used..];
        }
    }

    /// Follows `bytes` up to the end of the current frame at most;
    /// returns how many it used.
    fn step(&mut self, bytes: &[u8], sink: &mut impl Sink) -> usize {
        match &mut self.state {
            State::Preface { left } => {
                let n = (*left).min(bytes.len());
                *left -= n;
                if *left == 0 {
                    self.state = State::Head {
                        have: 0,
                        bytes: [0; HEAD_LEN],
                    };
                }
                n
            }
            State::Head { have, bytes: head } => {
                let n = (HEAD_LEN - *have).min(bytes.len());
                head[*have..*have + n].copy_from_slice(&bytes[..n]);
                *have += n;
                if *have == HEAD_LEN {
                    let head = FrameHead::parse(head);
                    self.start(head, sink);
                }
                n
            }
            State::Payload(p) => {
                let n = ((p.head.len - p.at) as usize).min(bytes.len());
                p.take(&bytes[..n], sink);
                if p.at == p.head.len {
                    let head = p.head;
                    self.finish(head, sink);
                }
                n
            }
        }
    }

    fn start(&mut self, head: FrameHead, sink: &mut impl Sink) {
        sink.frame(head);
        if head.carries_block() {
            self.in_block = !head.has(END_HEADERS);
        }
        let mut block_start = 0;
        let mut block_end = Some(head.len);
        if matches!(head.kind, HEADERS | PUSH_PROMISE) {
            if head.has(PADDED) {
                block_start += 1;
                block_end = None;
            }
            if head.kind == HEADERS && head.has(PRIORITY) {
                block_start += 5;
            }
            if head.kind == PUSH_PROMISE {
                block_start += 4;
            }
        }
        if !head.carries_block() {
            block_end = Some(0);
            block_start = 0;
        }
        self.state = State::Payload(Payload {
            head,
            at: 0,
            block_start,
            block_end,
        });
        if head.len == 0 {
            self.finish(head, sink);
        }
    }

    fn finish(&mut self, head: FrameHead, sink: &mut impl Sink) {
        sink.end(head);
        self.state = State::Head {
            have: 0,
            bytes: [0; HEAD_LEN],
        };
    }
}

impl Payload {
    fn take(&mut self, bytes: &[u8], sink: &mut impl Sink) {
        let from = self.at;
        self.at += bytes.len() as u32;
        if self.block_end.is_none() {
            // The pad length, the payload's first byte, went by.
            let pad = u32::from(bytes[0]);
            // A pad longer than the frame leaves no block: the receiver
            // refuses such a frame (PROTOCOL_ERROR) anyway.
            self.block_end = Some(self.head.len.saturating_sub(pad).max(self.block_start));
        }
        let end = self.block_end.unwrap_or(0).min(self.head.len);
        let start = self.block_start.min(end);
        let lo = from.max(start);
        let hi = self.at.min(end);
        if lo < hi {
            sink.fragment(&bytes[(lo - from) as usize..(hi - from) as usize]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug, PartialEq)]
    struct Seen {
        frames: Vec<FrameHead>,
        ended: usize,
        block: Vec<u8>,
    }

    impl Sink for Seen {
        fn frame(&mut self, head: FrameHead) {
            self.frames.push(head);
        }
        fn fragment(&mut self, bytes: &[u8]) {
            self.block.extend_from_slice(bytes);
        }
        fn end(&mut self, _: FrameHead) {
            self.ended += 1;
        }
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn conversation() -> Vec<u8> {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        // Padded, with priority: pad length 2, 5 priority bytes, "ab", pad.
        bytes.extend(frame(
            HEADERS,
            PADDED | PRIORITY,
            1,
            &[2, 0, 0, 0, 3, 16, b'a', b'b', 0, 0],
        ));
        bytes.extend(frame(CONTINUATION, END_HEADERS, 1, b"cd"));
        bytes.extend(frame(DATA, END_STREAM, 1, &[7; 40]));
        bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, b"ef"));
        bytes.extend(frame(0x6, 0, 0, &[1; 8]));
        bytes
    }

    #[test]
    fn frames_and_blocks_are_found_however_the_bytes_are_cut() {
        let bytes = conversation();
        let mut whole = Seen::default();
        Scanner::client().feed(&bytes, &mut whole);
        assert_eq!(whole.block, b"abcdef");
        assert_eq!(whole.ended, 6);
        let kinds: Vec<(u8, u32)> = whole.frames.iter().map(|f| (f.kind, f.stream)).collect();
        assert_eq!(
            kinds,
            [
                (0x4, 0),
                (HEADERS, 1),
                (CONTINUATION, 1),
                (DATA, 1),
                (HEADERS, 3),
                (0x6, 0)
            ]
        );
        for size in 1..bytes.len() {
            let mut cut = Seen::default();
            let mut scanner = Scanner::client();
            for piece in bytes.chunks(size) {
                scanner.feed(piece, &mut cut);
            }
            assert_eq!(cut, whole, "pieces of {size} bytes");
            assert!(scanner.may_insert());
        }
    }

    #[test]
    fn a_frame_may_go_in_only_between_frames_outside_a_header_block() {
        let bytes = conversation();
        let mut scanner = Scanner::client();
        let mut seen = Seen::default();
        let mut boundaries = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let step = scanner.to_boundary().min(bytes.len() - at);
            assert!(step > 0);
            scanner.feed(&bytes[at..at + step], &mut seen);
            at += step;
            if scanner.may_insert() {
                boundaries.push(at);
            }
        }
        // After the preface and each frame, but not between HEADERS and
        // its CONTINUATION.
        let settings_end = 24 + 9 + 6;
        let headers_end = settings_end + 9 + 10;
        assert!(boundaries.contains(&24));
        assert!(boundaries.contains(&settings_end));
        assert!(!boundaries.contains(&headers_end));
        assert!(boundaries.contains(&(headers_end + 9 + 2)));
        assert_eq!(boundaries.last(), Some(&bytes.len()));
    }

    #[test]
    fn hostile_lengths_cost_nothing_and_pads_past_the_frame_leave_no_block() {
        let mut seen = Seen::default();
        let mut scanner = Scanner::server();
        // A 16 MiB DATA frame announced, 1 KiB of it sent.
        let mut bytes = vec![0xff, 0xff, 0xff, DATA, 0, 0, 0, 0, 1];
        bytes.extend([0u8; 1024]);
        scanner.feed(&bytes, &mut seen);
        assert_eq!(scanner.to_boundary(), 0xff_ffff - 1024);
        assert_eq!(seen.ended, 0);
        let mut seen = Seen::default();
        let mut scanner = Scanner::server();
        scanner.feed(
            &frame(HEADERS, PADDED | END_HEADERS, 1, &[200, b'x']),
            &mut seen,
        );
        assert!(seen.block.is_empty());
        assert_eq!(seen.ended, 1);
        // The reserved bit is no part of the stream.
        scanner.feed(&frame(DATA, 0, 0x8000_0005, b""), &mut seen);
        assert_eq!(seen.frames.last().map(|f| f.stream), Some(5));
    }

    #[test]
    fn goaway_is_a_well_formed_frame() {
        let mut seen = Seen::default();
        Scanner::server().feed(&goaway(u32::MAX), &mut seen);
        assert_eq!(
            seen.frames,
            [FrameHead {
                len: 8,
                kind: GOAWAY,
                flags: 0,
                stream: 0
            }]
        );
        assert_eq!(&goaway(7)[9..], &[0, 0, 0, 7, 0, 0, 0, 0]);
    }
}
