//! The qemu backend's guest executable for this crate's integration tests only: the same
//! stage 2 and relay as `bot-bottle-guest` (a binary of the `bot-bottle` package, which these
//! tests do not build).

fn main() {
    backend::inbottle::qemu_guest::dispatch(std::env::args_os().nth(1).as_deref());
    eprintln!("error: qemu-guest-for-tests is the qemu backend's guest init and relay");
    std::process::exit(2)
}
