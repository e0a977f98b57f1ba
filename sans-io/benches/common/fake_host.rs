//! Host sockets for the benchmark: honest (a send takes only what the send buffer has room
//! for, `send_space` says how much that is, a peek copies real bytes) but as cheap as memory
//! allows and allocation-free once the connection is open, so that what is measured is the
//! engine's own work. A send counts the bytes it takes without copying them (a real send's
//! copy is the kernel's work, not the engine's); a peek copies, as `recv(MSG_PEEK)` does into
//! the frame the engine lends it, so that host-to-guest figures include the one copy every
//! byte takes on its way.
//!
//! Each stream socket stands for a connection whose remote end reads everything it is sent
//! whenever the bench calls [`FakeHost::remote_reads`], and (if made with
//! [`FakeHost::endless_rx`]) has always sent more: an endless stream of a known pattern.

use std::io;
use std::net::SocketAddr;

use sans_io::flow::{Bind, CloseSockets, Peeked, SockRef, StreamSockets};

/// The send buffer of each socket: room for a batch of 32 segments of 64 KiB.
pub const SEND_BUFFER: u32 = 4 << 20;

/// Length of the pattern the endless receive stream repeats.
const PATTERN_LEN: usize = 1 << 16;

/// One fake TCP socket.
#[derive(Debug, Default)]
struct FakeStream {
    /// Bytes in the send buffer that the remote end hasn't read yet.
    unread: u32,
    /// Every byte the engine sent on it.
    sent: u64,
    /// Bytes of the receive stream the engine discarded (the guest acknowledged them).
    discarded: u64,
    /// The receive stream never runs dry; otherwise it is empty.
    endless: bool,
    closed: bool,
}

#[derive(Debug)]
pub struct FakeHost {
    socks: Vec<FakeStream>,
    /// The endless receive stream: byte `i` is `pattern[i % PATTERN_LEN]`.
    pattern: Box<[u8]>,
    /// The next socket `tcp_connect` opens gets an endless receive stream.
    next_endless: bool,
}

impl FakeHost {
    pub fn new() -> FakeHost {
        FakeHost {
            socks: Vec::with_capacity(4),
            pattern: (0..PATTERN_LEN).map(|i| (i * 31 % 251) as u8).collect(),
            next_endless: false,
        }
    }

    /// The next connection opened has endless data to receive.
    pub fn endless_rx(&mut self) {
        self.next_endless = true;
    }

    /// The remote ends read all they were sent: the send buffers empty.
    pub fn remote_reads(&mut self) {
        for s in &mut self.socks {
            s.unread = 0;
        }
    }

    /// The socket `tcp_connect` opened last.
    pub fn last_opened(&self) -> Option<SockRef> {
        self.socks.len().checked_sub(1).map(|i| SockRef(i as u32))
    }

    /// Bytes the engine sent on `s` in all.
    pub fn sent(&self, s: SockRef) -> u64 {
        self.socks[s.0 as usize].sent
    }

    /// Bytes of `s`'s receive stream the engine discarded in all.
    pub fn discarded(&self, s: SockRef) -> u64 {
        self.socks[s.0 as usize].discarded
    }

    fn stream(&mut self, s: SockRef) -> io::Result<&mut FakeStream> {
        match self.socks.get_mut(s.0 as usize) {
            Some(sock) if !sock.closed => Ok(sock),
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl CloseSockets for FakeHost {
    fn close(&mut self, s: SockRef, _reset: bool) {
        if let Some(sock) = self.socks.get_mut(s.0 as usize) {
            sock.closed = true;
        }
    }
}

impl StreamSockets for FakeHost {
    fn tcp_connect(&mut self, _: SocketAddr, _: Bind<'_>, _: Option<u16>) -> io::Result<SockRef> {
        let endless = std::mem::take(&mut self.next_endless);
        self.socks.push(FakeStream {
            endless,
            ..FakeStream::default()
        });
        Ok(SockRef(self.socks.len() as u32 - 1))
    }

    fn send(&mut self, s: SockRef, data: &[u8]) -> io::Result<usize> {
        let sock = self.stream(s)?;
        let n = data.len().min((SEND_BUFFER - sock.unread) as usize);
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        sock.unread += n as u32;
        sock.sent += n as u64;
        Ok(n)
    }

    fn peek(&mut self, s: SockRef, offset: usize, buf: &mut [u8]) -> io::Result<Peeked> {
        let sock = self.stream(s)?;
        if !sock.endless {
            return Ok(Peeked::bytes(0));
        }
        // Copy the pattern from stream position `discarded + offset`, wrapping around.
        let mut at = ((sock.discarded + offset as u64) % PATTERN_LEN as u64) as usize;
        let pattern = &self.pattern;
        let mut filled = 0;
        while filled < buf.len() {
            let n = (buf.len() - filled).min(PATTERN_LEN - at);
            buf[filled..filled + n].copy_from_slice(&pattern[at..at + n]);
            filled += n;
            at = 0;
        }
        Ok(Peeked::bytes(buf.len()))
    }

    fn discard(&mut self, s: SockRef, len: usize) -> io::Result<()> {
        let sock = self.stream(s)?;
        if !sock.endless {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        sock.discarded += len as u64;
        Ok(())
    }

    fn send_space(&mut self, s: SockRef) -> io::Result<u32> {
        let sock = self.stream(s)?;
        Ok(SEND_BUFFER - sock.unread)
    }

    fn shutdown_write(&mut self, s: SockRef) -> io::Result<()> {
        self.stream(s).map(|_| ())
    }

    fn set_interest(&mut self, _: SockRef, _: bool, _: bool) {}
}

// The benchmark's flows are TCP: datagram and echo sockets fail to open.
sans_io::refuse_datagrams!(FakeHost);
