//! Real OS: passt and pasta isolate themselves, always: the identity they run as, no
//! capabilities (pasta's namespace thread aside), no new privileges, a seccomp filter, an
//! empty root directory, read from /proc/PID while they serve traffic. Podman's shapes
//! (pasta attached to a namespace, root and rootless) are checked in `podman_like.rs`.

mod common;
mod passt_common;

use std::process::Stdio;
use std::time::Duration;

use common::{
    addr, assert_isolated, bin, random_file, require, show, test_user, wait_for_file, wait_timeout,
    Lab, Need, Shape, TempDir, TestUser, FILE_SERVER_PY,
};
use passt_common::{dhcp_answer, dhcp_discover, v4, Client, Passt};

const WAIT: Duration = Duration::from_secs(20);
const NOBODY: u32 = 65534;
/// pasta's namespace thread may keep CAP_NET_BIND_SERVICE; the C pasta keeps that and
/// CAP_SYS_ADMIN in its own user namespace: nothing beyond, in any thread shown.
const PASTA_CAPS: u64 = (1 << 10) | (1 << 21);
/// A root-started pasta keeps CAP_KILL, in its command's user namespace only, to pass
/// signals on to the command.
const CAP_KILL: u64 = 1 << 5;

fn socket_dir(tag: &str) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new(tag);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// passt as root (becomes nobody), as an ordinary user, and as root with `--runas` a
/// numeric UID:GID (which needn't exist): answers a guest's ARP and DHCP, isolated.
#[test]
fn passt_runs_isolated_as_root_as_a_user_and_with_runas() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    let user = test_user();
    let cases: [(Option<&TestUser>, &[&str], u32); 3] = [
        (None, &[], NOBODY),
        (Some(&user), &[], user.uid),
        (None, &["--runas", "12345:12346"], 12345),
    ];
    for (who, extra, uid) in cases {
        let dir = socket_dir("iso-passt");
        let path = dir.path().join("passt.socket");
        let mut args = vec!["-f", "-s", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut passt = Passt::start(&lab, who, &args);
        passt.wait_socket();
        let mut client = Client::connect(&path);
        client.arp(v4(addr::HOST4), v4(addr::REMOTE4));
        client.send(&dhcp_discover(0x5eed));
        let offer = client.recv_matching(|f| dhcp_answer(f, 0x5eed));
        assert_eq!(offer.yiaddr, v4(addr::HOST4));
        assert_isolated(passt.child.id(), uid, 0);
        if !extra.is_empty() {
            let status = common::isolation_of(passt.child.id()).status;
            assert_eq!(status.gid, Some(12346), "{status}");
        }
    }
}

/// An unknown user or group is one line and exit status 1, before anything is set up.
#[test]
fn an_unknown_runas_user_is_refused_at_once() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    for (program, spec) in [
        ("passt", "no-such-user-for-passt"),
        ("pasta", "root:no-such-group-for-passt"),
        ("passt", "0"),
    ] {
        let out = lab.run(None, &bin(program), &["-f", "--runas", spec]);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{}", show(&out));
        assert!(
            stderr.starts_with(&format!("{program}: invalid --runas {spec}: ")),
            "{}",
            show(&out)
        );
    }
}

/// pasta spawning a command, rootless (as an ordinary user, in the user namespace it made)
/// and as root (becomes nobody): isolated while the command waits, and the command's
/// download afterwards is byte-exact.
#[test]
fn pasta_runs_isolated_rootless_and_as_root() {
    if !require(&[
        Need::Tun,
        Need::TunForOthers,
        Need::Tool("python3"),
        Need::Tool("curl"),
        Need::Tool("sha256sum"),
    ]) {
        return;
    }
    let Some(mut lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    lab.add_remote_servers();
    // Written by the command, as the test user too.
    let dir = socket_dir("iso-pasta");
    let sha = random_file(&dir.path().join("blob"), 1 << 20);
    std::fs::write(dir.path().join("server.py"), FILE_SERVER_PY).unwrap();
    let ready = dir.path().join("server-ready");
    let mut server = lab.remote_command(
        "python3",
        &[
            dir.path().join("server.py").to_str().unwrap(),
            dir.path().to_str().unwrap(),
            "8000",
            ready.to_str().unwrap(),
        ],
    );
    server.stdout(Stdio::null());
    lab.spawn(server);
    assert!(wait_for_file(&ready, WAIT), "the file server didn't start");

    let user = test_user();
    for (who, uid, caps, tag) in [
        (Some(&user), user.uid, PASTA_CAPS, "rootless"),
        (None, NOBODY, CAP_KILL, "root"),
    ] {
        let started = dir.path().join(format!("started-{tag}"));
        let go = dir.path().join(format!("go-{tag}"));
        // A first fetch shows pasta in its main loop, isolated by then (the command starts
        // while pasta still sets up); the second, after the checks, that it still serves.
        let url = format!("http://{}:8000/blob", addr::SERVER4);
        let script = format!(
            "curl -sS --max-time 15 -o /dev/null {url} && touch {started}; i=0; \
             while [ ! -e {go} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; \
             curl -sS --max-time 15 {url} | sha256sum",
            started = started.display(),
            go = go.display(),
        );
        let mut cmd = lab.host_command(
            who,
            &bin("pasta"),
            &["--config-net", "--", "sh", "-c", &script],
        );
        let mut pasta = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pasta");
        assert!(
            wait_for_file(&started, WAIT),
            "{tag}: the command didn't start"
        );
        assert_isolated(pasta.id(), uid, caps);
        std::fs::write(&go, "").unwrap();
        let status = wait_timeout(&mut pasta, WAIT);
        if status.is_none() {
            let _ = pasta.kill();
        }
        let out = pasta.wait_with_output().unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        assert!(
            got.starts_with(&sha),
            "{tag}: download through isolated pasta: {}",
            show(&out)
        );
    }
}

/// The log file, opened before the filesystem goes away, keeps being written and kept under
/// its size (rewritten in place) while passt runs isolated: guests coming and going, a few
/// lines each, through the smallest cap accepted, many times over.
#[test]
fn the_log_file_stays_under_its_size_in_the_sandbox() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    let dir = socket_dir("iso-log");
    let path = dir.path().join("passt.socket");
    let log = dir.path().join("passt.log");
    let cap = 40960u64;
    let cap_arg = cap.to_string();
    let _passt = Passt::start(
        &lab,
        None,
        &[
            "-f",
            "-s",
            path.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "--log-size",
            &cap_arg,
        ],
    );
    // Its messages go to the log file: a connection accepted says it listens (bounded).
    let deadline = std::time::Instant::now() + WAIT;
    while std::os::unix::net::UnixStream::connect(&path).is_err() {
        assert!(std::time::Instant::now() < deadline, "passt didn't listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each guest that comes and goes is a couple of lines (about 70 bytes): 1,500 of them
    // are two and a half times the cap. The last one answers, so passt is still there.
    for _ in 0..1500 {
        let c = Client::connect(&path);
        c.stream.shutdown(std::net::Shutdown::Both).unwrap();
    }
    let mut client = Client::connect(&path);
    client.arp(v4(addr::HOST4), v4(addr::REMOTE4));
    let text = std::fs::read_to_string(&log).expect("the log file");
    assert!(
        text.len() as u64 <= cap,
        "log of {} bytes, cap {cap}",
        text.len()
    );
    assert!(text.starts_with("passt "), "header kept: {text}");
    // Full: it was cut to make room (about a third at a time), not left to stop growing.
    assert!(text.len() as u64 > cap / 2, "{} bytes: {text}", text.len());
    assert!(text.contains("the guest disconnected"), "{text}");
}

/// The soft descriptor limit of a process, from /proc/PID/limits.
fn soft_nofile(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Started with a soft descriptor limit of 256 under a hard one of 4096 (a shell's usual
/// 1024 under a large hard limit, scaled down), passt and pasta raise theirs to the hard
/// limit, as the C original does; the command pasta runs keeps the one it was given.
#[test]
fn the_descriptor_limit_is_raised_and_the_command_keeps_its_own() {
    use std::os::unix::process::CommandExt;
    if !require(&[Need::Tun, Need::TunForOthers]) {
        return;
    }
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    let limited = |mut cmd: std::process::Command| {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs before exec.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 4096,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        cmd
    };
    // The limit is raised with the rest of start-up: wait for it, bounded.
    let raised = |pid: u32| {
        let deadline = std::time::Instant::now() + WAIT;
        while soft_nofile(pid) != Some(4096) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        soft_nofile(pid)
    };

    let dir = socket_dir("nofile");
    let path = dir.path().join("passt.socket");
    let args = ["-f", "-s", path.to_str().unwrap()];
    let mut passt = Passt::start_with(limited(lab.host_command(None, &bin("passt"), &args)));
    passt.wait_socket();
    assert_eq!(raised(passt.child.id()), Some(4096), "passt");

    let user = test_user();
    for (who, tag) in [(Some(&user), "rootless"), (None, "root")] {
        let seen = dir.path().join(format!("command-{tag}"));
        let go = dir.path().join(format!("go-{tag}"));
        let script = format!(
            "ulimit -n > {seen}.tmp && mv {seen}.tmp {seen}; i=0; \
             while [ ! -e {go} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done",
            seen = seen.display(),
            go = go.display(),
        );
        let cmd = lab.host_command(
            who,
            &bin("pasta"),
            &["--config-net", "--", "sh", "-c", &script],
        );
        let mut pasta = limited(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pasta");
        assert!(
            wait_for_file(&seen, WAIT),
            "{tag}: the command didn't start"
        );
        let pasta_limit = raised(pasta.id());
        std::fs::write(&go, "").unwrap();
        let status = wait_timeout(&mut pasta, WAIT);
        if status.is_none() {
            let _ = pasta.kill();
        }
        let out = pasta.wait_with_output().unwrap();
        assert_eq!(pasta_limit, Some(4096), "{tag}: {}", show(&out));
        let command_limit = std::fs::read_to_string(&seen).unwrap();
        assert_eq!(command_limit.trim(), "256", "{tag}: the command's own");
        assert!(out.status.success(), "{tag}: {}", show(&out));
    }
}
