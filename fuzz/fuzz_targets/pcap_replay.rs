//! Any bytes as a capture to replay: an error or a verdict, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::pcap_replay(data));
