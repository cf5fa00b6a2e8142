//! The webhook against a real kube-apiserver: `admission` (pods and
//! workloads injected and validated through the API server), `certs` (the
//! Secret bootstrap and renewal) and `pod_creation_bench` (`#[ignore]`d;
//! `bench/apiserver.sh` runs it).
mod admission;
mod certs;
mod pod_creation_bench;
