//! Real OS: pasta gives a namespace a working link — tap, addresses and routes with
//! `--config-net`, DHCP for a client inside, attaching to existing namespaces, exit status.
//! Everything runs inside the lab's "host" namespace (see common/mod.rs).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    addr, bin, require, run_timeout, test_user, wait_timeout, Lab, Need, Shape, TestUser, TIMEOUT,
};

/// /dev/net/tun, usable by the user pasta runs as (`None`: root).
fn tun_usable_by(user: Option<&TestUser>) -> bool {
    match user {
        None => require(&[Need::Tun]),
        Some(_) => require(&[Need::Tun, Need::TunForOthers]),
    }
}

fn stdout_of(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `pasta --config-net -- CMD` as root and as an ordinary user.
fn in_pasta(lab: &Lab, user: Option<&TestUser>, extra: &[&str], cmd: &[&str]) -> String {
    let mut args = vec!["--config-net"];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(cmd);
    stdout_of(&lab.run(user, &bin("pasta"), &args))
}

#[test]
fn config_net_copies_addresses_and_routes() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    let user = test_user();
    for who in [None, Some(&user)] {
        if !tun_usable_by(who) {
            continue;
        }
        let addrs = in_pasta(&lab, who, &[], &["ip", "-j", "addr", "show", "veth0"]);
        assert!(
            addrs.contains(&format!(
                "\"local\":\"{}\",\"prefixlen\":{}",
                addr::HOST4,
                addr::PREFIX4
            )),
            "{addrs}"
        );
        assert!(
            addrs.contains(&format!(
                "\"local\":\"{}\",\"prefixlen\":{}",
                addr::HOST6,
                addr::PREFIX6
            )),
            "{addrs}"
        );
        assert!(addrs.contains("\"mtu\":65520"), "{addrs}");
        assert!(
            addrs.contains("\"operstate\":\"UNKNOWN\"") || addrs.contains("UP"),
            "{addrs}"
        );

        let routes = in_pasta(&lab, who, &[], &["ip", "-j", "route", "show", "default"]);
        assert!(
            routes.contains(&format!("\"gateway\":\"{}\"", addr::REMOTE4)),
            "{routes}"
        );
        // Only the copied default route: router advertisements are not accepted on top. The
        // kernel solicits one within a second of link up (router_solicitation_delay), and our
        // answer is immediate, so two seconds is ample for a second route to show up if it
        // were going to.
        let routes6 = in_pasta(
            &lab,
            who,
            &[],
            &["sh", "-c", "sleep 2; ip -j -6 route show default"],
        );
        assert!(
            routes6.contains(&format!("\"gateway\":\"{}\"", addr::REMOTE6)),
            "{routes6}"
        );
        assert_eq!(
            routes6.matches("\"dst\":\"default\"").count(),
            1,
            "{routes6}"
        );

        // Loopback is up in the namespace.
        let lo = in_pasta(&lab, who, &[], &["ip", "-j", "link", "show", "lo"]);
        assert!(lo.contains("\"UP\""), "{lo}");
    }
}

#[test]
fn options_shape_the_namespace() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    if !tun_usable_by(None) {
        return;
    }
    let out = in_pasta(
        &lab,
        None,
        &[
            "-I",
            "eth9",
            "--ns-mac-addr",
            "02:99:00:00:00:01",
            "-m",
            "9000",
            "-a",
            "10.0.2.100",
            "-n",
            "24",
            "-g",
            "10.0.2.2",
            "-4",
        ],
        &["sh", "-c", "ip -j addr show eth9; ip -j route show default"],
    );
    for expected in [
        "\"ifname\":\"eth9\"",
        "\"address\":\"02:99:00:00:00:01\"",
        "\"mtu\":9000",
        "\"local\":\"10.0.2.100\",\"prefixlen\":24",
        "\"gateway\":\"10.0.2.2\"",
    ] {
        assert!(out.contains(expected), "{expected} not in {out}");
    }
    assert!(!out.contains(addr::HOST6), "IPv6 should be off: {out}");
}

/// A udhcpc script that prints what the lease said.
const UDHCPC_SCRIPT: &str = "#!/bin/sh\n[ \"$1\" = bound ] && echo \"lease ip=$ip subnet=$subnet router=$router dns=$dns mtu=$mtu search=$search\"\nexit 0\n";

#[test]
fn udhcpc_gets_the_expected_lease() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    if !tun_usable_by(None) {
        return;
    }
    if !require(&[Need::Busybox(&["udhcpc"])]) {
        return;
    }
    let dir = tempdir();
    let script = dir.join("udhcpc.sh");
    std::fs::write(&script, UDHCPC_SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sh = format!(
        "ip link set veth0 up && busybox udhcpc -i veth0 -f -q -n -t 5 -T 1 -s {}",
        script.display()
    );
    // pasta without --config-net: the client configures the link itself.
    let out = stdout_of(&lab.run(
        None,
        &bin("pasta"),
        &["--dhcp-dns", "--dhcp-search", "--", "sh", "-c", &sh],
    ));
    let line = out
        .lines()
        .find(|l| l.starts_with("lease "))
        .unwrap_or_else(|| panic!("no lease in {out}"));
    assert_eq!(
        line,
        format!(
            "lease ip={} subnet=255.255.255.0 router={} dns={} mtu=65520 search={}",
            addr::HOST4,
            addr::REMOTE4,
            addr::DNS4,
            addr::SEARCH
        )
    );
}

#[test]
fn exit_status_is_the_commands() {
    let Some(mut lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    if !tun_usable_by(None) {
        return;
    }
    let out = lab.run(None, &bin("pasta"), &["--", "sh", "-c", "exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The command is PID 1 of its namespace: its own SIGTERM, unhandled, doesn't end it.
    let out = lab.run(
        None,
        &bin("pasta"),
        &["--", "sh", "-c", "kill -TERM $$; exit 4"],
    );
    assert_eq!(out.status.code(), Some(4));
    // A SIGTERM to pasta that the command doesn't handle ends both, as it would have ended
    // the command: 128 + 15.
    let dir = tempdir();
    let started = dir.join("started");
    let script = format!("touch {}; sleep 60", started.display());
    let mut cmd = lab.host_command(None, &bin("pasta"), &["--", "sh", "-c", &script]);
    cmd.stdout(std::process::Stdio::null());
    let pid = lab.spawn_graceful(cmd);
    assert!(common::wait_for_file(&started, TIMEOUT));
    let status = lab.stop(pid).expect("pasta stopped");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(128 + 15));
    let out = lab.run(None, &bin("pasta"), &["--", "/nonexistent/command"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/command"));
}

/// Starts pasta as a daemon (`--config-net -q -P pidfile` then `target`) in the lab's host
/// namespace; returns the PID it wrote.
fn start_daemon(lab: &Lab, pidfile: &Path, target: &[&str]) -> i32 {
    let mut args = vec!["--config-net", "-q", "-P", pidfile.to_str().unwrap()];
    args.extend_from_slice(target);
    let out = lab.run(None, &bin("pasta"), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_pid(pidfile)
}

#[test]
fn attaches_to_a_pid_and_to_a_named_netns_and_quits_when_it_goes() {
    let Some(mut lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    if !require(&[Need::Tun, Need::Tool("unshare"), Need::Tool("nsenter")]) {
        return;
    }
    let dir = tempdir();

    // A process in its own network namespace, started from the lab host namespace.
    let holder = lab.spawn({
        let mut c = Command::new("ip");
        c.args([
            "netns", "exec", &lab.host, "unshare", "--net", "sleep", "60",
        ]);
        c
    });
    let sleeper = wait_for_child_of(holder, Duration::from_secs(5));
    let pidfile = dir.join("pasta-pid.pid");
    let daemon = start_daemon(&lab, &pidfile, &[&sleeper.to_string()]);
    let links = run_timeout(
        Command::new("nsenter").args([
            "-t",
            &sleeper.to_string(),
            "-n",
            "ip",
            "-j",
            "addr",
            "show",
            "veth0",
        ]),
        TIMEOUT,
    );
    let links = stdout_of(&links);
    assert!(links.contains(addr::HOST4), "{links}");
    kill(daemon);

    // A named namespace: pasta quits by itself when it is deleted.
    let name = format!("{}-target", lab.host);
    let created = run_timeout(Command::new("ip").args(["netns", "add", &name]), TIMEOUT);
    assert!(created.status.success());
    let pidfile = dir.join("pasta-netns.pid");
    let daemon = start_daemon(&lab, &pidfile, &["--netns", &name]);
    let addrs = stdout_of(&run_timeout(
        Command::new("ip").args(["-n", &name, "-j", "addr", "show", "veth0"]),
        TIMEOUT,
    ));
    assert!(addrs.contains(addr::HOST4), "{addrs}");
    let _ = run_timeout(Command::new("ip").args(["netns", "del", &name]), TIMEOUT);
    assert!(
        wait_gone(daemon, Duration::from_secs(5)),
        "pasta {daemon} still running after its netns was deleted"
    );
    assert_eq!(read_pid(&pidfile), daemon, "the PID file outlives pasta");
}

/// `pasta -P FILE -- true`: the command ends, so does pasta, and FILE still names pasta's PID.
#[test]
fn pid_file_is_left_after_the_command_ends() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    if !tun_usable_by(None) {
        return;
    }
    let dir = tempdir();
    let pidfile = dir.join("pasta.pid");
    let mut pasta = lab
        .host_command(
            None,
            &bin("pasta"),
            &[
                "--config-net",
                "-q",
                "-P",
                pidfile.to_str().unwrap(),
                "--",
                "true",
            ],
        )
        .spawn()
        .expect("start pasta");
    // `ip netns exec` execs pasta in place: the child's PID is pasta's.
    let status = wait_timeout(&mut pasta, TIMEOUT).unwrap_or_else(|| {
        let _ = pasta.kill();
        let _ = pasta.wait();
        panic!("pasta -- true did not end");
    });
    assert!(status.success(), "{status:?}");
    assert_eq!(
        read_pid(&pidfile),
        pasta.id() as i32,
        "the PID file outlives pasta"
    );
    assert!(!alive(pasta.id() as i32));
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("passt-ns-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn read_pid(path: &Path) -> i32 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("bad pid file {text:?}"))
}

fn alive(pid: i32) -> bool {
    // Signal 0 checks existence; a zombie still "exists" until reaped, so look at its state.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

fn kill(pid: i32) {
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(
        wait_gone(pid, Duration::from_secs(5)),
        "{pid} did not stop on SIGTERM"
    );
}

fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The PID of `ip netns exec ... unshare --net sleep`'s final process: `ip` and `unshare`
/// exec in place, so it is the spawned PID itself once `sleep` runs.
fn wait_for_child_of(pid: u32, timeout: Duration) -> u32 {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "sleep" {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("process {pid} never became sleep");
}
