//! Real OS with a real guest: qemu boots the distribution's kernel with a small busybox
//! initramfs this test builds, its virtio-net NIC connected to our passt over `-netdev stream`.
//! passt runs as an ordinary user in the lab's host namespace (see common/mod.rs). The guest
//! takes a DHCP lease (checked against the lab), an IPv6 address from passt's router
//! advertisements, pings and fetches a file from the remote namespace byte for byte over IPv4
//! and IPv6, and serves a file that the test fetches through passt's `-t` forwarding. It
//! reports on its serial console, which the test reads line by line.
//!
//! Needs root, qemu-system-x86_64, a kernel image in /boot with its modules, a static busybox,
//! cpio and gzip: without them, a loud SKIP (a failure under CI=true). KVM is used when it
//! can run an ordinary kernel (the CPU has vmx or svm), TCG otherwise; `PASST_TEST_ACCEL`
//! chooses.

mod common;
mod passt_common;

use std::time::Instant;

use common::{test_user, wait_timeout, TIMEOUT};
use passt_common::vm::{
    accel, check_short_guest, check_whole_guest, rig, GuestNet, Qemu, Rig, BOOT_TIMEOUT,
};
use passt_common::Passt;

#[test]
fn a_guest_gets_its_lease_and_reaches_both_ways_over_ipv4_and_ipv6() {
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

    // passt, as an ordinary user: it needs no privileges.
    let sock = dir.path().join("passt.socket");
    let user = test_user();
    let mut passt = Passt::start(
        &lab,
        Some(&user),
        &[
            "-f",
            "-1",
            "-s",
            sock.to_str().unwrap(),
            "-t",
            "8080:80,8081:81",
        ],
    );
    passt.wait_socket();

    let accel = accel();
    let netdev = format!(
        "stream,id=n0,server=off,addr.type=unix,addr.path={}",
        sock.display()
    );
    let net = GuestNet::Netdev(&netdev);
    let mut qemu = Qemu::boot(&lab, &[], &accel, &kernel, &initrd, &net, "");
    let boot = Instant::now();
    let init = qemu.expect("init", BOOT_TIMEOUT);
    let to_init = boot.elapsed();
    check_whole_guest(&mut qemu, &lab, &sha);

    // The guest powers off, qemu ends, and passt (-1) with it.
    assert!(
        wait_timeout(&mut qemu.child, TIMEOUT).is_some(),
        "qemu did not end after the guest powered off"
    );
    let status = passt
        .wait_exit(TIMEOUT)
        .expect("passt -1 ends with its guest");
    assert!(
        status.success(),
        "passt: {status:?}\n{}",
        passt.log.join("\n")
    );
    eprintln!(
        "passt VM test: accel {accel}, qemu start to /init {:.1} s ({init}), whole test {:.1} s",
        to_init.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn qrap_attaches_a_guest_through_an_inherited_socket() {
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
    let sock = dir.path().join("passt.socket");
    let mut passt = Passt::start(&lab, None, &["-f", "-1", "-s", sock.to_str().unwrap()]);
    passt.wait_socket();
    // qemu's socket back-end on descriptor 5, which qrap connected for it.
    let qrap = common::bin("qrap");
    let env_sock = format!("QRAP_SOCKET={}", sock.display());
    let wrapper = ["env", env_sock.as_str(), qrap.to_str().unwrap(), "5"];
    let mut qemu = Qemu::boot(
        &lab,
        &wrapper,
        &accel(),
        &kernel,
        &initrd,
        &GuestNet::Netdev("socket,id=n0,fd=5"),
        "vmt.short=1",
    );
    qemu.expect("init", BOOT_TIMEOUT);
    check_short_guest(&mut qemu, &sha, "IPv4 fetch through qrap, byte for byte");
    assert!(
        wait_timeout(&mut qemu.child, TIMEOUT).is_some(),
        "qemu did not end after the guest powered off"
    );
    let status = passt
        .wait_exit(TIMEOUT)
        .expect("passt -1 ends with its guest");
    assert!(status.success(), "passt: {status:?}");
}
