//! Guest payload the core never holds: where a link keeps a guest's transmit frames in the
//! guest's own memory (vhost-user), it copies each frame's headers for the core to parse and
//! leaves the TCP payload beyond them where it is, named by an [`ExternalPayload`]: which
//! frame of the link's read, and which of its bytes. A slice of memory the guest may write
//! meanwhile would be a data race; a name is not.
//!
//! The core hands such payload to the host sockets' [`SendPiece`]s send
//! ([`crate::flow::StreamSockets::send_pieces`]), whose OS implementation gives the kernel the
//! link's own checked areas for it, and whose default copies through the link
//! ([`ExternalPayloads::read`], checked accesses) a piece at a time. What a short write left
//! unsent is copied the same way into the flow's stash. (The first steps: the engine doesn't
//! take such frames yet.)

use super::parse;

/// Bytes `at..at + len` of the payload the link left in place for frame `frame` of its read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalPayload {
    pub frame: u32,
    pub at: usize,
    pub len: usize,
}

impl ExternalPayload {
    /// Its bytes from `from` on (none past the end).
    pub fn skip(self, from: usize) -> ExternalPayload {
        let from = from.min(self.len);
        ExternalPayload {
            at: self.at + from,
            len: self.len - from,
            ..self
        }
    }

    /// Its first `len` bytes (all, if it has fewer).
    pub fn take(self, len: usize) -> ExternalPayload {
        ExternalPayload {
            len: len.min(self.len),
            ..self
        }
    }
}

/// A frame from the guest: all of its bytes, or (where a link split it) its copied head and
/// the rest the link left in place, `rest.len` bytes that follow `head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestFrame<'f> {
    pub head: &'f [u8],
    pub rest: Option<ExternalPayload>,
}

impl<'f> GuestFrame<'f> {
    /// A frame all in our memory.
    pub fn whole(bytes: &'f [u8]) -> GuestFrame<'f> {
        GuestFrame {
            head: bytes,
            rest: None,
        }
    }

    /// Its length, wherever its bytes lie.
    pub fn len(&self) -> usize {
        self.head.len() + self.rest.map_or(0, |r| r.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a frame split after `head`, with `rest_len` bytes beyond, may go to the engine so:
/// an IPv4 or IPv6 TCP segment, not a fragment, whose headers are all in `head` and whose
/// packet goes on past it. A link copies any other frame whole (the engine takes nothing
/// else with a rest).
pub fn may_leave_rest(head: &[u8], rest_len: usize) -> bool {
    let Ok(eth) = parse::ethernet(head) else {
        return false;
    };
    let (payload, in_rest) = match eth.ethertype {
        parse::ethertype::IPV4 => match parse::ipv4_with_rest(eth.payload, rest_len) {
            Ok((ip, in_rest)) if ip.protocol == parse::ip_proto::TCP && !ip.fragmented => {
                (ip.payload, in_rest)
            }
            _ => return false,
        },
        parse::ethertype::IPV6 => match parse::ipv6_with_rest(eth.payload, rest_len) {
            Ok((ip, in_rest)) if ip.next_header == parse::ip_proto::TCP && !ip.fragmented => {
                (ip.payload, in_rest)
            }
            _ => return false,
        },
        _ => return false,
    };
    in_rest > 0 && super::tcp::parse(payload).is_ok()
}

/// A guest segment's payload: the bytes in the frame's copied head, then the rest the link
/// left in place, if it did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Payload<'f> {
    pub bytes: &'f [u8],
    pub rest: Option<ExternalPayload>,
}

impl<'f> Payload<'f> {
    pub fn len(&self) -> usize {
        self.bytes.len() + self.rest.map_or(0, |r| r.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its bytes from `from` on (none past the end).
    pub fn skip(self, from: usize) -> Payload<'f> {
        let in_bytes = from.min(self.bytes.len());
        Payload {
            bytes: &self.bytes[in_bytes..],
            rest: self.rest.map(|r| r.skip(from - in_bytes)),
        }
    }

    /// As pieces of a send, in order: the bytes, then the rest (either may be empty).
    pub fn pieces(self) -> [SendPiece<'f>; 2] {
        [
            SendPiece::Bytes(self.bytes),
            match self.rest {
                Some(r) => SendPiece::External(r),
                None => SendPiece::Bytes(&[]),
            },
        ]
    }

    /// Whether all of it is in our memory.
    pub fn in_our_memory(&self) -> bool {
        self.rest.is_none_or(|r| r.len == 0)
    }
}

/// What a link that leaves payload in place answers for it.
pub trait ExternalPayloads {
    /// Copies the first bytes of `payload` into `dst`, as many as both hold, through checked
    /// accesses; returns how many. Fewer than both hold only for a payload the link doesn't
    /// know (none of its frames, or past one's end): a bug, which reads as a short copy.
    fn read(&self, payload: ExternalPayload, dst: &mut [u8]) -> usize;
}

/// No payload in place (every link but vhost-user's): reads nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoExternal;

impl ExternalPayloads for NoExternal {
    fn read(&self, _: ExternalPayload, _: &mut [u8]) -> usize {
        0
    }
}

/// A piece of guest data on its way to a host socket: in our memory, or left in the guest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPiece<'f> {
    Bytes(&'f [u8]),
    External(ExternalPayload),
}

impl SendPiece<'_> {
    pub fn len(&self) -> usize {
        match self {
            SendPiece::Bytes(b) => b.len(),
            SendPiece::External(p) => p.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::flow::send_pieces_copying;

    /// Frames' payloads kept "elsewhere": frame i's bytes.
    struct Kept(Vec<Vec<u8>>);

    impl ExternalPayloads for Kept {
        fn read(&self, p: ExternalPayload, dst: &mut [u8]) -> usize {
            let Some(frame) = self.0.get(p.frame as usize) else {
                return 0;
            };
            let end = (p.at + p.len.min(dst.len())).min(frame.len());
            let n = end.saturating_sub(p.at);
            dst[..n].copy_from_slice(&frame[p.at..p.at + n]);
            n
        }
    }

    fn kept() -> Kept {
        Kept(vec![
            (0..10_000u32).map(|i| i as u8).collect(),
            (0..300u32).map(|i| (i * 3) as u8).collect(),
        ])
    }

    /// Sends into `out`, taking at most `room` bytes over all.
    fn sink<'a>(out: &'a mut Vec<u8>, room: usize) -> impl FnMut(&[u8]) -> io::Result<usize> + 'a {
        move |bytes| {
            let n = bytes.len().min(room - out.len());
            if n == 0 && !bytes.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            out.extend_from_slice(&bytes[..n]);
            Ok(n)
        }
    }

    #[test]
    fn pieces_in_place_go_out_copied_in_order() {
        let kept = kept();
        let pieces = [
            SendPiece::Bytes(b"head"),
            SendPiece::External(ExternalPayload {
                frame: 0,
                at: 5,
                len: 9_000,
            }),
            SendPiece::Bytes(b"mid"),
            SendPiece::External(ExternalPayload {
                frame: 1,
                at: 1,
                len: 299,
            }),
        ];
        let mut out = Vec::new();
        let sent = send_pieces_copying(&pieces, &kept, sink(&mut out, usize::MAX)).unwrap();
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&kept.0[0][5..9_005]);
        expected.extend_from_slice(b"mid");
        expected.extend_from_slice(&kept.0[1][1..]);
        assert_eq!(sent, expected.len());
        assert_eq!(out, expected);
    }

    #[test]
    fn a_short_send_stops_the_pieces_where_it_stopped() {
        let kept = kept();
        let pieces = [
            SendPiece::Bytes(b"head"),
            SendPiece::External(ExternalPayload {
                frame: 0,
                at: 0,
                len: 9_000,
            }),
            SendPiece::Bytes(b"never"),
        ];
        let mut out = Vec::new();
        let sent = send_pieces_copying(&pieces, &kept, sink(&mut out, 5_001)).unwrap();
        assert_eq!(sent, 5_001);
        assert_eq!(&out[4..], &kept.0[0][..4_997]);
        // Nothing at all: the socket's answer.
        let mut out = Vec::new();
        let err = send_pieces_copying(&pieces, &kept, sink(&mut out, 0)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_payload_the_link_cannot_read_ends_the_sends_there() {
        let kept = kept();
        let pieces = [
            SendPiece::Bytes(b"ok"),
            SendPiece::External(ExternalPayload {
                frame: 1,
                at: 200,
                len: 500,
            }),
            SendPiece::Bytes(b"never"),
        ];
        let mut out = Vec::new();
        let sent = send_pieces_copying(&pieces, &kept, sink(&mut out, usize::MAX)).unwrap();
        // frame 1 has 100 bytes from 200: those go, then the sends end.
        assert_eq!(sent, 102);
        assert_eq!(&out[2..], &kept.0[1][200..]);
    }

    #[test]
    fn only_tcp_with_its_headers_in_the_head_may_leave_a_rest() {
        use crate::wire::build::Route;
        use crate::wire::tcp::{self as wtcp, Header};
        use crate::wire::{FrameQueue, MacAddr};
        let route = |src: &str, dst: &str| Route {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
        };
        let payload = [7u8; 600];
        let mut q = FrameQueue::new();
        for r in [
            route("192.0.2.2", "192.0.2.1"),
            route("2001:db8::2", "2001:db8::1"),
        ] {
            q.clear();
            let h = Header {
                src_port: 1,
                dst_port: 2,
                seq: 0,
                ack: 0,
                flags: 0x10,
                window: 100,
                mss: None,
                wscale: None,
            };
            wtcp::frame(&mut q, &r, &h, &payload);
            let frame = q.get(0).unwrap();
            let headers = frame.len() - payload.len();
            assert!(may_leave_rest(&frame[..headers], payload.len()));
            assert!(may_leave_rest(&frame[..headers + 1], payload.len() - 1));
            assert!(
                !may_leave_rest(&frame[..headers - 1], payload.len() + 1),
                "a header cut"
            );
            assert!(!may_leave_rest(frame, 0), "nothing beyond");
            assert!(
                !may_leave_rest(&frame[..headers], payload.len() - 1),
                "lengths"
            );
        }
        // UDP and ARP never.
        crate::wire::build::udp_frame(&mut q, route("192.0.2.2", "192.0.2.1"), 1, 2, &payload);
        let frame = q.get(q.len() - 1).unwrap();
        assert!(!may_leave_rest(&frame[..100], frame.len() - 100));
        assert!(!may_leave_rest(&[0u8; 60], 100));
    }

    #[test]
    fn skip_and_take_stay_inside_the_payload() {
        let p = ExternalPayload {
            frame: 3,
            at: 10,
            len: 100,
        };
        assert_eq!(
            p.skip(7),
            ExternalPayload {
                frame: 3,
                at: 17,
                len: 93
            }
        );
        assert_eq!(p.skip(500).len, 0);
        assert_eq!(p.skip(7).take(5).len, 5);
        assert_eq!(p.take(500), p);
    }

    #[test]
    fn a_payload_skips_across_its_bytes_into_its_rest() {
        let rest = ExternalPayload {
            frame: 1,
            at: 0,
            len: 50,
        };
        let p = Payload {
            bytes: b"0123456789",
            rest: Some(rest),
        };
        assert_eq!(p.len(), 60);
        assert_eq!(p.skip(4).bytes, b"456789");
        assert_eq!(p.skip(4).rest, Some(rest));
        let past = p.skip(13);
        assert!(past.bytes.is_empty());
        assert_eq!(past.rest, Some(rest.skip(3)));
        assert_eq!(past.len(), 47);
        assert!(p.skip(60).is_empty());
        assert!(p.skip(99).is_empty());
    }
}
