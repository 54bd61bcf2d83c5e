//! A relay's whole key set and its rotation, on C tor 0.4.9's schedule (tor-spec 0.3 "Relay
//! keys and identities", cert-spec, dir-spec 2.1.1).
//!
//! [`RelayKeySet`] holds:
//!
//! * the RSA-1024 identity (`KP_relayid_rsa`), which never changes;
//! * the ed25519 master identity (`KP_relayid_ed`), whose secret may be offline (C tor's
//!   `OfflineMasterKey`): the signing key with the certificate the master made for it is
//!   then enough, until that certificate expires;
//! * the ed25519 signing key (`KP_relaysign_ed`) and its Id->Signing certificate (cert type
//!   04), valid 30 days (C tor's `SigningKeyLifetime`), replaced when it has less than a
//!   day left (`TestingSigningKeySlop`) if the master secret is online;
//! * the link-authentication material of [`LinkKeys`] (X.509 identity certificate,
//!   RSA->Ed25519 cross-certificate valid six months and renewed 30 days before it
//!   expires, as C tor does);
//! * the ntor onion key (`KP_ntor`) and the previous one. Every `onion-key-rotation-days`
//!   (consensus parameter, default 28, 1..=90) a new key replaces it; the previous one
//!   still answers CREATE2 cells until `onion-key-grace-period-days` (default 7,
//!   1..=rotation days) after the rotation (C tor's `rotate_onion_key_callback` and
//!   `check_onion_keys_expiry_time_callback`);
//! * optionally the RSA-1024 TAP onion key, rotated with the ntor key. onion does not
//!   implement the TAP handshake (no `Relay=1`), but a relay that publishes to C tor 0.4.9.11
//!   authorities needs one: they refuse a descriptor without `onion-key` (HTTP 400 "Missing
//!   TAP key in descriptor.", seen on a private network), and stem 1.8 requires it too.
//!
//! Nothing here reads a clock or a file: `now` and the random number generator are
//! arguments, and [`KeyFiles`] carries the contents of C tor's key files
//! ([`crate::keyfile`]) in and out. Secrets are zeroized on drop by their key types and by
//! [`KeyFiles`]' buffers.
//!
//! A relay calls [`RelayKeySet::rotate`] at [`RelayKeySet::next_event`] (and whenever the
//! consensus parameters change); when [`Rotation::descriptor_changed`] is true it publishes
//! a new descriptor, and it writes [`RelayKeySet::to_files`] back to its key directory.

use alloc::vec::Vec;

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::cert::{CertKeyType, CertType, Ed25519CertBuilder, Timestamp, UncheckedEd25519Cert};
use crate::error::{CertError, KeyError};
use crate::keyfile;
use crate::keys::{
    Ed25519Identity, Ed25519Keypair, Ed25519Signer, ExpandedEd25519Keypair, NtorSecretKey,
};
use crate::relay_keys::LinkKeys;
use crate::rsa::RsaKeypair;

const DAY: u64 = 24 * 60 * 60;
/// Lifetime of a new Id->Signing certificate (C tor's `SigningKeyLifetime`, 30 days).
pub const SIGNING_KEY_LIFETIME: u64 = 30 * DAY;
/// A signing key is replaced when its certificate expires within this (C tor's
/// `TestingSigningKeySlop`, one day).
pub const SIGNING_KEY_SLOP: u64 = DAY;
/// The RSA->Ed25519 cross-certificate is renewed when it expires within this (C tor: 30
/// days before its six months run out).
pub const CROSSCERT_RENEW_BEFORE: u64 = 30 * DAY;

/// The onion-key rotation schedule: the consensus parameters `onion-key-rotation-days` and
/// `onion-key-grace-period-days` (param-spec), clamped as C tor clamps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnionKeyParams {
    rotation_days: u32,
    grace_days: u32,
}

impl Default for OnionKeyParams {
    fn default() -> Self {
        OnionKeyParams {
            rotation_days: Self::DEFAULT_ROTATION_DAYS,
            grace_days: Self::DEFAULT_GRACE_DAYS,
        }
    }
}

impl OnionKeyParams {
    /// Default of `onion-key-rotation-days`.
    pub const DEFAULT_ROTATION_DAYS: u32 = 28;
    /// Bounds of `onion-key-rotation-days`.
    pub const ROTATION_DAYS: core::ops::RangeInclusive<u32> = 1..=90;
    /// Default of `onion-key-grace-period-days`.
    pub const DEFAULT_GRACE_DAYS: u32 = 7;

    /// The schedule from the consensus values (`None` when the consensus does not set the
    /// parameter). Values out of range are clamped into it, as C tor's
    /// `networkstatus_get_param` does: rotation to 1..=90 days, grace to 1..=rotation days.
    pub fn new(rotation_days: Option<i32>, grace_days: Option<i32>) -> Self {
        let (lo, hi) = (*Self::ROTATION_DAYS.start(), *Self::ROTATION_DAYS.end());
        let rotation_days = clamp(rotation_days, Self::DEFAULT_ROTATION_DAYS, lo, hi);
        let grace_days = clamp(grace_days, Self::DEFAULT_GRACE_DAYS, 1, rotation_days);
        OnionKeyParams {
            rotation_days,
            grace_days,
        }
    }

    /// How long an onion key is used before a new one replaces it, in seconds.
    pub fn rotation_secs(&self) -> u64 {
        u64::from(self.rotation_days) * DAY
    }

    /// How long after a rotation the previous onion key is still accepted, in seconds.
    pub fn grace_secs(&self) -> u64 {
        u64::from(self.grace_days) * DAY
    }
}

/// `networkstatus_get_param`'s rule: a missing value is the default, an out-of-range one
/// is clamped (C tor also clamps the default into the range).
fn clamp(v: Option<i32>, default: u32, lo: u32, hi: u32) -> u32 {
    let v = v.map_or(i64::from(default), i64::from);
    // lo <= hi always holds here (grace's hi is a clamped rotation, at least 1).
    u32::try_from(v.clamp(i64::from(lo), i64::from(hi.max(lo)))).unwrap_or(lo)
}

/// The contents of C tor's key files (each `None` when the file is absent), as read from or
/// to be written to `DataDirectory/keys/` under the names in [`crate::keyfile`].
/// Buffers are zeroized on drop.
#[derive(Clone, Default)]
pub struct KeyFiles {
    /// `secret_id_key`.
    pub secret_id_key: Option<Zeroizing<Vec<u8>>>,
    /// `ed25519_master_id_secret_key` (absent when the master key is offline).
    pub ed25519_master_id_secret_key: Option<Zeroizing<Vec<u8>>>,
    /// `ed25519_master_id_public_key`.
    pub ed25519_master_id_public_key: Option<Zeroizing<Vec<u8>>>,
    /// `ed25519_signing_secret_key`.
    pub ed25519_signing_secret_key: Option<Zeroizing<Vec<u8>>>,
    /// `ed25519_signing_cert`.
    pub ed25519_signing_cert: Option<Zeroizing<Vec<u8>>>,
    /// `secret_onion_key_ntor`.
    pub secret_onion_key_ntor: Option<Zeroizing<Vec<u8>>>,
    /// `secret_onion_key_ntor.old`.
    pub secret_onion_key_ntor_old: Option<Zeroizing<Vec<u8>>>,
    /// `secret_onion_key` (TAP).
    pub secret_onion_key: Option<Zeroizing<Vec<u8>>>,
    /// `secret_onion_key.old` (TAP).
    pub secret_onion_key_old: Option<Zeroizing<Vec<u8>>>,
}

impl core::fmt::Debug for KeyFiles {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let names: Vec<&str> = self.entries().map(|(n, _)| n).collect();
        f.debug_struct("KeyFiles").field("present", &names).finish()
    }
}

impl KeyFiles {
    /// The present files as (C tor file name, contents).
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        [
            (keyfile::SECRET_ID_KEY, &self.secret_id_key),
            (
                keyfile::ED25519_MASTER_ID_SECRET_KEY,
                &self.ed25519_master_id_secret_key,
            ),
            (
                keyfile::ED25519_MASTER_ID_PUBLIC_KEY,
                &self.ed25519_master_id_public_key,
            ),
            (
                keyfile::ED25519_SIGNING_SECRET_KEY,
                &self.ed25519_signing_secret_key,
            ),
            (keyfile::ED25519_SIGNING_CERT, &self.ed25519_signing_cert),
            (keyfile::SECRET_ONION_KEY_NTOR, &self.secret_onion_key_ntor),
            (
                keyfile::SECRET_ONION_KEY_NTOR_OLD,
                &self.secret_onion_key_ntor_old,
            ),
            (keyfile::SECRET_ONION_KEY, &self.secret_onion_key),
            (keyfile::SECRET_ONION_KEY_OLD, &self.secret_onion_key_old),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.as_ref().map(|b| (n, &b[..])))
    }

    /// Sets the file called `name` (a C tor key file name); returns false, changing
    /// nothing, for any other name.
    pub fn set(&mut self, name: &str, contents: Vec<u8>) -> bool {
        let slot = match name {
            keyfile::SECRET_ID_KEY => &mut self.secret_id_key,
            keyfile::ED25519_MASTER_ID_SECRET_KEY => &mut self.ed25519_master_id_secret_key,
            keyfile::ED25519_MASTER_ID_PUBLIC_KEY => &mut self.ed25519_master_id_public_key,
            keyfile::ED25519_SIGNING_SECRET_KEY => &mut self.ed25519_signing_secret_key,
            keyfile::ED25519_SIGNING_CERT => &mut self.ed25519_signing_cert,
            keyfile::SECRET_ONION_KEY_NTOR => &mut self.secret_onion_key_ntor,
            keyfile::SECRET_ONION_KEY_NTOR_OLD => &mut self.secret_onion_key_ntor_old,
            keyfile::SECRET_ONION_KEY => &mut self.secret_onion_key,
            keyfile::SECRET_ONION_KEY_OLD => &mut self.secret_onion_key_old,
            _ => return false,
        };
        *slot = Some(Zeroizing::new(contents));
        true
    }
}

/// Why a key set could not be loaded or rotated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeySetError {
    /// A key file did not decode.
    #[error("{file}: {error}")]
    Key {
        /// The C tor file name.
        file: &'static str,
        /// Why.
        error: KeyError,
    },
    /// A certificate did not decode or verify, or one could not be made.
    #[error("{file}: {error}")]
    Cert {
        /// The C tor file name, or the certificate's name.
        file: &'static str,
        /// Why.
        error: CertError,
    },
    /// A file the others need is absent (the signing key without its certificate, or
    /// neither the master secret key nor a valid signing certificate).
    #[error("missing {0}")]
    Missing(&'static str),
    /// Two files disagree (a master public key that is not the secret key's, a
    /// certificate signed by another master key).
    #[error("{0}")]
    Mismatch(&'static str),
    /// The RSA identity is not a 1024-bit key with exponent 65537 (tor-spec 0.3).
    #[error("secret_id_key: {0}")]
    BadIdentity(KeyError),
    /// The signing certificate has expired and the master secret key, which could sign a
    /// new one, is offline (supply a new `ed25519_signing_secret_key` and
    /// `ed25519_signing_cert`, as `tor --keygen` makes them).
    #[error("the ed25519 signing certificate expired at {expired_at} and the master identity key is offline")]
    SigningCertExpired {
        /// When it expired.
        expired_at: Timestamp,
    },
}

fn key_err(file: &'static str) -> impl Fn(KeyError) -> KeySetError {
    move |error| KeySetError::Key { file, error }
}

fn cert_err(file: &'static str) -> impl Fn(CertError) -> KeySetError {
    move |error| KeySetError::Cert { file, error }
}

/// What [`RelayKeySet::rotate`] (or loading) changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotation {
    /// A new ed25519 signing key and certificate were made.
    pub signing_key: bool,
    /// The link-authentication certificates (RSA->Ed25519 cross-certificate, X.509 identity
    /// certificate) were remade.
    pub link_certs: bool,
    /// New onion keys replaced the current ones, which became the previous ones.
    pub onion_keys: bool,
    /// The previous onion keys passed their grace period and were dropped.
    pub previous_onion_keys_expired: bool,
    /// The signing certificate expires within a day but the master key is offline: the
    /// operator must supply a new one before it expires.
    pub signing_cert_expires_soon: bool,
    /// Keys that did not exist were generated (a fresh relay).
    pub generated: bool,
}

impl Rotation {
    /// Whether the relay's descriptor must be rebuilt and uploaded: its signing key or
    /// onion keys changed.
    pub fn descriptor_changed(&self) -> bool {
        self.signing_key || self.onion_keys || self.generated
    }

    /// Whether the key files must be written again.
    pub fn files_changed(&self) -> bool {
        self.signing_key || self.onion_keys || self.previous_onion_keys_expired || self.generated
    }
}

/// A relay's keys: identities, signing key, onion keys (see the module documentation).
pub struct RelayKeySet {
    link: LinkKeys,
    master: Option<ExpandedEd25519Keypair>,
    signing_cert_expiry: Timestamp,
    /// The current ntor key first, then the previous one during its grace period.
    ntor: Vec<NtorSecretKey>,
    tap: Option<RsaKeypair>,
    tap_previous: Option<RsaKeypair>,
    onion_key_set_at: Timestamp,
}

impl core::fmt::Debug for RelayKeySet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RelayKeySet")
            .field(
                "rsa_identity",
                &self.link.rsa_identity().public().identity(),
            )
            .field("ed_identity", &self.link.ed_identity())
            .field("master_online", &self.master.is_some())
            .field("signing_cert_expiry", &self.signing_cert_expiry)
            .field("onion_key_set_at", &self.onion_key_set_at)
            .finish_non_exhaustive()
    }
}

/// A new signing key and its Id->Signing certificate (signed-with-ed25519-key extension
/// included, as C tor's `INIT_ED_KEY_INCLUDE_SIGNING_KEY_IN_CERT`), valid
/// [`SIGNING_KEY_LIFETIME`] from `now` rounded up to the hour.
fn new_signing_key(
    rng: &mut impl CryptoRngCore,
    master: &ExpandedEd25519Keypair,
    now: Timestamp,
) -> Result<(ExpandedEd25519Keypair, Vec<u8>), KeySetError> {
    let signing = Ed25519Keypair::generate(rng).to_expanded();
    let cert = Ed25519CertBuilder::new(
        CertType::IDENTITY_V_SIGNING,
        CertKeyType::ED25519,
        *signing.identity().as_bytes(),
        Ed25519CertBuilder::hours_from_unix(Timestamp(now.0.saturating_add(SIGNING_KEY_LIFETIME))),
    )
    .include_signing_key(true)
    .sign(master)
    .map_err(cert_err(keyfile::ED25519_SIGNING_CERT))?;
    Ok((signing, cert))
}

fn cert_expiry(cert: &[u8]) -> Timestamp {
    UncheckedEd25519Cert::decode(cert)
        .map(|c| c.expiry())
        .unwrap_or(Timestamp(0))
}

impl RelayKeySet {
    /// A fresh key set, as a new relay makes at its first start: RSA-1024 identity, ed25519
    /// master key (online), signing key and certificate, ntor onion key, and a TAP onion
    /// key if `with_tap` (required by C tor 0.4.9.11 authorities: see the module
    /// documentation). Includes one or two RSA-1024 key generations: slow.
    pub fn generate(
        now: impl Into<Timestamp>,
        with_tap: bool,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, KeySetError> {
        let now = now.into();
        let rsa = RsaKeypair::generate_1024(rng).map_err(key_err(keyfile::SECRET_ID_KEY))?;
        let master = Ed25519Keypair::generate(rng).to_expanded();
        let tap = if with_tap {
            Some(RsaKeypair::generate_1024(rng).map_err(key_err(keyfile::SECRET_ONION_KEY))?)
        } else {
            None
        };
        let ntor = NtorSecretKey::generate(rng);
        Self::assemble(rng, rsa, master, ntor, tap, now)
    }

    fn assemble(
        rng: &mut impl CryptoRngCore,
        rsa: RsaKeypair,
        master: ExpandedEd25519Keypair,
        ntor: NtorSecretKey,
        tap: Option<RsaKeypair>,
        now: Timestamp,
    ) -> Result<Self, KeySetError> {
        let (signing, cert) = new_signing_key(rng, &master, now)?;
        let signing_cert_expiry = cert_expiry(&cert);
        let link = LinkKeys::from_signing_cert(rsa, signing, cert, now, rng)
            .map_err(cert_err(keyfile::ED25519_SIGNING_CERT))?;
        Ok(RelayKeySet {
            link,
            master: Some(master),
            signing_cert_expiry,
            ntor: alloc::vec![ntor],
            tap,
            tap_previous: None,
            onion_key_set_at: now,
        })
    }

    /// Loads a key set from C tor's key files (a C tor relay's `keys/` directory works), as
    /// C tor's `load_ed_keys` and `init_keys` do at start:
    ///
    /// * `secret_id_key` is required and must be RSA-1024 with e = 65537;
    /// * with neither ed25519 master key nor signing key, a new master key is made (a relay
    ///   that had only an RSA identity); with a master secret key, a signing key whose
    ///   certificate is absent, expired or expiring within a day is replaced;
    /// * without the master secret key (offline), the signing key and its certificate must
    ///   be present, signed by the master key (`ed25519_master_id_public_key`, when present,
    ///   must agree) and unexpired;
    /// * a missing ntor onion key is generated; `secret_onion_key_ntor.old` is kept as the
    ///   previous key; TAP keys are loaded when present;
    /// * `onion_key_set_at` is when the onion keys were last rotated (C tor keeps it in its
    ///   state file as `LastRotatedOnionKey`); `None` means `now`, as C tor assumes.
    ///
    /// Nothing is rotated on schedule here: call [`RelayKeySet::rotate`] next. The returned
    /// [`Rotation`] says what was generated (so that the files are written back).
    pub fn from_files(
        now: impl Into<Timestamp>,
        files: &KeyFiles,
        onion_key_set_at: Option<Timestamp>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Self, Rotation), KeySetError> {
        use keyfile::*;
        let now = now.into();
        let mut changes = Rotation::default();

        let rsa = decode_rsa_secret_key(
            files
                .secret_id_key
                .as_deref()
                .ok_or(KeySetError::Missing(SECRET_ID_KEY))?,
        )
        .map_err(key_err(SECRET_ID_KEY))?;
        rsa.public()
            .check_relay_key()
            .map_err(KeySetError::BadIdentity)?;

        let master = files
            .ed25519_master_id_secret_key
            .as_deref()
            .map(|f| decode_ed25519_secret_key(f, TAG_MASTER))
            .transpose()
            .map_err(key_err(ED25519_MASTER_ID_SECRET_KEY))?;
        let master_public = files
            .ed25519_master_id_public_key
            .as_deref()
            .map(|f| decode_ed25519_public_key(f))
            .transpose()
            .map_err(key_err(ED25519_MASTER_ID_PUBLIC_KEY))?;
        if let (Some(m), Some(p)) = (&master, &master_public) {
            if m.identity() != *p {
                return Err(KeySetError::Mismatch(
                    "ed25519_master_id_public_key is not the public key of ed25519_master_id_secret_key",
                ));
            }
        }
        let signing = match (
            files.ed25519_signing_secret_key.as_deref(),
            files.ed25519_signing_cert.as_deref(),
        ) {
            (Some(k), Some(c)) => {
                let key = decode_ed25519_secret_key(k, TAG_SIGNING)
                    .map_err(key_err(ED25519_SIGNING_SECRET_KEY))?;
                let cert = decode_ed25519_cert(c)
                    .and_then(|c| c.expect_type(CertType::IDENTITY_V_SIGNING))
                    .map_err(cert_err(ED25519_SIGNING_CERT))?;
                let signer = *cert.signing_key().ok_or(KeySetError::Cert {
                    file: ED25519_SIGNING_CERT,
                    error: CertError::MissingSigningKey,
                })?;
                let expected = master.as_ref().map(|m| m.identity()).or(master_public);
                if expected.is_some_and(|m| m != signer) {
                    return Err(KeySetError::Mismatch(
                        "ed25519_signing_cert was not signed by the master identity key",
                    ));
                }
                // The signature (not the expiry, handled below) must hold.
                cert.check_signature(None)
                    .map_err(cert_err(ED25519_SIGNING_CERT))?;
                if cert.certified_key() != key.identity().as_bytes() {
                    return Err(KeySetError::Mismatch(
                        "ed25519_signing_cert certifies another key than ed25519_signing_secret_key",
                    ));
                }
                Some((key, cert))
            }
            (None, None) => None,
            (Some(_), None) => return Err(KeySetError::Missing(ED25519_SIGNING_CERT)),
            (None, Some(_)) => return Err(KeySetError::Missing(ED25519_SIGNING_SECRET_KEY)),
        };

        let (ntor_current, ntor_generated) = match files.secret_onion_key_ntor.as_deref() {
            Some(f) => (
                decode_ntor_secret_key(f).map_err(key_err(SECRET_ONION_KEY_NTOR))?,
                false,
            ),
            None => (NtorSecretKey::generate(rng), true),
        };
        let mut ntor = alloc::vec![ntor_current];
        if let Some(f) = files.secret_onion_key_ntor_old.as_deref() {
            ntor.push(decode_ntor_secret_key(f).map_err(key_err(SECRET_ONION_KEY_NTOR_OLD))?);
        }
        let tap = files
            .secret_onion_key
            .as_deref()
            .map(|f| decode_rsa_secret_key(f))
            .transpose()
            .map_err(key_err(SECRET_ONION_KEY))?;
        let tap_previous = files
            .secret_onion_key_old
            .as_deref()
            .map(|f| decode_rsa_secret_key(f))
            .transpose()
            .map_err(key_err(SECRET_ONION_KEY_OLD))?;
        changes.generated = ntor_generated;
        let onion_key_set_at = match onion_key_set_at {
            Some(t) if !ntor_generated => t,
            _ => now,
        };

        // Which signing key to use (C tor's need_new_signing_key / want_new_signing_key).
        let expiry = signing.as_ref().map(|(_, c)| c.expiry());
        let need_new = expiry.map_or(true, |e| e < now);
        let want_new = expiry.map_or(true, |e| e.0 < now.0.saturating_add(SIGNING_KEY_SLOP));
        let (master, signing, cert) = match (master, signing) {
            (Some(m), None) => {
                let (k, c) = new_signing_key(rng, &m, now)?;
                changes.signing_key = true;
                (Some(m), k, c)
            }
            (Some(m), Some(_)) if want_new => {
                let (k, c) = new_signing_key(rng, &m, now)?;
                changes.signing_key = true;
                (Some(m), k, c)
            }
            (None, None) if master_public.is_none() => {
                let m = Ed25519Keypair::generate(rng).to_expanded();
                let (k, c) = new_signing_key(rng, &m, now)?;
                changes.generated = true;
                (Some(m), k, c)
            }
            (None, None) => return Err(KeySetError::Missing(ED25519_MASTER_ID_SECRET_KEY)),
            (_, Some((_, cert))) if need_new => {
                return Err(KeySetError::SigningCertExpired {
                    expired_at: cert.expiry(),
                })
            }
            (m, Some((k, c))) => {
                changes.signing_cert_expires_soon = want_new;
                (m, k, c.as_bytes().to_vec())
            }
        };
        let signing_cert_expiry = cert_expiry(&cert);
        let link = LinkKeys::from_signing_cert(rsa, signing, cert, now, rng)
            .map_err(cert_err(ED25519_SIGNING_CERT))?;
        Ok((
            RelayKeySet {
                link,
                master,
                signing_cert_expiry,
                ntor,
                tap,
                tap_previous,
                onion_key_set_at,
            },
            changes,
        ))
    }

    /// The key files of this set, for the embedder to write (mode 0600, in a 0700
    /// directory). The master secret key is included only when it is online; absent
    /// previous onion keys mean their files should be removed. C tor 0.4.9.11 loads them
    /// as its own (checked with `tor --list-fingerprint`, also with `OfflineMasterKey 1` and
    /// no master secret key: the same fingerprints, and it rewrote no file).
    pub fn to_files(&self) -> Result<KeyFiles, KeySetError> {
        use keyfile::*;
        let rsa = |k: &RsaKeypair, file| encode_rsa_secret_key(k).map_err(key_err(file));
        Ok(KeyFiles {
            secret_id_key: Some(rsa(self.link.rsa_identity(), SECRET_ID_KEY)?),
            ed25519_master_id_secret_key: self
                .master
                .as_ref()
                .map(|m| encode_ed25519_secret_key(m, TAG_MASTER))
                .transpose()
                .map_err(key_err(ED25519_MASTER_ID_SECRET_KEY))?,
            ed25519_master_id_public_key: Some(Zeroizing::new(encode_ed25519_public_key(
                &self.link.ed_identity(),
            ))),
            ed25519_signing_secret_key: Some(
                encode_ed25519_secret_key(self.link.signing_keypair(), TAG_SIGNING)
                    .map_err(key_err(ED25519_SIGNING_SECRET_KEY))?,
            ),
            ed25519_signing_cert: Some(Zeroizing::new(
                encode_ed25519_cert(self.link.id_signing_cert())
                    .map_err(key_err(ED25519_SIGNING_CERT))?,
            )),
            secret_onion_key_ntor: self.ntor.first().map(encode_ntor_secret_key),
            secret_onion_key_ntor_old: self.ntor.get(1).map(encode_ntor_secret_key),
            secret_onion_key: self
                .tap
                .as_ref()
                .map(|k| rsa(k, SECRET_ONION_KEY))
                .transpose()?,
            secret_onion_key_old: self
                .tap_previous
                .as_ref()
                .map(|k| rsa(k, SECRET_ONION_KEY_OLD))
                .transpose()?,
        })
    }

    /// Brings the keys up to date at `now` (C tor's `load_ed_keys` at its periodic check,
    /// `rotate_onion_key_callback` and `check_onion_keys_expiry_time_callback`):
    ///
    /// * a signing certificate expiring within [`SIGNING_KEY_SLOP`] is replaced by a new
    ///   signing key if the master key is online; offline, the relay goes on with it and
    ///   [`Rotation::signing_cert_expires_soon`] is set, and once it has expired this is
    ///   [`KeySetError::SigningCertExpired`];
    /// * the cross-certificate is renewed [`CROSSCERT_RENEW_BEFORE`] its expiry;
    /// * onion keys older than the rotation period are replaced, the current ones kept as
    ///   the previous ones; previous ones older than the grace period (counted from the
    ///   last rotation) are dropped.
    pub fn rotate(
        &mut self,
        now: impl Into<Timestamp>,
        params: &OnionKeyParams,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Rotation, KeySetError> {
        let now = now.into();
        let mut r = Rotation::default();
        let soon = |t: Timestamp, within: u64| t.0 < now.0.saturating_add(within);

        // Signing key.
        if soon(self.signing_cert_expiry, SIGNING_KEY_SLOP) {
            match &self.master {
                Some(master) => {
                    let (k, c) = new_signing_key(rng, master, now)?;
                    self.signing_cert_expiry = cert_expiry(&c);
                    self.link = LinkKeys::from_signing_cert(
                        self.link.rsa_identity().clone(),
                        k,
                        c,
                        now,
                        rng,
                    )
                    .map_err(cert_err(keyfile::ED25519_SIGNING_CERT))?;
                    r.signing_key = true;
                    r.link_certs = true;
                }
                None if self.signing_cert_expiry < now => {
                    return Err(KeySetError::SigningCertExpired {
                        expired_at: self.signing_cert_expiry,
                    })
                }
                None => r.signing_cert_expires_soon = true,
            }
        }
        // Cross-certificate.
        if !r.link_certs && soon(self.link.crosscert_expiry(), CROSSCERT_RENEW_BEFORE) {
            self.link = LinkKeys::from_signing_cert(
                self.link.rsa_identity().clone(),
                self.link.signing_keypair().clone(),
                self.link.id_signing_cert().to_vec(),
                now,
                rng,
            )
            .map_err(cert_err("RSA->Ed25519 cross-certificate"))?;
            r.link_certs = true;
        }
        // Onion keys.
        if self
            .onion_key_set_at
            .0
            .saturating_add(params.rotation_secs())
            <= now.0
        {
            let new = NtorSecretKey::generate(rng);
            self.ntor.truncate(1);
            self.ntor.insert(0, new);
            if self.tap.is_some() {
                let new_tap =
                    RsaKeypair::generate_1024(rng).map_err(key_err(keyfile::SECRET_ONION_KEY))?;
                self.tap_previous = self.tap.replace(new_tap);
            }
            self.onion_key_set_at = now;
            r.onion_keys = true;
        }
        if self.onion_key_set_at.0.saturating_add(params.grace_secs()) <= now.0
            && (self.ntor.len() > 1 || self.tap_previous.is_some())
        {
            self.ntor.truncate(1);
            self.tap_previous = None;
            r.previous_onion_keys_expired = true;
        }
        Ok(r)
    }

    /// When [`RelayKeySet::rotate`] next has something to do under `params`, after a call at
    /// `now`: the earliest of the onion-key rotation, the previous keys' expiry, the signing
    /// key's replacement (offline: the warning, then once `now` has passed it, the expiry)
    /// and the cross-certificate's renewal.
    pub fn next_event(&self, now: impl Into<Timestamp>, params: &OnionKeyParams) -> Timestamp {
        let now = now.into();
        // "Expires within d" is C tor's `expiry < now + d`: first true at `expiry - d + 1`.
        let due = |expiry: u64, within: u64| expiry.saturating_sub(within).saturating_add(1);
        let mut t = self
            .onion_key_set_at
            .0
            .saturating_add(params.rotation_secs());
        if self.ntor.len() > 1 || self.tap_previous.is_some() {
            t = t.min(self.onion_key_set_at.0.saturating_add(params.grace_secs()));
        }
        let signing = self.signing_cert_expiry.0;
        let renew = due(signing, SIGNING_KEY_SLOP);
        t = t.min(if self.master.is_none() && renew <= now.0 {
            due(signing, 0)
        } else {
            renew
        });
        t = t.min(due(self.link.crosscert_expiry().0, CROSSCERT_RENEW_BEFORE));
        Timestamp(t)
    }

    /// The link-authentication keys and certificates (CERTS cells).
    pub fn link_keys(&self) -> &LinkKeys {
        &self.link
    }

    /// The RSA identity key pair (signs descriptors).
    pub fn rsa_identity(&self) -> &RsaKeypair {
        self.link.rsa_identity()
    }

    /// The ed25519 master identity.
    pub fn ed_identity(&self) -> Ed25519Identity {
        self.link.ed_identity()
    }

    /// Whether the master identity's secret key is held (so the signing key can be
    /// renewed without the operator).
    pub fn master_online(&self) -> bool {
        self.master.is_some()
    }

    /// The ed25519 signing key pair.
    pub fn signing_keypair(&self) -> &ExpandedEd25519Keypair {
        self.link.signing_keypair()
    }

    /// The encoded Id->Signing certificate (the descriptor's `identity-ed25519`).
    pub fn signing_cert(&self) -> &[u8] {
        self.link.id_signing_cert()
    }

    /// When the signing certificate expires.
    pub fn signing_cert_expiry(&self) -> Timestamp {
        self.signing_cert_expiry
    }

    /// The current ntor onion key (the one to publish).
    pub fn ntor_key(&self) -> &NtorSecretKey {
        // `ntor` is never empty: every constructor puts the current key first and
        // rotation only truncates to one.
        &self.ntor[0]
    }

    /// The ntor keys that answer CREATE2 cells: the current one, then the previous one
    /// during its grace period (the argument of [`crate::ntor::server`]).
    pub fn ntor_keys(&self) -> &[NtorSecretKey] {
        &self.ntor
    }

    /// The current TAP onion key, if this set has one.
    pub fn tap_key(&self) -> Option<&RsaKeypair> {
        self.tap.as_ref()
    }

    /// When the onion keys were last rotated (to keep, like C tor's `LastRotatedOnionKey`).
    pub fn onion_key_set_at(&self) -> Timestamp {
        self.onion_key_set_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay_keys::{verify_cert_chain, CertChain, CERTS_ED_SIGNING_LINK};
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// When C tor 0.4.9.11 made the `keygen0` fixtures (its signing certificate expires 30
    /// days later, rounded up to the hour).
    const T0: u64 = 1_796_547_440;

    fn keygen0() -> KeyFiles {
        let mut files = KeyFiles::default();
        for name in [
            keyfile::SECRET_ID_KEY,
            keyfile::ED25519_MASTER_ID_SECRET_KEY,
            keyfile::ED25519_MASTER_ID_PUBLIC_KEY,
            keyfile::ED25519_SIGNING_SECRET_KEY,
            keyfile::ED25519_SIGNING_CERT,
            keyfile::SECRET_ONION_KEY_NTOR,
            keyfile::SECRET_ONION_KEY,
        ] {
            let path = alloc::format!("{}/testdata/keygen0/{name}", env!("CARGO_MANIFEST_DIR"));
            assert!(files.set(name, std::fs::read(path).expect("fixture")));
        }
        files
    }

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(14)
    }

    #[test]
    fn loads_c_tor_key_directory_and_writes_it_back_unchanged() {
        let files = keygen0();
        let (set, changes) =
            RelayKeySet::from_files(Timestamp(T0 + 60), &files, Some(Timestamp(T0)), &mut rng())
                .expect("load");
        assert_eq!(changes, Rotation::default());
        assert!(set.master_online());
        assert_eq!(
            set.rsa_identity().public().identity().to_string(),
            "4CDD3D7A3C5F211B999FCBC2AB99229040C8707D"
        );
        assert_eq!(
            set.ed_identity().to_string(),
            "mQM39TC6QVEng5wu8EoGuP2bYae2OBDib7Hr+gVqkMU"
        );
        assert_eq!(set.ntor_keys().len(), 1);
        assert!(set.tap_key().is_some());
        let out = set.to_files().expect("encode");
        let a: Vec<_> = files.entries().collect();
        let b: Vec<_> = out.entries().collect();
        assert_eq!(a, b);
        // The link certificates it makes verify as a peer checks them.
        let certs = set
            .link_keys()
            .responder_certs(&[7; 32], Timestamp(T0 + 60))
            .expect("certs");
        let chain = CertChain {
            rsa_id: certs.get(2).expect("2"),
            id_signing: certs.get(4).expect("4"),
            leaf: certs.get(5).expect("5"),
            crosscert: certs.get(7).expect("7"),
        };
        let v = verify_cert_chain(&chain, CERTS_ED_SIGNING_LINK, Timestamp(T0 + 60)).expect("ok");
        assert_eq!(v.ed, set.ed_identity());
    }

    #[test]
    fn offline_master_key_signing_cert_lifecycle() {
        let mut files = keygen0();
        files.ed25519_master_id_secret_key = None;
        let (mut set, changes) =
            RelayKeySet::from_files(Timestamp(T0), &files, None, &mut rng()).expect("load");
        assert!(!set.master_online());
        assert_eq!(changes, Rotation::default());
        assert!(set
            .to_files()
            .expect("enc")
            .ed25519_master_id_secret_key
            .is_none());
        let expiry = set.signing_cert_expiry().0;
        assert_eq!(expiry, (T0 + SIGNING_KEY_LIFETIME).div_ceil(3600) * 3600);
        // Onion-key rotation (90 days) out of the way.
        let params = OnionKeyParams::new(Some(90), None);
        // The warning is due a day before expiry, then the expiry itself.
        let warn = expiry - SIGNING_KEY_SLOP + 1;
        assert_eq!(set.next_event(Timestamp(T0), &params).0, warn);
        let r = set
            .rotate(Timestamp(warn - 1), &params, &mut rng())
            .expect("still valid");
        assert_eq!(r, Rotation::default());
        let r = set
            .rotate(Timestamp(warn), &params, &mut rng())
            .expect("still valid");
        assert!(r.signing_cert_expires_soon && !r.signing_key);
        assert_eq!(set.next_event(Timestamp(warn), &params).0, expiry + 1);
        let r = set
            .rotate(Timestamp(expiry), &params, &mut rng())
            .expect("valid through its last second");
        assert!(r.signing_cert_expires_soon);
        assert_eq!(
            set.rotate(Timestamp(expiry + 1), &params, &mut rng()).err(),
            Some(KeySetError::SigningCertExpired {
                expired_at: Timestamp(expiry)
            })
        );
        // Loading with an expired certificate and no master key fails the same way; with
        // one that expires within a day it loads and warns.
        assert_eq!(
            RelayKeySet::from_files(Timestamp(expiry + 1), &files, None, &mut rng()).err(),
            Some(KeySetError::SigningCertExpired {
                expired_at: Timestamp(expiry)
            })
        );
        let (_, r) = RelayKeySet::from_files(Timestamp(expiry - 60), &files, None, &mut rng())
            .expect("load");
        assert!(r.signing_cert_expires_soon);
        // Without master secret key, master public key or signing key nothing can sign.
        let mut none = files.clone();
        none.ed25519_signing_cert = None;
        none.ed25519_signing_secret_key = None;
        assert_eq!(
            RelayKeySet::from_files(Timestamp(T0), &none, None, &mut rng()).err(),
            Some(KeySetError::Missing(keyfile::ED25519_MASTER_ID_SECRET_KEY))
        );
    }

    #[test]
    fn signing_key_renewed_a_day_before_expiry_with_master_online() {
        let (mut set, _) =
            RelayKeySet::from_files(Timestamp(T0), &keygen0(), None, &mut rng()).expect("load");
        let old_signing = set.signing_keypair().identity();
        let expiry = set.signing_cert_expiry().0;
        let params = OnionKeyParams::new(Some(90), None);
        let now = expiry - SIGNING_KEY_SLOP + 1;
        assert_eq!(set.next_event(Timestamp(T0), &params).0, now);
        let before = set
            .rotate(Timestamp(now - 1), &params, &mut rng())
            .expect("nothing");
        assert_eq!(before, Rotation::default());
        let r = set
            .rotate(Timestamp(now), &params, &mut rng())
            .expect("renew");
        assert!(r.signing_key && r.link_certs && r.descriptor_changed() && r.files_changed());
        assert_ne!(set.signing_keypair().identity(), old_signing);
        assert_eq!(
            set.signing_cert_expiry().0,
            (now + SIGNING_KEY_LIFETIME).div_ceil(3600) * 3600
        );
        // The new certificate is the master's, and the files load back to the same keys.
        let cert = UncheckedEd25519Cert::decode(set.signing_cert()).expect("cert");
        assert_eq!(cert.signing_key(), Some(&set.ed_identity()));
        let files = set.to_files().expect("enc");
        let (again, r) =
            RelayKeySet::from_files(Timestamp(now), &files, None, &mut rng()).expect("load");
        assert_eq!(r, Rotation::default());
        assert_eq!(
            again.signing_keypair().identity(),
            set.signing_keypair().identity()
        );
    }

    #[test]
    fn onion_keys_rotate_and_previous_expires_on_schedule() {
        let (mut set, _) =
            RelayKeySet::from_files(Timestamp(T0), &keygen0(), Some(Timestamp(T0)), &mut rng())
                .expect("load");
        // Keep the signing key out of the way: a schedule shorter than its 30 days.
        let params = OnionKeyParams::new(Some(3), Some(1));
        let first = set.ntor_key().public().0;
        let tap_first = set.tap_key().expect("tap").public().clone();
        let rotation = T0 + 3 * DAY;
        assert_eq!(set.next_event(Timestamp(T0), &params).0, rotation);
        let r = set
            .rotate(Timestamp(rotation - 1), &params, &mut rng())
            .expect("early");
        assert_eq!(r, Rotation::default());
        let r = set
            .rotate(Timestamp(rotation), &params, &mut rng())
            .expect("rotate");
        assert!(r.onion_keys && !r.previous_onion_keys_expired && r.descriptor_changed());
        assert_eq!(set.ntor_keys().len(), 2);
        assert_ne!(set.ntor_key().public().0, first);
        assert_eq!(set.ntor_keys()[1].public().0, first);
        assert_ne!(set.tap_key().expect("tap").public(), &tap_first);
        assert_eq!(set.onion_key_set_at(), Timestamp(rotation));
        let files = set.to_files().expect("enc");
        assert!(files.secret_onion_key_ntor_old.is_some() && files.secret_onion_key_old.is_some());
        // The previous keys last the grace period after the rotation.
        assert_eq!(set.next_event(Timestamp(T0), &params).0, rotation + DAY);
        let r = set
            .rotate(Timestamp(rotation + DAY - 1), &params, &mut rng())
            .expect("kept");
        assert_eq!(r, Rotation::default());
        let r = set
            .rotate(Timestamp(rotation + DAY), &params, &mut rng())
            .expect("expire");
        assert!(r.previous_onion_keys_expired && !r.descriptor_changed() && r.files_changed());
        assert_eq!(set.ntor_keys().len(), 1);
        let files = set.to_files().expect("enc");
        assert!(files.secret_onion_key_ntor_old.is_none() && files.secret_onion_key_old.is_none());
        assert_eq!(set.next_event(Timestamp(T0), &params).0, rotation + 3 * DAY);
    }

    #[test]
    fn consensus_parameters_are_clamped_as_c_tor_does() {
        let p = OnionKeyParams::default();
        assert_eq!((p.rotation_secs(), p.grace_secs()), (28 * DAY, 7 * DAY));
        assert_eq!(OnionKeyParams::new(None, None), p);
        let p = OnionKeyParams::new(Some(0), Some(100));
        assert_eq!((p.rotation_secs(), p.grace_secs()), (DAY, DAY));
        let p = OnionKeyParams::new(Some(200), Some(-5));
        assert_eq!((p.rotation_secs(), p.grace_secs()), (90 * DAY, DAY));
        let p = OnionKeyParams::new(Some(3), None);
        assert_eq!((p.rotation_secs(), p.grace_secs()), (3 * DAY, 3 * DAY));
    }

    #[test]
    fn inconsistent_or_partial_files_are_refused() {
        let base = keygen0();
        let mut other = KeyFiles::default();
        let mut r = rng();
        let stranger = Ed25519Keypair::generate(&mut r).to_expanded();
        // A master public key that is not the secret key's.
        let mut f = base.clone();
        f.ed25519_master_id_public_key = Some(Zeroizing::new(keyfile::encode_ed25519_public_key(
            &stranger.identity(),
        )));
        assert!(matches!(
            RelayKeySet::from_files(Timestamp(T0), &f, None, &mut rng()),
            Err(KeySetError::Mismatch(_))
        ));
        // A signing certificate made by another master key.
        let (k, c) = new_signing_key(&mut r, &stranger, Timestamp(T0)).expect("cert");
        let mut f = base.clone();
        f.ed25519_signing_secret_key =
            Some(keyfile::encode_ed25519_secret_key(&k, keyfile::TAG_SIGNING).expect("enc"));
        f.ed25519_signing_cert = Some(Zeroizing::new(
            keyfile::encode_ed25519_cert(&c).expect("enc"),
        ));
        assert!(matches!(
            RelayKeySet::from_files(Timestamp(T0), &f, None, &mut rng()),
            Err(KeySetError::Mismatch(_))
        ));
        // A certificate of the master for another signing key.
        let mut f = base.clone();
        f.ed25519_signing_secret_key =
            Some(keyfile::encode_ed25519_secret_key(&stranger, keyfile::TAG_SIGNING).expect("enc"));
        assert!(matches!(
            RelayKeySet::from_files(Timestamp(T0), &f, None, &mut rng()),
            Err(KeySetError::Mismatch(_))
        ));
        // Half of the signing pair.
        let mut f = base.clone();
        f.ed25519_signing_cert = None;
        assert_eq!(
            RelayKeySet::from_files(Timestamp(T0), &f, None, &mut rng()).err(),
            Some(KeySetError::Missing(keyfile::ED25519_SIGNING_CERT))
        );
        // No identity at all; a corrupt one.
        assert_eq!(
            RelayKeySet::from_files(Timestamp(T0), &other, None, &mut rng()).err(),
            Some(KeySetError::Missing(keyfile::SECRET_ID_KEY))
        );
        other.set(keyfile::SECRET_ID_KEY, b"junk".to_vec());
        assert!(matches!(
            RelayKeySet::from_files(Timestamp(T0), &other, None, &mut rng()),
            Err(KeySetError::Key {
                file: keyfile::SECRET_ID_KEY,
                ..
            })
        ));
        assert!(!other.set("torrc", Vec::new()));
    }

    #[test]
    fn identity_alone_gets_new_ed25519_and_ntor_keys() {
        let f = KeyFiles {
            secret_id_key: keygen0().secret_id_key,
            ..KeyFiles::default()
        };
        let (set, r) = RelayKeySet::from_files(Timestamp(T0), &f, Some(Timestamp(1)), &mut rng())
            .expect("load");
        assert!(r.generated && r.descriptor_changed());
        assert!(set.master_online() && set.tap_key().is_none());
        // Fresh onion keys count from now, not from a stale state file.
        assert_eq!(set.onion_key_set_at(), Timestamp(T0));
        let files = set.to_files().expect("enc");
        let (again, r) =
            RelayKeySet::from_files(Timestamp(T0), &files, None, &mut rng()).expect("reload");
        assert_eq!(r, Rotation::default());
        assert_eq!(again.ed_identity(), set.ed_identity());
        assert_eq!(again.ntor_key().public(), set.ntor_key().public());
    }
}
