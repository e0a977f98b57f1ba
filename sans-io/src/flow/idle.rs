//! Flows of the datagram protocols (UDP, ICMP echo): bounded, found by the guest's key or by
//! their host socket, closed after an idle time, and made room for when the table is full.
//!
//! Datagram protocols have no close, so a flow ends when it goes quiet. A flow that carried
//! a one-shot exchange ([`ONE_SHOT_DATAGRAMS`] or fewer: a DNS lookup) goes after
//! [`ONE_SHOT_TIMEOUT`], any other after the protocol's idle time (the idea of conntrack's
//! unreplied and assured entries). The table is bounded, as are the descriptors its flows hold,
//! but a full table doesn't cut the guest off: a new flow takes the place of one that is done
//! with (see [`IdleFlows::make_room`]), and is refused only when every flow is active.
//!
//! Each flow belongs to a [`Class`] by what it carried, and each class keeps its flows ordered
//! by last activity, oldest first. One idle time per class makes the oldest flow of each class
//! the next to expire and also its least recently used: expiry touches only the flows due,
//! eviction picks its victim at once, and activity re-sorts one flow, all in O(log n).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use super::{Bind, CloseSockets, SockRef};
use crate::config::Config;
use crate::fwd::forwards::Forwards;
use crate::guest::GuestState;
use crate::time::Instant;
use crate::wire::FrameQueue;

/// Datagrams, both ways together, up to which a flow is a one-shot exchange: a DNS lookup is
/// a query and its answer, or two of each where the resolver asks for IPv4 and IPv6
/// addresses at once from one socket (glibc, musl). A flow that carried more is a
/// conversation (a QUIC connection, a game, a VPN) and keeps the full idle time.
pub const ONE_SHOT_DATAGRAMS: u32 = 4;
/// Idle time after which a one-shot flow is closed: longer than a stub resolver waits before
/// it retries from the same socket (5 s, the `timeout` of resolv.conf(5)), so the retry's
/// answer still finds its flow; short enough that a burst of lookups gives its sockets back
/// within seconds rather than minutes.
pub const ONE_SHOT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a flow must have been quiet before a full table closes it for a new one (an
/// answered one-shot exchange is done with, and needn't wait): answers come within
/// milliseconds and a conversation's datagrams follow each other closely, so a flow quiet
/// this long has nothing in progress; anything shorter would let a burst of new flows push
/// out exchanges still waiting for their answer.
pub const EVICT_IDLE: Duration = Duration::from_secs(1);

/// What a datagram-flow call (UDP, ICMP echo) needs from the engine; `C` is the protocol's
/// counters, `S` its kind of host sockets.
pub struct DgramCx<'a, C, S: ?Sized> {
    pub now: Instant,
    pub config: &'a Config,
    pub forwards: &'a Forwards,
    pub guest: &'a GuestState,
    pub io: &'a mut S,
    pub out: &'a mut FrameQueue,
    pub counters: &'a mut C,
}

/// How a flow's socket towards `target` is bound (`-o`, `--outbound-if4/6`); the host's
/// loopback is reached unbound.
pub fn outbound_bind(config: &Config, target: IpAddr) -> Bind<'_> {
    match (target, config.ip4.as_ref(), config.ip6.as_ref()) {
        _ if target.is_loopback() => Bind::default(),
        (IpAddr::V4(_), Some(c), _) => Bind {
            addr: c.outbound_addr.map(IpAddr::V4),
            iface: c.outbound_if.as_deref(),
        },
        (IpAddr::V6(_), _, Some(c)) => Bind {
            addr: c.outbound_addr.map(IpAddr::V6),
            iface: c.outbound_if.as_deref(),
        },
        _ => Bind::default(),
    }
}

/// Whether an error says the process (`EMFILE`) or the system (`ENFILE`) is out of file
/// descriptors: then closing one of our idle flows helps. Linux's numbers, which the shim and
/// the simulator both report; the core has no libc to name them.
fn out_of_descriptors(e: &io::Error) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(e.raw_os_error(), Some(ENFILE | EMFILE))
}

impl<'a, C, S: ?Sized> DgramCx<'a, C, S> {
    pub fn new(
        now: Instant,
        config: &'a Config,
        forwards: &'a Forwards,
        guest: &'a GuestState,
        io: &'a mut S,
        out: &'a mut FrameQueue,
        counters: &'a mut C,
    ) -> Self {
        DgramCx {
            now,
            config,
            forwards,
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
    /// How the host's side finds it: its socket, or what else tells it apart.
    type Handle: FlowHandle;
    fn key(&self) -> Self::Key;
}

/// What a flow is found by from the host's side, unique among the flows of a map.
pub trait FlowHandle: Ord + Copy {
    /// The socket that is the flow's own, which closing the flow closes; `None` for a flow
    /// that shares one (see UDP's inbound exchanges).
    fn own_socket(self) -> Option<SockRef>;
}

impl FlowHandle for SockRef {
    fn own_socket(self) -> Option<SockRef> {
        Some(self)
    }
}

/// Closes (through `io`) the socket that is flow `h`'s own, if it has one.
fn close_own_socket(h: impl FlowHandle, io: &mut (impl CloseSockets + ?Sized)) {
    if let Some(s) = h.own_socket() {
        io.close(s, false);
    }
}

/// Which way a datagram went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    FromGuest,
    ToGuest,
}

/// What a flow carried so far, which decides its idle time and when it may be evicted. The
/// order is the eviction order: a table that is full closes an answered one-shot flow first,
/// then one whose question went unanswered, then any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// A one-shot exchange with every request answered (a DNS lookup that got its answer).
    Answered = 0,
    /// A one-shot exchange still waiting for an answer, or one-way.
    Unanswered = 1,
    /// More than [`ONE_SHOT_DATAGRAMS`]: a conversation.
    Conversation = 2,
}

const CLASSES: usize = 3;

impl Class {
    fn of(requests: u32, answers: u32) -> Class {
        if requests.saturating_add(answers) > ONE_SHOT_DATAGRAMS {
            Class::Conversation
        } else if answers > 0 && answers >= requests {
            Class::Answered
        } else {
            Class::Unanswered
        }
    }
}

/// Why no flow could be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The table is full of active flows.
    Full,
    /// The socket could not be opened.
    Failed(io::Error),
}

struct Entry<F> {
    flow: F,
    /// When the flow last saw traffic.
    last: Instant,
    /// The way of the datagram that opened the flow: datagrams that way are requests, the
    /// other way answers.
    opener: Way,
    requests: u32,
    answers: u32,
}

impl<F> Entry<F> {
    fn class(&self) -> Class {
        Class::of(self.requests, self.answers)
    }
}

pub struct IdleFlows<F: IdleFlow> {
    by_key: BTreeMap<F::Key, F::Handle>,
    flows: BTreeMap<F::Handle, Entry<F>>,
    /// Per [`Class`], its flows by last activity, oldest first.
    by_age: [BTreeSet<(Instant, F::Handle)>; CLASSES],
    max: usize,
    /// Idle time of a conversation; a one-shot flow's is the shorter of this and
    /// [`ONE_SHOT_TIMEOUT`].
    idle: Duration,
}

impl<F: IdleFlow> IdleFlows<F> {
    /// At most `max` flows, each closed after `idle` without traffic (one-shot exchanges
    /// sooner).
    pub fn new(max: usize, idle: Duration) -> Self {
        IdleFlows {
            by_key: BTreeMap::new(),
            flows: BTreeMap::new(),
            by_age: Default::default(),
            max,
            idle,
        }
    }

    /// The idle time of a flow of class `c`.
    pub fn timeout(&self, c: Class) -> Duration {
        match c {
            Class::Conversation => self.idle,
            Class::Answered | Class::Unanswered => self.idle.min(ONE_SHOT_TIMEOUT),
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
        self.flows.values().map(|e| &e.flow)
    }

    pub fn owns(&self, h: F::Handle) -> bool {
        self.flows.contains_key(&h)
    }

    /// The flow's handle, by the guest's key.
    pub fn find(&self, key: &F::Key) -> Option<F::Handle> {
        self.by_key.get(key).copied()
    }

    pub fn get(&self, h: F::Handle) -> Option<&F> {
        self.flows.get(&h).map(|e| &e.flow)
    }

    /// The flow's class and last activity.
    pub fn activity(&self, h: F::Handle) -> Option<(Class, Instant)> {
        self.flows.get(&h).map(|e| (e.class(), e.last))
    }

    /// Adds a flow as `h`, opened at `now` by a datagram going `opener` (which the
    /// caller then reports with [`IdleFlows::touch`]); the caller makes room first
    /// ([`IdleFlows::make_room`], [`IdleFlows::open`]).
    pub fn insert(&mut self, h: F::Handle, flow: F, now: Instant, opener: Way) {
        debug_assert!(!self.is_full() && !self.flows.contains_key(&h));
        self.by_key.insert(flow.key(), h);
        let entry = Entry {
            flow,
            last: now,
            opener,
            requests: 0,
            answers: 0,
        };
        self.by_age[entry.class() as usize].insert((now, h));
        self.flows.insert(h, entry);
    }

    /// Records `datagrams` going `way` on flow `h` at `now`; returns the flow.
    pub fn touch(&mut self, h: F::Handle, now: Instant, way: Way, datagrams: u32) -> Option<&F> {
        let e = self.flows.get_mut(&h)?;
        if datagrams > 0 {
            let (class, last) = (e.class(), e.last);
            if way == e.opener {
                e.requests = e.requests.saturating_add(datagrams);
            } else {
                e.answers = e.answers.saturating_add(datagrams);
            }
            // The clock is monotonic; a late caller's older `now` must not move it back.
            e.last = e.last.max(now);
            if (class, last) != (e.class(), e.last) {
                self.by_age[class as usize].remove(&(last, h));
                self.by_age[e.class() as usize].insert((e.last, h));
            }
        }
        Some(&e.flow)
    }

    pub fn remove(&mut self, h: F::Handle) -> Option<F> {
        let e = self.flows.remove(&h)?;
        self.by_age[e.class() as usize].remove(&(e.last, h));
        self.by_key.remove(&e.flow.key());
        Some(e.flow)
    }

    /// Moves the flow `from` to the handle `to` (say, a flow that got a socket of its own),
    /// keeping what it carried and when; `update` makes the flow say so (its key stays).
    pub fn rehandle(&mut self, from: F::Handle, to: F::Handle, update: impl FnOnce(&mut F)) {
        debug_assert!(!self.flows.contains_key(&to));
        let Some(mut e) = self.flows.remove(&from) else {
            return;
        };
        let (class, key) = (e.class() as usize, e.flow.key());
        update(&mut e.flow);
        debug_assert!(e.flow.key() == key);
        self.by_age[class].remove(&(e.last, from));
        self.by_age[class].insert((e.last, to));
        self.by_key.insert(key, to);
        self.flows.insert(to, e);
    }

    /// Removes the flow `h` and closes its own socket, if it is one of ours.
    pub fn close(&mut self, h: F::Handle, io: &mut (impl CloseSockets + ?Sized)) {
        if self.remove(h).is_some() {
            close_own_socket(h, io);
        }
    }

    /// The flow a full table would close at `now` for a new one: the least recently used
    /// answered one-shot flow, else the least recently used flow of the other classes (in
    /// their order) that has been quiet for [`EVICT_IDLE`]; `None` when every flow is active.
    pub fn eviction_candidate(&self, now: Instant) -> Option<F::Handle> {
        self.by_age.iter().enumerate().find_map(|(class, set)| {
            let &(last, h) = set.first()?;
            let done = class == Class::Answered as usize;
            (done || last + EVICT_IDLE <= now).then_some(h)
        })
    }

    /// Closes (through `io`) the flow [`IdleFlows::eviction_candidate`] names; returns
    /// whether there was one.
    pub fn evict(&mut self, now: Instant, io: &mut (impl CloseSockets + ?Sized)) -> bool {
        match self.eviction_candidate(now) {
            Some(h) => {
                self.close(h, io);
                true
            }
            None => false,
        }
    }

    /// Makes room for one more flow: nothing to do in a table that isn't full, else a flow is
    /// evicted. Returns how many were (0 or 1), or [`OpenError::Full`] when every flow is
    /// active.
    pub fn make_room(
        &mut self,
        now: Instant,
        io: &mut (impl CloseSockets + ?Sized),
    ) -> Result<u64, OpenError> {
        if !self.is_full() {
            Ok(0)
        } else if self.evict(now, io) {
            Ok(1)
        } else {
            Err(OpenError::Full)
        }
    }

    /// Opens the socket of a new flow with `open`, making room first, and once more when
    /// the system is out of descriptors (closing an idle flow gives one back). Adds the
    /// flows evicted to `evicted`; the caller then [`IdleFlows::insert`]s the flow.
    pub fn open<T, S: CloseSockets + ?Sized>(
        &mut self,
        now: Instant,
        io: &mut S,
        evicted: &mut u64,
        mut open: impl FnMut(&mut S) -> io::Result<T>,
    ) -> Result<T, OpenError> {
        *evicted += self.make_room(now, io)?;
        match open(io) {
            Err(e) if out_of_descriptors(&e) && self.evict(now, io) => {
                *evicted += 1;
                open(io).map_err(OpenError::Failed)
            }
            r => r.map_err(OpenError::Failed),
        }
    }

    /// When [`IdleFlows::expire`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [Class::Answered, Class::Unanswered, Class::Conversation]
            .into_iter()
            .filter_map(|c| {
                let &(last, _) = self.by_age[c as usize].first()?;
                Some(last + self.timeout(c))
            })
            .min()
    }

    /// Removes and closes (through `io`) the flows idle at `now`; returns how many.
    pub fn close_idle(&mut self, now: Instant, io: &mut (impl CloseSockets + ?Sized)) -> u64 {
        let mut closed = 0;
        self.expire(now, |h, _| {
            closed += 1;
            close_own_socket(h, io);
        });
        closed
    }

    /// Removes the flows idle at `now`, handing each to `closed`: only those, oldest first
    /// per class.
    pub fn expire(&mut self, now: Instant, mut closed: impl FnMut(F::Handle, F)) {
        for c in [Class::Answered, Class::Unanswered, Class::Conversation] {
            let timeout = self.timeout(c);
            let set = &mut self.by_age[c as usize];
            while set.first().is_some_and(|&(last, _)| last + timeout <= now) {
                let Some((_, h)) = set.pop_first() else {
                    break;
                };
                if let Some(e) = self.flows.remove(&h) {
                    self.by_key.remove(&e.flow.key());
                    closed(h, e.flow);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::NoSockets;

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Flow {
        key: u16,
    }

    impl IdleFlow for Flow {
        type Handle = SockRef;
        type Key = u16;
        fn key(&self) -> u16 {
            self.key
        }
    }

    fn secs(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }

    /// Opens flow `key` on socket `key` at `now` with one request from the guest.
    fn open(m: &mut IdleFlows<Flow>, key: u16, now: Instant) -> Result<u64, OpenError> {
        let mut evicted = 0;
        let s = m.open(now, &mut NoSockets, &mut evicted, |_| {
            Ok(SockRef(key.into()))
        })?;
        m.insert(s, Flow { key }, now, Way::FromGuest);
        m.touch(s, now, Way::FromGuest, 1);
        Ok(evicted)
    }

    #[test]
    fn classes_follow_what_a_flow_carried() {
        assert_eq!(Class::of(1, 0), Class::Unanswered);
        assert_eq!(Class::of(1, 1), Class::Answered);
        assert_eq!(Class::of(2, 1), Class::Unanswered);
        assert_eq!(Class::of(2, 2), Class::Answered);
        assert_eq!(Class::of(1, 3), Class::Answered);
        assert_eq!(Class::of(4, 0), Class::Unanswered);
        assert_eq!(Class::of(3, 2), Class::Conversation);
        assert_eq!(Class::of(u32::MAX, u32::MAX), Class::Conversation);
    }

    #[test]
    fn one_shot_flows_expire_sooner_than_conversations() {
        let mut m = IdleFlows::new(8, Duration::from_secs(180));
        assert_eq!(m.poll_timeout(), None);
        open(&mut m, 1, secs(0)).unwrap();
        open(&mut m, 2, secs(0)).unwrap();
        m.touch(SockRef(1), secs(0), Way::ToGuest, 1);
        assert_eq!(m.activity(SockRef(1)), Some((Class::Answered, secs(0))));
        // Flow 2 becomes a conversation.
        for t in 1..=4 {
            m.touch(SockRef(2), secs(t), Way::ToGuest, 1);
        }
        assert_eq!(m.activity(SockRef(2)), Some((Class::Conversation, secs(4))));
        assert_eq!(m.poll_timeout(), Some(secs(10)));
        let mut closed = Vec::new();
        m.expire(secs(9), |s, _| closed.push(s));
        assert!(closed.is_empty());
        m.expire(secs(10), |s, _| closed.push(s));
        assert_eq!(closed, [SockRef(1)]);
        assert_eq!(m.find(&1), None);
        assert_eq!(m.poll_timeout(), Some(secs(184)));
        assert_eq!(m.close_idle(secs(184), &mut NoSockets), 1);
        assert!(m.is_empty());
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn a_full_table_evicts_answered_then_quiet_flows_and_refuses_when_all_are_active() {
        let mut m = IdleFlows::new(3, Duration::from_secs(180));
        open(&mut m, 1, secs(0)).unwrap();
        open(&mut m, 2, secs(0)).unwrap();
        open(&mut m, 3, secs(0)).unwrap();
        // All three wait for answers and are fresh: no room.
        assert!(matches!(
            open(&mut m, 4, Instant::from_millis(500)),
            Err(OpenError::Full)
        ));
        // Flow 3 is answered: it goes first, however recent.
        m.touch(SockRef(3), Instant::from_millis(600), Way::ToGuest, 1);
        assert_eq!(open(&mut m, 4, Instant::from_millis(700)).unwrap(), 1);
        assert!(!m.owns(SockRef(3)) && m.owns(SockRef(4)));
        // Flow 1 turns into a conversation; once flow 2 is quiet for a second, it goes.
        for _ in 0..5 {
            m.touch(SockRef(1), Instant::from_millis(900), Way::ToGuest, 1);
        }
        assert!(matches!(
            open(&mut m, 5, Instant::from_millis(900)),
            Err(OpenError::Full)
        ));
        assert_eq!(m.eviction_candidate(secs(1)), Some(SockRef(2)));
        assert_eq!(open(&mut m, 5, secs(1)).unwrap(), 1);
        assert!(!m.owns(SockRef(2)));
        // Unanswered flows 4 and 5 go before the quiet conversation.
        assert_eq!(m.eviction_candidate(secs(5)), Some(SockRef(4)));
        m.remove(SockRef(4));
        m.remove(SockRef(5));
        assert_eq!(m.eviction_candidate(secs(5)), Some(SockRef(1)));
    }

    #[test]
    fn a_flow_moved_to_another_handle_keeps_its_class_age_and_key() {
        let mut m = IdleFlows::new(4, Duration::from_secs(180));
        open(&mut m, 1, secs(0)).unwrap();
        for t in 1..=4 {
            m.touch(SockRef(1), secs(t), Way::ToGuest, 1);
        }
        let before = m.activity(SockRef(1));
        m.rehandle(SockRef(1), SockRef(9), |_| {});
        assert_eq!(m.activity(SockRef(9)), before);
        assert_eq!(
            (m.find(&1), m.owns(SockRef(1)), m.len()),
            (Some(SockRef(9)), false, 1)
        );
        // Expiry and eviction know it by its new handle only.
        let mut closed = Vec::new();
        m.expire(secs(4 + 180), |h, _| closed.push(h));
        assert_eq!(closed, [SockRef(9)]);
        assert!(m.is_empty());
    }

    #[test]
    fn out_of_descriptors_evicts_and_retries_once() {
        let mut m = IdleFlows::new(8, Duration::from_secs(180));
        open(&mut m, 1, secs(0)).unwrap();
        m.touch(SockRef(1), secs(0), Way::ToGuest, 1);
        let mut tries = 0;
        let mut evicted = 0;
        let got = m.open(secs(0), &mut NoSockets, &mut evicted, |_| {
            tries += 1;
            if tries == 1 {
                Err(io::Error::from_raw_os_error(24))
            } else {
                Ok(SockRef(2))
            }
        });
        assert_eq!(got.unwrap(), SockRef(2));
        assert_eq!((tries, evicted), (2, 1));
        assert!(m.is_empty());
        // Nothing to evict: the error stands; other errors aren't retried.
        let mut tries = 0;
        let got = m.open(secs(0), &mut NoSockets, &mut evicted, |_| {
            tries += 1;
            Err::<SockRef, _>(io::Error::from_raw_os_error(24))
        });
        assert!(matches!(got, Err(OpenError::Failed(_))));
        assert_eq!(tries, 1);
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Open(u16),
            Touch(usize, bool, u32),
            Advance(u64),
            Expire,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0u16..40).prop_map(Op::Open),
                4 => (any::<usize>(), any::<bool>(), 1u32..3)
                    .prop_map(|(i, w, n)| Op::Touch(i, w, n)),
                2 => (0u64..15_000).prop_map(Op::Advance),
                1 => Just(Op::Expire),
            ]
        }

        /// A flow of the model: key (also its socket), last activity, requests, answers.
        #[derive(Debug, Clone, Copy)]
        struct M {
            key: u16,
            last: Instant,
            req: u32,
            ans: u32,
        }

        fn timeout(idle: Duration, f: &M) -> Duration {
            match Class::of(f.req, f.ans) {
                Class::Conversation => idle,
                _ => idle.min(ONE_SHOT_TIMEOUT),
            }
        }

        /// What a full table evicts, by a scan of every flow.
        fn candidate(model: &[M], now: Instant) -> Option<u16> {
            for class in [Class::Answered, Class::Unanswered, Class::Conversation] {
                let oldest = model
                    .iter()
                    .filter(|f| Class::of(f.req, f.ans) == class)
                    .min_by_key(|f| (f.last, f.key));
                if let Some(f) = oldest {
                    if class == Class::Answered || f.last + EVICT_IDLE <= now {
                        return Some(f.key);
                    }
                }
            }
            None
        }

        proptest! {
            #[test]
            fn matches_a_scanning_model(
                max in 1usize..12,
                idle_secs in 5u64..200,
                ops in proptest::collection::vec(op(), 1..200),
            ) {
                let idle = Duration::from_secs(idle_secs);
                let mut m = IdleFlows::new(max, idle);
                let mut model: Vec<M> = Vec::new();
                let mut now = Instant::ZERO;
                for op in ops {
                    match op {
                        Op::Open(key) => {
                            if model.iter().any(|f| f.key == key) {
                                continue;
                            }
                            let room = model.len() < max;
                            let victim = if room { None } else { candidate(&model, now) };
                            let got = open(&mut m, key, now);
                            prop_assert_eq!(got.is_ok(), room || victim.is_some());
                            if let Some(v) = victim {
                                model.retain(|f| f.key != v);
                            }
                            if got.is_ok() {
                                model.push(M { key, last: now, req: 1, ans: 0 });
                            }
                        }
                        Op::Touch(i, to_guest, n) => {
                            if model.is_empty() {
                                continue;
                            }
                            let n_flows = model.len();
                            let f = &mut model[i % n_flows];
                            let way = if to_guest { Way::ToGuest } else { Way::FromGuest };
                            prop_assert!(m.touch(SockRef(f.key.into()), now, way, n).is_some());
                            if to_guest { f.ans += n } else { f.req += n }
                            f.last = now;
                        }
                        Op::Advance(ms) => now = now + Duration::from_millis(ms),
                        Op::Expire => {
                            let mut closed = Vec::new();
                            m.expire(now, |s, f| closed.push((s.0, f.key)));
                            let mut want: Vec<(u32, u16)> = model
                                .iter()
                                .filter(|f| f.last + timeout(idle, f) <= now)
                                .map(|f| (u32::from(f.key), f.key))
                                .collect();
                            closed.sort();
                            want.sort();
                            prop_assert_eq!(closed, want);
                            model.retain(|f| f.last + timeout(idle, f) > now);
                        }
                    }
                    let mut keys: Vec<u16> = m.iter().map(|f| f.key).collect();
                    let mut want: Vec<u16> = model.iter().map(|f| f.key).collect();
                    keys.sort();
                    want.sort();
                    prop_assert_eq!(keys, want);
                    prop_assert!(m.len() <= max);
                    for f in &model {
                        prop_assert_eq!(m.find(&f.key), Some(SockRef(f.key.into())));
                        let class = Class::of(f.req, f.ans);
                        prop_assert_eq!(m.activity(SockRef(f.key.into())), Some((class, f.last)));
                    }
                    let deadline = model.iter().map(|f| f.last + timeout(idle, f)).min();
                    prop_assert_eq!(m.poll_timeout(), deadline);
                    let victim = candidate(&model, now).map(|k| SockRef(k.into()));
                    prop_assert_eq!(m.eviction_candidate(now), victim);
                }
            }
        }
    }
}
