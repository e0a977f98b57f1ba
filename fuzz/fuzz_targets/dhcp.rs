//! DHCP messages from the guest, in valid IPv4/UDP headers, through the engine.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::dhcp(data));
