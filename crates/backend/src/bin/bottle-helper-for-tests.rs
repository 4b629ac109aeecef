//! The in-bottle helper as its own executable, for this crate's integration tests only
//! (`bot-bottle` runs the same code through its hidden `__bottle-init` subcommand).

fn main() {
    backend::native::helper_main()
}
