//! What the soak's clients did: messages acknowledged per chat, deliveries, and every error.
//!
//! A chat's messages are summed as (count, hash of each id and text) rather than kept: 2,000
//! listeners holding every message would cost the load generator more than the server.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Errors kept as examples for the failure message.
const EXAMPLES: usize = 20;

/// A multiset fingerprint of messages: equal tallies mean the same messages (with overwhelming
/// probability), whatever order they were added in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub hash: u64,
}

impl Tally {
    pub fn add(&mut self, id: u64, text: &str) {
        let mut hasher = DefaultHasher::new();
        (id, text).hash(&mut hasher);
        self.count += 1;
        self.hash = self.hash.wrapping_add(hasher.finish());
    }
}

pub struct Ledger {
    /// Per chat: the messages that got a 200.
    posted: Vec<Mutex<Tally>>,
    /// Message events received, over all listeners.
    pub deliveries: AtomicU64,
    /// Requests sent, polls included.
    pub requests: AtomicU64,
    errors: AtomicU64,
    examples: Mutex<Vec<String>>,
}

impl Ledger {
    pub fn new(chats: usize) -> Ledger {
        Ledger {
            posted: (0..chats).map(|_| Mutex::new(Tally::default())).collect(),
            deliveries: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            examples: Mutex::new(Vec::new()),
        }
    }

    pub fn posted(&self, chat: usize, id: u64, text: &str) {
        self.posted[chat].lock().unwrap().add(id, text);
    }

    pub fn posted_in(&self, chat: usize) -> Tally {
        *self.posted[chat].lock().unwrap()
    }

    pub fn messages_posted(&self) -> u64 {
        (0..self.posted.len())
            .map(|c| self.posted_in(c).count)
            .sum()
    }

    pub fn sent(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut examples = self.examples.lock().unwrap();
        if examples.len() < EXAMPLES {
            examples.push(what);
        }
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn examples(&self) -> Vec<String> {
        self.examples.lock().unwrap().clone()
    }
}
