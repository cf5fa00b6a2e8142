//! The policy controller: `api_server` (annotations to proxies through a
//! real kube-apiserver, with `support`), `stream` (the stream server over
//! real TLS with the real proxy client, no API server), `idle_expiry`
//! (policies of workloads without injected pods expire too), `seen_at`
//! (each policy version's first sight is recorded once) and `bench`
//! (`#[ignore]`d; `bench/controller.sh` runs it).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod api_server;
mod bench;
mod idle_expiry;
mod seen_at;
mod stream;
mod support;
mod token_reviews;
