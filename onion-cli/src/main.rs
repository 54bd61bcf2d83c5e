//! `onion`: the command-line face of the onion Tor stack.
//!
//! Each subcommand lives in its own module under `src/cmd/`, with a `clap` `Args` struct and
//! a `pub fn run(args: Args) -> Result<(), String>`; this file only parses and dispatches.
//!
//! Exit status: 0 on success (and for `--help` / `--version`), 1 when the command failed
//! (one line on stderr, `onion: error: ...`), 2 when the command line itself is wrong (one
//! line on stderr too, naming the option and pointing at `--help`).

mod cmd;
mod net;
mod relay;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A Tor client, onion service and toolbox built on onion's sans-IO crates.
#[derive(Parser)]
#[command(name = "onion", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verified directory summary (JSON): bootstrap from the directory authorities.
    Bootstrap(cmd::bootstrap::Args),
    /// Directory-document tools: summarise a consensus, choose a path (JSON).
    Consensus(cmd::consensus::Args),
    /// Decode captured Tor cells (JSON).
    Cell(cmd::cell::Args),
    /// Fetch an http:// URL (or an onion service) through Tor; the body goes to stdout.
    Get(cmd::get::Args),
    /// Link handshake with one relay (JSON).
    Handshake(cmd::handshake::Args),
    /// SOCKS5 proxy over Tor.
    Socks(cmd::socks::Args),
    /// Run a Tor relay on an ORPort, publishing its descriptor to the authorities.
    Relay(cmd::relay::Args),
    /// Host a v3 onion service.
    Serve(cmd::serve::Args),
    /// Onion-service tools: addresses, descriptors (JSON).
    Hs(cmd::hs::Args),
    /// The in-memory Tor network: fetch through simulated relays, step by step.
    Sim(cmd::sim::Args),
    /// Print the version.
    #[command(hide = true)]
    Version,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        Command::Bootstrap(a) => cmd::bootstrap::run(a),
        Command::Consensus(a) => cmd::consensus::run(a),
        Command::Cell(a) => cmd::cell::run(a),
        Command::Get(a) => cmd::get::run(a),
        Command::Handshake(a) => cmd::handshake::run(a),
        Command::Socks(a) => cmd::socks::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Relay(a) => cmd::relay::run(a),
        Command::Hs(a) => cmd::hs::run(a),
        Command::Sim(a) => cmd::sim::run(a),
        Command::Version => {
            println!("onion {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("onion: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--help` and `--version` print and succeed; any other parse error is one line on stderr
/// and exit status 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("onion: error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// clap's message as one line: its first line without the `error: ` prefix, and where to
/// look for the usage.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("bad command line");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    format!("{first} (see --help)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse_err(args: &[&str]) -> clap::Error {
        match Cli::try_parse_from(std::iter::once("onion").chain(args.iter().copied())) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => e,
        }
    }

    #[test]
    fn help_and_version_are_not_errors() {
        use clap::error::ErrorKind;
        for sub in [
            "bootstrap",
            "consensus",
            "cell",
            "get",
            "handshake",
            "socks",
            "serve",
            "hs",
            "sim",
        ] {
            assert_eq!(
                parse_err(&[sub, "--help"]).kind(),
                ErrorKind::DisplayHelp,
                "{sub}"
            );
        }
        assert_eq!(parse_err(&["--help"]).kind(), ErrorKind::DisplayHelp);
        assert_eq!(parse_err(&["--version"]).kind(), ErrorKind::DisplayVersion);
    }

    #[test]
    fn usage_errors_are_one_line() {
        for args in [
            &["get", "http://x/", "--bogus"][..],
            &["handshake", "127.0.0.1:1", "--rsa-id", "zz"],
            &["nonsense"],
            &[],
        ] {
            let line = one_line(&parse_err(args));
            assert!(!line.contains('\n'), "{args:?}: {line}");
            assert!(line.ends_with("(see --help)"), "{args:?}: {line}");
        }
    }
}
