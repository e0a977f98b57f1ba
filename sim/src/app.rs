//! Applications at either end of a TCP connection: the same behaviours drive a virtual host's
//! peer sockets and the guest's smoltcp sockets, so that a scenario reads like "a source on one
//! side, a sink on the other".

use std::time::Duration;

use sans_io::time::Instant;

use crate::pattern::Pattern;

/// What an application does with its connection.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// Bytes to send: a pattern and how many.
    pub send: Option<(Pattern, u64)>,
    /// Send only after reading the end of the peer's stream (a reply to a half-close).
    pub send_after_eof: bool,
    /// Write back what it reads (as space allows; it reads no faster than it can echo).
    pub echo: bool,
    /// Whether it reads at all (a stalled reader doesn't).
    pub read: bool,
    /// Read at most this many bytes per millisecond.
    pub read_rate: Option<usize>,
    /// Write at most this many bytes per millisecond.
    pub send_rate: Option<usize>,
    /// Close its sending direction (FIN) once done sending: after its data for a source, after
    /// the peer's end of stream otherwise.
    pub fin: bool,
    /// Abort (RST) once this many bytes were received.
    pub reset_after: Option<u64>,
    /// Abort (RST) once done sending, instead of a FIN.
    pub reset_when_sent: bool,
    /// Send in requests of this many bytes, each once the one before was answered (as many
    /// bytes back as were sent: an echo server's answer), as a client of a request/response
    /// protocol does.
    pub request_size: Option<u64>,
}

impl App {
    /// Reads everything; closes when the peer does.
    pub fn sink() -> App {
        App {
            send: None,
            send_after_eof: false,
            echo: false,
            read: true,
            read_rate: None,
            send_rate: None,
            fin: true,
            reset_after: None,
            reset_when_sent: false,
            request_size: None,
        }
    }

    /// Sends `len` bytes of `Pattern(0)`, then FIN; reads whatever comes.
    pub fn source(len: u64) -> App {
        App::source_pattern(Pattern(0), len)
    }

    pub fn source_pattern(p: Pattern, len: u64) -> App {
        App {
            send: Some((p, len)),
            ..App::sink()
        }
    }

    /// Sends `len` bytes of `p`, `bytes_per_ms` a millisecond, then FIN.
    pub fn paced_source(p: Pattern, len: u64, bytes_per_ms: usize) -> App {
        App {
            send_rate: Some(bytes_per_ms),
            ..App::source_pattern(p, len)
        }
    }

    /// Sends `count` requests of `size` bytes of `p`, each once the one before came back
    /// (from an echo server), then FIN.
    pub fn requests(p: Pattern, count: u64, size: u64) -> App {
        App {
            request_size: Some(size),
            ..App::source_pattern(p, count * size)
        }
    }

    /// Writes back what it reads; closes after the peer's end of stream.
    pub fn echo() -> App {
        App {
            echo: true,
            ..App::sink()
        }
    }

    /// Reads `bytes_per_ms` bytes a millisecond.
    pub fn slow_sink(bytes_per_ms: usize) -> App {
        App {
            read_rate: Some(bytes_per_ms),
            ..App::sink()
        }
    }

    /// Does nothing: neither reads nor writes nor closes.
    pub fn idle() -> App {
        App {
            read: false,
            fin: false,
            ..App::sink()
        }
    }

    /// After the peer's end of stream, answers with `len` bytes of `p`, then FIN.
    pub fn reply_after_eof(mut self, p: Pattern, len: u64) -> App {
        self.send = Some((p, len));
        self.send_after_eof = true;
        self
    }

    pub fn reset_after(mut self, received: u64) -> App {
        self.reset_after = Some(received);
        self
    }

    pub fn reset_when_sent(mut self) -> App {
        self.reset_when_sent = true;
        self
    }

    pub fn no_fin(mut self) -> App {
        self.fin = false;
        self
    }
}

/// A byte stream as an application sees it.
pub trait StreamIo {
    /// Reads up to `buf.len()` bytes; 0 when none are there.
    fn read(&mut self, buf: &mut [u8]) -> usize;
    /// Every byte was read and the peer closed its direction.
    fn at_eof(&self) -> bool;
    /// How many bytes a write would take now.
    fn write_space(&self) -> usize;
    fn write(&mut self, data: &[u8]) -> usize;
    /// FIN after what was written.
    fn shutdown(&mut self);
    /// RST.
    fn abort(&mut self);
    /// The connection can carry data (established, not reset).
    fn usable(&self) -> bool;
}

/// An application's progress.
#[derive(Debug, Clone)]
pub struct AppState {
    pub app: App,
    pub received: Vec<u8>,
    pub sent: u64,
    pub eof: bool,
    pub fin_sent: bool,
    pub aborted: bool,
    /// When the last byte was received, the end of stream seen, FIN sent.
    pub last_rx_at: Option<Instant>,
    pub eof_at: Option<Instant>,
    pub fin_at: Option<Instant>,
    next_read: Instant,
    next_send: Instant,
}

const CHUNK: usize = 16 * 1024;

impl AppState {
    pub fn new(app: App) -> AppState {
        AppState {
            app,
            received: Vec::new(),
            sent: 0,
            eof: false,
            fin_sent: false,
            aborted: false,
            last_rx_at: None,
            eof_at: None,
            fin_at: None,
            next_read: Instant::ZERO,
            next_send: Instant::ZERO,
        }
    }

    fn send_len(&self) -> u64 {
        self.app.send.map_or(0, |(_, len)| len)
    }

    /// Everything it meant to do is done.
    pub fn done(&self) -> bool {
        self.aborted || (self.eof && (self.fin_sent || !self.app.fin))
    }

    /// Everything it meant to send was sent.
    pub fn sent_all(&self) -> bool {
        self.sent >= self.send_len()
    }

    /// When it next wants to run (a rate-limited reader, or writer), if it has a reason to.
    pub fn poll_at(&self, now: Instant, pending: bool) -> Option<Instant> {
        let read = (pending
            && self.app.read
            && self.app.read_rate.is_some()
            && !self.aborted
            && !self.eof
            && self.next_read > now)
            .then_some(self.next_read);
        let send = (self.app.send_rate.is_some()
            && !self.aborted
            && !self.sent_all()
            && self.next_send > now)
            .then_some(self.next_send);
        read.into_iter().chain(send).min()
    }

    /// Does what it can at `now`; returns whether anything happened.
    pub fn run(&mut self, now: Instant, io: &mut dyn StreamIo) -> bool {
        if self.aborted || !io.usable() {
            return false;
        }
        let mut progress = false;
        let mut buf = [0u8; CHUNK];
        // Reading (and echoing).
        if self.app.read && !self.eof {
            let mut budget = usize::MAX;
            if let Some(rate) = self.app.read_rate {
                budget = if now >= self.next_read { rate } else { 0 };
            }
            let mut got_any = false;
            while budget > 0 {
                let mut want = budget.min(CHUNK);
                if self.app.echo {
                    want = want.min(io.write_space());
                }
                if let Some(limit) = self.app.reset_after {
                    want = want.min((limit.saturating_sub(self.received.len() as u64)) as usize);
                }
                if want == 0 {
                    break;
                }
                let n = io.read(&mut buf[..want]);
                if n == 0 {
                    break;
                }
                got_any = true;
                budget -= n;
                self.received.extend_from_slice(&buf[..n]);
                if self.app.echo {
                    let w = io.write(&buf[..n]);
                    debug_assert_eq!(w, n);
                    self.sent += w as u64;
                }
            }
            if got_any {
                progress = true;
                self.last_rx_at = Some(now);
                if self.app.read_rate.is_some() {
                    self.next_read = now + Duration::from_millis(1);
                }
            }
            if io.at_eof() {
                self.eof = true;
                self.eof_at = Some(now);
                progress = true;
            }
        }
        if let Some(limit) = self.app.reset_after {
            if self.received.len() as u64 >= limit {
                io.abort();
                self.aborted = true;
                return true;
            }
        }
        // Sending.
        if let Some((pattern, len)) = self.app.send.filter(|_| !self.app.echo) {
            if (!self.app.send_after_eof || self.eof) && !self.fin_sent {
                let mut budget = match self.app.send_rate {
                    Some(rate) if now >= self.next_send => rate,
                    Some(_) => 0,
                    None => usize::MAX,
                };
                let paced = budget != usize::MAX;
                let before = self.sent;
                // A request/response client: the next request only once the last came back.
                let len = self
                    .app
                    .request_size
                    .map_or(len, |r| len.min(self.received.len() as u64 + r));
                while self.sent < len && budget > 0 {
                    let want = (len - self.sent)
                        .min(io.write_space() as u64)
                        .min(budget.min(CHUNK) as u64) as usize;
                    if want == 0 {
                        break;
                    }
                    pattern.fill(self.sent, &mut buf[..want]);
                    let n = io.write(&buf[..want]);
                    if n == 0 {
                        break;
                    }
                    self.sent += n as u64;
                    budget -= n;
                    progress = true;
                }
                if paced && self.sent > before {
                    self.next_send = now + Duration::from_millis(1);
                }
            }
        }
        // Closing.
        let sending_role = self.app.send.is_some() && !self.app.send_after_eof && !self.app.echo;
        if !self.fin_sent && self.sent_all() && (self.eof || sending_role) {
            if self.app.reset_when_sent {
                io.abort();
                self.aborted = true;
                return true;
            }
            if self.app.fin {
                io.shutdown();
                self.fin_sent = true;
                self.fin_at = Some(now);
                progress = true;
            }
        }
        progress
    }
}
