//! Real OS: request/response exchanges through pasta, with the namespace's kernel as the
//! guest's TCP. A prompt answer carries the acknowledgement of its request, so that an
//! exchange costs the namespace one frame from us rather than an ACK and then the answer
//! (`--pcap` counts them), and every byte comes back as sent.
//!
//! Everything runs inside the lab (see common/mod.rs): pasta in the lab's host namespace, an
//! echo server in the remote namespace on [`addr::SERVER4`].

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{addr, pcap, require, show, wait_for_file, Lab, Need, Shape, TempDir};

const ECHO_PORT: u16 = 8007;
const CONNECTIONS: usize = 4;
const EXCHANGES: usize = 25;
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Echoes each connection, one at a time, on `addr port`; a ready file once listening.
const ECHO_SERVER_PY: &str = r#"
import socket, sys
addr, port, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((addr, port))
srv.listen()
open(ready, "w").close()
while True:
    c, _ = srv.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.close()
"#;

/// `conns` connections to `addr port`, each `n` exchanges of 100 bytes checked on return.
const CLIENT_PY: &str = r#"
import socket, sys
addr, port, conns, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for c in range(conns):
    s = socket.create_connection((addr, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(n):
        msg = bytes([(c * n + i) % 256]) * 100
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            d = s.recv(len(msg) - len(got))
            if not d:
                sys.exit("the answer ended early")
            got += d
        if got != msg:
            sys.exit("the answer differs")
    s.close()
print("exchanged")
"#;

/// TCP frames to the namespace (from [`pcap::OUR_MAC`]): those with a payload, and those
/// that carry none and neither SYN, FIN nor RST (acknowledgements alone).
fn tcp_frames_to_the_guest(file: &[u8]) -> (usize, usize) {
    let (mut data, mut bare) = (0, 0);
    for frame in pcap::frames(file) {
        if frame[6..12] != pcap::OUR_MAC || u16::from_be_bytes([frame[12], frame[13]]) != 0x0800 {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ip[9] != 6 {
            continue;
        }
        let tcp = &ip[ihl..total];
        let payload = tcp.len() - usize::from(tcp[12] >> 4) * 4;
        if payload > 0 {
            data += 1;
        } else if tcp[13] & 0x07 == 0 {
            bare += 1;
        }
    }
    (data, bare)
}

#[test]
fn a_prompt_answer_carries_the_ack_of_its_request() {
    if !require(&[Need::Tun, Need::Tool("python3")]) {
        return;
    }
    let Some(mut lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    lab.add_remote_servers();
    let dir = TempDir::new("exchanges");
    let server = dir.path().join("echo.py");
    let client = dir.path().join("client.py");
    std::fs::write(&server, ECHO_SERVER_PY).unwrap();
    std::fs::write(&client, CLIENT_PY).unwrap();
    let ready = dir.path().join("ready");
    let mut cmd = lab.remote_command(
        "python3",
        &[
            server.to_str().unwrap(),
            addr::SERVER4,
            &ECHO_PORT.to_string(),
            ready.to_str().unwrap(),
        ],
    );
    cmd.stdout(Stdio::null());
    lab.spawn(cmd);
    assert!(
        wait_for_file(&ready, READY_TIMEOUT),
        "the echo server didn't start"
    );
    let file = dir.path().join("run.pcap");
    let out = pcap::run_pasta_capturing(
        &lab,
        &file,
        &[
            "python3",
            client.to_str().unwrap(),
            addr::SERVER4,
            &ECHO_PORT.to_string(),
            &CONNECTIONS.to_string(),
            &EXCHANGES.to_string(),
        ],
        RUN_TIMEOUT,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("exchanged"),
        "{}",
        show(&out)
    );
    let (data, bare) = tcp_frames_to_the_guest(&std::fs::read(&file).unwrap());
    let exchanges = CONNECTIONS * EXCHANGES;
    assert!(
        data >= exchanges,
        "{data} answers for {exchanges} exchanges"
    );
    // Acknowledging each request alone would be one bare ACK an exchange; the closes account
    // for a few. A connection whose answer was late once (a stall of this machine)
    // acknowledges at once from then on, hence only half.
    assert!(
        bare < exchanges / 2,
        "{bare} bare ACKs to the namespace for {exchanges} exchanges"
    );
}
