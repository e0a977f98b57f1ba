//! `ns::spawn` for real, in namespaces it creates: exit statuses, exec failures, which
//! namespaces the command runs in, and `in_netns`. Runs as root or not (the unprivileged path
//! with `join_userns` is in ns_unpriv.rs, which needs a single-threaded process).

mod ns_common;

use std::ffi::OsString;
use std::time::Duration;

use ns_common::{is_root, readlink, require, skip_because, spawn_or_skip, temp_path, Need};
use os_shim::ns::{self, in_netns, ChildExit, NsError};

const WAIT: Duration = Duration::from_secs(10);

fn run(test: &str, command: &[&str]) -> Option<ChildExit> {
    let mut sp = spawn_or_skip(test, command, false)?;
    sp.child.release().expect("release");
    Some(
        sp.child
            .wait_timeout(WAIT)
            .unwrap()
            .expect("the command did not end in time"),
    )
}

#[test]
fn exit_status_is_passed_on() {
    let Some(exit) = run("exit_status_is_passed_on", &["sh", "-c", "exit 7"]) else {
        return;
    };
    assert_eq!(exit, ChildExit::Exited(7));
    assert_eq!(exit.code(), 7);
}

#[test]
fn death_by_signal_is_128_plus_n() {
    // The command is PID 1 of its namespace: signals it has no handler for don't reach it
    // (`kill -TERM $$` from inside would do nothing), SIGKILL from outside does.
    let Some(mut sp) = spawn_or_skip(
        "death_by_signal_is_128_plus_n",
        &["sh", "-c", "kill -TERM $$; sleep 30"],
        false,
    ) else {
        return;
    };
    sp.child.release().expect("release");
    assert_eq!(
        sp.child.wait_timeout(Duration::from_millis(300)).unwrap(),
        None
    );
    sp.child.signal(libc::SIGKILL).unwrap();
    let exit = sp.child.wait_timeout(WAIT).unwrap().expect("killed");
    assert_eq!(exit, ChildExit::Signaled(libc::SIGKILL));
    assert_eq!(exit.code(), 137);
}

#[test]
fn missing_command_is_reported() {
    let not_executable = temp_path("not-executable");
    std::fs::write(&not_executable, "exit 0\n").unwrap();
    let not_executable = not_executable.to_str().unwrap().to_owned();
    let denied = format!("cannot run {not_executable}: Permission denied");
    for (command, text) in [
        (
            "pasta-test-no-such-command",
            "cannot run pasta-test-no-such-command: No such file or directory",
        ),
        (
            "/nonexistent/pasta-test",
            "cannot run /nonexistent/pasta-test: No such file or directory",
        ),
        // Mode 0644.
        (not_executable.as_str(), denied.as_str()),
    ] {
        let Some(mut sp) = spawn_or_skip("missing_command_is_reported", &[command], false) else {
            return;
        };
        let err = sp.child.release().unwrap_err();
        assert!(matches!(err, NsError::Exec { .. }), "{err:?}");
        assert_eq!(err.to_string(), text);
        let exit = sp.child.wait_timeout(WAIT).unwrap().expect("exited");
        assert_eq!(exit, ChildExit::Exited(ns::EXEC_FAILED_CODE));
        // Releasing again is harmless.
        sp.child.release().unwrap();
    }
    let _ = std::fs::remove_file(&not_executable);
}

#[test]
fn command_runs_in_new_namespaces() {
    let out = temp_path("spawn-ns");
    let script = format!(
        "readlink /proc/self/ns/net /proc/self/ns/user /proc/self/ns/uts /proc/self/ns/mnt \
         /proc/self/ns/pid > {0}; id -u >> {0}; cat /proc/sys/net/ipv4/ping_group_range >> {0}; \
         echo $$ >> {0}; ls /proc | grep -c '^[0-9]' >> {0}",
        out.display()
    );
    let Some(mut sp) = spawn_or_skip(
        "command_runs_in_new_namespaces",
        &["sh", "-c", &script],
        false,
    ) else {
        return;
    };
    let net_ino = ns::ns_ino(&sp.ns.netns).unwrap();
    assert!(sp.ns.userns.is_some());
    assert_eq!(
        sp.ns.netns_path.to_str().unwrap(),
        format!("/proc/{}/ns/net", sp.child.pid())
    );
    sp.child.release().unwrap();
    assert_eq!(
        sp.child.wait_timeout(WAIT).unwrap(),
        Some(ChildExit::Exited(0))
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 9, "{text}");
    assert_eq!(lines[0], format!("net:[{net_ino}]"));
    assert_ne!(lines[0], readlink("/proc/self/ns/net"));
    assert_ne!(lines[1], readlink("/proc/self/ns/user"));
    assert_ne!(lines[2], readlink("/proc/self/ns/uts"));
    assert_ne!(lines[3], readlink("/proc/self/ns/mnt"));
    assert_ne!(lines[4], readlink("/proc/self/ns/pid"));
    assert_eq!(lines[5], "0", "root in its user namespace");
    assert_eq!(lines[6].split_whitespace().collect::<Vec<_>>(), ["0", "0"]);
    // PID 1 of its own PID namespace, with a /proc of its own: the shell and `ls` (and
    // `grep`, which may or may not have started yet).
    assert_eq!(lines[7], "1", "the command's PID");
    let procs: u32 = lines[8].parse().unwrap();
    assert!(
        (2..=3).contains(&procs),
        "{procs} processes in /proc: {text}"
    );
    assert!(sp.warnings.is_empty(), "{:?}", sp.warnings);
}

#[test]
fn netns_only_keeps_the_user_namespace() {
    if !require(&[Need::Root]) {
        return; // --netns-only needs root.
    }
    let out = temp_path("spawn-netns-only");
    let script = format!(
        "readlink /proc/self/ns/net /proc/self/ns/user /proc/self/ns/pid > {0}; echo $$ >> {0}",
        out.display()
    );
    let Some(mut sp) = spawn_or_skip("netns_only", &["sh", "-c", &script], true) else {
        return;
    };
    assert!(sp.ns.userns.is_none());
    sp.child.release().unwrap();
    assert_eq!(
        sp.child.wait_timeout(WAIT).unwrap(),
        Some(ChildExit::Exited(0))
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_ne!(lines[0], readlink("/proc/self/ns/net"));
    assert_eq!(lines[1], readlink("/proc/self/ns/user"));
    assert_ne!(lines[2], readlink("/proc/self/ns/pid"));
    assert_eq!(lines[3], "1", "the command's PID");
}

#[test]
fn what_the_command_leaves_running_ends_with_it() {
    // The background sleep's PID as the host sees it: the one whose command line carries
    // the marker.
    let marker = format!("{}", 4_000_000 + std::process::id() % 1_000_000);
    let script = format!("sleep {marker} & exit 3");
    let Some(mut sp) = spawn_or_skip(
        "what_the_command_leaves_running_ends_with_it",
        &["sh", "-c", &script],
        false,
    ) else {
        return;
    };
    sp.child.release().unwrap();
    assert_eq!(
        sp.child.wait_timeout(WAIT).unwrap(),
        Some(ChildExit::Exited(3))
    );
    // The kernel kills the namespace's other processes when its PID 1 ends; they are gone
    // once reaped, which takes a moment (bounded).
    let deadline = std::time::Instant::now() + WAIT;
    let still_there = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| c.split(|&b| b == 0).any(|a| a == marker.as_bytes()))
                .unwrap_or(false)
        })
    };
    while still_there() {
        assert!(
            std::time::Instant::now() < deadline,
            "the command's background process outlived it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn unreleased_child_never_runs() {
    let marker = temp_path("never");
    let script = format!("touch {}", marker.display());
    let Some(sp) = spawn_or_skip("unreleased_child_never_runs", &["sh", "-c", &script], false)
    else {
        return;
    };
    let pid = sp.child.pid();
    drop(sp);
    // Reaped by the drop: no such process any more (barring PID reuse within microseconds).
    assert!(!std::path::Path::new(&format!("/proc/{pid}/ns")).exists());
    assert!(!marker.exists());
}

#[test]
fn in_netns_runs_in_the_namespace_only() {
    let Some(sp) = spawn_or_skip("in_netns_runs_in_the_namespace_only", &["true"], false) else {
        return;
    };
    if !is_root() {
        // Unprivileged, the process must join the user namespace first: ns_unpriv.rs.
        let err = in_netns(&sp.ns.netns, || ()).unwrap_err();
        assert!(matches!(err, NsError::EnterNetns { .. }), "{err}");
        return skip_because("needs root (or join_userns)");
    }
    let own = readlink("/proc/thread-self/ns/net");
    let inside = in_netns(&sp.ns.netns, || readlink("/proc/thread-self/ns/net")).unwrap();
    assert_eq!(
        inside,
        format!("net:[{}]", ns::ns_ino(&sp.ns.netns).unwrap())
    );
    assert_ne!(inside, own);
    assert_eq!(readlink("/proc/thread-self/ns/net"), own);
    // A socket made inside stays there.
    let sock = in_netns(&sp.ns.netns, || std::net::UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    // lo is down in a fresh namespace: nothing can be sent to 127.0.0.1 there.
    let err = sock.send_to(b"x", "127.0.0.1:9").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
}

#[test]
fn panics_in_in_netns_propagate() {
    let Some(sp) = spawn_or_skip("panics_in_in_netns_propagate", &["true"], false) else {
        return;
    };
    if !require(&[Need::Root]) {
        return;
    }
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = in_netns(&sp.ns.netns, || panic!("inside"));
    }));
    assert!(caught.is_err());
}

#[test]
fn nul_bytes_are_refused() {
    let err = ns::spawn(&[OsString::from("a\0b")], false).unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
}
