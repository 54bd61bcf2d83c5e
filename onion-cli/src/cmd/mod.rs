//! One module per `onion` subcommand.

pub mod bootstrap;
pub mod cell;
pub mod consensus;
pub mod get;
pub mod handshake;
pub mod hs;
pub mod path;
pub mod serve;
pub mod sim;
pub mod socks;

/// The arguments of a command that parses its own (`socks`, `serve`, `hs`): everything after
/// the command name, handed over as given.
#[derive(clap::Args)]
pub struct PassThrough {
    /// The command's arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}
