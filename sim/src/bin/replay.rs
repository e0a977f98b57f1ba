//! Replays a capture through our engine and says whether it answers as recorded:
//!
//! ```text
//! cargo run -p sim --bin replay -- FILE.pcap [--lab LAB]
//! ```
//!
//! FILE is what `pasta --pcap FILE` (ours or the original's) or `passt --pcap` wrote, or any
//! pcap/pcapng of the guest's link. LAB describes the host the capture was taken on (see
//! `sim::replay::Setup::parse`); without it, the lab of `testdata/captures/record-pasta.sh`.
//! Exit status: 0 same, 1 different, 2 the capture or the lab can't be read.

use std::io::Write;
use std::process::ExitCode;

use sim::replay::{replay_bytes, Setup};

const USAGE: &str = "usage: replay FILE.pcap [--lab LAB] [--trace] [--print-lab]";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let mut lab = None;
    let mut trace = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--lab" => match args.next() {
                Some(l) => lab = Some(l),
                None => return usage(),
            },
            "--trace" => trace = true,
            "--print-lab" => {
                print!("{}", sim::replay::CAPTURE_LAB);
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if file.is_none() && !a.starts_with('-') => file = Some(a),
            _ => return usage(),
        }
    }
    let Some(file) = file else {
        return usage();
    };
    let mut setup = match &lab {
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| Setup::parse(&t))
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("replay: {path}: {e}");
                return ExitCode::from(2);
            }
        },
        None => Setup::capture_lab(),
    };
    setup.trace = trace;
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("replay: {file}: {e}");
            return ExitCode::from(2);
        }
    };
    match replay_bytes(&bytes, &setup) {
        Ok(report) => {
            // A closed pipe (`| head`) ends the output, not the program.
            let mut out = std::io::stdout().lock();
            for line in &report.trace {
                let _ = writeln!(out, "{line}");
            }
            let _ = writeln!(out, "replay of {file}:\n{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("replay: {file}: {e}");
            ExitCode::from(2)
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}
