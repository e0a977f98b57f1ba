//! Connection attempts we reset, remembered a while so that a retransmission of their SYN
//! which crossed our RST gets another RST instead of a second host connect.

use std::collections::VecDeque;

use super::flow::Flow;
use super::seq::SeqNum;
use super::{FlowKey, MAX_TOMBSTONES, TOMBSTONE_TIME};
use crate::time::Instant;

/// Connection attempts we reset, by the guest's 4-tuple and initial sequence number, until
/// when they are remembered (all for the same time, so the oldest is in front).
#[derive(Debug, Default)]
pub(super) struct Tombstones {
    list: VecDeque<(Instant, FlowKey, SeqNum)>,
}

impl Tombstones {
    pub(super) fn bury(&mut self, now: Instant, key: FlowKey, isn: SeqNum) {
        self.expire(now);
        if self.list.len() >= MAX_TOMBSTONES {
            self.list.pop_front();
        }
        self.list.push_back((now + TOMBSTONE_TIME, key, isn));
    }

    pub(super) fn holds(&mut self, now: Instant, key: &FlowKey, isn: SeqNum) -> bool {
        self.expire(now);
        self.list.iter().any(|(_, k, i)| k == key && *i == isn)
    }

    /// Remembers a connection attempt being reset (the flow still `Connecting`: `rcv_nxt` is
    /// one past the guest's SYN).
    pub(super) fn bury_attempt(&mut self, now: Instant, f: &Flow) {
        let key = FlowKey {
            guest: f.guest,
            peer: f.peer,
        };
        self.bury(now, key, f.rcv_nxt - 1);
    }

    fn expire(&mut self, now: Instant) {
        while self.list.front().is_some_and(|t| t.0 <= now) {
            self.list.pop_front();
        }
    }
}
