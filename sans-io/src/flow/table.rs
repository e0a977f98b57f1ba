//! A bounded flow table: a slab of flows, found from the guest side by a key hashed with a
//! secret seeded key (so a guest can't aim a flood of tuples at one bucket), from the host
//! side by [`SockRef`], with one deadline per flow kept in an ordered set.
//!
//! Deadlines are lazy: a flow's entry only ever moves *earlier* when rescheduled; when its
//! deadline moves later (the common case: a retransmission timeout stopped by every
//! acknowledgement and started by the next data) the old entry stays and fires early, and the
//! owner then reschedules. That keeps the ordered set, and the driver's timer, off the
//! per-frame path, with at most one entry per flow. Where an owner knows a flow's timers
//! changed for good (a connection closed: its retransmission timeout stopped, only TIME_WAIT
//! left), [`FlowTable::schedule_exactly`] moves the entry, so that thousands of closed
//! connections a second don't each wake the loop for nothing.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};

use super::SockRef;
use crate::time::Instant;

/// SipHash-1-3 (the variant Rust's standard library uses), keyed.
#[derive(Debug, Clone)]
pub struct SipHasher13 {
    v: [u64; 4],
    tail: u64,
    ntail: usize,
    length: usize,
}

impl SipHasher13 {
    pub fn new_with_keys(k0: u64, k1: u64) -> Self {
        SipHasher13 {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            length: 0,
        }
    }

    #[inline]
    fn round(&mut self) {
        let v = &mut self.v;
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }

    #[inline]
    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        self.round();
        self.v[0] ^= m;
    }
}

impl Hasher for SipHasher13 {
    fn write(&mut self, bytes: &[u8]) {
        self.length += bytes.len();
        for &b in bytes {
            self.tail |= u64::from(b) << (8 * self.ntail);
            self.ntail += 1;
            if self.ntail == 8 {
                let m = self.tail;
                self.compress(m);
                self.tail = 0;
                self.ntail = 0;
            }
        }
    }

    fn finish(&self) -> u64 {
        let mut s = self.clone();
        let b = ((s.length as u64 & 0xff) << 56) | s.tail;
        s.compress(b);
        s.v[2] ^= 0xff;
        s.round();
        s.round();
        s.round();
        s.v[0] ^ s.v[1] ^ s.v[2] ^ s.v[3]
    }
}

/// Builds [`SipHasher13`]s with one secret key.
#[derive(Debug, Clone, Copy)]
pub struct KeyedHash {
    k0: u64,
    k1: u64,
}

impl KeyedHash {
    pub fn new(k0: u64, k1: u64) -> Self {
        KeyedHash { k0, k1 }
    }
}

impl BuildHasher for KeyedHash {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

struct Slot<K, F> {
    key: K,
    sock: Option<SockRef>,
    /// The deadline of this flow's entry in the timer set, if it has one.
    timer: Option<Instant>,
    flow: F,
}

/// Flows of one kind, at most `capacity` of them.
pub struct FlowTable<K, F> {
    slots: Vec<Option<Slot<K, F>>>,
    free: Vec<u32>,
    capacity: usize,
    live: usize,
    by_key: HashMap<K, u32, KeyedHash>,
    by_sock: HashMap<SockRef, u32, KeyedHash>,
    timers: BTreeSet<(Instant, u32)>,
}

impl<K: Hash + Eq + Clone, F> FlowTable<K, F> {
    pub fn new(capacity: usize, hash: KeyedHash) -> Self {
        FlowTable {
            slots: Vec::new(),
            free: Vec::new(),
            capacity: capacity.min(u32::MAX as usize),
            live: 0,
            by_key: HashMap::with_hasher(hash),
            by_sock: HashMap::with_hasher(hash),
            timers: BTreeSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn is_full(&self) -> bool {
        self.live >= self.capacity
    }

    /// Adds a flow under `key`; gives it back when the table is full or the key is taken.
    pub fn insert(&mut self, key: K, flow: F) -> Result<u32, F> {
        if self.is_full() || self.by_key.contains_key(&key) {
            return Err(flow);
        }
        let slot = Slot {
            key: key.clone(),
            sock: None,
            timer: None,
            flow,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        self.by_key.insert(key, idx);
        self.live += 1;
        Ok(idx)
    }

    pub fn get(&self, idx: u32) -> Option<&F> {
        self.slots.get(idx as usize)?.as_ref().map(|s| &s.flow)
    }

    pub fn get_mut(&mut self, idx: u32) -> Option<&mut F> {
        self.slots
            .get_mut(idx as usize)?
            .as_mut()
            .map(|s| &mut s.flow)
    }

    pub fn key(&self, idx: u32) -> Option<&K> {
        self.slots.get(idx as usize)?.as_ref().map(|s| &s.key)
    }

    pub fn by_key(&self, key: &K) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    pub fn by_sock(&self, s: SockRef) -> Option<u32> {
        self.by_sock.get(&s).copied()
    }

    /// Ties socket `s` to flow `idx` (replacing any socket it had).
    pub fn bind_sock(&mut self, idx: u32, s: SockRef) {
        let Some(slot) = self.slots.get_mut(idx as usize).and_then(Option::as_mut) else {
            return;
        };
        if let Some(old) = slot.sock.replace(s) {
            self.by_sock.remove(&old);
        }
        self.by_sock.insert(s, idx);
    }

    /// Unties flow `idx` from its socket (it was closed), returning it.
    pub fn unbind_sock(&mut self, idx: u32) -> Option<SockRef> {
        let slot = self.slots.get_mut(idx as usize)?.as_mut()?;
        let s = slot.sock.take()?;
        self.by_sock.remove(&s);
        Some(s)
    }

    /// Removes flow `idx`, its socket and key mappings and its timer.
    pub fn remove(&mut self, idx: u32) -> Option<F> {
        let slot = self.slots.get_mut(idx as usize)?.take()?;
        self.by_key.remove(&slot.key);
        if let Some(s) = slot.sock {
            self.by_sock.remove(&s);
        }
        if let Some(t) = slot.timer {
            self.timers.remove(&(t, idx));
        }
        self.free.push(idx);
        self.live -= 1;
        Some(slot.flow)
    }

    /// Wants flow `idx` woken at `deadline` (or never). Lazy: see the module documentation.
    pub fn schedule(&mut self, idx: u32, deadline: Option<Instant>) {
        let Some(slot) = self.slots.get(idx as usize).and_then(Option::as_ref) else {
            return;
        };
        // An entry at or before the new deadline stays.
        if let (Some(t), Some(d)) = (slot.timer, deadline) {
            if t <= d {
                return;
            }
        }
        self.schedule_exactly(idx, deadline);
    }

    /// Wants flow `idx` woken at `deadline` (or never), moving its entry later too: for a
    /// flow whose earlier timers stopped for good.
    pub fn schedule_exactly(&mut self, idx: u32, deadline: Option<Instant>) {
        let Some(slot) = self.slots.get_mut(idx as usize).and_then(Option::as_mut) else {
            return;
        };
        if slot.timer == deadline {
            return;
        }
        if let Some(t) = slot.timer.take() {
            self.timers.remove(&(t, idx));
        }
        if let Some(d) = deadline {
            self.timers.insert((d, idx));
            slot.timer = Some(d);
        }
    }

    /// The earliest entry in the timer set.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|&(t, _)| t)
    }

    /// Takes one flow whose entry is due at `now`; the caller handles it and reschedules.
    pub fn pop_due(&mut self, now: Instant) -> Option<u32> {
        let &(t, idx) = self.timers.first()?;
        if t > now {
            return None;
        }
        self.timers.remove(&(t, idx));
        if let Some(slot) = self.slots.get_mut(idx as usize).and_then(Option::as_mut) {
            slot.timer = None;
        }
        Some(idx)
    }

    /// Indices of live flows (for tests and teardown; a scan, not for the data path).
    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| i as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash13_matches_std_with_zero_keys() {
        // std's DefaultHasher is SipHash-1-3 with zero keys.
        #[allow(deprecated)]
        let mut std = std::collections::hash_map::DefaultHasher::new();
        let mut ours = SipHasher13::new_with_keys(0, 0);
        for h in [&mut std as &mut dyn Hasher, &mut ours] {
            h.write(b"hello, world: a flow key of some length");
            h.write_u16(8080);
        }
        assert_eq!(std.finish(), ours.finish());
        let mut keyed = SipHasher13::new_with_keys(1, 2);
        keyed.write(b"hello");
        assert_ne!(keyed.finish(), ours.finish());
    }

    #[test]
    fn bounded_with_keys_sockets_and_timers() {
        let mut t: FlowTable<u32, &str> = FlowTable::new(2, KeyedHash::new(3, 4));
        let a = t.insert(10, "a").unwrap();
        assert!(t.insert(10, "dup").is_err());
        let b = t.insert(20, "b").unwrap();
        assert!(t.is_full());
        assert_eq!(t.insert(30, "c"), Err("c"));
        t.bind_sock(a, SockRef(7));
        assert_eq!(t.by_sock(SockRef(7)), Some(a));
        assert_eq!(t.by_key(&20), Some(b));

        let at = |ms| Instant::from_millis(ms);
        t.schedule(a, Some(at(100)));
        t.schedule(b, Some(at(50)));
        t.schedule(a, Some(at(500))); // later: lazy, stays at 100
        t.schedule(b, Some(at(20))); // earlier: moves
        assert_eq!(t.next_deadline(), Some(at(20)));
        assert_eq!(t.pop_due(at(10)), None);
        assert_eq!(t.pop_due(at(100)), Some(b));
        assert_eq!(t.pop_due(at(100)), Some(a));
        assert_eq!(t.next_deadline(), None);

        // Moved on purpose: later too, and nothing wakes early.
        t.schedule(a, Some(at(100)));
        t.schedule(a, Some(at(900)));
        assert_eq!(t.next_deadline(), Some(at(100)), "lazy");
        t.schedule_exactly(a, Some(at(900)));
        assert_eq!(t.pop_due(at(899)), None);
        assert_eq!(t.next_deadline(), Some(at(900)));
        // No deadline at all: the entry goes.
        t.schedule(a, None);
        assert_eq!(t.next_deadline(), None);

        t.schedule(a, Some(at(1)));
        assert_eq!(t.remove(a), Some("a"));
        assert_eq!(t.by_sock(SockRef(7)), None);
        assert_eq!(t.next_deadline(), None);
        let c = t.insert(30, "c").unwrap();
        assert_eq!(c, a, "slots are reused");
        assert_eq!(t.len(), 2);
    }
}
