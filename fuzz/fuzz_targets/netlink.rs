//! rtnetlink dump parsing: any bytes give a snapshot or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use os_shim::netlink::{parse_addrs, parse_links, parse_routes};

fuzz_target!(|data: &[u8]| {
    let _ = parse_links(data);
    let _ = parse_addrs(data);
    let _ = parse_routes(data);
});
