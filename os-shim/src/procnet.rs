//! Reading a namespace's socket tables (`/proc/net/tcp`, `tcp6`, `udp`, `udp6`) for `auto`
//! port forwarding. The files are opened once, from a thread inside the namespace
//! (`/proc/thread-self/net/...` shows the thread's namespace), and the descriptors keep
//! showing that namespace: each scan re-reads them from the start, without entering it again.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use sans_io::fwd::procnet::{add_bound_ports, PortSet, Table};

use crate::ns::{in_netns, NsError};

const FILES: [(&str, Table); 4] = [
    ("tcp", Table::Tcp),
    ("tcp6", Table::Tcp),
    ("udp", Table::Udp),
    ("udp6", Table::Udp),
];

/// The socket tables of one network namespace.
#[derive(Debug)]
pub struct SocketTables {
    /// Each table that exists (no `tcp6` without IPv6), with its kind.
    files: Vec<(File, Table)>,
    buf: Vec<u8>,
}

impl SocketTables {
    /// Opens the tables of the namespace `netns`.
    pub fn open_in(netns: impl AsFd) -> Result<SocketTables, NsError> {
        let files = in_netns(netns, open_files)?;
        Ok(SocketTables {
            files,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Opens the tables of the calling thread's own namespace (the host's, for pasta).
    pub fn open_here() -> SocketTables {
        SocketTables {
            files: open_files(),
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// The ports TCP servers listen on and UDP servers are bound to, now.
    pub fn scan(&mut self, tcp: &mut PortSet, udp: &mut PortSet) -> io::Result<()> {
        tcp.clear();
        udp.clear();
        for (file, table) in &self.files {
            read_whole(file, &mut self.buf)?;
            let set = match table {
                Table::Tcp => &mut *tcp,
                Table::Udp => &mut *udp,
            };
            add_bound_ports(&self.buf, *table, set);
        }
        Ok(())
    }
}

fn open_files() -> Vec<(File, Table)> {
    FILES
        .iter()
        .filter_map(|(name, table)| {
            let path = format!("/proc/thread-self/net/{name}");
            File::open(path).ok().map(|f| (f, *table))
        })
        .collect()
}

/// Reads a procfs file from its start into `buf` (procfs files have no size to go by).
fn read_whole(file: &File, buf: &mut Vec<u8>) -> io::Result<()> {
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
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (mut tcp_ports, mut udp_ports) = (PortSet::new(), PortSet::new());
        tables.scan(&mut tcp_ports, &mut udp_ports).unwrap();
        assert!(tcp_ports.contains(listener.local_addr().unwrap().port()));
        assert!(udp_ports.contains(udp.local_addr().unwrap().port()));
        // Re-reading the same descriptors shows the change.
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        tables.scan(&mut tcp_ports, &mut udp_ports).unwrap();
        assert!(!tcp_ports.contains(port));
    }
}
