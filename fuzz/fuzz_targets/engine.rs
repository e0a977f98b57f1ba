//! Frames, socket events, data and time into the engine, in any order; its output must be well-formed (see sim::fuzzing).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::engine_ops(data));
