//! The docker backend's in-container init as its own executable, for this crate's integration
//! tests only (`bot-bottle` runs the same code through a hidden subcommand).

fn main() {
    backend::docker::init::init_main()
}
