//! Replays of captured sessions (testdata/captures, see its README): the engine answers each
//! capture of our pasta exactly as recorded; an altered capture fails with a report naming
//! the frame and the field; captures of the original replay and differ only in documented
//! ways; a simulated run, saved as a capture, replays too.

use std::path::PathBuf;
use std::time::Duration;

use sim::fields;
use sim::pcapfile::{self, Record};
use sim::replay::{replay, Report, Setup};
use sim::scenario::{addr, REMOTE};
use sim::{App, Impair, Pattern, Scenario};

fn capture(name: &str) -> Vec<Record> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/captures")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    pcapfile::read(&bytes).unwrap()
}

fn replayed(records: &[Record]) -> Report {
    replay(records, &Setup::capture_lab()).unwrap()
}

const OURS: [&str; 5] = [
    "pasta-dhcp-ndp.pcap",
    "pasta-tcp-bulk.pcap",
    "pasta-tcp-inbound.pcap",
    "pasta-udp.pcap",
    "pasta-ping.pcap",
];

#[test]
fn each_capture_of_our_pasta_replays_exactly() {
    for name in OURS {
        let report = replayed(&capture(name));
        assert!(report.passed(), "{name}:\n{report}");
        assert_eq!(report.matched, report.to_guest, "{name}:\n{report}");
        assert!(report.to_guest >= 4, "{name}:\n{report}");
        assert!(report.notes.is_empty(), "{name}:\n{report}");
    }
}

/// The number of the `n`th frame (from 0) sent to the guest and decoding as `what`.
fn nth_to_guest(records: &[Record], what: &str, n: usize) -> usize {
    let ours = [2u8, 0, 0, 0, 1, 2];
    records
        .iter()
        .filter(|r| r.frame[6..12] == ours && fields::decode(&r.frame).summary.contains(what))
        .nth(n)
        .unwrap_or_else(|| panic!("no frame {what} #{n}"))
        .number
}

#[test]
fn an_altered_answer_is_reported_by_frame_and_field() {
    // The router in our DHCP offer.
    let mut recs = capture("pasta-dhcp-ndp.pcap");
    let offer = nth_to_guest(&recs, "DHCP type 2", 0);
    let f = &mut recs[offer - 1].frame;
    let at = f
        .windows(6)
        .position(|w| w == [3, 4, 198, 51, 100, 1])
        .expect("option 3 in the offer");
    f[at + 5] = 9;
    let report = replayed(&recs);
    assert!(!report.passed());
    assert_eq!(report.mismatches.len(), 1, "{report}");
    let m = &report.mismatches[0];
    assert_eq!(
        (m.number, m.field.as_str()),
        (offer, "dhcp.option 3"),
        "{report}"
    );
    assert_eq!(
        (m.recorded_value.as_str(), m.our_value.as_str()),
        ("c6336409", "c6336401")
    );
    let text = report.to_string();
    assert!(text.contains(&format!("frame {offer} ")), "{text}");
    assert!(text.contains("verdict: DIFFERENT"), "{text}");

    // The TTL of our SYN-ACK.
    let mut recs = capture("pasta-tcp-bulk.pcap");
    let data = nth_to_guest(&recs, "[S.]", 0);
    recs[data - 1].frame[14 + 8] = 63;
    let report = replayed(&recs);
    assert_eq!(report.mismatches.len(), 1, "{report}");
    let m = &report.mismatches[0];
    assert_eq!((m.number, m.field.as_str()), (data, "ip.ttl"), "{report}");

    // A recorded answer removed (the ARP reply): ours is reported as extra, where it was,
    // and the rest lines up again.
    let mut recs = capture("pasta-ping.pcap");
    let arp_reply = nth_to_guest(&recs, "ARP", 0);
    let next_answer = nth_to_guest(&recs, "echo reply", 0);
    recs.remove(arp_reply - 1);
    let report = replayed(&recs);
    assert!(!report.passed(), "{report}");
    assert!(report.mismatches.is_empty(), "{report}");
    assert_eq!(report.extra.len(), 1, "{report}");
    let where_ = format!("before frame {next_answer}: ARP");
    assert!(report.extra[0].starts_with(&where_), "{report}");

    // An answer the capture has and we don't give: the ARP reply to a frame made foreign.
    let mut recs = capture("pasta-udp.pcap");
    let arp_reply = nth_to_guest(&recs, "ARP", 0);
    let request = arp_reply - 1;
    recs[request - 1].frame[14 + 24 + 3] ^= 0x55; // the address asked about
    let report = replayed(&recs);
    let m = &report.mismatches[0];
    assert_eq!(m.number, arp_reply, "{report}");
}

/// Fields in which the original (Debian's 2023-03-09 build) is known to answer otherwise:
/// TTL/hop limit 255 and no DF, PSH on the last segment of a batch only, its MSS, finite RA
/// prefix lifetimes, a DUID-LLT and an IA_NA in a stateless DHCPv6 reply. It also leaves some
/// Router Solicitations unanswered: our Router Advertisements are then extra frames.
const KNOWN_DIFFERENCES: [&str; 9] = [
    "ip.flags_fragment",
    "ip.ttl",
    "ip6.hop_limit",
    "tcp.options",
    "tcp.flags",
    "ndp.fields",
    "ip6.payload_length",
    "dhcpv6.option 2",
    "ndp.option 3",
];

#[test]
fn captures_of_the_original_differ_only_in_known_ways() {
    for name in [
        "c-pasta-dhcp-ndp.pcap",
        "c-pasta-tcp-bulk.pcap",
        "c-pasta-tcp-inbound.pcap",
        "c-pasta-udp.pcap",
        "c-pasta-ping.pcap",
    ] {
        let report = replayed(&capture(name));
        assert!(
            report.extra.iter().all(|e| e.ends_with("type 134")),
            "{name}:\n{report}"
        );
        assert!(report.notes.is_empty(), "{name}:\n{report}");
        for m in &report.mismatches {
            assert!(
                KNOWN_DIFFERENCES.contains(&m.field.as_str()),
                "{name}: new difference in frame {}: {}\n{report}",
                m.number,
                m.field
            );
            assert!(m.ours.is_some(), "{name}:\n{report}");
        }
    }
}

#[test]
fn a_simulated_run_replays_as_a_capture() {
    // The engine's side of the link: the guest's frames as they reached the engine (after a
    // lossy, reordering link), ours as we sent them.
    let server = format!("{REMOTE}:7");
    let mut w = Scenario::new(3)
        .impair_to_engine(Impair {
            delay: Duration::from_micros(100),
            ..Impair::lossy(0.02)
        })
        .impair_to_guest(Impair::default())
        .remote_server(&server, App::echo())
        .build();
    w.guest_connect(addr(&server), App::source_pattern(Pattern(1), 50_000));
    assert!(
        w.run_until_all_done(Duration::from_secs(600)),
        "{}",
        w.diagnose()
    );
    let recs = pcapfile::read(&sim::capture::pcap(&w.transcript)).unwrap();
    let mut setup = Setup::capture_lab();
    setup.lab = sim::scenario::standard_lab();
    setup.opts.mtu = Some(1500);
    let report = replay(&recs, &setup).unwrap();
    assert!(report.passed(), "{report}");
    assert!(report.matched > 20, "{report}");
}
