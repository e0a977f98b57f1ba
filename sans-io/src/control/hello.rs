//! The server's first message: magic, protocol version and the two name-field sizes.

use super::{ControlError, HELLO_LEN, IFNAMSIZ, MAGIC, PIF_NAME_SIZE, VERSION};

/// A hello as received: the only one accepted is [`Hello::ours`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub version: u32,
    pub pif_name_size: u32,
    pub ifnamsiz: u32,
}

impl Hello {
    /// The hello we send.
    pub fn ours() -> Hello {
        Hello {
            version: VERSION,
            pif_name_size: PIF_NAME_SIZE as u32,
            ifnamsiz: IFNAMSIZ as u32,
        }
    }

    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0; HELLO_LEN];
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&self.version.to_be_bytes());
        out[12..16].copy_from_slice(&self.pif_name_size.to_be_bytes());
        out[16..20].copy_from_slice(&self.ifnamsiz.to_be_bytes());
        out
    }

    /// Decodes and checks a hello, in the C pesto's order: magic, version, sizes.
    pub fn decode(bytes: &[u8; HELLO_LEN]) -> Result<Hello, ControlError> {
        if bytes[..8] != MAGIC {
            return Err(ControlError::BadMagic);
        }
        let word = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let hello = Hello {
            version: word(8),
            pif_name_size: word(12),
            ifnamsiz: word(16),
        };
        if hello.version > VERSION {
            return Err(ControlError::NewerVersion(hello.version));
        }
        if hello.version == 0 {
            return Err(ControlError::ExperimentalVersion);
        }
        if hello.version < VERSION {
            return Err(ControlError::OlderVersion(hello.version));
        }
        if hello.pif_name_size as usize != PIF_NAME_SIZE {
            return Err(ControlError::BadPifNameSize(hello.pif_name_size));
        }
        if hello.ifnamsiz as usize != IFNAMSIZ {
            return Err(ControlError::BadIfnamsiz(hello.ifnamsiz));
        }
        Ok(hello)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_hello_is_the_c_bytes() {
        let bytes = Hello::ours().encode();
        let expected: [u8; HELLO_LEN] = [
            b'b', b'a', b's', b'i', b'l', b':', b's', 0, // magic
            0, 0, 0, 2, // version
            0, 0, 0, 128, // pif_name_size
            0, 0, 0, 16, // ifnamsiz
        ];
        assert_eq!(bytes, expected);
        assert_eq!(Hello::decode(&bytes), Ok(Hello::ours()));
    }

    #[test]
    fn bad_hellos_say_why() {
        let mut b = Hello::ours().encode();
        b[0] = b'B';
        assert_eq!(Hello::decode(&b), Err(ControlError::BadMagic));
        let newer = Hello {
            version: 3,
            ..Hello::ours()
        }
        .encode();
        assert_eq!(Hello::decode(&newer), Err(ControlError::NewerVersion(3)));
        assert_eq!(
            ControlError::NewerVersion(3).to_string(),
            "Unknown server protocol version 3 > 2"
        );
        let v1 = Hello {
            version: 1,
            ..Hello::ours()
        }
        .encode();
        assert_eq!(Hello::decode(&v1), Err(ControlError::OlderVersion(1)));
        let v0 = Hello {
            version: 0,
            ..Hello::ours()
        }
        .encode();
        assert_eq!(Hello::decode(&v0), Err(ControlError::ExperimentalVersion));
        let sizes = Hello {
            ifnamsiz: 32,
            ..Hello::ours()
        }
        .encode();
        assert_eq!(Hello::decode(&sizes), Err(ControlError::BadIfnamsiz(32)));
        assert_eq!(
            ControlError::BadIfnamsiz(32).to_string(),
            "Server has unexpected IFNAMSIZ (32 not 16)"
        );
        let sizes = Hello {
            pif_name_size: 64,
            ..Hello::ours()
        }
        .encode();
        assert_eq!(Hello::decode(&sizes), Err(ControlError::BadPifNameSize(64)));
    }
}
