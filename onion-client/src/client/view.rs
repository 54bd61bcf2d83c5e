//! A read-only view of the circuit carrying a stream, for embedders that report it (as C tor's
//! controller reports a stream's circuit path, control-spec §4.1.1 CIRC and §4.1.2 STREAM):
//! which relays it runs through, what it is for, and whether its last hop runs congestion
//! control (proposal 324).

use onion_circuit::circuit::HandshakeKind;
use onion_circuit::flow::FlowStats;
use onion_dir::RsaIdentity;

use super::circ::{CircPhase, Purpose};
use super::event::StreamHandle;
use super::Client;

/// One hop of a circuit, guard first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopView {
    /// The relay's RSA identity (its fingerprint).
    pub rsa_id: RsaIdentity,
    /// Its nickname in the current directory; `None` for a relay the directory does not
    /// list (an authority or fallback directory reached before bootstrap, or one that left
    /// the consensus since).
    pub nickname: Option<String>,
    /// The handshake that added it (tor-spec §5.1): CREATE2 with ntor or CREATE_FAST for the
    /// first hop, EXTEND2 with ntor-v3 for later hops whose microdescriptor offers it, else
    /// ntor.
    pub handshake: HandshakeKind,
}

/// Congestion control on a circuit's last hop (proposal 324 §4: Tor Vegas, negotiated in
/// the exit's CREATE2/EXTEND2 handshake, tor-spec §5.1.4 ntor-v3 extensions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CcView {
    /// Cells per circuit SENDME the hop agreed to (proposal 324 §4.1.2, `cc_sendme_inc`).
    pub sendme_inc: u8,
    /// The congestion window now, in cells.
    pub cwnd: u64,
    /// Cells sent and not yet acknowledged.
    pub inflight: u64,
    /// Whether the window is still in slow start.
    pub slow_start: bool,
    /// The smoothed round-trip time, in microseconds (0 before the first SENDME).
    pub rtt_ewma_usec: u64,
    /// The smallest round-trip time seen, in microseconds.
    pub rtt_min_usec: u64,
}

/// The circuit a stream runs on, as [`Client::stream_circuit`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitView {
    /// A number naming the circuit within this client, never reused: streams whose views
    /// have the same number share the circuit (an embedder reports each circuit once).
    pub circuit: u64,
    /// The hops the client chose, guard first (a rendezvous circuit's virtual hop to the
    /// onion service is not a relay and is not listed).
    pub hops: Vec<HopView>,
    /// What the circuit is for.
    pub purpose: Purpose,
    /// Whether every hop was added (a stream only attaches to a built circuit).
    pub built: bool,
    /// Congestion control on the last hop (the exit, or an onion service's virtual hop),
    /// `None` when it was not negotiated: fixed SENDME windows (tor-spec §7.3) apply.
    pub congestion_control: Option<CcView>,
    /// The circuit's flow-control counters so far (DATA cells, circuit and stream SENDMEs,
    /// XON/XOFF: tor-spec §7.3, §7.4, proposal 324 §4.1.1); zero before the first hop.
    pub flow: FlowStats,
}

impl CircuitView {
    /// The hops' nicknames (or fingerprints for relays the directory does not list), as
    /// `A -> B -> C`.
    pub fn path_string(&self) -> String {
        let names: Vec<String> = self
            .hops
            .iter()
            .map(|h| match &h.nickname {
                Some(n) => n.clone(),
                None => format!("${}", hex_id(&h.rsa_id)),
            })
            .collect();
        names.join(" -> ")
    }
}

fn hex_id(id: &RsaIdentity) -> String {
    id.0.iter().map(|b| format!("{b:02X}")).collect()
}

impl Client {
    /// The circuit stream `s` is attached to (or the circuit being built that it waits for:
    /// see [`CircuitView::built`]), or `None` when the stream is unknown (ended and read out)
    /// or no circuit was chosen for it yet. Cheap enough to call once per stream opened; it
    /// allocates the hop list.
    pub fn stream_circuit(&self, s: StreamHandle) -> Option<CircuitView> {
        let stream = self.streams.get(&s.get())?;
        let key = stream.circ?;
        let circ = self.circs.get(&key)?;
        let dir = self.directory();
        let hops = circ
            .path
            .iter()
            .enumerate()
            .map(|(i, h)| HopView {
                rsa_id: h.rsa_id,
                handshake: match (i, circ.fast, h.ntor_v3) {
                    (0, true, _) => HandshakeKind::CreateFast,
                    (0, false, _) | (_, _, false) => HandshakeKind::Ntor,
                    (_, _, true) => HandshakeKind::NtorV3,
                },
                nickname: dir.and_then(|d| {
                    let idx = d.view.by_rsa_id(&h.rsa_id)?;
                    d.view.relay(idx).map(|r| r.nickname.clone())
                }),
            })
            .collect();
        let congestion_control = circ.circ.as_ref().and_then(|c| {
            let cc = c.congestion_control(c.n_hops().checked_sub(1)?)?;
            Some(CcView {
                sendme_inc: cc.config().sendme_inc,
                cwnd: cc.cwnd(),
                inflight: cc.inflight(),
                slow_start: cc.in_slow_start(),
                rtt_ewma_usec: cc.rtt().ewma_usec,
                rtt_min_usec: cc.rtt().min_usec,
            })
        });
        Some(CircuitView {
            circuit: key,
            hops,
            purpose: circ.purpose,
            built: matches!(circ.phase, CircPhase::Open | CircPhase::Waiting),
            congestion_control,
            flow: circ.circ.as_ref().map(|c| c.stats()).unwrap_or_default(),
        })
    }
}
