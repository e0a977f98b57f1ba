//! `pesto`: shows and changes the port forwarding of a running passt or pasta (see
//! `passt::pesto`).

fn main() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    std::process::exit(passt::pesto::main_with_args(&args));
}
