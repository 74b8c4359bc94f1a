//! Per-caller limits on what holds server resources for as long as a request lasts: open feeds (each is a
//! JetStream consumer while it is open) and concurrent history reads (each walks an instance's subjects).
//! Any viewer could otherwise open them without end. Past its limit a caller gets 429 with `Retry-After`;
//! other callers are unaffected.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::{ApiError, auth::Principal};

/// Default most open feeds per caller.
pub const DEFAULT_FEEDS_PER_CALLER: usize = 16;
/// Default most concurrent history reads (history, as-of, diff, verify) per caller.
pub const DEFAULT_HISTORY_READS_PER_CALLER: usize = 4;

/// The limits of one API process.
#[derive(Debug, Clone)]
pub struct CallerLimits {
    /// open feeds
    pub feeds: Limit,
    /// concurrent history reads
    pub history_reads: Limit,
}

impl Default for CallerLimits {
    fn default() -> Self {
        Self::new(DEFAULT_FEEDS_PER_CALLER, DEFAULT_HISTORY_READS_PER_CALLER)
    }
}

impl CallerLimits {
    /// At most `feeds` open feeds and `history_reads` concurrent history reads per caller.
    pub fn new(feeds: usize, history_reads: usize) -> Self {
        Self {
            feeds: Limit::new("open feeds", feeds, 5),
            history_reads: Limit::new("concurrent history reads", history_reads, 1),
        }
    }
}

/// At most `max` held at once per caller.
#[derive(Debug, Clone)]
pub struct Limit(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    what: &'static str,
    max: usize,
    retry_after: u32,
    held: Mutex<HashMap<String, usize>>,
}

impl Limit {
    fn new(what: &'static str, max: usize, retry_after: u32) -> Self {
        Self(Arc::new(Inner { what, max, retry_after, held: Mutex::default() }))
    }

    /// One more for `caller`, held until the permit is dropped; 429 when the caller holds `max`.
    pub fn acquire(&self, caller: &Principal) -> Result<Permit, ApiError> {
        let key = caller.actor();
        let mut held = self.0.held.lock().expect("limits lock");
        let count = held.entry(key.clone()).or_default();
        if *count >= self.0.max {
            return Err(ApiError::TooManyRequests {
                detail: format!(
                    "at most {} {} per caller; close one or retry later",
                    self.0.max, self.0.what
                ),
                retry_after: self.0.retry_after,
            });
        }
        *count += 1;
        Ok(Permit { limit: self.clone(), key })
    }

    /// How many `caller` holds.
    pub fn held(&self, caller: &Principal) -> usize {
        self.0.held.lock().expect("limits lock").get(&caller.actor()).copied().unwrap_or(0)
    }
}

/// One held unit of a [`Limit`]; released when dropped (a feed's when its client goes away).
#[derive(Debug)]
pub struct Permit {
    limit: Limit,
    key: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = self.limit.0.held.lock().expect("limits lock");
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(subject: &str) -> Principal {
        Principal {
            subject: subject.into(),
            token_name: None,
            platform_admin: false,
            projects: Default::default(),
        }
    }

    #[test]
    fn a_caller_past_its_limit_waits_and_others_do_not() {
        let limit = Limit::new("open feeds", 2, 5);
        let (alice, bob) = (caller("alice"), caller("bob"));
        let first = limit.acquire(&alice).unwrap();
        let _second = limit.acquire(&alice).unwrap();
        let refused = limit.acquire(&alice).unwrap_err();
        assert!(matches!(refused, ApiError::TooManyRequests { retry_after: 5, .. }), "{refused:?}");
        assert!(limit.acquire(&bob).is_ok(), "another caller is not limited by alice");
        drop(first);
        assert_eq!(limit.held(&alice), 1);
        assert!(limit.acquire(&alice).is_ok(), "a released permit frees a place");
    }
}
