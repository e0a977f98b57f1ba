//! Real OS: `--pcap FILE` records every frame crossing the tap, both ways, in a file pcap
//! readers (and our replay) accept. pasta runs in the lab's host namespace (see
//! common/mod.rs); the namespace pings a server on the remote (busybox's ping), so that the
//! capture holds the guest's ARP request and echo requests and our ARP reply and echo replies.

mod common;

use std::time::Duration;

use common::{pcap, require, Lab, Need, Shape, TempDir};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// (ethertype, first byte past the Ethernet header, source MAC) of each record.
fn records(file: &[u8]) -> Vec<(u16, u8, [u8; 6])> {
    pcap::frames(file)
        .into_iter()
        .map(|f| {
            let ethertype = u16::from_be_bytes([f[12], f[13]]);
            (ethertype, f[14], f[6..12].try_into().unwrap())
        })
        .collect()
}

#[test]
fn pcap_records_both_directions() {
    // busybox's ping: busybox is here for the other tests anyway (iputils-ping need not be).
    if !require(&[Need::Tun, Need::Tool("sysctl"), Need::Busybox(&["ping"])]) {
        return;
    }
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    lab.add_remote_servers();
    lab.host_sh("sysctl -qw net.ipv4.ping_group_range='0 2147483647'");
    let dir = TempDir::new("pcap");
    let file = dir.path().join("run.pcap");
    let out = pcap::run_pasta_capturing(
        &lab,
        &file,
        &[
            "busybox",
            "ping",
            "-c",
            "2",
            "-W",
            "2",
            common::addr::SERVER4,
        ],
        RUN_TIMEOUT,
    );
    assert!(out.status.success(), "{out:?}");
    let recs = records(&std::fs::read(&file).unwrap());
    let ours = pcap::OUR_MAC;
    let arp_from_guest = recs.iter().filter(|r| r.0 == 0x0806 && r.2 != ours).count();
    let arp_from_us = recs.iter().filter(|r| r.0 == 0x0806 && r.2 == ours).count();
    let ip_from_guest = recs.iter().filter(|r| r.0 == 0x0800 && r.2 != ours).count();
    let ip_from_us = recs.iter().filter(|r| r.0 == 0x0800 && r.2 == ours).count();
    assert!(arp_from_guest >= 1 && arp_from_us >= 1, "{recs:?}");
    assert!(ip_from_guest >= 2 && ip_from_us >= 2, "{recs:?}");
}
