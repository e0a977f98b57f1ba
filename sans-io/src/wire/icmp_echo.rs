//! ICMP and ICMPv6 echo messages (RFC 792, RFC 4443 section 4): the type, code, identifier
//! and sequence number of the 8-byte header, the data after it, and the two fields we
//! rewrite on the way through (identifier, checksum). Messages are handled from their type
//! byte on, as ping sockets send and receive them.

pub const ECHO_REQUEST4: u8 = 8;
pub const ECHO_REPLY4: u8 = 0;
pub const ECHO_REQUEST6: u8 = 128;
pub const ECHO_REPLY6: u8 = 129;

/// Type, code, checksum, identifier, sequence number.
pub const HEADER_LEN: usize = 8;

/// The echo request type of ICMP, or of ICMPv6 with `v6`.
pub fn request_type(v6: bool) -> u8 {
    if v6 {
        ECHO_REQUEST6
    } else {
        ECHO_REQUEST4
    }
}

/// The echo reply type of ICMP, or of ICMPv6 with `v6`.
pub fn reply_type(v6: bool) -> u8 {
    if v6 {
        ECHO_REPLY6
    } else {
        ECHO_REPLY4
    }
}

/// Why a message isn't an echo request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EchoError {
    #[error("shorter than an echo header")]
    Short,
}

/// A view of an echo message's header; `kind` is not checked to be an echo type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo<'a> {
    pub kind: u8,
    pub code: u8,
    pub id: u16,
    pub seq: u16,
    pub data: &'a [u8],
}

impl Echo<'_> {
    /// An echo request of the family (code 0, as RFC 792 and RFC 4443 have it).
    pub fn is_request(&self, v6: bool) -> bool {
        self.kind == request_type(v6) && self.code == 0
    }

    /// An echo reply of the family (any code: the kernel delivers what the peer sent).
    pub fn is_reply(&self, v6: bool) -> bool {
        self.kind == reply_type(v6)
    }
}

pub fn parse(msg: &[u8]) -> Result<Echo<'_>, EchoError> {
    let Some(header) = msg.get(..HEADER_LEN) else {
        return Err(EchoError::Short);
    };
    Ok(Echo {
        kind: header[0],
        code: header[1],
        id: u16::from_be_bytes([header[4], header[5]]),
        seq: u16::from_be_bytes([header[6], header[7]]),
        data: &msg[HEADER_LEN..],
    })
}

/// Rewrites the identifier of a message [`parse`] accepted.
pub fn set_id(msg: &mut [u8], id: u16) {
    msg[4..6].copy_from_slice(&id.to_be_bytes());
}

/// Zeroes the checksum of a message [`parse`] accepted: ping sockets fill it in.
pub fn clear_checksum(msg: &mut [u8]) {
    msg[2..4].copy_from_slice(&[0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rewrites_the_header() {
        let mut m = [ECHO_REQUEST6, 0, 0xab, 0xcd, 0x12, 0x34, 0, 7, b'x'];
        let e = parse(&m).unwrap();
        assert_eq!((e.id, e.seq, e.data), (0x1234, 7, &b"x"[..]));
        assert!(e.is_request(true) && !e.is_request(false) && !e.is_reply(true));
        set_id(&mut m, 0x4321);
        clear_checksum(&mut m);
        assert_eq!(m[..6], [ECHO_REQUEST6, 0, 0, 0, 0x43, 0x21]);
        assert!(parse(&m[..7]).is_err());
        // A request with a non-zero code is not one.
        assert!(!parse(&[ECHO_REQUEST4, 1, 0, 0, 0, 0, 0, 0])
            .unwrap()
            .is_request(false));
    }
}
