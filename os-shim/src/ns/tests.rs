//! Namespaces: login shells, exit codes, signal dispositions, inotify events, nsfs kinds.

use std::ffi::OsStr;
use std::path::Path;

use super::watch::events_concern;
use super::{login_shell, open_ns, ChildExit, NsKind, SignalDisposition};

#[test]
fn login_shell_names() {
    let (p, a) = login_shell(Some(OsStr::new("/usr/bin/zsh")));
    assert_eq!(
        (p.as_os_str(), a.as_os_str()),
        (OsStr::new("/usr/bin/zsh"), OsStr::new("-zsh"))
    );
    let (p, a) = login_shell(None);
    assert_eq!(
        (p.as_os_str(), a.as_os_str()),
        (OsStr::new("/bin/sh"), OsStr::new("-sh"))
    );
    let (p, _) = login_shell(Some(OsStr::new("")));
    assert_eq!(p, "/bin/sh");
}

#[test]
fn exit_codes() {
    assert_eq!(
        ChildExit::from_wait_status(7 << 8),
        Some(ChildExit::Exited(7))
    );
    assert_eq!(
        ChildExit::from_wait_status(15),
        Some(ChildExit::Signaled(15))
    );
    assert_eq!(ChildExit::Signaled(15).code(), 143);
    assert_eq!(ChildExit::Exited(0).code(), 0);
    // Stopped by SIGSTOP: not an exit.
    assert_eq!(ChildExit::from_wait_status((19 << 8) | 0x7f), None);
}

#[test]
fn signal_dispositions_from_proc_status() {
    // SIGTERM (15) ignored, SIGINT (2) and SIGCHLD (17) caught, SIGHUP (1) default.
    let status = "Name:\tsh\nSigBlk:\t0000000000000000\n\
                  SigIgn:\t0000000000004000\nSigCgt:\t0000000000010002\n";
    let d = |sig| SignalDisposition::from_status(status, sig);
    assert_eq!(d(libc::SIGTERM), Some(SignalDisposition::Ignored));
    assert_eq!(d(libc::SIGINT), Some(SignalDisposition::Caught));
    assert_eq!(d(libc::SIGCHLD), Some(SignalDisposition::Caught));
    assert_eq!(d(libc::SIGHUP), Some(SignalDisposition::Default));
    // Garbage: no answer, no panic.
    assert_eq!(SignalDisposition::from_status("SigIgn:\tzz\n", 1), None);
    assert_eq!(SignalDisposition::from_status(status, 0), None);
    assert_eq!(SignalDisposition::from_status(status, 99), None);
}

fn event(mask: u32, name: &[u8]) -> Vec<u8> {
    let len = if name.is_empty() {
        0
    } else {
        (name.len() + 1).div_ceil(16) * 16
    };
    let mut out = Vec::new();
    out.extend_from_slice(&1i32.to_ne_bytes());
    out.extend_from_slice(&mask.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    let mut padded = name.to_vec();
    padded.resize(len, 0);
    out.extend_from_slice(&padded);
    out
}

#[test]
fn inotify_events() {
    let other = event(libc::IN_DELETE, b"other");
    let ours = event(libc::IN_DELETE, b"pasta-ns");
    assert!(!events_concern(&other, b"pasta-ns"));
    assert!(events_concern(&[other.clone(), ours].concat(), b"pasta-ns"));
    assert!(events_concern(
        &event(libc::IN_DELETE_SELF, b""),
        b"pasta-ns"
    ));
    // A prefix of our name is another file.
    assert!(!events_concern(
        &event(libc::IN_DELETE, b"pasta"),
        b"pasta-ns"
    ));
    // Truncated buffer: no panic.
    assert!(!events_concern(&other[..20], b"other"));
}

#[test]
fn open_ns_checks_the_kind() {
    let err = open_ns(Path::new("/proc/self/ns/user"), NsKind::Net).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/proc/self/ns/user is not a network namespace (it is a user namespace)"
    );
    let err = open_ns(Path::new("/proc/self/status"), NsKind::Net).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/proc/self/status is not a network namespace"
    );
    let err = open_ns(Path::new("/nonexistent/ns"), NsKind::Net).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot open /nonexistent/ns: No such file or directory"
    );
    open_ns(Path::new("/proc/self/ns/net"), NsKind::Net).unwrap();
}
