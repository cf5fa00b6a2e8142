//! TokenReview answers, remembered by a SHA-256 of the token (the token
//! itself is never kept). An acceptance lasts until the token expires or
//! `max_ttl`, whichever is first; a refusal lasts `negative_ttl`, so a proxy
//! retrying with a bad token costs one review per period, not one per try.
//! The number of entries is bounded; when full, expired entries are swept and
//! a new answer that still does not fit is not remembered.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::Identity;

/// SHA-256 of a token.
pub type TokenKey = [u8; 32];

/// The cache key of a token.
pub fn token_key(token: &str) -> TokenKey {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// A remembered answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Accepted(Identity),
    /// The refusal's message.
    Refused(String),
}

#[derive(Debug)]
struct Entry {
    answer: Answer,
    until: Instant,
}

/// How long answers are kept and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachePolicy {
    pub max_ttl: Duration,
    pub negative_ttl: Duration,
    pub max_entries: usize,
}

/// Bounded map from token hash to answer.
#[derive(Debug)]
pub struct ReviewCache {
    policy: CachePolicy,
    entries: HashMap<TokenKey, Entry>,
}

/// Whether an answer was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Yes,
    /// Nothing to keep: the token expires now or the TTL is zero.
    Pointless,
    /// The cache is full of live entries.
    Full,
}

impl ReviewCache {
    pub fn new(policy: CachePolicy) -> Self {
        Self {
            policy,
            entries: HashMap::new(),
        }
    }

    /// The live answer for `key`, if any.
    pub fn get(&mut self, key: &TokenKey, now: Instant) -> Option<Answer> {
        match self.entries.get(key) {
            Some(entry) if entry.until > now => Some(entry.answer.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remember an acceptance; `token_left` is how long the token itself
    /// remains valid, when known.
    pub fn accept(
        &mut self,
        key: TokenKey,
        identity: Identity,
        token_left: Option<Duration>,
        now: Instant,
    ) -> Stored {
        let ttl = token_left.map_or(self.policy.max_ttl, |left| left.min(self.policy.max_ttl));
        self.insert(key, Answer::Accepted(identity), ttl, now)
    }

    /// Remember a refusal.
    pub fn refuse(&mut self, key: TokenKey, message: String, now: Instant) -> Stored {
        self.insert(key, Answer::Refused(message), self.policy.negative_ttl, now)
    }

    /// Live and expired entries not yet swept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, key: TokenKey, answer: Answer, ttl: Duration, now: Instant) -> Stored {
        if ttl.is_zero() {
            return Stored::Pointless;
        }
        if self.entries.len() >= self.policy.max_entries && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| e.until > now);
            if self.entries.len() >= self.policy.max_entries {
                return Stored::Full;
            }
        }
        let until = now + ttl;
        self.entries.insert(key, Entry { answer, until });
        Stored::Yes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(pod: &str) -> Identity {
        Identity {
            namespace: "shop".into(),
            pod: pod.into(),
            pod_uid: format!("{pod}-uid"),
            service_account: "default".into(),
        }
    }

    fn cache(max_entries: usize) -> ReviewCache {
        ReviewCache::new(CachePolicy {
            max_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(10),
            max_entries,
        })
    }

    #[test]
    fn keys_are_hashes_not_tokens() {
        let key = token_key("secret-token");
        assert_ne!(&key[..], b"secret-token");
        assert_eq!(key, token_key("secret-token"));
        assert_ne!(key, token_key("secret-tokem"));
    }

    #[test]
    fn an_acceptance_lasts_until_the_token_expires_or_the_max_ttl() {
        let t0 = Instant::now();
        let mut c = cache(10);
        let (a, b) = (token_key("a"), token_key("b"));
        c.accept(a, id("a"), Some(Duration::from_secs(60)), t0);
        c.accept(b, id("b"), None, t0);
        assert_eq!(
            c.get(&a, t0 + Duration::from_secs(59)),
            Some(Answer::Accepted(id("a")))
        );
        assert_eq!(c.get(&a, t0 + Duration::from_secs(60)), None);
        assert!(c.get(&b, t0 + Duration::from_secs(299)).is_some());
        assert_eq!(c.get(&b, t0 + Duration::from_secs(300)), None);
        assert!(c.is_empty(), "expired entries are dropped when read");
    }

    #[test]
    fn a_refusal_is_remembered_briefly() {
        let t0 = Instant::now();
        let mut c = cache(10);
        let k = token_key("bad");
        assert_eq!(c.refuse(k, "expired".into(), t0), Stored::Yes);
        assert_eq!(
            c.get(&k, t0 + Duration::from_secs(9)),
            Some(Answer::Refused("expired".into()))
        );
        assert_eq!(c.get(&k, t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn a_full_cache_sweeps_expired_entries_and_never_grows_past_its_bound() {
        let t0 = Instant::now();
        let mut c = cache(2);
        c.refuse(token_key("1"), "no".into(), t0);
        c.accept(token_key("2"), id("2"), None, t0);
        assert_eq!(c.accept(token_key("3"), id("3"), None, t0), Stored::Full);
        assert_eq!(c.len(), 2);
        // The refusal has expired: its room is reused.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(c.accept(token_key("3"), id("3"), None, later), Stored::Yes);
        assert_eq!(c.len(), 2);
        assert!(c.get(&token_key("3"), later).is_some());
        assert_eq!(
            c.accept(token_key("4"), id("4"), Some(Duration::ZERO), later),
            Stored::Pointless
        );
    }
}
