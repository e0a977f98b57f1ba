//! Parsers for option values. Each names the option and the value in its error.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use sans_io::config::{DEFAULT_MTU, MIN_MTU};
use sans_io::wire::MacAddr;

use super::{value_error, CliError};

/// Interface names hold at most IFNAMSIZ - 1 bytes.
const MAX_IFNAME: usize = 15;

pub fn mtu(option: &str, v: &str) -> Result<u16, CliError> {
    let n: u32 = v
        .parse()
        .map_err(|_| value_error(option, v, "not a number"))?;
    match u16::try_from(n) {
        Ok(0) => Ok(0),
        Ok(m) if (MIN_MTU..=DEFAULT_MTU).contains(&m) => Ok(m),
        _ => Err(value_error(
            option,
            v,
            format!("must be 0 or between {MIN_MTU} and {DEFAULT_MTU}"),
        )),
    }
}

pub fn any_addr(option: &str, v: &str) -> Result<IpAddr, CliError> {
    v.parse()
        .map_err(|_| value_error(option, v, "not an IPv4 or IPv6 address"))
}

/// An address a host can have: not unspecified, multicast, broadcast or loopback.
pub fn host_addr(option: &str, v: &str) -> Result<IpAddr, CliError> {
    let addr = any_addr(option, v)?;
    let bad = match addr {
        IpAddr::V4(a) => {
            a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback()
        }
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast() || a.is_loopback(),
    };
    if bad {
        return Err(value_error(option, v, "not a usable unicast address"));
    }
    Ok(addr)
}

/// A gateway: a unicast address (IPv6 link-local ones are the common case).
pub fn gateway(option: &str, v: &str) -> Result<IpAddr, CliError> {
    host_addr(option, v)
}

/// Options given at most once per IP version.
pub fn once_per_family<A: Copy>(
    option: &str,
    v: &str,
    slot: &mut Option<A>,
    a: A,
) -> Result<(), CliError> {
    if slot.is_some() {
        return Err(value_error(
            option,
            v,
            "given twice for the same IP version",
        ));
    }
    *slot = Some(a);
    Ok(())
}

/// An IPv4 netmask as a prefix length: `24` or `255.255.255.0`.
pub fn netmask(option: &str, v: &str) -> Result<u8, CliError> {
    if let Ok(len) = v.parse::<u8>() {
        if len <= 32 {
            return Ok(len);
        }
        return Err(value_error(option, v, "prefix length must be 0 to 32"));
    }
    let mask: Ipv4Addr = v
        .parse()
        .map_err(|_| value_error(option, v, "not a prefix length or a dotted netmask"))?;
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    if bits.checked_shl(len).unwrap_or(0) != 0 {
        return Err(value_error(option, v, "netmask bits are not contiguous"));
    }
    Ok(len as u8)
}

pub fn mac(option: &str, v: &str) -> Result<MacAddr, CliError> {
    let mac: MacAddr = v.parse().map_err(|e| value_error(option, v, e))?;
    if !mac.is_unicast() {
        return Err(value_error(option, v, "not a unicast MAC address"));
    }
    Ok(mac)
}

pub fn ifname(option: &str, v: &str) -> Result<String, CliError> {
    let ok = !v.is_empty()
        && v.len() <= MAX_IFNAME
        && v != "."
        && v != ".."
        && !v
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if !ok {
        return Err(value_error(
            option,
            v,
            format!("not an interface name (1 to {MAX_IFNAME} bytes, no '/', ':' or spaces)"),
        ));
    }
    Ok(v.to_owned())
}

/// A DNS name of at most `max` bytes: labels of letters, digits, '-' and '_'.
pub fn dns_name(option: &str, v: &str, max: usize) -> Result<String, CliError> {
    let body = v.strip_suffix('.').unwrap_or(v);
    let labels_ok = !body.is_empty()
        && body.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !labels_ok || v.len() > max {
        return Err(value_error(
            option,
            v,
            format!("not a DNS name of at most {max} bytes"),
        ));
    }
    Ok(v.to_owned())
}

pub fn log_size(option: &str, v: &str, min: u64) -> Result<u64, CliError> {
    let n: u64 = v
        .parse()
        .map_err(|_| value_error(option, v, "not a number of bytes"))?;
    if n < min {
        return Err(value_error(
            option,
            v,
            format!("must be at least {min} bytes"),
        ));
    }
    Ok(n)
}

/// `UID`, `UID:GID`, `LOGIN` or `LOGIN:GROUP`; looked up when we switch.
pub fn runas(option: &str, v: &str) -> Result<String, CliError> {
    let mut parts = v.split(':');
    let user = parts.next().unwrap_or_default();
    let group = parts.next();
    let bad = user.is_empty() || group.is_some_and(str::is_empty) || parts.next().is_some();
    if bad {
        return Err(value_error(
            option,
            v,
            "expected UID[:GID] or LOGIN[:GROUP]",
        ));
    }
    Ok(v.to_owned())
}

pub fn fd(option: &str, v: &str) -> Result<RawFd, CliError> {
    match v.parse::<RawFd>() {
        // 0 to 2 are our own standard streams.
        Ok(fd) if fd > 2 => Ok(fd),
        _ => Err(value_error(
            option,
            v,
            "not a file descriptor number above 2",
        )),
    }
}
