//! faultline-proxy: the fault-injection data plane.
