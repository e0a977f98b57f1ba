//! The kernel's socket tables through `NETLINK_SOCK_DIAG` (sock_diag(7)), asking only for
//! the sockets servers hold: TCP listeners, unconnected UDP sockets.
//!
//! Why not `/proc/net/tcp`: the kernel formats every socket of the namespace into that text
//! and we parse all of it, every second, for `auto` forwarding. With hundreds of idle
//! connections that was most of pasta's CPU time while nothing happened. Asking sock_diag for
//! TCP listeners alone makes the kernel walk only its listening hash, and the answer holds
//! only what we look for. The procfs tables stay as the fall-back where sock_diag is missing
//! (a kernel without `inet_diag`/`udp_diag`).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};
use sans_io::fwd::procnet::{PortSet, Table};

/// A dump answers at once (the kernel builds it in the call); this only bounds a kernel that
/// never says it is done.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);
/// Receive buffer for one batch of answers: a page or two of sockets each call.
const BUF_LEN: usize = 32 * 1024;

/// A sock_diag socket of one network namespace (the one it was opened in).
pub struct SockDiag {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for SockDiag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SockDiag").field("seq", &self.seq).finish()
    }
}

impl SockDiag {
    /// Opens a sock_diag socket in the calling thread's network namespace.
    pub fn open() -> io::Result<SockDiag> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        set_recv_timeout(socket.as_raw_fd(), RECV_TIMEOUT)?;
        Ok(SockDiag {
            socket,
            seq: 0,
            buf: vec![0; BUF_LEN],
        })
    }

    /// Adds to `ports` the server ports of one table and family: TCP listeners, or UDP
    /// sockets bound and not connected. After an error (no `udp_diag` here, say) `ports` may
    /// hold some of them: fall back to another source for the rest.
    pub fn add_server_ports(
        &mut self,
        table: Table,
        v6: bool,
        ports: &mut PortSet,
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let request = dump_request(table, v6, self.seq);
        self.socket.send(&request, 0)?;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "sock_diag: empty answer",
                ));
            }
            match add_answer_ports(&self.buf[..n], self.seq, table, ports)? {
                Answer::More => {}
                Answer::Done => return Ok(()),
            }
        }
    }
}

/// Whether a dump goes on after one batch of messages.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    More,
    Done,
}

/// The dump request for the server sockets of `table` in one family.
fn dump_request(table: Table, v6: bool, seq: u32) -> Vec<u8> {
    let (protocol, states) = match table {
        Table::Tcp => (IPPROTO_TCP, StateFlags::LISTEN),
        // Unconnected UDP sockets report TCP_CLOSE.
        Table::Udp => (IPPROTO_UDP, StateFlags::CLOSE),
    };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: if v6 { AF_INET6 } else { AF_INET },
            protocol,
            extensions: ExtensionFlags::empty(),
            states,
            socket_id: if v6 {
                SocketId::new_v6()
            } else {
                SocketId::new_v4()
            },
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// Adds the ports of one batch of a dump's messages; answers to other requests (`seq`, from a
/// dump an earlier error cut short) are skipped.
fn add_answer_ports(
    mut bytes: &[u8],
    seq: u32,
    table: Table,
    ports: &mut PortSet,
) -> io::Result<Answer> {
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {e}"));
    while !bytes.is_empty() {
        let msg = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
            .map_err(|e| bad(e.to_string()))?;
        let len = (msg.header.length as usize).min(bytes.len());
        if len == 0 {
            return Err(bad("zero-length message".into()));
        }
        // Messages are 4-byte aligned within a batch.
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
        if msg.header.sequence_number != seq {
            continue;
        }
        match msg.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                let id = &r.header.socket_id;
                let server = match table {
                    Table::Tcp => true,
                    Table::Udp => id.destination_port == 0,
                };
                if server && id.source_port != 0 {
                    ports.insert(id.source_port);
                }
            }
            NetlinkPayload::Done(_) => return Ok(Answer::Done),
            NetlinkPayload::Error(e) => {
                return Err(e.code.map_or_else(
                    || bad("error without a code".into()),
                    |c| io::Error::from_raw_os_error(-c.get()),
                ))
            }
            _ => {}
        }
    }
    Ok(Answer::More)
}

fn set_recv_timeout(fd: std::os::fd::RawFd, d: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(d.subsec_micros() as i32),
    };
    // SAFETY: a timeval of the right size for SO_RCVTIMEO.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_listeners_and_unconnected_udp_but_not_connections() {
        let Ok(mut diag) = SockDiag::open() else {
            eprintln!("\n*** SKIPPED: no sock_diag here ***\n");
            return;
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let lport = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", lport)).unwrap();
        let cport = client.local_addr().unwrap().port();
        let server_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let connected_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        connected_udp
            .connect(server_udp.local_addr().unwrap())
            .unwrap();
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();

        let mut tcp = PortSet::new();
        diag.add_server_ports(Table::Tcp, false, &mut tcp).unwrap();
        assert!(tcp.contains(lport), "{tcp:?}");
        assert!(
            !tcp.contains(cport),
            "a connection is not a server: {tcp:?}"
        );
        if let Some(l) = v6 {
            let mut tcp6 = PortSet::new();
            diag.add_server_ports(Table::Tcp, true, &mut tcp6).unwrap();
            assert!(tcp6.contains(l.local_addr().unwrap().port()));
        }
        let mut udp = PortSet::new();
        match diag.add_server_ports(Table::Udp, false, &mut udp) {
            Ok(()) => {
                assert!(udp.contains(server_udp.local_addr().unwrap().port()));
                assert!(!udp.contains(connected_udp.local_addr().unwrap().port()));
            }
            // No udp_diag module: the caller falls back to procfs.
            Err(e) => eprintln!("no UDP sock_diag here: {e}"),
        }
        // The same socket, asked again, sees a change: a listener that came since. (That the
        // dropped one's port is gone is not asserted: a test running beside this one may
        // have been given the same port meanwhile.)
        drop(listener);
        let later = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tcp = PortSet::new();
        diag.add_server_ports(Table::Tcp, false, &mut tcp).unwrap();
        assert!(tcp.contains(later.local_addr().unwrap().port()), "{tcp:?}");
    }

    #[test]
    fn answers_to_other_requests_and_garbage_are_handled() {
        let mut ports = PortSet::new();
        // A truncated header is an error, never a panic.
        assert!(add_answer_ports(&[1, 2, 3], 1, Table::Tcp, &mut ports).is_err());
        // A lone DONE for another sequence number is skipped; for ours it ends the dump.
        let done = |seq: u32| {
            let mut header = NetlinkHeader::default();
            header.sequence_number = seq;
            let mut m = NetlinkMessage::<SockDiagMessage>::new(
                header,
                NetlinkPayload::Done(netlink_packet_core::DoneMessage::default()),
            );
            m.finalize();
            let mut b = vec![0; m.buffer_len()];
            m.serialize(&mut b);
            b
        };
        let mut two = done(7);
        two.extend(done(8));
        assert_eq!(
            add_answer_ports(&two, 8, Table::Tcp, &mut ports).unwrap(),
            Answer::Done
        );
        assert_eq!(
            add_answer_ports(&done(7), 8, Table::Tcp, &mut ports).unwrap(),
            Answer::More
        );
        assert!(ports.is_empty());
    }
}
