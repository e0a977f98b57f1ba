//! Wire formats: addresses, zero-copy views of guest frames ([`parse`]), emitters
//! ([`build`]), qemu's stream framing ([`stream`]), the Internet checksum ([`checksum`]) and
//! domain names ([`dns_name`]).

use std::fmt;

pub mod build;
pub mod checksum;
pub mod dns_name;
mod mac;
pub mod parse;
pub mod stream;
pub mod tcp;

pub use build::FrameQueue;
pub use mac::{MacAddr, MacParseError};

/// Writes octets in hex, two digits each, nothing between them.
pub(crate) fn fmt_hex(f: &mut fmt::Formatter<'_>, b: &[u8]) -> fmt::Result {
    for byte in b {
        write!(f, "{byte:02x}")?;
    }
    Ok(())
}
