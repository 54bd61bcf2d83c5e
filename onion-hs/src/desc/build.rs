//! Building a descriptor: sign, encrypt and encode (rend-spec-v3 §2.4, §2.5), in C tor's layout.

use rand_core::CryptoRngCore;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};
use zeroize::Zeroize;

use crate::cert::{
    Ed25519Cert, CERT_TYPE_HS_DESC_SIGNING, CERT_TYPE_HS_INTRO_AUTH, CERT_TYPE_HS_NTOR_ENC,
};
use crate::keys::{Credential, ExpandedKeypair, HsBlindedKeypair};
use crate::linkspec::RawLinkSpec;
use crate::ops::{aes256_ctr_xor, sha3_256};

use super::crypt::{self, Layer, COOKIE_LEN, SALT_LEN};
use super::inner::{AuthClient, FirstLayer, IntroPointDesc, SecondLayer};
use super::netdoc::write_object;
use super::{DescError, MAX_INTRO_POINTS, PLAINTEXT_PADDING_MULTIPLE, SIG_PREFIX};

/// Descriptors always carry a multiple of this many `auth-client` lines (rend-spec-v3 §2.5.1.4).
pub const AUTH_CLIENT_MULTIPLE: usize = 16;

/// An introduction point to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildIntroPoint {
    /// The intro relay's link specifiers.
    pub link_specifiers: Vec<RawLinkSpec>,
    /// The intro relay's ntor onion key.
    pub onion_key_ntor: [u8; 32],
    /// `KP_hs_ipt_sid`, the service's authentication key at this intro point.
    pub auth_key: [u8; 32],
    /// `KP_hss_ntor`, the service's x25519 encryption key at this intro point.
    pub enc_key_ntor: [u8; 32],
}

/// Client authorization: the x25519 public keys (`KP_hsc_desc_enc`) of authorized clients.
#[derive(Debug, Clone, Default)]
pub struct ClientAuthConfig {
    /// Authorized clients.
    pub clients: Vec<XPublic>,
}

/// Everything a service needs to produce one descriptor.
pub struct DescriptorBuilder<'a> {
    /// The blinded key pair of the period (`KS_hs_blind_id`).
    pub blinded: &'a HsBlindedKeypair,
    /// The service credential (from the identity public key).
    pub credential: Credential,
    /// The descriptor signing key `KS_hs_desc_sign`.
    pub signing_key: &'a ExpandedKeypair,
    /// Expiry of all certificates, hours since the epoch.
    pub cert_expiry_hours: u32,
    /// `revision-counter`.
    pub revision_counter: u64,
    /// `descriptor-lifetime`, minutes (30..=720; C tor uses 180).
    pub lifetime_minutes: u16,
    /// `create2-formats` (C tor: `[2]`).
    pub create2_formats: Vec<u16>,
    /// `intro-auth-required`.
    pub intro_auth_required: Option<Vec<String>>,
    /// `single-onion-service`.
    pub single_onion_service: bool,
    /// Extra top-level second-layer lines (e.g. `flow-control 1-2 31`).
    pub other_lines: Vec<String>,
    /// Introduction points (at most 20).
    pub intro_points: Vec<BuildIntroPoint>,
    /// Client authorization; `None` publishes to everyone who knows the address.
    pub client_auth: Option<ClientAuthConfig>,
}

fn salt(rng: &mut impl CryptoRngCore) -> [u8; SALT_LEN] {
    // "16 bytes from H(random)": never put raw RNG output on the wire.
    let mut r = [0u8; 32];
    rng.fill_bytes(&mut r);
    let h = sha3_256(&[&r]);
    let mut s = [0u8; SALT_LEN];
    s.copy_from_slice(&h[..SALT_LEN]);
    s
}

fn random<const N: usize>(rng: &mut impl CryptoRngCore) -> [u8; N] {
    let mut b = [0u8; N];
    rng.fill_bytes(&mut b);
    b
}

impl DescriptorBuilder<'_> {
    /// Sign, encrypt and encode the descriptor.
    pub fn build(&self, rng: &mut impl CryptoRngCore) -> Result<String, DescError> {
        if !(30..=720).contains(&self.lifetime_minutes) {
            return Err(DescError::OutOfRange("descriptor-lifetime"));
        }
        if self.intro_points.len() > MAX_INTRO_POINTS {
            return Err(DescError::TooManyIntroPoints(self.intro_points.len()));
        }
        let blinded_pub = self.blinded.public();
        let subcred = blinded_pub.subcredential(&self.credential);
        let rev = self.revision_counter;

        // Second layer.
        let mut ips = Vec::with_capacity(self.intro_points.len());
        for ip in &self.intro_points {
            let enc_ed = crate::ntor::x25519_to_ed25519(&ip.enc_key_ntor)
                .ok_or(DescError::Build("enc-key has no ed25519 form"))?;
            ips.push(IntroPointDesc {
                link_specifiers: ip.link_specifiers.clone(),
                onion_key_ntor: ip.onion_key_ntor,
                auth_key_cert: Ed25519Cert::sign(
                    CERT_TYPE_HS_INTRO_AUTH,
                    self.cert_expiry_hours,
                    ip.auth_key,
                    self.signing_key,
                )
                .map_err(|err| DescError::Cert {
                    field: "auth-key",
                    err,
                })?,
                enc_key_ntor: ip.enc_key_ntor,
                enc_key_cert: Ed25519Cert::sign(
                    CERT_TYPE_HS_NTOR_ENC,
                    self.cert_expiry_hours,
                    enc_ed,
                    self.signing_key,
                )
                .map_err(|err| DescError::Cert {
                    field: "enc-key-cert",
                    err,
                })?,
            });
        }
        let second = SecondLayer {
            create2_formats: self.create2_formats.clone(),
            intro_auth_required: self.intro_auth_required.clone(),
            single_onion_service: self.single_onion_service,
            other_lines: self.other_lines.clone(),
            intro_points: ips,
        }
        .encode()?;

        // Client authorization.
        let mut eph_secret = random::<32>(rng);
        let eph = StaticSecret::from(eph_secret);
        eph_secret.zeroize();
        let mut cookie: Option<[u8; COOKIE_LEN]> = None;
        let mut auth_clients = Vec::new();
        if let Some(ca) = &self.client_auth {
            let c = random::<COOKIE_LEN>(rng);
            for client in &ca.clients {
                let mut seed = eph.diffie_hellman(client).to_bytes();
                let (client_id, mut key) = crypt::client_keys(&subcred, &seed);
                seed.zeroize();
                let iv = random::<16>(rng);
                let mut encrypted_cookie = c;
                aes256_ctr_xor(&key, &iv, &mut encrypted_cookie);
                key.zeroize();
                auth_clients.push(AuthClient {
                    client_id,
                    iv,
                    encrypted_cookie,
                });
            }
            cookie = Some(c);
        }
        let target = auth_clients
            .len()
            .div_ceil(AUTH_CLIENT_MULTIPLE)
            .max(1)
            .saturating_mul(AUTH_CLIENT_MULTIPLE);
        while auth_clients.len() < target {
            auth_clients.push(AuthClient {
                client_id: random(rng),
                iv: random(rng),
                encrypted_cookie: random(rng),
            });
        }
        // Shuffle so that real entries are not first (Fisher–Yates).
        for i in (1..auth_clients.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            auth_clients.swap(i, j);
        }
        let encrypted = crypt::encrypt(
            Layer::Inner,
            second.as_bytes(),
            &blinded_pub,
            cookie.as_ref(),
            &subcred,
            rev,
            &salt(rng),
        );
        if let Some(c) = cookie.as_mut() {
            c.zeroize();
        }
        let first = FirstLayer {
            auth_type: "x25519".to_string(),
            ephemeral_key: XPublic::from(&eph).to_bytes(),
            auth_clients,
            encrypted,
        }
        .encode();
        let mut pt1 = first.into_bytes();
        let padded = pt1
            .len()
            .div_ceil(PLAINTEXT_PADDING_MULTIPLE)
            .max(1)
            .saturating_mul(PLAINTEXT_PADDING_MULTIPLE);
        pt1.resize(padded, 0);
        let superencrypted = crypt::encrypt(
            Layer::Outer,
            &pt1,
            &blinded_pub,
            None,
            &subcred,
            rev,
            &salt(rng),
        );

        // Outer document.
        let cert = Ed25519Cert::sign(
            CERT_TYPE_HS_DESC_SIGNING,
            self.cert_expiry_hours,
            *self.signing_key.public_bytes(),
            self.blinded,
        )
        .map_err(|err| DescError::Cert {
            field: "descriptor-signing-key-cert",
            err,
        })?;
        let mut doc = String::with_capacity(superencrypted.len() * 4 / 3 + 1024);
        doc.push_str("hs-descriptor 3\ndescriptor-lifetime ");
        doc.push_str(&self.lifetime_minutes.to_string());
        doc.push_str("\ndescriptor-signing-key-cert\n");
        write_object(&mut doc, "ED25519 CERT", &cert.encode());
        doc.push_str("\nrevision-counter ");
        doc.push_str(&rev.to_string());
        doc.push_str("\nsuperencrypted\n");
        write_object(&mut doc, "MESSAGE", &superencrypted);
        doc.push('\n');
        let mut msg = Vec::with_capacity(SIG_PREFIX.len() + doc.len());
        msg.extend_from_slice(SIG_PREFIX);
        msg.extend_from_slice(doc.as_bytes());
        let sig = self.signing_key.sign(&msg);
        doc.push_str("signature ");
        doc.push_str(&crate::util::b64_nopad(&sig.to_bytes()));
        doc.push('\n');
        if doc.len() > super::MAX_DESCRIPTOR_LEN {
            return Err(DescError::TooLarge(doc.len()));
        }
        Ok(doc)
    }
}
