//! `onion get URL [--authorities FILE] [--data-dir DIR] [--timeout SECS] [--dir-mode M]`: fetch an
//! `http://` URL through a 3-hop circuit and print the body on stdout.
//!
//! Bootstraps from the directory authorities in FILE (C tor's `DirAuthority` format; the
//! public Tor network's list when absent), reusing fresh documents from DIR, builds a
//! circuit whose exit allows the destination, opens a stream and sends one HTTP/1.0 GET.
//! Progress goes to stderr. Every network wait is bounded by `--timeout` (default 120 s).
//! `--dir-mode micro|full` forces microdescriptors or full descriptors (the default: full on a
//! testing network, micro otherwise). `--exit RELAY` (fingerprint or nickname) is an explicit
//! exit choice (path-spec §2.2.2, [`onion_client::Client::connect_via`]): the path ends at
//! that relay whatever its descriptor's policy says, and only the exit itself decides. It is
//! how a microdescriptor client reaches a private network's exits, whose 127.0.0.0/8 policy
//! no summary can express.
//!
//! Everything runs on [`onion_client::Client`] ([`Driver`]). The response is read by
//! onion-dir's [`ResponseReader`], the parser of every directory response too: any status,
//! `Content-Length` honoured, a `deflate` or `gzip` body decompressed.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use onion_cell::relaymsg::EndReason;
use onion_circuit::Instant;
use onion_client::dir::authorities::{self, DirAuthority};
use onion_client::dir::DirMode;
use onion_client::{
    CcView, CircuitView, Client, ClientConfig, Event, Isolation, Purpose, StreamHandle,
};
use onion_dir::http::{RawResponse, ResponseReader};
use onion_hs::x25519_dalek;

use crate::net::cache::Cache;
use crate::net::driver::{self, Driver, Happening};
use onion_client::text;

/// `onion get` (see the module documentation).
#[derive(clap::Args)]
pub struct Args {
    /// The `http://` URL to fetch (`http://ADDRESS.onion/...` for an onion service).
    #[arg(value_name = "URL")]
    url: String,
    /// Use this relay as the exit (fingerprint or nickname), whatever its policy says.
    #[arg(long, value_name = "FINGERPRINT|NICKNAME")]
    exit: Option<String>,
    /// Client-authorization key for the onion service (C tor's `.auth_private` file).
    #[arg(long, value_name = "FILE")]
    client_key: Option<String>,
    #[command(flatten)]
    cc: CcArgs,
    #[command(flatten)]
    net: NetArgs,
}

/// Congestion control (proposal 324, Tor Vegas): on by default, as in C tor 0.4.9. It is
/// negotiated with an exit that advertises FlowCtrl=2 and ntor-v3, with an onion service whose
/// descriptor advertises flow-control, and only while the consensus enables it (cc_alg != 0).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct CcArgs {
    /// Negotiate congestion control where it is offered (the default).
    #[arg(long, overrides_with = "no_congestion_control")]
    congestion_control: bool,
    /// Use fixed windows (tor-spec §7.3-7.4) instead of congestion control.
    #[arg(long, overrides_with = "congestion_control")]
    no_congestion_control: bool,
}

impl CcArgs {
    /// Whether congestion control is to be negotiated.
    pub fn enabled(self) -> bool {
        !self.no_congestion_control
    }
}

/// The options every network command takes (`get`, `socks`, `serve`, `bootstrap`).
#[derive(clap::Args, Debug, Clone)]
pub struct NetArgs {
    /// Directory authorities in C tor's `DirAuthority` format (default: the public network's).
    #[arg(long, value_name = "FILE")]
    authorities: Option<PathBuf>,
    /// Keep directory documents and guard state here, and reuse them while fresh.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Time limit of one network operation, in seconds (1-3600).
    #[arg(long, value_name = "SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Microdescriptors or full server descriptors (default: full on a private network,
    /// micro otherwise).
    #[arg(long, value_name = "micro|full", value_parser = parse_dir_mode)]
    dir_mode: Option<DirMode>,
}

impl NetArgs {
    /// Read the authority list and open the data directory.
    pub fn open(&self) -> Result<NetOptions, String> {
        NetOptions::new(
            self.authorities.as_deref(),
            self.data_dir.as_deref(),
            Duration::from_secs(self.timeout),
            self.dir_mode,
        )
    }
}

/// The largest response body `onion get` keeps (as received, and decompressed).
const MAX_RESPONSE: usize = 256 << 20;

/// Options shared by the network commands (`get`, `socks`).
pub struct NetOptions {
    /// The authorities.
    pub auths: Vec<DirAuthority>,
    /// The data directory, if any.
    pub cache: Option<Cache>,
    /// Overall time limit of one operation.
    pub timeout: Duration,
    /// Microdescriptors or full descriptors (`--dir-mode`, else full on a testing network).
    pub dir_mode: DirMode,
}

impl NetOptions {
    /// The options from their parsed values: the authority list is read (the public
    /// network's when `auth_file` is `None`) and the data directory opened.
    pub fn new(
        auth_file: Option<&std::path::Path>,
        data_dir: Option<&std::path::Path>,
        timeout: Duration,
        dir_mode: Option<DirMode>,
    ) -> Result<NetOptions, String> {
        let auths = match &auth_file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| format!("--authorities {}: {e}", f.display()))?;
                authorities::parse_list(&text).map_err(|e| format!("{}: {e}", f.display()))?
            }
            None => authorities::parse_list(authorities::PUBLIC_AUTHORITIES)
                .map_err(|e| format!("built-in authority list: {e}"))?,
        };
        let cache = match &data_dir {
            Some(d) => {
                let c = Cache::open(d).map_err(|e| format!("--data-dir {}: {e}", d.display()))?;
                if let Some(fixed) = c.mode_fixed() {
                    eprintln!("onion: warning: {fixed}");
                }
                Some(c)
            }
            None => None,
        };
        let dir_mode = dir_mode.unwrap_or_else(|| default_dir_mode(&auths));
        Ok(NetOptions {
            auths,
            cache,
            timeout,
            dir_mode,
        })
    }

    /// The client's configuration for these options ([`driver::client_config`]).
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        driver::client_config(&self.auths, self.dir_mode)
    }
}

/// `--dir-mode`: `micro` or `full`.
fn parse_dir_mode(s: &str) -> Result<DirMode, String> {
    match s {
        "micro" => Ok(DirMode::Micro),
        "full" => Ok(DirMode::Full),
        _ => Err(format!("--dir-mode {s:?}: expected micro or full")),
    }
}

/// The default directory mode for a network: full descriptors on a testing network (every
/// authority on a loopback or private address; its exits' 127.0.0.0/8 policies need them),
/// microdescriptors otherwise.
fn default_dir_mode(auths: &[DirAuthority]) -> DirMode {
    match onion_client::guards::is_testing_network(&authorities::v3_authorities(auths)) {
        true => DirMode::Full,
        false => DirMode::Micro,
    }
}

/// Run the subcommand.
pub fn run(args: Args) -> Result<(), String> {
    let Args {
        url,
        exit,
        client_key,
        cc,
        net,
    } = args;
    let congestion_control = cc.enabled();
    let opts = net.open()?;
    let url = Url::parse(&url)?;
    let onion = match url.is_onion() {
        true => Some(
            onion_hs::OnionAddress::parse(&url.host)
                .map_err(|e| format!("bad onion address {:?}: {e}", url.host))?,
        ),
        false => None,
    };
    let client_key = match (&client_key, &onion) {
        (None, _) => None,
        (Some(path), None) => return Err(format!("--client-key {path}: only for .onion URLs")),
        (Some(path), Some(addr)) => {
            let t = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            let (sk, for_addr) = onion_hs::keyfile::parse_client_auth_key(&t)
                .map_err(|e| format!("--client-key {path}: {e}"))?;
            if for_addr.is_some_and(|a| a != *addr) {
                return Err(format!(
                    "--client-key {path}: key file is for another address"
                ));
            }
            Some(sk)
        }
    };
    let exit = match exit {
        None => None,
        Some(_) if onion.is_some() => {
            return Err(
                "--exit names an exit relay: an onion service is not reached through one".into(),
            )
        }
        Some(e) => Some(e),
    };
    let auth = onion.zip(client_key);
    get_via_client(&opts, &url, auth, exit.as_deref(), congestion_control)
}

/// `onion get` through [`onion_client::Client`] ([`Driver`]): bootstrap, one stream (through
/// the relay `exit` names, if any), one HTTP/1.0 GET.
fn get_via_client(
    opts: &NetOptions,
    url: &Url,
    client_key: Option<(onion_hs::OnionAddress, x25519_dalek::StaticSecret)>,
    exit: Option<&str>,
    congestion_control: bool,
) -> Result<(), String> {
    let mut cfg = opts.client_config()?;
    cfg.congestion_control = congestion_control;
    let mut d = Driver::new(cfg, opts.cache.clone())?;
    if let Some((addr, key)) = client_key {
        d.client
            .set_onion_client_auth(&addr.to_string(), Some(key))
            .map_err(|e| format!("--client-key: {e}"))?;
    }
    let deadline = d.deadline(opts.timeout);
    let dir = d.bootstrap(deadline)?;
    let target = format!("{}:{}", url.host, url.port);
    let now = d.now();
    let stream = match exit {
        Some(exit) => {
            let id = exit_relay(&dir, exit)?;
            d.client
                .connect_via(&url.host, url.port, Isolation::NONE, id, now)
        }
        None => d.client.connect(&url.host, url.port, Isolation::NONE, now),
    }
    .map_err(|e| open_error(&target, &e))?;
    wait_open(&mut d, stream, &target, deadline)?;
    // A stream opens on a rendezvous circuit only once the rendezvous is complete.
    let view = d.client.stream_circuit(stream);
    if let Some(v) = &view {
        eprintln!("onion: {}", circuit_line(v));
    }
    eprintln!("onion: stream open to {target}");
    if congestion_control {
        let cc = view.as_ref().and_then(|v| v.congestion_control);
        eprintln!("onion: {}", cc_line("negotiated", cc.as_ref()));
    }
    let mut next_report = 1 << 20;
    // The last congestion-control state seen while the stream existed (it is forgotten
    // once its end is read).
    let mut last_cc = None;
    let mut reader = ResponseReader::new(MAX_RESPONSE);
    let request = get_request(&url.host_header(), &url.path);
    exchange(&mut d, stream, &request, deadline, |data, n, client| {
        if congestion_control {
            if let Some(cc) = client
                .stream_circuit(stream)
                .and_then(|v| v.congestion_control)
            {
                last_cc = Some(cc);
            }
        }
        if n >= next_report {
            eprintln!("onion: received {} KiB", n >> 10);
            next_report += 1 << 20;
        }
        reader.handle_bytes(data).map_err(|e| e.to_string())
    })
    .map_err(|e| format!("fetching {}: {e}", url.path))?;
    if congestion_control {
        eprintln!("onion: {}", cc_line("at the end", last_cc.as_ref()));
    }
    let resp = reader
        .finish_any()
        .map_err(|e| format!("fetching {}: {}", url.path, text::escape(&e.to_string())))?;
    print_response(&resp)
}

/// Print an HTTP response's body on stdout, or fail with its status if not 2xx.
fn print_response(resp: &RawResponse) -> Result<(), String> {
    let status = format!("{} {}", resp.head.status, text::escape(&resp.head.reason));
    eprintln!("onion: HTTP {status}, {} bytes", resp.body.len());
    if !(200..300).contains(&resp.head.status) {
        return Err(format!("HTTP {status}"));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&resp.body)
        .and_then(|_| out.flush())
        .map_err(|e| format!("stdout: {e}"))
}

/// Wait until stream `s` to `target` (`host:port`, for messages) is open (CONNECTED), at most
/// until `deadline`. Other happenings meanwhile are dropped.
fn wait_open(
    d: &mut Driver,
    s: StreamHandle,
    target: &str,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        match d.next(Some(deadline)) {
            None => return Err(format!("{target}: timed out waiting for the stream")),
            Some(Happening::Client(Event::StreamOpened { stream })) if stream == s => return Ok(()),
            Some(Happening::Client(Event::StreamClosed { stream, error })) if stream == s => {
                return Err(match error {
                    Some(e) => open_error(target, &e),
                    None => format!("{target}: the stream closed before it opened"),
                });
            }
            Some(Happening::Client(Event::Bootstrap { percent, what })) => {
                driver::progress(percent, &what)
            }
            Some(_) => {}
        }
    }
}

/// Send `request` on the open stream `s` and read until the stream ends or `deadline`
/// passes; `on_data` gets each piece with the byte count so far and the client (to look at
/// the stream's circuit while the stream still exists), and may stop the exchange with an
/// error. Other happenings meanwhile are dropped.
fn exchange(
    d: &mut Driver,
    s: StreamHandle,
    request: &[u8],
    deadline: Instant,
    mut on_data: impl FnMut(&[u8], usize, &Client) -> Result<(), String>,
) -> Result<(), String> {
    let (mut sent, mut got) = (0, 0);
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let now = d.now();
        while sent < request.len() {
            match d.client.write(s, &request[sent..], now) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) => return Err(e.to_string()),
            }
        }
        loop {
            match d.client.read(s, &mut buf, now) {
                Ok(Some(0)) => return Ok(()),
                Ok(Some(n)) => {
                    got += n;
                    if let Err(e) = on_data(&buf[..n], got, &d.client) {
                        d.client.close(s, now);
                        return Err(e);
                    }
                }
                Ok(None) => break,
                // END with reason DONE or MISC ends a response: exits and onion services
                // (C tor's and `onion serve`) end a finished one so.
                Err(onion_client::Error::StreamEnded(EndReason::DONE | EndReason::MISC)) => {
                    return Ok(())
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        if d.next(Some(deadline)).is_none() {
            d.client.close(s, d.now());
            return Err(format!("timed out after {got} bytes"));
        }
    }
}

/// An `http://` URL, as `onion get` accepts it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Url {
    /// Host name or address literal (IPv6 without brackets), lower-cased.
    host: String,
    /// Port (80 by default).
    port: u16,
    /// Path and query, starting with `/`.
    path: String,
}

impl Url {
    /// Parse `http://host[:port][/path]`. Only `http` is supported: over Tor, TLS to the
    /// destination would be the application's business, and onion services need none.
    fn parse(s: &str) -> Result<Url, String> {
        let bad = |what: String| format!("malformed URL {s:?}: {what}");
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// URLs are supported".into()))?;
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = path.split('#').next().unwrap_or("/");
        let path = match path.starts_with('/') {
            true => path.to_string(),
            false => format!("/{path}"),
        };
        if authority.contains('@') {
            return Err(bad("user info is not supported".into()));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6
                    .split_once(']')
                    .ok_or_else(|| bad("unclosed `[`".into()))?;
                (h, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let port = match port.map(|p| (p, p.parse::<u16>())) {
            None => 80,
            Some((_, Ok(p))) if p != 0 => p,
            Some((p, _)) => return Err(bad(format!("bad port {p:?}"))),
        };
        let host_ok = |b: u8| b.is_ascii_alphanumeric() || b"-._:".contains(&b);
        if host.is_empty() || host.len() > 255 || !host.bytes().all(host_ok) {
            return Err(bad(format!("bad host {host:?}")));
        }
        let host = host.to_ascii_lowercase();
        Ok(Url { host, port, path })
    }

    /// True for `*.onion` hosts, which go through the onion-service client.
    fn is_onion(&self) -> bool {
        self.host.ends_with(".onion")
    }

    /// The `Host:` header value.
    fn host_header(&self) -> String {
        let h = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        match self.port {
            80 => h,
            p => format!("{h}:{p}"),
        }
    }
}

/// An HTTP/1.0 GET for `path` on `host` (RFC 1945), with `Connection: close`: the response
/// ends when the stream does.
fn get_request(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: onion\r\n\r\n")
        .into_bytes()
}

/// Why a stream to `target` (`host:port`) did not open, for a one-line message.
pub(super) fn open_error(target: &str, e: &onion_client::Error) -> String {
    use onion_client::hs::HsError;
    match e {
        onion_client::Error::OnionService(
            h @ (HsError::ClientAuthMissing | HsError::ClientAuthWrong),
        ) => format!("{target}: no onion-service descriptor this client can read: {h}"),
        onion_client::Error::NoPath(why) => format!("no path to {target}: {why}"),
        e => format!("{target}: {e}"),
    }
}

/// The line announcing the circuit a newly opened stream runs on, or `None` when the
/// stream is unknown. Exit circuits: `circuit built: A -> B -> C`, with ` (congestion
/// control)` when the exit negotiated it; rendezvous circuits: `rendezvous complete`, with
/// ` (congestion control, sendme_inc N)` when the service's virtual hop runs it.
pub(super) fn circuit_line(view: &CircuitView) -> String {
    match (view.purpose, &view.congestion_control) {
        (Purpose::ClientRend, Some(cc)) => format!(
            "rendezvous complete (congestion control, sendme_inc {})",
            cc.sendme_inc
        ),
        (Purpose::ClientRend, None) => "rendezvous complete".into(),
        (_, cc) => format!(
            "circuit built: {}{}",
            view.path_string(),
            cc.map_or("", |_| " (congestion control)")
        ),
    }
}

/// One line on a congestion-control state (proposal 324 §4: Tor Vegas), `what` saying when
/// it was taken.
pub(super) fn cc_line(what: &str, cc: Option<&CcView>) -> String {
    match cc {
        Some(cc) => format!(
            "congestion control {what}: sendme_inc {}, cwnd {}, inflight {}, slow start {}, \
             rtt ewma {} ms min {} ms",
            cc.sendme_inc,
            cc.cwnd,
            cc.inflight,
            cc.slow_start,
            cc.rtt_ewma_usec / 1000,
            cc.rtt_min_usec / 1000,
        ),
        None => "congestion control not negotiated with the exit".into(),
    }
}

/// The relay `--exit` names (a fingerprint, with or without `$`, or a nickname) in the
/// directory: path-spec §2.2.2's explicit exit, whose policy is not consulted.
fn exit_relay(
    dir: &onion_client::dir::Directory,
    exit: &str,
) -> Result<onion_dir::RsaIdentity, String> {
    let by_fp = onion_dir::RsaIdentity::from_hex(exit.trim_start_matches('$'))
        .ok()
        .and_then(|id| dir.view.by_rsa_id(&id));
    let idx = by_fp
        .or_else(|| dir.view.by_nickname(exit))
        .ok_or_else(|| format!("--exit {exit}: no such relay with a descriptor"))?;
    dir.view
        .relay(idx)
        .map(|r| r.rsa_id)
        .ok_or_else(|| format!("--exit {exit}: no such relay with a descriptor"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:8080/a/b?c=d#frag").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/a/b?c=d")
        );
        let u = Url::parse("http://Example.ONION").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("example.onion", 80, "/")
        );
        assert!(u.is_onion());
        let u = Url::parse("http://[::1]:81/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 81));
        assert_eq!(u.host_header(), "[::1]:81");
        for bad in [
            "https://x/",
            "ftp://x",
            "http://",
            "http://:80/",
            "http://x:0/",
            "http://x:99999/",
            "http://x:y/",
            "http://a b/",
            "http://u@x/",
            "http://[::1/",
            "not a url",
        ] {
            let e = Url::parse(bad).unwrap_err();
            assert!(e.starts_with("malformed URL"), "{bad}: {e}");
        }
        assert_eq!(
            get_request("h", "/p"),
            b"GET /p HTTP/1.0\r\nHost: h\r\nConnection: close\r\nUser-Agent: onion\r\n\r\n"
        );
    }

    /// A reason phrase with terminal escapes reaches messages without any control character.
    #[test]
    fn peer_text_in_messages_is_escaped() {
        let mut r = ResponseReader::new(100);
        r.handle_bytes(b"HTTP/1.0 403 Forbidden\x1b]0;pwned\x07\x1b[2K\rHTTP 200 OK\r\n\r\n")
            .unwrap();
        let e = print_response(&r.finish_any().unwrap()).unwrap_err();
        assert!(!e.chars().any(char::is_control), "{e:?}");
        assert_eq!(
            e,
            "HTTP 403 Forbidden\\u{1b}]0;pwned\\u{7}\\u{1b}[2K\\rHTTP 200 OK"
        );
    }

    proptest::proptest! {
        #[test]
        fn urls_never_panic(s in "\\PC{0,60}") {
            let _ = Url::parse(&s);
            let _ = Url::parse(&format!("http://{s}"));
        }
    }

    #[test]
    fn congestion_control_is_on_unless_turned_off() {
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            cc: CcArgs,
        }
        let parse = |args: &[&str]| {
            <T as clap::Parser>::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
                .unwrap()
                .cc
                .enabled()
        };
        assert!(parse(&[]));
        assert!(parse(&["--congestion-control"]));
        assert!(!parse(&["--no-congestion-control"]));
        // The last one given wins, as for any pair of opposite flags.
        assert!(parse(&["--no-congestion-control", "--congestion-control"]));
        assert!(!parse(&["--congestion-control", "--no-congestion-control"]));
    }

    #[test]
    fn dir_mode_parse_and_defaults() {
        assert_eq!(parse_dir_mode("micro"), Ok(DirMode::Micro));
        assert_eq!(parse_dir_mode("full"), Ok(DirMode::Full));
        assert!(parse_dir_mode("ns").unwrap_err().contains("micro or full"));
        let public = authorities::parse_list(authorities::PUBLIC_AUTHORITIES).unwrap();
        assert_eq!(default_dir_mode(&public), DirMode::Micro);
        let private = authorities::parse_list(
            "DirAuthority auth0 orport=5000 no-v2 \
             v3ident=0123456789ABCDEF0123456789ABCDEF01234567 127.0.0.1:7000 \
             89ABCDEF0123456789ABCDEF0123456789ABCDEF\n",
        )
        .unwrap();
        assert_eq!(default_dir_mode(&private), DirMode::Full);
    }
}
