//! `pesto`: shows and changes the port forwarding of a running passt or pasta through its
//! control socket (`-c PATH`), speaking the C original's protocol ([`sans_io::control`]).
//!
//! One connection: read the hello and every table, apply the change options to a copy
//! (`apply`), print, and send every table back (nothing in list mode). The server says
//! nothing back, as with the C one: exit 0 means the tables were sent.

mod apply;
mod args;
mod listing;

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::ops::RangeInclusive;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use sans_io::control::status::STATUS_REASON_MAX;
use sans_io::control::{
    decode_status, encode_update_table, write_end, Status, Stream, TablesBuilder, STATUS_MAGIC,
};
use sans_io::fwd::rule::ForwardTable;

use crate::EXIT_FAILURE;
use apply::Table;
use args::{Command, Run};

/// How long the server may take to answer or accept our bytes: it serves one client at a
/// time, so a wait is normal, but not an endless one.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// `sizeof(sun_path)`, with its terminating NUL.
const SUN_PATH_MAX: usize = 108;
/// Where Linux keeps the ephemeral port range that `all`, `auto` and exclusion-only specs
/// leave out, and its default.
const EPHEMERAL_SYSCTL: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const EPHEMERAL_DEFAULT: RangeInclusive<u16> = 32768..=60999;

/// Runs pesto with its arguments (without the program name); the exit status.
pub fn main_with_args(args: &[OsString]) -> i32 {
    let run = match args::parse(args) {
        Ok(Command::Help) => return exit_status(stdout(args::USAGE)),
        Ok(Command::Version) => {
            return exit_status(stdout(&format!("pesto {}\n", env!("CARGO_PKG_VERSION"))))
        }
        Ok(Command::Run(run)) => run,
        Err(e) => {
            eprintln!("pesto: {e}");
            eprint!("{}", args::USAGE);
            return EXIT_FAILURE;
        }
    };
    exit_status(session(&run))
}

fn exit_status(result: Result<(), String>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(line) => {
            eprintln!("{line}");
            EXIT_FAILURE
        }
    }
}

/// Writes to standard output; a closed one is an error to report, not a panic.
fn stdout(text: &str) -> Result<(), String> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("Error writing to standard output: {}", strerror(&e)))
}

/// One connection; the error is the one line to print.
fn session(run: &Run) -> Result<(), String> {
    let path = run.path.to_string_lossy().into_owned();
    if run.path.as_bytes().len() >= SUN_PATH_MAX || run.path.as_bytes().contains(&0) {
        return Err(format!("Invalid socket path \"{path}\""));
    }
    let mut stream = UnixStream::connect(&run.path)
        .map_err(|e| format!("Failed to connect to {path}: {}", strerror(&e)))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| format!("Can't set socket timeouts: {}", strerror(&e)))?;

    let mut tables = read_tables(&mut stream, run.debug)?;
    if run.is_list() {
        stdout(&listing::format(
            "passt/pasta configuration",
            &path,
            &tables,
        ))?;
        return Ok(());
    }
    if run.show {
        stdout(&listing::format("Previous configuration", &path, &tables))?;
    }
    apply::apply(&mut tables, &run.ops, ephemeral_range())?;
    if run.show {
        stdout(&listing::format("Updated configuration", &path, &tables))?;
    }
    let mut out = Vec::new();
    for t in &tables {
        encode_update_table(t.pif, t.rules.rules(), &mut out)
            .map_err(|e| format!("Can't encode rules for {}: {e}", t.name))?;
    }
    write_end(&mut out);
    stream
        .write_all(&out)
        .map_err(|e| format!("Error writing to control socket: {}", strerror(&e)))?;
    // The server reads until our end marker; closing our side tells it we're done either way.
    // Then we wait (at most IO_TIMEOUT) for it to close the connection, which it does once it
    // has applied the update or refused it: when pesto exits, the new forwards are in place
    // (the C pesto exits at once, so its caller may race the server). Our server says how it
    // went first (sans_io::control::status); the C one says nothing, and then neither do we.
    let _ = stream.shutdown(Shutdown::Write);
    let answer = read_answer(&mut stream);
    match decode_status(&answer) {
        Ok(Some(Status::Refused(why))) => Err(format!("Forwarding rules not applied: {why}")),
        Ok(_) => Ok(()),
        Err(e) => {
            if run.debug {
                eprintln!("pesto: ignoring the server's answer: {e}");
            }
            Ok(())
        }
    }
}

/// What the server sends after our update, up to its close or IO_TIMEOUT; at most a status
/// message's worth (more is not a status message).
fn read_answer(stream: &mut UnixStream) -> Vec<u8> {
    let max = STATUS_MAGIC.len() + 3 + STATUS_REASON_MAX + 1;
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while answer.len() < max {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n.min(max - answer.len())]),
        }
    }
    answer
}

/// The hello and every table, reading no further than the end marker.
fn read_tables(stream: &mut UnixStream, debug: bool) -> Result<Vec<Table>, String> {
    let mut builder = TablesBuilder::new(Stream::Listing);
    let mut buf = [0u8; 4096];
    while !builder.is_done() {
        // The C pesto's texts: the greeting first, the tables after it.
        let what = if builder.hello().is_none() {
            "Couldn't read server greeting"
        } else {
            "Error reading from control socket"
        };
        let want = builder.wanted().clamp(1, buf.len());
        let n = match stream.read(&mut buf[..want]) {
            Ok(0) => return Err(format!("{what}: the server closed the connection")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "{what}: no answer within {} s",
                    IO_TIMEOUT.as_secs()
                ))
            }
            Err(e) => return Err(format!("{what}: {}", strerror(&e))),
        };
        builder.feed(&buf[..n]).map_err(|e| e.to_string())?;
    }
    if debug {
        if let Some(h) = builder.hello() {
            eprintln!("pesto: server protocol version {}", h.version);
        }
    }
    let mut tables: Vec<Table> = Vec::new();
    for t in builder.into_tables() {
        let (name, caps) = t
            .info
            .unwrap_or_else(|| (t.pif.name().to_owned(), Default::default()));
        if tables.iter().any(|other| other.name == name) {
            return Err("Received duplicate interface name".into());
        }
        if debug {
            eprintln!(
                "pesto: table {name} (pif {}), caps 0x{:x}, {} rules",
                t.pif.number(),
                caps.0,
                t.rules.len()
            );
        }
        // As received, unchecked: shown and sent back as the server holds them.
        let rules = ForwardTable::from_rules_unchecked(t.rules).map_err(|e| e.to_string())?;
        tables.push(Table {
            pif: t.pif,
            name,
            caps,
            rules,
        });
    }
    Ok(tables)
}

/// The host's ephemeral ports, as the C pesto reads them; the kernel's default if unreadable.
fn ephemeral_range() -> RangeInclusive<u16> {
    let Ok(text) = std::fs::read_to_string(EPHEMERAL_SYSCTL) else {
        return EPHEMERAL_DEFAULT;
    };
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => lo..=hi,
        _ => EPHEMERAL_DEFAULT,
    }
}

/// The error's text without Rust's " (os error N)", as C's `strerror` prints it.
fn strerror(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}
