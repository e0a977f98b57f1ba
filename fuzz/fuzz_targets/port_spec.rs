//! The port-forwarding grammar: never panics, and what parses prints back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::port_spec(data));
