//! The relay's loop: the ORPort's TLS server (rustls, presenting the link certificate of
//! [`onion_relay::Relay::link_cert`], tor-spec §2), outbound TLS connections for EXTEND2
//! (C tor's link rules: `crate::net::tls::client_config`), exit TCP connections and name
//! resolution through the system resolver, all feeding one `onion_relay::Relay`; plus the
//! descriptor schedule (dir-spec §2.1) and key rotation, checked every minute as C tor does.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use onion_crypto::relay_keyset::{OnionKeyParams, RelayKeySet};
use onion_dir::relaydesc::{ConsensusListing, DescriptorSchedule};
use onion_dir::Timestamp;
use onion_relay::{ConnId, Event, Relay, ResolveError, StreamHandle, TargetError, TlsLinkCert};
use rand_core::OsRng;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConnection, Connection, ServerConfig, ServerConnection};
use sha2::{Digest, Sha256};

use super::io::{spawn_reader, Key, Msg, Pause, Writer, INBOX};
use super::keys::{duplicate, KeyDir};
use super::publish::{build, upload_all, DescriptorTemplate};
use crate::net::authority::DirAuthority;
use crate::net::Clock;

/// How often the descriptor schedule and the keys are checked (C tor: every 60 s).
const PERIODIC: Duration = Duration::from_secs(60);
/// How often the counters are logged (when they changed): often enough that a test (or an
/// operator) sees a closed circuit's resources freed within a second.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// How long an outbound TCP connect may take (the relay's own deadline also applies).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the TLS link certificate is replaced (C tor replaces its TLS context, and with
/// it the link certificate and the ed25519 Signing->Link certificate of CERTS, every
/// `MAX_SSL_KEY_LIFETIME_INTERNAL`, 2 hours).
pub const LINK_CERT_ROTATION: Duration = Duration::from_secs(2 * 3600);
/// Time between reachability self-tests until one succeeds.
const SELF_TEST_RETRY: Duration = Duration::from_secs(20);
/// Time before asking again after a consensus fetch that failed or brought nothing newer.
const CONSENSUS_RETRY: u64 = 15;

/// Everything the loop needs at start.
pub struct Setup {
    /// The listening ORPort.
    pub listener: TcpListener,
    /// The relay machine.
    pub relay: Relay,
    /// A copy of its keys (descriptors, rotation).
    pub keys: RelayKeySet,
    /// The key directory (rotated keys are written back).
    pub key_dir: KeyDir,
    /// The descriptor fields.
    pub template: DescriptorTemplate,
    /// Where descriptors go.
    pub authorities: Vec<DirAuthority>,
    /// `TestingTorNetwork`-like schedule.
    pub testing_network: bool,
    /// How often the TLS link certificate is replaced ([`LINK_CERT_ROTATION`] by default).
    pub link_cert_rotation: Duration,
    /// The ORPort address published, which the self-test connects to; `None`: no
    /// self-test, the descriptor is published at once (C tor's `AssumeReachable`).
    pub self_test: Option<SocketAddr>,
}

struct TlsConn {
    tls: Connection,
    writer: Writer,
    outbound: bool,
    /// Outbound: the relay was told the TLS session is up.
    up: bool,
    blocked: bool,
}

struct Target {
    writer: Writer,
    pause: Pause,
    /// Bytes read from the target that the relay has not taken yet.
    held: Vec<u8>,
    /// The writer is full: the relay's bytes for the target wait in the relay.
    full: bool,
    /// The target closed while bytes were still held.
    eof: bool,
}

struct Loop {
    relay: Relay,
    keys: RelayKeySet,
    key_dir: KeyDir,
    template: DescriptorTemplate,
    authorities: Vec<DirAuthority>,
    params: OnionKeyParams,
    schedule: DescriptorSchedule,
    server: Arc<ServerConfig>,
    clock: Clock,
    tx: SyncSender<Msg>,
    conns: HashMap<ConnId, TlsConn>,
    targets: HashMap<StreamHandle, Target>,
    next_in: u64,
    started: SystemTime,
    /// Bytes read and written on the ORPort's and outbound TLS connections (and by the
    /// self-test), by second: the observed bandwidth ([`onion_relay::bwhist`]).
    bw: onion_relay::bwhist::BandwidthHistory,
    last_stats: String,
    /// Exit TCP connections opened (for the log).
    targets_opened: u64,
    /// Period of the link certificate's replacement.
    link_cert_rotation: Duration,
    /// When the next one is due (`None`: one is being made).
    next_link_cert: Option<std::time::Instant>,
    /// The latest verified consensus (`ns`), and the ones before it (oldest first, at
    /// most [`onion_relay::dir::MAX_DIFF_BASES`]: the cache makes diffs from them).
    consensus: Option<String>,
    previous_consensuses: std::collections::VecDeque<String>,
    /// The same for the microdescriptor consensus.
    consensus_md: Option<String>,
    previous_consensuses_md: std::collections::VecDeque<String>,
    /// The microdescriptors and server descriptors the consensuses list, as fetched.
    store: onion_relay::DescriptorStore,
    /// The directory cache's files in the data directory (written when the documents
    /// change, read back at start).
    cache_files: super::dircache::CacheFiles,
    /// Our descriptor as last published (`/tor/server/authority`).
    own_descriptor: Option<String>,
    /// The authorities' key certificates as last fetched, each one's text.
    authority_certs: Vec<String>,
    /// Directory requests answered with 200, by kind (consensus, microdescriptors, server
    /// descriptors, key certificates), and those answered otherwise (for the stats log).
    dir_served: [u64; 5],
    /// A descriptor fetch is under way.
    fetching_descriptors: bool,
    /// A fetch is under way.
    fetching: bool,
    /// When the next consensus fetch is due (dir-spec §4.1; `None`: at once).
    next_consensus_fetch: Option<Timestamp>,
    /// Which authority the next fetch asks (round robin).
    fetch_from: usize,
    /// The listing last logged.
    last_listing: Option<ConsensusListing>,
    /// The ORPort address the self-test connects to (`None`: assumed reachable).
    self_test: Option<SocketAddr>,
    /// The self-test succeeded (or is skipped): descriptors may be published.
    reachable: bool,
    /// A self-test is under way.
    self_testing: bool,
    /// When the next self-test may start.
    next_self_test: std::time::Instant,
    /// Name resolutions asked of the system resolver (for the log).
    resolves: u64,
}

fn server_config(relay: &Relay) -> Result<Arc<ServerConfig>, String> {
    let tls = relay.link_cert();
    let cert = CertificateDer::from(tls.cert_der().to_vec());
    let key = PrivateKeyDer::Pkcs1(tls.key_der().to_vec().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| format!("TLS link certificate: {e}"))?;
    Ok(Arc::new(cfg))
}

/// Runs the relay until the listener fails (an error) or forever.
pub fn run(setup: Setup) -> Result<(), String> {
    let (tx, rx) = sync_channel(INBOX);
    let listener = setup.listener;
    let ltx = tx.clone();
    std::thread::spawn(move || loop {
        match listener.accept() {
            Ok((s, peer)) => {
                if ltx.send(Msg::Accepted(s, peer)).is_err() {
                    return;
                }
            }
            Err(e) => {
                eprintln!("onion relay: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    let server = server_config(&setup.relay)?;
    let cache_files = super::dircache::CacheFiles::new(setup.key_dir.data_dir());
    let mut l = Loop {
        relay: setup.relay,
        keys: setup.keys,
        key_dir: setup.key_dir,
        template: setup.template,
        authorities: setup.authorities,
        params: OnionKeyParams::new(None, None),
        schedule: DescriptorSchedule::new(setup.testing_network),
        server,
        clock: Clock::new(),
        tx,
        conns: HashMap::new(),
        targets: HashMap::new(),
        next_in: 0,
        started: SystemTime::now(),
        bw: onion_relay::bwhist::BandwidthHistory::new(
            Timestamp::from(SystemTime::now()),
            setup.testing_network,
        ),
        last_stats: String::new(),
        targets_opened: 0,
        resolves: 0,
        link_cert_rotation: setup.link_cert_rotation,
        consensus: None,
        previous_consensuses: std::collections::VecDeque::new(),
        consensus_md: None,
        previous_consensuses_md: std::collections::VecDeque::new(),
        store: onion_relay::DescriptorStore::default(),
        cache_files,
        own_descriptor: None,
        authority_certs: Vec::new(),
        dir_served: [0; 5],
        fetching_descriptors: false,
        fetching: false,
        next_consensus_fetch: None,
        fetch_from: 0,
        last_listing: None,
        next_link_cert: Some(std::time::Instant::now() + setup.link_cert_rotation),
        self_test: setup.self_test,
        reachable: setup.self_test.is_none(),
        self_testing: false,
        next_self_test: std::time::Instant::now(),
    };
    l.restore_cache();
    l.maybe_self_test();
    l.periodic();
    l.main(rx)
}

impl Loop {
    fn main(&mut self, rx: Receiver<Msg>) -> Result<(), String> {
        let mut next_periodic = std::time::Instant::now() + PERIODIC;
        let mut next_stats = std::time::Instant::now() + STATS_EVERY;
        loop {
            let mut wake = next_periodic.min(next_stats);
            if let Some(t) = self.next_link_cert {
                wake = wake.min(t);
            }
            if let Some(t) = self.next_consensus_fetch.filter(|_| !self.fetching) {
                let wall = Timestamp::from(SystemTime::now()).unix();
                let secs = t.unix().saturating_sub(wall);
                wake = wake.min(std::time::Instant::now() + Duration::from_secs(secs));
            }
            let mut wait = wake.saturating_duration_since(std::time::Instant::now());
            if let Some(t) = self.relay.poll_timeout() {
                wait = wait.min(self.clock.until(t));
            }
            match rx.recv_timeout(wait) {
                Ok(m) => {
                    self.handle(m);
                    // Take what else is waiting before the transmit pass.
                    for _ in 0..64 {
                        match rx.try_recv() {
                            Ok(m) => self.handle(m),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("the relay's inbox closed".into())
                }
            }
            let now = self.clock.now();
            if self.relay.poll_timeout().is_some_and(|t| t <= now) {
                self.relay
                    .handle_timeout(now, Timestamp::from(SystemTime::now()));
            }
            if std::time::Instant::now() >= next_periodic {
                next_periodic = std::time::Instant::now() + PERIODIC;
                self.periodic();
            }
            self.maybe_self_test();
            self.maybe_fetch_consensus(Timestamp::from(SystemTime::now()));
            if self
                .next_link_cert
                .is_some_and(|t| std::time::Instant::now() >= t)
            {
                self.next_link_cert = None;
                self.make_link_cert();
            }
            if std::time::Instant::now() >= next_stats {
                next_stats = std::time::Instant::now() + STATS_EVERY;
                self.log_stats();
            }
            self.pump();
        }
    }

    fn handle(&mut self, m: Msg) {
        let now = self.clock.now();
        match m {
            Msg::Accepted(sock, peer) => {
                let conn = ConnId(self.next_in);
                self.next_in += 1;
                if let Err(e) = self.relay.handle_accepted(conn, now, peer) {
                    eprintln!("onion relay: connection from {peer} refused: {e}");
                    return;
                }
                let tls = match ServerConnection::new(self.server.clone()) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("onion relay: TLS: {e}");
                        self.relay.handle_closed(conn, now);
                        return;
                    }
                };
                self.add_conn(conn, sock, Connection::Server(tls), false);
            }
            Msg::Connected(conn, sock) => {
                let name = rustls::pki_types::ServerName::try_from("www.example.com")
                    .map(|n| n.to_owned());
                let tls = name.map_err(|e| e.to_string()).and_then(|n| {
                    ClientConnection::new(crate::net::tls::client_config(), n)
                        .map_err(|e| e.to_string())
                });
                match tls {
                    Ok(t) => {
                        self.add_conn(conn, sock, Connection::Client(t), true);
                        self.flush_tls(conn);
                    }
                    Err(e) => {
                        eprintln!("onion relay: TLS: {e}");
                        self.relay.handle_closed(conn, now);
                    }
                }
            }
            Msg::ConnectFailed(conn, why) => {
                eprintln!(
                    "onion relay: outbound connection {}: {why}",
                    conn.0 & !ConnId::OUTBOUND_BIT
                );
                self.relay.handle_closed(conn, now);
            }
            Msg::Data(Key::Conn(conn), bytes) => self.conn_input(conn, &bytes),
            Msg::Closed(Key::Conn(conn)) => self.close_conn(conn, false),
            Msg::Drained(Key::Conn(conn)) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.blocked = false;
                    self.relay.set_blocked(conn, false);
                }
            }
            Msg::Data(Key::Target(s), bytes) => {
                if let Some(t) = self.targets.get_mut(&s) {
                    t.held.extend_from_slice(&bytes);
                    let n = self.relay.handle_target_data(s, now, &t.held);
                    t.held.drain(..n.min(t.held.len()));
                    t.pause.set(!t.held.is_empty());
                }
            }
            Msg::Closed(Key::Target(s)) => {
                if let Some(t) = self.targets.get_mut(&s) {
                    if t.held.is_empty() {
                        self.relay.handle_target_closed(s, now);
                    } else {
                        // What is held goes first: the EOF follows it (ResumeTarget).
                        t.eof = true;
                    }
                }
            }
            Msg::Drained(Key::Target(s)) => {
                if let Some(t) = self.targets.get_mut(&s) {
                    t.full = false;
                }
                self.target_out(s);
            }
            Msg::Resolved(req, answer) => self.relay.handle_resolved(req, now, answer),
            Msg::TargetUp(s, sock, addr) => {
                self.targets_opened += 1;
                let Ok(wsock) = sock.try_clone() else {
                    self.relay.handle_target_failed(s, now, TargetError::Other);
                    return;
                };
                let pause = Pause::default();
                let writer = Writer::spawn(wsock, Key::Target(s), self.tx.clone());
                spawn_reader(sock, Key::Target(s), self.tx.clone(), Some(pause.clone()));
                self.targets.insert(
                    s,
                    Target {
                        writer,
                        pause,
                        held: Vec::new(),
                        full: false,
                        eof: false,
                    },
                );
                self.relay.handle_target_connected(s, now, addr);
            }
            Msg::TargetFailed(s, e) => self.relay.handle_target_failed(s, now, e),
            Msg::LinkCert(cert) => self.install_link_cert(*cert),
            Msg::Consensus(r) => self.new_consensus(r),
            Msg::Descriptors(b) => {
                let a = match b {
                    super::view::Batch::Micro(t) => self.store.add_microdescs(&t),
                    super::view::Batch::Server(t) => self.store.add_server_descriptors(&t),
                };
                if a.unlisted > 0 || a.over_limit > 0 || a.malformed {
                    eprintln!("onion relay: descriptors not kept: {a:?}");
                }
            }
            Msg::DescriptorsDone(errors) => {
                self.fetching_descriptors = false;
                for e in errors.iter().take(3) {
                    eprintln!("onion relay: descriptor fetch: {e}");
                }
                eprintln!(
                    "onion relay: directory cache holds {} microdescriptors ({} missing), {} \
                     server descriptors ({} missing), {} bytes",
                    self.store.n_microdescs(),
                    self.store.missing_microdescs().len(),
                    self.store.n_server_descriptors(),
                    self.store.missing_server_descriptors().len(),
                    self.store.bytes()
                );
                self.publish_documents();
            }
            Msg::SelfTest(r) => self.self_test_done(r),
        }
    }

    /// Starts the reachability self-test ([`super::selftest`]) in a thread, until it has
    /// succeeded once, at most every [`SELF_TEST_RETRY`].
    fn maybe_self_test(&mut self) {
        let Some(addr) = self.self_test else {
            return;
        };
        if self.reachable || self.self_testing || std::time::Instant::now() < self.next_self_test {
            return;
        }
        self.self_testing = true;
        self.next_self_test = std::time::Instant::now() + SELF_TEST_RETRY;
        let target = super::selftest::Target::new(addr, &self.keys, self.template.rate);
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Msg::SelfTest(super::selftest::run(&target)));
        });
    }

    fn self_test_done(&mut self, r: Result<super::selftest::Outcome, String>) {
        self.self_testing = false;
        match r {
            Ok(o) => {
                self.reachable = true;
                // The self-test's side of the connection is this relay's too: its bytes
                // written count as C tor counts its testing circuits' (the ORPort side
                // counted what it read as it came).
                let now = unix_now();
                self.bw.note_written(now, o.bytes_written);
                let observed = self.bw.observed(now);
                eprintln!(
                    "onion relay: self-test: ORPort {} is reachable (circuit to ourselves in \
                     {} ms); publishing",
                    self.self_test.map(|a| a.to_string()).unwrap_or_default(),
                    o.took.as_millis()
                );
                match &o.bandwidth_error {
                    None => eprintln!(
                        "onion relay: bandwidth self-test: {} DROP cells to ourselves; \
                         observed bandwidth {observed} bytes/s",
                        o.cells
                    ),
                    Some(e) => eprintln!("onion relay: bandwidth self-test failed: {e}"),
                }
                self.check_schedule();
            }
            Err(e) => eprintln!(
                "onion relay: self-test failed ({e}); not publishing, trying again in {}s",
                SELF_TEST_RETRY.as_secs()
            ),
        }
    }

    /// Fetches the consensus in a thread when none is held or when the time chosen for the
    /// next one has come (dir-spec §4.1, [`onion_relay::store::next_consensus_fetch`]), from
    /// the authorities in turn.
    fn maybe_fetch_consensus(&mut self, now: Timestamp) {
        if self.fetching || self.next_consensus_fetch.is_some_and(|t| now < t) {
            return;
        }
        let auths: Vec<_> = self.authorities.iter().filter(|a| !a.bridge).collect();
        if auths.is_empty() {
            return;
        }
        let a = auths[self.fetch_from % auths.len()];
        self.fetch_from += 1;
        let addr = SocketAddr::V4(a.dir_addr);
        let v3 = self.v3_authorities();
        let tx = self.tx.clone();
        self.fetching = true;
        std::thread::spawn(move || {
            let r = super::view::fetch_consensus(addr, &v3, now)
                .map(Box::new)
                .map_err(|e| format!("from {addr}: {e}"));
            let _ = tx.send(Msg::Consensus(r));
        });
    }

    /// A consensus fetch ended: keep the new consensuses (the previous ones go to the diff
    /// bases), take the `ns` one's relays' addresses as known relays (exempt from the
    /// per-address limits) and its parameters for new circuits, and fetch the descriptors
    /// they list that the cache lacks.
    fn new_consensus(&mut self, r: Result<Box<super::view::Fetched>, String>) {
        self.fetching = false;
        // Until a newer consensus sets the time by its own validity (below).
        let wall = Timestamp::from(SystemTime::now()).unix();
        self.next_consensus_fetch = Some(Timestamp::from_unix(wall + CONSENSUS_RETRY));
        let fetched = match r {
            Ok(t) => *t,
            Err(e) => {
                eprintln!("onion relay: consensus fetch failed: {e}");
                return;
            }
        };
        let md = match fetched.md {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("onion relay: microdescriptor consensus fetch failed: {e}");
                None
            }
        };
        if !fetched.certs.is_empty() {
            self.authority_certs = fetched.certs;
        }
        let mut changed = false;
        if let Some(md) = md {
            if self.consensus_md.as_deref() != Some(md.as_str()) {
                if let Ok(parsed) = onion_dir::consensus::parse(&md) {
                    self.store.set_consensus(parsed.peek());
                    if let Some(old) = self.consensus_md.replace(md) {
                        push_bounded(&mut self.previous_consensuses_md, old);
                    }
                    changed = true;
                }
            }
        }
        let text = fetched.ns;
        if self.consensus.as_deref() != Some(text.as_str()) {
            if let Ok(parsed) = onion_dir::consensus::parse(&text) {
                let c = parsed.peek();
                let (n, va) = (c.relays.len(), c.valid_after);
                self.take_network(c);
                self.store.set_consensus(c);
                self.schedule_consensus_fetch(c);
                if let Some(old) = self.consensus.replace(text) {
                    push_bounded(&mut self.previous_consensuses, old);
                }
                eprintln!("onion relay: consensus valid-after {va}: {n} relays");
                changed = true;
            }
        }
        if !changed {
            return;
        }
        self.publish_documents();
        self.fetch_descriptors(fetched.from);
        // A new view may change the descriptor schedule's decision at once.
        self.check_schedule();
    }

    /// Takes from a verified `ns` consensus its relays' addresses as known relays (exempt
    /// from the per-address limits) and its parameters for new circuits.
    fn take_network(&mut self, c: &onion_dir::consensus::Consensus<'_>) {
        let addrs: Vec<std::net::IpAddr> = c
            .relays
            .iter()
            .map(|r| std::net::IpAddr::V4(r.address))
            .collect();
        self.relay.set_relay_addresses(addrs);
        self.relay.set_consensus_params(
            super::circparams::consensus_params(&c.params),
            self.clock.now(),
        );
    }

    /// The next consensus fetch is due in the first half-interval after `c` stops being
    /// fresh (dir-spec §4.1); at once if that time has passed.
    fn schedule_consensus_fetch(&mut self, c: &onion_dir::consensus::Consensus<'_>) {
        use rand_core::RngCore;
        let t = onion_relay::store::next_consensus_fetch(c, OsRng.next_u64());
        self.next_consensus_fetch = Some(t);
    }

    /// The v3 identities of the configured authorities (whose signatures a consensus needs).
    fn v3_authorities(&self) -> Vec<onion_dir::RsaIdentity> {
        self.authorities
            .iter()
            .filter_map(|a| a.v3ident.map(onion_dir::RsaIdentity))
            .collect()
    }

    /// At start: takes back the directory documents kept in the data directory
    /// ([`super::dircache`]), verified again ([`onion_relay::dir_saved::restore`]), and
    /// serves them at once; what does not verify is reported and not served. Descriptors
    /// the restored consensuses list and the files lack are fetched.
    fn restore_cache(&mut self) {
        let max = self.store.max_bytes();
        let (saved, problems) = self.cache_files.load(max);
        for p in problems {
            eprintln!("onion relay: directory cache file ignored: {p}");
        }
        let now = Timestamp::from(SystemTime::now());
        let r = onion_relay::dir_saved::restore(&saved, &self.v3_authorities(), now, max);
        for (doc, why) in &r.rejected {
            eprintln!(
                "onion relay: directory cache file {}: {why}; not served",
                self.cache_files.path(*doc).display()
            );
        }
        if r.consensus.is_none() && r.consensus_md.is_none() {
            return;
        }
        self.authority_certs = r.certs;
        self.store = r.store;
        self.consensus_md = r.consensus_md;
        let mut listed = String::new();
        if let Some(text) = r.consensus {
            if let Ok(parsed) = onion_dir::consensus::parse(&text) {
                let c = parsed.peek();
                listed = format!(
                    "consensus valid-after {} ({} relays), ",
                    c.valid_after,
                    c.relays.len()
                );
                self.take_network(c);
                self.schedule_consensus_fetch(c);
            }
            self.consensus = Some(text);
        }
        eprintln!(
            "onion relay: directory cache restored from {}: {listed}microdescriptor consensus \
             {}, {} microdescriptors, {} server descriptors, {} key certificates",
            self.cache_files
                .path(onion_relay::dir_saved::CacheDoc::Certs)
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            if self.consensus_md.is_some() {
                "yes"
            } else {
                "no"
            },
            self.store.n_microdescs(),
            self.store.n_server_descriptors(),
            self.authority_certs.len()
        );
        self.publish_documents();
        if let Some(a) = self.authorities.iter().find(|a| !a.bridge) {
            self.fetch_descriptors(SocketAddr::V4(a.dir_addr));
        }
    }

    /// Writes the directory documents that changed to the data directory
    /// ([`super::dircache`]); a failure is reported and the relay goes on (it only costs
    /// a fetch at the next start).
    fn save_cache(&mut self) {
        let saved = onion_relay::dir_saved::saved(
            &self.authority_certs,
            self.consensus.as_deref(),
            self.consensus_md.as_deref(),
            &self.store,
        );
        match self.cache_files.save(&saved) {
            Ok(w) if !w.is_empty() => {
                eprintln!("onion relay: directory cache saved: {}", w.join(", "))
            }
            Ok(_) => {}
            Err(e) => eprintln!("onion relay: directory cache not saved: {e}"),
        }
    }

    /// Gives the directory cache what the relay holds: both consensuses with their diff
    /// bases, the descriptors fetched, our own descriptor; and keeps the documents in the
    /// data directory.
    fn publish_documents(&mut self) {
        let bytes = |v: &std::collections::VecDeque<String>| -> Vec<Vec<u8>> {
            v.iter().map(|t| t.clone().into_bytes()).collect()
        };
        let mut docs = onion_relay::DirDocuments {
            consensus: self.consensus.clone().map(String::into_bytes),
            previous_consensuses: bytes(&self.previous_consensuses),
            consensus_microdesc: self.consensus_md.clone().map(String::into_bytes),
            previous_consensuses_microdesc: bytes(&self.previous_consensuses_md),
            own_descriptor: self.own_descriptor.clone().map(String::into_bytes),
            authority_certs: self
                .authority_certs
                .iter()
                .map(|t| t.clone().into_bytes())
                .collect(),
            ..onion_relay::DirDocuments::default()
        };
        self.store.fill(&mut docs);
        self.relay.set_directory_documents(docs);
        self.save_cache();
    }

    /// Fetches from `from` (an authority's DirPort) the microdescriptors and server
    /// descriptors the consensuses list and the cache lacks, in a thread (dir-spec §5.2).
    fn fetch_descriptors(&mut self, from: SocketAddr) {
        if self.fetching_descriptors {
            return;
        }
        let micro = self.store.missing_microdescs();
        let server = self.store.missing_server_descriptors();
        if micro.is_empty() && server.is_empty() {
            return;
        }
        self.fetching_descriptors = true;
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let errors = super::view::fetch_descriptors(from, &micro, &server, |b| {
                let _ = tx.send(Msg::Descriptors(b));
            });
            let _ = tx.send(Msg::DescriptorsDone(errors));
        });
    }

    /// What the held consensus says of this relay (NoConsensus without one).
    fn listing(&self, now: Timestamp) -> ConsensusListing {
        let Some(text) = self.consensus.as_deref() else {
            return ConsensusListing::NoConsensus;
        };
        let Ok(parsed) = onion_dir::consensus::parse(text) else {
            return ConsensusListing::NoConsensus;
        };
        let id = self.keys.rsa_identity().public().identity();
        ConsensusListing::of(parsed.peek(), &id, now)
    }

    /// Makes the next link certificate in a thread (an RSA-2048 key generation takes long
    /// enough to stall every connection if the loop did it).
    fn make_link_cert(&mut self) {
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let unix = Timestamp::from(SystemTime::now());
            match TlsLinkCert::generate(unix, &mut OsRng) {
                Ok(c) => {
                    let _ = tx.send(Msg::LinkCert(Box::new(c)));
                }
                Err(e) => eprintln!("onion relay: new TLS link certificate: {e}"),
            }
        });
    }

    /// Connections accepted from now on present `cert` (the TLS server configuration is
    /// replaced, and the relay certifies the new certificate in CERTS); connections already
    /// open keep their TLS session and channel.
    fn install_link_cert(&mut self, cert: TlsLinkCert) {
        let now = self.clock.now();
        let sha = hex::encode(cert.sha256());
        let r = self
            .relay
            .set_link_cert(cert, now)
            .map_err(|e| e.to_string())
            .and_then(|()| server_config(&self.relay));
        match r {
            Ok(cfg) => {
                self.server = cfg;
                eprintln!("onion relay: TLS link certificate rotated: sha256 {sha}");
            }
            Err(e) => eprintln!("onion relay: TLS link certificate not rotated: {e}"),
        }
        self.next_link_cert = Some(std::time::Instant::now() + self.link_cert_rotation);
    }

    fn add_conn(&mut self, conn: ConnId, sock: TcpStream, tls: Connection, outbound: bool) {
        let _ = sock.set_nodelay(true);
        let Ok(wsock) = sock.try_clone() else {
            self.relay.handle_closed(conn, self.clock.now());
            return;
        };
        let writer = Writer::spawn(wsock, Key::Conn(conn), self.tx.clone());
        spawn_reader(sock, Key::Conn(conn), self.tx.clone(), None);
        self.conns.insert(
            conn,
            TlsConn {
                tls,
                writer,
                outbound,
                up: false,
                blocked: false,
            },
        );
    }

    fn close_conn(&mut self, conn: ConnId, tell_peer: bool) {
        if let Some(mut c) = self.conns.remove(&conn) {
            if tell_peer {
                c.tls.send_close_notify();
                let mut wire = Vec::new();
                while c.tls.wants_write() {
                    if c.tls.write_tls(&mut wire).is_err() {
                        break;
                    }
                }
                c.writer.push(wire);
            }
            c.writer.close();
        }
        self.relay.handle_closed(conn, self.clock.now());
    }

    /// Moves TLS records the session wants to send to the writer.
    fn flush_tls(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let mut wire = Vec::new();
        while c.tls.wants_write() {
            if c.tls.write_tls(&mut wire).is_err() {
                break;
            }
        }
        self.bw.note_written(unix_now(), wire.len() as u64);
        if c.writer.push(wire) && !c.blocked {
            c.blocked = true;
            self.relay.set_blocked(conn, true);
        }
    }

    fn conn_input(&mut self, conn: ConnId, bytes: &[u8]) {
        let now = self.clock.now();
        self.bw.note_read(unix_now(), bytes.len() as u64);
        let mut rest = bytes;
        let mut plain = Vec::new();
        let mut failed = None;
        {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            loop {
                if !rest.is_empty() {
                    if let Err(e) = c.tls.read_tls(&mut rest) {
                        failed = Some(e.to_string());
                        break;
                    }
                }
                match c.tls.process_new_packets() {
                    Ok(st) => {
                        let n = st.plaintext_bytes_to_read();
                        if n > 0 {
                            let start = plain.len();
                            plain.resize(start + n, 0);
                            if c.tls.reader().read_exact(&mut plain[start..]).is_err() {
                                plain.truncate(start);
                            }
                        }
                    }
                    Err(e) => {
                        failed = Some(format!("TLS: {e}"));
                        break;
                    }
                }
                if rest.is_empty() {
                    break;
                }
            }
        }
        self.flush_tls(conn);
        if let Some(why) = failed {
            if std::env::var_os("ONION_RELAY_DEBUG").is_some() {
                eprintln!("onion relay: connection {}: {why}", conn.0);
            }
            self.close_conn(conn, false);
            return;
        }
        // An outbound session just finished its handshake: the channel starts.
        let mut connected = None;
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.outbound && !c.up && !c.tls.is_handshaking() {
                c.up = true;
                let cert = c
                    .tls
                    .peer_certificates()
                    .and_then(|v| v.first())
                    .map(|d| <[u8; 32]>::from(Sha256::digest(d.as_ref())));
                let ctx = self.relay.tls_exporter_context();
                let exp = c
                    .tls
                    .export_keying_material(
                        [0u8; 32],
                        onion_circuit::channel::TLS_EXPORTER_LABEL,
                        Some(&ctx),
                    )
                    .ok();
                connected = Some(cert.zip(exp));
            }
        }
        match connected {
            Some(Some((cert, exp))) => self.relay.handle_connected(conn, now, cert, exp),
            Some(None) => {
                self.close_conn(conn, false);
                return;
            }
            None => {}
        }
        if !plain.is_empty() {
            self.relay.handle_input(conn, now, &plain);
        }
    }

    fn target_out(&mut self, s: StreamHandle) {
        let now = self.clock.now();
        let Some(t) = self.targets.get_mut(&s) else {
            return;
        };
        while !t.full {
            let mut out = Vec::new();
            let n = self.relay.target_transmit(s, now, &mut out, 64 << 10);
            if n == 0 || out.is_empty() {
                break;
            }
            t.full = t.writer.push(out);
        }
    }

    fn pump(&mut self) {
        let mut out = Vec::new();
        for _ in 0..100_000 {
            let mut busy = false;
            while let Some(ev) = self.relay.poll_event() {
                busy = true;
                self.event(ev);
            }
            while let Some(conn) = self.relay.poll_transmit(self.clock.now(), &mut out) {
                busy = true;
                self.send_plain(conn, &out);
                out.clear();
            }
            if !busy {
                break;
            }
        }
    }

    fn send_plain(&mut self, conn: ConnId, plain: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let mut rest = plain;
        let mut wire = Vec::new();
        while !rest.is_empty() {
            match c.tls.writer().write(rest) {
                Ok(0) | Err(_) => {
                    // rustls holds a bounded amount: move records out, then go on.
                    let mut moved = false;
                    while c.tls.wants_write() {
                        match c.tls.write_tls(&mut wire) {
                            Ok(n) if n > 0 => moved = true,
                            _ => break,
                        }
                    }
                    if !moved {
                        break;
                    }
                }
                Ok(n) => rest = &rest[n..],
            }
        }
        self.bw.note_written(unix_now(), wire.len() as u64);
        if c.writer.push(wire) && !c.blocked {
            c.blocked = true;
            self.relay.set_blocked(conn, true);
        }
        self.flush_tls(conn);
    }

    fn event(&mut self, ev: Event) {
        let tx = self.tx.clone();
        match ev {
            Event::Connect { conn, addr, .. } => {
                std::thread::spawn(move || {
                    let m = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                        Ok(s) => Msg::Connected(conn, s),
                        Err(e) => Msg::ConnectFailed(conn, format!("{addr}: {e}")),
                    };
                    let _ = tx.send(m);
                });
            }
            Event::Disconnect { conn } => self.close_conn(conn, true),
            Event::TlsExporter { conn, context } => {
                let v = self.conns.get(&conn).and_then(|c| {
                    c.tls
                        .export_keying_material(
                            [0u8; 32],
                            onion_circuit::channel::TLS_EXPORTER_LABEL,
                            Some(&context),
                        )
                        .ok()
                });
                match v {
                    Some(v) => self.relay.provide_tls_exporter(conn, self.clock.now(), v),
                    None => self.close_conn(conn, false),
                }
            }
            Event::Resolve { request, name } => {
                self.resolves += 1;
                std::thread::spawn(move || {
                    let r = match (name.as_str(), 0u16).to_socket_addrs() {
                        Ok(a) => {
                            let v: Vec<_> = a.map(|a| a.ip()).take(16).collect();
                            if v.is_empty() {
                                Err(ResolveError::NotFound)
                            } else {
                                Ok(v)
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            Err(ResolveError::NotFound)
                        }
                        Err(_) => Err(ResolveError::Transient),
                    };
                    let _ = tx.send(Msg::Resolved(request, r));
                });
            }
            Event::OpenTarget { stream, addr } => {
                std::thread::spawn(move || {
                    let m = match TcpStream::connect_timeout(&addr, Duration::from_secs(60)) {
                        Ok(s) => Msg::TargetUp(stream, s, addr),
                        Err(e) => Msg::TargetFailed(stream, target_error(&e)),
                    };
                    let _ = tx.send(m);
                });
            }
            Event::TargetData { stream } => self.target_out(stream),
            Event::ResumeTarget { stream } => {
                let now = self.clock.now();
                if let Some(t) = self.targets.get_mut(&stream) {
                    let n = self.relay.handle_target_data(stream, now, &t.held);
                    t.held.drain(..n.min(t.held.len()));
                    t.pause.set(!t.held.is_empty());
                    if t.eof && t.held.is_empty() {
                        t.eof = false;
                        self.relay.handle_target_closed(stream, now);
                    }
                }
            }
            Event::CloseTarget { stream } => {
                self.target_out(stream);
                if let Some(t) = self.targets.remove(&stream) {
                    t.writer.close();
                    t.pause.set(false);
                }
            }
            Event::DirAnswered(a) => {
                let kind = if a.status != 200 {
                    4
                } else if a.path.starts_with("/tor/status-vote/") {
                    0
                } else if a.path.starts_with("/tor/micro/") {
                    1
                } else if a.path.starts_with("/tor/server/") {
                    2
                } else if a.path.starts_with("/tor/keys/") {
                    3
                } else {
                    return;
                };
                self.dir_served[kind] += 1;
            }
            _ => {}
        }
    }

    /// Logs the relay's counters when they changed.
    fn log_stats(&mut self) {
        let st = self.relay.stats();
        let line = format!(
            "connections {} circuits {} streams {} queued_bytes {} circuits_created {} \
             channels_opened {} exit_connections {} resolves {} refused {}/{}",
            self.relay.n_connections(),
            self.relay.n_circuits(),
            self.relay.n_streams(),
            self.relay.queued_bytes(),
            st.circuits_created,
            st.channels_opened,
            self.targets_opened,
            self.resolves,
            st.connections_refused,
            st.creates_refused_dos
        );
        let line = format!(
            "{line} hs_descriptors {} hsdir_stored {} hsdir_served {} hsdir_refused {} \
             intro_established {} introduce2 {} introduce1_nacked {} rate_limited {} \
             rend_established {} rend_joined {} rend_cells_spliced {}",
            self.relay.n_hs_descriptors(),
            st.hs_descriptors_stored,
            st.hs_descriptors_served,
            st.hs_descriptors_refused,
            st.intro_established,
            st.introduce2_relayed,
            st.introduce1_nacked,
            st.introduce1_rate_limited,
            st.rend_established,
            st.rend_joined,
            st.rend_cells_spliced
        );
        let d = self.dir_served;
        let line = format!(
            "{line} dir_consensus {} dir_microdescs {} dir_descriptors {} dir_keys {} \
             dir_not_ok {}",
            d[0], d[1], d[2], d[3], d[4]
        );
        if line != self.last_stats {
            eprintln!("onion relay: stats: {line}");
            self.last_stats = line;
        }
    }

    /// Every minute: key rotation, the descriptor schedule (which reads the bandwidth
    /// history: C tor checks its bandwidth for a new descriptor every minute too).
    fn periodic(&mut self) {
        let wall = SystemTime::now();
        let unix = Timestamp::from(wall);
        if self.keys.next_event(unix, &self.params) <= unix {
            match self.keys.rotate(unix, &self.params, &mut OsRng) {
                Ok(r) => {
                    if r.files_changed() {
                        if let Err(e) = self.key_dir.write(&self.keys) {
                            eprintln!("onion relay: writing rotated keys: {e}");
                        }
                    }
                    if r.descriptor_changed() || r.link_certs {
                        match duplicate(&self.keys, unix, &mut OsRng) {
                            Ok(k) => {
                                if let Err(e) = self.relay.set_keys(k, self.clock.now()) {
                                    eprintln!("onion relay: new keys: {e}");
                                }
                            }
                            Err(e) => eprintln!("onion relay: new keys: {e}"),
                        }
                    }
                    if r.descriptor_changed() {
                        eprintln!("onion relay: keys rotated");
                        self.schedule.mark_dirty("onion key rotated");
                    }
                    if r.signing_cert_expires_soon {
                        eprintln!(
                            "onion relay: warning: the signing certificate expires within a day"
                        );
                    }
                }
                Err(e) => eprintln!("onion relay: key rotation: {e}"),
            }
        }
        let now = Timestamp::from_unix(unix.0);
        self.maybe_fetch_consensus(now);
        self.check_schedule();
    }

    /// The descriptor schedule (dir-spec §2.1), fed the relay's view of the consensus:
    /// build and upload when it says so.
    fn check_schedule(&mut self) {
        if !self.reachable {
            // C tor publishes only once its ORPort is known reachable.
            return;
        }
        let wall = SystemTime::now();
        let unix = Timestamp::from(wall);
        let now = Timestamp::from_unix(unix.0);
        let uptime = wall
            .duration_since(self.started)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let observed = self.bw.observed(unix);
        let listing = self.listing(now);
        if self.last_listing != Some(listing) {
            self.last_listing = Some(listing);
            eprintln!("onion relay: consensus listing: {listing:?}");
        }
        if let Some(reason) = self.schedule.check(now, uptime, observed, false, listing) {
            match build(
                &self.template,
                &self.keys,
                &self.params,
                now,
                uptime,
                observed,
                &mut OsRng,
            ) {
                Ok(docs) => {
                    eprintln!(
                        "onion relay: publishing descriptor ({reason}) to {} authorities: \
                         bandwidth observed {observed} bytes/s",
                        self.authorities.len()
                    );
                    upload_all(&self.authorities, &docs, reason);
                    self.schedule.published(now, observed);
                    self.own_descriptor = Some(docs.descriptor.clone());
                    self.publish_documents();
                }
                Err(e) => eprintln!("onion relay: cannot build the descriptor: {e}"),
            }
        }
    }
}

/// Appends `old` to the diff bases, keeping the newest [`onion_relay::dir::MAX_DIFF_BASES`].
fn push_bounded(v: &mut std::collections::VecDeque<String>, old: String) {
    v.push_back(old);
    while v.len() > onion_relay::dir::MAX_DIFF_BASES {
        v.pop_front();
    }
}

/// The wall clock in whole Unix seconds (the bandwidth history's time).
fn unix_now() -> Timestamp {
    Timestamp::from(SystemTime::now())
}

fn target_error(e: &std::io::Error) -> TargetError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => TargetError::Refused,
        K::TimedOut | K::WouldBlock => TargetError::Timeout,
        K::ConnectionReset => TargetError::Reset,
        K::HostUnreachable | K::NetworkUnreachable => TargetError::Unreachable,
        _ => TargetError::Other,
    }
}
