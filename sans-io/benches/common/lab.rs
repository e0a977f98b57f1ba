//! The network the benchmark's engine serves, the tests' own (`sans-io/tests/common`): pasta
//! on their dual-stack host (192.0.2.2/24 and 2001:db8::2/64 behind 192.0.2.1 and fe80::1);
//! and frames a real guest sent, from `testdata/captures/`.

#[path = "../../tests/common/mod.rs"]
mod tests_common;

use sans_io::config::{Config, Mode, NetOptions};

pub use tests_common::{captured, GUEST_MAC};

/// pasta's configuration on the tests' dual-stack host, every service on.
pub fn config() -> Config {
    let opts = NetOptions::new(Mode::Pasta);
    let config = tests_common::derive_config(&opts, &tests_common::dual_stack::host());
    assert!(
        config.services.dhcp && config.services.ra,
        "DHCP and NDP are on in the lab"
    );
    config
}
