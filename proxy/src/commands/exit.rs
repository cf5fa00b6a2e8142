//! The exit codes of `faultline-proxy run` and `wait-ready` (sysexits).

/// Bad configuration or policy file (EX_CONFIG).
pub const EX_CONFIG: u8 = 64;
/// A listener could not be bound, or the proxy never became ready (EX_UNAVAILABLE).
pub const EX_UNAVAILABLE: u8 = 69;
/// Internal error (EX_SOFTWARE).
pub const EX_SOFTWARE: u8 = 70;
