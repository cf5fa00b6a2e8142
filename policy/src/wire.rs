//! The policy stream's wire format, shared by the controller (which writes
//! it) and the proxy client (which reads it): newline-delimited JSON, one
//! [`StreamMessage`] per line.
//!
//! The policy travels as plain JSON so that the client can re-validate it with
//! `policy::parse` before applying it: a proxy never trusts that the bytes it
//! received were produced by a controller of the same version.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The path of the stream endpoint on the controller.
pub const STREAM_PATH: &str = "/v1/policy/stream";
/// The content type of the stream response.
pub const CONTENT_TYPE: &str = "application/x-ndjson";
/// The version string the controller sends when a pod has no faults.
pub const NO_FAULTS_VERSION: &str = "none";

/// One line of the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StreamMessage {
    /// The complete policy for this pod; replaces whatever came before.
    Policy {
        /// Stable hash of the policy text and resolved peers.
        version: String,
        /// Policy JSON, or `null` for "no faults".
        policy: Option<serde_json::Value>,
        /// Pod selector key -> current pod IPs.
        #[serde(default)]
        peers: BTreeMap<String, Vec<IpAddr>>,
    },
    /// Sent periodically so that a silent half-open connection is detected.
    Heartbeat,
    /// Every app container of the pod has exited for good (a Job's pod in
    /// the classic layout): the proxy drains and exits 0 so the pod can
    /// complete. Proxies that predate it ignore the line.
    Finish,
}

impl StreamMessage {
    /// Encode as one ndjson line (with the trailing newline).
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing this enum cannot fail: every field is a plain JSON value.
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        line
    }
}

/// Splits a byte stream into complete lines; keeps the partial tail.
#[derive(Debug, Default)]
pub struct LineBuffer {
    pending: Vec<u8>,
}

/// Longest line accepted; a policy annotation is at most 256 KiB in Kubernetes.
pub const MAX_LINE: usize = 1 << 20;

impl LineBuffer {
    /// Append a chunk and return the complete lines it finished (without
    /// newline, empty lines skipped). Errors if a line exceeds [`MAX_LINE`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        self.pending.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let rest = self.pending.split_off(pos + 1);
            let mut line = std::mem::replace(&mut self.pending, rest);
            line.pop();
            if !line.iter().all(u8::is_ascii_whitespace) {
                lines.push(line);
            }
        }
        if self.pending.len() > MAX_LINE {
            return Err(LineTooLong(self.pending.len()));
        }
        Ok(lines)
    }
}

/// A stream line grew beyond [`MAX_LINE`] bytes.
#[derive(Debug, thiserror::Error)]
#[error("policy stream line longer than {0} bytes")]
pub struct LineTooLong(pub usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_message_round_trips_with_the_documented_shape() {
        let msg = StreamMessage::Policy {
            version: "abc".into(),
            policy: None,
            peers: BTreeMap::from([("app=nats".to_string(), vec!["10.0.0.1".parse().unwrap()])]),
        };
        let line = msg.to_line();
        let text = std::str::from_utf8(&line).unwrap();
        assert_eq!(
            text,
            "{\"type\":\"policy\",\"version\":\"abc\",\"policy\":null,\"peers\":{\"app=nats\":[\"10.0.0.1\"]}}\n"
        );
        let back: StreamMessage = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, msg);
        let hb: StreamMessage = serde_json::from_str(r#"{"type":"heartbeat"}"#).unwrap();
        assert_eq!(hb, StreamMessage::Heartbeat);
    }

    #[test]
    fn line_buffer_joins_chunks_and_keeps_the_tail() {
        let mut buf = LineBuffer::default();
        assert!(buf.push(b"{\"a\"").unwrap().is_empty());
        let lines = buf.push(b":1}\n\n{\"b\":2}\n{\"c\"").unwrap();
        assert_eq!(lines, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        assert_eq!(buf.push(b":3}\n").unwrap(), vec![b"{\"c\":3}".to_vec()]);
    }

    #[test]
    fn line_buffer_rejects_unbounded_lines() {
        let mut buf = LineBuffer::default();
        let big = vec![b'x'; MAX_LINE + 1];
        assert!(buf.push(&big).is_err());
    }
}
