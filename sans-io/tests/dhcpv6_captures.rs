//! DHCPv6 through the engine, fed with what ISC dhclient really sends: frames captured by
//! `testdata/captures/capture-ndp-dhcpv6.sh` (see the README there). REQUEST, RENEW, REBIND,
//! CONFIRM, RELEASE and DECLINE are derived here from the captured SOLICIT: same client, type
//! changed, options added or removed as RFC 8415 section 16 requires. Answers are decoded with
//! our own `Display` and snapshotted; each snapshot was checked against RFC 8415 and RFC 4704.

mod common;

use std::net::Ipv6Addr;

use common::dual_stack::{config, config_with, host, HOST_MAC};
use common::{captured, from_guest, run, with_ctx};
use proptest::prelude::*;
use sans_io::config::host::HostNet;
use sans_io::config::{Config, Mode};
use sans_io::services::dhcpv6;
use sans_io::services::Outcome;
use sans_io::wire::dhcpv6::{
    msg_type, option, Dhcpv6Error, Dhcpv6Message, ALL_DHCP_SERVERS, CLIENT_PORT, SERVER_PORT,
};
use sans_io::wire::parse::{self, ip_proto};
use sans_io::wire::{checksum, FrameQueue, MacAddr, Malformed};

// --- Captures, and messages derived from them ---

fn solicit() -> Vec<u8> {
    captured("dhcpv6-dhclient-solicit.pcap")
}

const ETH: usize = 14;
const UDP: usize = ETH + 40;
const DHCP: usize = UDP + 8;

/// A DHCPv6 message as type, transaction id and options, for rewriting.
struct Msg {
    kind: u8,
    xid: [u8; 3],
    options: Vec<(u16, Vec<u8>)>,
}

impl Msg {
    fn of(frame: &[u8]) -> Msg {
        let p = &frame[DHCP..];
        let parsed = Dhcpv6Message::parse(p).unwrap();
        Msg {
            kind: p[0],
            xid: [p[1], p[2], p[3]],
            options: parsed
                .options
                .iter()
                .map(|o| (o.code, o.data.to_vec()))
                .collect(),
        }
    }

    fn kind(mut self, kind: u8) -> Msg {
        self.kind = kind;
        self
    }

    fn with(mut self, code: u16, data: &[u8]) -> Msg {
        self.options.push((code, data.to_vec()));
        self
    }

    fn without(mut self, code: u16) -> Msg {
        self.options.retain(|(c, _)| *c != code);
        self
    }

    fn with_our_server_id(self) -> Msg {
        self.with(option::SERVER_ID, &dhcpv6::server_duid(HOST_MAC))
    }

    /// The IA_NA's contents replaced: same IAID, T1, T2, then IA Address options for `addrs`.
    fn ia_addrs(mut self, addrs: &[&str]) -> Msg {
        for (code, data) in &mut self.options {
            if *code == option::IA_NA {
                data.truncate(12);
                for a in addrs {
                    data.extend_from_slice(&[0, 5, 0, 24]);
                    data.extend_from_slice(&a.parse::<Ipv6Addr>().unwrap().octets());
                    data.extend_from_slice(&[0, 0, 0x0e, 0x10, 0, 0, 0x1c, 0x20]);
                }
            }
        }
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = vec![self.kind];
        b.extend_from_slice(&self.xid);
        for (code, data) in &self.options {
            b.extend_from_slice(&code.to_be_bytes());
            b.extend_from_slice(&(data.len() as u16).to_be_bytes());
            b.extend_from_slice(data);
        }
        b
    }

    /// `frame` (the captured one) carrying this message instead, lengths and checksum fixed.
    fn frame(&self, frame: &[u8]) -> Vec<u8> {
        with_payload(frame, &self.bytes())
    }
}

fn with_payload(frame: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut f = frame[..DHCP].to_vec();
    f.extend_from_slice(payload);
    let udp_len = (8 + payload.len()) as u16;
    f[ETH + 4..ETH + 6].copy_from_slice(&udp_len.to_be_bytes());
    f[UDP + 4..UDP + 6].copy_from_slice(&udp_len.to_be_bytes());
    f[UDP + 6..UDP + 8].copy_from_slice(&[0, 0]);
    let src: [u8; 16] = f[ETH + 8..ETH + 24].try_into().unwrap();
    let dst: [u8; 16] = f[ETH + 24..ETH + 40].try_into().unwrap();
    let sum = checksum::transport(
        Ipv6Addr::from(src).into(),
        Ipv6Addr::from(dst).into(),
        ip_proto::UDP,
        &f[UDP..],
    );
    f[UDP + 6..UDP + 8].copy_from_slice(&sum.to_be_bytes());
    f
}

// --- Running and decoding ---

/// An answer frame, decoded layer by layer, checksums verified.
fn describe(frame: &[u8]) -> String {
    let eth = parse::ethernet(frame).unwrap();
    let ip = parse::ipv6(eth.payload).unwrap();
    assert_eq!(ip.next_header, ip_proto::UDP);
    let sum = checksum::transport(ip.src.into(), ip.dst.into(), ip_proto::UDP, ip.payload);
    assert_eq!(sum, 0, "UDP checksum of our answer");
    let udp = parse::udp(ip.payload).unwrap();
    let msg = Dhcpv6Message::parse(udp.payload).unwrap();
    format!(
        "ethernet {} > {}\nipv6 {} > {}, hop limit {}\nudp {} > {}, {} octets, checksum ok\n{msg}",
        eth.src,
        eth.dst,
        ip.src,
        ip.dst,
        ip.hop_limit,
        udp.src_port,
        udp.dst_port,
        udp.payload.len()
    )
}

/// The single answer to `frame`, decoded.
fn answer(config: Config, frame: &[u8]) -> String {
    let (engine, out) = run(config, &[frame]);
    assert_eq!(out.len(), 1, "{:?}", engine.counters());
    assert_eq!(engine.counters().dhcpv6_answered, 1);
    describe(out.get(0).unwrap())
}

/// Nothing comes back, and the frame is counted as `ignored` or `malformed`.
fn no_answer(config: Config, frame: &[u8]) -> (u64, u64, Option<Malformed>) {
    let (engine, out) = run(config, &[frame]);
    assert!(out.is_empty());
    let c = engine.counters();
    (c.ignored, c.malformed, c.last_malformed)
}

// --- The captures ---

#[test]
fn captures_are_what_we_think() {
    let all: Vec<String> = [
        "dhcpv6-dhclient-solicit.pcap",
        "dhcpv6-dhclient-solicit-rapid.pcap",
        "dhcpv6-dhclient-inforeq.pcap",
    ]
    .iter()
    .map(|n| {
        let f = captured(n);
        let eth = parse::ethernet(&f).unwrap();
        let ip = parse::ipv6(eth.payload).unwrap();
        let sum = checksum::transport(ip.src.into(), ip.dst.into(), ip_proto::UDP, ip.payload);
        assert_eq!(sum, 0, "{n}: UDP checksum");
        let udp = parse::udp(ip.payload).unwrap();
        let msg = Dhcpv6Message::parse(udp.payload).unwrap();
        format!("{n}: {} > {}\n{msg}", ip.src, ip.dst)
    })
    .collect();
    insta::assert_snapshot!(all.join("\n"));
}

// --- SOLICIT ---

#[test]
fn solicit_gets_advertise() {
    insta::assert_snapshot!(answer(config(Mode::Passt), &solicit()));
}

#[test]
fn solicit_in_pasta_mode_gets_no_dns() {
    let text = answer(config(Mode::Pasta), &solicit());
    assert!(text.contains("ADVERTISE (2)"));
    assert!(!text.contains("DNS recursive name servers (23):"), "{text}");
    assert!(!text.contains("domain search list (24):"), "{text}");
    let text = answer(
        config_with(Mode::Pasta, &host(), |o| {
            o.dhcp_dns = Some(true);
            o.dhcp_search = Some(true);
        }),
        &solicit(),
    );
    assert!(text.contains("DNS recursive name servers (23): 2001:db8::53, 2001:db8:1::53"));
    assert!(text.contains("domain search list (24): example.org., lab.example.org."));
}

#[test]
fn solicit_with_rapid_commit_gets_reply() {
    // dhclient asked for Rapid Commit and sent a Client FQDN option: we have a name for it.
    let config = config_with(Mode::Passt, &host(), |o| {
        o.fqdn = Some("vm.example.org".into())
    });
    insta::assert_snapshot!(answer(
        config,
        &captured("dhcpv6-dhclient-solicit-rapid.pcap")
    ));
}

#[test]
fn client_fqdn_only_to_clients_that_send_one() {
    // RFC 4704 section 6: the plain SOLICIT has no Client FQDN, so no FQDN comes back.
    let config = config_with(Mode::Passt, &host(), |o| o.hostname = Some("vm".into()));
    assert!(!answer(config.clone(), &solicit()).contains("client FQDN"));
    // With only a hostname, the name is partial (RFC 4704 section 4.2), no override: the
    // client's S bit was clear.
    let text = answer(config, &captured("dhcpv6-dhclient-solicit-rapid.pcap"));
    assert!(
        text.ends_with("client FQDN (39): flags 0x4 (N), name vm"),
        "{text}"
    );
    // A client asking for S gets O: we overrode it.
    let rapid = Msg::of(&captured("dhcpv6-dhclient-solicit-rapid.pcap"))
        .without(option::CLIENT_FQDN)
        .with(option::CLIENT_FQDN, &[0x01]);
    let config = config_with(Mode::Passt, &host(), |o| {
        o.fqdn = Some("vm.example.org.".into())
    });
    let text = answer(config, &rapid.frame(&solicit()));
    assert!(text.ends_with("client FQDN (39): flags 0x6 (N O), name vm.example.org."));
}

#[test]
fn solicit_with_two_ias_gets_the_address_once() {
    let ia2 = [0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0];
    let f = Msg::of(&solicit())
        .with(option::IA_NA, &ia2)
        .frame(&solicit());
    let text = answer(config(Mode::Pasta), &f);
    assert_eq!(
        text.matches("IA address (5): 2001:db8::2,").count(),
        1,
        "{text}"
    );
    assert!(text.contains(
        "IA_NA (3): IAID 0x00000009, T1 0 s, T2 0 s\n    status code (13): NoAddrsAvail (2)"
    ));
}

#[test]
fn solicit_without_ia_gets_no_addrs_avail() {
    let f = Msg::of(&solicit()).without(option::IA_NA).frame(&solicit());
    let text = answer(config(Mode::Pasta), &f);
    assert!(text.contains("ADVERTISE (2)"));
    assert!(text.contains("\n  status code (13): NoAddrsAvail (2)"));
    assert!(!text.contains("IA_NA"));
}

#[test]
fn local_mode_has_no_addresses() {
    let local = config_with(Mode::Passt, &HostNet::default(), |_| {});
    assert!(local.local_mode);
    let mut text = answer(local.clone(), &solicit());
    text.push_str("\n---\n");
    let request = Msg::of(&solicit())
        .kind(msg_type::REQUEST)
        .with(option::SERVER_ID, &dhcpv6::server_duid(local.our_mac));
    text.push_str(&answer(local, &request.frame(&solicit())));
    insta::assert_snapshot!(text);
}

// --- REQUEST, RENEW, REBIND ---

#[test]
fn request_gets_reply() {
    let f = Msg::of(&solicit())
        .kind(msg_type::REQUEST)
        .with_our_server_id()
        .ia_addrs(&["2001:db8::2"])
        .frame(&solicit());
    insta::assert_snapshot!(answer(config(Mode::Passt), &f));
}

#[test]
fn request_for_a_foreign_address_gets_ours_and_the_foreign_one_revoked() {
    let f = Msg::of(&solicit())
        .kind(msg_type::REQUEST)
        .with_our_server_id()
        .ia_addrs(&["2001:db8:ffff::99"])
        .frame(&solicit());
    insta::assert_snapshot!(answer(config(Mode::Pasta), &f));
}

#[test]
fn renew_and_rebind_get_reply() {
    let renew = Msg::of(&solicit())
        .kind(msg_type::RENEW)
        .with_our_server_id()
        .ia_addrs(&["2001:db8::2"]);
    let rebind = Msg::of(&solicit())
        .kind(msg_type::REBIND)
        .ia_addrs(&["2001:db8::2"]);
    for m in [renew, rebind] {
        let text = answer(config(Mode::Pasta), &m.frame(&solicit()));
        assert!(
            text.contains("\nREPLY (7), transaction id 0x7786d2\n"),
            "{text}"
        );
        assert!(text.contains(
            "IA address (5): 2001:db8::2, preferred lifetime infinite, valid lifetime infinite"
        ));
        assert!(!text.contains("lifetime 0 s"));
    }
}

#[test]
fn server_identifier_rules() {
    let other_server = [0, 3, 0, 1, 2, 0, 0, 0, 0, 9];
    let base = || Msg::of(&solicit()).ia_addrs(&["2001:db8::2"]);
    // Another server's REQUEST is not for us.
    let f = base()
        .kind(msg_type::REQUEST)
        .with(option::SERVER_ID, &other_server)
        .frame(&solicit());
    assert_eq!(no_answer(config(Mode::Pasta), &f), (1, 0, None));
    // A REQUEST must name a server, a SOLICIT must not (RFC 8415 16.4, 16.2).
    let f = base().kind(msg_type::REQUEST).frame(&solicit());
    let missing = Some(Malformed::Dhcpv6(Dhcpv6Error::ServerIdMissing));
    assert_eq!(no_answer(config(Mode::Pasta), &f), (0, 1, missing));
    let f = base().with_our_server_id().frame(&solicit());
    let unexpected = Some(Malformed::Dhcpv6(Dhcpv6Error::UnexpectedServerId));
    assert_eq!(no_answer(config(Mode::Pasta), &f), (0, 1, unexpected));
    // Every message but INFORMATION-REQUEST needs a client identifier.
    let f = base().without(option::CLIENT_ID).frame(&solicit());
    let no_client = Some(Malformed::Dhcpv6(Dhcpv6Error::ClientIdMissing));
    assert_eq!(no_answer(config(Mode::Pasta), &f), (0, 1, no_client));
}

// --- CONFIRM ---

#[test]
fn confirm_with_a_foreign_address_gets_not_on_link() {
    let f = Msg::of(&solicit())
        .kind(msg_type::CONFIRM)
        .ia_addrs(&["2001:db8::2", "2001:db8:ffff::99"])
        .frame(&solicit());
    insta::assert_snapshot!(answer(config(Mode::Passt), &f));
}

#[test]
fn confirm_with_our_address_gets_success() {
    let f = Msg::of(&solicit())
        .kind(msg_type::CONFIRM)
        .ia_addrs(&["2001:db8::2"])
        .frame(&solicit());
    let text = answer(config(Mode::Passt), &f);
    assert!(
        text.ends_with("\n  status code (13): Success (0) \"on link\""),
        "{text}"
    );
    assert!(!text.contains("IA_NA"));
}

#[test]
fn confirm_without_addresses_gets_nothing() {
    // RFC 8415 18.3.3: the server MUST NOT send a Reply.
    let f = Msg::of(&solicit())
        .kind(msg_type::CONFIRM)
        .frame(&solicit());
    assert_eq!(no_answer(config(Mode::Passt), &f), (1, 0, None));
}

// --- RELEASE, DECLINE ---

#[test]
fn release_and_decline_get_success() {
    for kind in [msg_type::RELEASE, msg_type::DECLINE] {
        let f = Msg::of(&solicit())
            .kind(kind)
            .with_our_server_id()
            .ia_addrs(&["2001:db8::2"])
            .frame(&solicit());
        let text = answer(config(Mode::Passt), &f);
        assert!(text.contains("\nREPLY (7), "));
        assert!(
            text.ends_with("\n  status code (13): Success (0) \"\""),
            "{text}"
        );
    }
}

// --- INFORMATION-REQUEST ---

#[test]
fn information_request_gets_dns_only() {
    insta::assert_snapshot!(answer(
        config(Mode::Passt),
        &captured("dhcpv6-dhclient-inforeq.pcap")
    ));
}

#[test]
fn information_request_with_an_ia_is_dropped() {
    let inforeq = captured("dhcpv6-dhclient-inforeq.pcap");
    let f = Msg::of(&inforeq)
        .with(option::IA_NA, &[0; 12])
        .frame(&inforeq);
    let why = Some(Malformed::Dhcpv6(Dhcpv6Error::InformationRequestWithIa));
    assert_eq!(no_answer(config(Mode::Passt), &f), (0, 1, why));
}

// --- Not for us ---

#[test]
fn server_messages_and_other_destinations_are_ignored() {
    // Our own answer, sent back to us.
    let (_, out) = run(config(Mode::Passt), &[&solicit()]);
    let advertise = out.get(0).unwrap().to_vec();
    let echoed = with_payload(&solicit(), &advertise[DHCP..]);
    assert_eq!(no_answer(config(Mode::Passt), &echoed), (1, 0, None));
    // A SOLICIT to some other unicast address on port 547.
    let mut elsewhere = solicit();
    elsewhere[ETH + 24..ETH + 40]
        .copy_from_slice(&"2001:db8::547".parse::<Ipv6Addr>().unwrap().octets());
    let elsewhere = with_payload(&elsewhere, &solicit()[DHCP..]);
    assert_eq!(no_answer(config(Mode::Passt), &elsewhere), (1, 0, None));
    // ... but to our own address, it's for us.
    let mut to_us = solicit();
    to_us[ETH + 24..ETH + 40].copy_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
    let to_us = with_payload(&to_us, &solicit()[DHCP..]);
    answer(config(Mode::Passt), &to_us);
}

#[test]
fn nothing_without_ipv6() {
    let mut config = config(Mode::Passt);
    config.ip6 = None;
    let f = solicit();
    let (outcome, out) = handle_payload(&config, &f[DHCP..]);
    assert_eq!(outcome, Outcome::Ignored);
    assert!(out.is_empty());
}

// --- No panics, whatever comes in ---

/// Feeds a DHCPv6 payload to `dhcpv6::handle` directly, as dhclient would address it.
fn handle_payload(config: &Config, payload: &[u8]) -> (Outcome, FrameQueue) {
    let eth = from_guest(MacAddr([0x33, 0x33, 0, 1, 0, 2]), parse::ethertype::IPV6);
    let ip = parse::Ipv6 {
        src: "fe80::5054:ff:fe12:3456".parse().unwrap(),
        dst: ALL_DHCP_SERVERS,
        next_header: ip_proto::UDP,
        hop_limit: 1,
        fragmented: false,
        header_len: parse::IPV6_HEADER_LEN,
        payload: &[],
    };
    let udp = parse::Udp {
        src_port: CLIENT_PORT,
        dst_port: SERVER_PORT,
        payload,
    };
    let (outcome, out) = with_ctx(config, |mut ctx| dhcpv6::handle(&mut ctx, &eth, &ip, &udp));
    if let Ok(msg) = Dhcpv6Message::parse(payload) {
        let _ = msg.to_string();
    }
    for frame in out.iter() {
        let _ = describe(frame);
    }
    (outcome, out)
}

/// Every message we derive, for truncation and mutation.
fn samples() -> Vec<Vec<u8>> {
    let s = solicit();
    let mut v: Vec<Vec<u8>> = [
        "dhcpv6-dhclient-solicit.pcap",
        "dhcpv6-dhclient-solicit-rapid.pcap",
        "dhcpv6-dhclient-inforeq.pcap",
    ]
    .iter()
    .map(|n| captured(n)[DHCP..].to_vec())
    .collect();
    for kind in [msg_type::REQUEST, msg_type::RENEW, msg_type::RELEASE] {
        let m = Msg::of(&s).kind(kind).with_our_server_id();
        v.push(m.ia_addrs(&["2001:db8::2", "2001:db8::3"]).bytes());
    }
    let confirm = Msg::of(&s).kind(msg_type::CONFIRM);
    v.push(confirm.ia_addrs(&["2001:db8::2"]).bytes());
    v
}

#[test]
fn truncations_never_panic() {
    let config = config(Mode::Passt);
    for sample in samples() {
        for len in 0..=sample.len() {
            let (outcome, _) = handle_payload(&config, &sample[..len]);
            // Cut inside an option, a message is malformed; between options it may stand.
            if len < 4 {
                assert!(
                    matches!(outcome, Outcome::Malformed(_)),
                    "{len}: {outcome:?}"
                );
            }
        }
        // And whole frames, cut, through the engine.
        let frame = with_payload(&solicit(), &sample);
        for len in 0..=frame.len() {
            run(config.clone(), &[&frame[..len]]);
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (outcome, out) = handle_payload(&config(Mode::Passt), &bytes);
        prop_assert_eq!(outcome == Outcome::Answered, out.len() == 1);
    }

    #[test]
    fn arbitrary_messages_never_panic(
        kind in 1u8..=13,
        options in proptest::collection::vec(
            (0u16..=40, proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
    ) {
        let mut b = vec![kind, 1, 2, 3];
        for (code, data) in options {
            b.extend_from_slice(&code.to_be_bytes());
            b.extend_from_slice(&(data.len() as u16).to_be_bytes());
            b.extend_from_slice(&data);
        }
        let (outcome, out) = handle_payload(&config(Mode::Passt), &b);
        prop_assert_eq!(outcome == Outcome::Answered, out.len() == 1);
    }

    #[test]
    fn mutated_samples_never_panic(
        which in 0usize..7,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut sample = samples().swap_remove(which);
        for (at, value) in flips {
            let i = at % sample.len();
            sample[i] = value;
        }
        let _ = handle_payload(&config(Mode::Passt), &sample);
        let local = config_with(Mode::Passt, &HostNet::default(), |_| {});
        let _ = handle_payload(&local, &sample);
    }
}
