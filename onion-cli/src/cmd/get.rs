//! `onion get URL [--authorities FILE] [--data-dir DIR] [--timeout SECS] [--dir-mode M]`: fetch an
//! `http://` URL through a 3-hop circuit and print the body on stdout.
//!
//! Bootstraps from the directory authorities in FILE (C tor's `DirAuthority` format; the
//! public Tor network's list when absent), reusing fresh documents from DIR, builds a
//! circuit whose exit allows the destination, opens a stream and sends one HTTP/1.0 GET.
//! Progress goes to stderr. Every network wait is bounded by `--timeout` (default 120 s).
//! `--dir-mode micro|full` forces microdescriptors or full descriptors (the default: full on a
//! testing network, micro otherwise; see `net/bootstrap.rs`). `--exit RELAY` (fingerprint or
//! nickname) is an explicit exit choice (path-spec §2.2.2): the path ends at that relay
//! whatever its descriptor's policy says, and only the exit itself decides. It is how a
//! microdescriptor client reaches a private network's exits, whose 127.0.0.0/8 policy no
//! summary can express.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::net::authority::{self, DirAuthority};
use crate::net::bootstrap::{self, DirMode, Directory, Source};
use crate::net::cache::Cache;
use crate::net::client::{Client, ClientCc, Retry, Target};
use crate::net::driver::{self, Driver};
use crate::net::http::{self, Url};
use crate::net::path;
use onion_client::Isolation;
use onion_hs::x25519_dalek;

/// `onion get` (see the module documentation).
#[derive(clap::Args)]
pub struct Args {
    /// The http:// URL to fetch (http://ADDRESS.onion/... for an onion service).
    #[arg(value_name = "URL")]
    url: String,
    /// Use this relay as the exit (fingerprint or nickname), whatever its policy says.
    #[arg(long, value_name = "FINGERPRINT|NICKNAME")]
    exit: Option<String>,
    /// Client-authorization key for the onion service (C tor's `.auth_private` file).
    #[arg(long, value_name = "FILE")]
    client_key: Option<String>,
    /// Negotiate congestion control (proposal 324, Tor Vegas) with the exit when it
    /// advertises FlowCtrl=2 and ntor-v3 and the consensus enables it (cc_alg != 0); for a
    /// .onion URL, with the service when its descriptor advertises flow-control.
    #[arg(long)]
    congestion_control: bool,
    #[command(flatten)]
    net: NetArgs,
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
    #[arg(long, value_name = "micro|full", value_parser = DirMode::parse)]
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

/// The largest response `onion get` keeps.
const MAX_RESPONSE: usize = 256 << 20;

/// Options shared by the network commands (`get`, `socks`).
pub struct NetOptions {
    /// The authorities.
    pub auths: Vec<DirAuthority>,
    /// The data directory, if any.
    pub cache: Option<Cache>,
    /// Overall time limit of one operation.
    pub timeout: Duration,
    /// Microdescriptors or full descriptors (`--dir-mode`, else [`DirMode::default_for`]).
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
                authority::parse_list(&text).map_err(|e| format!("{}: {e}", f.display()))?
            }
            None => authority::parse_list(authority::PUBLIC_AUTHORITIES)
                .map_err(|e| format!("built-in authority list: {e}"))?,
        };
        let cache = match &data_dir {
            Some(d) => {
                Some(Cache::open(d).map_err(|e| format!("--data-dir {}: {e}", d.display()))?)
            }
            None => None,
        };
        let dir_mode = dir_mode.unwrap_or_else(|| DirMode::default_for(&auths));
        Ok(NetOptions {
            auths,
            cache,
            timeout,
            dir_mode,
        })
    }

    /// Bootstrap a client.
    /// A verified directory at start-up (reused from the data directory while live, else
    /// fetched), handed to the client's guards, whose state is kept in the data directory
    /// if there is one.
    pub fn bootstrap(&self, client: &mut Client) -> Result<Directory, String> {
        self.directory(client, Source::CacheOrAuthorities)
    }

    /// A newly fetched directory, to replace `current` when its refresh time has come
    /// ([`Directory::refresh_delay`]): from a directory guard, or from the authorities if
    /// that fails; stored in the data directory.
    pub fn refresh(&self, client: &mut Client, current: &Directory) -> Result<Directory, String> {
        // Timestamps in one fixed format ("YYYY-MM-DD HH:MM:SS") compare as strings.
        let newer = |d: &Directory| d.summary.valid_after > current.summary.valid_after;
        let why = match self.directory(
            client,
            Source::Refresh {
                current,
                guard: true,
            },
        ) {
            Ok(d) if newer(&d) => return Ok(d),
            Ok(d) => format!("it has no consensus newer than {}", d.summary.valid_after),
            Err(e) => e,
        };
        eprintln!("onion: directory refresh from a directory guard: {why}; asking the authorities");
        self.directory(
            client,
            Source::Refresh {
                current,
                guard: false,
            },
        )
    }

    fn directory(&self, client: &mut Client, from: Source<'_>) -> Result<Directory, String> {
        let deadline = client.deadline(self.timeout);
        let dir = bootstrap::bootstrap(
            client,
            &self.auths,
            self.dir_mode,
            self.cache.as_ref(),
            from,
            deadline,
        )?;
        client.guards.attach(self.cache.as_ref());
        client.guards.on_directory(&dir);
        Ok(dir)
    }
}

/// Run the subcommand.
pub fn run(args: Args) -> Result<(), String> {
    let Args {
        url,
        exit,
        client_key,
        congestion_control,
        net,
    } = args;
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
            let (sk, for_addr) = onion_hs::keys::parse_client_auth_key(&t)
                .map_err(|e| format!("--client-key {path}: {e}"))?;
            if for_addr.is_some_and(|a| a != *addr) {
                return Err(format!(
                    "--client-key {path}: key file is for another address"
                ));
            }
            Some(sk)
        }
    };
    // Everything runs on the Client but an explicit exit (`--exit`, path-spec §2.2.2),
    // which the Client does not take yet: that keeps the older blocking client below.
    let Some(exit) = exit else {
        let auth = onion.zip(client_key);
        return get_via_client(&opts, &url, auth, congestion_control);
    };
    if onion.is_some() {
        return Err(
            "--exit names an exit relay: an onion service is not reached through one".into(),
        );
    }
    let exit = Some(exit);
    let mut client = Client::new();
    let dir = opts.bootstrap(&mut client)?;
    if congestion_control {
        client.congestion_control = client_cc(&dir);
    }
    let config = path::path_config(&opts.auths);
    let deadline = client.deadline(opts.timeout);
    let mut avoid = Vec::new();
    let mut attempt = 0;
    let (circ, hops, stream) = loop {
        attempt += 1;
        let (circ, hops) = match &exit {
            Some(exit) => {
                let c = explicit_exit_circuit(&mut client, &dir, &config, exit, deadline)?;
                eprintln!("onion: circuit built: {}", c.1.join(" -> "));
                c
            }
            None => path::exit_circuit_retrying(
                &mut client,
                &dir,
                &config,
                &url.host,
                url.port,
                &mut avoid,
                deadline,
            )?,
        };
        let refused = match client.begin(circ, Target::Exit(&url.host, url.port), deadline) {
            Ok(stream) => break (circ, hops, stream),
            Err(e) => e,
        };
        let via = hops.join(" -> ");
        let retry = match refused.retry() {
            // A named exit is kept: only the rest of the path changes.
            Retry::OtherExit if exit.is_some() => Retry::NewCircuit,
            r => r,
        };
        if attempt >= path::ATTEMPTS || retry == Retry::No {
            return Err(format!("{}:{} via {via}: {refused}", url.host, url.port));
        }
        eprintln!(
            "onion: {}:{}: {refused} (via {via}); trying a new circuit",
            url.host, url.port
        );
        client.destroy(circ);
        if retry == Retry::OtherExit {
            if let Some(exit) = hops.last().and_then(|n| dir.view.by_nickname(n)) {
                avoid.extend(dir.view.relay(exit).map(|r| r.rsa_id));
            }
        }
        // A refusal such as MISC ("unknown relay") can be an exit whose consensus lags
        // behind ours; a short pause gives it time, as C tor's retry after a new circuit does.
        std::thread::sleep(Duration::from_secs(attempt as u64));
    };
    eprintln!("onion: stream open to {}:{}", url.host, url.port);
    if client.congestion_control.is_some() {
        report_cc(&client, circ, "negotiated");
    }
    fetch_and_print(
        &mut client,
        circ,
        stream,
        &url,
        deadline,
        &hops.join(" -> "),
    )
}

/// `onion get` of an exit URL through [`onion_client::Client`] ([`Driver`]): bootstrap,
/// one stream, one HTTP/1.0 GET.
fn get_via_client(
    opts: &NetOptions,
    url: &Url,
    client_key: Option<(onion_hs::OnionAddress, x25519_dalek::StaticSecret)>,
    congestion_control: bool,
) -> Result<(), String> {
    let mut cfg = driver::client_config(&opts.auths, opts.dir_mode.client())?;
    cfg.congestion_control = congestion_control;
    let mut d = Driver::new(cfg, opts.cache.clone())?;
    if let Some((addr, key)) = client_key {
        d.client
            .set_onion_client_auth(&addr.to_string(), Some(key))
            .map_err(|e| format!("--client-key: {e}"))?;
    }
    let deadline = d.deadline(opts.timeout);
    d.bootstrap(deadline)?;
    let target = format!("{}:{}", url.host, url.port);
    let stream = d
        .client
        .connect(&url.host, url.port, Isolation::NONE, d.now())
        .map_err(|e| driver::open_error(&target, &e))?;
    d.wait_open(stream, &target, deadline)?;
    // A stream opens on a rendezvous circuit only once the rendezvous is complete.
    let view = d.client.stream_circuit(stream);
    if let Some(v) = &view {
        eprintln!("onion: {}", driver::circuit_line(v));
    }
    eprintln!("onion: stream open to {target}");
    if congestion_control {
        let cc = view.as_ref().and_then(|v| v.congestion_control);
        eprintln!("onion: {}", driver::cc_line("negotiated", cc.as_ref()));
    }
    let mut next_report = 1 << 20;
    // The last congestion-control state seen while the stream existed (it is forgotten
    // once its end is read).
    let mut last_cc = None;
    let raw = d
        .exchange(
            stream,
            &http::get_request(&url.host_header(), &url.path),
            MAX_RESPONSE,
            deadline,
            |n, client| {
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
            },
        )
        .map_err(|e| format!("fetching {}: {e}", url.path))?;
    if congestion_control {
        eprintln!("onion: {}", driver::cc_line("at the end", last_cc.as_ref()));
    }
    print_response(&raw)
}

/// Print an HTTP response's body on stdout, or fail with its status if not 2xx.
fn print_response(raw: &[u8]) -> Result<(), String> {
    let resp = http::parse_response(raw, true).map_err(|e| e.to_string())?;
    eprintln!(
        "onion: HTTP {}, {} bytes",
        resp.status_text(),
        resp.body.len()
    );
    if !(200..300).contains(&resp.status) {
        return Err(format!("HTTP {}", resp.status_text()));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&resp.body)
        .and_then(|_| out.flush())
        .map_err(|e| format!("stdout: {e}"))
}

/// Congestion control for exit circuits from the verified consensus: its `cc_*` parameters
/// for exit paths (proposal 324 §6.5) and the relays listing `FlowCtrl=2` and `Relay=4`.
/// `None`, with a note, when the consensus runs fixed windows (`cc_alg=0`).
pub(crate) fn client_cc(dir: &Directory) -> Option<ClientCc> {
    let Some(config) = dir.congestion_control(onion_dir::ccparams::CcPath::Exit) else {
        eprintln!("onion: the consensus disables congestion control (cc_alg=0)");
        return None;
    };
    let exits = dir
        .relays_supporting(|p| p.supports("FlowCtrl", 2) && p.supports("Relay", 4))
        .collect();
    Some(ClientCc { config, exits })
}

/// Congestion control for the rendezvous circuits of a hosted onion service, from the
/// verified consensus (proposal 324 §6.5): the `_onion` Vegas parameters, as C tor's
/// `hs_circ_setup_congestion_control`. `None`, with a note, when the consensus runs fixed
/// windows (`cc_alg=0`).
pub(crate) fn onion_cc(dir: &Directory) -> Option<onion_circuit::cc::CcConfig> {
    let config = dir.congestion_control(onion_dir::ccparams::CcPath::Onion);
    if config.is_none() {
        eprintln!("onion: the consensus disables congestion control (cc_alg=0)");
    }
    config
}

/// One line on the exit hop's congestion control: whether it was negotiated and its state.
fn report_cc(client: &Client, circ: usize, what: &str) {
    let Some(c) = client.circs.get(circ) else {
        return;
    };
    let last = c.circ.n_hops().saturating_sub(1);
    match c.circ.congestion_control(last) {
        Some(cc) => eprintln!(
            "onion: congestion control {what}: sendme_inc {}, cwnd {}, inflight {}, \
             slow start {}, rtt ewma {} ms min {} ms",
            cc.config().sendme_inc,
            cc.cwnd(),
            cc.inflight(),
            cc.in_slow_start(),
            cc.rtt().ewma_usec / 1000,
            cc.rtt().min_usec / 1000,
        ),
        None => eprintln!("onion: congestion control not negotiated with the exit"),
    }
}

/// A 3-hop circuit ending at the exit the user named (fingerprint or nickname): guard and
/// middle are chosen as for an internal path to that relay (path-spec §2.2.2, §1.1), so
/// they avoid its family and subnet; its exit policy is not consulted.
fn explicit_exit_circuit(
    client: &mut Client,
    dir: &Directory,
    config: &onion_dir::select::path::PathConfig,
    exit: &str,
    deadline: onion_circuit::Instant,
) -> Result<(usize, Vec<String>), String> {
    use onion_dir::select::path::{PathOptions, PathSelector};
    let by_fp = onion_dir::RsaIdentity::from_hex(exit.trim_start_matches('$'))
        .ok()
        .and_then(|id| dir.view.by_rsa_id(&id));
    let idx = by_fp
        .or_else(|| dir.view.by_nickname(exit))
        .ok_or_else(|| format!("--exit {exit}: no such relay with a descriptor"))?;
    let selector = PathSelector::with_config(&dir.view, config.clone());
    let (path, guard) = client
        .guards
        .internal_path(&selector, 3, Some(idx), &PathOptions::default())
        .map_err(|e| format!("--exit {exit}: no path: {e}"))?;
    let hops: Vec<_> = path.records(&dir.view).collect();
    path::build_guarded(client, &hops, guard, deadline)
}

/// GET the URL's path on an open stream and print the body on stdout.
fn fetch_and_print(
    client: &mut Client,
    circ: usize,
    stream: onion_circuit::stream::StreamId,
    url: &Url,
    deadline: onion_circuit::Instant,
    via: &str,
) -> Result<(), String> {
    let mut next_report = 1 << 20;
    let raw = client
        .fetch(
            circ,
            stream,
            &http::get_request(&url.host_header(), &url.path),
            MAX_RESPONSE,
            deadline,
            |n| {
                if n >= next_report {
                    eprintln!("onion: received {} KiB", n >> 10);
                    next_report += 1 << 20;
                }
            },
        )
        .map_err(|e| format!("fetching {}: {e} ({via})", url.path))?;
    let cc_ran = client.circs.get(circ).is_some_and(|c| {
        let last = c.circ.n_hops().saturating_sub(1);
        c.circ.congestion_control(last).is_some()
    });
    if client.congestion_control.is_some() || cc_ran {
        report_cc(client, circ, "at the end");
    }
    client.destroy(circ);
    print_response(&raw)
}
