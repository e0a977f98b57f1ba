//! Sequence number arithmetic: comparisons modulo 2^32 (RFC 9293 section 3.4).

pub(super) fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

pub(super) fn seq_gt(a: u32, b: u32) -> bool {
    seq_lt(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_comparisons_wrap() {
        assert!(seq_lt(u32::MAX - 5, 3));
        assert!(seq_gt(3, u32::MAX - 5));
        assert!(!seq_lt(7, 7));
        assert!(seq_lt(0x7fff_fff0, 0x8000_0010));
    }
}
