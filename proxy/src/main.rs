//! `faultline-proxy`: `run` starts the proxy (sidecar or standalone), `init`
//! installs the traffic redirection (the `faultline-init` container),
//! `wait-ready` holds the app containers until the proxy is ready. The
//! commands, their flags and exit codes are `faultline_proxy::commands`.
use std::process::ExitCode;

use clap::Parser;
use faultline_proxy::commands::Cli;

// jemalloc instead of the C library's malloc: glibc keeps what connections
// freed in its per-thread arenas (measured: none of 180 MB came back after
// 10,000 connections closed), and musl, in the image, behaves otherwise
// again. jemalloc's background thread hands pages unused for a second back
// to the system (`.cargo/config.toml` sets the decay), so memory comes
// back after a burst of connections wherever the proxy runs (docs/proxy.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    Cli::parse().run()
}
