//! Test harness for faultline's end-to-end tests.
