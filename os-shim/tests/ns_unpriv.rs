//! pasta's whole namespace flow in a process of its own, as an ordinary user (`nobody`, via
//! setpriv) and as root: spawn, join_userns (which needs a single-threaded process, so not a
//! test thread), the tap, --config-net, release, exit status.
//!
//! The test binary plays the helper itself: with OS_SHIM_NS_ROLE set, the hook below runs the
//! role from `.init_array`, before the test harness starts any thread, and exits.
//!
//! Unprivileged runs need /dev/net/tun to be accessible to all users (mode 0666, as
//! distributions ship it; CI does `chmod 0666 /dev/net/tun`) and user namespaces.

mod ns_common;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ns_common::{require, skip_because, test_config, wait_bounded, Need, NS_MAC};
use os_shim::netlink::Netlink;
use os_shim::ns::{self, in_netns, join_userns, ChildExit, NsError};
use os_shim::nsconf::configure;
use os_shim::tap::Tap;

const ROLE_ENV: &str = "OS_SHIM_NS_ROLE";
const NETNS_ONLY_ENV: &str = "OS_SHIM_NS_NETNS_ONLY";
/// The helper's exit code when the sandbox has no user namespaces for it.
const NO_USERNS: i32 = 77;
const WAIT: Duration = Duration::from_secs(10);

#[used]
#[link_section = ".init_array"]
static ROLE_HOOK: extern "C" fn() = role_hook;

extern "C" fn role_hook() {
    let Some(role) = std::env::var_os(ROLE_ENV) else {
        return;
    };
    let code = std::panic::catch_unwind(|| match role.to_str() {
        Some("flow") => role_flow(),
        Some("exit-codes") => role_exit_codes(),
        Some("login-shell") => role_login_shell(),
        _ => {
            eprintln!("unknown role {role:?}");
            2
        }
    })
    .unwrap_or(101);
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn spawn_or_exit(command: &[&str], netns_only: bool) -> ns::Spawned {
    let command: Vec<OsString> = command.iter().map(OsString::from).collect();
    match ns::spawn(&command, netns_only) {
        Ok(s) => s,
        Err(e @ NsError::Setup { .. }) => {
            eprintln!("{e}");
            std::process::exit(NO_USERNS);
        }
        Err(e) => panic!("spawn: {e}"),
    }
}

fn link(path: &str) -> String {
    std::fs::read_link(path)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// pasta's order of calls. Prints `KEY value` lines for the test to check.
fn role_flow() -> i32 {
    let netns_only = std::env::var(NETNS_ONLY_ENV).as_deref() == Ok("1");
    let parent_net = link("/proc/self/ns/net");
    println!("PARENT_NET {parent_net}");

    let mut sp = spawn_or_exit(&["readlink", "/proc/self/ns/net"], netns_only);
    println!("NS_NET net:[{}]", ns::ns_ino(&sp.ns.netns).unwrap());
    for w in &sp.warnings {
        println!("SPAWN_WARNING {w}");
    }
    assert_eq!(sp.ns.userns.is_none(), netns_only);
    if let Some(userns) = &sp.ns.userns {
        join_userns(userns).expect("join_userns");
    }
    println!("PARENT_NET_AFTER_JOIN {}", link("/proc/self/ns/net"));

    let config = test_config("pasta0");
    let tap = Tap::open_in(&sp.ns.netns, &config.ns_ifname).expect("tap");
    let conf = configure(&sp.ns.netns, tap.ifindex(), &config, true).expect("configure");
    for w in &conf.warnings {
        println!("CONF_WARNING {w}");
    }
    assert_eq!(conf.mac, NS_MAC);

    // Look from inside, with a netlink socket of the namespace.
    let (host, ping) = in_netns(&sp.ns.netns, || {
        let host = Netlink::open().unwrap().dump_host_net().unwrap();
        // ping_group_range = "0 0" in the namespace: our group may open ping sockets.
        // SAFETY: plain socket call; closed right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP) };
        let ping = if fd >= 0 {
            // SAFETY: ours.
            unsafe { libc::close(fd) };
            "ok".to_owned()
        } else {
            std::io::Error::last_os_error().to_string()
        };
        (host, ping)
    })
    .expect("in_netns");
    println!("PING_SOCKET {ping}");
    let l = host.link(tap.ifindex()).expect("tap link");
    println!(
        "TAP {} up={} mtu={} mac={}",
        l.name,
        l.up,
        l.mtu,
        l.mac.unwrap()
    );
    for a in host.addrs.iter().filter(|a| a.ifindex == tap.ifindex()) {
        println!("ADDR {}/{}", a.addr, a.prefix_len);
    }
    for r in &host.routes {
        let gw = r.nexthops[0]
            .gateway
            .map(|g| g.to_string())
            .unwrap_or("-".into());
        println!("ROUTE {}/{} {gw}", r.dst, r.dst_len);
    }
    let want: IpAddr = "192.0.2.10".parse().unwrap();
    assert!(host.addrs.iter().any(|a| a.addr == want));

    sp.child.release().expect("release");
    let exit = sp.child.wait_timeout(WAIT).unwrap().expect("child exit");
    println!("CHILD_EXIT {}", exit.code());
    println!("PARENT_NET_END {}", link("/proc/self/ns/net"));
    0
}

fn role_exit_codes() -> i32 {
    // The second command is killed from outside: as PID 1 of its namespace it would shrug
    // off its own `kill -TERM $$`.
    for (command, kill) in [
        (&["sh", "-c", "exit 7"][..], false),
        (&["sleep", "30"], true),
        (&["pasta-test-no-such-command"], false),
    ] {
        let mut sp = spawn_or_exit(command, false);
        if let Err(e) = sp.child.release() {
            println!("RELEASE_ERROR {e}");
        }
        if kill {
            sp.child.signal(libc::SIGKILL).expect("kill");
        }
        let exit = sp.child.wait_timeout(WAIT).unwrap().expect("exit");
        println!("EXIT {}", exit.code());
    }
    0
}

/// $SHELL as a login shell, reading commands from our stdin.
fn role_login_shell() -> i32 {
    let mut sp = spawn_or_exit(&[], false);
    sp.child.release().expect("release");
    let exit = sp.child.wait_timeout(WAIT).unwrap().expect("exit");
    println!("SHELL_EXIT {}", exit.code());
    0
}

struct Helper {
    code: i32,
    stdout: String,
}

impl Helper {
    fn values(&self, key: &str) -> Vec<&str> {
        let prefix = format!("{key} ");
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .collect()
    }

    fn value(&self, key: &str) -> &str {
        match self.values(key).as_slice() {
            [v] => v,
            other => panic!("{key}: {other:?} in\n{}", self.stdout),
        }
    }
}

/// Runs this binary as the helper in `role`, as `nobody` if `unprivileged`; `None` (after a
/// skip) when a prerequisite is missing.
fn helper(
    test: &str,
    role: &str,
    unprivileged: bool,
    env: &[(&str, &str)],
    stdin: &str,
) -> Option<Helper> {
    // Root, to run the helper as nobody with setpriv; that user opens /dev/net/tun itself.
    let mut needs = vec![Need::Root, Need::Tool("setpriv")];
    if unprivileged && role == "flow" {
        needs.push(Need::TunForOthers);
    }
    if !require(&needs) {
        return None;
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if unprivileged {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.env(ROLE_ENV, role)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut child, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{test}: helper still running after 60 s, killed"));
    let stdout = t_out.join().unwrap();
    let stderr = t_err.join().unwrap();
    let code = ChildExit::from_std(status)
        .map(ChildExit::code)
        .unwrap_or(-1);
    if code == NO_USERNS {
        skip_because(&format!("no user namespaces here: {stderr}"));
        return None;
    }
    assert_eq!(
        code, 0,
        "{test}: helper failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    eprintln!("{test}: helper output:\n{stdout}");
    Some(Helper { code, stdout })
}

fn check_flow(h: &Helper, netns_only: bool) {
    assert_eq!(h.code, 0);
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let own = own.to_str().unwrap();
    // pasta stays in the init network namespace throughout.
    assert_eq!(h.value("PARENT_NET"), own);
    assert_eq!(h.value("PARENT_NET_AFTER_JOIN"), own);
    assert_eq!(h.value("PARENT_NET_END"), own);
    // The command ran in the new one: its readlink output is a line of its own.
    let ns_net = h.value("NS_NET");
    assert_ne!(ns_net, own);
    assert!(h.stdout.lines().any(|l| l == ns_net), "{}", h.stdout);
    assert_eq!(h.value("CHILD_EXIT"), "0");
    assert!(h.values("SPAWN_WARNING").is_empty());
    if !netns_only {
        assert_eq!(h.value("PING_SOCKET"), "ok");
    }

    assert_eq!(
        h.value("TAP"),
        format!("pasta0 up=true mtu=65520 mac={NS_MAC}")
    );
    let addrs = h.values("ADDR");
    for want in ["192.0.2.10/24", "2001:db8::10/64"] {
        assert!(addrs.contains(&want), "{want} not in {addrs:?}");
    }
    let routes = h.values("ROUTE");
    for want in [
        "0.0.0.0/0 192.0.2.1",
        "198.51.100.0/24 -",
        "203.0.113.0/24 198.51.100.1",
        "::/0 fe80::1",
        "2001:db8:5::/48 2001:db8::1",
    ] {
        assert!(routes.contains(&want), "{want} not in {routes:?}");
    }
    assert!(
        !routes.iter().any(|r| r.starts_with("100.64.0.0/10")),
        "{routes:?}"
    );
    let warning = h.value("CONF_WARNING");
    assert!(
        warning
            .starts_with("cannot copy route 100.64.0.0/10 via 198.18.0.1: Network is unreachable"),
        "{warning}"
    );
}

#[test]
fn unprivileged_flow_as_nobody() {
    let test = "unprivileged_flow_as_nobody";
    if let Some(h) = helper(test, "flow", true, &[], "") {
        check_flow(&h, false);
    }
}

#[test]
fn flow_as_root_joining_the_user_namespace() {
    let test = "flow_as_root_joining_the_user_namespace";
    if let Some(h) = helper(test, "flow", false, &[], "") {
        check_flow(&h, false);
    }
}

#[test]
fn flow_as_root_netns_only() {
    let test = "flow_as_root_netns_only";
    if let Some(h) = helper(test, "flow", false, &[(NETNS_ONLY_ENV, "1")], "") {
        check_flow(&h, true);
    }
}

#[test]
fn exit_codes_as_nobody() {
    let Some(h) = helper("exit_codes_as_nobody", "exit-codes", true, &[], "") else {
        return;
    };
    assert_eq!(h.values("EXIT"), ["7", "137", "127"]);
    assert_eq!(
        h.value("RELEASE_ERROR"),
        "cannot run pasta-test-no-such-command: No such file or directory"
    );
}

#[test]
fn login_shell_as_nobody() {
    let Some(h) = helper(
        "login_shell_as_nobody",
        "login-shell",
        true,
        &[("SHELL", "/bin/sh")],
        "echo \"ARGV0 $0\"; echo \"UID $(id -u)\"; exit 3\n",
    ) else {
        return;
    };
    assert_eq!(h.value("ARGV0"), "-sh");
    assert_eq!(h.value("UID"), "0");
    assert_eq!(h.value("SHELL_EXIT"), "3");
}
