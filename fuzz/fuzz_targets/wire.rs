//! Every wire parser (Ethernet, IPv4, IPv6, UDP, TCP and its options, DNS names) and the replay's decoder on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::wire(data));
