//! resolv.conf parsing never panics on any text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sans_io::config::resolv::ResolvConf;

fuzz_target!(|data: &[u8]| {
    let _ = ResolvConf::parse(&String::from_utf8_lossy(data));
});
