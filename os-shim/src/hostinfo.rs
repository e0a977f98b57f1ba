//! Host facts read from files: resolv.conf and procfs.

use std::io;
use std::ops::RangeInclusive;
use std::path::Path;

use sans_io::config::resolv::ResolvConf;

/// Where the resolver configuration lives.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// The kernel's ephemeral port range for both IPv4 and IPv6.
pub const EPHEMERAL_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// Reads and parses a resolv.conf. A missing file is an empty configuration: a host without
/// one simply has no resolvers to hand out.
pub fn read_resolv_conf(path: &Path) -> io::Result<ResolvConf> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(ResolvConf::parse(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ResolvConf::default()),
        Err(e) => Err(e),
    }
}

/// Parses `ip_local_port_range` ("32768\t60999").
pub fn parse_port_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut words = text.split_whitespace();
    let first = words.next()?.parse().ok()?;
    let last = words.next()?.parse().ok()?;
    (first <= last && words.next().is_none()).then_some(first..=last)
}

/// The ephemeral port range, or Linux's default when it cannot be read.
pub fn ephemeral_port_range() -> RangeInclusive<u16> {
    std::fs::read_to_string(EPHEMERAL_RANGE)
        .ok()
        .and_then(|t| parse_port_range(&t))
        .unwrap_or(32768..=60999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_port_range("1024 1024"), Some(1024..=1024));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range("x y"), None);
        assert_eq!(parse_port_range("1 2 3"), None);
    }

    #[test]
    fn missing_resolv_conf_is_empty() {
        let conf = read_resolv_conf(Path::new("/nonexistent/resolv.conf")).unwrap();
        assert_eq!(conf, ResolvConf::default());
    }
}
