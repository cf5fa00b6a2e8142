//! Where a message body ends, read off the bytes that are relayed
//! verbatim: a length, chunked coding (RFC 9112 section 7.1, trailers
//! included), or the end of the connection.
use super::MAX_LINE;

/// How a body is delimited, and how much of it is still to come.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// This many bytes.
    Length(u64),
    Chunked(Chunked),
    /// Everything until the sender closes (responses only).
    UntilClose,
}

/// A chunked body's state, between reads.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Chunked {
    state: State,
    /// Bytes of trailer section seen, bounded by [`MAX_LINE`] per line and
    /// [`MAX_TRAILERS`] in all.
    trailers: usize,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum State {
    /// A chunk-size line comes next.
    #[default]
    Size,
    /// This many data bytes are left in the chunk.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines, up to an empty one.
    Trailers,
    Done,
}

/// The trailer section's bound, as hyper's for a head.
pub const MAX_TRAILERS: usize = crate::traffic::http::MAX_HEADER_BYTES;

/// A body whose framing the relay cannot follow: the connection ends.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Malformed {
    #[error("failed to read a chunk-size line")]
    ChunkSize,
    #[error("failed to find the CRLF after a chunk's data")]
    ChunkEnd,
    #[error(
        "failed to read the trailer section: a line that is not a field, or over {MAX_TRAILERS} bytes"
    )]
    Trailers,
}

impl Framing {
    /// How many bytes at the start of `buf` belong to the body, as far as
    /// can be told from them, and whether the body ends with them. Bytes
    /// not counted (half a chunk-size line) are asked about again once more
    /// have arrived.
    pub fn scan(&mut self, buf: &[u8]) -> Result<(usize, bool), Malformed> {
        match self {
            Framing::Empty => Ok((0, true)),
            Framing::Length(left) => {
                let take = (*left).min(buf.len() as u64);
                *left -= take;
                Ok((take as usize, *left == 0))
            }
            Framing::Chunked(chunked) => chunked.scan(buf),
            Framing::UntilClose => Ok((buf.len(), false)),
        }
    }

    /// Whether the sender closing ends the body rather than cutting it.
    pub fn ends_at_close(&self) -> bool {
        matches!(self, Framing::UntilClose)
    }
}

impl Chunked {
    fn scan(&mut self, buf: &[u8]) -> Result<(usize, bool), Malformed> {
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            match self.state {
                State::Size => {
                    let Some(line) = line(rest) else {
                        return Ok((at, false));
                    };
                    let size = chunk_size(&rest[..line]).ok_or(Malformed::ChunkSize)?;
                    at += line;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    let take = left.min(rest.len() as u64);
                    at += take as usize;
                    if take < left {
                        self.state = State::Data(left - take);
                        return Ok((at, false));
                    }
                    self.state = State::DataEnd;
                }
                State::DataEnd => {
                    if rest.len() < 2 {
                        return Ok((at, false));
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(Malformed::ChunkEnd);
                    }
                    at += 2;
                    self.state = State::Size;
                }
                State::Trailers => {
                    let Some(line) = line(rest) else {
                        return Ok((at, false));
                    };
                    self.trailers += line;
                    let field = &rest[..line];
                    if self.trailers > MAX_TRAILERS
                        || !field.ends_with(b"\r\n")
                        || (line > 2 && !is_field_line(field))
                    {
                        return Err(Malformed::Trailers);
                    }
                    at += line;
                    if line == 2 {
                        self.state = State::Done;
                    }
                }
                State::Done => return Ok((at, true)),
            }
        }
    }
}

/// The length of the line at the start of `buf`, LF included, if it is
/// all there.
fn line(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|b| *b == b'\n').map(|i| i + 1)
}

/// A trailer line that reads as one header field, as hyper reads trailers:
/// anything else (a request line after a last chunk that lacks its blank
/// line, say) is where parsers that skip or refuse trailers part ways.
fn is_field_line(line: &[u8]) -> bool {
    let mut one = [httparse::EMPTY_HEADER; 1];
    matches!(
        httparse::parse_headers(line, &mut one),
        Ok(httparse::Status::Partial)
    )
}

/// A chunk-size line's size: hex digits, optional extensions, CRLF; no
/// bare LF, no spaces before the size (httparse is lenient there, and the
/// upstream reads these bytes as they are).
fn chunk_size(line: &[u8]) -> Option<u64> {
    if line.len() > MAX_LINE || !line.ends_with(b"\r\n") || !line.first()?.is_ascii_hexdigit() {
        return None;
    }
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((used, size))) if used == line.len() => Some(size),
        _ => None,
    }
}
