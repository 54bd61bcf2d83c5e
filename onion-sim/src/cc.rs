//! Congestion control on the simulated network (proposal 324): a download through a 3-hop
//! circuit whose middle → guard link is a bottleneck with a bounded queue, with Tor Vegas
//! negotiated between the client and the exit or with fixed windows (tor-spec §7.3–7.4).
//!
//! The network is the [`crate::client::world`]: guard, middle and exit are each an
//! [`onion_relay::Relay`], the machine `onion relay` runs, and a web server stands next to
//! the exit. Every link has a third of the round-trip time as its one-way latency; the
//! client–guard and middle–exit links are fast (1 Gbit/s by default), the guard–middle link
//! carries [`Experiment::bottleneck`] bytes per second and the middle relay lets at most
//! [`Experiment::queue_limit`] bytes wait for it (its send buffer,
//! [`crate::client::world::PairLink`]); what does not fit waits in the middle relay's
//! channel and circuit queues, where its circuit scheduler decides whose cells go next:
//! what congestion control keeps small. The exit offers congestion control with the
//! experiment's values as `onion relay` takes them from a consensus
//! ([`onion_relay::Relay::set_consensus_params`], `FlowCtrl=2`), and each client asks for it
//! ([`CircConfig::congestion_control`]). A client is an onion-circuit channel and circuit
//! driven directly over its own connection to the guard, not `onion_client::Client`: the
//! experiment needs one fixed path and no directory, and this keeps its CPU time on the
//! cells. Everything on the way is the real code, cell by cell, with its cryptography.
//!
//! [`run`] reports each download's throughput, the bottleneck queue's largest and mean
//! size, and a trace of the exit's congestion window, smoothed and minimum RTT and cells in
//! flight over time ([`CcReport::trace`]); with [`Experiment::second_after`] a second client
//! starts the same download later over the same path, and the report gives the share of the
//! bottleneck each got while both ran ([`CcReport::overlap`]).
//!
//! The Vegas parameters are C tor 0.4.9's defaults unless the experiment runs under other
//! consensus values ([`Experiment::with_consensus`], `onion sim --bottleneck --cc-param`),
//! as a network's authorities may set them: names and ranges are those C tor reads
//! (onion-dir's [`onion_dir::ccparams::CC_PARAMS`]), mapped to the circuit's configuration
//! by the same function the client and `onion relay` use
//! ([`onion_client::dir::cc_config`]).

use std::rc::Rc;
use std::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use onion_cell::relaymsg::BeginFlags;
use onion_circuit::cc::flowctl::FlowCtrlParams;
use onion_circuit::cc::CcConfig as VegasConfig;
use onion_circuit::channel::{ChanEvent, PeerIds};
use onion_circuit::circuit::{CircConfig, CircEvent, HandshakeKind, HopTarget};
use onion_circuit::relay::RelayConfig as CircRelayConfig;
use onion_circuit::stream::{StreamEvent, StreamId};
use onion_circuit::Instant;
use onion_dir::ccparams::{cc_param_spec, CcParams, CcPath};
use onion_dir::consensus::NetParams;
use onion_relay::ConsensusParams;

use crate::circuit::bare::BareCircuit;
use crate::circuit::web::{self, PATTERN_LEN};
use crate::circuit::{SimError, WEB_HOST};
use crate::client::world::{
    wall_at, AccessLink, LinkId, NetEvent, PairLink, Role, World, WorldConfig, SEND_BUFFER,
};

/// Settings of one experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// Seed of the network's RNG.
    pub seed: u64,
    /// Round-trip time of the path (client to exit and back), split evenly over its three
    /// links.
    pub rtt: Duration,
    /// Bytes per second of the guard–middle link, the bottleneck.
    pub bottleneck: u64,
    /// Bytes the bottleneck's queue holds (its direction toward the client).
    pub queue_limit: usize,
    /// Bytes per second of the other links.
    pub fast: u64,
    /// Bytes each client downloads.
    pub transfer: u64,
    /// Negotiate congestion control (Tor Vegas with [`Experiment::vegas`]); else fixed
    /// windows.
    pub congestion_control: bool,
    /// The Vegas parameters of both ends: C tor 0.4.9's defaults for an exit circuit
    /// (`sendme_inc` 31, `cc_cwnd_init` 124, `cc_sscap_exit` 600, `cc_ss_max` 5000,
    /// `cc_cwnd_inc` 1 at `cc_cwnd_inc_rate` 31) unless an experiment asks for the values a
    /// consensus could set instead.
    pub vegas: VegasConfig,
    /// The consensus values [`Experiment::vegas`] was made from
    /// ([`Experiment::with_consensus`]), in the order given; empty for C tor's defaults.
    pub consensus: Vec<(String, i32)>,
    /// Start a second client on the same path this long after the first.
    pub second_after: Option<Duration>,
    /// Interval of the trace's samples.
    pub sample_every: Duration,
}

impl Default for Experiment {
    /// The reference experiment: 100 ms RTT, 200 Mbit/s bottleneck with a 256 KiB queue (about
    /// 10 ms of it), 1 Gbit/s elsewhere, 50 MiB with congestion control.
    fn default() -> Self {
        Experiment {
            seed: 1,
            rtt: Duration::from_millis(100),
            bottleneck: 200_000_000 / 8,
            queue_limit: 256 * 1024,
            fast: 1_000_000_000 / 8,
            transfer: 50 << 20,
            congestion_control: true,
            vegas: VegasConfig::default(),
            consensus: Vec::new(),
            second_after: None,
            sample_every: Duration::from_millis(10),
        }
    }
}

/// Why a consensus parameter cannot be set for the experiment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CcParamError {
    /// Not of the form `NAME=VALUE` with an Int32 value (param-spec).
    #[error("{0:?} is not NAME=VALUE with an Int32 VALUE")]
    Syntax(String),
    /// C tor reads no congestion-control parameter of this name.
    #[error("{0} is not a congestion-control consensus parameter C tor reads (cc_sscap_exit, cc_ss_max, cc_cwnd_inc, ...)")]
    Unknown(String),
    /// A parameter C tor reads, but not for an exit circuit's Tor Vegas.
    #[error("{name} does not act on this experiment's exit circuit: {why}")]
    NotUsed {
        /// The parameter.
        name: String,
        /// What it is for instead.
        why: &'static str,
    },
    /// The value lies outside C tor's range for the parameter (a consensus carrying it
    /// would be clamped into the range).
    #[error("{name}={value} is outside C tor's range [{min}, {max}] for it")]
    OutOfRange {
        /// The parameter.
        name: String,
        /// The value given.
        value: i32,
        /// The smallest value C tor keeps.
        min: i32,
        /// The largest value C tor keeps.
        max: i32,
    },
    /// The same parameter twice.
    #[error("{0} is given twice")]
    Repeated(String),
    /// `cc_alg=0`: fixed windows, which the experiment runs beside Vegas anyway.
    #[error("cc_alg=0 turns congestion control off; the experiment already runs fixed windows beside Tor Vegas")]
    Disabled,
}

/// One `NAME=VALUE` consensus parameter (param-spec's `Keyword=Int32`).
pub fn parse_cc_param(s: &str) -> Result<(String, i32), CcParamError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| CcParamError::Syntax(s.to_owned()))?;
    let v: i32 = v.parse().map_err(|_| CcParamError::Syntax(s.to_owned()))?;
    if k.is_empty() {
        return Err(CcParamError::Syntax(s.to_owned()));
    }
    Ok((k.to_owned(), v))
}

/// What a `cc_*` parameter C tor reads is for, if not for an exit circuit's Tor Vegas.
fn not_for_exit_vegas(name: &str) -> Option<&'static str> {
    if name.ends_with("_onion") {
        Some("it sets Tor Vegas on onion-service circuits")
    } else if name.ends_with("_sbws") {
        Some("it sets Tor Vegas on bandwidth-scanner circuits")
    } else if name == "cc_bwe_min" {
        Some("C tor reads it, but Tor Vegas does not use it")
    } else if name.starts_with("cc_xon") || name.starts_with("cc_xoff") {
        Some("it sets stream flow control (XON/XOFF), which this download does not exercise")
    } else {
        None
    }
}

impl Experiment {
    /// The experiment with Tor Vegas as a consensus carrying `params` (`cc_*` names and values
    /// as C tor reads them) sets it for exit circuits, at both ends; every other parameter
    /// keeps C tor's default. Each value must lie in C tor's range for it (proposal 324
    /// §6.5, param-spec), each name may appear once, and only parameters that act on an
    /// exit circuit's Vegas are taken.
    pub fn with_consensus(self, params: &[(String, i32)]) -> Result<Self, CcParamError> {
        for (i, (name, value)) in params.iter().enumerate() {
            let spec = cc_param_spec(name).ok_or_else(|| CcParamError::Unknown(name.clone()))?;
            if let Some(why) = not_for_exit_vegas(name) {
                return Err(CcParamError::NotUsed {
                    name: name.clone(),
                    why,
                });
            }
            if !(spec.min..=spec.max).contains(value) {
                return Err(CcParamError::OutOfRange {
                    name: name.clone(),
                    value: *value,
                    min: spec.min,
                    max: spec.max,
                });
            }
            if params[..i].iter().any(|(n, _)| n == name) {
                return Err(CcParamError::Repeated(name.clone()));
            }
        }
        let net = NetParams {
            entries: params.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
        };
        let vegas = onion_client::dir::cc_config(&CcParams::from_net_params(&net), CcPath::Exit)
            .ok_or(CcParamError::Disabled)?;
        Ok(Experiment {
            vegas,
            consensus: params.to_vec(),
            ..self
        })
    }
}

/// The largest TLS record's payload: the relays' links deliver their writes in pieces of
/// this size.
const TLS_RECORD: usize = 16 * 1024;

/// At most this many trace samples are kept (later ones are counted, not kept).
pub const MAX_TRACE: usize = 20_000;

/// One sample of the first download's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceSample {
    /// Virtual time since the start.
    pub at: Duration,
    /// The exit's congestion window (cells); 0 with fixed windows.
    pub cwnd: u64,
    /// Cells the exit has in flight (congestion control), or in its circuit package window
    /// use (fixed windows: not tracked, 0).
    pub inflight: u64,
    /// The exit's smoothed RTT (N-EWMA, proposal 324 §2.1.2), ms.
    pub rtt_ms: f64,
    /// The exit's minimum RTT, ms.
    pub min_rtt_ms: f64,
    /// Whether Vegas is still in slow start.
    pub slow_start: bool,
    /// Bytes waiting at the bottleneck: the link's queue and everything the middle relay
    /// holds (channel and circuit queues).
    pub queue: u64,
    /// Body bytes each client has received so far.
    pub received: [u64; 2],
}

/// One client's download.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Download {
    /// Body bytes received (and checked against what the server sent).
    pub bytes: u64,
    /// When the request left the client.
    pub start: Duration,
    /// When the last body byte arrived.
    pub end: Duration,
    /// Whether congestion control was negotiated with the exit.
    pub negotiated: bool,
    /// The exit's largest congestion window (cells).
    pub max_cwnd: u64,
    /// Circuit SENDMEs the client sent.
    pub circ_sendmes: u64,
    /// Stream SENDMEs the client sent (none under congestion control).
    pub stream_sendmes: u64,
}

impl Download {
    /// Mean body bytes per second from request to last byte.
    pub fn throughput(&self) -> f64 {
        let t = (self.end.saturating_sub(self.start)).as_secs_f64();
        if t > 0.0 {
            self.bytes as f64 / t
        } else {
            0.0
        }
    }
}

/// What an experiment measured.
#[derive(Debug, Clone)]
pub struct CcReport {
    /// The settings.
    pub config: Experiment,
    /// The downloads (the first client's, then the second's).
    pub downloads: Vec<Download>,
    /// The largest bottleneck queue seen (bytes).
    pub max_queue: u64,
    /// The largest backlog of the bottleneck link itself: bytes the middle relay wrote
    /// toward the guard that the link has not transmitted yet (its bounded queue, never
    /// above [`Experiment::queue_limit`]).
    pub max_link_queue: u64,
    /// The bottleneck queue's mean over the first download (bytes, sampled).
    pub mean_queue: u64,
    /// The trace, one sample per [`Experiment::sample_every`].
    pub trace: Vec<TraceSample>,
    /// Samples not kept beyond [`MAX_TRACE`].
    pub trace_dropped: usize,
    /// With two clients: bytes per second each received while both were downloading, from
    /// ten round trips after the second's request (past its slow start); `None` if that
    /// leaves less than five round trips.
    pub overlap: Option<[f64; 2]>,
}

impl CcReport {
    /// The first download's throughput as a fraction of the bottleneck.
    pub fn utilization(&self) -> f64 {
        self.downloads
            .first()
            .map_or(0.0, |d| d.throughput() / self.config.bottleneck as f64)
    }

    /// The first download's throughput over its second half (bytes received after half the
    /// transfer), as a fraction of the bottleneck: the rate once slow start is long over.
    pub fn steady_utilization(&self) -> f64 {
        let half = self.config.transfer / 2;
        let Some(d) = self.downloads.first() else {
            return 0.0;
        };
        let Some(s) = self.trace.iter().find(|s| s.received[0] >= half) else {
            return 0.0;
        };
        let t = d.end.saturating_sub(s.at).as_secs_f64();
        if t <= 0.0 {
            return 0.0;
        }
        (d.bytes - s.received[0]) as f64 / t / self.config.bottleneck as f64
    }

    /// The first download's throughput from the end of slow start (the first trace sample
    /// with Vegas out of slow start) to its last byte, as a fraction of the bottleneck; 0
    /// with fixed windows or if slow start did not end before the download did.
    pub fn after_slow_start_utilization(&self) -> f64 {
        let Some(d) = self.downloads.first() else {
            return 0.0;
        };
        let Some(s) = self.trace.iter().find(|s| s.cwnd > 0 && !s.slow_start) else {
            return 0.0;
        };
        let t = d.end.saturating_sub(s.at).as_secs_f64();
        if t <= 0.0 || s.received[0] >= d.bytes {
            return 0.0;
        }
        (d.bytes - s.received[0]) as f64 / t / self.config.bottleneck as f64
    }

    /// The first download's congestion window when slow start ended (cells); 0 if it did
    /// not end.
    pub fn slow_start_exit_cwnd(&self) -> u64 {
        self.trace
            .iter()
            .find(|s| s.cwnd > 0 && !s.slow_start)
            .map_or(0, |s| s.cwnd)
    }

    /// Jain's fairness index of the two circuits' rates while both ran
    /// ([`CcReport::overlap`]): `(a + b)² / (2 (a² + b²))`, 1 for equal shares, 0.5 when one
    /// gets everything.
    pub fn jain(&self) -> Option<f64> {
        let [a, b] = self.overlap?;
        let sq = a * a + b * b;
        (sq > 0.0).then(|| (a + b) * (a + b) / (2.0 * sq))
    }

    /// Cells the first download delivered per round trip.
    pub fn cells_per_rtt(&self) -> f64 {
        self.downloads.first().map_or(0.0, |d| {
            d.throughput() / 498.0 * self.config.rtt.as_secs_f64()
        })
    }

    /// The trace in at most `lines` lines for people (evenly spaced samples from the first
    /// with a congestion window to the end of the first download): time, cwnd, inflight,
    /// smoothed and minimum RTT, slow start, bottleneck queue, bytes received.
    pub fn trace_summary(&self, lines: usize) -> String {
        let live: Vec<&TraceSample> = self.trace.iter().filter(|s| s.cwnd > 0).collect();
        let mut out = String::new();
        if live.is_empty() || lines == 0 {
            return out;
        }
        out +=
            "      time   cwnd  inflight   RTT ms   min ms  slow start  queue KiB  received MiB\n";
        let step = live.len().div_ceil(lines).max(1);
        let last = live.len() - 1;
        for (i, s) in live.iter().enumerate() {
            if i % step != 0 && i != last {
                continue;
            }
            out += &format!(
                "  {:>7.3} s {:>6} {:>9} {:>8.2} {:>8.2} {:>11} {:>10} {:>13.1}\n",
                s.at.as_secs_f64(),
                s.cwnd,
                s.inflight,
                s.rtt_ms,
                s.min_rtt_ms,
                if s.slow_start { "yes" } else { "no" },
                s.queue / 1024,
                s.received[0] as f64 / f64::from(1u32 << 20),
            );
        }
        out
    }

    /// A few lines for people.
    pub fn summary(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "congestion control: {}; RTT {} ms, bottleneck {:.0} Mbit/s (queue {} KiB), {:.1} MiB each\n",
            if c.congestion_control {
                "Tor Vegas (negotiated with the exit)"
            } else {
                "off (fixed windows)"
            },
            c.rtt.as_millis(),
            c.bottleneck as f64 * 8.0 / 1e6,
            c.queue_limit / 1024,
            c.transfer as f64 / f64::from(1u32 << 20),
        );
        if c.congestion_control {
            let params: Vec<String> = c
                .consensus
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out += &format!(
                "  consensus parameters: {}\n",
                if params.is_empty() {
                    "C tor 0.4.9's defaults".to_owned()
                } else {
                    format!("{} (the rest C tor 0.4.9's defaults)", params.join(" "))
                }
            );
        }
        for (i, d) in self.downloads.iter().enumerate() {
            out += &format!(
                "  download {}: {} bytes in {:.3} s: {:.2} MB/s ({:.1} % of the bottleneck), max cwnd {} cells, {} circuit / {} stream SENDMEs\n",
                i + 1,
                d.bytes,
                d.end.saturating_sub(d.start).as_secs_f64(),
                d.throughput() / 1e6,
                100.0 * d.throughput() / c.bottleneck as f64,
                d.max_cwnd,
                d.circ_sendmes,
                d.stream_sendmes,
            );
        }
        let after_ss = if c.congestion_control {
            format!(
                "; after slow start (left at cwnd {}): {:.1} %",
                self.slow_start_exit_cwnd(),
                100.0 * self.after_slow_start_utilization(),
            )
        } else {
            String::new()
        };
        out += &format!(
            "  second half of download 1: {:.1} % of the bottleneck{after_ss}; {:.0} cells per RTT overall\n",
            100.0 * self.steady_utilization(),
            self.cells_per_rtt()
        );
        out += &format!(
            "  bottleneck queue: max {} KiB ({:.1} ms), mean {} KiB; link queue max {} B (bound {} B)\n",
            self.max_queue / 1024,
            self.max_queue as f64 / c.bottleneck as f64 * 1e3,
            self.mean_queue / 1024,
            self.max_link_queue,
            c.queue_limit,
        );
        if let Some([a, b]) = self.overlap {
            out += &format!(
                "  while both ran: {:.2} and {:.2} MB/s ({:.1} % / {:.1} % of the bottleneck)\n",
                a / 1e6,
                b / 1e6,
                100.0 * a / c.bottleneck as f64,
                100.0 * b / c.bottleneck as f64,
            );
            if let Some(j) = self.jain() {
                out += &format!("  Jain's fairness index while both ran: {j:.3}\n");
            }
        }
        out
    }
}

/// The most bytes from the guard held for a client's channel (as onion-client's default
/// `Limits::channel_inbound`); beyond it the download fails.
const INBOUND_LIMIT: usize = 1 << 20;

/// One client: its own connection and channel to the guard, one circuit through guard,
/// middle and exit, one stream fetching the body.
struct Client {
    link: Option<LinkId>,
    /// The channel to the guard and the circuit on it.
    bare: BareCircuit,
    rng: ChaCha20Rng,
    start_at: Instant,
    stream: Option<StreamId>,
    request_sent: Option<Instant>,
    head: Vec<u8>,
    body_started: bool,
    body: u64,
    last_byte: Option<Instant>,
    corrupt: bool,
    done: bool,
    stats: onion_circuit::flow::FlowStats,
    negotiated: bool,
    /// Why the stream ended (its END reason).
    end_reason: Option<onion_cell::relaymsg::EndReason>,
    /// Why the download failed.
    failed: Option<String>,
}

/// What every client shares: the path, the settings of its circuit, the web server's
/// content.
struct Common {
    path: Vec<HopTarget>,
    circ_config: CircConfig,
    transfer: u64,
    pattern: Rc<[u8]>,
}

impl Client {
    fn new(start_at: Instant, seed: u64) -> Client {
        Client {
            link: None,
            bare: BareCircuit::default(),
            rng: ChaCha20Rng::seed_from_u64(seed),
            start_at,
            stream: None,
            request_sent: None,
            head: Vec::new(),
            body_started: false,
            body: 0,
            last_byte: None,
            corrupt: false,
            done: false,
            stats: onion_circuit::flow::FlowStats::default(),
            negotiated: false,
            end_reason: None,
            failed: None,
        }
    }

    fn fail(&mut self, why: impl Into<String>) {
        if !self.done && self.failed.is_none() {
            self.failed = Some(why.into());
        }
    }

    /// Body bytes `data` at body offset `*body`: counted and compared with the server's.
    fn take_body(body: &mut u64, corrupt: &mut bool, pattern: &[u8], data: &[u8]) {
        let off = (*body % PATTERN_LEN as u64) as usize;
        if pattern.get(off..off + data.len()) != Some(data) {
            *corrupt = true;
        }
        *body += data.len() as u64;
    }

    /// What the connection brought.
    fn net_event(&mut self, now: Instant, ev: NetEvent, expected: PeerIds) {
        match ev {
            NetEvent::Connected { cert_sha256, .. } => {
                self.bare
                    .connected(now, wall_at(now), expected, cert_sha256);
            }
            NetEvent::Data { bytes, .. } => {
                if self.bare.received(now, &bytes, INBOUND_LIMIT).is_err() {
                    self.fail("the guard sent more than the channel's input bound");
                }
            }
            NetEvent::Closed { .. } => self.fail("the connection to the guard closed"),
        }
    }

    /// Move what can move now (channel events, the circuit's cells and events, output
    /// onto the connection); whether anything did.
    fn step(&mut self, w: &mut World, common: &Common) -> bool {
        let now = w.now();
        let Some(link) = self.link else {
            return false;
        };
        if self.bare.chan.is_none() {
            return false;
        }
        let mut moved = self.bare.feed(now);
        while let Some(ev) = self.bare.poll_chan_event(now) {
            moved = true;
            match ev {
                ChanEvent::Open(_) => {
                    let created = self.bare.create(
                        common.circ_config.clone(),
                        &common.path[0],
                        HandshakeKind::NtorV3,
                        now,
                        &mut self.rng,
                    );
                    if let Err(e) = created {
                        self.failed = Some(e);
                    }
                }
                ChanEvent::Closed(e) if !self.done => {
                    self.failed = Some(format!("channel closed: {e}"));
                }
                _ => {}
            }
        }
        if self.bare.circ.is_some() {
            loop {
                moved |= self.bare.send_cells(&mut self.rng).0;
                let Some((_, circ)) = &mut self.bare.circ else {
                    break;
                };
                let Some(ev) = circ.poll_event() else { break };
                moved = true;
                match ev {
                    CircEvent::HopAdded { hops } if hops + 1 < common.path.len() => {
                        if let Err(e) = circ.extend(&common.path[hops], now, &mut self.rng) {
                            self.failed = Some(format!("EXTEND2: {e}"));
                        }
                    }
                    CircEvent::HopAdded { hops } if hops + 1 == common.path.len() => {
                        // The exit: asked for congestion control if the client runs it.
                        if let Err(e) = circ.extend_exit(&common.path[hops], now, &mut self.rng) {
                            self.failed = Some(format!("EXTEND2: {e}"));
                        }
                    }
                    CircEvent::HopAdded { .. } => {
                        self.negotiated = circ.congestion_control(common.path.len() - 1).is_some();
                        match circ.begin(WEB_HOST, 80, BeginFlags::default(), now) {
                            Ok(s) => self.stream = Some(s),
                            Err(e) => self.failed = Some(format!("BEGIN: {e}")),
                        }
                    }
                    CircEvent::StreamConnected { stream, .. } => {
                        let req = format!(
                            "GET /{} HTTP/1.0\r\nHost: {WEB_HOST}\r\n\r\n",
                            common.transfer
                        );
                        match circ.send(stream, req.as_bytes()) {
                            Ok(_) => self.request_sent = Some(now),
                            Err(e) => self.failed = Some(format!("request: {e}")),
                        }
                    }
                    CircEvent::Stream(StreamEvent::Data { data, .. }) => {
                        self.last_byte = Some(now);
                        if self.body_started {
                            Self::take_body(
                                &mut self.body,
                                &mut self.corrupt,
                                &common.pattern,
                                &data,
                            );
                            continue;
                        }
                        // The response head, bounded; the body follows its blank line.
                        let room = web::MAX_REQUEST.saturating_sub(self.head.len());
                        let before = self.head.len();
                        self.head.extend_from_slice(&data[..data.len().min(room)]);
                        if let Some(p) = self.head.windows(4).position(|w| w == b"\r\n\r\n") {
                            self.body_started = true;
                            let rest = (p + 4).saturating_sub(before);
                            self.corrupt |= !self.head.starts_with(b"HTTP/1.0 200 ");
                            if rest < data.len() {
                                Self::take_body(
                                    &mut self.body,
                                    &mut self.corrupt,
                                    &common.pattern,
                                    &data[rest..],
                                );
                            }
                        } else if self.head.len() >= web::MAX_REQUEST {
                            self.failed = Some("response head too long".into());
                        }
                    }
                    CircEvent::Stream(StreamEvent::Ended { reason, .. }) => {
                        self.end_reason = Some(reason);
                        self.stats = circ.stats();
                        self.done = true;
                        circ.destroy();
                    }
                    CircEvent::Closed {
                        remote_reason,
                        error,
                    } if !self.done => {
                        self.failed = Some(format!(
                            "circuit closed before the download ended (DESTROY {remote_reason:?}, error {error:?})"
                        ));
                    }
                    _ => {}
                }
            }
        }
        if let Some(out) = self.bare.transmit() {
            moved = true;
            w.send(link, out);
        }
        moved
    }

    /// When the channel or the circuit next needs the time.
    fn next_time(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        if self.link.is_none() {
            return Some(self.start_at);
        }
        self.bare.next_time()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.bare.handle_timeout(now);
    }
}

/// Relays of the experiment's world, by role.
struct Path {
    guard: usize,
    middle: usize,
    exit: usize,
}

/// The world of the experiment: one guard, one middle, one exit, each an
/// [`onion_relay::Relay`]; the client–guard, guard–middle and middle–exit links each a third
/// of the round trip; the guard–middle link the bottleneck with its bounded queue.
fn world(cfg: &Experiment) -> Result<(World, Path), SimError> {
    let one_way = cfg.rtt / 6;
    let mut w = World::new(WorldConfig {
        seed: cfg.seed,
        // The consensus' signers: nothing here reads it.
        authorities: 1,
        guards: 1,
        middles: 1,
        exits: 1,
        // The client–guard link: its latency is the client's plus the guard's (0).
        relay_link: AccessLink {
            latency: Duration::ZERO,
            bandwidth: cfg.fast,
        },
        client_link: AccessLink {
            latency: one_way,
            bandwidth: cfg.fast,
        },
        // The web server is next to the exit.
        web_latency: Duration::from_micros(250),
        congestion_control: false,
        story: false,
    })?;
    let one = |role| w.relays_of(role).first().copied();
    let (Some(guard), Some(middle), Some(exit)) =
        (one(Role::Guard), one(Role::Middle), one(Role::Exit))
    else {
        return Err(SimError::Setup(
            "the world lacks a guard, middle or exit".into(),
        ));
    };
    w.set_relay_pair_link(
        guard,
        middle,
        PairLink {
            latency: one_way,
            bandwidth: cfg.bottleneck,
            send_buffer: cfg.queue_limit,
            record: TLS_RECORD,
        },
    );
    w.set_relay_pair_link(
        middle,
        exit,
        PairLink {
            latency: one_way,
            bandwidth: cfg.fast,
            send_buffer: SEND_BUFFER,
            record: TLS_RECORD,
        },
    );
    // The exit offers congestion control with the experiment's values, as `onion relay`
    // takes them from a consensus carrying them.
    let net = NetParams {
        entries: cfg
            .consensus
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect(),
    };
    let circuits = CircRelayConfig {
        congestion_control: Some(cfg.vegas),
        flow_control: FlowCtrlParams::default(),
    };
    let now = w.now();
    w.relay_machine_mut(exit)
        .set_consensus_params(ConsensusParams::new(circuits, &net), now);
    Ok((
        w,
        Path {
            guard,
            middle,
            exit,
        },
    ))
}

/// Run one experiment.
pub fn run(cfg: Experiment) -> Result<CcReport, SimError> {
    let (mut w, p) = world(&cfg)?;
    let common = Common {
        path: [p.guard, p.middle, p.exit]
            .iter()
            .map(|&r| w.relay_target(r))
            .collect(),
        circ_config: CircConfig {
            congestion_control: cfg.congestion_control.then(|| Box::new(cfg.vegas)),
            ..CircConfig::default()
        },
        transfer: cfg.transfer.min(web::MAX_BODY),
        pattern: web::pattern(cfg.seed),
    };
    let expected = PeerIds {
        rsa: Some(common.path[0].rsa_id),
        ed25519: common.path[0].ed_id,
    };
    let guard_addr = w.relay_addr(p.guard);
    let mut clients = vec![Client::new(Instant::ZERO, cfg.seed ^ 0x5eed)];
    if let Some(after) = cfg.second_after {
        clients.push(Client::new(Instant::ZERO + after, cfg.seed ^ 0x5eed ^ 1));
    }
    let limit = Instant::ZERO + Duration::from_secs(3600);
    let mut trace = Vec::new();
    let mut dropped = 0;
    let mut next_sample = Instant::ZERO;
    let (mut max_queue, mut queue_sum, mut queue_n) = (0u64, 0u128, 0u64);
    let mut max_link_queue = 0u64;
    let mut max_cwnd = [0u64; 2];
    // The exit's circuits in the order they appeared: the first client's, then the second's.
    let mut exit_circs: Vec<u64> = Vec::new();
    loop {
        let now = w.now();
        for c in clients.iter_mut() {
            if c.link.is_none() && c.start_at <= now {
                c.link = Some(w.connect(guard_addr));
            }
        }
        // Everything that can happen now.
        loop {
            let mut moved = w.pump();
            while let Some(ev) = w.poll_event() {
                moved = true;
                let link = match &ev {
                    NetEvent::Connected { link, .. }
                    | NetEvent::Data { link, .. }
                    | NetEvent::Closed { link } => *link,
                };
                if let Some(c) = clients.iter_mut().find(|c| c.link == Some(link)) {
                    c.net_event(now, ev, expected);
                }
            }
            for c in clients.iter_mut() {
                moved |= c.step(&mut w, &common);
            }
            if !moved {
                break;
            }
        }
        if let Some(why) = clients.iter().find_map(|c| c.failed.clone()) {
            return Err(SimError::Circuit(why));
        }
        let link_queue = w.relay_link_backlog(p.middle, p.guard) as u64;
        let queue = link_queue + w.relay_machine(p.middle).queued_bytes() as u64;
        max_queue = max_queue.max(queue);
        max_link_queue = max_link_queue.max(link_queue);
        let mut first = None;
        for (id, cc) in w.relay_machine(p.exit).circuit_congestion() {
            let k = match exit_circs.iter().position(|&x| x == id) {
                Some(k) => k,
                None => {
                    exit_circs.push(id);
                    exit_circs.len() - 1
                }
            };
            if let Some(m) = max_cwnd.get_mut(k) {
                *m = (*m).max(cc.cwnd());
            }
            if k == 0 {
                first = Some(cc.clone());
            }
        }
        if now >= next_sample {
            next_sample = now + cfg.sample_every;
            if !clients[0].done {
                queue_sum += u128::from(queue);
                queue_n += 1;
            }
            if trace.len() < MAX_TRACE {
                let cc = first.as_ref();
                trace.push(TraceSample {
                    at: now - Instant::ZERO,
                    cwnd: cc.map_or(0, |c| c.cwnd()),
                    inflight: cc.map_or(0, |c| c.inflight()),
                    rtt_ms: cc.map_or(0.0, |c| c.rtt().ewma_usec as f64 / 1e3),
                    min_rtt_ms: cc.map_or(0.0, |c| c.rtt().min_usec as f64 / 1e3),
                    slow_start: cc.is_some_and(|c| c.in_slow_start()),
                    queue,
                    received: [clients[0].body, clients.get(1).map_or(0, |c| c.body)],
                });
            } else {
                dropped += 1;
            }
        }
        if clients.iter().all(|c| c.done) {
            break;
        }
        let next = clients
            .iter()
            .filter_map(Client::next_time)
            .chain(w.next_time())
            .min();
        let next = match (next, (now < next_sample).then_some(next_sample)) {
            // Sample on time while something is in flight.
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, _) => a,
        };
        let Some(next) = next else {
            return Err(SimError::Stalled {
                at: now - Instant::ZERO,
                what: format!(
                    "downloads at {:?} bytes",
                    clients.iter().map(|c| c.body).collect::<Vec<_>>()
                ),
            });
        };
        if next > limit {
            return Err(SimError::TimeLimit);
        }
        w.advance_to(next);
        for c in clients.iter_mut() {
            c.handle_timeout(next);
        }
    }
    let mut downloads = Vec::new();
    for (k, c) in clients.iter().enumerate() {
        if c.corrupt || c.body != common.transfer {
            return Err(SimError::Circuit(format!(
                "download {} received {} of {} bytes{}; stream ended: {:?}",
                k + 1,
                c.body,
                common.transfer,
                if c.corrupt { ", corrupted" } else { "" },
                c.end_reason,
            )));
        }
        let t = |x: Option<Instant>| x.map_or(Duration::ZERO, |x| x - Instant::ZERO);
        downloads.push(Download {
            bytes: c.body,
            start: t(c.request_sent),
            end: t(c.last_byte),
            negotiated: c.negotiated,
            max_cwnd: max_cwnd[k],
            circ_sendmes: c.stats.circ_sendmes_sent,
            stream_sendmes: c.stats.stream_sendmes_sent,
        });
    }
    let overlap = overlap(&trace, &downloads, cfg.rtt);
    Ok(CcReport {
        mean_queue: u64::try_from(queue_sum / u128::from(queue_n.max(1))).unwrap_or(u64::MAX),
        config: cfg,
        downloads,
        max_queue,
        max_link_queue,
        trace,
        trace_dropped: dropped,
        overlap,
    })
}

/// Bytes per second each client received from ten round trips after the second one's
/// request (its slow start) to the end of the first download to finish; `None` if that
/// leaves less than five round trips.
fn overlap(trace: &[TraceSample], downloads: &[Download], rtt: Duration) -> Option<[f64; 2]> {
    let [a, b] = downloads else {
        return None;
    };
    let from = b.start + rtt * 10;
    let to = a.end.min(b.end);
    let s0 = trace.iter().find(|s| s.at >= from)?;
    let s1 = trace.iter().rev().find(|s| s.at <= to)?;
    let t = s1.at.checked_sub(s0.at)?;
    if t < rtt * 5 {
        return None;
    }
    let t = t.as_secs_f64();
    Some([
        (s1.received[0] - s0.received[0]) as f64 / t,
        (s1.received[1] - s0.received[1]) as f64 / t,
    ])
}
