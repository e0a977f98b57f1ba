//! `qrap`: connects to a passt socket and runs qemu with it as an inherited descriptor, for qemu
//! versions without `-netdev stream`. Not functional until passt's socket exists (issue 7).

fn main() {
    eprintln!("qrap: not implemented in this build yet");
    std::process::exit(1);
}
