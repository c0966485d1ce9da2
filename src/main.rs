//! The `pulsedev` binary: parse, run, map the outcome to an exit code. Nothing else.

fn main() {
    let code = pulsedev::cli::run(std::env::args_os().collect());
    std::process::exit(code);
}
