//! Connection admission: what a listener lets in before any byte is read. A cap on the
//! connections open at once per listener (over all shards) and per client IP address
//! (over all listeners and shards), each refused by closing at once; and a pace on new
//! connections per listener, which pauses accepting rather than refusing (the kernel's
//! accept queue holds them meanwhile).
//!
//! The counts are shared by the shards (atomics and one mutex, touched once at accept and
//! once at close, never per packet). A connection's [`Admitted`] travels with it (into
//! its home shard after CONNECT) and gives its places back when dropped, so a closed
//! connection counts for nothing.
//!
//! **Owns:** the counts and the pace. **Must not touch:** sockets, MQTT.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ahash::AHashMap;

/// Connections open per client IP address, against a cap.
#[derive(Debug)]
pub(crate) struct IpCounts {
    max: usize,
    open: Mutex<AHashMap<IpAddr, usize>>,
}

impl IpCounts {
    pub(crate) fn new(max: usize) -> IpCounts {
        IpCounts {
            max,
            open: Mutex::new(AHashMap::new()),
        }
    }

    fn take(&self, ip: IpAddr) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    fn give(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            // An address with nothing open holds no entry: the table is bounded by the
            // connections, not by every address ever seen.
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }
}

/// A listener's caps (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Caps {
    /// Most connections open at once on the listener; 0: none.
    pub max_connections: usize,
    /// Its open connections, over all shards.
    pub open: Arc<AtomicUsize>,
    /// The per-IP cap, shared by every listener; None: none.
    pub per_ip: Option<Arc<IpCounts>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The listener's `max_connections`.
    Listener,
    /// `max_connections_per_ip`.
    Ip,
}

/// The places an admitted connection holds (nothing when its listener has no caps); kept
/// for its `Drop`, which gives them back.
#[derive(Debug, Default)]
pub(crate) struct Admitted {
    _held: Option<Box<Held>>,
}

#[derive(Debug)]
struct Held {
    listener: Option<Arc<AtomicUsize>>,
    ip: Option<(Arc<IpCounts>, IpAddr)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(open) = &self.listener {
            open.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some((ips, ip)) = &self.ip {
            ips.give(*ip);
        }
    }
}

impl Caps {
    /// Takes a place for a connection from `peer`, or says which cap refuses it.
    pub(crate) fn admit(&self, peer: Option<IpAddr>) -> Result<Admitted, Refused> {
        if self.max_connections == 0 && self.per_ip.is_none() {
            return Ok(Admitted::default());
        }
        let mut held = Held {
            listener: None,
            ip: None,
        };
        if self.max_connections > 0 {
            if self.open.fetch_add(1, Ordering::Relaxed) >= self.max_connections {
                self.open.fetch_sub(1, Ordering::Relaxed);
                return Err(Refused::Listener);
            }
            held.listener = Some(self.open.clone());
        }
        if let (Some(ips), Some(ip)) = (&self.per_ip, peer) {
            // `held` gives the listener's place back if this refuses.
            if !ips.take(ip) {
                return Err(Refused::Ip);
            }
            held.ip = Some((ips.clone(), ip));
        }
        Ok(Admitted {
            _held: Some(Box::new(held)),
        })
    }
}

/// New connections per second for one accept loop: a token bucket holding up to one
/// second's worth, so a quiet listener can take a burst that size at once.
#[derive(Debug)]
pub(crate) struct Pace {
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl Pace {
    /// None for 0 (no pace).
    pub(crate) fn new(per_sec: u32) -> Option<Pace> {
        (per_sec > 0).then(|| Pace {
            per_sec: f64::from(per_sec),
            tokens: f64::from(per_sec),
            last: Instant::now(),
        })
    }

    /// How long to wait before the next accept (zero when a token is there), taking it.
    pub(crate) fn next_wait(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        // Never back: a wait that ended early still owes its time.
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Duration::ZERO;
        }
        let wait = (1.0 - self.tokens) / self.per_sec;
        // Taken now, paid for by the wait.
        self.tokens = 0.0;
        self.last = now + Duration::from_secs_f64(wait);
        Duration::from_secs_f64(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_and_give_back() {
        let caps = Caps {
            max_connections: 3,
            open: Arc::default(),
            per_ip: Some(Arc::new(IpCounts::new(2))),
        };
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = caps.admit(Some(a)).unwrap();
        let a2 = caps.admit(Some(a)).unwrap();
        assert_eq!(caps.admit(Some(a)).err(), Some(Refused::Ip));
        // The refused one gave its listener place back.
        let b1 = caps.admit(Some(b)).unwrap();
        assert_eq!(caps.admit(Some(b)).err(), Some(Refused::Listener));
        drop(a1);
        let a3 = caps.admit(Some(a)).unwrap();
        drop((a2, a3, b1));
        assert_eq!(caps.open.load(Ordering::Relaxed), 0);
        assert!(caps
            .per_ip
            .as_ref()
            .unwrap()
            .open
            .lock()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn pace_allows_a_seconds_burst_then_spaces() {
        let mut p = Pace::new(10).unwrap();
        let t = Instant::now();
        for _ in 0..10 {
            assert_eq!(p.next_wait(t), Duration::ZERO);
        }
        let w = p.next_wait(t);
        assert!(
            w > Duration::from_millis(90) && w <= Duration::from_millis(100),
            "{w:?}"
        );
        // After that wait, the next one waits a tenth of a second again.
        let w2 = p.next_wait(t + w);
        assert!(w2 > Duration::from_millis(90), "{w2:?}");
        assert!(Pace::new(0).is_none());
    }
}
