//! Running pasta with `--pcap`, and reading what it wrote: the frames of a classic pcap file
//! (microsecond timestamps, Ethernet), checked for its header and for trailing bytes.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use super::{bin, run_timeout, Lab};

/// The source MAC of the frames pasta sends to its namespace (the lab host's own).
pub const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 2];

/// Each record's frame, in order.
pub fn frames(file: &[u8]) -> Vec<&[u8]> {
    assert!(file.len() >= 24, "no pcap header");
    assert_eq!(
        u32::from_ne_bytes(file[0..4].try_into().unwrap()),
        0xa1b2_c3d4,
        "magic"
    );
    assert_eq!(
        u32::from_ne_bytes(file[20..24].try_into().unwrap()),
        1,
        "link type"
    );
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= file.len() {
        let len = u32::from_ne_bytes(file[at + 8..at + 12].try_into().unwrap()) as usize;
        out.push(&file[at + 16..at + 16 + len]);
        at += 16 + len;
    }
    assert_eq!(at, file.len(), "trailing bytes");
    out
}

/// Runs `command` in a namespace of pasta's (`--config-net`) from the lab's host, capturing
/// into `file`, within `timeout`.
pub fn run_pasta_capturing(lab: &Lab, file: &Path, command: &[&str], timeout: Duration) -> Output {
    let mut args = vec!["--config-net", "--pcap", file.to_str().unwrap(), "--"];
    args.extend_from_slice(command);
    run_timeout(&mut lab.host_command(None, &bin("pasta"), &args), timeout)
}
