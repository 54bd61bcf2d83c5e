//! The documents a relay publishes about itself: the server descriptor (dir-spec §2.1.1)
//! and the extra-info document (§2.1.2), encoded and signed with the relay's
//! [`RelayKeySet`]. [`crate::routerdesc`] and [`crate::extrainfo`] parse them back.
//!
//! Items come in C tor 0.4.9's order (`router_dump_router_to_string`,
//! `extrainfo_dump_to_string`), without the blank line C tor leaves after the signature
//! (§2.1.1: "New implementations SHOULD NOT generate such blank lines"). The signatures:
//!
//! * `router-sig-ed25519`: ed25519 by the signing key over SHA-256 of
//!   `"Tor router descriptor signature v1"` followed by the document from its first
//!   character through the space after `router-sig-ed25519` (§2.1.1; the same for
//!   extra-info, §2.1.2);
//! * `router-signature`: RSA PKCS#1 v1.5 by the identity key over the bare SHA-1 digest
//!   of the document through the newline after `router-signature` (§1.3).
//!
//! The `extra-info-digest` line names the extra-info document by its SHA-1 digest as
//! signed (through `router-signature` NL) and its SHA-256 digest over the whole document,
//! signature included (§2.1.1: the difference is a long-lived C tor bug kept for
//! compatibility): [`SignedExtraInfo::digests`].
//!
//! Fields are checked before anything is signed: text fields must be printable ASCII
//! (what the tokenizer of [`crate::netdoc`] and C tor's accept) and cannot smuggle in a
//! line break; a caller's mistake is an [`EncodeError`], never a document that parses
//! differently from what was meant.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV6};

use onion_crypto::cert::{create_ntor_onion_key_crosscert, Ed25519CertBuilder, Timestamp};
use onion_crypto::keys::Ed25519Signer;
use onion_crypto::relay_keyset::{OnionKeyParams, RelayKeySet};
use onion_crypto::rsa_crosscert::create_onion_key_crosscert;
use rand_core::CryptoRngCore;
use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::encode::base64_unpadded;
use crate::ids::Protocols;
use crate::policy::{AddrPattern, ExitPolicy, PolicySummary};
use crate::routerdesc::Bandwidth;

/// The prefix of the ed25519 descriptor signatures (dir-spec §2.1.1 `router-sig-ed25519`).
pub const ED_SIGNATURE_PREFIX: &[u8] = b"Tor router descriptor signature v1";

/// The subprotocols (tor-spec §9) that onion's relay side implements today, for the
/// `proto` line. Each entry is what the crates do, not what a C tor relay advertises:
///
/// * `Cons=1-2`, `Microdesc=1-2`: both consensus flavours and microdescriptors with
///   ed25519 identities are parsed and verified (consensus method 21 and earlier);
/// * `DirCache=2`: the directory cache answers BEGIN_DIR requests for the consensus
///   (and diffs from the previous ones it was given, `X-Or-Diff-From-Consensus`, dir-spec
///   §4.5.2), descriptors, microdescriptors and authority certificates (onion-relay's
///   `dir`). C tor's authorities list `DirCache=2` among the required relay protocols;
/// * `Desc=1-2`: descriptors with ed25519 identities and onion-key cross-certificates are
///   produced and verified;
/// * `FlowCtrl=1-2`: authenticated circuit SENDMEs and congestion control at exits
///   (onion-circuit's relay side);
/// * `HSDir=2`: v3 onion-service descriptors stored and served over BEGIN_DIR
///   (onion-relay's HSDir, on onion-hs `relay::HsDirStore`);
/// * `HSIntro=4-5`: ed25519 ESTABLISH_INTRO, INTRODUCE1/2 at an introduction point, and
///   the ESTABLISH_INTRO DoS extension's INTRODUCE2 rate limit (onion-relay on onion-hs
///   `relay::IntroPoint`);
/// * `HSRend=1-2`: ESTABLISH_RENDEZVOUS and RENDEZVOUS1/2 of any length;
/// * `Link=3-5`, `LinkAuth=3`: the channel's link versions and ed25519 AUTHENTICATE;
/// * `Relay=2,4`: CREATE2/EXTEND2 with ntor and ntor-v3. Not 1 (no TAP), not 3 (extending
///   over IPv6 is the embedder's choice).
///
/// Left out until they exist: `Padding`, `Conflux` (a C tor client then builds no conflux
/// sets ending at the relay). An embedder that implements one adds it: the descriptor
/// builder takes any [`Protocols`].
pub const ONION_RELAY_PROTOCOLS: &str =
    "Cons=1-2 Desc=1-2 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=1-2 Link=3-5 LinkAuth=3 Microdesc=1-2 Relay=2,4";

/// A field of a document to encode is not representable (the caller's mistake), or
/// signing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A field's value cannot be written into the document.
    #[error("{field}: {reason}")]
    BadField {
        /// The item (keyword) it would go on.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A certificate or signature could not be made.
    #[error("{what}: {error}")]
    Crypto {
        /// Which one.
        what: &'static str,
        /// The crypto error.
        error: onion_crypto::Error,
    },
}

fn crypto(what: &'static str) -> impl Fn(onion_crypto::Error) -> EncodeError {
    move |error| EncodeError::Crypto { what, error }
}

/// The digests by which a server descriptor names its extra-info document
/// (`extra-info-digest`, dir-spec §2.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtraInfoDigests {
    /// SHA-1 of the document through `router-signature` NL.
    pub sha1: [u8; 20],
    /// SHA-256 of the whole document, signature included.
    pub sha256: [u8; 32],
}

/// What a relay says about itself in its server descriptor (dir-spec §2.1.1). The keys,
/// certificates and signatures come from the [`RelayKeySet`] at encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDescriptor {
    /// `router` nickname: 1 to 19 ASCII letters and digits (§2.1.3).
    pub nickname: String,
    /// `router` address (IPv4).
    pub address: Ipv4Addr,
    /// `router` ORPort (not 0).
    pub or_port: u16,
    /// `router` DirPort (0: none).
    pub dir_port: u16,
    /// `or-address`: an IPv6 ORPort.
    pub ipv6: Option<SocketAddrV6>,
    /// `platform`, e.g. `onion 0.1.0 on Linux` (printable ASCII). C tor's authorities check
    /// the version only of platforms that start with `Tor `.
    pub platform: String,
    /// `proto`: see [`ONION_RELAY_PROTOCOLS`].
    pub protocols: Protocols,
    /// `published` (the extra-info document's must be the same, §2.1.2).
    pub published: Timestamp,
    /// `uptime` in seconds.
    pub uptime: u64,
    /// `bandwidth` average, burst and observed, bytes per second.
    pub bandwidth: Bandwidth,
    /// `extra-info-digest`, when an extra-info document is published with it.
    pub extra_info: Option<ExtraInfoDigests>,
    /// `family` members (`$FINGERPRINT` or nicknames), in order.
    pub family: Vec<String>,
    /// `hibernating 1`.
    pub hibernating: bool,
    /// `hidden-service-dir`: stores and serves onion-service descriptors.
    pub hidden_service_dir: bool,
    /// `contact` (printable ASCII).
    pub contact: Option<String>,
    /// The IPv4 exit policy (`accept`/`reject` lines; IPv6-only rules belong in
    /// `ipv6_policy` and are refused here). Empty means `reject *:*`.
    pub exit_policy: ExitPolicy,
    /// `ipv6-policy`, written unless it is `reject 1-65535`.
    pub ipv6_policy: PolicySummary,
    /// `tunnelled-dir-server`: answers BEGIN_DIR.
    pub tunnelled_dir_server: bool,
    /// `caches-extra-info`: a directory cache that serves extra-info documents.
    pub caches_extra_info: bool,
}

/// A signed server descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDescriptor {
    /// The document.
    pub text: String,
    /// SHA-1 of the document through `router-signature` NL (the digest of a ns consensus
    /// `r` line and of `/tor/server/d/`).
    pub digest: [u8; 20],
}

/// A signed extra-info document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedExtraInfo {
    /// The document.
    pub text: String,
    /// Its digests, for the server descriptor's `extra-info-digest`.
    pub digests: ExtraInfoDigests,
}

/// Checks free text for one line: non-empty printable ASCII without leading or trailing
/// whitespace (the tokenizer's alphabet; nothing can start a new item).
fn check_text(field: &'static str, s: &str) -> Result<(), EncodeError> {
    let bad = |reason| EncodeError::BadField { field, reason };
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if !s.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(bad(
            "not printable ASCII (no line breaks or control characters)",
        ));
    }
    if s.starts_with(' ') || s.ends_with(' ') {
        return Err(bad("leading or trailing space"));
    }
    Ok(())
}

fn check_nickname(s: &str) -> Result<(), EncodeError> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(EncodeError::BadField {
            field: "router",
            reason: "nickname must be 1 to 19 ASCII letters and digits",
        });
    }
    Ok(())
}

/// Appends `-----BEGIN tag-----`, base64 in 64-character lines, `-----END tag-----`
/// (dir-spec §1.2 Object; padded base64 as C tor writes these objects).
fn push_object(out: &mut String, tag: &str, data: &[u8]) {
    let mut b64 = base64_unpadded(data);
    while b64.len() % 4 != 0 {
        b64.push('=');
    }
    let _ = writeln!(out, "-----BEGIN {tag}-----");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        out.push('\n');
    }
    let _ = writeln!(out, "-----END {tag}-----");
}

/// `identity-ed25519` with its certificate object (both documents start with it). C tor
/// writes certificate objects with `=` padding, and stem 1.8 requires it, although
/// §2.1.1 describes the base64 "with terminating =s removed".
fn push_identity(out: &mut String, keys: &RelayKeySet) {
    out.push_str("identity-ed25519\n");
    push_object(out, "ED25519 CERT", keys.signing_cert());
}

/// Appends `router-sig-ed25519 SIG` NL and `router-signature` NL with the RSA signature
/// object to `out`, which holds the document so far.
fn sign(
    out: &mut String,
    keys: &RelayKeySet,
    rng: &mut impl CryptoRngCore,
) -> Result<[u8; 20], EncodeError> {
    out.push_str("router-sig-ed25519 ");
    let mut h = Sha256::new();
    h.update(ED_SIGNATURE_PREFIX);
    h.update(out.as_bytes());
    let digest: [u8; 32] = h.finalize().into();
    let sig = keys.signing_keypair().sign(&digest);
    out.push_str(&base64_unpadded(&sig.to_bytes()));
    out.push('\n');
    out.push_str("router-signature\n");
    let digest: [u8; 20] = Sha1::digest(out.as_bytes()).into();
    let sig = keys
        .rsa_identity()
        .sign_unprefixed(rng, &digest)
        .map_err(|e| crypto("router-signature")(e.into()))?;
    push_object(out, "SIGNATURE", &sig);
    Ok(digest)
}

impl ServerDescriptor {
    /// Encodes and signs the descriptor with `keys` (dir-spec §2.1.1): identity-ed25519
    /// is the signing certificate, the ntor-onion-key-crosscert expires one onion-key
    /// rotation period (`params`) after `published` as C tor makes it, and the TAP
    /// `onion-key` with its cross-certificate is included when the key set has a TAP key.
    /// C tor 0.4.9.11 authorities accept the result (HTTP 200, checked on a private
    /// network) only with the TAP key: without it they answer 400 "Missing TAP key in
    /// descriptor.".
    pub fn encode(
        &self,
        keys: &RelayKeySet,
        params: &OnionKeyParams,
        rng: &mut impl CryptoRngCore,
    ) -> Result<SignedDescriptor, EncodeError> {
        check_nickname(&self.nickname)?;
        if self.or_port == 0 {
            return Err(EncodeError::BadField {
                field: "router",
                reason: "ORPort must not be 0",
            });
        }
        check_text("platform", &self.platform)?;
        if let Some(c) = &self.contact {
            check_text("contact", c)?;
        }
        for m in &self.family {
            check_text("family", m)?;
            if m.contains(' ') {
                return Err(EncodeError::BadField {
                    field: "family",
                    reason: "a member contains a space",
                });
            }
        }
        if let Some(a) = &self.ipv6 {
            if a.port() == 0 {
                return Err(EncodeError::BadField {
                    field: "or-address",
                    reason: "port must not be 0",
                });
            }
        }
        for r in &self.exit_policy.rules {
            if r.v6_only || matches!(r.addr, AddrPattern::V6(..) | AddrPattern::Any6) {
                return Err(EncodeError::BadField {
                    field: "accept/reject",
                    reason: "IPv6 rules go in ipv6-policy, not in the descriptor's exit policy",
                });
            }
        }

        let rsa_id = keys.rsa_identity().public().identity();
        let master = keys.ed_identity();
        let mut s = String::with_capacity(4096);
        let _ = writeln!(
            s,
            "router {} {} {} 0 {}",
            self.nickname, self.address, self.or_port, self.dir_port
        );
        push_identity(&mut s, keys);
        let _ = writeln!(s, "master-key-ed25519 {master}");
        if let Some(a) = &self.ipv6 {
            let _ = writeln!(s, "or-address [{}]:{}", a.ip(), a.port());
        }
        let _ = writeln!(s, "platform {}", self.platform);
        let _ = writeln!(s, "proto {}", self.protocols);
        let _ = writeln!(s, "published {}", self.published);
        s.push_str("fingerprint");
        for chunk in rsa_id.to_string().as_bytes().chunks(4) {
            s.push(' ');
            s.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        }
        s.push('\n');
        let _ = writeln!(s, "uptime {}", self.uptime);
        let b = &self.bandwidth;
        let _ = writeln!(s, "bandwidth {} {} {}", b.average, b.burst, b.observed);
        if let Some(d) = &self.extra_info {
            let _ = writeln!(
                s,
                "extra-info-digest {} {}",
                hex::encode_upper(d.sha1),
                base64_unpadded(&d.sha256)
            );
        }
        if self.caches_extra_info {
            s.push_str("caches-extra-info\n");
        }
        if let Some(tap) = keys.tap_key() {
            s.push_str("onion-key\n");
            push_object(&mut s, "RSA PUBLIC KEY", &tap.public().to_pkcs1_der());
        }
        s.push_str("signing-key\n");
        push_object(
            &mut s,
            "RSA PUBLIC KEY",
            &keys.rsa_identity().public().to_pkcs1_der(),
        );
        if let Some(tap) = keys.tap_key() {
            let cc = create_onion_key_crosscert(rng, tap, &rsa_id, &master)
                .map_err(|e| crypto("onion-key-crosscert")(e.into()))?;
            s.push_str("onion-key-crosscert\n");
            push_object(&mut s, "CROSSCERT", &cc);
        }
        let expiry = Ed25519CertBuilder::hours_from_unix(Timestamp(
            self.published.unix().saturating_add(params.rotation_secs()),
        ));
        let (cc, bit) = create_ntor_onion_key_crosscert(keys.ntor_key(), &master, expiry)
            .map_err(|e| crypto("ntor-onion-key-crosscert")(e.into()))?;
        let _ = writeln!(s, "ntor-onion-key-crosscert {bit}");
        push_object(&mut s, "ED25519 CERT", &cc);
        if !self.family.is_empty() {
            let _ = writeln!(s, "family {}", self.family.join(" "));
        }
        if self.hibernating {
            s.push_str("hibernating 1\n");
        }
        if self.hidden_service_dir {
            s.push_str("hidden-service-dir\n");
        }
        if let Some(c) = &self.contact {
            let _ = writeln!(s, "contact {c}");
        }
        let _ = writeln!(
            s,
            "ntor-onion-key {}",
            base64_unpadded(keys.ntor_key().public().as_bytes())
        );
        if self.exit_policy.rules.is_empty() {
            s.push_str("reject *:*\n");
        }
        for r in &self.exit_policy.rules {
            // `*4` is written `*`, as C tor writes the IPv4 part of a policy.
            let mut r = *r;
            if r.addr == AddrPattern::Any4 {
                r.addr = AddrPattern::Any;
            }
            let _ = writeln!(s, "{r}");
        }
        if self.ipv6_policy != PolicySummary::reject_all() {
            let _ = writeln!(s, "ipv6-policy {}", self.ipv6_policy);
        }
        if self.tunnelled_dir_server {
            s.push_str("tunnelled-dir-server\n");
        }
        let digest = sign(&mut s, keys, rng)?;
        if s.len() > crate::http::MAX_SERVER_DESCRIPTOR_BYTES {
            return Err(EncodeError::BadField {
                field: "router",
                reason: "descriptor longer than the 20,000 bytes authorities accept (family or exit policy too long)",
            });
        }
        Ok(SignedDescriptor { text: s, digest })
    }
}

/// What a relay says in its extra-info document (dir-spec §2.1.2). Statistics lines are
/// not produced: none is required, and C tor relays publish them only when configured to
/// gather statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraInfo {
    /// `extra-info` nickname (as in the descriptor).
    pub nickname: String,
    /// `published`: must equal the descriptor's.
    pub published: Timestamp,
}

impl ExtraInfo {
    /// Encodes and signs the document with `keys`: `extra-info` nickname and fingerprint,
    /// `identity-ed25519`, `published`, then the two signatures.
    pub fn encode(
        &self,
        keys: &RelayKeySet,
        rng: &mut impl CryptoRngCore,
    ) -> Result<SignedExtraInfo, EncodeError> {
        check_nickname(&self.nickname).map_err(|_| EncodeError::BadField {
            field: "extra-info",
            reason: "nickname must be 1 to 19 ASCII letters and digits",
        })?;
        let mut s = String::with_capacity(1024);
        let _ = writeln!(
            s,
            "extra-info {} {}",
            self.nickname,
            keys.rsa_identity().public().identity()
        );
        push_identity(&mut s, keys);
        let _ = writeln!(s, "published {}", self.published);
        let sha1 = sign(&mut s, keys, rng)?;
        let sha256 = Sha256::digest(s.as_bytes()).into();
        Ok(SignedExtraInfo {
            text: s,
            digests: ExtraInfoDigests { sha1, sha256 },
        })
    }
}

/// Where a relay's descriptor stands in the consensus it has (C tor's
/// `mark_my_descriptor_dirty_if_too_old`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsensusListing {
    /// No live consensus: nothing to learn from it.
    NoConsensus,
    /// A live consensus that does not list the relay.
    NotListed,
    /// Listed; `stale_desc` is the StaleDesc flag, `valid_after` the consensus's.
    Listed {
        /// The consensus lists the relay with the StaleDesc flag.
        stale_desc: bool,
        /// The consensus's valid-after time.
        valid_after: Timestamp,
    },
}

impl ConsensusListing {
    /// What `consensus` says of the relay `identity` at `now` (C tor's
    /// `mark_my_descriptor_dirty_if_too_old` looks at the *live* consensus: one whose
    /// valid-after has come and whose valid-until has not passed, dir-spec §3.4.1 / §5.1).
    /// A consensus that is not live is [`ConsensusListing::NoConsensus`]; the relay's
    /// entry absent, [`ConsensusListing::NotListed`]; present, its StaleDesc flag (dir-spec
    /// §3.4.1: the authorities' descriptor of it is over 18 hours old) and the consensus's
    /// valid-after. The caller verifies the consensus's signatures first.
    pub fn of(
        consensus: &crate::consensus::Consensus<'_>,
        identity: &crate::RsaIdentity,
        now: Timestamp,
    ) -> ConsensusListing {
        if now < consensus.valid_after || now > consensus.valid_until {
            return ConsensusListing::NoConsensus;
        }
        match consensus.relay(identity) {
            None => ConsensusListing::NotListed,
            Some(rs) => ConsensusListing::Listed {
                stale_desc: rs.flags.contains(crate::ids::RelayFlags::STALE_DESC),
                valid_after: consensus.valid_after,
            },
        }
    }
}

/// When a relay builds and uploads a new descriptor and extra-info document, as C tor 0.4.9
/// decides it (dir-spec §2.1 "Uploading server descriptors"; C tor's
/// `mark_my_descriptor_dirty_if_too_old`, `check_descriptor_bandwidth_changed`), sans-IO:
///
/// * at start, and whenever the embedder calls [`DescriptorSchedule::mark_dirty`] (a key
///   rotation whose [`onion_crypto::relay_keyset::Rotation::descriptor_changed`] is true, a
///   changed address, port, policy or any field other than uptime and bandwidth);
/// * [`DescriptorSchedule::FORCE_REGENERATE`] (18 hours) after the last one;
/// * every [`DescriptorSchedule::FAST_RETRY`] (90 minutes) while the live consensus does not
///   list the relay, or lists it as StaleDesc and is newer than the descriptor;
/// * while the uptime is under a day (or the relay hibernates), when the observed bandwidth
///   has changed by a factor of 2 (or to or from 0) since the published one, at most every
///   [`DescriptorSchedule::BANDWIDTH_CHANGE_FREQ`] (3 hours) unless the previous value was
///   0 or the network is a testing network (C tor's `TestingTorNetwork`).
///
/// Call [`DescriptorSchedule::check`] about once a minute (C tor checks every 60 s); when it
/// returns a reason, build, sign and upload (that reason is the `X-Desc-Gen-Reason` of
/// [`crate::http::descriptor_upload`]), then call [`DescriptorSchedule::published`].
#[derive(Debug, Clone)]
pub struct DescriptorSchedule {
    /// When the published descriptor was built; `None` while a new one is due.
    clean_since: Option<Timestamp>,
    dirty_reason: &'static str,
    published_observed: Option<u64>,
    bandwidth_changed_at: Option<Timestamp>,
    testing_network: bool,
}

impl DescriptorSchedule {
    /// A descriptor is rebuilt at least this often (C tor's
    /// `FORCE_REGENERATE_DESCRIPTOR_INTERVAL`, 18 hours).
    pub const FORCE_REGENERATE: u64 = 18 * 60 * 60;
    /// Retry interval while the consensus misses or marks stale our descriptor (C tor's
    /// `FAST_RETRY_DESCRIPTOR_INTERVAL`, 90 minutes).
    pub const FAST_RETRY: u64 = 90 * 60;
    /// Least time between bandwidth-triggered rebuilds (`MAX_BANDWIDTH_CHANGE_FREQ`).
    pub const BANDWIDTH_CHANGE_FREQ: u64 = 3 * 60 * 60;
    /// Bandwidth changes count only below this uptime (`MAX_UPTIME_BANDWIDTH_CHANGE`).
    pub const BANDWIDTH_CHANGE_MAX_UPTIME: u64 = 24 * 60 * 60;

    /// A schedule with a descriptor due now ("just started"). `testing_network` drops the
    /// 3-hour limit on bandwidth-triggered rebuilds, as C tor's `TestingTorNetwork` does.
    pub fn new(testing_network: bool) -> Self {
        DescriptorSchedule {
            clean_since: None,
            dirty_reason: "just started",
            published_observed: None,
            bandwidth_changed_at: None,
            testing_network,
        }
    }

    /// Something in the descriptor changed: a new one is due at the next check. The first
    /// reason given since the last publication is kept.
    pub fn mark_dirty(&mut self, reason: &'static str) {
        if self.clean_since.take().is_some() {
            self.dirty_reason = reason;
        }
    }

    /// A descriptor built at `now` with bandwidth-observed `observed` was uploaded.
    pub fn published(&mut self, now: Timestamp, observed: u64) {
        self.clean_since = Some(now);
        self.published_observed = Some(observed);
    }

    /// Whether a new descriptor is due at `now`, and why. `uptime` is the relay's uptime in
    /// seconds, `observed` its current bandwidth estimate (0 when hibernating),
    /// `hibernating` whether it hibernates, `listing` what the live consensus says of it.
    pub fn check(
        &mut self,
        now: Timestamp,
        uptime: u64,
        observed: u64,
        hibernating: bool,
        listing: ConsensusListing,
    ) -> Option<&'static str> {
        let Some(since) = self.clean_since else {
            return Some(self.dirty_reason);
        };
        // check_descriptor_bandwidth_changed.
        if uptime <= Self::BANDWIDTH_CHANGE_MAX_UPTIME || hibernating {
            let prev = self.published_observed.unwrap_or(0);
            let cur = if hibernating { 0 } else { observed };
            let large = (prev != cur && (prev == 0 || cur == 0))
                || cur > prev.saturating_mul(2)
                || cur < prev / 2;
            if large {
                let long_enough = self.bandwidth_changed_at.map_or(true, |t| {
                    t.unix().saturating_add(Self::BANDWIDTH_CHANGE_FREQ) < now.unix()
                });
                if long_enough || self.testing_network || prev == 0 {
                    self.bandwidth_changed_at = Some(now);
                    self.mark_dirty("bandwidth has changed");
                    return Some(self.dirty_reason);
                }
            }
        }
        // mark_my_descriptor_dirty_if_too_old.
        if since.unix().saturating_add(Self::FORCE_REGENERATE) < now.unix() {
            self.mark_dirty("time for new descriptor");
            return Some(self.dirty_reason);
        }
        let fast = match listing {
            ConsensusListing::NotListed => Some("not listed in consensus"),
            ConsensusListing::Listed {
                stale_desc: true,
                valid_after,
            } if valid_after > since => Some("listed as stale in consensus"),
            _ => None,
        };
        if let Some(reason) = fast {
            if since.unix().saturating_add(Self::FAST_RETRY) < now.unix() {
                self.mark_dirty(reason);
                return Some(self.dirty_reason);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_cannot_break_lines() {
        assert!(check_text("contact", "a@b.example 0xDEADBEEF").is_ok());
        for bad in [
            "",
            " x",
            "x ",
            "a\nb",
            "a\rb",
            "caf\u{e9}",
            "tab\there",
            "nul\0",
        ] {
            assert!(check_text("contact", bad).is_err(), "{bad:?}");
        }
        assert!(check_nickname("relay0").is_ok());
        for bad in ["", "a-b", "abcdefghijklmnopqrst", "r\u{e9}"] {
            assert!(check_nickname(bad).is_err(), "{bad:?}");
        }
    }

    fn at(s: u64) -> Timestamp {
        Timestamp::from_unix(1_796_000_000 + s)
    }

    #[test]
    fn schedule_publishes_at_start_when_dirty_and_every_18_hours() {
        let mut s = DescriptorSchedule::new(false);
        let l = ConsensusListing::NoConsensus;
        assert_eq!(s.check(at(0), 0, 100, false, l), Some("just started"));
        s.published(at(0), 100);
        assert_eq!(s.check(at(60), 60, 100, false, l), None);
        s.mark_dirty("onion key rotated");
        s.mark_dirty("second reason");
        assert_eq!(
            s.check(at(120), 120, 100, false, l),
            Some("onion key rotated")
        );
        s.published(at(120), 100);
        let limit = 120 + DescriptorSchedule::FORCE_REGENERATE;
        assert_eq!(s.check(at(limit), 2 * 86400, 100, false, l), None);
        assert_eq!(
            s.check(at(limit + 1), 2 * 86400, 100, false, l),
            Some("time for new descriptor")
        );
    }

    #[test]
    fn schedule_retries_every_90_minutes_when_missing_or_stale() {
        let mut s = DescriptorSchedule::new(false);
        s.published(at(0), 100);
        let up = 2 * 86400;
        let fast = DescriptorSchedule::FAST_RETRY;
        let missing = ConsensusListing::NotListed;
        assert_eq!(s.check(at(fast), up, 100, false, missing), None);
        assert_eq!(
            s.check(at(fast + 1), up, 100, false, missing),
            Some("not listed in consensus")
        );
        s.published(at(fast + 1), 100);
        // StaleDesc counts only from a consensus newer than the descriptor.
        let old = ConsensusListing::Listed {
            stale_desc: true,
            valid_after: at(0),
        };
        assert_eq!(s.check(at(3 * fast), up, 100, false, old), None);
        let newer = ConsensusListing::Listed {
            stale_desc: true,
            valid_after: at(fast + 60),
        };
        assert_eq!(
            s.check(at(3 * fast), up, 100, false, newer),
            Some("listed as stale in consensus")
        );
        s.published(at(3 * fast), 100);
        let fine = ConsensusListing::Listed {
            stale_desc: false,
            valid_after: at(4 * fast),
        };
        assert_eq!(s.check(at(5 * fast), up, 100, false, fine), None);
    }

    #[test]
    fn listing_from_a_consensus_drives_the_schedule() {
        let net = crate::synth::network(20, 9);
        let first_r = net
            .consensus
            .lines()
            .find(|l| l.starts_with("r "))
            .unwrap()
            .to_string();
        // The first relay's entry gains StaleDesc.
        let stale_text = {
            let mut out = String::new();
            let mut in_first = false;
            for l in net.consensus.split_inclusive('\n') {
                if l.starts_with("r ") {
                    in_first = l.trim_end() == first_r;
                }
                if in_first && l.starts_with("s ") {
                    out.push_str(&format!("{} StaleDesc\n", l.trim_end()));
                } else {
                    out.push_str(l);
                }
            }
            out
        };
        let c = crate::consensus::parse(&net.consensus)
            .unwrap()
            .assume_verified();
        let stale = crate::consensus::parse(&stale_text)
            .unwrap()
            .assume_verified();
        let id = c.relays[0].identity;
        let other = crate::RsaIdentity([0xEE; 20]);
        let live = Timestamp::from_unix(c.valid_after.unix() + 60);
        assert_eq!(
            ConsensusListing::of(&c, &id, live),
            ConsensusListing::Listed {
                stale_desc: false,
                valid_after: c.valid_after
            }
        );
        assert_eq!(
            ConsensusListing::of(&stale, &id, live),
            ConsensusListing::Listed {
                stale_desc: true,
                valid_after: c.valid_after
            }
        );
        assert_eq!(
            ConsensusListing::of(&c, &other, live),
            ConsensusListing::NotListed
        );
        let expired = Timestamp::from_unix(c.valid_until.unix() + 1);
        assert_eq!(
            ConsensusListing::of(&c, &other, expired),
            ConsensusListing::NoConsensus
        );
        // The decisions: published just before the consensus; 90 minutes later a relay the
        // consensus misses, or lists as stale, publishes again; a listed one does not, and
        // without a live consensus nothing but the 18-hour rule applies.
        let published = Timestamp::from_unix(c.valid_after.unix() - 10);
        let later = Timestamp::from_unix(published.unix() + DescriptorSchedule::FAST_RETRY + 1);
        let run = |listing| {
            let mut s = DescriptorSchedule::new(false);
            s.published(published, 1000);
            s.check(later, 2 * 86_400, 1000, false, listing)
        };
        assert_eq!(
            run(ConsensusListing::of(&c, &other, live)),
            Some("not listed in consensus")
        );
        assert_eq!(
            run(ConsensusListing::of(&stale, &id, live)),
            Some("listed as stale in consensus")
        );
        assert_eq!(run(ConsensusListing::of(&c, &id, live)), None);
        assert_eq!(run(ConsensusListing::of(&c, &other, expired)), None);
    }

    #[test]
    fn schedule_follows_bandwidth_changes_during_the_first_day() {
        let mut s = DescriptorSchedule::new(false);
        s.published(at(0), 1000);
        let l = ConsensusListing::NoConsensus;
        // Within a factor of two: nothing.
        assert_eq!(s.check(at(60), 60, 1999, false, l), None);
        assert_eq!(s.check(at(60), 60, 500, false, l), None);
        // Doubling (more than twice): due, then not again within 3 hours.
        assert_eq!(
            s.check(at(120), 120, 2001, false, l),
            Some("bandwidth has changed")
        );
        s.published(at(120), 2001);
        assert_eq!(s.check(at(180), 180, 9000, false, l), None);
        let after = 120 + DescriptorSchedule::BANDWIDTH_CHANGE_FREQ + 1;
        assert_eq!(
            s.check(at(after), after, 9000, false, l),
            Some("bandwidth has changed")
        );
        s.published(at(after), 9000);
        // After a day of uptime bandwidth changes wait for the 18-hour rebuild.
        assert_eq!(s.check(at(after + 3600), 86401, 1, false, l), None);
        // Hibernating counts as 0, whatever the uptime.
        assert_eq!(
            s.check(at(after + 4 * 3600), 5 * 86400, 9000, true, l),
            Some("bandwidth has changed")
        );
        // On a testing network the 3-hour limit does not apply.
        let mut t = DescriptorSchedule::new(true);
        t.published(at(0), 1000);
        assert_eq!(
            t.check(at(1), 1, 5000, false, l),
            Some("bandwidth has changed")
        );
        t.published(at(1), 5000);
        assert_eq!(
            t.check(at(2), 2, 100, false, l),
            Some("bandwidth has changed")
        );
    }

    #[test]
    fn onion_relay_protocols_parse_and_print_the_same() {
        let p = Protocols::parse(ONION_RELAY_PROTOCOLS).expect("parses");
        assert_eq!(p.to_string(), ONION_RELAY_PROTOCOLS);
        assert!(p.supports("Relay", 4) && !p.supports("Relay", 3) && !p.supports("Relay", 1));
    }
}
