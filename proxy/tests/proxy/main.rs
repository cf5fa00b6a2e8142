//! Integration tests: a real client, the proxy in standalone mode and a
//! real upstream, all on 127.0.0.1:0. Each fault is observed from the
//! client side. Layout: `support` (servers, proxy, helpers), then one file
//! per area.
#![allow(clippy::unwrap_used)]

mod control;
mod delay_distributions;
mod dns;
mod grpc;
mod h2relay;
mod header_faults;
mod http_edges;
mod http_faults;
mod http_parsing;
mod idle;
mod memory;
mod operations;
mod relay;
mod relay_hostile;
mod reload;
mod response_faults;
mod support;
mod tcp;
mod tls;
mod toxics;
mod upstream_conns;
