//! The little of the DNS wire format (RFC 1035 section 4) the proxy needs:
//! read a query's ID, flags and first question, and build an answer with
//! only a header and that question (an error code, or a truncated answer
//! that sends the client to TCP). Everything is bounds-checked; a message
//! this cannot read is forwarded untouched, never guessed at.

/// The fixed header: ID, flags, four counts.
pub const HEADER_LEN: usize = 12;
/// The longest name on the wire (RFC 1035 section 2.3.4).
const MAX_NAME_WIRE: usize = 255;

const QR: u8 = 0x80;
const OPCODE_MASK: u8 = 0x78;
const TC: u8 = 0x02;
const RD: u8 = 0x01;
const RA: u8 = 0x80;
const CD: u8 = 0x10;

/// Why a message is not a query this module can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("failed to read the DNS header: {0} bytes, a header has 12")]
    Short(usize),
    #[error("failed to read the DNS query: it is a response (QR set)")]
    Response,
    #[error("failed to read the DNS query: opcode {0} is not QUERY")]
    Opcode(u8),
    #[error("failed to read the DNS query: it has no question")]
    NoQuestion,
    #[error("failed to read the DNS question: the name runs past the message")]
    Truncated,
    #[error("failed to read the DNS question: a label is longer than 63 bytes")]
    LongLabel,
    #[error("failed to read the DNS question: the name is longer than 255 bytes")]
    LongName,
    #[error("failed to read the DNS question: compressed names have no place in a question")]
    Compressed,
}

/// A query's first question, with the name lowercased as the policy
/// matches it (no trailing dot; the root is the empty name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    name: [u8; MAX_NAME_WIRE],
    name_len: usize,
    pub qtype: u16,
    /// Where the first question ends: `HEADER_LEN..question_end` is copied
    /// into answers.
    question_end: usize,
}

impl Query {
    pub fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }

    /// The name for logs (non-printable bytes escaped).
    pub fn name_lossy(&self) -> String {
        self.name().escape_ascii().to_string()
    }
}

/// Reads the header and first question of a query.
pub fn parse_query(msg: &[u8]) -> Result<Query, WireError> {
    if msg.len() < HEADER_LEN {
        return Err(WireError::Short(msg.len()));
    }
    let flags = msg[2];
    if flags & QR != 0 {
        return Err(WireError::Response);
    }
    let opcode = (flags & OPCODE_MASK) >> 3;
    if opcode != 0 {
        return Err(WireError::Opcode(opcode));
    }
    if u16::from_be_bytes([msg[4], msg[5]]) == 0 {
        return Err(WireError::NoQuestion);
    }
    let mut name = [0u8; MAX_NAME_WIRE];
    let mut name_len = 0;
    let mut at = HEADER_LEN;
    let mut wire_len = 0;
    loop {
        let len = usize::from(*msg.get(at).ok_or(WireError::Truncated)?);
        if len & 0xC0 != 0 {
            return Err(if len & 0xC0 == 0xC0 {
                WireError::Compressed
            } else {
                WireError::LongLabel
            });
        }
        wire_len += len + 1;
        if wire_len > MAX_NAME_WIRE {
            return Err(WireError::LongName);
        }
        at += 1;
        if len == 0 {
            break;
        }
        let label = msg.get(at..at + len).ok_or(WireError::Truncated)?;
        if name_len > 0 {
            name[name_len] = b'.';
            name_len += 1;
        }
        for (slot, b) in name[name_len..name_len + len].iter_mut().zip(label) {
            *slot = b.to_ascii_lowercase();
        }
        name_len += len;
        at += len;
    }
    let qtype = msg.get(at..at + 2).ok_or(WireError::Truncated)?;
    let qtype = u16::from_be_bytes([qtype[0], qtype[1]]);
    // QCLASS follows QTYPE.
    let question_end = at + 4;
    if msg.len() < question_end {
        return Err(WireError::Truncated);
    }
    Ok(Query {
        id: u16::from_be_bytes([msg[0], msg[1]]),
        name,
        name_len,
        qtype,
        question_end,
    })
}

/// An answer to `msg` (whose first question `query` was read from) with
/// `rcode` and no records: the header and the question, nothing else.
pub fn error_answer(msg: &[u8], query: &Query, rcode: u8) -> Vec<u8> {
    answer(msg, query, rcode & 0x0F, false)
}

/// An empty answer with the TC bit set: "too large for UDP, ask over TCP".
pub fn truncated_answer(msg: &[u8], query: &Query) -> Vec<u8> {
    answer(msg, query, 0, true)
}

fn answer(msg: &[u8], query: &Query, rcode: u8, truncated: bool) -> Vec<u8> {
    let question = &msg[HEADER_LEN..query.question_end];
    let mut out = Vec::with_capacity(HEADER_LEN + question.len());
    out.extend_from_slice(&query.id.to_be_bytes());
    // QR, the query's opcode (always QUERY here) and RD; recursion available.
    let mut flags = QR | (msg[2] & (OPCODE_MASK | RD));
    if truncated {
        flags |= TC;
    }
    out.push(flags);
    out.push(RA | (msg[3] & CD) | rcode);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(question);
    out
}

/// The ID of any DNS message (query or answer), to pair them up.
pub fn message_id(msg: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.first()?, *msg.get(1)?]))
}

/// The RCODE of an answer.
pub fn rcode(msg: &[u8]) -> Option<u8> {
    msg.get(3).map(|b| b & 0x0F)
}

/// Whether an answer has the TC bit.
pub fn is_truncated(msg: &[u8]) -> bool {
    msg.get(2).is_some_and(|b| b & TC != 0)
}

#[cfg(test)]
mod tests;
