//! A namespace's server ports for `auto` port forwarding: TCP listeners and bound,
//! unconnected UDP sockets. Asked of sock_diag (see [`crate::sock_diag`]), which answers with
//! just those, and read from the procfs socket tables (`/proc/net/tcp`, `tcp6`, `udp`,
//! `udp6`) where sock_diag can't answer.
//!
//! Both are opened once, from a thread inside the namespace (a netlink socket belongs to the
//! namespace it was made in; `/proc/thread-self/net/...` shows the thread's namespace), and
//! keep showing that namespace: each scan asks again without entering it.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use sans_io::fwd::procnet::{add_bound_ports, PortSet, Table};

use crate::ns::{in_netns, NsError};
use crate::sock_diag::SockDiag;

/// Each table: its kind, its family, its procfs file.
const TABLES: [(Table, bool, &str); 4] = [
    (Table::Tcp, false, "tcp"),
    (Table::Tcp, true, "tcp6"),
    (Table::Udp, false, "udp"),
    (Table::Udp, true, "udp6"),
];

/// The socket tables of one network namespace.
#[derive(Debug)]
pub struct SocketTables {
    diag: Option<SockDiag>,
    /// Each table that exists (no `tcp6` without IPv6): its kind, family and procfs file.
    files: Vec<(Table, bool, File)>,
    buf: Vec<u8>,
    /// Tables sock_diag failed for once: read from procfs from then on.
    diag_failed: [bool; TABLES.len()],
}

impl SocketTables {
    /// Opens the tables of the namespace `netns`.
    pub fn open_in(netns: impl AsFd) -> Result<SocketTables, NsError> {
        let (diag, files) = in_netns(netns, || (SockDiag::open().ok(), open_files()))?;
        Ok(SocketTables::new(diag, files))
    }

    /// Opens the tables of the calling thread's own namespace (the host's, for pasta).
    pub fn open_here() -> SocketTables {
        SocketTables::new(SockDiag::open().ok(), open_files())
    }

    fn new(diag: Option<SockDiag>, files: Vec<(Table, bool, File)>) -> SocketTables {
        SocketTables {
            diag,
            files,
            buf: Vec::new(),
            diag_failed: [false; TABLES.len()],
        }
    }

    /// The ports TCP servers listen on and UDP servers are bound to, now.
    pub fn scan(&mut self, tcp: &mut PortSet, udp: &mut PortSet) -> io::Result<()> {
        tcp.clear();
        udp.clear();
        for (i, &(table, v6, name)) in TABLES.iter().enumerate() {
            let set = match table {
                Table::Tcp => &mut *tcp,
                Table::Udp => &mut *udp,
            };
            if let Some(diag) = self.diag.as_mut().filter(|_| !self.diag_failed[i]) {
                // A dump cut short by an error leaves only ports that are bound: the procfs
                // table read next adds the rest.
                match diag.add_server_ports(table, v6, set) {
                    Ok(()) => continue,
                    Err(e) => {
                        log::debug!("sock_diag can't list {name} sockets ({e}): reading procfs");
                        self.diag_failed[i] = true;
                    }
                }
            }
            if let Some((_, _, file)) = self.files.iter().find(|f| f.0 == table && f.1 == v6) {
                read_whole(file, &mut self.buf)?;
                add_bound_ports(&self.buf, table, set);
            }
        }
        Ok(())
    }

    /// Reads every table from procfs, as a kernel without sock_diag makes us (for tests).
    pub fn without_sock_diag(mut self) -> SocketTables {
        self.diag = None;
        self
    }
}

fn open_files() -> Vec<(Table, bool, File)> {
    TABLES
        .iter()
        .filter_map(|&(table, v6, name)| {
            let path = format!("/proc/thread-self/net/{name}");
            File::open(path).ok().map(|f| (table, v6, f))
        })
        .collect()
}

/// Reads a procfs file from its start into `buf` (procfs files have no size to go by), through
/// a descriptor opened earlier: by position, so it works again and again, and without asking
/// the file's size (statx, which the sandbox doesn't allow).
pub(crate) fn read_whole(file: &File, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = file.read_at(&mut chunk, buf.len() as u64)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_this_namespace_and_sees_a_new_listener() {
        let own = File::open("/proc/self/ns/net").unwrap();
        let mut tables = match SocketTables::open_in(&own) {
            Ok(t) => t,
            Err(e) => {
                // Entering even our own namespace needs CAP_SYS_ADMIN.
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("cannot open socket tables: {e}");
                }
                eprintln!("\n*** SKIPPED: cannot enter a network namespace: {e} ***\n");
                return;
            }
        };
        let mut procfs = SocketTables::open_here().without_sock_diag();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for tables in [&mut tables, &mut procfs] {
            let (mut tcp_ports, mut udp_ports) = (PortSet::new(), PortSet::new());
            tables.scan(&mut tcp_ports, &mut udp_ports).unwrap();
            assert!(tcp_ports.contains(port));
            assert!(udp_ports.contains(udp.local_addr().unwrap().port()));
        }
        // Asking again through the same descriptors shows the change.
        drop(listener);
        for tables in [&mut tables, &mut procfs] {
            let (mut tcp_ports, mut udp_ports) = (PortSet::new(), PortSet::new());
            tables.scan(&mut tcp_ports, &mut udp_ports).unwrap();
            assert!(!tcp_ports.contains(port));
        }
    }
}
