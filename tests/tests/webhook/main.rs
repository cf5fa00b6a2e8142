//! The webhook against a real kube-apiserver: `admission` (pods and
//! workloads injected and validated through the API server), `edge_cases`
//! (what the server cannot run, name conflicts, resource bounds), `certs` (the
//! Secret bootstrap and renewal), `review_bounds` (a 429 with `Retry-After`
//! is retried by the API server) and `pod_creation_bench` (`#[ignore]`d;
//! `bench/apiserver.sh` runs it).
mod admission;
mod certs;
mod edge_cases;
mod pod_creation_bench;
mod review_bounds;
