//! The relay side of the introduction and rendezvous protocols (rend-spec-v3 §3.1, §3.2,
//! §4.1, §4.2): what an introduction point and a rendezvous point keep, per circuit.
//!
//! Circuits are named by the embedder's own key type `C` (e.g. a channel and circuit id):
//! this module only decides which message goes to which circuit.

use std::collections::HashMap;
use std::hash::Hash;

use crate::msg::{
    EstablishIntro, IntroEstablished, Introduce, IntroduceAck, MsgError, Rendezvous1,
    REND_COOKIE_LEN,
};

/// INTRODUCE_ACK status: success.
pub const ACK_SUCCESS: u16 = 0;
/// INTRODUCE_ACK status: service ID not recognized.
pub const ACK_UNKNOWN_SERVICE: u16 = 1;
/// INTRODUCE_ACK status: bad message format.
pub const ACK_BAD_FORMAT: u16 = 2;

/// Bound on registered introduction or rendezvous circuits per relay (memory bound).
pub const MAX_REGISTRATIONS: usize = 65_536;

/// Errors of the relay-side roles; the circuit that sent the message should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayRoleError {
    /// The body is malformed or unauthentic.
    #[error(transparent)]
    Msg(#[from] MsgError),
    /// The auth key or cookie is already registered on another circuit.
    #[error("already in use by another circuit")]
    InUse,
    /// The circuit already has an introduction or rendezvous role.
    #[error("circuit already has an onion-service role")]
    CircuitBusy,
    /// Too many registrations.
    #[error("too many registrations")]
    Full,
}

/// What an introduction point does with an INTRODUCE1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntroduceRouting<C> {
    /// Forward this INTRODUCE2 body to the service's circuit (`None` if no service).
    pub to_service: Option<(C, Vec<u8>)>,
    /// Send this INTRODUCE_ACK body back to the client.
    pub ack: Vec<u8>,
}

/// An introduction point: auth keys registered by services (ESTABLISH_INTRO).
#[derive(Debug, Clone)]
pub struct IntroPoint<C> {
    by_key: HashMap<[u8; 32], C>,
}

impl<C: Copy + Eq + Hash> Default for IntroPoint<C> {
    fn default() -> Self {
        IntroPoint {
            by_key: HashMap::new(),
        }
    }
}

impl<C: Copy + Eq + Hash> IntroPoint<C> {
    /// Handle ESTABLISH_INTRO on `circ` whose circuit-handshake `KH` is `circuit_kh`.
    /// Returns the INTRO_ESTABLISHED body.
    pub fn handle_establish_intro(
        &mut self,
        circ: C,
        circuit_kh: &[u8],
        body: &[u8],
    ) -> Result<Vec<u8>, RelayRoleError> {
        let m = EstablishIntro::parse(body)?;
        m.verify(circuit_kh)?;
        if self.by_key.values().any(|c| *c == circ) {
            return Err(RelayRoleError::CircuitBusy);
        }
        if self.by_key.contains_key(&m.auth_key) {
            return Err(RelayRoleError::InUse);
        }
        if self.by_key.len() >= MAX_REGISTRATIONS {
            return Err(RelayRoleError::Full);
        }
        self.by_key.insert(m.auth_key, circ);
        Ok(IntroEstablished::default().encode()?)
    }

    /// Handle INTRODUCE1 from a client: route it, unchanged, to the service as INTRODUCE2.
    pub fn handle_introduce1(&self, body: &[u8]) -> IntroduceRouting<C> {
        let ack = |status| {
            IntroduceAck {
                status,
                extensions: vec![],
            }
            .encode()
            .unwrap_or_default()
        };
        match Introduce::parse(body) {
            Err(_) => IntroduceRouting {
                to_service: None,
                ack: ack(ACK_BAD_FORMAT),
            },
            Ok(m) => match self.by_key.get(&m.auth_key) {
                Some(c) => IntroduceRouting {
                    to_service: Some((*c, body.to_vec())),
                    ack: ack(ACK_SUCCESS),
                },
                None => IntroduceRouting {
                    to_service: None,
                    ack: ack(ACK_UNKNOWN_SERVICE),
                },
            },
        }
    }

    /// Forget a circuit (it closed).
    pub fn circuit_closed(&mut self, circ: C) {
        self.by_key.retain(|_, c| *c != circ);
    }
}

/// A rendezvous point: cookies registered by clients (ESTABLISH_RENDEZVOUS).
#[derive(Debug, Clone)]
pub struct RendPoint<C> {
    by_cookie: HashMap<[u8; REND_COOKIE_LEN], C>,
}

impl<C: Copy + Eq + Hash> Default for RendPoint<C> {
    fn default() -> Self {
        RendPoint {
            by_cookie: HashMap::new(),
        }
    }
}

/// Two circuits joined by a rendezvous point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined<C> {
    /// The client's circuit, which gets the RENDEZVOUS2 body.
    pub client: C,
    /// RENDEZVOUS2 body for the client.
    pub rendezvous2: Vec<u8>,
    /// The service's circuit; from now on relay cells pass between the two unchanged.
    pub service: C,
}

impl<C: Copy + Eq + Hash> RendPoint<C> {
    /// Handle ESTABLISH_RENDEZVOUS on `circ`; the reply RENDEZVOUS_ESTABLISHED has an empty body.
    pub fn handle_establish_rendezvous(
        &mut self,
        circ: C,
        body: &[u8],
    ) -> Result<(), RelayRoleError> {
        let cookie = crate::msg::parse_establish_rendezvous(body)?;
        if self.by_cookie.values().any(|c| *c == circ) {
            return Err(RelayRoleError::CircuitBusy);
        }
        if self.by_cookie.contains_key(&cookie) {
            return Err(RelayRoleError::InUse);
        }
        if self.by_cookie.len() >= MAX_REGISTRATIONS {
            return Err(RelayRoleError::Full);
        }
        self.by_cookie.insert(cookie, circ);
        Ok(())
    }

    /// Handle RENDEZVOUS1 from the service on `circ`: join it to the client's circuit.
    pub fn handle_rendezvous1(
        &mut self,
        circ: C,
        body: &[u8],
    ) -> Result<Joined<C>, RelayRoleError> {
        let m = Rendezvous1::parse(body)?;
        let client = self
            .by_cookie
            .remove(&m.rend_cookie)
            .ok_or(RelayRoleError::Msg(MsgError::Unsupported {
                msg: "RENDEZVOUS1",
                field: "RENDEZVOUS_COOKIE (unknown)",
                value: 0,
            }))?;
        Ok(Joined {
            client,
            rendezvous2: m.handshake_info.to_vec(),
            service: circ,
        })
    }
}
