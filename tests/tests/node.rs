//! The user story on a real node: kubelet + containerd + runc + a CNI
//! bridge joined to a real control plane, faultline's images built offline
//! from the binaries under test, and faultline installed from `manifests/`
//! with `kubectl apply -k` (the webhook and controller run as a pod of our
//! Deployment, with our RBAC and ServiceAccount). Each test is one step of
//! what a user does, and asserts what that user sees. One node per test
//! binary (`NodeCluster::shared_or_skip`); every test has its own namespace;
//! tests that stop faultline's own pod take the story lock exclusively.
//! See docs/e2e-harness.md.

#[path = "node/support.rs"]
mod support;

#[path = "node/bench.rs"]
mod bench;
#[path = "node/cli.rs"]
mod cli;
#[path = "node/dns.rs"]
mod dns;
#[path = "node/injection.rs"]
mod injection;
#[path = "node/outage.rs"]
mod outage;
#[path = "node/outbound.rs"]
mod outbound;
#[path = "node/policy.rs"]
mod policy;
#[path = "node/probes.rs"]
mod probes;
#[path = "node/python.rs"]
mod python;
#[path = "node/termination.rs"]
mod termination;
#[path = "node/workloads.rs"]
mod workloads;
