//! `qrap`: connects to a passt socket and runs an older qemu with it as an inherited
//! descriptor (see `passt::qrap`).

fn main() {
    std::process::exit(passt::qrap::main_with_args(std::env::args_os().collect()));
}
