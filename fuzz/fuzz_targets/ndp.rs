//! NDP messages (and their options) from the guest, with valid checksums, through the engine.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::ndp(data));
