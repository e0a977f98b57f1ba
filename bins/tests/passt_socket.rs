//! Real OS, no virtual machine: passt in the lab's host namespace, and the test as its guest,
//! speaking qemu's framing on the UNIX domain socket with hand-made frames. ARP and DHCP
//! answers, one client at a time, `--one-off`, `--fd`, the default socket paths, going to the
//! background with a PID file; as root and as an ordinary user (passt needs no privileges).

mod common;
mod passt_common;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    addr, bin, inherit_as_fd5, run_timeout, test_user, Lab, Shape, TempDir, TestUser, TIMEOUT,
};
use passt_common::{dhcp_answer, dhcp_discover, v4, Client, Passt};

/// A scratch directory anybody may create sockets in (passt may run as the test user).
fn socket_dir(tag: &str) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new(tag);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

fn whos() -> [Option<TestUser>; 2] {
    [None, Some(test_user())]
}

fn label(who: &Option<TestUser>) -> String {
    who.as_ref()
        .map_or("root".to_owned(), |u| format!("user {}", u.name))
}

#[test]
fn answers_arp_and_dhcp_and_serves_one_client_at_a_time() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    for who in whos() {
        let dir = socket_dir("sock");
        let path = dir.path().join("passt.socket");
        let mut passt = Passt::start(&lab, who.as_ref(), &["-f", "-s", path.to_str().unwrap()]);
        assert_eq!(passt.wait_socket(), path, "{}", label(&who));

        let mut first = Client::connect(&path);
        // The gateway answers ARP with passt's MAC address (the host's, from the veth).
        let mac = first.arp(v4(addr::HOST4), v4(addr::REMOTE4));
        assert_eq!(
            mac,
            [0x02, 0, 0, 0, 1, 2],
            "{}: ARP answer from the host's MAC",
            label(&who)
        );
        // DHCP offers the host's address, its gateway and the lab's resolver.
        first.send(&dhcp_discover(0x1234_5678));
        let offer = first.recv_matching(|f| dhcp_answer(f, 0x1234_5678));
        assert_eq!(offer.kind, 2, "DHCPOFFER");
        assert_eq!(offer.yiaddr, v4(addr::HOST4));
        assert_eq!(offer.option(3), Some(&v4(addr::REMOTE4)[..]), "router");
        assert_eq!(
            offer.option(6),
            Some(&v4(addr::DNS4)[..]),
            "DNS, passt's default"
        );
        assert_eq!(offer.option(1), Some(&[255, 255, 255, 0][..]), "netmask");

        // A second client is dropped while the first is connected, which keeps working.
        let mut second = Client::connect(&path);
        assert!(
            second.closed_by_passt(),
            "{}: second client not dropped",
            label(&who)
        );
        first.arp(v4(addr::HOST4), v4(addr::REMOTE4));

        // The first leaves: the next one is served. Shut the socket down rather than only
        // closing our descriptor: a child another test thread is forking at this moment holds
        // a copy of it until it execs, and passt would see the first client still there.
        first.stream.shutdown(std::net::Shutdown::Both).unwrap();
        drop(first);
        let mut third = Client::connect(&path);
        third.arp(v4(addr::HOST4), v4(addr::REMOTE4));
        assert!(
            passt.child.try_wait().unwrap().is_none(),
            "passt must wait for further clients"
        );
    }
}

#[test]
fn pcap_records_what_crosses_the_qemu_socket() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    for who in whos() {
        let dir = socket_dir("pcap");
        let path = dir.path().join("passt.socket");
        let file = dir.path().join("passt.pcap");
        let mut passt = Passt::start(
            &lab,
            who.as_ref(),
            &[
                "-f",
                "-1",
                "-s",
                path.to_str().unwrap(),
                "--pcap",
                file.to_str().unwrap(),
            ],
        );
        passt.wait_socket();
        let mut client = Client::connect(&path);
        client.arp(v4(addr::HOST4), v4(addr::REMOTE4));
        client.send(&dhcp_discover(0x0bad_cafe));
        client.recv_matching(|f| dhcp_answer(f, 0x0bad_cafe));
        client.stream.shutdown(std::net::Shutdown::Both).unwrap();
        drop(client);
        let status = passt.wait_exit(TIMEOUT).expect("passt -1 quits");
        assert!(status.success(), "{}: {status:?}", label(&who));
        // The file: a pcap header, then records; our ARP request and DHCP DISCOVER, passt's
        // ARP reply and DHCP OFFER among them (router advertisements may come too).
        let bytes = std::fs::read(&file).expect("the capture file");
        assert!(bytes.len() > 24, "{}: no records", label(&who));
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()),
            0xa1b2_c3d4
        );
        let (mut at, mut arp, mut dhcp) = (24, 0, 0);
        while at + 16 <= bytes.len() {
            let len = u32::from_ne_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
            let frame = &bytes[at + 16..at + 16 + len];
            match u16::from_be_bytes([frame[12], frame[13]]) {
                0x0806 => arp += 1,
                0x0800 if frame[23] == 17 => dhcp += 1,
                _ => {}
            }
            at += 16 + len;
        }
        assert_eq!(at, bytes.len(), "{}: trailing bytes", label(&who));
        assert!(
            arp >= 2 && dhcp >= 2,
            "{}: {arp} ARP, {dhcp} DHCP",
            label(&who)
        );
    }
}

#[test]
fn one_off_quits_when_the_guest_leaves() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    for who in whos() {
        let dir = socket_dir("oneoff");
        let path = dir.path().join("passt.socket");
        let mut passt = Passt::start(
            &lab,
            who.as_ref(),
            &["-f", "-1", "-s", path.to_str().unwrap()],
        );
        passt.wait_socket();
        let mut client = Client::connect(&path);
        client.arp(v4(addr::HOST4), v4(addr::REMOTE4));
        // Shut down, not only closed: see above.
        client.stream.shutdown(std::net::Shutdown::Both).unwrap();
        drop(client);
        let status = passt.wait_exit(TIMEOUT).expect("passt -1 quits");
        assert!(status.success(), "{}: {status:?}", label(&who));
        // The socket file stays (passt's filesystem is gone by then, as the C passt's
        // is), and the next passt reuses it: nobody listens there any more.
        assert!(path.exists(), "the socket file stays");
        let mut next = Passt::start(
            &lab,
            who.as_ref(),
            &["-f", "-1", "-s", path.to_str().unwrap()],
        );
        next.wait_socket();
        drop(next);
    }
}

#[test]
fn fd_takes_a_connected_socket() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    for who in whos() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut cmd = lab.host_command(who.as_ref(), &bin("passt"), &["-f", "-F", "5"]);
        inherit_as_fd5(&mut cmd, theirs.as_raw_fd());
        let mut passt = Passt::start_with(cmd);
        drop(theirs);
        let mut client = Client::from_stream(ours);
        let mac = client.arp(v4(addr::HOST4), v4(addr::REMOTE4));
        assert_eq!(mac, [0x02, 0, 0, 0, 1, 2], "{}", label(&who));
        // -F implies one-off: closing our end ends passt (shut down first: see above).
        client.stream.shutdown(std::net::Shutdown::Both).unwrap();
        drop(client);
        let status = passt.wait_exit(TIMEOUT).expect("passt -F quits");
        assert!(status.success(), "{}: {status:?}", label(&who));
    }
}

#[test]
fn fd_that_is_not_a_socket_is_refused() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    let out = lab.run(None, &bin("passt"), &["-f", "-F", "99"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("passt: --fd 99: Bad file descriptor"), "{err}");
}

#[test]
fn a_path_in_use_is_refused() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    let dir = socket_dir("inuse");
    let path = dir.path().join("passt.socket");
    let mut first = Passt::start(&lab, None, &["-f", "-s", path.to_str().unwrap()]);
    first.wait_socket();
    let out = lab.run(None, &bin("passt"), &["-f", "-s", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is in use by a running instance"), "{err}");
    // The first one is untouched.
    Client::connect(&path).arp(v4(addr::HOST4), v4(addr::REMOTE4));
}

#[test]
fn default_path_is_the_first_free_tmp_passt_socket() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    let mut passt = Passt::start(&lab, None, &["-f", "-1"]);
    let path = passt.wait_socket();
    let name = path.to_str().unwrap();
    let n: u32 = name
        .strip_prefix("/tmp/passt_")
        .and_then(|s| s.strip_suffix(".socket"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected default path {name}"));
    assert!((1..=64).contains(&n));
    passt.wait_line("-netdev stream,id=net0,server=off,addr.type=unix", TIMEOUT);
    // A second passt takes another path, while the first listens.
    let mut other = Passt::start(&lab, None, &["-f", "-1"]);
    assert_ne!(other.wait_socket(), path);
    Client::connect(&path).arp(v4(addr::HOST4), v4(addr::REMOTE4));
    assert!(passt.wait_exit(TIMEOUT).expect("quits").success());
}

#[test]
fn goes_to_the_background_with_a_pid_file() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    let dir = socket_dir("daemon");
    let path = dir.path().join("passt.socket");
    let pid_file = dir.path().join("passt.pid");
    let out = run_timeout(
        &mut lab.host_command(
            None,
            &bin("passt"),
            &[
                "-1",
                "-s",
                path.to_str().unwrap(),
                "-P",
                pid_file.to_str().unwrap(),
            ],
        ),
        TIMEOUT,
    );
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Listening for a guest"), "{err}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("PID file")
        .trim()
        .parse()
        .expect("a PID");
    // The daemon serves the socket; -1 ends it when the guest leaves.
    let alive = |pid: i32| Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive(pid));
    let mut client = Client::connect(&path);
    client.arp(v4(addr::HOST4), v4(addr::REMOTE4));
    client.stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(client);
    let deadline = Instant::now() + TIMEOUT;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) {
        // SAFETY: the daemon we started, by PID.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("the daemon did not quit after its one guest left");
    }
    // Left in place, as the C passt leaves it, still naming the process that is now gone.
    let after: i32 = std::fs::read_to_string(&pid_file)
        .expect("the PID file outlives passt")
        .trim()
        .parse()
        .expect("a PID");
    assert_eq!(after, pid);
}

/// Run by qrap in place of qemu: sends an ARP request (hex, argument 1) over descriptor 5 with
/// qemu's framing and prints the MAC address of the answer.
const FD5_GUEST_PY: &str = r#"
import socket, struct, sys
s = socket.socket(fileno=5)
s.settimeout(10)
arp = bytes.fromhex(sys.argv[1])
s.sendall(struct.pack(">I", len(arp)) + arp)
buf = b""
def need(n):
    global buf
    while len(buf) < n:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("passt closed the connection")
        buf += chunk
for _ in range(50):
    need(4)
    n = struct.unpack(">I", buf[:4])[0]
    need(4 + n)
    f, buf = buf[4:4 + n], buf[4 + n:]
    if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02":
        print(f[22:28].hex())
        sys.exit(0)
sys.exit("no ARP reply")
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn qrap_hands_the_connection_to_the_program_it_runs() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    if !common::require(&[common::Need::Tool("python3")]) {
        return;
    }
    let dir = socket_dir("qrap");
    let path = dir.path().join("passt.socket");
    let user = test_user();
    let mut passt = Passt::start(
        &lab,
        Some(&user),
        &["-f", "-1", "-s", path.to_str().unwrap()],
    );
    passt.wait_socket();
    let arp = hex(&passt_common::arp_request(
        v4(addr::HOST4),
        v4(addr::REMOTE4),
    ));
    let mut cmd = lab.host_command(
        None,
        &bin("qrap"),
        &["5", "python3", "-c", FD5_GUEST_PY, &arp],
    );
    cmd.env("QRAP_SOCKET", &path);
    let out = run_timeout(&mut cmd, TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "020000000102");
    assert!(
        stderr.contains(&format!("Connected to {}", path.display())),
        "{stderr}"
    );
    // The program was passt's one guest: -1 ends passt with it.
    let status = passt.wait_exit(TIMEOUT).expect("passt -1 quits");
    assert!(status.success());

    // A passt busy with a guest is skipped; with no other, qrap fails.
    let mut passt = Passt::start(&lab, None, &["-f", "-s", path.to_str().unwrap()]);
    passt.wait_socket();
    let mut guest = Client::connect(&path);
    guest.arp(v4(addr::HOST4), v4(addr::REMOTE4));
    let mut cmd = lab.host_command(None, &bin("qrap"), &["5", "true"]);
    cmd.env("QRAP_SOCKET", &path);
    let out = run_timeout(&mut cmd, TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is busy with another guest"), "{stderr}");
    assert!(
        stderr.contains("no passt is waiting for a guest"),
        "{stderr}"
    );
    guest.arp(v4(addr::HOST4), v4(addr::REMOTE4));
}
