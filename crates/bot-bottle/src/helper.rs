//! `bot-bottle-helper`: the native backend's in-bottle helper (`__bottle-init`, see
//! `backend::inbottle::native_helper`), built and installed with `bot-bottle` and found next
//! to it (`backend::OpenOptions::native_helper`); nothing else. Every native `start` executes
//! the helper once, before the agent: as its own executable it maps and relocates a few MB
//! instead of the whole `bot-bottle` (45 MB in release). Where it is missing, `bot-bottle
//! __bottle-init` runs the same code.

fn main() {
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(backend::native::HELPER_SUBCOMMAND))
    {
        backend::inbottle::native_helper::helper_main();
    }
    eprintln!(
        "error: bot-bottle-helper is internal to the native backend (its in-bottle helper); run `bot-bottle` instead"
    );
    std::process::exit(2)
}
