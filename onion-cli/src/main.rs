//! `onion`: the command-line face of the onion Tor stack.
//!
//! Each subcommand lives in its own module under `src/cmd/`, with a
//! `pub fn run(args: &[String]) -> Result<(), String>`; this file only dispatches.
//! Errors print as one line on stderr and exit with status 1.

mod cmd;
mod net;

use std::process::ExitCode;

const USAGE: &str = "usage: onion <command> [args]

commands:
  help                     this text
  version                  print the version
  consensus summary FILE [--certs FILE] [--authorities FILE] [--now TIME]   consensus as JSON
  cell decode --link-version N [--plaintext] [--stream] HEX   decode Tor cells (JSON)
  bootstrap [--authorities FILE] [--dir-mode micro|full]   verified directory summary (JSON)
  get URL [--authorities FILE] [--data-dir DIR]    fetch an http:// URL through Tor
  handshake ADDR:PORT --rsa-id HEX [--ed-id B64]   link handshake with one relay (JSON)
  socks --listen ADDR:PORT [--authorities FILE]    SOCKS5 proxy over Tor
  serve --target ADDR:PORT --key-dir DIR [--authorities FILE]  host an onion service
  hs address --public-key FILE|HEX                  onion address of a key (JSON)
  hs descriptor decrypt --address ADDR FILE [--client-key FILE]   decrypt a v3 descriptor (JSON)
  sim [--bytes N] [--seed N] [--hops N] [--quiet] [--json]   in-memory Tor network: fetch through 3 hops, step by step";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match command.as_str() {
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        "version" | "--version" => {
            println!("onion {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        // Subcommands are dispatched here, one line each: "name" => cmd::name::run(rest),
        "bootstrap" => cmd::bootstrap::run(rest),
        "consensus" => cmd::consensus::run(rest),
        "cell" => cmd::cell::run(rest),
        "get" => cmd::get::run(rest),
        "handshake" => cmd::handshake::run(rest),
        "socks" => cmd::socks::run(rest),
        "serve" => cmd::serve::run(rest),
        "hs" => cmd::hs::run(rest),
        "sim" => cmd::sim::run(rest),
        other => Err(format!("unknown command `{other}` (try `onion help`)")),
    };
    let _ = rest;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("onion: error: {e}");
            ExitCode::FAILURE
        }
    }
}
