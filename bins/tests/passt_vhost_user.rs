//! Real OS with a real guest, through vhost-user: qemu's virtio-net device is served by our
//! `passt --vhost-user`, the guest's memory shared with it (a memfd), the sandbox on as always.
//! The guest (see passt_common/vm.rs) takes its DHCP lease and SLAAC address, pings, fetches
//! 1 MiB byte for byte over IPv4 and IPv6 and serves a file through `-t`; then a second qemu
//! connects to the same passt and works again (the device state starts afresh); with `-1`,
//! passt ends when its front-end goes away, after a guest at a 1500-byte MTU that fetched 1 MiB
//! and uploaded 1 MiB of its own: the link's summary must say the fetch went into the guest's
//! buffers and the upload left from its memory, each without a copy of ours, and that TCP
//! segments larger than its MTU went both ways (segmentation offload).
//!
//! Needs what passt_vm.rs needs, and qemu 8 or later (Debian 12's 7.2 crashes with a
//! vhost-user netdev under TCG; scripts/install-test-deps installs it from bookworm-backports).

mod common;
mod passt_common;

use std::time::Instant;

use common::{addr, require, test_user, wait_for_file, wait_timeout, Need, TIMEOUT};
use passt_common::vm::{
    accel, check_short_guest, check_whole_guest, qemu_major, rig, upload_sink, GuestNet, Qemu, Rig,
    BOOT_TIMEOUT,
};
use passt_common::Passt;

/// The oldest qemu whose vhost-user netdev works under TCG here.
const QEMU_MIN_MAJOR: u32 = 8;

fn new_enough_qemu() -> bool {
    let major = qemu_major();
    require(&[Need::Other(
        format!(
            "qemu {QEMU_MIN_MAJOR} or later for vhost-user (found {}; bookworm-backports)",
            major.map_or("none".to_owned(), |m| m.to_string())
        ),
        major.is_some_and(|m| m >= QEMU_MIN_MAJOR),
    )])
}

#[test]
fn a_vhost_user_guest_works_and_a_restarted_qemu_works_again() {
    if !new_enough_qemu() {
        return;
    }
    let Some(Rig {
        lab,
        dir,
        kernel,
        initrd,
        sha,
    }) = rig()
    else {
        return;
    };
    let started = Instant::now();
    // As an ordinary user, without -1: it serves one front-end after the other.
    let sock = dir.path().join("passt-vu.socket");
    let user = test_user();
    let mut passt = Passt::start(
        &lab,
        Some(&user),
        &[
            "-f",
            "--vhost-user",
            "-s",
            sock.to_str().unwrap(),
            "-t",
            "8080:80,8081:81",
        ],
    );
    passt.wait_socket();
    let accel = accel();
    let net = GuestNet::VhostUser(&sock);

    let mut qemu = Qemu::boot(&lab, &[], &accel, &kernel, &initrd, &net, "");
    let init = qemu.expect("init", BOOT_TIMEOUT);
    check_whole_guest(&mut qemu, &lab, &sha);
    assert!(
        wait_timeout(&mut qemu.child, TIMEOUT).is_some(),
        "qemu did not end after the guest powered off"
    );
    drop(qemu);

    // qemu again, against the same passt: a new front-end, the rings from scratch.
    let mut again = Qemu::boot(&lab, &[], &accel, &kernel, &initrd, &net, "vmt.short=1");
    again.expect("init", BOOT_TIMEOUT);
    check_short_guest(&mut again, &sha, "IPv4 fetch after qemu restarted");
    assert!(
        wait_timeout(&mut again.child, TIMEOUT).is_some(),
        "the second qemu did not end after the guest powered off"
    );
    assert!(
        passt.child.try_wait().unwrap().is_none(),
        "passt without -1 ended with a front-end:\n{}",
        passt.log.join("\n")
    );
    eprintln!(
        "passt vhost-user test: accel {accel}, first /init: {init}, whole test {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn one_off_vhost_user_ends_with_its_front_end() {
    if !new_enough_qemu() {
        return;
    }
    let Some(mut rig) = rig() else {
        return;
    };
    let uploaded = upload_sink(&mut rig);
    let Rig {
        lab,
        dir,
        kernel,
        initrd,
        sha,
    } = rig;
    let sock = dir.path().join("passt-vu.socket");
    let mut passt = Passt::start(
        &lab,
        None,
        // -d: the link's summary at the end says how the data went. At a 1500-byte MTU,
        // segments larger than that are the offload's.
        &[
            "-f",
            "-d",
            "-1",
            "--vhost-user",
            "--mtu",
            "1500",
            "-s",
            sock.to_str().unwrap(),
        ],
    );
    passt.wait_socket();
    let net = GuestNet::VhostUser(&sock);
    let mut qemu = Qemu::boot(
        &lab,
        &[],
        &accel(),
        &kernel,
        &initrd,
        &net,
        "vmt.short=1 vmt.upload=1",
    );
    qemu.expect("init", BOOT_TIMEOUT);
    // The guest fetches 1 MiB, then sends 1 MiB of its own to the remote.
    let lease = qemu.expect("lease", BOOT_TIMEOUT);
    assert!(lease.contains(addr::HOST4), "lease: {lease}");
    assert!(lease.contains("mtu=1500"), "lease: {lease}");
    qemu.check("fetch4", &sha, "IPv4 fetch, one-off");
    let up_sha = qemu.expect("upsha", BOOT_TIMEOUT);
    assert_eq!(
        qemu.expect("uploaded", BOOT_TIMEOUT),
        "",
        "the guest's upload"
    );
    assert!(
        wait_for_file(&uploaded, TIMEOUT),
        "the remote never finished the upload"
    );
    assert_eq!(
        std::fs::read_to_string(&uploaded).unwrap(),
        up_sha,
        "the remote got other bytes than the guest sent"
    );
    assert_eq!(qemu.expect("end", BOOT_TIMEOUT), "short");
    assert!(
        wait_timeout(&mut qemu.child, TIMEOUT).is_some(),
        "qemu did not end after the guest powered off"
    );
    let status = passt
        .wait_exit(TIMEOUT)
        .expect("passt -1 ends with its front-end");
    assert!(
        status.success(),
        "passt: {status:?}\n{}",
        passt.log.join("\n")
    );
    // The fetch's data went straight into the guest's buffers (its kernel took unfinished
    // checksums): the link lent them, the kernel peeked into them. Only when the guest is
    // slow to give buffers back (a loaded machine, qemu without KVM) does the link find the
    // ring down to the chains it keeps for copied frames, and a few frames go copied; each
    // such time copies one peek of frames at most (64 segments).
    let summary = passt.wait_line("peeked straight into its buffers", TIMEOUT);
    let lent = zero_copy_bytes(&summary);
    let no_room = count_before(&summary, " times its buffers had no room");
    eprintln!("passt vhost-user one-off: {summary}");
    let fetched = 1u64 << 20;
    assert!(
        lent >= fetched || (lent >= fetched / 2 && lent + no_room * 64 * 1460 >= fetched),
        "{lent} bytes went to the guest without a copy, not the 1 MiB fetched, and its \
         buffers had no room only {no_room} times: {summary}"
    );
    // Most of it as frames of several segments each (GUEST_TSO4).
    let large = count_before(&summary, " of several segments;");
    assert!(
        large > 0 && lent / large > 1500,
        "{large} frames of several segments for {lent} bytes: {summary}"
    );
    // And the upload's payload went to the remote from the guest's memory, less the part of
    // each frame whose headers we copy.
    let sent = in_place_bytes(&summary);
    assert!(
        sent >= 1 << 19,
        "only {sent} bytes of the 1 MiB upload were sent from the guest's memory: {summary}"
    );
    // The guest's kernel left its segments to the device to cut (HOST_TSO4): one frame
    // carries many.
    let tso = count_before(&summary, " segments of up to 64 KiB from it");
    assert!(
        tso > 0 && sent / tso > 1500,
        "{tso} segments from the guest larger than its MTU, {sent} bytes in place: {summary}"
    );
}

/// The number the link summary gives just before `what`.
fn count_before(summary: &str, what: &str) -> u64 {
    summary
        .split(what)
        .next()
        .and_then(|before| before.rsplit(' ').next())
        .and_then(|n| n.trim_start_matches('(').parse().ok())
        .unwrap_or_else(|| panic!("no count before '{what}' in: {summary}"))
}

/// The bytes the link summary says went to the host from the guest's memory.
fn in_place_bytes(summary: &str) -> u64 {
    let before = summary
        .split(" bytes) sent from its memory")
        .next()
        .unwrap_or_default();
    before
        .rsplit('(')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no in-place byte count in: {summary}"))
}

/// The bytes the link summary says went into the guest's buffers without a copy of ours.
fn zero_copy_bytes(summary: &str) -> u64 {
    let before = summary
        .split(" bytes) peeked straight")
        .next()
        .unwrap_or_default();
    before
        .rsplit('(')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in: {summary}"))
}
