//! The change options applied to pesto's copy of the tables, in order, as the C pesto does;
//! with one deliberate difference: a rule identical to one present adds nothing and is no
//! error (see [`ForwardTable::add`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use sans_io::control::{Caps, Pif};
use sans_io::flow::Proto;
use sans_io::fwd::rule::{ForwardRule, ForwardTable, Listen};
use sans_io::fwd::{PortItem, PortSpec};

use super::args::Op;

/// One table of the server, as pesto edits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub pif: Pif,
    /// The server's name for it, which the listing prints.
    pub name: String,
    pub caps: Caps,
    pub rules: ForwardTable,
}

/// What the specs after `-A`, `-D` or neither do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The start: the first spec for a table empties it, then adds.
    Replace {
        host_cleared: bool,
        splice_cleared: bool,
    },
    Add,
    Delete,
}

/// Applies `ops` to `tables`; the error is the one line pesto prints.
pub fn apply(
    tables: &mut [Table],
    ops: &[Op],
    ephemeral: RangeInclusive<u16>,
) -> Result<(), String> {
    let mut mode = Mode::Replace {
        host_cleared: false,
        splice_cleared: false,
    };
    for op in ops {
        match op {
            Op::Add => mode = Mode::Add,
            Op::Delete => mode = Mode::Delete,
            Op::Clear(name) => {
                // By the server's name for the table, as the C pesto looks it up.
                let table = tables
                    .iter_mut()
                    .find(|t| t.name == *name)
                    .ok_or_else(|| format!("Unsupported pif name {name}"))?;
                table.rules.clear();
                if let Mode::Replace {
                    host_cleared,
                    splice_cleared,
                } = &mut mode
                {
                    match table.pif {
                        Pif::Host => *host_cleared = true,
                        Pif::Splice => *splice_cleared = true,
                        Pif::Tap => {}
                    }
                }
            }
            Op::Spec(letter, spec) => {
                let inbound = matches!(letter, 't' | 'u');
                let (name, direction) = if inbound {
                    (Pif::Host.name(), "inbound")
                } else {
                    (Pif::Splice.name(), "outbound")
                };
                let table = tables
                    .iter_mut()
                    .find(|t| t.name == name)
                    .ok_or_else(|| format!("Can't use -{letter}, no {direction} interface"))?;
                let mut delete = false;
                match &mut mode {
                    Mode::Replace {
                        host_cleared,
                        splice_cleared,
                    } => {
                        let cleared = if inbound {
                            host_cleared
                        } else {
                            splice_cleared
                        };
                        if !*cleared {
                            table.rules.clear();
                            *cleared = true;
                        }
                    }
                    Mode::Add => {}
                    Mode::Delete => delete = true,
                }
                apply_spec(table, *letter, spec, delete, ephemeral.clone())?;
            }
        }
    }
    Ok(())
}

/// One `-t/-u/-T/-U SPEC` on its table.
fn apply_spec(
    table: &mut Table,
    letter: char,
    text: &str,
    delete: bool,
    ephemeral: RangeInclusive<u16>,
) -> Result<(), String> {
    let proto = match letter {
        't' | 'T' => Proto::Tcp,
        _ => Proto::Udp,
    };
    let spec: PortSpec = text
        .parse()
        .map_err(|e| format!("Invalid port specifier '{text}': {e}"))?;
    let outbound = matches!(letter, 'T' | 'U');
    if let PortSpec::Ports(r) = &spec {
        if outbound && (r.bind.is_some() || r.iface.is_some()) {
            return Err(format!(
                "Listening address not allowed for -{letter} {text}"
            ));
        }
        if r.iface.is_some() && !table.caps.contains(Caps::IFNAME) {
            return Err(format!(
                "Device binding for '-{letter} {text}' unsupported (requires kernel 5.7+)"
            ));
        }
    }
    if spec == PortSpec::None {
        // As the C original: `none` only where nothing of the protocol is left.
        if table.rules.rules().iter().any(|r| r.proto == proto) {
            return Err(format!("-{letter} none conflicts with previous options"));
        }
        return Ok(());
    }
    let scans = match &spec {
        PortSpec::Auto => true,
        PortSpec::Ports(r) => r.items.contains(&PortItem::Auto),
        _ => false,
    };
    if scans && !table.caps.contains(Caps::SCAN) {
        return Err("'auto' port forwarding is only allowed for pasta".into());
    }
    for rule in spec.to_rules(proto, ephemeral) {
        for rule in fit_to_table(rule, table.caps, outbound) {
            if delete {
                table
                    .rules
                    .remove(&rule)
                    .map_err(|e| format!("Unable to delete rule {rule}: {e}"))?;
            } else {
                check_caps(&rule, table.caps)
                    .and_then(|()| table.rules.add(rule.clone()).map_err(|e| e.to_string()))
                    .map_err(|e| format!("Unable to add rule {rule}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// The rules the C original makes of one on a table with these capabilities: outbound
/// rules listen on the namespace's loopback (interface `lo`, or its two addresses without
/// device binding); a dual-stack rule on a single-family table takes that family.
fn fit_to_table(rule: ForwardRule, caps: Caps, outbound: bool) -> Vec<ForwardRule> {
    let (v4, v6) = (caps.contains(Caps::IPV4), caps.contains(Caps::IPV6));
    if outbound && !caps.contains(Caps::IFNAME) {
        let mut out = Vec::new();
        if v4 {
            out.push(ForwardRule {
                listen: Listen::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                ..rule.clone()
            });
        }
        if v6 {
            out.push(ForwardRule {
                listen: Listen::Addr(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                ..rule
            });
        }
        return out;
    }
    let mut rule = rule;
    if outbound {
        rule.iface = Some("lo".into());
    }
    if rule.listen == Listen::DualStackAny {
        if !v4 {
            rule.listen = Listen::Addr(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        } else if !v6 {
            rule.listen = Listen::Addr(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        }
    }
    vec![rule]
}

/// The table's capabilities, with the C original's texts.
fn check_caps(rule: &ForwardRule, caps: Caps) -> Result<(), String> {
    match rule.listen {
        Listen::DualStackAny => {
            if !caps.contains(Caps::IPV4) {
                return Err("Dual stack forward, but IPv4 not enabled".into());
            }
            if !caps.contains(Caps::IPV6) {
                return Err("Dual stack forward, but IPv6 not enabled".into());
            }
        }
        Listen::Addr(a) if a.to_canonical().is_ipv4() && !caps.contains(Caps::IPV4) => {
            return Err("IPv4 forward, but IPv4 not enabled".into());
        }
        Listen::Addr(a) if !a.to_canonical().is_ipv4() && !caps.contains(Caps::IPV6) => {
            return Err("IPv6 forward, but IPv6 not enabled".into());
        }
        Listen::Addr(_) => {}
    }
    match rule.proto {
        Proto::Tcp if !caps.contains(Caps::TCP) => {
            Err("Can't add TCP forwarding rule, TCP not enabled".into())
        }
        Proto::Udp if !caps.contains(Caps::UDP) => {
            Err("Can't add UDP forwarding rule, UDP not enabled".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPHEMERAL: RangeInclusive<u16> = 32768..=60999;
    const ALL: Caps = Caps(0x3f);

    fn pasta_tables() -> Vec<Table> {
        [(Pif::Host, "HOST"), (Pif::Splice, "SPLICE")]
            .into_iter()
            .map(|(pif, name)| Table {
                pif,
                name: name.into(),
                caps: ALL,
                rules: ForwardTable::new(),
            })
            .collect()
    }

    fn ops(words: &[&str]) -> Vec<Op> {
        let mut w: Vec<std::ffi::OsString> = words.iter().map(Into::into).collect();
        w.push("sock".into());
        match super::super::args::parse(&w) {
            Ok(super::super::args::Command::Run(r)) => r.ops,
            other => panic!("{other:?}"),
        }
    }

    fn listed(tables: &[Table]) -> Vec<Vec<String>> {
        tables
            .iter()
            .map(|t| t.rules.rules().iter().map(|r| r.to_string()).collect())
            .collect()
    }

    #[test]
    fn replace_mode_then_add_and_delete() {
        let mut t = pasta_tables();
        apply(
            &mut t,
            &ops(&["-t", "22", "-t", "80", "-U", "53"]),
            EPHEMERAL,
        )
        .unwrap();
        assert_eq!(
            listed(&t),
            [
                vec!["TCP *:22  =>  22", "TCP *:80  =>  80"],
                vec!["UDP *%lo:53  =>  53"]
            ]
        );
        // The first -t replaces HOST; SPLICE is untouched.
        apply(&mut t, &ops(&["-t", "443"]), EPHEMERAL).unwrap();
        assert_eq!(listed(&t)[0], ["TCP *:443  =>  443"]);
        assert_eq!(listed(&t)[1], ["UDP *%lo:53  =>  53"]);
        // The man page's example: -D applies to -U too.
        apply(
            &mut t,
            &ops(&["-A", "-t", "2000", "-D", "-t", "443", "-U", "53"]),
            EPHEMERAL,
        )
        .unwrap();
        assert_eq!(listed(&t), [vec!["TCP *:2000  =>  2000"], vec![]]);
        apply(&mut t, &ops(&["-C", "HOST"]), EPHEMERAL).unwrap();
        assert_eq!(listed(&t), [Vec::<String>::new(), vec![]]);
        // The C original's list keywords.
        apply(&mut t, &ops(&["-A", "-t", "8000-8010,auto"]), EPHEMERAL).unwrap();
        assert_eq!(
            listed(&t)[0],
            ["TCP *:8000-8010  =>  8000-8010 (auto-scan)"]
        );
    }

    #[test]
    fn identical_add_is_no_error_but_a_conflict_is() {
        let mut t = pasta_tables();
        apply(&mut t, &ops(&["-A", "-t", "8080:80"]), EPHEMERAL).unwrap();
        let before = t.clone();
        apply(&mut t, &ops(&["-A", "-t", "8080:80"]), EPHEMERAL).unwrap();
        assert_eq!(t, before);
        assert_eq!(
            apply(&mut t, &ops(&["-A", "-t", "8080:81"]), EPHEMERAL),
            Err("Unable to add rule TCP *:8080  =>  81: Forwarding configuration conflict: TCP *:8080  =>  81 versus TCP *:8080  =>  80".into())
        );
        assert_eq!(
            apply(&mut t, &ops(&["-D", "-t", "9090"]), EPHEMERAL),
            Err("Unable to delete rule TCP *:9090  =>  9090: Couldn't find forwarding rule to delete: TCP *:9090  =>  9090".into())
        );
    }

    #[test]
    fn option_errors_have_the_c_texts() {
        let mut t = pasta_tables();
        let err = |t: &mut Vec<Table>, w: &[&str]| apply(t, &ops(w), EPHEMERAL).unwrap_err();
        assert_eq!(err(&mut t, &["-C", "GUEST"]), "Unsupported pif name GUEST");
        assert_eq!(
            err(&mut t, &["-T", "::1/80"]),
            "Listening address not allowed for -T ::1/80"
        );
        assert!(err(&mut t, &["-t", "80-"]).starts_with("Invalid port specifier '80-': "));
        let mut passt: Vec<Table> = pasta_tables().into_iter().take(1).collect();
        passt[0].caps = Caps(0x3f & !0x10);
        assert_eq!(
            err(&mut passt, &["-U", "53"]),
            "Can't use -U, no outbound interface"
        );
        assert_eq!(
            err(&mut passt, &["-t", "auto"]),
            "'auto' port forwarding is only allowed for pasta"
        );
        apply(&mut t, &ops(&["-t", "22"]), EPHEMERAL).unwrap();
        assert_eq!(
            err(&mut t, &["-A", "-t", "none"]),
            "-t none conflicts with previous options"
        );
        // In replace mode `none` empties the table.
        apply(&mut t, &ops(&["-t", "none"]), EPHEMERAL).unwrap();
        assert!(t[0].rules.is_empty());
    }

    #[test]
    fn single_family_tables_and_no_device_binding() {
        let mut t = pasta_tables();
        t[0].caps = Caps(0x3f & !Caps::IPV6.0);
        t[1].caps = Caps(0x3f & !Caps::IFNAME.0);
        apply(&mut t, &ops(&["-t", "80", "-T", "5432"]), EPHEMERAL).unwrap();
        assert_eq!(
            listed(&t),
            [
                vec!["TCP 0.0.0.0:80  =>  80"],
                vec!["TCP 127.0.0.1:5432  =>  5432", "TCP [::1]:5432  =>  5432"]
            ]
        );
        let err = apply(&mut t, &ops(&["-A", "-t", "[::]/81"]), EPHEMERAL).unwrap_err();
        assert_eq!(
            err,
            "Unable to add rule TCP [::]:81  =>  81: IPv6 forward, but IPv6 not enabled"
        );
    }
}
