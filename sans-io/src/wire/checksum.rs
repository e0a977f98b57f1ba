//! The Internet checksum (RFC 1071), summed 32 bits at a time into 64-bit accumulators.
//!
//! It is the only pass our code makes over each payload byte on the data path, so the loop is
//! shaped for the compiler to vectorize: native-endian 32-bit words into four independent
//! 64-bit lanes, with the byte order put right once at the end (the one's complement sum
//! doesn't care which byte of each 16-bit word comes first, RFC 1071 section 2(B)).
//! `cargo bench -p sans-io --bench checksum` measures it.

use std::net::IpAddr;

/// Bytes per round of the main loop: four 32-bit lanes.
const BLOCK: usize = 16;

/// Adds `data` to a running one's complement sum (in network byte order; a last piece of
/// odd length is padded with zeros).
pub fn add(sum: u64, data: &[u8]) -> u64 {
    let mut lanes = [0u64; 4];
    let mut blocks = data.chunks_exact(BLOCK);
    for b in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(b.chunks_exact(4)) {
            *lane += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
        }
    }
    let mut words = blocks.remainder().chunks_exact(4);
    for w in &mut words {
        lanes[0] += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    // Each lane stays far below 2^64 for any buffer under 2^32 blocks; fold them to 16 bits
    // and into network byte order.
    let native = lanes.iter().fold(0u64, |acc, &l| acc + fold(l));
    let in_order = u16::from_be(fold(native) as u16);
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    sum + u64::from(in_order) + u64::from(u32::from_be_bytes(tail))
}

/// A sum folded to 16 bits (end-around carries), not complemented.
fn fold(mut sum: u64) -> u64 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// Folds a running sum into the 16-bit checksum field value.
pub fn finish(sum: u64) -> u16 {
    !(fold(sum) as u16)
}

/// The checksum of `data` alone (IPv4 headers).
pub fn of(data: &[u8]) -> u16 {
    finish(add(0, data))
}

/// The pseudo-header sum for a transport checksum (RFC 768, RFC 8200 section 8.1).
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, length: u32) -> u64 {
    let mut sum = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = add(sum, &s.octets());
            sum = add(sum, &d.octets());
            sum += u64::from(protocol) + u64::from(length);
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            sum = add(sum, &v6(s));
            sum = add(sum, &v6(d));
            sum += u64::from(length) + u64::from(protocol);
        }
    }
    sum
}

/// A transport (UDP, TCP, ICMPv6) checksum over the pseudo-header and `segment`, whose own
/// checksum field must be zero.
pub fn transport(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) -> u16 {
    finish(add(
        pseudo_header(src, dst, protocol, segment.len() as u32),
        segment,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071's straightforward 16-bit definition, to check the fast one against.
    fn reference(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in data.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn ipv4_header_example() {
        // A real IPv4 header with its checksum (0xb861) zeroed.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(of(&header), 0xb861);
    }

    proptest! {
        #[test]
        fn matches_the_reference(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            prop_assert_eq!(of(&data), reference(&data));
        }

        #[test]
        fn sums_in_even_pieces_add_up(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cut in 0usize..1500,
        ) {
            let cut = (cut * 2).min(data.len() & !1);
            let (a, b) = data.split_at(cut);
            prop_assert_eq!(finish(add(add(0, a), b)), reference(&data));
        }
    }
}
