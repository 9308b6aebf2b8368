//! One module per subcommand.

pub mod generate;
pub mod import;
pub mod nll;
