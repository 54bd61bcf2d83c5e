//! One module per `onion` subcommand.

pub mod bootstrap;
pub mod cell;
pub mod consensus;
pub mod get;
pub mod handshake;
pub mod hs;
pub mod path;
pub mod proxy;
pub mod relay;
pub mod serve;
pub mod sim;
pub mod socks;
