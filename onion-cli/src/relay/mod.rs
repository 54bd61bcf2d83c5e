//! `onion relay`: sockets, TLS, key files and descriptor uploads around the sans-IO
//! `onion_relay::Relay` (the protocol lives there and in `onion_dir::relaydesc`).

pub mod circparams;
pub mod dircache;
pub mod io;
pub mod keys;
pub mod publish;
pub mod selftest;
pub mod server;
pub mod view;
