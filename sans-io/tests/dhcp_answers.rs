//! DHCP answers to real client requests captured in `testdata/captures/` (see its README):
//! each frame goes through the engine, and the answers are decoded with
//! [`DhcpMessage`]'s `Display` and compared with reviewed snapshots.

mod common;

use std::net::Ipv4Addr;

use common::{
    captured, derive_config, from_guest, host_net, run_answers, with_ctx, GATEWAY, GUEST_ADDR,
};
use proptest::prelude::*;
use sans_io::config::host::{scope, HostNet};
use sans_io::config::{Config, Family, ListChoice, Mode, NetOptions};
use sans_io::services::dhcp;
use sans_io::services::Outcome;
use sans_io::wire::build::{self, Route};
use sans_io::wire::dhcp::{
    msg_type, opt, DhcpError, DhcpMessage, DhcpOption, BOOTREPLY, CLIENT_PORT, OPTIONS_OFFSET,
    SERVER_PORT,
};
use sans_io::wire::parse::{self, ip_proto};
use sans_io::wire::{checksum, FrameQueue, MacAddr, Malformed};

const HOST_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);

/// A host with one interface, eth0, holding 192.0.2.2/24 with its default route via
/// 192.0.2.1: the guest gets that address, and we answer as the gateway.
fn host() -> HostNet {
    host_net(
        HOST_MAC,
        &[("192.0.2.2", 24, scope::UNIVERSE)],
        &["192.0.2.1"],
    )
}

/// passt's defaults on [`host()`], IPv4 only, with two DNS servers (and an IPv6 one, which
/// DHCP must not hand out) and one search domain; `tweak` changes the options first.
fn config_with(tweak: impl FnOnce(&mut NetOptions)) -> Config {
    let mut opts = NetOptions::new(Mode::Passt);
    opts.family = Family::V4Only;
    opts.dns = ListChoice::List(vec![
        "192.0.2.53".parse().unwrap(),
        "2001:db8::53".parse().unwrap(),
        "198.51.100.53".parse().unwrap(),
    ]);
    opts.search = ListChoice::List(vec!["example.com".to_owned()]);
    tweak(&mut opts);
    let config = derive_config(&opts, &host());
    assert!(config.services.dhcp, "DHCP is on in the test configuration");
    config
}

fn config() -> Config {
    config_with(|_| {})
}

/// The one answer to `frame`, checked for valid checksums and ports.
fn answer(config: Config, frame: &[u8]) -> Vec<u8> {
    let (answers, counters) = run_answers(config, &[frame]);
    assert_eq!(
        answers.len(),
        1,
        "expected one answer, counters {counters:?}"
    );
    assert_eq!(counters.dhcp_answered, 1);
    assert_eq!(counters.malformed, 0);
    answers.into_iter().next().unwrap()
}

fn reply_of(frame: &[u8]) -> DhcpMessage {
    let eth = parse::ethernet(frame).unwrap();
    let ip = parse::ipv4(eth.payload).unwrap();
    let udp = parse::udp(ip.payload).unwrap();
    DhcpMessage::parse(udp.payload).unwrap()
}

/// Every layer of an answer, for snapshots.
fn describe(frame: &[u8]) -> String {
    let eth = parse::ethernet(frame).unwrap();
    let ip = parse::ipv4(eth.payload).expect("a valid IPv4 header and checksum");
    assert_eq!(ip.protocol, ip_proto::UDP);
    assert_eq!(
        checksum::transport(ip.src.into(), ip.dst.into(), ip_proto::UDP, ip.payload),
        0,
        "UDP checksum"
    );
    let udp = parse::udp(ip.payload).unwrap();
    let msg = DhcpMessage::parse(udp.payload).unwrap();
    format!(
        "ethernet: {} -> {}, type {:#06x}\nipv4: {} -> {}, ttl {}\nudp: {} -> {}, \
         {} bytes of BOOTP\n{msg}",
        eth.src,
        eth.dst,
        eth.ethertype,
        ip.src,
        ip.dst,
        ip.ttl,
        udp.src_port,
        udp.dst_port,
        udp.payload.len()
    )
}

/// The DHCP message of a captured or crafted frame.
fn request_of(frame: &[u8]) -> (parse::Ethernet<'_>, Vec<u8>) {
    let eth = parse::ethernet(frame).unwrap();
    let ip = parse::ipv4(eth.payload).unwrap();
    let udp = parse::udp(ip.payload).unwrap();
    (eth, udp.payload.to_vec())
}

/// `frame` with its DHCP message changed by `edit`, which sees the parsed message; the
/// options are written back in order (edits replace or append), with END and the padding a
/// client adds.
fn craft(frame: &[u8], edit: impl FnOnce(&mut DhcpMessage)) -> Vec<u8> {
    let (eth, payload) = request_of(frame);
    let mut msg = DhcpMessage::parse(&payload).unwrap();
    edit(&mut msg);
    let mut out = payload[..OPTIONS_OFFSET].to_vec();
    out[1] = msg.htype;
    out[12..16].copy_from_slice(&msg.ciaddr.octets());
    out[10..12].copy_from_slice(&msg.flags.to_be_bytes());
    for o in &msg.options {
        for chunk in o.data.chunks(255) {
            out.push(o.code);
            out.push(chunk.len() as u8);
            out.extend_from_slice(chunk);
        }
        if o.data.is_empty() {
            out.extend_from_slice(&[o.code, 0]);
        }
    }
    out.push(opt::END);
    out.resize(out.len().max(300), 0);
    frame_of(&eth, &out)
}

/// A frame from the client to the server with the addresses of `eth` and the IPv4 header
/// in its payload, carrying `payload` as its DHCP message.
fn frame_of(eth: &parse::Ethernet, payload: &[u8]) -> Vec<u8> {
    let ip = parse::ipv4(eth.payload).unwrap();
    let mut q = FrameQueue::new();
    let route = Route {
        src_mac: eth.src,
        dst_mac: eth.dst,
        src: ip.src.into(),
        dst: ip.dst.into(),
    };
    build::udp_frame(&mut q, route, CLIENT_PORT, SERVER_PORT, payload);
    q.get(0).unwrap().to_vec()
}

fn set_option(msg: &mut DhcpMessage, code: u8, data: &[u8]) {
    match msg.options.iter_mut().find(|o| o.code == code) {
        Some(o) => o.data = data.to_vec(),
        None => msg.options.push(DhcpOption {
            code,
            data: data.to_vec(),
        }),
    }
}

fn remove_option(msg: &mut DhcpMessage, code: u8) {
    msg.options.retain(|o| o.code != code);
}

fn has_option(msg: &DhcpMessage, code: u8) -> bool {
    msg.option(code).is_some()
}

#[test]
fn udhcpc_discover_gets_an_offer() {
    let frame = answer(config(), &captured("dhcp-udhcpc-discover.pcap"));
    insta::assert_snapshot!(describe(&frame));
}

#[test]
fn dhclient_discover_gets_an_offer_with_names() {
    let config = config_with(|o| {
        o.hostname = Some("vm".to_owned());
        o.fqdn = Some("vm.example.com".to_owned());
    });
    let frame = answer(config, &captured("dhcp-dhclient-discover.pcap"));
    insta::assert_snapshot!(describe(&frame));
}

#[test]
fn dhclient_init_reboot_request_gets_an_ack() {
    let frame = answer(config(), &captured("dhcp-dhclient-request.pcap"));
    insta::assert_snapshot!(describe(&frame));
}

#[test]
fn request_for_a_foreign_address_gets_a_broadcast_nak() {
    // The same client coming from another network, asking to keep its old address.
    let request = craft(&captured("dhcp-dhclient-request.pcap"), |m| {
        set_option(m, opt::REQUESTED_ADDR, &[198, 51, 100, 7]);
    });
    let frame = answer(config(), &request);
    insta::assert_snapshot!(describe(&frame));
}

#[test]
fn renewal_from_a_foreign_ciaddr_gets_a_nak() {
    // RENEWING: no option 50, the client's address in ciaddr.
    let request = craft(&captured("dhcp-dhclient-request.pcap"), |m| {
        remove_option(m, opt::REQUESTED_ADDR);
        m.ciaddr = Ipv4Addr::new(198, 51, 100, 7);
    });
    let frame = answer(config(), &request);
    assert_eq!(reply_of(&frame).message_type(), Ok(Some(msg_type::NAK)));
    // Broadcast, not to the ciaddr the client can't keep (RFC 2131 section 4.1).
    let ip = parse::ipv4(parse::ethernet(&frame).unwrap().payload).unwrap();
    assert_eq!(ip.dst, Ipv4Addr::BROADCAST);
    // And the right one is ACKed, unicast to it.
    let request = craft(&request, |m| m.ciaddr = GUEST_ADDR);
    let frame = answer(config(), &request);
    let reply = reply_of(&frame);
    assert_eq!(reply.message_type(), Ok(Some(msg_type::ACK)));
    assert_eq!(reply.ciaddr, GUEST_ADDR);
    let ip = parse::ipv4(parse::ethernet(&frame).unwrap().payload).unwrap();
    assert_eq!(ip.dst, GUEST_ADDR);
}

#[test]
fn request_selecting_another_server_is_ignored() {
    let request = craft(&captured("dhcp-dhclient-request.pcap"), |m| {
        set_option(m, opt::SERVER_ID, &[192, 0, 2, 254]);
    });
    let (answers, counters) = run_answers(config(), &[&request]);
    assert!(answers.is_empty());
    assert_eq!((counters.ignored, counters.dhcp_answered), (1, 0));
    // Naming us is fine.
    let request = craft(&request, |m| {
        set_option(m, opt::SERVER_ID, &GATEWAY.octets())
    });
    let reply = reply_of(&answer(config(), &request));
    assert_eq!(reply.message_type(), Ok(Some(msg_type::ACK)));
}

#[test]
fn rapid_commit_discover_gets_an_ack() {
    let discover = craft(&captured("dhcp-udhcpc-discover.pcap"), |m| {
        set_option(m, opt::RAPID_COMMIT, &[]);
    });
    let frame = answer(config(), &discover);
    insta::assert_snapshot!(describe(&frame));
}

#[test]
fn inform_gets_an_ack_without_lease() {
    // A client configured by hand asks for parameters only, from its address.
    let inform = craft(&captured("dhcp-dhclient-discover.pcap"), |m| {
        set_option(m, opt::MESSAGE_TYPE, &[msg_type::INFORM]);
        m.ciaddr = GUEST_ADDR;
    });
    let frame = answer(config(), &inform);
    insta::assert_snapshot!(describe(&frame));
}

#[test]
fn bootp_request_gets_a_bootp_reply() {
    let bootp = craft(&captured("dhcp-udhcpc-discover.pcap"), |m| {
        m.options.clear();
    });
    let frame = answer(config(), &bootp);
    insta::assert_snapshot!(describe(&frame));
}

#[test]
fn release_and_decline_are_ignored() {
    for t in [msg_type::RELEASE, msg_type::DECLINE, msg_type::OFFER, 42] {
        let msg = craft(&captured("dhcp-dhclient-request.pcap"), |m| {
            set_option(m, opt::MESSAGE_TYPE, &[t]);
        });
        let (answers, counters) = run_answers(config(), &[&msg]);
        assert!(answers.is_empty(), "type {t}");
        assert_eq!(counters.ignored, 1, "type {t}");
    }
}

#[test]
fn broadcast_flag_gets_a_broadcast_answer() {
    let discover = craft(&captured("dhcp-udhcpc-discover.pcap"), |m| m.flags = 0x8000);
    let frame = answer(config(), &discover);
    let eth = parse::ethernet(&frame).unwrap();
    let ip = parse::ipv4(eth.payload).unwrap();
    assert_eq!(eth.dst, MacAddr::BROADCAST);
    assert_eq!(ip.dst, Ipv4Addr::BROADCAST);
    let reply = reply_of(&frame);
    assert_eq!(reply.flags, 0x8000);
    assert_eq!(reply.yiaddr, GUEST_ADDR);
}

#[test]
fn dns_servers_only_with_dhcp_dns() {
    let discover = captured("dhcp-dhclient-discover.pcap");
    let on = reply_of(&answer(config(), &discover));
    assert_eq!(
        on.option(opt::DNS),
        Some(&[192, 0, 2, 53, 198, 51, 100, 53][..])
    );
    let off = reply_of(&answer(
        config_with(|o| o.dhcp_dns = Some(false)),
        &discover,
    ));
    assert!(!has_option(&off, opt::DNS));
    // Nothing else changes.
    let mut without = on.clone();
    remove_option(&mut without, opt::DNS);
    assert_eq!(without.options, off.options);
}

#[test]
fn search_list_with_a_shared_suffix_is_compressed() {
    let config = config_with(|o| {
        o.search = ListChoice::List(vec![
            "eng.example.com".to_owned(),
            "ops.example.com".to_owned(),
            "example.org".to_owned(),
        ]);
    });
    let frame = answer(config, &captured("dhcp-dhclient-discover.pcap"));
    let reply = reply_of(&frame);
    assert_eq!(
        reply.option(opt::DOMAIN_SEARCH).unwrap(),
        b"\x03eng\x07example\x03com\x00\x03ops\xc0\x04\x07example\x03org\x00"
    );
    insta::assert_snapshot!(describe(&frame));
    // And none with --no-dhcp-search.
    let config = config_with(|o| o.dhcp_search = Some(false));
    let reply = reply_of(&answer(config, &captured("dhcp-dhclient-discover.pcap")));
    assert!(!has_option(&reply, opt::DOMAIN_SEARCH));
}

#[test]
fn long_search_list_is_split_or_left_out() {
    // 12 names of 40-odd bytes: about 500 bytes of option 119 even compressed.
    let names: Vec<String> = (0..12)
        .map(|i| format!("team-{i:02}-with-a-long-name.department.example.com"))
        .collect();
    let config = config_with(|o| o.search = ListChoice::List(names.clone()));
    let discover = captured("dhcp-udhcpc-discover.pcap");

    // udhcpc accepts 576-byte datagrams: the list doesn't fit, the rest is there.
    let frame = answer(config.clone(), &discover);
    let small = reply_of(&frame);
    assert!(!has_option(&small, opt::DOMAIN_SEARCH));
    assert!(has_option(&small, opt::SUBNET_MASK) && has_option(&small, opt::SERVER_ID));
    assert!(frame.len() - 14 <= 576);

    // Told it takes 1500 bytes, it gets the list in two instances of option 119 (RFC 3396).
    let big = craft(&discover, |m| {
        set_option(m, opt::MAX_MESSAGE_SIZE, &1500u16.to_be_bytes())
    });
    let frame = answer(config, &big);
    assert!(frame.len() - 14 <= 1500);
    let (_, payload) = request_of(&frame);
    let instances = count_instances(&payload[OPTIONS_OFFSET..], opt::DOMAIN_SEARCH);
    assert_eq!(instances, 2);
    let reply = reply_of(&frame);
    let text = reply.to_string();
    let line = text.lines().find(|l| l.starts_with("option 119")).unwrap();
    assert_eq!(
        line,
        format!("option 119 (domain search): {}", names.join(", "))
    );
}

/// How many times option `code` appears in raw options.
fn count_instances(mut options: &[u8], code: u8) -> usize {
    let mut n = 0;
    while let [c, rest @ ..] = options {
        match *c {
            opt::PAD => options = rest,
            opt::END => break,
            c => {
                let len = usize::from(rest[0]);
                n += usize::from(c == code);
                options = &rest[1 + len..];
            }
        }
    }
    n
}

#[test]
fn gateway_off_subnet_gets_classless_routes() {
    let config = config_with(|o| o.gateway4 = Some(Ipv4Addr::new(198, 51, 100, 1)));
    let frame = answer(config, &captured("dhcp-dhclient-discover.pcap"));
    insta::assert_snapshot!(describe(&frame));
    // On the subnet: none.
    let reply = reply_of(&answer(
        config_with(|_| {}),
        &captured("dhcp-dhclient-discover.pcap"),
    ));
    assert!(!has_option(&reply, opt::CLASSLESS_ROUTES));
}

#[test]
fn no_mtu_no_option_26() {
    let discover = captured("dhcp-dhclient-discover.pcap");
    let with = reply_of(&answer(config_with(|o| o.mtu = Some(1400)), &discover));
    assert_eq!(
        with.option(opt::INTERFACE_MTU),
        Some(&1400u16.to_be_bytes()[..])
    );
    let without = reply_of(&answer(config_with(|o| o.mtu = Some(0)), &discover));
    assert_eq!(without.option(opt::INTERFACE_MTU), None);
}

#[test]
fn replies_are_at_least_300_bytes() {
    // The smallest reply we send: a NAK.
    let request = craft(&captured("dhcp-dhclient-request.pcap"), |m| {
        set_option(m, opt::REQUESTED_ADDR, &[198, 51, 100, 7]);
    });
    let (_, payload) = request_of(&answer(config(), &request));
    assert_eq!(payload.len(), 300);
}

#[test]
fn malformed_requests_are_counted() {
    let discover = captured("dhcp-udhcpc-discover.pcap");
    // An option whose length runs past the end of the message.
    let bad = craft(&discover, |m| m.options.clear());
    let (eth, mut payload) = request_of(&bad);
    payload.truncate(OPTIONS_OFFSET);
    payload.extend_from_slice(&[
        opt::MESSAGE_TYPE,
        1,
        msg_type::DISCOVER,
        opt::HOST_NAME,
        9,
        b'x',
    ]);
    let bad_length = frame_of(&eth, &payload);
    // And a message type of two bytes.
    let bad_type = craft(&discover, |m| set_option(m, opt::MESSAGE_TYPE, &[1, 1]));
    let (answers, counters) = run_answers(config(), &[&bad_length, &bad_type, &discover]);
    assert_eq!(answers.len(), 1);
    assert_eq!(counters.frames, 3);
    assert_eq!(counters.malformed, 2);
    assert_eq!(counters.dhcp_answered, 1);
    assert_eq!(
        counters.last_malformed,
        Some(Malformed::Dhcp(DhcpError::MessageTypeLength))
    );
}

#[test]
fn non_ethernet_hardware_is_ignored() {
    let msg = craft(&captured("dhcp-udhcpc-discover.pcap"), |m| m.htype = 6);
    let (answers, counters) = run_answers(config(), &[&msg]);
    assert!(answers.is_empty());
    assert_eq!(counters.ignored, 1);
}

/// Calls [`dhcp::handle`] directly with `payload` as the UDP payload.
fn handle_payload(config: &Config, payload: &[u8]) -> (Outcome, FrameQueue) {
    let eth = from_guest(MacAddr::BROADCAST, parse::ethertype::IPV4);
    let ip = parse::Ipv4 {
        src: Ipv4Addr::UNSPECIFIED,
        dst: Ipv4Addr::BROADCAST,
        protocol: ip_proto::UDP,
        ttl: 64,
        fragmented: false,
        header: &[],
        payload: &[],
    };
    let udp = parse::Udp {
        src_port: CLIENT_PORT,
        dst_port: SERVER_PORT,
        payload,
    };
    with_ctx(config, |mut ctx| dhcp::handle(&mut ctx, &eth, &ip, &udp))
}

/// An answer must be a well-formed reply to the request's transaction.
fn check_answer(out: &FrameQueue, xid: u32) {
    assert_eq!(out.len(), 1);
    let reply = reply_of(out.get(0).unwrap());
    assert_eq!(reply.op, BOOTREPLY);
    assert_eq!(reply.xid, xid);
}

#[test]
fn every_truncation_is_malformed_or_answered() {
    let config = config();
    let (_, discover) = request_of(&captured("dhcp-udhcpc-discover.pcap"));
    let xid = DhcpMessage::parse(&discover).unwrap().xid;
    for len in 0..=discover.len() {
        let (outcome, out) = handle_payload(&config, &discover[..len]);
        match outcome {
            Outcome::Answered => check_answer(&out, xid),
            Outcome::Malformed(why) => {
                assert!(matches!(why, Malformed::Dhcp(_)), "{why}");
                assert!(out.is_empty());
            }
            Outcome::Ignored => panic!("truncated at {len}: ignored"),
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (outcome, out) = handle_payload(&config(), &payload);
        if outcome == Outcome::Answered {
            prop_assert_eq!(out.len(), 1);
        } else {
            prop_assert!(out.is_empty());
        }
    }

    #[test]
    fn arbitrary_options_never_panic(options in proptest::collection::vec(any::<u8>(), 0..400)) {
        // A valid header and cookie, then anything: the options parser gets the whole test.
        let (_, discover) = request_of(&captured("dhcp-udhcpc-discover.pcap"));
        let mut payload = discover[..OPTIONS_OFFSET].to_vec();
        payload.extend_from_slice(&options);
        let (outcome, out) = handle_payload(&config(), &payload);
        if outcome == Outcome::Answered {
            check_answer(&out, DhcpMessage::parse(&payload).unwrap().xid);
        }
    }

    #[test]
    fn mutated_discovers_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let (_, mut discover) = request_of(&captured("dhcp-dhclient-discover.pcap"));
        for (at, byte) in edits {
            let i = at.index(discover.len());
            discover[i] = byte;
        }
        discover.truncate(cut.index(discover.len() + 1));
        let (outcome, out) = handle_payload(&config(), &discover);
        match outcome {
            Outcome::Answered => check_answer(&out, DhcpMessage::parse(&discover).unwrap().xid),
            Outcome::Malformed(why) => prop_assert!(matches!(why, Malformed::Dhcp(_)), "{}", why),
            Outcome::Ignored => prop_assert!(out.is_empty()),
        }
        // Whatever we said, saying it again parses the same (Display never panics either).
        if let Ok(m) = DhcpMessage::parse(&discover) {
            let _ = m.to_string();
        }
    }
}

#[test]
fn no_ipv4_no_answer() {
    let mut config = config();
    config.ip4 = None;
    let (_, discover) = request_of(&captured("dhcp-udhcpc-discover.pcap"));
    let (outcome, out) = handle_payload(&config, &discover);
    assert_eq!(outcome, Outcome::Ignored);
    assert!(out.is_empty());
}
