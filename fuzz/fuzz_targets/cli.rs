//! The command line: any words give a value or an error, never a panic.
#![no_main]

use std::ffi::OsString;

use libfuzzer_sys::fuzz_target;
use passt::cli::parse;
use sans_io::config::Mode;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let mode = if first & 1 == 0 { Mode::Passt } else { Mode::Pasta };
    let mut args = vec![OsString::from(mode.name())];
    args.extend(
        rest.split(|&b| b == 0)
            .map(|w| OsString::from(String::from_utf8_lossy(w).into_owned())),
    );
    let _ = parse(mode, &args);
});
