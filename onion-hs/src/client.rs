//! The client side of an onion-service connection (rend-spec-v3 §2.2.4.1, §3.2, §4), as a
//! sans-IO typestate machine over onion-cell's message types.
//!
//! Each stage is its own type, and a step consumes the stage it leaves (as `snow` does for
//! its handshakes), so a call out of order does not compile: there is no INTRODUCE1 without
//! an established rendezvous point, and no RENDEZVOUS2 to finish without the INTRODUCE1 that
//! started the handshake.
//!
//! | stage | made by | next step |
//! |---|---|---|
//! | [`HsClient`] (address, HSDirs) | [`HsClient::new`] | [`HsClient::handle_descriptor`] |
//! | [`Described`] (verified descriptor) | a descriptor | [`Described::establish_rendezvous`] |
//! | [`RendPending`] (cookie sent) | ESTABLISH_RENDEZVOUS | [`RendPending::handle_rendezvous_established`] |
//! | [`RendReady`] (rendezvous point waits) | RENDEZVOUS_ESTABLISHED | [`RendReady::introduce`] |
//! | [`Introduction`] (hs-ntor half done) | INTRODUCE1 | [`Introduction::handle_rendezvous2`] |
//!
//! The embedder owns the circuits (`onion-circuit`) and the HSDir fetches; the stages tell it
//! what to fetch from whom, what to send, and check what comes back:
//!
//! ```
//! # use onion_hs::client::{ClientError, HsClient, Introduction};
//! # use onion_hs::{time::TimePeriod, OnionAddress};
//! # use onion_cell::hs::{IntroduceAck, Rendezvous2};
//! # use onion_dir::Timestamp;
//! # fn connect(
//! #     addr: OnionAddress, period: TimePeriod, now: Timestamp,
//! #     fetch: impl Fn(&str) -> String, rng: &mut impl rand_core::CryptoRngCore,
//! #     ack: &IntroduceAck<'_>, rendezvous2: &Rendezvous2<'_>,
//! # ) -> Result<(), ClientError> {
//! let lookup = HsClient::new(addr)?;
//! // GET /tor/hs/3/<blinded key> from an HSDir of lookup.hsdirs_to_fetch(..)
//! let text = fetch(&lookup.fetch_path(period));
//! let described = lookup.handle_descriptor(now, &text, period, None)?;
//! let (pending, est) = described.establish_rendezvous(rng); // send ESTABLISH_RENDEZVOUS
//! let ready = pending.handle_rendezvous_established();         // on RENDEZVOUS_ESTABLISHED
//! let (intro, intro1) = ready.introduce(rng, 0, &[9; 32], vec![])?; // INTRODUCE1 via point 0
//! intro.handle_introduce_ack(ack)?;        // refused: ready.introduce(rng, 1, ..) instead
//! let keys = intro.handle_rendezvous2(rendezvous2)?; // add keys.client_layer() as last hop
//! # let _ = (est, intro1, keys);
//! # Ok(())
//! # }
//! ```
//!
//! Calls out of order are type errors. INTRODUCE1 before RENDEZVOUS_ESTABLISHED:
//!
//! ```compile_fail,E0599
//! # fn f(pending: onion_hs::client::RendPending, rng: &mut impl rand_core::CryptoRngCore) {
//! let _ = pending.introduce(rng, 0, &[9; 32], vec![]); // only RendReady introduces
//! # }
//! ```
//!
//! A second RENDEZVOUS2 for one handshake:
//!
//! ```compile_fail,E0382
//! # fn f(intro: onion_hs::client::Introduction, m: &onion_cell::hs::Rendezvous2<'_>) {
//! let _ = intro.handle_rendezvous2(m);
//! let _ = intro.handle_rendezvous2(m); // the first call consumed the handshake
//! # }
//! ```

use onion_cell::hs as wire;
use onion_dir::{Protocols, Timestamp};
use rand_core::CryptoRngCore;
use x25519_dalek::StaticSecret;

use crate::desc::{DescError, HsDescriptor, IntroPointDesc};
use crate::keys::{HsBlindedKey, HsIdKey, HsKeyError, Subcredential};
use crate::linkspec::RawLinkSpec;
use crate::msg::{
    Extension, Introduce, IntroducePlaintext, MsgError, ONION_KEY_TYPE_NTOR, REND_COOKIE_LEN,
};
use crate::ntor::{HsNtorClient, HsRendKeys, NtorError};
use crate::ring::{HashRing, HsDirParams, HsDirRelay, RingSelector};
use crate::time::TimePeriod;
use crate::OnionAddress;

/// Client failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The address's key is not a usable point.
    #[error("onion address key: {0}")]
    Key(#[from] HsKeyError),
    /// The descriptor failed.
    #[error("descriptor: {0}")]
    Desc(#[from] DescError),
    /// A message failed.
    #[error(transparent)]
    Msg(#[from] MsgError),
    /// hs-ntor failed (e.g. the service's AUTH does not match).
    #[error(transparent)]
    Ntor(#[from] NtorError),
    /// The descriptor lists no introduction point.
    #[error("the descriptor lists no introduction point")]
    NoIntroPoints,
    /// [`RendReady::introduce`] named an introduction point the descriptor does not list.
    #[error("no introduction point {0} in the descriptor")]
    NoSuchIntroPoint(usize),
    /// INTRODUCE_ACK reported a failure: its STATUS (rend-spec-v3 §3.2.2), an unknown value
    /// kept as it came.
    #[error("introduction point refused: {0}")]
    IntroduceRefused(wire::IntroduceAckStatus),
}

/// The INTRODUCE1 extension type that asks the service to run congestion control on the
/// rendezvous circuit (proposal 324 §4.2, rend-spec-v3 §3.2.2 `CC_REQUEST`; an empty body).
pub const EXT_CC_REQUEST: u8 = 1;

/// Whether a descriptor's second layer advertises congestion control: a `flow-control`
/// line (rend-spec-v3 §2.5.2.2, proposal 324 §6.1: `flow-control <versions> <sendme_inc>`)
/// whose versions include FlowCtrl=2 and whose `sendme_inc` is valid
/// ([`flow_control_sendme_inc`]), the condition on which C tor's client asks for it in
/// INTRODUCE1.
pub fn advertises_flow_control(desc: &HsDescriptor) -> bool {
    flow_control_sendme_inc(desc).is_some()
}

/// The `sendme_inc` of a descriptor's `flow-control` line (rend-spec-v3 §2.5.2.2), the
/// value both ends of a congestion-controlled rendezvous circuit use (C tor's client takes
/// it from the descriptor, its service from its own consensus, which wrote the line).
/// `None` when there is no such line, its protocol versions (a protover range list, e.g.
/// `1-2`) lack version 2 (congestion control), or `sendme_inc` is not a number in 1..=255.
pub fn flow_control_sendme_inc(desc: &HsDescriptor) -> Option<u8> {
    desc.second_layer
        .other_lines
        .iter()
        .find_map(|l| parse_flow_control(l))
}

/// `flow-control <versions> <sendme_inc>` → `sendme_inc`, if versions include 2.
fn parse_flow_control(line: &str) -> Option<u8> {
    let mut it = line.split(' ');
    if it.next() != Some("flow-control") {
        return None;
    }
    let versions = it.next()?;
    let inc: u8 = it.next()?.parse().ok()?;
    // The versions are a protover range list, as in a relay's `proto` line; a malformed
    // one supports nothing (C tor `protocol_list_supports_protocol`).
    let has_2 = Protocols::parse(&format!("FlowCtrl={versions}"))
        .is_some_and(|p| p.supports("FlowCtrl", 2));
    (has_2 && inc > 0).then_some(inc)
}

/// The first stage: an address to look up. It says which HSDirs hold the descriptor and
/// where, and turns a fetched descriptor into the next stage; it stays usable for another
/// HSDir when a descriptor fails.
#[derive(Debug, Clone)]
pub struct HsClient {
    addr: OnionAddress,
    id: HsIdKey,
}

impl HsClient {
    /// Look up `addr`; fails if its key is not a usable point.
    pub fn new(addr: OnionAddress) -> Result<Self, ClientError> {
        Ok(HsClient {
            id: addr.identity_key()?,
            addr,
        })
    }

    /// The address.
    pub fn address(&self) -> &OnionAddress {
        &self.addr
    }

    /// The blinded key to fetch for a period (`/tor/hs/3/<base64 blinded key>`).
    pub fn blinded_key(&self, period: TimePeriod) -> HsBlindedKey {
        self.id.blind(period)
    }

    /// The HSDir URL path of the descriptor for `period` (rend-spec-v3 §2.2.6):
    /// `/tor/hs/3/<base64 blinded key>`, fetched over a BEGIN_DIR stream.
    pub fn fetch_path(&self, period: TimePeriod) -> String {
        format!(
            "/tor/hs/3/{}",
            crate::util::b64_pad(self.blinded_key(period).as_bytes())
        )
    }

    /// The HSDirs to fetch from (positions in `relays`), in the order to try them:
    /// `hsdir_spread_fetch` per replica (rend-spec-v3 §2.2.3). The spec has clients choose at
    /// random among them; shuffle the result with the embedder's RNG if wanted.
    pub fn hsdirs_to_fetch(
        &self,
        relays: &[HsDirRelay],
        sel: &RingSelector,
        params: &HsDirParams,
    ) -> Vec<usize> {
        HashRing::new(relays, &sel.srv, sel.period).responsible(
            &self.blinded_key(sel.period),
            params.n_replicas,
            params.spread_fetch,
        )
    }

    /// A descriptor fetched for `period` at wall-clock `now`: verify it (signatures and
    /// certificates valid at `now`, rend-spec-v3 §2.4), decrypt both layers (with
    /// `client_key` if the service restricts access, §2.5.1.2) and go on with it.
    pub fn handle_descriptor(
        &self,
        now: Timestamp,
        text: &str,
        period: TimePeriod,
        client_key: Option<&StaticSecret>,
    ) -> Result<Described, ClientError> {
        let d = crate::desc::decode(text, &self.id, Some(period), client_key, now)?;
        if d.second_layer.intro_points.is_empty() {
            return Err(ClientError::NoIntroPoints);
        }
        let subcred = self
            .blinded_key(period)
            .subcredential(&self.id.credential());
        Ok(Described {
            addr: self.addr,
            desc: d,
            subcred,
            congestion_control: false,
        })
    }
}

/// A verified, decrypted descriptor: the service's introduction points and the
/// subcredential that binds INTRODUCE1 to this time period.
#[derive(Clone)]
pub struct Described {
    addr: OnionAddress,
    desc: HsDescriptor,
    subcred: Subcredential,
    /// The rendezvous circuit will run congestion control (proposal 324), so INTRODUCE1 may
    /// ask the service for it.
    congestion_control: bool,
}

impl core::fmt::Debug for Described {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Described")
            .field("addr", &self.addr)
            .field("intro_points", &self.intro_points().len())
            .field("congestion_control", &self.congestion_control)
            .finish_non_exhaustive()
    }
}

impl Described {
    /// The address.
    pub fn address(&self) -> &OnionAddress {
        &self.addr
    }

    /// The decoded descriptor.
    pub fn descriptor(&self) -> &HsDescriptor {
        &self.desc
    }

    /// The introduction points, in descriptor order ([`RendReady::introduce`] takes an
    /// index into this list).
    pub fn intro_points(&self) -> &[IntroPointDesc] {
        &self.desc.second_layer.intro_points
    }

    /// Declare that the rendezvous circuit will run congestion control (proposal 324).
    ///
    /// Off by default: a service asked for congestion control turns it on for the rendezvous
    /// circuit and then treats stream-level SENDMEs as a protocol violation (C tor closes the
    /// circuit), so the request must never be sent by a client whose circuit does not run it.
    /// When on, INTRODUCE1 carries the request only if the descriptor advertises
    /// `flow-control` ([`advertises_flow_control`]), as C tor's client does; the
    /// [`Introduction`] says whether it was asked.
    pub fn set_congestion_control(&mut self, enabled: bool) {
        self.congestion_control = enabled;
    }

    /// Whether INTRODUCE1 built from this stage asks for congestion control, i.e. whether
    /// the rendezvous circuit must run it once joined.
    pub fn congestion_control_requested(&self) -> bool {
        self.congestion_control && advertises_flow_control(&self.desc)
    }

    /// The `sendme_inc` the service advertises in its descriptor's `flow-control` line
    /// ([`flow_control_sendme_inc`]): the value a congestion-controlled rendezvous circuit
    /// runs with (C tor's client, `hs_circ_setup_congestion_control`).
    pub fn descriptor_sendme_inc(&self) -> Option<u8> {
        flow_control_sendme_inc(&self.desc)
    }

    /// Pick a fresh rendezvous cookie (rend-spec-v3 §3.2.1): the next stage, and the
    /// ESTABLISH_RENDEZVOUS to send (`RelayMsg::EstablishRendezvous`) to the rendezvous point
    /// of the embedder's choice. A failed rendezvous circuit starts again from a clone of
    /// this stage, with a new cookie.
    pub fn establish_rendezvous(
        self,
        rng: &mut impl CryptoRngCore,
    ) -> (RendPending, wire::EstablishRendezvous) {
        let mut cookie = [0u8; REND_COOKIE_LEN];
        rng.fill_bytes(&mut cookie);
        (
            RendPending { svc: self, cookie },
            wire::EstablishRendezvous { cookie },
        )
    }
}

/// ESTABLISH_RENDEZVOUS was sent; waiting for RENDEZVOUS_ESTABLISHED.
#[derive(Debug)]
pub struct RendPending {
    svc: Described,
    cookie: [u8; REND_COOKIE_LEN],
}

impl RendPending {
    /// The descriptor stage this rendezvous belongs to.
    pub fn service(&self) -> &Described {
        &self.svc
    }

    /// RENDEZVOUS_ESTABLISHED arrived (rend-spec-v3 §4.1; its body carries nothing the
    /// client checks): introductions may go out.
    pub fn handle_rendezvous_established(self) -> RendReady {
        RendReady {
            svc: self.svc,
            cookie: self.cookie,
        }
    }
}

/// The rendezvous point waits with our cookie: INTRODUCE1 may be sent, through one
/// introduction point after another, each [`Introduction`] on its own.
#[derive(Debug)]
pub struct RendReady {
    svc: Described,
    cookie: [u8; REND_COOKIE_LEN],
}

impl RendReady {
    /// The descriptor stage this rendezvous belongs to.
    pub fn service(&self) -> &Described {
        &self.svc
    }

    /// Build INTRODUCE1 (rend-spec-v3 §3.2.1, §3.3) for introduction point `ip` (an index
    /// into [`Described::intro_points`]). `rp_onion_key` and `rp_link_specs` describe the
    /// rendezvous point. Returns the handshake to finish on RENDEZVOUS2, and the INTRODUCE1
    /// to send (`RelayMsg::Introduce1`) on a circuit to that introduction point.
    pub fn introduce(
        &self,
        rng: &mut impl CryptoRngCore,
        ip: usize,
        rp_onion_key: &[u8; 32],
        rp_link_specs: Vec<RawLinkSpec>,
    ) -> Result<(Introduction, wire::Introduce<'static>), ClientError> {
        let point = self
            .svc
            .intro_points()
            .get(ip)
            .ok_or(ClientError::NoSuchIntroPoint(ip))?;
        let cc_requested = self.svc.congestion_control_requested();
        let extensions = if cc_requested {
            vec![Extension {
                ty: EXT_CC_REQUEST,
                body: vec![],
            }]
        } else {
            Vec::new()
        };
        let pt = IntroducePlaintext {
            rend_cookie: self.cookie,
            extensions,
            onion_key_type: ONION_KEY_TYPE_NTOR,
            onion_key: rp_onion_key.to_vec(),
            link_specifiers: rp_link_specs,
        };
        let (intro1, ntor) = Introduce::build_client(
            rng,
            point.auth_key(),
            &point.enc_key_ntor,
            &self.svc.subcred,
            &[],
            &pt,
        )?;
        Ok((
            Introduction {
                ip,
                ntor,
                cc_requested,
            },
            intro1,
        ))
    }
}

/// INTRODUCE1 went out through one introduction point: the client's half of hs-ntor,
/// finished by the RENDEZVOUS2 the service's answer produces.
pub struct Introduction {
    ip: usize,
    ntor: HsNtorClient,
    cc_requested: bool,
}

impl core::fmt::Debug for Introduction {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Introduction")
            .field("ip", &self.ip)
            .field("cc_requested", &self.cc_requested)
            .finish_non_exhaustive()
    }
}

impl Introduction {
    /// The introduction point (index into [`Described::intro_points`]).
    pub fn intro_point(&self) -> usize {
        self.ip
    }

    /// Whether this INTRODUCE1 asked for congestion control: the rendezvous circuit must
    /// run it once joined (proposal 324 §4.2).
    pub fn congestion_control_requested(&self) -> bool {
        self.cc_requested
    }

    /// INTRODUCE_ACK from the introduction point (rend-spec-v3 §3.2.2). A refusal means
    /// this introduction point failed: introduce through another one.
    pub fn handle_introduce_ack(&self, ack: &wire::IntroduceAck<'_>) -> Result<(), ClientError> {
        if ack.status != wire::IntroduceAckStatus::SUCCESS {
            return Err(ClientError::IntroduceRefused(ack.status));
        }
        Ok(())
    }

    /// RENDEZVOUS2 on the rendezvous circuit (rend-spec-v3 §4.2): finish hs-ntor and return
    /// the keys of the virtual hop ([`HsRendKeys::client_layer`]). Extra bytes after the
    /// 64-byte HANDSHAKE_INFO are ignored.
    pub fn handle_rendezvous2(
        self,
        msg: &wire::Rendezvous2<'_>,
    ) -> Result<HsRendKeys, ClientError> {
        let info: [u8; 64] = msg
            .handshake_info
            .get(..64)
            .and_then(|b| b.try_into().ok())
            .ok_or(MsgError::Truncated {
                msg: "RENDEZVOUS2",
                field: "HANDSHAKE_INFO",
            })?;
        Ok(self.ntor.finish(&info)?)
    }
}
