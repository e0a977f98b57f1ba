use std::fmt;
use std::str::FromStr;

/// An Ethernet (802.3) hardware address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The broadcast address, ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// The locally administered unicast address the original uses when it has no better one.
    pub const FALLBACK: MacAddr = MacAddr([0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55]);

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// A usable unicast source address: not zero, not multicast or broadcast.
    pub fn is_unicast(&self) -> bool {
        !self.is_zero() && !self.is_multicast()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a MAC address (expected six hexadecimal octets separated by ':')")]
pub struct MacParseError;

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts.next().ok_or(MacParseError)?;
            if part.is_empty() || part.len() > 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(MacParseError);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError)?;
        }
        if parts.next().is_some() {
            return Err(MacParseError);
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let mac: MacAddr = "9a:55:9A:55:9a:5".parse().unwrap();
        assert_eq!(mac.0, [0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x05]);
        assert_eq!(mac.to_string(), "9a:55:9a:55:9a:05");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "1:2:3:4:5",
            "1:2:3:4:5:6:7",
            "g0:00:00:00:00:00",
            "100:0:0:0:0:0",
            "::::::",
        ] {
            assert_eq!(bad.parse::<MacAddr>(), Err(MacParseError), "{bad}");
        }
    }

    #[test]
    fn classifies() {
        assert!(MacAddr::FALLBACK.is_unicast());
        assert!(!MacAddr::BROADCAST.is_unicast());
        assert!(!MacAddr::default().is_unicast());
    }
}
