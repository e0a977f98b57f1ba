//! Where messages go: standard error, a size-capped file (`-l`, `--log-size`), the system
//! logger. A backend for the `log` facade, so every crate logs with `log::info!` and friends.
//!
//! The choice follows the original: `-l FILE` sends everything to the file only; `-d` and
//! `--trace` to standard error only; otherwise messages go to the system logger, and to
//! standard error as long as we are in the foreground. `-q` keeps warnings and errors.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// What the command line says about logging.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// "passt" or "pasta": prefix and syslog identity.
    pub ident: &'static str,
    pub quiet: bool,
    pub debug: bool,
    pub trace: bool,
    pub file: Option<PathBuf>,
    pub file_size: u64,
}

/// The part of a full log file dropped to make room, as in the original.
const CUT_RATIO: f64 = 0.3;
/// The system logger's socket.
const SYSLOG_PATH: &str = "/dev/log";
/// syslog facility "daemon" (3), shifted.
const FACILITY_DAEMON: u8 = 3 << 3;

struct LogFile {
    file: File,
    path: PathBuf,
    size: u64,
    cap: u64,
}

struct Logger {
    ident: &'static str,
    level: LevelFilter,
    to_stderr: AtomicBool,
    syslog: Option<UnixDatagram>,
    file: Option<Mutex<LogFile>>,
    start: Instant,
}

static STDERR_ENABLED: AtomicBool = AtomicBool::new(true);

/// Installs the logger. Returns an error only when the log file can't be created.
pub fn init(settings: &LogSettings) -> io::Result<()> {
    let level = if settings.trace {
        LevelFilter::Trace
    } else if settings.debug {
        LevelFilter::Debug
    } else if settings.quiet {
        LevelFilter::Warn
    } else {
        LevelFilter::Info
    };
    let file = match &settings.file {
        Some(path) => Some(Mutex::new(open_log_file(
            path,
            settings.ident,
            settings.file_size,
        )?)),
        None => None,
    };
    let syslog = if file.is_none() && !settings.debug {
        UnixDatagram::unbound()
            .ok()
            .filter(|s| s.connect(SYSLOG_PATH).is_ok())
    } else {
        None
    };
    let logger = Logger {
        ident: settings.ident,
        level,
        to_stderr: AtomicBool::new(file.is_none()),
        syslog,
        file,
        start: Instant::now(),
    };
    log::set_max_level(level);
    // A second init (tests) keeps the first logger.
    let _ = log::set_boxed_logger(Box::new(logger));
    Ok(())
}

/// Stops writing to standard error (after daemonising, it is /dev/null anyway).
pub fn detach_stderr() {
    STDERR_ENABLED.store(false, Ordering::Relaxed);
}

fn open_log_file(path: &Path, ident: &str, cap: u64) -> io::Result<LogFile> {
    let mut file = File::options()
        .create(true)
        .write(true)
        .read(true)
        .truncate(true)
        .open(path)?;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let header = format!(
        "{ident} {}: {exe} ({})\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    file.write_all(header.as_bytes())?;
    Ok(LogFile {
        file,
        path: path.to_owned(),
        size: header.len() as u64,
        cap,
    })
}

impl LogFile {
    fn append(&mut self, line: &str) -> io::Result<()> {
        if self.size + line.len() as u64 > self.cap {
            self.make_room(line.len() as u64)?;
        }
        self.file.seek(SeekFrom::Start(self.size))?;
        self.file.write_all(line.as_bytes())?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// Drops the oldest entries (after the header line), at least `CUT_RATIO` of the cap.
    fn make_room(&mut self, need: u64) -> io::Result<()> {
        // We know how much we wrote: read exactly that (read_to_end would ask the file's size
        // with statx first, a call the sandbox doesn't allow).
        let mut contents = vec![0u8; self.size as usize];
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_exact(&mut contents)?;
        let header_end = contents
            .iter()
            .position(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let cut_target = ((self.cap as f64 * CUT_RATIO) as u64).max(need) as usize;
        let mut cut_end = (header_end + cut_target).min(contents.len());
        // Cut at a line boundary.
        while cut_end < contents.len() && contents[cut_end - 1] != b'\n' {
            cut_end += 1;
        }
        let mut kept = contents[..header_end].to_vec();
        kept.extend_from_slice(&contents[cut_end..]);
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&kept)?;
        self.size = kept.len() as u64;
        Ok(())
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let prefix = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            _ => "",
        };
        let text = format!("{prefix}{}", record.args());
        if let Some(file) = &self.file {
            if let Ok(mut f) = file.lock() {
                let t = self.start.elapsed();
                let line = format!("{}.{:04}: {text}\n", t.as_secs(), t.subsec_micros() / 100);
                if f.append(&line).is_err() {
                    let _ = writeln!(
                        io::stderr(),
                        "{}: cannot write log file {}",
                        self.ident,
                        f.path.display()
                    );
                }
            }
        }
        if self.to_stderr.load(Ordering::Relaxed) && STDERR_ENABLED.load(Ordering::Relaxed) {
            // Problems name the program (callers show our stderr to users); informational
            // lines, like the configuration summary, are printed as they are.
            let mut err = io::stderr().lock();
            let _ = match record.level() {
                Level::Error | Level::Warn => writeln!(err, "{}: {text}", self.ident),
                _ => writeln!(err, "{text}"),
            };
        }
        if let Some(sock) = &self.syslog {
            let severity = match record.level() {
                Level::Error => 3,
                Level::Warn => 4,
                Level::Info => 6,
                Level::Debug | Level::Trace => 7,
            };
            let msg = format!(
                "<{}>{}[{}]: {text}",
                FACILITY_DAEMON | severity,
                self.ident,
                std::process::id()
            );
            let _ = sock.send(msg.as_bytes());
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_file_keeps_its_header_and_stays_under_the_cap() {
        let dir = std::env::temp_dir().join(format!("log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pasta.log");
        let mut f = open_log_file(&path, "pasta", 4096).unwrap();
        for i in 0..500 {
            f.append(&format!("0.{i:04}: line number {i}\n")).unwrap();
            assert!(f.size <= 4096, "size {} after line {i}", f.size);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("pasta "), "{text}");
        assert!(text
            .lines()
            .next()
            .unwrap()
            .ends_with(&format!("({})", std::process::id())));
        assert!(text.contains("line number 499"));
        assert!(!text.contains("line number 0\n"));
        // Entries stay whole after cuts: every line but the header has the timestamp shape.
        assert!(text
            .lines()
            .skip(1)
            .all(|l| l.starts_with("0.") && l.contains("line number")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
