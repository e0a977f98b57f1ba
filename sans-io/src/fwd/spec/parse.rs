//! The grammar: text to [`PortSpec`], with a short reason when it does not parse.

use std::net::IpAddr;
use std::str::FromStr;

use super::ranges::check_port;
use super::{PortItem, PortMap, PortRange, PortRanges, PortSpec, SpecError, IFACE_MAX_LEN};

/// A decimal port number, 1 to 65535. `item` is the whole item, for messages.
fn parse_port(text: &str, item: &str) -> Result<u16, SpecError> {
    if text.is_empty() {
        return Err(SpecError(format!("missing port number in '{item}'")));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SpecError(format!("'{text}' is not a port number")));
    }
    let value = text.bytes().try_fold(0u32, |acc, b| {
        acc.checked_mul(10)?
            .checked_add(u32::from(b - b'0'))
            .filter(|&v| v <= u32::from(u16::MAX))
    });
    match value.and_then(|v| u16::try_from(v).ok()) {
        Some(port) => check_port(port),
        None => Err(SpecError(format!("port {text} is greater than 65535"))),
    }
}

/// `P` or `P-Q`.
fn parse_range(text: &str, item: &str) -> Result<PortRange, SpecError> {
    match text.split_once('-') {
        None => parse_port(text, item).map(PortRange::single),
        Some((first, last)) => PortRange::new(parse_port(first, item)?, parse_port(last, item)?),
    }
}

/// An address, plain or in brackets (`[::1]`, `[192.0.2.1]`).
fn parse_addr(text: &str) -> Result<IpAddr, SpecError> {
    let plain = match text.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .ok_or_else(|| SpecError(format!("missing ']' after '{text}'")))?,
        None => text,
    };
    plain
        .parse()
        .map_err(|_| SpecError(format!("'{text}' is not an IP address")))
}

/// Whether a target (what follows `:`) is ports only: the address forms have a `/`, a `[`,
/// a `.` or more `:`; ports are digits and `-`.
fn is_port_text(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit() || b == b'-')
}

/// `P[-Q]` after the source range `from`: a target range as long, or one port starting one.
fn parse_target_ports(text: &str, from: PortRange, item: &str) -> Result<u16, SpecError> {
    let to = parse_range(text, item)?;
    let span = from.last - from.first;
    if to.first == to.last && span > 0 {
        // `P-Q:R`: a target range of the same length, starting at R.
        if to.first.checked_add(span).is_none() {
            return Err(SpecError(format!(
                "target range {}-{} goes past port 65535",
                to.first,
                u32::from(to.first) + u32::from(span)
            )));
        }
    } else if to.last - to.first != span {
        return Err(SpecError(format!(
            "target range {to} is not the same length as {from}"
        )));
    }
    Ok(to.first)
}

/// One comma-separated item.
fn parse_item(item: &str) -> Result<PortItem, SpecError> {
    if item.is_empty() {
        return Err(SpecError("empty item in port list".into()));
    }
    if let Some(rest) = item.strip_prefix('~') {
        if rest.contains(':') {
            return Err(SpecError(format!(
                "excluded ports '{item}' cannot have a target"
            )));
        }
        return parse_range(rest, item).map(PortItem::Exclude);
    }

    match item {
        "auto" => return Ok(PortItem::Auto),
        "all" => return Ok(PortItem::All(None)),
        _ => {}
    }
    if let Some(addr) = item.strip_prefix("all:") {
        return parse_addr(addr).map(|a| PortItem::All(Some(a)));
    }

    let (source, target) = match item.split_once(':') {
        Some((source, target)) => (source, Some(target)),
        None => (item, None),
    };
    let from = parse_range(source, item)?;
    let (to_first, to_addr) = match target {
        None => (from.first, None),
        // `P:TP`
        Some(ports) if is_port_text(ports) => (parse_target_ports(ports, from, item)?, None),
        // `P:TADDR/TP`: an IPv6 address ends at the last `/`.
        Some(target) => match target.rsplit_once('/') {
            Some((addr, ports)) => (
                parse_target_ports(ports, from, item)?,
                Some(parse_addr(addr)?),
            ),
            // `P:TADDR`: the same ports.
            None => (from.first, Some(parse_addr(target)?)),
        },
    };
    Ok(PortItem::Forward(PortMap {
        from,
        to_first,
        to_addr,
    }))
}

/// An interface name after `%`.
fn check_iface(name: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Err(SpecError("missing interface name after '%'".into()));
    }
    if name.len() > IFACE_MAX_LEN {
        return Err(SpecError(format!(
            "interface name '{name}' is longer than {IFACE_MAX_LEN} bytes"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == '%' || c.is_whitespace() || c.is_control())
    {
        return Err(SpecError(format!(
            "interface name '{}' contains '{}'",
            name.escape_debug(),
            c.escape_debug()
        )));
    }
    Ok(())
}

/// `ADDR`, `[ADDR]`, `*` or nothing, then optionally `%IFACE`, without the trailing `/`.
/// `*` is the same as no address: both families' wildcard.
fn parse_prefix(prefix: &str) -> Result<(Option<IpAddr>, Option<String>), SpecError> {
    if prefix.is_empty() {
        return Err(SpecError("missing address or interface before '/'".into()));
    }
    // A bracketed address may hold no `%`, so the interface starts after the `]`.
    let split_at = match prefix.find(']') {
        Some(close) if prefix.starts_with('[') => prefix[close..].find('%').map(|i| close + i),
        _ => prefix.find('%'),
    };
    let (addr, iface) = match split_at {
        Some(i) => (&prefix[..i], Some(&prefix[i + 1..])),
        None => (prefix, None),
    };
    let bind = match addr {
        "" | "*" => None,
        addr => Some(parse_addr(addr)?),
    };
    let iface = match iface {
        Some(name) => {
            check_iface(name)?;
            Some(name.to_owned())
        }
        None => None,
    };
    Ok((bind, iface))
}

/// Whether the text before the first `/` is the start of a port list with a target address
/// (`8080:10.88.0.2/80`, `22,80:10.0.0.1/8080`) rather than a listening prefix: a list
/// starts with a port, `~`, `auto` or `all`, and a `/` in it follows a target's `:`. Like the C original,
/// a prefix is tried first, so text that reads as an address (`8080:fd00::2`, a valid IPv6
/// address) is one; a bracketed target (`8080:[fd00::2]/80`) avoids that.
fn is_list_with_target(before_slash: &str) -> bool {
    let first = before_slash.split(',').next().unwrap_or_default();
    let starts_a_list = first.starts_with(|c: char| c.is_ascii_digit() || c == '~')
        || first == "auto"
        || first == "all"
        || first.starts_with("all:");
    starts_a_list && before_slash.contains(':') && parse_prefix(before_slash).is_err()
}

impl FromStr for PortSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(PortSpec::None),
            "auto" => Ok(PortSpec::Auto),
            "all" => Ok(PortSpec::All),
            _ => s.parse().map(PortSpec::Ports),
        }
    }
}

/// Parses the list form: `none` is an error here, and `auto` and `all` are list items.
impl FromStr for PortRanges {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let prefixed = s
            .split_once('/')
            .filter(|(before, _)| !is_list_with_target(before));
        let (bind, iface, list) = match prefixed {
            Some((prefix, list)) => {
                let (bind, iface) = parse_prefix(prefix)?;
                if list.is_empty() {
                    return Err(SpecError(format!("missing ports after '{prefix}/'")));
                }
                if list == "none" {
                    return Err(SpecError(format!(
                        "'{list}' cannot follow an address or interface"
                    )));
                }
                (bind, iface, list)
            }
            None => (None, None, s),
        };
        if list.is_empty() {
            return Err(SpecError("empty port list".into()));
        }
        let items = list.split(',').map(parse_item).collect::<Result<_, _>>()?;
        Ok(PortRanges { bind, iface, items })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    // The examples of the man page.

    #[test]
    fn man_single_port() {
        check("22", ports(None, None, vec![fwd(22, 22, 22)]), "22");
    }

    #[test]
    fn man_single_port_mapped() {
        check("22:23", ports(None, None, vec![fwd(22, 22, 23)]), "22:23");
    }

    #[test]
    fn man_two_ports() {
        check(
            "22,25",
            ports(None, None, vec![fwd(22, 22, 22), fwd(25, 25, 25)]),
            "22,25",
        );
    }

    #[test]
    fn man_range() {
        check("22-80", ports(None, None, vec![fwd(22, 80, 22)]), "22-80");
    }

    #[test]
    fn man_range_mapped() {
        check(
            "22-80:32-90",
            ports(None, None, vec![fwd(22, 80, 32)]),
            "22-80:32-90",
        );
    }

    #[test]
    fn man_bind_address() {
        check(
            "192.0.2.1/22",
            ports(v4(192, 0, 2, 1), None, vec![fwd(22, 22, 22)]),
            "192.0.2.1/22",
        );
    }

    #[test]
    fn man_bind_address_and_iface() {
        check(
            "192.0.2.1%eth0/22",
            ports(v4(192, 0, 2, 1), Some("eth0"), vec![fwd(22, 22, 22)]),
            "192.0.2.1%eth0/22",
        );
    }

    #[test]
    fn man_bind_iface() {
        check(
            "%eth0/22",
            ports(None, Some("eth0"), vec![fwd(22, 22, 22)]),
            "%eth0/22",
        );
    }

    #[test]
    fn man_range_with_exclusion() {
        check(
            "2000-5000,~3000-3010",
            ports(None, None, vec![fwd(2000, 5000, 2000), excl(3000, 3010)]),
            "2000-5000,~3000-3010",
        );
    }

    #[test]
    fn man_bind_range_with_exclusion() {
        check(
            "192.0.2.1/20-30,~25",
            ports(v4(192, 0, 2, 1), None, vec![fwd(20, 30, 20), excl(25, 25)]),
            "192.0.2.1/20-30,~25",
        );
    }

    #[test]
    fn man_exclusion_only() {
        check(
            "~20000-20010",
            ports(None, None, vec![excl(20000, 20010)]),
            "~20000-20010",
        );
    }

    // IPv6, and what Podman and libvirt emit.

    #[test]
    fn ipv6_bind_address() {
        check(
            "2001:db8::1/22",
            ports(
                Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
                None,
                vec![fwd(22, 22, 22)],
            ),
            "2001:db8::1/22",
        );
    }

    #[test]
    fn ipv6_loopback_with_iface() {
        check(
            "::1%lo/8080",
            ports(
                Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                Some("lo"),
                vec![fwd(8080, 8080, 8080)],
            ),
            "::1%lo/8080",
        );
    }

    #[test]
    fn ipv6_link_local_with_iface() {
        check(
            "fe80::1%eth0/22:2222",
            ports(
                Some(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1))),
                Some("eth0"),
                vec![fwd(22, 22, 2222)],
            ),
            "fe80::1%eth0/22:2222",
        );
    }

    #[test]
    fn podman_one_port_ranges() {
        check(
            "8080-8080:80-80",
            ports(None, None, vec![fwd(8080, 8080, 80)]),
            "8080:80",
        );
    }

    #[test]
    fn podman_bound_range() {
        check(
            "127.0.0.1/8080-8081:80-81",
            ports(v4(127, 0, 0, 1), None, vec![fwd(8080, 8081, 80)]),
            "127.0.0.1/8080-8081:80-81",
        );
    }

    // What pesto's callers and the C original's newer grammar write.

    #[test]
    fn bracketed_and_star_listen_addresses() {
        check(
            "[::]/8080",
            ports(ip("::"), None, vec![fwd(8080, 8080, 8080)]),
            "::/8080",
        );
        check(
            "[::1]/80",
            ports(ip("::1"), None, vec![fwd(80, 80, 80)]),
            "::1/80",
        );
        check(
            "[1.2.3.4]/80",
            ports(ip("1.2.3.4"), None, vec![fwd(80, 80, 80)]),
            "1.2.3.4/80",
        );
        check(
            "*/8080",
            ports(None, None, vec![fwd(8080, 8080, 8080)]),
            "8080",
        );
        check(
            "*%eth0/80",
            ports(None, Some("eth0"), vec![fwd(80, 80, 80)]),
            "%eth0/80",
        );
        check(
            "[fe80::1]%eth0/22",
            ports(ip("fe80::1"), Some("eth0"), vec![fwd(22, 22, 22)]),
            "fe80::1%eth0/22",
        );
        // The single-family wildcards stay addresses: IPv4-only and IPv6-only.
        check(
            "0.0.0.0/22",
            ports(ip("0.0.0.0"), None, vec![fwd(22, 22, 22)]),
            "0.0.0.0/22",
        );
    }

    #[test]
    fn podman_target_addresses() {
        check(
            "0.0.0.0/8080:10.88.0.2/80",
            ports(
                ip("0.0.0.0"),
                None,
                vec![fwd_at(8080, 8080, "10.88.0.2", 80)],
            ),
            "0.0.0.0/8080:10.88.0.2/80",
        );
        check(
            "[::]/8080:fd00::2/80",
            ports(ip("::"), None, vec![fwd_at(8080, 8080, "fd00::2", 80)]),
            "::/8080:[fd00::2]/80",
        );
        check(
            "[::]/8080:[fd00::2]/80",
            ports(ip("::"), None, vec![fwd_at(8080, 8080, "fd00::2", 80)]),
            "::/8080:[fd00::2]/80",
        );
        check(
            "8000-8004:10.88.0.2/80-84",
            ports(None, None, vec![fwd_at(8000, 8004, "10.88.0.2", 80)]),
            "8000-8004:10.88.0.2/80-84",
        );
        check(
            "0.0.0.0/8080",
            ports(ip("0.0.0.0"), None, vec![fwd(8080, 8080, 8080)]),
            "0.0.0.0/8080",
        );
    }

    #[test]
    fn rootlesskit_unbracketed_ipv6_listen_address() {
        check(
            "::/8080:80",
            ports(ip("::"), None, vec![fwd(8080, 8080, 80)]),
            "::/8080:80",
        );
        check(
            "0.0.0.0/8080:80",
            ports(ip("0.0.0.0"), None, vec![fwd(8080, 8080, 80)]),
            "0.0.0.0/8080:80",
        );
    }

    #[test]
    fn target_address_forms() {
        // The same ports at another address.
        check(
            "8080:10.88.0.2",
            ports(None, None, vec![fwd_at(8080, 8080, "10.88.0.2", 8080)]),
            "8080:10.88.0.2",
        );
        check(
            "8080:fd00::2",
            ports(None, None, vec![fwd_at(8080, 8080, "fd00::2", 8080)]),
            "8080:[fd00::2]",
        );
        check(
            "22,80:10.0.0.1/8080",
            ports(
                None,
                None,
                vec![fwd(22, 22, 22), fwd_at(80, 80, "10.0.0.1", 8080)],
            ),
            "22,80:10.0.0.1/8080",
        );
        check(
            "8080:[fd00::2]/80",
            ports(None, None, vec![fwd_at(8080, 8080, "fd00::2", 80)]),
            "8080:[fd00::2]/80",
        );
        // The shorthand of a one-port target works with an address too.
        check(
            "80-81:10.0.0.1/90",
            ports(None, None, vec![fwd_at(80, 81, "10.0.0.1", 90)]),
            "80-81:10.0.0.1/90-91",
        );
        // As in the C original, an address prefix is tried first: `8080:fd00::2` is a valid
        // IPv6 address, so this listens there. Brackets say otherwise (above).
        check(
            "8080:fd00::2/80",
            ports(ip("8080:fd00::2"), None, vec![fwd(80, 80, 80)]),
            "8080:fd00::2/80",
        );
    }

    #[test]
    fn keywords() {
        check("none", PortSpec::None, "none");
        check("auto", PortSpec::Auto, "auto");
        check("all", PortSpec::All, "all");
    }

    #[test]
    fn keywords_as_list_items() {
        // The C original's `ADDR/all`, `ADDR/auto`, `P-Q,auto` and `all:TADDR`.
        check(
            "127.0.0.1/all",
            ports(v4(127, 0, 0, 1), None, vec![PortItem::All(None)]),
            "127.0.0.1/all",
        );
        check(
            "%eth0/auto",
            ports(None, Some("eth0"), vec![PortItem::Auto]),
            "%eth0/auto",
        );
        check(
            "8000-8010,auto",
            ports(None, None, vec![fwd(8000, 8010, 8000), PortItem::Auto]),
            "8000-8010,auto",
        );
        check(
            "[::]/all:fd00::2",
            ports(ip("::"), None, vec![PortItem::All(ip("fd00::2"))]),
            "::/all:[fd00::2]",
        );
        // Alone and without a prefix, a list keyword prints with `*/` to stay a list.
        check("*/auto", ports(None, None, vec![PortItem::Auto]), "*/auto");
        check(
            "*/all",
            ports(None, None, vec![PortItem::All(None)]),
            "*/all",
        );
        assert_eq!(
            error("%eth0/none"),
            "'none' cannot follow an address or interface"
        );
        assert_eq!(error("all:nowhere"), "'nowhere' is not an IP address");
    }

    #[test]
    fn keywords_are_exact() {
        assert_eq!(error("All"), "'All' is not a port number");
        assert_eq!(error(" none"), "' none' is not a port number");
        assert_eq!(error("none,22"), "'none' is not a port number");
        assert_eq!(error("ALL,22"), "'ALL' is not a port number");
    }

    #[test]
    fn single_target_after_range_is_shorthand() {
        check(
            "22-80:32",
            ports(None, None, vec![fwd(22, 80, 32)]),
            "22-80:32-90",
        );
        check(
            "65000-65035:65500",
            ports(None, None, vec![fwd(65000, 65035, 65500)]),
            "65000-65035:65500-65535",
        );
    }

    #[test]
    fn leading_zeros_are_accepted() {
        check(
            "0022:00023",
            ports(None, None, vec![fwd(22, 22, 23)]),
            "22:23",
        );
    }

    #[test]
    fn port_bounds() {
        check(
            "1-65535",
            ports(None, None, vec![fwd(1, 65535, 1)]),
            "1-65535",
        );
        check(
            "65535:1",
            ports(None, None, vec![fwd(65535, 65535, 1)]),
            "65535:1",
        );
    }

    #[test]
    fn items_keep_order_and_duplicates() {
        check(
            "~25,80,22,80:8080",
            ports(
                None,
                None,
                vec![
                    excl(25, 25),
                    fwd(80, 80, 80),
                    fwd(22, 22, 22),
                    fwd(80, 80, 8080),
                ],
            ),
            "~25,80,22,80:8080",
        );
    }

    #[test]
    fn iface_names() {
        check(
            "%abcdefghijklmno/1",
            ports(None, Some("abcdefghijklmno"), vec![fwd(1, 1, 1)]),
            "%abcdefghijklmno/1",
        );
        check(
            "%eth0.100:1/1",
            ports(None, Some("eth0.100:1"), vec![fwd(1, 1, 1)]),
            "%eth0.100:1/1",
        );
        assert_eq!(
            error("%abcdefghijklmnop/1"),
            "interface name 'abcdefghijklmnop' is longer than 15 bytes"
        );
        // 8 two-byte characters: 16 bytes.
        assert_eq!(
            error("%éééééééé/1"),
            "interface name 'éééééééé' is longer than 15 bytes"
        );
        assert_eq!(error("%/22"), "missing interface name after '%'");
        assert_eq!(error("192.0.2.1%/22"), "missing interface name after '%'");
        assert_eq!(error("%a%b/22"), "interface name 'a%b' contains '%'");
        assert_eq!(error("%a b/22"), "interface name 'a b' contains ' '");
        assert_eq!(error("%a\tb/22"), "interface name 'a\\tb' contains '\\t'");
    }

    #[test]
    fn error_messages() {
        let cases = [
            ("", "empty port list"),
            ("22,,25", "empty item in port list"),
            ("22,", "empty item in port list"),
            (",22", "empty item in port list"),
            ("80-22", "port range 80-22 is reversed"),
            ("22:90-32", "port range 90-32 is reversed"),
            (
                "22-80:32-91",
                "target range 32-91 is not the same length as 22-80",
            ),
            (
                "22:32-33",
                "target range 32-33 is not the same length as 22",
            ),
            (
                "22-80:65500",
                "target range 65500-65558 goes past port 65535",
            ),
            ("0", "port 0 is not a valid port"),
            ("0-10", "port 0 is not a valid port"),
            ("22:0", "port 0 is not a valid port"),
            ("~0", "port 0 is not a valid port"),
            ("000", "port 0 is not a valid port"),
            ("abc", "'abc' is not a port number"),
            ("65536", "port 65536 is greater than 65535"),
            (
                "99999999999999999999999",
                "port 99999999999999999999999 is greater than 65535",
            ),
            ("0x16", "'0x16' is not a port number"),
            ("+22", "'+22' is not a port number"),
            ("-22", "missing port number in '-22'"),
            ("22-", "missing port number in '22-'"),
            ("22:", "missing port number in '22:'"),
            ("~", "missing port number in '~'"),
            ("22 ", "'22 ' is not a port number"),
            ("22, 25", "' 25' is not a port number"),
            ("22-25-30", "'25-30' is not a port number"),
            ("22:23:24", "'23:24' is not an IP address"),
            ("~~22", "'~22' is not a port number"),
            ("22~", "'22~' is not a port number"),
            ("~22:23", "excluded ports '~22:23' cannot have a target"),
            ("192.0.2.999/22", "'192.0.2.999' is not an IP address"),
            ("[::1/22", "missing ']' after '[::1'"),
            ("[::1]x/22", "missing ']' after '[::1]x'"),
            ("22:10.0.0.300/80", "'10.0.0.300' is not an IP address"),
            ("22:10.0.0.1/", "missing port number in '22:10.0.0.1/'"),
            (
                "22-23:10.0.0.1/80-82",
                "target range 80-82 is not the same length as 22-23",
            ),
            ("192.0.2.1/", "missing ports after '192.0.2.1/'"),
            ("%eth0/", "missing ports after '%eth0/'"),
            ("/22", "missing address or interface before '/'"),
            ("192.0.2.1/22/23", "'22/23' is not a port number"),
            ("192.0.2.1", "'192.0.2.1' is not a port number"),
        ];
        for (input, reason) in cases {
            assert_eq!(error(input), reason, "input {input:?}");
            assert!(!reason.ends_with('.'));
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = s.parse::<PortSpec>();
        }

        #[test]
        fn parse_never_panics_on_grammar_alphabet(s in "[0123456789,:~/%.abcdefl*\\[\\]-]{0,40}") {
            if let Ok(spec) = s.parse::<PortSpec>() {
                // Whatever parses prints to something that parses to the same value.
                prop_assert_eq!(spec.to_string().parse::<PortSpec>(), Ok(spec));
            }
        }
    }
}
