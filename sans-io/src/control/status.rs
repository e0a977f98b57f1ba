//! Our extension to the C protocol: after a client's update, the server says whether it was
//! applied, and why not, before closing the connection.
//!
//! The C protocol has no answer: the C pesto writes its tables and closes, so a forward the
//! server can't open (a port in use) is lost on it. Ours sends, after applying or refusing an
//! update, `"basil:r\0"`, `u8 applied` (1 or 0), `u16 length` (big-endian) and that many bytes
//! of UTF-8: the reason when refused, empty when applied. It is compatible both ways: the C
//! pesto never reads after its update (the bytes are dropped with the connection), and a C
//! server sends nothing, which our pesto takes as "no word" and exits 0 as the C one does.

/// The status message's magic (the hello's is `basil:s\0`).
pub const STATUS_MAGIC: [u8; 8] = *b"basil:r\0";
/// The longest reason sent; longer ones are cut at a character boundary.
pub const STATUS_REASON_MAX: usize = 1024;

/// What the server made of an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Applied,
    Refused(String),
}

/// Appends the status message for `status` to `out`.
pub fn encode_status(status: &Status, out: &mut Vec<u8>) {
    out.extend_from_slice(&STATUS_MAGIC);
    let reason = match status {
        Status::Applied => {
            out.push(1);
            ""
        }
        Status::Refused(why) => {
            out.push(0);
            let mut end = why.len().min(STATUS_REASON_MAX);
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            &why[..end]
        }
    };
    out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
}

/// Why bytes after an update are not a status message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("the server's answer ended early ({0} bytes)")]
    Short(usize),
    #[error("the server's answer is not a status message")]
    BadMagic,
    #[error("the server's answer has a bad result byte {0}")]
    BadResult(u8),
    #[error("the server's answer is longer than a status message")]
    TooLong,
    #[error("the server's reason is not UTF-8")]
    NotText,
    #[error("the server gave a reason for an update it applied")]
    AppliedWithReason,
}

/// Decodes everything a server sent after the client's update, up to its close. Nothing at
/// all is `None`: a server that doesn't answer (the C one).
pub fn decode_status(bytes: &[u8]) -> Result<Option<Status>, StatusError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let head = STATUS_MAGIC.len() + 1 + 2;
    if bytes.len() < head {
        return Err(StatusError::Short(bytes.len()));
    }
    if bytes[..STATUS_MAGIC.len()] != STATUS_MAGIC {
        return Err(StatusError::BadMagic);
    }
    let applied = bytes[STATUS_MAGIC.len()];
    let len = usize::from(u16::from_be_bytes([bytes[head - 2], bytes[head - 1]]));
    if len > STATUS_REASON_MAX || bytes.len() > head + len {
        return Err(StatusError::TooLong);
    }
    if bytes.len() < head + len {
        return Err(StatusError::Short(bytes.len()));
    }
    let reason = std::str::from_utf8(&bytes[head..]).map_err(|_| StatusError::NotText)?;
    match applied {
        1 if reason.is_empty() => Ok(Some(Status::Applied)),
        1 => Err(StatusError::AppliedWithReason),
        0 => Ok(Some(Status::Refused(reason.to_owned()))),
        b => Err(StatusError::BadResult(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_silence() {
        for s in [
            Status::Applied,
            Status::Refused("TCP port 8080 on *: Address already in use".into()),
        ] {
            let mut out = Vec::new();
            encode_status(&s, &mut out);
            assert_eq!(decode_status(&out), Ok(Some(s)));
        }
        assert_eq!(decode_status(b""), Ok(None));
        let mut out = Vec::new();
        encode_status(&Status::Refused("é".repeat(2000)), &mut out);
        let Ok(Some(Status::Refused(why))) = decode_status(&out) else {
            panic!("{out:?}")
        };
        assert!(why.len() <= STATUS_REASON_MAX && why.chars().all(|c| c == 'é'));
    }

    #[test]
    fn broken_answers_are_errors() {
        let mut ok = Vec::new();
        encode_status(&Status::Refused("x".into()), &mut ok);
        assert_eq!(decode_status(&ok[..5]), Err(StatusError::Short(5)));
        assert_eq!(decode_status(&ok[..11]), Err(StatusError::Short(11)));
        let mut long = ok.clone();
        long.push(b'!');
        assert_eq!(decode_status(&long), Err(StatusError::TooLong));
        let mut magic = ok.clone();
        magic[0] = b'x';
        assert_eq!(decode_status(&magic), Err(StatusError::BadMagic));
        let mut result = ok.clone();
        result[8] = 7;
        assert_eq!(decode_status(&result), Err(StatusError::BadResult(7)));
        let mut text = ok.clone();
        text[11] = 0xff;
        assert_eq!(decode_status(&text), Err(StatusError::NotText));
        let mut applied = ok;
        applied[8] = 1;
        assert_eq!(decode_status(&applied), Err(StatusError::AppliedWithReason));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_status(&bytes);
        }
    }
}
