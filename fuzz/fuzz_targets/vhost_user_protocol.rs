//! See `os_shim::vhost_user::fuzzing::protocol`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| os_shim::vhost_user::fuzzing::protocol(data));
