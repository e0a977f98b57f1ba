//! Flows of the datagram protocols (UDP, ICMP echo): bounded, found by the guest's key or by
//! their host socket, closed after an idle time.
//!
//! The driver asks for the next deadline on every wake-up, so it must not cost a scan of every
//! flow. Activity only ever moves a flow's expiry later, so the earliest expiry we remember is
//! a valid, possibly early, bound: when it comes, [`IdleFlows::expire`] scans once, closes what
//! is really idle and remembers the new earliest expiry.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{HostSockets, SockRef};
use crate::config::Config;
use crate::services::GuestState;
use crate::time::Instant;
use crate::wire::FrameQueue;

/// What a datagram-flow call (UDP, ICMP echo) needs from the engine; `C` is the protocol's
/// counters.
pub struct DgramCx<'a, C> {
    pub now: Instant,
    pub config: &'a Config,
    pub guest: &'a GuestState,
    pub io: &'a mut dyn HostSockets,
    pub out: &'a mut FrameQueue,
    pub counters: &'a mut C,
}

/// Whether `a` names one host (not a broadcast, multicast or unspecified address): the only
/// destinations and sources datagram flows are made for.
pub fn unicast(a: std::net::IpAddr) -> bool {
    match a {
        std::net::IpAddr::V4(a) => !a.is_unspecified() && !a.is_broadcast() && !a.is_multicast(),
        std::net::IpAddr::V6(a) => !a.is_unspecified() && !a.is_multicast(),
    }
}

impl<'a, C> DgramCx<'a, C> {
    pub fn new(
        now: Instant,
        config: &'a Config,
        guest: &'a GuestState,
        io: &'a mut dyn HostSockets,
        out: &'a mut FrameQueue,
        counters: &'a mut C,
    ) -> Self {
        DgramCx {
            now,
            config,
            guest,
            io,
            out,
            counters,
        }
    }
}

/// What the map needs to know of a flow.
pub trait IdleFlow {
    /// How the guest's side finds the flow (addresses, ports, identifier).
    type Key: Ord + Copy;
    fn key(&self) -> Self::Key;
    /// When the flow last saw traffic.
    fn last(&self) -> Instant;
}

pub struct IdleFlows<F: IdleFlow> {
    by_key: BTreeMap<F::Key, SockRef>,
    flows: BTreeMap<SockRef, F>,
    max: usize,
    idle: Duration,
    /// No flow expires before this; `None` when there is none.
    earliest: Option<Instant>,
}

impl<F: IdleFlow> IdleFlows<F> {
    /// At most `max` flows, each closed after `idle` without traffic.
    pub fn new(max: usize, idle: Duration) -> Self {
        IdleFlows {
            by_key: BTreeMap::new(),
            flows: BTreeMap::new(),
            max,
            idle,
            earliest: None,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.flows.len() >= self.max
    }

    pub fn iter(&self) -> impl Iterator<Item = &F> {
        self.flows.values()
    }

    pub fn owns(&self, s: SockRef) -> bool {
        self.flows.contains_key(&s)
    }

    /// The flow's socket, by the guest's key.
    pub fn find(&self, key: &F::Key) -> Option<SockRef> {
        self.by_key.get(key).copied()
    }

    pub fn get(&self, s: SockRef) -> Option<&F> {
        self.flows.get(&s)
    }

    /// For updating a flow; moving its `last` later is always fine.
    pub fn get_mut(&mut self, s: SockRef) -> Option<&mut F> {
        self.flows.get_mut(&s)
    }

    /// Adds a flow on socket `s`; the caller checks [`IdleFlows::is_full`] first.
    pub fn insert(&mut self, s: SockRef, flow: F) {
        let expiry = flow.last() + self.idle;
        self.earliest = Some(self.earliest.map_or(expiry, |e| e.min(expiry)));
        self.by_key.insert(flow.key(), s);
        self.flows.insert(s, flow);
    }

    pub fn remove(&mut self, s: SockRef) -> Option<F> {
        let flow = self.flows.remove(&s)?;
        self.by_key.remove(&flow.key());
        Some(flow)
    }

    /// When [`IdleFlows::expire`] next has something to do (possibly early).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.earliest
    }

    /// Removes and closes (through `io`) the flows idle at `now`; returns how many.
    pub fn close_idle(&mut self, now: Instant, io: &mut dyn HostSockets) -> u64 {
        let mut closed = 0;
        self.expire(now, |s, _| {
            closed += 1;
            io.close(s, false);
        });
        closed
    }

    /// Removes the flow on `s` and closes its socket, if it is one of ours.
    pub fn close(&mut self, s: SockRef, io: &mut dyn HostSockets) {
        if self.remove(s).is_some() {
            io.close(s, false);
        }
    }

    /// Removes the flows idle at `now`, handing each to `closed`, and remembers the new
    /// earliest expiry. Does nothing before [`IdleFlows::poll_timeout`].
    pub fn expire(&mut self, now: Instant, mut closed: impl FnMut(SockRef, F)) {
        if self.earliest.is_none_or(|e| now < e) {
            return;
        }
        let idle = self.idle;
        let expired: Vec<SockRef> = self
            .flows
            .iter()
            .filter(|(_, f)| f.last() + idle <= now)
            .map(|(&s, _)| s)
            .collect();
        for s in expired {
            if let Some(f) = self.remove(s) {
                closed(s, f);
            }
        }
        self.earliest = self.flows.values().map(|f| f.last() + idle).min();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Flow {
        key: u16,
        last: Instant,
    }

    impl IdleFlow for Flow {
        type Key = u16;
        fn key(&self) -> u16 {
            self.key
        }
        fn last(&self) -> Instant {
            self.last
        }
    }

    fn secs(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }

    #[test]
    fn expires_idle_flows_only_and_tracks_the_earliest_deadline() {
        let mut m = IdleFlows::new(3, Duration::from_secs(10));
        assert_eq!(m.poll_timeout(), None);
        m.insert(
            SockRef(1),
            Flow {
                key: 1,
                last: secs(0),
            },
        );
        m.insert(
            SockRef(2),
            Flow {
                key: 2,
                last: secs(5),
            },
        );
        assert_eq!(m.poll_timeout(), Some(secs(10)));
        // Activity on flow 1: the remembered deadline is now early, which is allowed.
        m.get_mut(SockRef(1)).unwrap().last = secs(8);
        let mut closed = Vec::new();
        m.expire(secs(10), |s, _| closed.push(s));
        assert!(closed.is_empty());
        assert_eq!(m.poll_timeout(), Some(secs(15)));
        m.expire(secs(15), |s, _| closed.push(s));
        assert_eq!(closed, [SockRef(2)]);
        assert_eq!(m.find(&2), None);
        assert_eq!(m.find(&1), Some(SockRef(1)));
        assert_eq!(m.poll_timeout(), Some(secs(18)));
        m.expire(secs(18), |s, _| closed.push(s));
        assert!(m.is_empty());
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn bounded() {
        let mut m = IdleFlows::new(2, Duration::from_secs(1));
        m.insert(
            SockRef(1),
            Flow {
                key: 1,
                last: secs(0),
            },
        );
        assert!(!m.is_full());
        m.insert(
            SockRef(2),
            Flow {
                key: 2,
                last: secs(0),
            },
        );
        assert!(m.is_full());
        assert_eq!(m.remove(SockRef(1)).map(|f| f.key), Some(1));
        assert!(!m.is_full());
        assert!(!m.owns(SockRef(1)));
    }
}
