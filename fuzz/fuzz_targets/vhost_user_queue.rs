//! See `os_shim::vhost_user::fuzzing::virtqueue`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| os_shim::vhost_user::fuzzing::virtqueue(data));
