//! Real OS: the control socket (`-c`) of a running pasta and passt, driven by our `pesto`
//! with the argument vectors of its callers (Podman's pesto client, RootlessKit's pesto port
//! driver; see the research notes in the project's shared folder). Forwards added at run time
//! carry connections from the remote and from the host's loopback into the namespace, deleted
//! ones refuse new connections while established ones carry on byte for byte, and clients
//! that misbehave neither stall the data path nor the socket. As root and, for the basic
//! case, as an ordinary user.
//!
//! pasta runs with every forwarding option `none`, so that nothing but what pesto adds
//! forwards (`auto` would find the test's servers on its own).

mod common;
mod passt_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    addr, bin, random_file, require, run_timeout, sha256_file, show, test_user, wait_for_file,
    wait_until, Collected, Lab, Need, Shape, TempDir, TestUser, FILE_SERVER_PY, UDP_CLIENT_PY,
    UDP_ECHO_PY,
};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The server's deadline per client (bins/src/control.rs) and some room.
const CLIENT_DROPPED_WITHIN: Duration = Duration::from_secs(15);
const TOKEN: &str = "control-token";

/// A pasta with a control socket, its command waiting for the end file, a file server on
/// port 80 inside its namespace.
struct Session {
    dir: TempDir,
    sock: PathBuf,
    pasta: Collected,
    /// The command's PID (in the namespace), for nsenter.
    inside: u32,
    who: Option<TestUser>,
}

impl Session {
    fn start(lab: &Lab, tag: &str, who: Option<&TestUser>) -> Session {
        let dir = TempDir::new(tag);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(dir.path().join("token"), TOKEN).unwrap();
        std::fs::write(dir.path().join("server.py"), FILE_SERVER_PY).unwrap();
        std::fs::write(dir.path().join("echo.py"), UDP_ECHO_PY).unwrap();
        std::fs::write(dir.path().join("client.py"), UDP_CLIENT_PY).unwrap();
        random_file(&dir.path().join("blob"), 4 << 20);
        let sock = dir.path().join("pasta.sock");
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
        let inside = format!(
            "echo $$ > {pid}.tmp; mv {pid}.tmp {pid}; \
             python3 {server} {dir} 80 {ready} & \
             python3 {echo} {uready} ::,81 & \
             while [ ! -e {end} ]; do sleep 0.05; done; kill %1 %2",
            pid = p("inside"),
            server = p("server.py"),
            dir = dir.path().display(),
            ready = p("ready"),
            echo = p("echo.py"),
            uready = p("uready"),
            end = p("end"),
        );
        let args = [
            "--config-net",
            "-t",
            "none",
            "-u",
            "none",
            "-T",
            "none",
            "-U",
            "none",
            "-c",
            sock.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &inside,
        ];
        let pasta = Collected::start(lab.host_command(who, &bin("pasta"), &args));
        assert!(
            wait_for_file(&dir.path().join("ready"), READY_TIMEOUT)
                && wait_for_file(&dir.path().join("uready"), READY_TIMEOUT),
            "servers inside didn't start: {}",
            pasta.stderr()
        );
        // The command's PID as the host's PID namespace sees it: pasta's child.
        let pid = pasta.pid();
        let mut inside = 0;
        assert!(
            wait_until(READY_TIMEOUT, || {
                let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .unwrap_or_default();
                match children.split_whitespace().next() {
                    Some(c) => {
                        inside = c.parse().unwrap();
                        true
                    }
                    None => false,
                }
            }),
            "pasta has no command"
        );
        Session {
            dir,
            sock,
            pasta,
            inside,
            who: who.cloned(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// Runs our pesto (as the session's user) with `args`, then the socket path.
    fn pesto(&self, lab: &Lab, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.push(self.sock.to_str().unwrap());
        lab.run(self.who.as_ref(), &bin("pesto"), &all)
    }

    /// pesto `args` must succeed.
    fn pesto_ok(&self, lab: &Lab, args: &[&str]) -> String {
        let out = self.pesto(lab, args);
        assert!(
            out.status.success(),
            "pesto {args:?}: {}\npasta: {}",
            show(&out),
            self.pasta.stderr()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A command in the namespace.
    fn inside(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.inside.to_string(), "-n", program]);
        cmd.args(args);
        cmd
    }

    /// Ends the command, and pasta with it.
    fn end(mut self) {
        std::fs::write(self.dir.path().join("end"), "").unwrap();
        let status = common::wait_timeout(&mut self.pasta.child, RUN_TIMEOUT);
        assert!(status.is_some(), "pasta didn't end");
    }
}

/// `curl URL` in namespace `ns` (a lab namespace name): the body, or the curl error.
fn fetch(ns: &str, url: &str) -> Result<String, String> {
    let out = run_timeout(
        Command::new("ip").args(["netns", "exec", ns, "curl", "-sS", "--max-time", "10", url]),
        RUN_TIMEOUT,
    );
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "curl exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The token through port `port` of the lab host: from the remote over IPv4 and IPv6, and from
/// the host's own loopback.
fn token_everywhere(lab: &Lab, port: u16) {
    for (ns, url) in [
        (&lab.remote, format!("http://{}:{port}/token", addr::HOST4)),
        (
            &lab.remote,
            format!("http://[{}]:{port}/token", addr::HOST6),
        ),
        (&lab.host, format!("http://127.0.0.1:{port}/token")),
        (&lab.host, format!("http://[::1]:{port}/token")),
    ] {
        assert_eq!(fetch(ns, &url).as_deref(), Ok(TOKEN), "{url}");
    }
}

/// Whether a TCP socket listens on `port` in the lab's host namespace (`ss`).
fn host_listens(lab: &Lab, port: &str) -> bool {
    let out = run_timeout(
        Command::new("ip").args([
            "netns",
            "exec",
            &lab.host,
            "ss",
            "-Htln",
            &format!("sport = :{port}"),
        ]),
        RUN_TIMEOUT,
    );
    !out.stdout.is_empty()
}

fn lab() -> Option<Lab> {
    if !require(&[
        Need::Root,
        Need::Tun,
        Need::Tool("python3"),
        Need::Tool("curl"),
        Need::Tool("nsenter"),
        Need::Tool("ss"),
    ]) {
        return None;
    }
    Lab::new(Shape::DualStack)
}

#[test]
fn pesto_adds_lists_and_deletes_forwards_of_a_running_pasta() {
    let Some(lab) = lab() else {
        return;
    };
    let user = test_user();
    for who in [None, Some(&user)] {
        if who.is_some() && !require(&[Need::TunForOthers]) {
            continue;
        }
        add_list_delete(&lab, who);
    }
}

fn add_list_delete(lab: &Lab, who: Option<&TestUser>) {
    let s = Session::start(lab, "ctl-basic", who);
    let name = who.map_or("root", |u| u.name.as_str());
    // Nothing forwards yet.
    assert!(fetch(&lab.remote, &format!("http://{}:8080/token", addr::HOST4)).is_err());
    let empty = s.pesto_ok(lab, &[]);
    assert!(!empty.contains("8080"), "{empty}");

    s.pesto_ok(lab, &["-A", "-t", "8080:80"]);
    token_everywhere(lab, 8080);
    let listed = s.pesto_ok(lab, &[]);
    assert!(
        listed.contains("8080  =>  80"),
        "({name}) the listing lacks the rule:\n{listed}"
    );

    // UDP, the same way.
    s.pesto_ok(lab, &["-A", "-u", "8081:81"]);
    let out = run_timeout(
        &mut lab.remote_command(
            "python3",
            &[
                &s.path("client.py"),
                &format!("{},8081", addr::HOST4),
                &format!("{},8081", addr::HOST6),
            ],
        ),
        RUN_TIMEOUT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("OK ")).count(),
        2,
        "({name}) UDP through the added forward: {}",
        show(&out)
    );

    // A query waiting for its answer when its forward is deleted still gets the answer, from
    // the port it was sent to; a new one after the delete finds nothing there.
    held_query_outlives_its_forward(lab, &s, name);

    // Connections opened before the delete, over both families, carry on after it.
    let clients: Vec<(Collected, String)> = [addr::HOST4, addr::HOST6]
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let connected = s.path(&format!("connected{i}"));
            let go = s.path(&format!("go{i}"));
            let outfile = s.path(&format!("got{i}"));
            std::fs::write(s.path("slow_client.py"), SLOW_CLIENT_PY).unwrap();
            let cmd = lab.remote_command(
                "python3",
                &[
                    &s.path("slow_client.py"),
                    a,
                    "8080",
                    &connected,
                    &go,
                    &outfile,
                ],
            );
            let c = Collected::start(cmd);
            assert!(
                wait_for_file(Path::new(&connected), READY_TIMEOUT),
                "client {a} didn't connect: {}",
                c.stderr()
            );
            (c, outfile)
        })
        .collect();

    s.pesto_ok(lab, &["-D", "-t", "8080:80"]);
    for url in [
        format!("http://{}:8080/token", addr::HOST4),
        format!("http://[{}]:8080/token", addr::HOST6),
    ] {
        let e = fetch(&lab.remote, &url).expect_err("a deleted forward still connects");
        assert!(e.contains("exit Some(7)"), "({name}) {url}: {e}");
    }
    let listed = s.pesto_ok(lab, &[]);
    assert!(!listed.contains("TCP"), "({name}) still listed:\n{listed}");

    let want = sha256_file(&s.dir.path().join("blob"));
    for (i, (mut c, outfile)) in clients.into_iter().enumerate() {
        std::fs::write(s.path(&format!("go{i}")), "").unwrap();
        let status = common::wait_timeout(&mut c.child, RUN_TIMEOUT);
        assert!(
            status.is_some_and(|s| s.success()),
            "client {i}: {}",
            c.stderr()
        );
        assert_eq!(
            sha256_file(Path::new(&outfile)),
            want,
            "({name}) the established transfer {i} differs"
        );
    }
    s.end();
}

fn held_query_outlives_its_forward(lab: &Lab, s: &Session, name: &str) {
    std::fs::write(s.path("held.py"), HELD_SERVER_PY).unwrap();
    std::fs::write(s.path("asker.py"), ASKER_PY).unwrap();
    s.pesto_ok(lab, &["-A", "-u", "8082:82"]);
    let (ready, asked, go) = (
        s.path("held-ready"),
        s.path("held-asked"),
        s.path("held-go"),
    );
    let mut server = Collected::start(s.inside(
        "python3",
        &[&s.path("held.py"), "0.0.0.0,82", &ready, &asked, &go],
    ));
    assert!(
        wait_for_file(Path::new(&ready), READY_TIMEOUT),
        "({name}) the held server didn't start: {}",
        server.stderr()
    );
    let mut asker = Collected::start(
        lab.remote_command("python3", &[&s.path("asker.py"), addr::HOST4, "8082"]),
    );
    assert!(
        wait_for_file(Path::new(&asked), READY_TIMEOUT),
        "({name}) the query never arrived: {}",
        asker.stderr()
    );
    s.pesto_ok(lab, &["-D", "-u", "8082:82"]);
    let listed = s.pesto_ok(lab, &[]);
    assert!(!listed.contains("8082"), "({name}) still listed:\n{listed}");
    std::fs::write(&go, "").unwrap();
    let answered = common::wait_timeout(&mut asker.child, RUN_TIMEOUT);
    assert!(
        answered.is_some_and(|st| st.success()),
        "({name}) no answer after the delete: {}\npasta: {}",
        asker.stderr(),
        s.pasta.stderr()
    );
    assert_eq!(
        asker.stderr().trim(),
        format!("ANSWER {} 8082", addr::HOST4),
        "({name}) the late answer"
    );
    assert!(common::wait_timeout(&mut server.child, RUN_TIMEOUT).is_some());
    let out = run_timeout(
        &mut lab.remote_command(
            "python3",
            &[&s.path("client.py"), &format!("{},8082", addr::HOST4)],
        ),
        RUN_TIMEOUT,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("TIMEOUT"),
        "({name}) a query after the delete: {}",
        show(&out)
    );
}

/// Answers one datagram on `addr,port`, but only once the go file exists: says it is ready,
/// and that the query arrived, in files.
const HELD_SERVER_PY: &str = r#"
import os, socket, sys, time
spec, ready, asked, go = sys.argv[1:5]
a, p = spec.rsplit(",", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((a, int(p)))
open(ready, "w").close()
s.settimeout(30)
data, peer = s.recvfrom(65535)
open(asked, "w").close()
for _ in range(600):
    if os.path.exists(go):
        break
    time.sleep(0.05)
s.sendto(b"answer to " + data, peer)
"#;

/// Sends one query to `addr port` and waits up to 30 s for its answer: prints `ANSWER
/// source port` (on standard error, which the test collects) and succeeds, or fails.
const ASKER_PY: &str = r#"
import socket, sys
a, p = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(30)
s.sendto(b"query", (a, p))
data, peer = s.recvfrom(65535)
assert data == b"answer to query", data
print("ANSWER", peer[0], peer[1], file=sys.stderr, flush=True)
"#;

/// Connects to `addr port`, says so in a file, waits for the go file, then asks for `/blob`
/// (HTTP/1.0) and writes the body to a file.
const SLOW_CLIENT_PY: &str = r#"
import os, socket, sys, time
a, port, connected, go, out = sys.argv[1:6]
s = socket.create_connection((a, int(port)), timeout=20)
open(connected, "w").close()
for _ in range(600):
    if os.path.exists(go):
        break
    time.sleep(0.05)
s.sendall(b"GET /blob HTTP/1.0\r\n\r\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
body = data.split(b"\r\n\r\n", 1)[1]
open(out, "wb").write(body)
"#;

#[test]
fn callers_argument_vectors_against_a_real_pasta() {
    let Some(lab) = lab() else {
        return;
    };
    let s = Session::start(&lab, "ctl-callers", None);
    // Podman (current): the container's addresses as targets, both families; the namespace's
    // addresses are the host's (--config-net copies them).
    let podman = [
        "-t",
        &format!("0.0.0.0/8080:{}/80", addr::HOST4),
        "-t",
        &format!("[::]/8080:{}/80", addr::HOST6),
    ]
    .map(|a| a.to_owned());
    let podman: Vec<&str> = podman.iter().map(String::as_str).collect();
    let mut add = vec!["--add"];
    add.extend(&podman);
    s.pesto_ok(&lab, &add);
    let listed = s.pesto_ok(&lab, &[]);
    for url in [
        format!("http://{}:8080/token", addr::HOST4),
        format!("http://[{}]:8080/token", addr::HOST6),
    ] {
        assert_eq!(fetch(&lab.remote, &url).as_deref(), Ok(TOKEN), "{url}");
    }
    // Again, as Podman does on a restart: no error, no change.
    s.pesto_ok(&lab, &add);
    assert_eq!(s.pesto_ok(&lab, &[]), listed);
    // A genuinely conflicting rule: exit 1, the C text, nothing changed.
    let out = s.pesto(&lab, &["-A", "-t", "0.0.0.0/8080:81"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Forwarding configuration conflict"),
        "{}",
        show(&out)
    );
    assert_eq!(s.pesto_ok(&lab, &[]), listed);
    let mut delete = vec!["--delete"];
    delete.extend(&podman);
    s.pesto_ok(&lab, &delete);
    assert!(!s.pesto_ok(&lab, &[]).contains("8080"));
    assert!(fetch(&lab.remote, &format!("http://{}:8080/token", addr::HOST4)).is_err());

    // RootlessKit: --version first, then one call per port, option and value one word.
    let version = lab.run(None, &bin("pesto"), &["--version"]);
    assert!(version.status.success(), "{}", show(&version));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("pesto "));
    s.pesto_ok(&lab, &["-A", "--tcp-ports=0.0.0.0/8081:80"]);
    let url = format!("http://{}:8081/token", addr::HOST4);
    assert_eq!(fetch(&lab.remote, &url).as_deref(), Ok(TOKEN));
    s.pesto_ok(&lab, &["-D", "--tcp-ports=0.0.0.0/8081:80"]);
    assert!(fetch(&lab.remote, &url).is_err());

    // A port in use on the host: pasta says why, to its log and to our pesto (which exits 1
    // with the reason), and the table stays as it was.
    let before = s.pesto_ok(&lab, &[]);
    let busy = lab.host_command(
        None,
        Path::new("python3"),
        &[
            "-c",
            "import socket,time\ns=socket.socket()\ns.bind(('0.0.0.0',8090))\ns.listen()\ntime.sleep(60)",
        ],
    );
    let busy = Collected::start(busy);
    assert!(lab.wait_listening(&lab.host, 8090, READY_TIMEOUT));
    let refused = s.pesto(&lab, &["-A", "-t", "8090:80", "-t", "8091:80"]);
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.starts_with("Forwarding rules not applied: ") && said.contains("8090"),
        "{said}"
    );
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        s.pasta.wait_stderr("8090", READY_TIMEOUT),
        "pasta didn't say why: {}",
        s.pasta.stderr()
    );
    assert!(
        s.pasta.stderr().contains("forwarding unchanged"),
        "{}",
        s.pasta.stderr()
    );
    assert_eq!(s.pesto_ok(&lab, &[]), before);
    // Nothing of the update was kept: 8091 was free, and still isn't forwarded.
    assert!(fetch(&lab.remote, &format!("http://{}:8091/token", addr::HOST4)).is_err());
    drop(busy);

    // One update, two tables: the inbound change is made first, the outbound one then finds
    // its port taken inside the namespace, and the inbound one is undone.
    let ready = s.path("busy-inside");
    let busy_inside = Collected::start(s.inside(
        "python3",
        &[
            "-c",
            &format!(
                "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',9001))\ns.listen()\n\
                 open('{ready}','w').close()\ntime.sleep(60)"
            ),
        ],
    ));
    assert!(
        wait_for_file(Path::new(&ready), READY_TIMEOUT),
        "{}",
        busy_inside.stderr()
    );
    let warnings = s.pasta.stderr().matches("forwarding unchanged").count();
    let refused = s.pesto(&lab, &["-A", "-t", "8095:80", "-T", "9001"]);
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("9001"),
        "{}",
        show(&refused)
    );
    assert!(
        wait_until(READY_TIMEOUT, || s
            .pasta
            .stderr()
            .matches("forwarding unchanged")
            .count()
            > warnings),
        "{}",
        s.pasta.stderr()
    );
    assert!(
        s.pasta
            .stderr()
            .contains("SPLICE table: cannot listen on TCP port 9001"),
        "{}",
        s.pasta.stderr()
    );
    assert_eq!(s.pesto_ok(&lab, &[]), before);
    // The warning comes after the undo: one look is enough.
    assert!(!host_listens(&lab, "8095"));
    assert!(fetch(&lab.remote, &format!("http://{}:8095/token", addr::HOST4)).is_err());
    drop(busy_inside);

    // A target address: a second address inside, a server bound only to it (port 82: the
    // file server has every address's port 80).
    let run_inside = |program: &str, args: &[&str]| {
        let out = run_timeout(&mut s.inside(program, args), RUN_TIMEOUT);
        assert!(out.status.success(), "{program} {args:?}: {}", show(&out));
    };
    // (A veth pair: kernels without the dummy module have veths, which the lab uses anyway.)
    run_inside(
        "ip",
        &[
            "link", "add", "ctl0", "type", "veth", "peer", "name", "ctl1",
        ],
    );
    run_inside("ip", &["addr", "add", "192.0.2.77/32", "dev", "ctl0"]);
    run_inside("ip", &["link", "set", "ctl0", "up"]);
    run_inside("ip", &["link", "set", "ctl1", "up"]);
    let ready = s.path("only-ready");
    let only = s.inside(
        "python3",
        &[
            "-c",
            &format!(
                "import socket\ns=socket.socket()\ns.bind(('192.0.2.77',82))\ns.listen()\n\
                 open('{ready}','w').close()\nwhile True:\n c,_=s.accept()\n c.recv(4096)\n \
                 c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nonly-there')\n c.close()"
            ),
        ],
    );
    let only = Collected::start(only);
    assert!(
        wait_for_file(Path::new(&ready), READY_TIMEOUT),
        "{}",
        only.stderr()
    );
    s.pesto_ok(&lab, &["-A", "-t", "0.0.0.0/8082:192.0.2.77/82"]);
    let url = format!("http://{}:8082/", addr::HOST4);
    assert_eq!(fetch(&lab.remote, &url).as_deref(), Ok("only-there"));
    drop(only);

    // -T at run time: the namespace's loopback port 9000 reaches the host's.
    let host_dir = TempDir::new("ctl-hostsrv");
    std::fs::write(host_dir.path().join("token"), "from-the-host").unwrap();
    let hready = host_dir.path().join("ready");
    let host_server = lab.host_command(
        None,
        Path::new("python3"),
        &[
            &s.path("server.py"),
            host_dir.path().to_str().unwrap(),
            "9000",
            hready.to_str().unwrap(),
        ],
    );
    let host_server = Collected::start(host_server);
    assert!(
        wait_for_file(&hready, READY_TIMEOUT),
        "{}",
        host_server.stderr()
    );
    let curl_inside = || {
        run_timeout(
            &mut s.inside(
                "curl",
                &["-sS", "--max-time", "10", "http://127.0.0.1:9000/token"],
            ),
            RUN_TIMEOUT,
        )
    };
    assert!(!curl_inside().status.success(), "9000 reached before -T");
    s.pesto_ok(&lab, &["-A", "-T", "9000"]);
    let out = curl_inside();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from-the-host",
        "{}",
        show(&out)
    );
    drop(host_server);
    s.end();
}

/// A client that connects and sends garbage; one that connects and then does nothing. Both
/// while a download runs through pasta: it finishes intact, both are dropped, pesto works.
#[test]
fn misbehaving_clients_are_dropped_and_stall_nothing() {
    let Some(lab) = lab() else {
        return;
    };
    let s = Session::start(&lab, "ctl-bad", None);
    s.pesto_ok(&lab, &["-A", "-t", "8080:80"]);
    std::fs::write(s.path("bad_client.py"), BAD_CLIENT_PY).unwrap();

    // A slow download of the 4 MiB blob (about 4 s).
    let url = format!("http://{}:8080/blob", addr::HOST4);
    let got = s.path("download");
    let download = Collected::start(lab.remote_command(
        "curl",
        &[
            "-sS",
            "--max-time",
            "30",
            "--limit-rate",
            "1M",
            "-o",
            &got,
            &url,
        ],
    ));

    let bad = |mode: &str| {
        let mut cmd = Command::new("python3");
        cmd.args([&s.path("bad_client.py"), s.sock.to_str().unwrap(), mode]);
        cmd.stdout(Stdio::piped());
        Collected::start(cmd)
    };
    let started = Instant::now();
    let mut garbage = bad("garbage");
    let status = common::wait_timeout(&mut garbage.child, RUN_TIMEOUT);
    assert!(status.is_some_and(|s| s.success()), "{}", garbage.stderr());
    assert!(
        s.pasta.wait_stderr("bad update", READY_TIMEOUT),
        "{}",
        s.pasta.stderr()
    );
    let mut idle = bad("idle");
    let status = common::wait_timeout(&mut idle.child, CLIENT_DROPPED_WITHIN + RUN_TIMEOUT);
    assert!(status.is_some_and(|s| s.success()), "{}", idle.stderr());
    assert!(
        s.pasta.wait_stderr("timed out", READY_TIMEOUT),
        "{}",
        s.pasta.stderr()
    );
    assert!(started.elapsed() < CLIENT_DROPPED_WITHIN + RUN_TIMEOUT);

    let mut download = download;
    let status = common::wait_timeout(&mut download.child, RUN_TIMEOUT);
    assert!(status.is_some_and(|s| s.success()), "{}", download.stderr());
    assert_eq!(
        sha256_file(Path::new(&got)),
        sha256_file(&s.dir.path().join("blob")),
        "the download through pasta differs"
    );
    // And the socket serves the next client as usual.
    assert!(s.pesto_ok(&lab, &[]).contains("8080"));
    s.end();
}

/// `garbage`: reads the hello, sends bytes no update starts with; `idle`: connects and waits.
/// Either way, exits 0 once the server has closed the connection (within 30 s).
const BAD_CLIENT_PY: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.settimeout(30)
if sys.argv[2] == "garbage":
    s.recv(20)
    s.sendall(b"\xff" * 100)
try:
    while s.recv(65536):
        pass
except ConnectionResetError:
    pass
"#;

#[test]
fn the_socket_is_private_and_a_second_pasta_cannot_take_it() {
    let Some(lab) = lab() else {
        return;
    };
    let s = Session::start(&lab, "ctl-private", None);
    let mode = std::fs::metadata(&s.sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let out = lab.run(
        None,
        &bin("pasta"),
        &["--config-net", "-c", s.sock.to_str().unwrap(), "--", "true"],
    );
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("Socket path {} already in use", s.sock.display())),
        "{}",
        show(&out)
    );
    s.end();
}

#[test]
fn passt_listens_on_a_port_pesto_adds() {
    let Some(lab) = lab() else {
        return;
    };
    let dir = TempDir::new("ctl-passt");
    let sock = dir.path().join("passt.ctl");
    let qemu = dir.path().join("qemu.sock");
    let passt = Collected::start(lab.host_command(
        None,
        &bin("passt"),
        &[
            "-f",
            "-s",
            qemu.to_str().unwrap(),
            "-c",
            sock.to_str().unwrap(),
        ],
    ));
    assert!(
        passt.wait_stderr(
            &format!("Configuration socket: {}", sock.display()),
            READY_TIMEOUT
        ) && wait_for_file(&qemu, READY_TIMEOUT),
        "{}",
        passt.stderr()
    );
    let listens = |port: &str| host_listens(&lab, port);
    assert!(!listens("8093"));
    // A guest (the qemu socket's end, frame by frame), which passt learns by its ARP.
    let mut guest = passt_common::Client::connect(&qemu);
    guest.arp(
        passt_common::v4(addr::HOST4),
        passt_common::v4(addr::REMOTE4),
    );
    let out = lab.run(
        None,
        &bin("pesto"),
        &["-A", "-t", "8093:80", sock.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        wait_until(READY_TIMEOUT, || listens("8093")),
        "{}",
        passt.stderr()
    );
    // A connection from the remote to the added port reaches the guest: its SYN, to port 80.
    let connect = |port: u16| {
        lab.remote_command(
            "python3",
            &[
                "-c",
                &format!(
                    "import socket\ntry:\n socket.create_connection(('{}', {port}), timeout=3)\n \
                     print('connected')\nexcept ConnectionRefusedError:\n print('refused')\n\
                     except OSError as e:\n print(e)",
                    addr::HOST4
                ),
            ],
        )
    };
    let attempt = Collected::start(connect(8093));
    let syn_to = guest.recv_matching(|f| {
        let tcp = f.len() >= 54 && f[12..14] == [8, 0] && f[23] == 6;
        (tcp && f[47] & 0x02 != 0).then(|| u16::from_be_bytes([f[36], f[37]]))
    });
    assert_eq!(syn_to, 80, "the SYN goes to the rule's target port");
    drop(attempt);
    // passt has no outbound table: pesto says so, as the C one does.
    let out = lab.run(
        None,
        &bin("pesto"),
        &["-A", "-T", "9000", sock.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let out = lab.run(
        None,
        &bin("pesto"),
        &["-D", "-t", "8093:80", sock.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        wait_until(READY_TIMEOUT, || !listens("8093")),
        "{}",
        passt.stderr()
    );
    // Deleted: a new connection is refused at once.
    let out = run_timeout(&mut connect(8093), Duration::from_secs(10));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "refused",
        "{}",
        show(&out)
    );
}
