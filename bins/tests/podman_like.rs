//! Real OS: pasta as Podman starts it, without Podman. Podman 5 creates the container's network
//! namespace as a file, then runs
//!
//! ```text
//! pasta --config-net -t 8080-8080:80-80 -u 7070-7070:7070-7070 --dns-forward 169.254.1.1
//!       -T none -U none --no-map-gw --quiet --netns PATH --map-guest-addr 169.254.1.2
//! ```
//!
//! and relies on: the foreground process exiting 0 only once the namespace is configured
//! (nothing printed with --quiet), or non-zero with a one-line reason on stderr; pasta quitting
//! by itself when the namespace file goes (Podman never kills it); and inside, published TCP and
//! UDP ports reachable from the host's loopback and from a remote host, DNS through 169.254.1.1
//! and the host reachable as 169.254.1.2. As root, and as an ordinary user owning the user
//! namespace the network namespace belongs to (rootless Podman's case).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    addr, assert_isolated, bin, require, run_timeout, show, staged, test_user, wait_for_file, Lab,
    Need, Shape, TempDir, FILE_SERVER_PY, UDP_CLIENT_PY, UDP_ECHO_PY,
};

const DNS_FORWARD: &str = "169.254.1.1";
const GUEST_ADDR_MAP: &str = "169.254.1.2";
/// A server on the lab host, reached from inside as 169.254.1.2.
const HOST_HTTP_PORT: u16 = 9099;
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Podman's argv, attaching to the namespace file at `netns`.
fn podman_args(netns: &str) -> Vec<String> {
    [
        "--config-net",
        "-t",
        "8080-8080:80-80",
        "-u",
        "7070-7070:7070-7070",
        "--dns-forward",
        DNS_FORWARD,
        "-T",
        "none",
        "-U",
        "none",
        "--no-map-gw",
        "--quiet",
        "--netns",
        netns,
        "--map-guest-addr",
        GUEST_ADDR_MAP,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What a container that serves and is checked needs: servers, clients, a resolver client,
/// and entering namespaces.
const SERVING: &[Need] = &[
    Need::Tool("python3"),
    Need::Tool("curl"),
    Need::Tool("unshare"),
    Need::Tool("nsenter"),
    Need::Busybox(&["nslookup"]),
];

/// The lab, with /dev/net/tun and `extra`.
fn lab(extra: &[Need]) -> Option<Lab> {
    let mut needs = vec![Need::Tun];
    needs.extend_from_slice(extra);
    if !require(&needs) {
        return None;
    }
    let lab = Lab::new(Shape::DualStack)?;
    lab.add_remote_servers();
    Some(lab)
}

/// What runs inside the container's namespace, then the checks from outside it. `enter` is
/// the command prefix that enters the namespace (as root: `ip netns exec NAME`).
struct Container<'a> {
    enter: Vec<String>,
    dir: &'a Path,
}

impl Container<'_> {
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new(&self.enter[0]);
        c.args(&self.enter[1..]).arg(program).args(args);
        c
    }
}

/// Starts the container's servers (HTTP on 80, UDP echo on 7070), waits until they listen.
fn start_servers(lab: &mut Lab, c: &Container<'_>, tag: &str) {
    let (http_ready, udp_ready) = (
        c.dir.join(format!("http-ready-{tag}")),
        c.dir.join(format!("udp-ready-{tag}")),
    );
    let http = c.command(
        "python3",
        &[
            c.dir.join("server.py").to_str().unwrap(),
            c.dir.to_str().unwrap(),
            "80",
            http_ready.to_str().unwrap(),
        ],
    );
    let udp = c.command(
        "python3",
        &[
            c.dir.join("echo.py").to_str().unwrap(),
            udp_ready.to_str().unwrap(),
            "::,7070",
        ],
    );
    for mut cmd in [http, udp] {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        lab.spawn(cmd);
    }
    assert!(wait_for_file(&http_ready, Duration::from_secs(10)));
    assert!(wait_for_file(&udp_ready, Duration::from_secs(10)));
}

/// The checks Podman's users rely on, with the namespace configured and servers inside.
fn check_container(lab: &Lab, c: &Container<'_>) {
    let token = std::fs::read_to_string(c.dir.join("token")).unwrap();
    // Addresses and routes mirrored, at once: the foreground pasta only exits when ready.
    let inside = run_timeout(
        &mut c.command(
            "sh",
            &[
                "-c",
                &format!(
                    "ip -4 addr; ip -6 addr; ip route; \
                     busybox nslookup -type=a remote.test {DNS_FORWARD} && echo DNS_OK; \
                     curl -sS --max-time 10 http://{GUEST_ADDR_MAP}:{HOST_HTTP_PORT}/token \
                     && echo && echo HOST_OK"
                ),
            ],
        ),
        RUN_TIMEOUT,
    );
    let text = String::from_utf8_lossy(&inside.stdout);
    for want in [
        format!("{}/{}", addr::HOST4, addr::PREFIX4),
        format!("{}/{}", addr::HOST6, addr::PREFIX6),
        format!("default via {}", addr::REMOTE4),
        format!("Address: {}", addr::SERVER4),
        "DNS_OK".to_owned(),
        token.clone(),
        "HOST_OK".to_owned(),
    ] {
        assert!(text.contains(&want), "inside: {want}\n{}", show(&inside));
    }
    // Published TCP: from the host's loopback (both families) and from the remote.
    for (ns, url) in [
        (&lab.host, "http://127.0.0.1:8080/token".to_owned()),
        (&lab.host, "http://[::1]:8080/token".to_owned()),
        (&lab.remote, format!("http://{}:8080/token", addr::HOST4)),
        (&lab.remote, format!("http://[{}]:8080/token", addr::HOST6)),
    ] {
        let out = run_timeout(
            Command::new("ip").args([
                "netns",
                "exec",
                ns,
                "curl",
                "-sS",
                "--retry",
                "5",
                "--retry-all-errors",
                "--retry-delay",
                "1",
                "--max-time",
                "20",
                &url,
            ]),
            RUN_TIMEOUT,
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            token,
            "{url} from {ns}: {}",
            show(&out)
        );
    }
    // Published UDP: answers from the published port.
    let client = c.dir.join("client.py");
    for (ns, target) in [
        (&lab.host, "127.0.0.1,7070".to_owned()),
        (&lab.remote, format!("{},7070", addr::HOST4)),
    ] {
        let out = run_timeout(
            Command::new("ip").args([
                "netns",
                "exec",
                ns,
                "python3",
                client.to_str().unwrap(),
                &target,
            ]),
            RUN_TIMEOUT,
        );
        let (a, p) = target.rsplit_once(',').unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .contains(&format!("OK {target} {a} same port={p}")),
            "{target} from {ns}: {}",
            show(&out)
        );
    }
}

/// pasta processes whose command line names `path` (how Podman's users see a pasta left
/// behind).
fn processes_naming(path: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let mut args = cmdline.split(|&b| b == 0).map(String::from_utf8_lossy);
            let is_pasta = args.next().is_some_and(|a0| a0.ends_with("/pasta"));
            if is_pasta && args.any(|a| a == path) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn wait_none_naming(path: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if processes_naming(path).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Files for the container's servers and the host's, the token they serve.
fn files(tag: &str) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new(tag);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let token = format!("token-{}-{tag}", std::process::id());
    std::fs::write(dir.path().join("token"), &token).unwrap();
    std::fs::write(dir.path().join("server.py"), FILE_SERVER_PY).unwrap();
    std::fs::write(dir.path().join("echo.py"), UDP_ECHO_PY).unwrap();
    std::fs::write(dir.path().join("client.py"), UDP_CLIENT_PY).unwrap();
    dir
}

/// The host's own server, which the container reaches as 169.254.1.2.
fn start_host_server(lab: &mut Lab, dir: &Path) {
    let ready = dir.join("host-ready");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.host, "python3"]).args([
        dir.join("server.py").to_str().unwrap(),
        dir.to_str().unwrap(),
        &HOST_HTTP_PORT.to_string(),
        ready.to_str().unwrap(),
    ]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    lab.spawn(cmd);
    assert!(wait_for_file(&ready, Duration::from_secs(10)));
}

#[test]
fn podman_as_root_attach_serve_and_quit_with_the_namespace() {
    let Some(mut lab) = lab(SERVING) else {
        return;
    };
    let dir = files("podman-root");
    lab.start_dns(&dir);
    start_host_server(&mut lab, dir.path());
    let name = format!("{}-ctr", lab.host);
    let made = run_timeout(
        Command::new("ip").args(["netns", "add", &name]),
        RUN_TIMEOUT,
    );
    assert!(made.status.success(), "{}", show(&made));
    let path = format!("/run/netns/{name}");
    let c = Container {
        enter: ["ip", "netns", "exec", &name]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        dir: dir.path(),
    };

    let out = lab.run(None, &bin("pasta"), &podman_args(&path));
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "--quiet prints nothing: {}",
        show(&out)
    );
    assert_eq!(processes_naming(&path).len(), 1, "one pasta daemon");
    start_servers(&mut lab, &c, "root");
    check_container(&lab, &c);
    // Isolated as it serves: root became nobody, with nothing left.
    for pid in processes_naming(&path) {
        assert_isolated(pid, 65534, 0);
    }

    // Podman removes the namespace file and never kills pasta.
    let _ = run_timeout(
        Command::new("ip").args(["netns", "del", &name]),
        RUN_TIMEOUT,
    );
    assert!(
        wait_none_naming(&path, QUIT_TIMEOUT),
        "pasta still running after {path} was removed"
    );
}

/// Podman's "pasta(1) quits when the namespace is gone": `--net=pasta:--pid,FILE`, a container
/// that only runs `true`; once the namespace is gone Podman reads FILE and waits for that PID
/// to go away. So FILE must still be there after pasta has quit.
#[test]
fn pid_file_outlives_pasta_for_podman_to_read() {
    // Only pasta and a namespace: none of the servers the other tests start.
    let Some(lab) = lab(&[]) else {
        return;
    };
    let dir = TempDir::new("podman-pid");
    let pid_file = dir.path().join("pasta.pid");
    let name = format!("{}-pid", lab.host);
    let made = run_timeout(
        Command::new("ip").args(["netns", "add", &name]),
        RUN_TIMEOUT,
    );
    assert!(made.status.success(), "{}", show(&made));
    let path = format!("/run/netns/{name}");
    let mut args = podman_args(&path);
    args.extend(["--pid".to_owned(), pid_file.to_str().unwrap().to_owned()]);

    let out = lab.run(None, &bin("pasta"), &args);
    assert!(out.status.success(), "{}", show(&out));
    let read_pid = || -> u32 {
        let text = std::fs::read_to_string(&pid_file).expect("the PID file");
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad PID file {text:?}"))
    };
    let pid = read_pid();
    assert_eq!(
        processes_naming(&path),
        [pid],
        "the PID file names the daemon"
    );

    // The container's `true` is done: the namespace goes, and pasta with it.
    let _ = run_timeout(
        Command::new("ip").args(["netns", "del", &name]),
        RUN_TIMEOUT,
    );
    assert!(
        wait_none_naming(&path, QUIT_TIMEOUT),
        "pasta still running after {path} was removed"
    );
    // Gone, or a zombie its new parent (whatever reaps orphans here) has yet to reap.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "{pid} still runs: {stat}"
    );
    assert_eq!(read_pid(), pid, "the PID file outlives pasta");
}

#[test]
fn failure_is_a_non_zero_exit_and_one_line_on_stderr() {
    let Some(lab) = lab(&[]) else {
        return;
    };
    let out = lab.run(
        None,
        &bin("pasta"),
        &podman_args("/nonexistent/netns/netns-0000"),
    );
    assert!(!out.status.success(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{}", show(&out));
    assert!(stderr.contains("/nonexistent/netns/netns-0000"), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", show(&out));
}

/// Rootless Podman: the ordinary user owns a user namespace (as Podman's pause process does),
/// makes the container's network namespace in it as a file on a tmpfs of its own, and runs
/// pasta there as its root. Everything happens in one shell the test drives.
#[test]
fn podman_rootless_attach_serve_and_quit_with_the_namespace() {
    let Some(mut lab) = lab(&[SERVING, &[Need::TunForOthers]].concat()) else {
        return;
    };
    let user = test_user();
    let dir = files("podman-rootless");
    lab.start_dns(&dir);
    start_host_server(&mut lab, dir.path());
    let pasta = staged(&bin("pasta"));
    let nsdir = dir.path().join("netns");
    let path = nsdir.join("netns-rootless").to_str().unwrap().to_owned();
    let holder_ready = dir.path().join("holder-ready");
    let go = dir.path().join("go-remove");
    // Written when the holder is through, whatever happened: the file is gone then, so is
    // pasta (on a failure too: the lab stops the holder, whose exit removes the file). The
    // exit trap ignores the lab's SIGTERM, which may come while it still runs: the status is
    // the script's.
    let done = dir.path().join("holder-done");
    let args = podman_args(&path).join(" ");
    // The holder: a user namespace with a mount namespace; a tmpfs for the namespace file; a
    // network namespace bound to it; pasta attached; then wait for the test's signal to
    // remove the file as Podman does (lazy unmount, unlink). The ready file appears whole (a
    // rename): the test reads the pid as soon as it exists.
    let script = format!(
        "set -e; mkdir -p {nsdir}; mount -t tmpfs none {nsdir}; touch {path}; \
         trap 'trap \"\" TERM INT; umount -l {path} 2>/dev/null; rm -f {path}; touch {done}' EXIT; \
         trap 'exit 1' TERM INT; \
         unshare --net mount --bind /proc/self/ns/net {path}; \
         {pasta} {args} 2>{errf}; echo $$ > {ready}.tmp; mv {ready}.tmp {ready}; \
         i=0; while [ ! -e {go} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; \
         [ -e {go} ]",
        nsdir = nsdir.display(),
        pasta = pasta.display(),
        errf = dir.path().join("pasta-stderr").display(),
        ready = holder_ready.display(),
        go = go.display(),
        done = done.display(),
    );
    let mut holder = Command::new("ip");
    holder.args([
        "netns",
        "exec",
        &lab.host,
        "setpriv",
        &format!("--reuid={}", user.uid),
        &format!("--regid={}", user.gid),
        "--clear-groups",
        "--",
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        &script,
    ]);
    let holder_err = dir.path().join("holder-stderr");
    holder
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&holder_err).unwrap());
    let holder_process = lab.spawn_graceful(holder);
    let ready = wait_for_file(&holder_ready, Duration::from_secs(20));
    let holder_pid: u32 = std::fs::read_to_string(&holder_ready)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        ready && holder_pid != 0,
        "pasta didn't attach: {}",
        std::fs::read_to_string(&holder_err).unwrap_or_default()
    );
    let stderr = std::fs::read_to_string(dir.path().join("pasta-stderr")).unwrap_or_default();
    assert!(stderr.is_empty(), "--quiet prints nothing: {stderr}");
    // Enter the holder's user namespace as its root (the user, outside), its mount namespace
    // (where the file is), and the network namespace.
    let c = Container {
        enter: vec![
            "nsenter".into(),
            "-t".into(),
            holder_pid.to_string(),
            "-U".into(),
            "-m".into(),
            "--".into(),
            // The file is only there in the holder's mount namespace: open it from inside.
            "nsenter".into(),
            format!("--net={path}"),
            "--".into(),
        ],
        dir: dir.path(),
    };
    start_servers(&mut lab, &c, "rootless");
    check_container(&lab, &c);
    // Isolated as it serves: the user (root in its own user namespace, no capabilities).
    for pid in processes_naming(&path) {
        assert_isolated(pid, user.uid, 0);
    }
    assert_eq!(processes_naming(&path).len(), 1, "one pasta daemon");
    std::fs::write(&go, "").unwrap();
    assert!(
        wait_for_file(&done, RUN_TIMEOUT),
        "the holder didn't finish: {}",
        std::fs::read_to_string(&holder_err).unwrap_or_default()
    );
    let status = lab.stop(holder_process);
    assert!(
        status.is_some_and(|s| s.success()),
        "holder: {status:?} {}",
        std::fs::read_to_string(&holder_err).unwrap_or_default()
    );
    assert!(
        wait_none_naming(&path, QUIT_TIMEOUT),
        "pasta still running after {path} was removed"
    );
}
