//! The onion-service network: the circuit simulator's [`Net`] with relays that are HSDirs,
//! introduction and rendezvous points, a client party and a service party, and the helpers
//! the story uses to drive it one protocol step at a time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use onion_cell::relaymsg::EndReason;
use onion_cell::RelayCmd;
use onion_circuit::circuit::{CircEvent, HandshakeKind};
use onion_circuit::stream::StreamId;
use onion_circuit::Instant;
use onion_hs::cellmsg;
use onion_hs::linkspec::RawLinkSpec;

use super::hsdir::HsDir;
use super::roles::HsRoles;
use super::{fail, HsSimError, BANDWIDTH, LATENCY};
use crate::circuit::dir::DirEdge;
use crate::circuit::net::{CircRef, Driver, Net, NetConfig};
use crate::circuit::web::WebConn;

/// The client's address (what its guard sees).
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// The service's address (what its guard sees).
pub const SERVICE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
/// Virtual time one protocol step may take before the run gives up.
const STEP_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The service's web server on its rendezvous circuit.
struct Serving {
    at: CircRef,
    stream: Option<StreamId>,
    web: WebConn,
    /// Bytes taken from the web server, not yet accepted by the circuit.
    pending: Vec<u8>,
    closed: bool,
}

/// What the scenario does as events come: the service's web server answers on its
/// rendezvous circuit; every other event is queued for the story to read.
#[derive(Default)]
pub(crate) struct HsDriver {
    serving: Option<Serving>,
}

impl Driver for HsDriver {
    fn circ_event(&mut self, net: &mut Net, at: CircRef, ev: CircEvent) {
        let Some(sv) = self.serving.as_mut().filter(|s| s.at == at) else {
            return net.events(at).push_back(ev);
        };
        let name = net.party_name(at.party).to_owned();
        match ev {
            CircEvent::IncomingStream { stream, host, port } => {
                let Some(circ) = net.circuit_mut(at) else {
                    return;
                };
                if sv.stream.is_none() && circ.accept_stream(stream).is_ok() {
                    sv.stream = Some(stream);
                    net.log(
                        &name,
                        format!(
                            "incoming stream {} to {host}:{port} accepted (RELAY_CONNECTED)",
                            stream.get()
                        ),
                    );
                } else {
                    let _ = circ.reject_stream(stream, EndReason::EXITPOLICY);
                }
            }
            CircEvent::Data { stream, data } if Some(stream) == sv.stream => {
                if let Some(line) = sv.web.handle_input(&data) {
                    net.log(&name, format!("web server: request \"{line}\""));
                }
            }
            other => net.events(at).push_back(other),
        }
    }

    /// The web server writes the page within the windows, then closes the stream.
    fn step(&mut self, net: &mut Net) -> bool {
        let Some(sv) = self.serving.as_mut() else {
            return false;
        };
        let (Some(stream), false) = (sv.stream, sv.closed) else {
            return false;
        };
        let name = net.party_name(sv.at.party).to_owned();
        let Some(circ) = net.circuit_mut(sv.at) else {
            return false;
        };
        let mut moved = false;
        loop {
            let cap = circ.send_capacity(stream);
            if cap == 0 {
                break;
            }
            if sv.pending.is_empty() {
                sv.pending = sv.web.poll_output(cap);
                if sv.pending.is_empty() {
                    break;
                }
            }
            let n = circ.send(stream, &sv.pending).unwrap_or(0);
            if n == 0 {
                break;
            }
            moved = true;
            sv.pending.drain(..n);
        }
        if sv.web.is_done() && sv.pending.is_empty() && circ.close_stream(stream).is_ok() {
            moved = true;
            sv.closed = true;
            net.log(&name, "web server: page sent, stream closed (RELAY_END)");
        }
        moved
    }
}

/// The network, its two parties and the driver.
pub(crate) struct World {
    pub(crate) net: Net,
    pub(crate) driver: HsDriver,
    pub(crate) client: usize,
    pub(crate) service: usize,
}

impl World {
    /// `n` relays named `relay0`… from `seed`, each an introduction and rendezvous point;
    /// relays 4.. are also HSDirs (0, 1 are the client's guard and middle, 2, 3 the
    /// service's: no descriptor circuit extends back to its own middle).
    pub(crate) fn new(seed: u64, n: usize) -> Result<World, HsSimError> {
        let mut net = Net::new(NetConfig {
            seed,
            latency: LATENCY,
            bandwidth: BANDWIDTH,
            story: true,
        });
        for i in 0..n {
            let addr = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, (i as u8).wrapping_add(1))),
                9001,
            );
            let r = net
                .add_relay(&format!("relay{i}"), addr)
                .map_err(|e| fail("relay keys", e))?;
            if i >= 4 {
                net.add_edge(r, Box::new(DirEdge::new(HsDir::default())));
            }
            net.add_edge(r, Box::new(HsRoles::default()));
        }
        let client = net.add_party("client", IpAddr::V4(CLIENT_ADDR));
        let service = net.add_party("service", IpAddr::V4(SERVICE_ADDR));
        Ok(World {
            net,
            driver: HsDriver::default(),
            client,
            service,
        })
    }

    /// Whether relay `r` is an HSDir.
    pub(crate) fn is_hsdir(&self, r: usize) -> bool {
        r >= 4
    }

    /// Relay `r`'s link specifiers (IPv4, RSA and ed25519 identities), as a descriptor or
    /// INTRODUCE1 names it.
    pub(crate) fn specs(&self, r: usize) -> Vec<RawLinkSpec> {
        let (rsa, ed) = self.net.relay_ids(r);
        let addr = match self.net.relay_addr(r) {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        };
        vec![
            RawLinkSpec::ipv4(addr),
            RawLinkSpec::rsa_id(rsa),
            RawLinkSpec::ed25519_id(ed.0),
        ]
    }

    /// The relay named by link specifiers (by RSA identity).
    pub(crate) fn relay_by_specs(&self, specs: &[RawLinkSpec]) -> Option<usize> {
        specs
            .iter()
            .find_map(RawLinkSpec::as_rsa_id)
            .and_then(|id| self.net.relay_by_rsa(&id.0))
    }

    /// Unix time now: the consensus's valid-after plus virtual time.
    pub(crate) fn unix(&self) -> u64 {
        super::VALID_AFTER + self.net.elapsed().as_secs()
    }

    pub(crate) fn name(&self, r: usize) -> String {
        self.net.relay_name(r).to_owned()
    }

    pub(crate) fn say(&mut self, party: &str, text: impl Into<String>) {
        self.net.log(party, text);
    }

    /// Pump and advance the clock until the network is quiet.
    pub(crate) fn run(&mut self) -> Result<(), HsSimError> {
        let limit = self.net.now() + STEP_LIMIT;
        if !self.net.run_quiet(&mut self.driver, limit) {
            return Err(fail("network", "virtual time limit exceeded"));
        }
        for p in [self.client, self.service] {
            if let Some(f) = self.net.party_failure(p) {
                return Err(fail("network", format!("{}: {f}", self.net.party_name(p))));
            }
        }
        Ok(())
    }

    /// Build a 3-hop (or any) circuit for `party` through `path` over channels, and wait
    /// until it is built.
    pub(crate) fn build(&mut self, party: usize, path: &[usize]) -> Result<CircRef, HsSimError> {
        let at = self
            .net
            .build_circuit(party, path, HandshakeKind::NtorV3)
            .map_err(|e| fail("build", e))?;
        self.run()?;
        let hops = self.net.circuit(at).map_or(0, |c| c.n_hops());
        if hops != path.len() {
            return Err(fail("build", format!("{hops} hops of {}", path.len())));
        }
        self.net.events(at).clear();
        Ok(at)
    }

    /// Send a relay message of `cmd` with `body` from circuit `at` to its last hop.
    pub(crate) fn send(
        &mut self,
        at: CircRef,
        cmd: RelayCmd,
        body: &[u8],
    ) -> Result<(), HsSimError> {
        let m = cellmsg::to_relay_msg(cmd, body).map_err(|e| fail("encode", e))?;
        let c = self.net.circuit_mut(at).ok_or(fail("send", "no circuit"))?;
        let last = c.n_hops().checked_sub(1).ok_or(fail("send", "no hop"))?;
        c.send_msg(last, None, &m).map_err(|e| fail("send", e))
    }

    /// Take the first message of `cmd` that circuit `at` received.
    pub(crate) fn take_msg(&mut self, at: CircRef, cmd: RelayCmd) -> Option<Vec<u8>> {
        let ev = self.net.events(at);
        let i = ev
            .iter()
            .position(|e| matches!(e, CircEvent::Msg { msg, .. } if msg.cmd() == cmd))?;
        match ev.remove(i) {
            Some(CircEvent::Msg { msg, .. }) => cellmsg::body_of(&msg).ok(),
            _ => None,
        }
    }

    /// Destroy circuit `at` (DESTROY toward its first hop).
    pub(crate) fn destroy(&mut self, at: CircRef) {
        if let Some(c) = self.net.circuit_mut(at) {
            c.destroy();
        }
    }

    /// Serve the web page on circuit `at` (the service's rendezvous circuit).
    pub(crate) fn serve(&mut self, at: CircRef, page_seed: u64) {
        self.driver.serving = Some(Serving {
            at,
            stream: None,
            web: WebConn::new(page_seed),
            pending: Vec::new(),
            closed: false,
        });
    }

    /// Open a BEGIN_DIR stream on `at`, send `request`, collect the response until END.
    pub(crate) fn dir_exchange(
        &mut self,
        at: CircRef,
        request: &[u8],
    ) -> Result<Vec<u8>, HsSimError> {
        let now = self.net.now();
        let stream = self
            .net
            .circuit_mut(at)
            .ok_or(fail("BEGIN_DIR", "no circuit"))?
            .begin_dir(now)
            .map_err(|e| fail("BEGIN_DIR", e))?;
        self.run()?;
        self.stream_exchange(at, stream, request)
    }

    /// Send `request` on the connected `stream` of `at` and collect the answer until END.
    pub(crate) fn stream_exchange(
        &mut self,
        at: CircRef,
        stream: StreamId,
        request: &[u8],
    ) -> Result<Vec<u8>, HsSimError> {
        let connected = self
            .net
            .events(at)
            .iter()
            .any(|e| matches!(e, CircEvent::StreamConnected { stream: s, .. } if *s == stream));
        if !connected {
            return Err(fail("stream", "not connected"));
        }
        let mut off = 0;
        while off < request.len() {
            let n = self
                .net
                .circuit_mut(at)
                .ok_or(fail("send", "no circuit"))?
                .send(stream, &request[off..])
                .map_err(|e| fail("send", e))?;
            off += n;
            self.run()?;
            if n == 0 {
                return Err(fail("send", "window closed"));
            }
        }
        self.run()?;
        let mut out = Vec::new();
        let mut ended = false;
        let events: Vec<CircEvent> = self.net.events(at).drain(..).collect();
        for e in events {
            match e {
                CircEvent::Data { stream: s, data } if s == stream => out.extend_from_slice(&data),
                CircEvent::StreamEnded { stream: s, .. } if s == stream => ended = true,
                _ => {}
            }
        }
        if !ended {
            return Err(fail("stream", "no RELAY_END"));
        }
        Ok(out)
    }

    /// The relays each party built circuits through.
    pub(crate) fn paths(&self, party: usize) -> std::collections::BTreeSet<String> {
        self.net
            .party_circuits(party)
            .flat_map(|at| self.net.circuit_relays(at).to_vec())
            .map(|r| self.name(r))
            .collect()
    }

    /// Virtual time since the start.
    pub(crate) fn at(&self) -> Instant {
        self.net.now()
    }
}
