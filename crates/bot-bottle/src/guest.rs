//! `bot-bottle-guest`: the qemu backend's small guest executable, built and installed with
//! `bot-bottle` and found next to it. Stage 2 of the guest's boot (its PID 1) and the relay
//! QEMU spawns in its jail for each guest connection to a sidecar
//! (`backend::inbottle::qemu_guest`); nothing else. It is its own executable so the guest
//! reads a few MB over 9p at boot instead of the whole `bot-bottle` (45 MB in release), and
//! QEMU's jail spawns a small process per connection.

fn main() {
    backend::inbottle::qemu_guest::dispatch(std::env::args_os().nth(1).as_deref());
    eprintln!(
        "error: bot-bottle-guest is internal to the qemu backend (its guest init and relay); run `bot-bottle` instead"
    );
    std::process::exit(2)
}
