//! DHCPv6 messages from the guest, in valid IPv6/UDP headers, through the engine.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::dhcpv6(data));
