//! Small pieces of the human-readable dumps of DHCPv6 and NDP messages (their `Display`):
//! octets in hex, lifetimes, named flag bits.

use std::fmt;

/// Writes octets in hex, two digits each, nothing between them.
pub(crate) fn fmt_hex(f: &mut fmt::Formatter<'_>, b: &[u8]) -> fmt::Result {
    for byte in b {
        write!(f, "{byte:02x}")?;
    }
    Ok(())
}

/// All ones: an infinite lifetime in NDP (RFC 4861 section 4.6.2) and DHCPv6 (RFC 8415
/// section 7.7) alike.
pub const INFINITE_LIFETIME: u32 = u32::MAX;

/// A lifetime in seconds, "infinite" for all ones (NDP and DHCPv6 alike).
pub(crate) struct Lifetime(pub(crate) u32);

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == INFINITE_LIFETIME {
            f.write_str("infinite")
        } else {
            write!(f, "{} s", self.0)
        }
    }
}

/// Named bits of a flags field, e.g. "0xc0 (M O)", "0x0 (none)".
pub(crate) fn fmt_flags(
    f: &mut fmt::Formatter<'_>,
    value: u32,
    names: &[(u32, &str)],
) -> fmt::Result {
    write!(f, "{value:#x} (")?;
    if value == 0 {
        f.write_str("none")?;
    }
    let mut first = true;
    for &(bit, name) in names {
        if value & bit != 0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(name)?;
            first = false;
        }
    }
    f.write_str(")")
}
