//! The control-socket protocol (pesto and `pasta -c`): the decoder never panics, and what it
//! accepts encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::control(data));
