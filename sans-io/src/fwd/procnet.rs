//! The ports bound in a namespace, from the kernel's socket tables (`/proc/net/tcp`, `tcp6`,
//! `udp`, `udp6`, see proc(5)): what pasta's `auto` forwarding follows. Parsing only; the
//! driver reads the files (from inside the namespace) and hands their text here.
//!
//! Each line after the header is `sl: LOCAL REMOTE ST ...`, addresses as hexadecimal
//! `ADDR:PORT`. A TCP socket counts when it listens (state `0A`); a UDP one when it is bound
//! and not connected (state `07`, remote port 0), as servers are.

/// A set of ports, as a bitmap: no allocation beyond its fixed 8 KiB.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    bits: Box<[u64; 1024]>,
}

impl Default for PortSet {
    fn default() -> Self {
        PortSet {
            bits: Box::new([0; 1024]),
        }
    }
}

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl PortSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, port: u16) {
        self.bits[usize::from(port / 64)] |= 1 << (port % 64);
    }

    pub fn remove(&mut self, port: u16) {
        self.bits[usize::from(port / 64)] &= !(1 << (port % 64));
    }

    pub fn contains(&self, port: u16) -> bool {
        self.bits[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }

    pub fn clear(&mut self) {
        self.bits.fill(0);
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// The ports, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, &w)| {
            (0..64u16)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i as u16 * 64 + b)
        })
    }
}

/// Which socket table a text comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Tcp,
    Udp,
}

const TCP_LISTEN: u8 = 0x0a;
/// `TCP_CLOSE`, which unconnected UDP sockets report.
const UDP_UNCONNECTED: u8 = 0x07;

/// Adds to `ports` the server ports in `text`, one socket table's contents. Lines that don't
/// parse are skipped: the format is the kernel's, but a truncated read or a future column
/// must not stop the scan.
pub fn add_bound_ports(text: &[u8], table: Table, ports: &mut PortSet) {
    for line in text.split(|&b| b == b'\n').skip(1) {
        if let Some(port) = server_port(line, table) {
            ports.insert(port);
        }
    }
}

fn server_port(line: &[u8], table: Table) -> Option<u16> {
    let mut fields = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let slot = fields.next()?;
    if slot.last() != Some(&b':') {
        return None;
    }
    let local = fields.next()?;
    let remote = fields.next()?;
    let state = hex_u8(fields.next()?)?;
    let port = port_of(local)?;
    if port == 0 {
        return None;
    }
    match table {
        Table::Tcp if state == TCP_LISTEN => Some(port),
        Table::Udp if state == UDP_UNCONNECTED && port_of(remote)? == 0 => Some(port),
        _ => None,
    }
}

/// The port of `HEXADDR:HEXPORT`, checking the address is hexadecimal of an IP length.
fn port_of(field: &[u8]) -> Option<u16> {
    let colon = field.iter().position(|&b| b == b':')?;
    let (addr, port) = (&field[..colon], &field[colon + 1..]);
    if !matches!(addr.len(), 8 | 32) || !addr.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    if port.len() != 4 {
        return None;
    }
    u16::from_str_radix(std::str::from_utf8(port).ok()?, 16).ok()
}

fn hex_u8(field: &[u8]) -> Option<u8> {
    if field.len() != 2 {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(field).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4711 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4712 1 0000000000000000 100 0 0 10 0
   2: 020011AC:D431 0A0071CB:0050 01 00000000:00000000 00:00000000 00000000  1000        0 4713 1 0000000000000000 20 4 1 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
";
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5 2 0000000000000000 0
  101: 020011AC:9C40 0A0071CB:0035 01 00000000:00000000 00:00000000 00000000     0        0 6 2 0000000000000000 0
  102: 00000000:0000 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 7 2 0000000000000000 0
";

    #[test]
    fn listening_tcp_and_bound_udp_ports() {
        let mut tcp = PortSet::new();
        add_bound_ports(TCP.as_bytes(), Table::Tcp, &mut tcp);
        add_bound_ports(TCP6.as_bytes(), Table::Tcp, &mut tcp);
        assert_eq!(tcp.iter().collect::<Vec<_>>(), [22, 3000, 8080]);
        let mut udp = PortSet::new();
        add_bound_ports(UDP.as_bytes(), Table::Udp, &mut udp);
        // The connected client socket and the port-0 socket are not servers.
        assert_eq!(udp.iter().collect::<Vec<_>>(), [53]);
    }

    #[test]
    fn garbage_and_truncated_lines_are_skipped() {
        let mut ports = PortSet::new();
        let text =
            "header\n   0: 00000000:1F90 00000000:0000 0A\n   1: zz:0016 0:0 0A\n   2: 00000000:00";
        add_bound_ports(text.as_bytes(), Table::Tcp, &mut ports);
        assert_eq!(ports.iter().collect::<Vec<_>>(), [8080]);
        add_bound_ports(b"", Table::Udp, &mut ports);
        add_bound_ports(&[0xff; 300], Table::Udp, &mut ports);
        assert_eq!(ports.iter().collect::<Vec<_>>(), [8080]);
    }

    #[test]
    fn port_set_edges() {
        let mut s = PortSet::new();
        assert!(s.is_empty());
        for p in [0, 1, 63, 64, 65535] {
            s.insert(p);
        }
        assert!(s.contains(65535) && s.contains(0) && !s.contains(2));
        s.remove(0);
        assert_eq!(s.iter().collect::<Vec<_>>(), [1, 63, 64, 65535]);
        s.clear();
        assert!(s.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text: Vec<u8>) {
            let mut ports = PortSet::new();
            add_bound_ports(&text, Table::Tcp, &mut ports);
            add_bound_ports(&text, Table::Udp, &mut ports);
        }
    }
}
