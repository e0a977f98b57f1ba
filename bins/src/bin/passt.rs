//! `passt`: the same program as `pasta`, in the mode its name says (see `passt::mode_from_argv0`).

fn main() {
    std::process::exit(passt::main_with_args(std::env::args_os().collect()));
}
