//! `first: N`: a rule fires for at most N requests (or connections) per
//! client IP. The counts live in the compiled policy, one table per rule.
//!
//! Memory is bounded: a table holds at most [`FIRST_MAX_CLIENTS`] client
//! IPs (about 48 bytes each with the hash table overhead, so under 200 KiB
//! per rule). When a table is full, clients it has not seen yet are treated
//! as exhausted: the rule stops firing for them. That errs on the side of
//! injecting fewer faults, never more than N for any client.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use super::matchers::ip_bits;

/// Most distinct client IPs one `first: N` rule remembers.
pub const FIRST_MAX_CLIENTS: usize = 4096;

#[derive(Debug)]
pub struct FirstCounter {
    limit: u32,
    clients: Mutex<HashMap<u128, u32>>,
}

impl FirstCounter {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one use for `client`; false once the client has had its N.
    pub fn try_take(&self, client: IpAddr) -> bool {
        // A poisoned lock only means another thread panicked mid-update of
        // a plain counter map; the data is still usable.
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let key = ip_bits(client);
        let full = clients.len() >= FIRST_MAX_CLIENTS;
        match clients.get_mut(&key) {
            Some(n) if *n < self.limit => {
                *n += 1;
                true
            }
            Some(_) => false,
            None if full || self.limit == 0 => false,
            None => {
                clients.insert(key, 1);
                true
            }
        }
    }

    /// How many times the rule fired for `client`.
    pub fn used(&self, client: IpAddr) -> u32 {
        let clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients.get(&ip_bits(client)).copied().unwrap_or(0)
    }
}
