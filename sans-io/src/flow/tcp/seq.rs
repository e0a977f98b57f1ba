//! Sequence numbers: 32-bit counters that wrap, compared and subtracted modulo 2^32 (RFC 9293
//! section 3.4). A [`SeqNum`] is not `Ord`: "before" holds only within half the number space,
//! so comparisons are named methods rather than operators that would promise a total order.

use std::ops::{Add, AddAssign, Sub};

use crate::wire::tcp::Segment;

/// A TCP sequence (or acknowledgement) number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(super) struct SeqNum(u32);

impl SeqNum {
    /// Signed distance from `from` to `self`: positive when `self` is after `from`.
    pub(super) fn diff(self, from: SeqNum) -> i32 {
        self.0.wrapping_sub(from.0) as i32
    }

    /// Bytes from `from` forward to `self`, modulo 2^32 (meaningful when `self` is not before
    /// `from`).
    pub(super) fn since(self, from: SeqNum) -> u32 {
        self.0.wrapping_sub(from.0)
    }

    pub(super) fn is_before(self, other: SeqNum) -> bool {
        self.diff(other) < 0
    }

    pub(super) fn is_after(self, other: SeqNum) -> bool {
        other.is_before(self)
    }
}

/// A guest segment's numbers, as [`SeqNum`]s.
pub(super) trait SegmentSeq {
    fn seq_num(&self) -> SeqNum;
    fn ack_num(&self) -> SeqNum;
}

impl SegmentSeq for Segment<'_> {
    fn seq_num(&self) -> SeqNum {
        SeqNum(self.seq)
    }

    fn ack_num(&self) -> SeqNum {
        SeqNum(self.ack)
    }
}

impl From<u32> for SeqNum {
    fn from(n: u32) -> SeqNum {
        SeqNum(n)
    }
}

impl From<SeqNum> for u32 {
    fn from(s: SeqNum) -> u32 {
        s.0
    }
}

impl Add<u32> for SeqNum {
    type Output = SeqNum;
    fn add(self, n: u32) -> SeqNum {
        SeqNum(self.0.wrapping_add(n))
    }
}

impl AddAssign<u32> for SeqNum {
    fn add_assign(&mut self, n: u32) {
        *self = *self + n;
    }
}

impl Sub<u32> for SeqNum {
    type Output = SeqNum;
    fn sub(self, n: u32) -> SeqNum {
        SeqNum(self.0.wrapping_sub(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> SeqNum {
        SeqNum::from(n)
    }

    #[test]
    fn comparisons_wrap() {
        assert!(s(u32::MAX - 5).is_before(s(3)));
        assert!(s(3).is_after(s(u32::MAX - 5)));
        assert!(!s(7).is_before(s(7)) && !s(7).is_after(s(7)));
        assert!(s(0x7fff_fff0).is_before(s(0x8000_0010)));
    }

    #[test]
    fn arithmetic_wraps() {
        assert_eq!(s(u32::MAX) + 2, s(1));
        assert_eq!(s(1) - 2, s(u32::MAX));
        assert_eq!(s(3).since(s(u32::MAX - 5)), 9);
        assert_eq!(s(u32::MAX - 5).diff(s(3)), -9);
        let mut a = s(u32::MAX);
        a += 1;
        assert_eq!(u32::from(a), 0);
    }
}
