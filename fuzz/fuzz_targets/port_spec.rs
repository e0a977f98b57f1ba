//! The port-forwarding grammar: never panics, and what parses prints back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sans_io::fwd::PortSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(spec) = text.parse::<PortSpec>() {
        let printed = spec.to_string();
        assert_eq!(printed.parse::<PortSpec>().as_ref(), Ok(&spec), "{text:?} -> {printed:?}");
        if let PortSpec::Ports(ranges) = &spec {
            let _ = ranges.expand(32768..=60999);
        }
    }
});
