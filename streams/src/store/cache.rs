//! The store's per-process cache: one slot per aggregate, a lock that serializes commands on it around
//! the last state loaded or committed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

/// What the cache remembers of one aggregate.
#[derive(Debug, Clone)]
pub(super) struct Loaded<A> {
    pub(super) aggregate: Arc<A>,
    pub(super) version: u64,
    /// stream sequence of the subject's last message; 0 when the aggregate has none
    pub(super) last_sequence: u64,
    pub(super) subject: Option<String>,
    /// when the last message's command ran; `None` when unknown or absent
    pub(super) updated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// the last message's audit-chain value; `None` for an absent aggregate or an unchained message
    pub(super) chain: Option<String>,
}

impl<A: Default> Loaded<A> {
    /// An aggregate without events.
    pub(super) fn absent() -> Self {
        Self {
            aggregate: Arc::default(),
            version: 0,
            last_sequence: 0,
            subject: None,
            updated_at: None,
            chain: None,
        }
    }
}

pub(super) type Slot<A> = Arc<tokio::sync::Mutex<Option<Loaded<A>>>>;

/// Per-aggregate slots: a lock (serializing commands on one aggregate) around the cached state.
pub(super) struct Cache<A> {
    // foldhash (seeded per process) rather than SipHash, which showed up in profiles of the write path.
    pub(super) slots: Mutex<HashMap<String, Slot<A>, foldhash::fast::RandomState>>,
    pub(super) capacity: usize,
}

impl<A> Cache<A> {
    pub(super) fn slot(&self, id: &str) -> Slot<A> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(id) {
            return slot.clone();
        }
        if slots.len() >= self.capacity {
            // Drop a tenth of the idle slots. Which ones matters little: a miss costs one direct get.
            let evict = self.capacity / 10 + 1;
            let idle: Vec<String> = slots
                .iter()
                .filter(|(_, s)| Arc::strong_count(s) == 1)
                .map(|(k, _)| k.clone())
                .take(evict)
                .collect();
            for key in idle {
                slots.remove(&key);
            }
        }
        slots.entry(id.to_owned()).or_default().clone()
    }
}
