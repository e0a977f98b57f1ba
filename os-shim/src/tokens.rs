//! The epoll token layout, in one place. Every descriptor on the event loop's epoll instance
//! (`crate::reactor`) is reported with a 64-bit token saying who owns it and which of theirs
//! it is:
//!
//! ```text
//!  token                          owner                        the rest of the token
//!  0           TOKEN_LINK         the guest link (tap, qemu)   -
//!  8           TOKEN_CONTROL_LISTENER  the control socket (-c)  -
//!  9           TOKEN_CONTROL_CLIENT    its current client       -
//!  16 + i      TOKEN_WATCH_BASE   the program's watches        i: which watch
//!  2^54..2^55  TOKEN_DGRAM_BASE   UDP loopback relay (-U)      bit 50 set: listener, bits 0..23
//!                                                              else a flow: gen bits 24..47,
//!                                                                index bits 0..23
//!  2^55..2^56  TOKEN_SPLICE_BASE  TCP loopback splicer (-T)    bit 50 set: listener, bits 0..23
//!                                                              else a pair: gen bits 25..48,
//!                                                                index bits 1..24, side bit 0
//!  2^56..2^57  TOKEN_LISTENER_BASE  forwarding listeners       i: which listener
//!  2^57..      TOKEN_SOCKET_BASE  the engine's host sockets    gen bits 24..47, index bits 0..23
//!  2^64 - 2    TOKEN_SIGNAL       the signalfd
//!  2^64 - 1    TOKEN_TIMER        the deadline's timerfd
//! ```
//!
//! Generations (24 bits, see `crate::slots`) make the token of an item closed earlier in the
//! same wake-up miss the slot's next occupant. passt's qemu socket waits for clients on an
//! epoll instance of its own, with `QEMU_LISTENER` and `QEMU_CLIENT`. The helpers are
//! `#[inline]`: every event goes through them (see `crate::socket_sys` for what calls across
//! modules cost).

/// The guest link: the tap device or qemu's connection.
pub const TOKEN_LINK: u64 = 0;
/// The control socket's listener (`-c`, see `crate::control_socket`).
pub const TOKEN_CONTROL_LISTENER: u64 = 8;
/// The control socket's client being served.
pub const TOKEN_CONTROL_CLIENT: u64 = 9;
/// Descriptors the program watches (`bins`' `Watch`): this plus the watch's index.
pub const TOKEN_WATCH_BASE: u64 = 16;
/// The UDP loopback relay (`crate::dgram_relay`): listeners in the namespace, flows.
pub const TOKEN_DGRAM_BASE: u64 = 1 << 54;
/// The TCP loopback splicer (`crate::splice`): listeners in the namespace, pairs.
pub const TOKEN_SPLICE_BASE: u64 = 1 << 55;
/// Forwarding listeners of the engine (`crate::sockets`): this plus the listener's index.
pub const TOKEN_LISTENER_BASE: u64 = 1 << 56;
/// The engine's host sockets (`crate::sockets`): this, the slot's generation, its index.
pub const TOKEN_SOCKET_BASE: u64 = 1 << 57;
/// The signalfd (`crate::reactor`).
pub const TOKEN_SIGNAL: u64 = u64::MAX - 1;
/// The deadline's timerfd (`crate::reactor`).
pub const TOKEN_TIMER: u64 = u64::MAX;

/// qemu's socket's own epoll instance: the listening UNIX socket.
pub(crate) const QEMU_LISTENER: u64 = 1;
/// qemu's socket's own epoll instance: the connected client.
pub(crate) const QEMU_CLIENT: u64 = 2;

/// Bits of a slot index; the relays' and the engine's tables hold at most this many.
pub(crate) const INDEX_BITS: u32 = 24;
pub(crate) const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
/// Generations wrap at 24 bits, the room tokens give them.
pub(crate) const GEN_MASK: u32 = (1 << 24) - 1;
/// In a relay's range: a listener rather than a flow or pair.
const RELAY_LISTENER_BIT: u64 = 1 << 50;

/// The token of the engine's socket in slot `index`, generation `gen`.
#[inline]
pub(crate) fn socket_token(index: u32, gen: u32) -> u64 {
    TOKEN_SOCKET_BASE | (u64::from(gen & GEN_MASK) << INDEX_BITS) | u64::from(index)
}

/// What a token in the engine's range names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketsToken {
    Listener(usize),
    Socket { index: u32, gen: u32 },
}

/// Decodes a token from [`TOKEN_LISTENER_BASE`] up; `None` below.
#[inline]
pub(crate) fn sockets_token(token: u64) -> Option<SocketsToken> {
    if token >= TOKEN_SOCKET_BASE {
        let index = (token & INDEX_MASK) as u32;
        let gen = ((token - TOKEN_SOCKET_BASE) >> INDEX_BITS) as u32 & GEN_MASK;
        Some(SocketsToken::Socket { index, gen })
    } else if token >= TOKEN_LISTENER_BASE {
        Some(SocketsToken::Listener(
            (token - TOKEN_LISTENER_BASE) as usize,
        ))
    } else {
        None
    }
}

/// Whether `token` belongs to the engine's sockets or to the relays.
#[inline]
pub(crate) fn is_host_socket(token: u64) -> bool {
    (TOKEN_DGRAM_BASE..TOKEN_SIGNAL).contains(&token)
}

/// Whether `token` belongs to the UDP relay.
#[inline]
pub(crate) fn is_dgram(token: u64) -> bool {
    (TOKEN_DGRAM_BASE..TOKEN_SPLICE_BASE).contains(&token)
}

/// Whether `token` belongs to the TCP splicer.
#[inline]
pub(crate) fn is_splice(token: u64) -> bool {
    (TOKEN_SPLICE_BASE..TOKEN_LISTENER_BASE).contains(&token)
}

/// The base of a relay's listener tokens (the listener's index is or-ed in).
#[inline]
pub(crate) fn relay_listener_base(relay_base: u64) -> u64 {
    relay_base | RELAY_LISTENER_BIT
}

/// The token of the UDP relay's flow in slot `index`, generation `gen`: its far socket (side
/// 0), or its own socket on the host (side 1).
#[inline]
pub(crate) fn dgram_flow_token(index: usize, gen: u32, side: usize) -> u64 {
    TOKEN_DGRAM_BASE | (u64::from(gen) << (INDEX_BITS + 1)) | ((index as u64) << 1) | side as u64
}

/// The token of side `side` of the splicer's pair in slot `index`, generation `gen`.
#[inline]
pub(crate) fn splice_pair_token(index: usize, gen: u32, side: usize) -> u64 {
    TOKEN_SPLICE_BASE | (u64::from(gen) << (INDEX_BITS + 1)) | ((index as u64) << 1) | side as u64
}

/// What a token in a relay's range names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayToken {
    Listener(usize),
    /// A side of a UDP flow or of a spliced pair.
    Item {
        index: usize,
        gen: u32,
        side: usize,
    },
}

/// Decodes a token of the UDP relay.
#[inline]
pub(crate) fn dgram_token(token: u64) -> RelayToken {
    let t = token - TOKEN_DGRAM_BASE;
    if t & RELAY_LISTENER_BIT != 0 {
        return RelayToken::Listener((t & INDEX_MASK) as usize);
    }
    RelayToken::Item {
        index: ((t >> 1) & INDEX_MASK) as usize,
        gen: (t >> (INDEX_BITS + 1)) as u32 & GEN_MASK,
        side: (t & 1) as usize,
    }
}

/// Decodes a token of the TCP splicer.
#[inline]
pub(crate) fn splice_token(token: u64) -> RelayToken {
    let t = token - TOKEN_SPLICE_BASE;
    if t & RELAY_LISTENER_BIT != 0 {
        return RelayToken::Listener((t & INDEX_MASK) as usize);
    }
    RelayToken::Item {
        index: ((t >> 1) & INDEX_MASK) as usize,
        gen: (t >> (INDEX_BITS + 1)) as u32 & GEN_MASK,
        side: (t & 1) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAST: usize = INDEX_MASK as usize;

    #[test]
    fn every_token_decodes_to_what_made_it_and_stays_in_its_range() {
        for (index, gen) in [(0, 0), (1, 1), (LAST, GEN_MASK), (12345, 678)] {
            let t = socket_token(index as u32, gen);
            assert!((TOKEN_SOCKET_BASE..TOKEN_SIGNAL).contains(&t));
            let want = SocketsToken::Socket {
                index: index as u32,
                gen,
            };
            assert_eq!(sockets_token(t), Some(want));

            for side in [0, 1] {
                let t = dgram_flow_token(index, gen, side);
                assert!(is_dgram(t) && is_host_socket(t) && !is_splice(t));
                assert_eq!(dgram_token(t), RelayToken::Item { index, gen, side });
            }
            let t = relay_listener_base(TOKEN_DGRAM_BASE) | index as u64;
            assert!(is_dgram(t));
            assert_eq!(dgram_token(t), RelayToken::Listener(index));

            for side in [0, 1] {
                let t = splice_pair_token(index, gen, side);
                assert!(is_splice(t) && is_host_socket(t) && !is_dgram(t));
                assert_eq!(splice_token(t), RelayToken::Item { index, gen, side });
            }
            let t = relay_listener_base(TOKEN_SPLICE_BASE) | index as u64;
            assert!(is_splice(t));
            assert_eq!(splice_token(t), RelayToken::Listener(index));

            let t = TOKEN_LISTENER_BASE + index as u64;
            assert_eq!(sockets_token(t), Some(SocketsToken::Listener(index)));
        }
        for t in [
            TOKEN_LINK,
            TOKEN_CONTROL_LISTENER,
            TOKEN_CONTROL_CLIENT,
            TOKEN_WATCH_BASE,
            TOKEN_SIGNAL,
            TOKEN_TIMER,
        ] {
            assert!(!is_host_socket(t), "{t:#x}");
        }
        assert_eq!(sockets_token(TOKEN_SPLICE_BASE), None);
    }
}
