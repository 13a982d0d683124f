//! Connection admission: `max_connections` open connections in all, `max_connections_per_ip` per
//! peer address (trusted proxies exempt). The accept loop in `server` asks here before it serves.

use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How often at most a biting cap is logged.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Both caps, shared by the accept loop.
pub struct ConnectionLimits {
    total: Arc<Semaphore>,
    max_total: usize,
    per_ip: Arc<PerIp>,
    exempt: Vec<IpNet>,
    total_warning: Throttled,
    per_ip_warning: Throttled,
}

/// What an admitted connection holds until it closes: a place in both counts.
pub struct Admission {
    _total: OwnedSemaphorePermit,
    _ip: IpSlot,
}

impl ConnectionLimits {
    /// `exempt` peers (the trusted proxies) are not counted per address, only in the total.
    pub fn new(max_total: usize, max_per_ip: usize, exempt: Vec<IpNet>) -> ConnectionLimits {
        ConnectionLimits {
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            per_ip: Arc::new(PerIp::new(max_per_ip)),
            exempt,
            total_warning: Throttled::new(),
            per_ip_warning: Throttled::new(),
        }
    }

    /// Waits for a place below `max_connections`: the caller stops accepting until one is free.
    pub async fn free_slot(&self) -> OwnedSemaphorePermit {
        if let Ok(permit) = self.total.clone().try_acquire_owned() {
            return permit;
        }
        self.total_warning.warn(|skipped| {
            format!(
                "max_connections ({}) reached: new connections wait until one closes{}",
                self.max_total,
                skipped_note(skipped)
            )
        });
        // The semaphore is never closed, so this cannot fail.
        self.total
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed")
    }

    /// Admits a connection from `peer` holding `slot`, or refuses it (the caller closes it) when
    /// that address already has `max_connections_per_ip` open.
    pub fn admit(&self, slot: OwnedSemaphorePermit, peer: IpAddr) -> Option<Admission> {
        let peer = peer.to_canonical();
        let ip = if self.exempt.iter().any(|net| net.contains(&peer)) {
            IpSlot::exempt(peer)
        } else {
            match self.per_ip.take(crate::server::ratelimit::limit_key(peer)) {
                Some(ip) => ip,
                None => {
                    self.per_ip_warning.warn(|skipped| {
                        format!(
                            "max_connections_per_ip ({}) reached by {peer}: connection closed{}",
                            self.per_ip.max,
                            skipped_note(skipped)
                        )
                    });
                    return None;
                }
            }
        };
        Some(Admission {
            _total: slot,
            _ip: ip,
        })
    }

    /// Connections open right now, in all.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.max_total - self.total.available_permits()
    }
}

fn skipped_note(skipped: u64) -> String {
    if skipped == 0 {
        String::new()
    } else {
        format!(" ({skipped} more times since the last warning)")
    }
}

/// Open connections per peer address.
struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    fn new(max: usize) -> PerIp {
        PerIp {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// One more connection from `ip`, unless it is at the limit.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            ip,
            counted: Some(self.clone()),
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&ip) {
            *count -= 1;
            // Addresses with nothing open take no memory.
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap();
        open.get(&ip).copied().unwrap_or(0)
    }

    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.open.lock().unwrap().len()
    }
}

/// One connection's place in its address's count, given back when dropped.
struct IpSlot {
    ip: IpAddr,
    counted: Option<Arc<PerIp>>,
}

impl IpSlot {
    fn exempt(ip: IpAddr) -> IpSlot {
        IpSlot { ip, counted: None }
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some(per_ip) = &self.counted {
            per_ip.release(self.ip);
        }
    }
}

/// A warning logged at most once per `WARN_EVERY`, counting the ones it skipped.
struct Throttled {
    started: Instant,
    /// Milliseconds since `started` of the last warning, plus one (0: never warned).
    last: AtomicU64,
    skipped: AtomicU64,
}

impl Throttled {
    fn new() -> Throttled {
        Throttled {
            started: Instant::now(),
            last: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    fn warn(&self, message: impl FnOnce(u64) -> String) {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let text = message(self.skipped.swap(0, Ordering::Relaxed));
            log::warn!("{text}");
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn slot(limits: &ConnectionLimits) -> OwnedSemaphorePermit {
        limits
            .total
            .clone()
            .try_acquire_owned()
            .expect("a free slot")
    }

    #[test]
    fn each_address_gets_its_own_count_up_to_the_limit() {
        let limits = ConnectionLimits::new(100, 3, Vec::new());
        let a = ip("192.0.2.1");
        let held: Vec<Admission> = (0..3)
            .map(|_| limits.admit(slot(&limits), a).expect("below the limit"))
            .collect();
        assert_eq!(limits.per_ip.count(a), 3);
        assert!(
            limits.admit(slot(&limits), a).is_none(),
            "the 4th is refused"
        );
        // A refused connection gives its total slot back at once.
        assert_eq!(limits.open(), 3);
        let b = ip("192.0.2.2");
        let other = limits.admit(slot(&limits), b).expect("another address");
        assert_eq!(limits.per_ip.count(b), 1);
        drop(other);
        drop(held);
        assert_eq!(limits.per_ip.count(a), 0);
        assert_eq!(limits.open(), 0);
    }

    #[test]
    fn a_closed_connection_frees_a_place_and_idle_addresses_are_forgotten() {
        let limits = ConnectionLimits::new(100, 2, Vec::new());
        let a = ip("2001:db8::1");
        let first = limits.admit(slot(&limits), a).unwrap();
        let _second = limits.admit(slot(&limits), a).unwrap();
        assert!(limits.admit(slot(&limits), a).is_none());
        drop(first);
        let third = limits.admit(slot(&limits), a);
        assert!(third.is_some(), "a place came free");
        drop(third);
        drop(_second);
        assert_eq!(
            limits.per_ip.addresses(),
            0,
            "no entry is kept for idle addresses"
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_peers_count_as_their_ipv4_address() {
        let limits = ConnectionLimits::new(100, 1, Vec::new());
        let _held = limits.admit(slot(&limits), ip("198.51.100.7")).unwrap();
        assert!(
            limits
                .admit(slot(&limits), ip("::ffff:198.51.100.7"))
                .is_none()
        );
    }

    #[test]
    fn trusted_proxies_are_not_counted_per_address() {
        let proxies = vec!["10.0.0.0/8".parse().unwrap()];
        let limits = ConnectionLimits::new(100, 1, proxies);
        let proxy = ip("10.1.2.3");
        let held: Vec<Admission> = (0..5)
            .map(|_| limits.admit(slot(&limits), proxy).expect("exempt"))
            .collect();
        assert_eq!(limits.per_ip.count(proxy), 0);
        assert_eq!(limits.open(), 5, "but they count in the total");
        drop(held);
        assert_eq!(limits.open(), 0);
    }

    #[tokio::test]
    async fn the_total_waits_for_a_connection_to_close() {
        let limits = Arc::new(ConnectionLimits::new(2, 2, Vec::new()));
        let first = limits.free_slot().await;
        let _second = limits.free_slot().await;
        let waiting = tokio::spawn({
            let limits = limits.clone();
            async move { limits.free_slot().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "no slot while both are held");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(third.is_ok(), "a closed connection frees a slot");
    }

    #[test]
    fn warnings_are_throttled_and_count_what_they_skipped() {
        let throttled = Throttled::new();
        let mut logged = Vec::new();
        for _ in 0..5 {
            throttled.warn(|skipped| {
                logged.push(skipped);
                String::new()
            });
        }
        assert_eq!(logged, vec![0], "one warning per minute");
        assert_eq!(throttled.skipped.load(Ordering::Relaxed), 4);
    }
}
