//! The data plane, in the order a connection meets it:
//! - `accept`: the accept loop, the connection limit, the original
//!   destination and connection-level faults;
//! - `detect`: HTTP/1.1, HTTP/2 (h2c, gRPC), TLS or raw TCP, from the first
//!   bytes; `client_hello`: a TLS connection's server name, when a rule
//!   asks for it;
//! - `http` (hyper) or `tcp` (a byte copier) forward the traffic;
//! - `effects`: the faults the data plane applies, from policy decisions;
//! - `client_io`: the client socket as both protocols see it (replayed
//!   prefix, RST on close, byte-level faults).
pub mod accept;
pub mod client_hello;
pub mod client_io;
pub mod detect;
pub mod effects;
pub mod http;
pub mod tcp;
