//! The client side of an onion-service connection (rend-spec-v3 §2.2.4.1, §3.2, §4), as a
//! sans-IO state machine over message bodies.
//!
//! The embedder owns the circuits (`onion-circuit`) and the HSDir fetches; this machine tells
//! it what to fetch from whom, what to send, and checks what comes back:
//!
//! ```text
//! let mut c = HsClient::new(addr)?;
//! let sel = shared_random.client_fetch(&cfg, consensus_valid_after);
//! for hsdir in c.hsdirs_to_fetch(&relays, &sel, &params) {      // try in order until one works
//!     let text = fetch(hsdir, c.blinded_key(sel.period))?;      // GET /tor/hs/3/<blinded b64>
//!     if c.handle_descriptor(&text, sel.period, client_key, now).is_ok() { break; }
//! }
//! let est = c.establish_rendezvous(rng)?;          // send ESTABLISH_RENDEZVOUS on a rend circuit
//! c.handle_rendezvous_established()?;              // on RENDEZVOUS_ESTABLISHED
//! let (ip, body) = c.introduce(rng, rp_onion_key, rp_link_specs)?; // INTRODUCE1 via intro point `ip`
//! c.handle_introduce_ack(&ack)?;                   // on INTRODUCE_ACK (error: try the next one)
//! let keys = c.handle_rendezvous2(&body)?;         // on RENDEZVOUS2: add keys.client_layer()
//! ```

use onion_dir::Protocols;
use rand_core::CryptoRngCore;
use x25519_dalek::StaticSecret;

use crate::desc::{DescError, HsDescriptor, IntroPointDesc};
use crate::keys::{HsBlindedKey, HsIdKey, HsKeyError, Subcredential};
use crate::linkspec::RawLinkSpec;
use crate::msg::{
    Extension, Introduce, IntroduceAck, IntroducePlaintext, MsgError, ONION_KEY_TYPE_NTOR,
    REND_COOKIE_LEN,
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
    /// A call that does not fit the current state.
    #[error("{0} in the wrong state")]
    WrongState(&'static str),
    /// The descriptor lists no usable introduction point.
    #[error("no introduction point left to try")]
    NoIntroPoints,
    /// INTRODUCE_ACK reported a failure.
    #[error("introduction point refused: status {0}")]
    IntroduceRefused(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    NeedDescriptor,
    HaveDescriptor,
    RendPending,
    RendReady,
    Introduced,
    Done,
}

/// One connection attempt to one onion service.
pub struct HsClient {
    addr: OnionAddress,
    id: HsIdKey,
    stage: Stage,
    desc: Option<HsDescriptor>,
    subcred: Option<Subcredential>,
    /// Introduction points not yet tried, in descriptor order.
    untried: Vec<usize>,
    current_ip: Option<usize>,
    cookie: [u8; REND_COOKIE_LEN],
    ntor: Option<HsNtorClient>,
    /// The rendezvous circuit will run congestion control (proposal 324), so INTRODUCE1 may
    /// ask the service for it.
    congestion_control: bool,
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

impl HsClient {
    /// Start a connection to `addr`.
    pub fn new(addr: OnionAddress) -> Result<Self, ClientError> {
        Ok(HsClient {
            id: addr.identity_key()?,
            addr,
            stage: Stage::NeedDescriptor,
            desc: None,
            subcred: None,
            untried: Vec::new(),
            current_ip: None,
            cookie: [0; REND_COOKIE_LEN],
            ntor: None,
            congestion_control: false,
        })
    }

    /// Declare that the rendezvous circuit will run congestion control (proposal 324).
    ///
    /// Off by default: a service asked for congestion control turns it on for the rendezvous
    /// circuit and then treats stream-level SENDMEs as a protocol violation (C tor closes the
    /// circuit), so the request must never be sent by a client whose circuit does not run it.
    /// When on, INTRODUCE1 carries the request only if the descriptor advertises
    /// `flow-control` ([`advertises_flow_control`]), as C tor's client does; ask
    /// [`HsClient::congestion_control_requested`] after [`HsClient::introduce`].
    pub fn set_congestion_control(&mut self, enabled: bool) {
        self.congestion_control = enabled;
    }

    /// Whether the INTRODUCE1 built by [`HsClient::introduce`] asks for congestion control,
    /// i.e. whether the rendezvous circuit must run it once joined.
    pub fn congestion_control_requested(&self) -> bool {
        self.congestion_control && self.desc.as_ref().is_some_and(advertises_flow_control)
    }

    /// The `sendme_inc` the service advertises in its descriptor's `flow-control` line
    /// ([`flow_control_sendme_inc`]): the value a congestion-controlled rendezvous circuit
    /// runs with (C tor's client, `hs_circ_setup_congestion_control`).
    pub fn descriptor_sendme_inc(&self) -> Option<u8> {
        self.desc.as_ref().and_then(flow_control_sendme_inc)
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

    /// A descriptor fetched for `period`: verify, decrypt, keep.
    pub fn handle_descriptor(
        &mut self,
        text: &str,
        period: TimePeriod,
        client_key: Option<&StaticSecret>,
        now_unix: u64,
    ) -> Result<(), ClientError> {
        if self.stage != Stage::NeedDescriptor {
            return Err(ClientError::WrongState("handle_descriptor"));
        }
        let d = crate::desc::decode(text, &self.id, Some(period), client_key, now_unix)?;
        if d.second_layer.intro_points.is_empty() {
            return Err(ClientError::NoIntroPoints);
        }
        let blinded = self.blinded_key(period);
        self.subcred = Some(blinded.subcredential(&self.id.credential()));
        self.untried = (0..d.second_layer.intro_points.len()).collect();
        self.desc = Some(d);
        self.stage = Stage::HaveDescriptor;
        Ok(())
    }

    /// The decoded descriptor, once fetched.
    pub fn descriptor(&self) -> Option<&HsDescriptor> {
        self.desc.as_ref()
    }

    /// Pick a fresh rendezvous cookie: the ESTABLISH_RENDEZVOUS body to send to the
    /// rendezvous point of the embedder's choice.
    pub fn establish_rendezvous(
        &mut self,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>, ClientError> {
        if self.stage != Stage::HaveDescriptor {
            return Err(ClientError::WrongState("establish_rendezvous"));
        }
        rng.fill_bytes(&mut self.cookie);
        self.stage = Stage::RendPending;
        Ok(self.cookie.to_vec())
    }

    /// RENDEZVOUS_ESTABLISHED arrived.
    pub fn handle_rendezvous_established(&mut self) -> Result<(), ClientError> {
        if self.stage != Stage::RendPending {
            return Err(ClientError::WrongState("handle_rendezvous_established"));
        }
        self.stage = Stage::RendReady;
        Ok(())
    }

    /// Build INTRODUCE1 for the next untried introduction point. `rp_onion_key` and
    /// `rp_link_specs` describe the rendezvous point. Returns the introduction point to build
    /// a circuit to, and the body to send there.
    pub fn introduce(
        &mut self,
        rng: &mut impl CryptoRngCore,
        rp_onion_key: &[u8; 32],
        rp_link_specs: Vec<RawLinkSpec>,
    ) -> Result<(IntroPointDesc, Vec<u8>), ClientError> {
        if self.stage != Stage::RendReady && self.stage != Stage::Introduced {
            return Err(ClientError::WrongState("introduce"));
        }
        let (desc, subcred) = match (&self.desc, &self.subcred) {
            (Some(d), Some(s)) => (d, s),
            _ => return Err(ClientError::WrongState("introduce")),
        };
        if self.untried.is_empty() {
            return Err(ClientError::NoIntroPoints);
        }
        let idx = self.untried.remove(0);
        let ip = desc
            .second_layer
            .intro_points
            .get(idx)
            .ok_or(ClientError::NoIntroPoints)?
            .clone();
        let extensions = if self.congestion_control_requested() {
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
        let (body, ntor) =
            Introduce::build_client(rng, ip.auth_key(), &ip.enc_key_ntor, subcred, &[], &pt)?;
        self.ntor = Some(ntor);
        self.current_ip = Some(idx);
        self.stage = Stage::Introduced;
        Ok((ip, body))
    }

    /// INTRODUCE_ACK from the introduction point. On failure, call [`HsClient::introduce`]
    /// again for the next introduction point.
    pub fn handle_introduce_ack(&mut self, body: &[u8]) -> Result<(), ClientError> {
        if self.stage != Stage::Introduced {
            return Err(ClientError::WrongState("handle_introduce_ack"));
        }
        let ack = IntroduceAck::parse(body)?;
        if ack.status != 0 {
            return Err(ClientError::IntroduceRefused(ack.status));
        }
        Ok(())
    }

    /// RENDEZVOUS2 on the rendezvous circuit: finish hs-ntor and return the keys of the
    /// virtual hop ([`HsRendKeys::client_layer`]).
    pub fn handle_rendezvous2(&mut self, body: &[u8]) -> Result<HsRendKeys, ClientError> {
        if self.stage != Stage::Introduced {
            return Err(ClientError::WrongState("handle_rendezvous2"));
        }
        let info = crate::msg::parse_rendezvous2(body)?;
        let ntor = self
            .ntor
            .as_ref()
            .ok_or(ClientError::WrongState("handle_rendezvous2"))?;
        let keys = ntor.finish(&info)?;
        self.ntor = None;
        self.stage = Stage::Done;
        Ok(keys)
    }
}
