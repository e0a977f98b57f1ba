//! The configuration summary printed at start (unless `--quiet`): what the guest will get.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use sans_io::config::{Config, Mode};

/// Formats the summary: one line per fact, label first, so that people and scripts can read it.
pub struct Summary<'a>(pub &'a Config);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        if c.local_mode {
            writeln!(f, "Host interface: none (local mode)")?;
        } else {
            let if4 = c
                .ip4
                .as_ref()
                .map(|i| i.template_if.as_str())
                .filter(|n| !n.is_empty());
            let if6 = c
                .ip6
                .as_ref()
                .map(|i| i.template_if.as_str())
                .filter(|n| !n.is_empty());
            let host_if = match (if4, if6) {
                (Some(a), Some(b)) if a == b => a.to_owned(),
                (Some(a), Some(b)) => format!("{a} (IPv4), {b} (IPv6)"),
                (Some(a), None) | (None, Some(a)) => a.to_owned(),
                (None, None) => "none".to_owned(),
            };
            writeln!(f, "Host interface: {host_if}")?;
        }
        if c.mode == Mode::Pasta {
            writeln!(f, "Namespace interface: {}", c.ns_ifname)?;
        }
        writeln!(f, "Our MAC address: {}", c.our_mac)?;
        match c.mtu {
            Some(mtu) => writeln!(f, "MTU: {mtu}")?,
            None => writeln!(f, "MTU: not advertised")?,
        }

        match &c.ip4 {
            None => writeln!(f, "IPv4: disabled")?,
            Some(ip4) => {
                let how = if c.services.dhcp {
                    "via DHCP"
                } else {
                    "DHCP off"
                };
                writeln!(f, "IPv4 address: {}/{} ({how})", ip4.addr, ip4.prefix_len)?;
                match ip4.gateway {
                    Some(gw) => writeln!(f, "IPv4 gateway: {gw}")?,
                    None => writeln!(f, "IPv4 gateway: none")?,
                }
                if let Some(a) = ip4.map_host_loopback {
                    writeln!(f, "IPv4 host loopback reached at: {a}")?;
                }
                if let Some(a) = ip4.map_guest_addr {
                    writeln!(f, "IPv4 host address reached at: {a}")?;
                }
            }
        }
        match &c.ip6 {
            None => writeln!(f, "IPv6: disabled")?,
            Some(ip6) => {
                let mut how = Vec::new();
                if c.services.ndp && c.services.ra {
                    how.push("NDP");
                }
                if c.services.dhcpv6 {
                    how.push("DHCPv6");
                }
                let how = if how.is_empty() {
                    "not advertised".to_owned()
                } else {
                    format!("via {}", how.join(", "))
                };
                if ip6.addr.is_unspecified() {
                    writeln!(f, "IPv6 address: link-local only")?;
                } else {
                    writeln!(f, "IPv6 address: {}/{} ({how})", ip6.addr, ip6.prefix_len)?;
                }
                match ip6.gateway {
                    Some(gw) => writeln!(f, "IPv6 gateway: {gw}")?,
                    None => writeln!(f, "IPv6 gateway: none")?,
                }
                writeln!(f, "IPv6 our link-local address: {}", ip6.our_addr)?;
                if let Some(a) = ip6.map_host_loopback {
                    writeln!(f, "IPv6 host loopback reached at: {a}")?;
                }
                if let Some(a) = ip6.map_guest_addr {
                    writeln!(f, "IPv6 host address reached at: {a}")?;
                }
            }
        }

        let handed = |on: bool| if on { "" } else { " (not handed out)" };
        if c.dns.is_empty() {
            writeln!(f, "DNS: none")?;
        } else {
            writeln!(f, "DNS: {}{}", join(&c.dns), handed(c.services.dhcp_dns))?;
        }
        let forwards: Vec<String> = [
            c.ip4
                .as_ref()
                .and_then(|i| Some((IpAddr::V4(i.dns_match?), i.dns_host.map(IpAddr::V4)))),
            c.ip6
                .as_ref()
                .and_then(|i| Some((IpAddr::V6(i.dns_match?), i.dns_host.map(IpAddr::V6)))),
        ]
        .into_iter()
        .flatten()
        .map(|(from, to)| match to {
            Some(to) => format!("{from} -> {to}"),
            None => format!("{from} -> (no resolver)"),
        })
        .collect();
        if !forwards.is_empty() {
            writeln!(f, "DNS forwarding: {}", forwards.join(", "))?;
        }
        if !c.search.is_empty() {
            writeln!(
                f,
                "DNS search: {}{}",
                c.search.join(" "),
                handed(c.services.dhcp_search)
            )?;
        }
        Ok(())
    }
}

fn join(addrs: &[IpAddr]) -> String {
    let mut out = String::new();
    for (i, a) in addrs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{a}");
    }
    out
}

#[cfg(test)]
mod tests {
    use sans_io::config::{Mode, NetOptions};
    use sim::Lab;

    use super::Summary;

    fn lab() -> Lab {
        Lab::dual_stack(
            "eth0",
            "nameserver 127.0.0.53\nnameserver 2001:db8:2::53\nsearch lab.test\n",
        )
    }

    #[test]
    fn pasta_on_a_dual_stack_host() {
        let config = lab().derive(&NetOptions::new(Mode::Pasta)).unwrap().config;
        insta::assert_snapshot!(Summary(&config).to_string());
    }

    #[test]
    fn passt_with_podman_style_options() {
        let mut opts = NetOptions::new(Mode::Passt);
        opts.dns_forward4 = Some("169.254.1.1".parse().unwrap());
        opts.map_guest_addr4 = sans_io::config::AddrChoice::Addr("169.254.1.2".parse().unwrap());
        opts.mtu = Some(0);
        opts.no_dhcpv6 = true;
        let config = lab().derive(&opts).unwrap().config;
        insta::assert_snapshot!(Summary(&config).to_string());
    }

    #[test]
    fn local_mode() {
        let config = Lab::new()
            .derive(&NetOptions::new(Mode::Pasta))
            .unwrap()
            .config;
        insta::assert_snapshot!(Summary(&config).to_string());
    }
}
