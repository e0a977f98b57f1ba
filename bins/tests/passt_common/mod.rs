//! What passt's real-OS tests share: running passt in the lab and waiting for its socket, and a
//! client speaking qemu's framing with hand-made guest frames (ARP, DHCP).

#![allow(dead_code)] // Each test binary uses its own part.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use crate::common::{bin, wait_timeout, Lab, TestUser};

pub mod vm;

/// The guest's MAC address in these tests (qemu's default).
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// A passt we started, stopped (SIGTERM, then SIGKILL) on drop, with its stderr lines.
pub struct Passt {
    pub child: Child,
    lines: Receiver<String>,
    /// Everything read so far, for failure messages.
    pub log: Vec<String>,
}

impl Passt {
    /// Starts `passt ARGS` in the lab's host namespace, as root or as `user`, with `stdin`
    /// as given (a descriptor to inherit goes through `Command::pre_exec` by the caller).
    pub fn start(lab: &Lab, user: Option<&TestUser>, args: &[&str]) -> Passt {
        Passt::start_with(lab.host_command(user, &bin("passt"), args))
    }

    pub fn start_with(mut cmd: Command) -> Passt {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start passt");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Passt {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits (bounded) for a stderr line containing `text`; returns it.
    pub fn wait_line(&mut self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "passt said no '{text}' within {timeout:?}; it said:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Waits until passt listens (for qemu's stream or a vhost-user front-end), returning the
    /// socket path it announced.
    pub fn wait_socket(&mut self) -> PathBuf {
        let line = self.wait_line("on UNIX domain socket /", TIMEOUT);
        PathBuf::from(line.rsplit(' ').next().expect("a path"))
    }

    /// Waits (bounded) for passt to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_timeout(&mut self.child, timeout)
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signals our own child, by PID.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            if wait_timeout(&mut self.child, Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// A guest's end of the qemu socket.
pub struct Client {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        Client::from_stream(UnixStream::connect(path).expect("connect to passt's socket"))
    }

    pub fn from_stream(stream: UnixStream) -> Client {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, frame: &[u8]) {
        let mut v = (frame.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(frame);
        self.stream.write_all(&v).expect("send a frame");
    }

    /// The next frame from passt, `None` on end of stream; panics after the read timeout.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() >= 4 + len {
                    let frame = self.buf[4..4 + len].to_vec();
                    self.buf.drain(..4 + len);
                    return Some(frame);
                }
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("no frame from passt: {e}"),
            }
        }
    }

    /// Frames until one `pick` accepts (others, like router advertisements, are skipped).
    pub fn recv_matching<T>(&mut self, mut pick: impl FnMut(&[u8]) -> Option<T>) -> T {
        for _ in 0..50 {
            let frame = self.recv().expect("passt closed the connection");
            if let Some(t) = pick(&frame) {
                return t;
            }
        }
        panic!("no matching frame among 50");
    }

    /// Whether passt closed this connection (end of stream within the read timeout).
    pub fn closed_by_passt(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0))
    }

    /// ARP for `target`; the MAC address of the answer.
    pub fn arp(&mut self, sender: [u8; 4], target: [u8; 4]) -> [u8; 6] {
        self.send(&arp_request(sender, target));
        self.recv_matching(|f| arp_reply_from(f, target))
    }
}

pub fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// The sender MAC of an ARP reply for `ip`.
pub fn arp_reply_from(f: &[u8], ip: [u8; 4]) -> Option<[u8; 6]> {
    (f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] && f[28..32] == ip)
        .then(|| f[22..28].try_into().unwrap())
}

fn ip_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A broadcast DHCPDISCOVER from [`GUEST_MAC`].
pub fn dhcp_discover(xid: u32) -> Vec<u8> {
    let mut bootp = vec![0u8; 240];
    bootp[0] = 1; // request
    bootp[1] = 1; // Ethernet
    bootp[2] = 6;
    bootp[4..8].copy_from_slice(&xid.to_be_bytes());
    bootp[10] = 0x80; // broadcast replies
    bootp[28..34].copy_from_slice(&GUEST_MAC);
    bootp[236..240].copy_from_slice(&[99, 130, 83, 99]);
    bootp.extend_from_slice(&[53, 1, 1, 55, 5, 1, 3, 6, 26, 119, 255]);
    bootp.resize(300, 0);
    let udp_len = 8 + bootp.len();
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
    ];
    ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    let sum = ip_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0, 68, 0, 67]);
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum
    f.extend_from_slice(&bootp);
    f
}

/// A DHCP answer: message type, offered address and options by code.
#[derive(Debug)]
pub struct DhcpAnswer {
    pub kind: u8,
    pub yiaddr: [u8; 4],
    pub options: Vec<(u8, Vec<u8>)>,
}

impl DhcpAnswer {
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }
}

/// Parses `f` as a DHCP answer to transaction `xid`, if it is one.
pub fn dhcp_answer(f: &[u8], xid: u32) -> Option<DhcpAnswer> {
    if f.len() < 14 + 20 + 8 + 240 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let udp = &f[14 + ihl..];
    if udp[2..4] != [0, 68] {
        return None;
    }
    let bootp = &udp[8..];
    if bootp[4..8] != xid.to_be_bytes() {
        return None;
    }
    let mut options = Vec::new();
    let mut i = 240;
    while i < bootp.len() && bootp[i] != 255 {
        if bootp[i] == 0 {
            i += 1;
            continue;
        }
        let len = usize::from(*bootp.get(i + 1)?);
        options.push((bootp[i], bootp.get(i + 2..i + 2 + len)?.to_vec()));
        i += 2 + len;
    }
    let kind = options.iter().find(|(c, _)| *c == 53)?.1.first().copied()?;
    Some(DhcpAnswer {
        kind,
        yiaddr: bootp[16..20].try_into().unwrap(),
        options,
    })
}

/// Parses a dotted IPv4 address.
pub fn v4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>()
        .expect("IPv4 address")
        .octets()
}
