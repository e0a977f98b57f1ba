//! The /proc/net socket-table parser (pasta's `auto` forwarding) never panics and reports
//! only real ports, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sim::fuzzing::procnet(data));
