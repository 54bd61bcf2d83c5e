//! Known-answer tests against the official vectors copied into `testdata/`.

use alloc::vec::Vec;
use serde_json::Value;

use crate::kdf::{hkdf_sha256, hs_mac, kdf_tor};
use crate::keys::{Ed25519Identity, NtorOnionKey, NtorSecretKey, RsaIdentity};
use crate::tor1::{self, ClientCircuitCrypto, Tor1ClientHop, Tor1RelayCrypto, CELL_BODY_LEN};

fn load(name: &str) -> Value {
    let path = alloc::format!("{}/testdata/{}", env!("CARGO_MANIFEST_DIR"), name);
    let s = std::fs::read_to_string(&path).expect("test vector file");
    serde_json::from_str(&s).expect("json")
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("hex")
}

fn h32(v: &Value) -> [u8; 32] {
    h(v).try_into().expect("32 bytes")
}

fn cases(name: &str) -> Vec<Value> {
    let v = load(name);
    let c = v["cases"].as_array().expect("cases").clone();
    assert!(!c.is_empty(), "{name} has no cases");
    c
}

#[test]
fn kdf_tor_vectors() {
    for c in cases("kdf_tor.json") {
        let len = c["length"].as_u64().unwrap() as usize;
        let mut out = alloc::vec![0u8; len];
        kdf_tor(&h(&c["input"]), &mut out).unwrap();
        assert_eq!(out, h(&c["output"]), "{}", c["id"]);
    }
}

#[test]
fn hkdf_vectors() {
    for file in ["hkdf_sha256_rfc5869.json", "hkdf_sha256_ntor.json"] {
        for c in cases(file) {
            let len = c["length"].as_u64().unwrap() as usize;
            let mut out = alloc::vec![0u8; len];
            hkdf_sha256(&h(&c["salt"]), &h(&c["ikm"]), &h(&c["info"]), &mut out).unwrap();
            assert_eq!(out, h(&c["okm"]), "{}", c["id"]);
        }
    }
}

#[test]
fn hs_mac_vectors() {
    for c in cases("hs_mac.json") {
        assert_eq!(
            hs_mac(&h(&c["key"]), &h(&c["msg"]))[..],
            h(&c["mac"])[..],
            "{}",
            c["id"]
        );
    }
}

#[test]
fn ntor_v1_vectors() {
    for c in cases("ntor_v1.json") {
        let id = RsaIdentity(h(&c["node_id"]).try_into().unwrap());
        let b = NtorSecretKey::from_bytes(&h32(&c["b"]));
        assert_eq!(b.public().as_bytes()[..], h(&c["B"])[..]);
        let (pending, msg) =
            crate::ntor::NtorClient::start_with_secret(h32(&c["x"]), &id, b.public());
        assert_eq!(msg[..], h(&c["client_handshake"])[..], "{}", c["id"]);
        let (reply, skeys) =
            crate::ntor::server_with_secret(h32(&c["y"]), &id, &[b], &msg).unwrap();
        assert_eq!(reply[..], h(&c["server_handshake"])[..], "{}", c["id"]);
        let ckeys = pending.finish(&reply).unwrap();
        let len = c["key_material_len"].as_u64().unwrap() as usize;
        let want = h(&c["key_material"]);
        assert_eq!(&ckeys.expand(len).unwrap()[..], &want[..], "{}", c["id"]);
        assert_eq!(&skeys.expand(len).unwrap()[..], &want[..], "{}", c["id"]);
    }
}

#[test]
fn ntor_v3_vectors() {
    use crate::ntor_v3::{NtorV3Client, NtorV3Server};
    for c in cases("ntor_v3.json") {
        let id = Ed25519Identity(h32(&c["ID"]));
        let b = NtorSecretKey::from_bytes(&h32(&c["b"]));
        assert_eq!(b.public().as_bytes()[..], h(&c["B"])[..]);
        let ver = h(&c["verification"]);
        let cm = h(&c["client_message"]);
        let sm = h(&c["server_message"]);
        let (pending, msg) =
            NtorV3Client::start_with_secret(h32(&c["x"]), &id, b.public(), &cm, &ver);
        assert_eq!(msg, h(&c["client_handshake"]), "{}", c["id"]);
        let (spending, got_cm) = NtorV3Server::receive(&id, &[b], &ver, &msg).unwrap();
        assert_eq!(got_cm, cm);
        let (reply, skeys) = spending.reply_with_secret(h32(&c["y"]), &sm).unwrap();
        assert_eq!(reply, h(&c["server_handshake"]), "{}", c["id"]);
        let (got_sm, ckeys) = pending.finish(&reply).unwrap();
        assert_eq!(got_sm, sm);
        let want = h(&c["keystream_256"]);
        assert_eq!(
            &ckeys.expand(want.len()).unwrap()[..],
            &want[..],
            "{}",
            c["id"]
        );
        assert_eq!(
            &skeys.expand(want.len()).unwrap()[..],
            &want[..],
            "{}",
            c["id"]
        );
    }
}

#[test]
fn create_fast_vectors() {
    for c in cases("create_fast.json") {
        let x: [u8; 20] = h(&c["X"]).try_into().unwrap();
        let y: [u8; 20] = h(&c["Y"]).try_into().unwrap();
        let (reply, skeys) = crate::fast::server_with_y(&y, &x).unwrap();
        assert_eq!(reply[..], h(&c["created_fast_body"])[..]);
        let want = h(&c["key_material_100"]);
        assert_eq!(&skeys.expand(want.len()).unwrap()[..], &want[..]);
        // Client side with the same X.
        let mut rng = FixedRng(x.to_vec());
        let (pending, msg) = crate::fast::FastClient::start(&mut rng);
        assert_eq!(msg, x);
        let ckeys = pending.finish(&reply).unwrap();
        assert_eq!(&ckeys.expand(want.len()).unwrap()[..], &want[..]);
    }
}

/// An "RNG" that replays fixed bytes: only for reproducing vectors whose randomness is given.
struct FixedRng(Vec<u8>);
impl rand_core::RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let n = dest.len();
        dest.copy_from_slice(&self.0[..n]);
        self.0.drain(..n);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl rand_core::CryptoRng for FixedRng {}

#[test]
fn tor1_vectors() {
    let v = load("relay_crypto_tor1.json");
    let inputs = &v["inputs"];
    let mut circ = ClientCircuitCrypto::new();
    let mut relays = Vec::new();
    for k in ["K1", "K2", "K3"] {
        let key = h(&inputs[k]);
        circ.add_hop(Tor1ClientHop::from_key_material(&key[..tor1::TOR1_KEY_LEN]).unwrap());
        relays.push(Tor1RelayCrypto::from_key_material(&key[..tor1::TOR1_KEY_LEN]).unwrap());
    }
    let n = inputs["num_cells"].as_u64().unwrap() as usize;
    let mut stream = alloc::vec![0u8; 498 * n];
    crate::kdf::shake256(&[&h(&inputs["SEED"])], &mut stream);
    let cs = v["cases"].as_array().unwrap().clone();
    let mut checked = 0;
    for i in 0..n {
        let mut cell = [0u8; CELL_BODY_LEN];
        cell[0] = 2;
        cell[4] = 1;
        cell[9..11].copy_from_slice(&498u16.to_be_bytes());
        cell[11..].copy_from_slice(&stream[498 * i..498 * (i + 1)]);
        let plain = cell;
        circ.encrypt_outbound(&mut cell, 2).unwrap();
        for c in &cs {
            if c["cell_index"].as_u64() == Some(i as u64) {
                assert_eq!(cell[..], h(&c["ciphertext_after_3_layers"])[..], "cell {i}");
                let mut with_digest = plain;
                with_digest[5..9].copy_from_slice(&h(&c["plaintext_relay_body_with_digest"])[5..9]);
                assert_eq!(
                    h(&c["plaintext_relay_body_with_digest"])[..],
                    with_digest[..]
                );
                checked += 1;
            }
        }
        // The relays peel the layers; only the third recognises the cell.
        assert!(!relays[0].decrypt_outbound(&mut cell));
        assert!(!relays[1].decrypt_outbound(&mut cell));
        assert!(relays[2].decrypt_outbound(&mut cell));
        assert_eq!(cell[11..], plain[11..]);
        assert_eq!(
            relays[2].last_received_digest(),
            circ.last_sent_digest(2).unwrap()
        );
    }
    assert_eq!(checked, cs.len());
}

#[test]
fn relay0_real_ntor_key() {
    let file = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/relay0.secret_onion_key_ntor"
    ))
    .unwrap();
    let key = NtorSecretKey::from_tor_key_file(&file).unwrap();
    let info = load("relay0.ntor-key.json");
    let from_desc =
        NtorOnionKey::from_base64(info["ntor_onion_key_descriptor_b64"].as_str().unwrap()).unwrap();
    assert_eq!(key.public(), &from_desc);
    let id = RsaIdentity::from_hex(info["fingerprint"].as_str().unwrap()).unwrap();
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(1);
    // A client that only knows the descriptor's key, against a server holding the real
    // secret key plus an unrelated "previous" key.
    let other = NtorSecretKey::generate(&mut rng);
    let (pending, msg) = crate::ntor::NtorClient::start(&mut rng, &id, &from_desc);
    let (reply, skeys) = crate::ntor::server(&mut rng, &id, &[other, key], &msg).unwrap();
    let ckeys = pending.finish(&reply).unwrap();
    assert_eq!(
        &ckeys.expand(72).unwrap()[..],
        &skeys.expand(72).unwrap()[..]
    );
}

mod certs {
    use super::*;
    use crate::cert::{CertType, Timestamp, UncheckedEd25519Cert};
    use crate::rsa::{pem_decode, RsaPublicKey};
    use crate::rsa_crosscert::{verify_onion_key_crosscert, RsaCrosscert};

    /// 2020-09-25T02:13:20Z, the `valid_at_utc` of certs.json.
    const VECTOR_TIME: Timestamp = Timestamp(1_601_000_000);
    /// relay0's descriptor `published` time, 2026-11-23 07:15:41 UTC.
    const RELAY0_PUBLISHED: Timestamp = Timestamp(1_795_418_141);

    #[test]
    fn certs_json() {
        let mut seen = 0;
        for c in cases("certs.json") {
            let t = VECTOR_TIME;
            match c["kind"].as_str().unwrap() {
                "ed25519_cert" => {
                    let p = &c["parsed"];
                    let cert = UncheckedEd25519Cert::decode(&h(&c["cert"])).unwrap();
                    assert_eq!(
                        u64::from(cert.cert_type().0),
                        p["cert_type"].as_u64().unwrap()
                    );
                    assert_eq!(
                        u64::from(cert.expiration_hours()),
                        p["expiration_hours_since_epoch"].as_u64().unwrap()
                    );
                    assert_eq!(cert.certified_key()[..], h(&p["certified_key"])[..]);
                    assert_eq!(cert.signed_part(), &h(&p["signed_part"])[..]);
                    assert_eq!(
                        cert.signing_key().unwrap().as_bytes()[..],
                        h(&c["signing_key_ed25519_identity"])[..]
                    );
                    let ok = cert.clone().verify(None, t).unwrap();
                    assert_eq!(ok.cert_type(), CertType::IDENTITY_V_SIGNING);
                    // Expired one second after the expiry hour.
                    let late = Timestamp(cert.expiry().0 + 1);
                    assert!(matches!(
                        cert.clone().verify(None, late),
                        Err(crate::CertError::Expired { .. })
                    ));
                    // Any flipped bit breaks it.
                    let mut bad = h(&c["cert"]);
                    let n = bad.len();
                    bad[n - 70] ^= 1;
                    assert!(UncheckedEd25519Cert::decode(&bad)
                        .and_then(|c| c.verify(None, t))
                        .is_err());
                    seen += 1;
                }
                "rsa_crosscert" => {
                    let key =
                        RsaPublicKey::from_pkcs1_der(&h(&c["rsa_identity_public_key_pkcs1_der"]))
                            .unwrap();
                    key.check_relay_key().unwrap();
                    let cc = RsaCrosscert::decode(&h(&c["cert"])).unwrap();
                    let p = &c["parsed"];
                    assert_eq!(cc.ed25519_key().as_bytes()[..], h(&p["ed25519_key"])[..]);
                    assert_eq!(cc.signed_digest()[..], h(&p["signed_digest"])[..]);
                    cc.verify(&key, t).unwrap();
                    let late = Timestamp(u64::from(cc.expiration_hours()) * 3600 + 1);
                    assert!(cc.verify(&key, late).is_err());
                    seen += 1;
                }
                k => panic!("unknown kind {k}"),
            }
        }
        assert_eq!(seen, 2);
    }

    fn desc() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/relay0.server-descriptor"
        ))
        .unwrap()
    }

    /// The PEM-like block that follows the line starting with `keyword`.
    fn block(desc: &str, keyword: &str, label: &str) -> Vec<u8> {
        let start = desc.find(&alloc::format!("\n{keyword}")).unwrap() + 1;
        let rest = &desc[start..];
        let b = rest.find("-----BEGIN").unwrap();
        let end_marker = alloc::format!("-----END {label}-----");
        let e = rest.find(&end_marker).unwrap() + end_marker.len();
        pem_decode(&rest[b..e], label).unwrap()
    }

    fn line_arg(desc: &str, keyword: &str) -> String {
        let l = desc
            .lines()
            .find(|l| l.starts_with(&alloc::format!("{keyword} ")))
            .unwrap();
        l[keyword.len() + 1..].to_string()
    }

    #[test]
    fn relay0_signing_cert_and_crosscerts() {
        let d = desc();
        let master = Ed25519Identity::from_base64(&line_arg(&d, "master-key-ed25519")).unwrap();
        let master_file = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/relay0.ed25519_master_id_public_key"
        ))
        .unwrap();
        assert_eq!(&master_file[32..], master.as_bytes());

        // The signing certificate file, and the same cert in the descriptor.
        let file = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/relay0.ed25519_signing_cert"
        ))
        .unwrap();
        let cert = UncheckedEd25519Cert::from_tor_cert_file(&file).unwrap();
        assert_eq!(cert.signing_key(), Some(&master));
        let from_desc =
            UncheckedEd25519Cert::decode(&block(&d, "identity-ed25519", "ED25519 CERT")).unwrap();
        assert_eq!(cert, from_desc);
        let cert = cert
            .expect_type(CertType::IDENTITY_V_SIGNING)
            .unwrap()
            .verify(Some(&master.to_public_key().unwrap()), RELAY0_PUBLISHED)
            .unwrap();
        let signing_key = cert.certified_public_key().unwrap();

        // router-sig-ed25519: signature by the signing key over
        // SHA256("Tor router descriptor signature v1" | descriptor up to the signature).
        let sig_line = "router-sig-ed25519 ";
        let at = d.find(sig_line).unwrap() + sig_line.len();
        let mut h = sha2::Sha256::new();
        sha2::Digest::update(&mut h, b"Tor router descriptor signature v1");
        sha2::Digest::update(&mut h, &d.as_bytes()[..at]);
        let digest = sha2::Digest::finalize(h);
        let sig_b64 = line_arg(&d, "router-sig-ed25519");
        let sig = base64::Engine::decode(&crate::keys::B64_LENIENT, sig_b64.as_bytes()).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
        ed25519_dalek::Verifier::verify(&signing_key, &digest, &sig).unwrap();

        // ntor-onion-key-crosscert (type 0A, signed by the converted ntor key).
        let ntor = NtorOnionKey::from_base64(&line_arg(&d, "ntor-onion-key")).unwrap();
        let bit: u8 = line_arg(&d, "ntor-onion-key-crosscert").parse().unwrap();
        let cc = block(&d, "ntor-onion-key-crosscert", "ED25519 CERT");
        crate::cert::verify_ntor_onion_key_crosscert(&cc, &ntor, bit, &master, RELAY0_PUBLISHED)
            .unwrap();
        assert!(crate::cert::verify_ntor_onion_key_crosscert(
            &cc,
            &ntor,
            bit ^ 1,
            &master,
            RELAY0_PUBLISHED
        )
        .is_err());

        // The relay's real secret ntor key converts to the same ed25519 key and sign bit.
        let file = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/relay0.secret_onion_key_ntor"
        ))
        .unwrap();
        let sk = NtorSecretKey::from_tor_key_file(&file).unwrap();
        let (edkp, sign) = sk.to_ed25519();
        assert_eq!(sign, bit);
        assert_eq!(
            crate::keys::ed25519_from_curve25519_public(&ntor, bit).unwrap(),
            crate::keys::Ed25519Signer::public_key(&edkp)
        );

        // onion-key-crosscert: RSA onion key signs SHA1(identity key) | master key.
        let identity =
            RsaPublicKey::from_pkcs1_der(&block(&d, "signing-key", "RSA PUBLIC KEY")).unwrap();
        identity.check_relay_key().unwrap();
        let fpr = line_arg(&d, "fingerprint").replace(' ', "");
        assert_eq!(identity.identity(), RsaIdentity::from_hex(&fpr).unwrap());
        let onion =
            RsaPublicKey::from_pkcs1_der(&block(&d, "onion-key", "RSA PUBLIC KEY")).unwrap();
        let occ = block(&d, "onion-key-crosscert", "CROSSCERT");
        verify_onion_key_crosscert(&onion, &occ, &identity.identity(), &master).unwrap();
        assert!(
            verify_onion_key_crosscert(&identity, &occ, &identity.identity(), &master).is_err()
        );

        // router-signature: identity key, unprefixed PKCS#1 over SHA1 of the descriptor up
        // to and including "router-signature\n".
        let marker = "router-signature\n";
        let at = d.find(marker).unwrap() + marker.len();
        let digest = <sha1::Sha1 as sha1::Digest>::digest(&d.as_bytes()[..at]);
        let sig = block(&d, "router-signature", "SIGNATURE");
        identity.verify_unprefixed(&digest, &sig).unwrap();
    }

    use sha2::Digest as _;
}

#[test]
fn ed25519_ref_vectors() {
    use crate::keys::{
        ed25519_from_curve25519_public, Ed25519Keypair, Ed25519Signer, ExpandedEd25519Keypair,
    };
    for c in cases("ed25519_ref.json") {
        let kp = Ed25519Keypair::from_seed(&h32(&c["secret_key_seed"]));
        let exp = kp.to_expanded();
        assert_eq!(
            exp.to_expanded_bytes()[..],
            h(&c["expanded_secret_key"])[..],
            "{}",
            c["id"]
        );
        assert_eq!(kp.public_key().as_bytes()[..], h(&c["public_key"])[..]);
        assert_eq!(exp.public_key(), kp.public_key());
        // The expanded key's scalar as a curve25519 secret gives the listed curve25519 key,
        // which converts back to the ed25519 key with the listed sign bit.
        let mut a = [0u8; 32];
        a.copy_from_slice(&h(&c["expanded_secret_key"])[..32]);
        let curve = NtorSecretKey::from_bytes(&a);
        assert_eq!(
            curve.public().as_bytes()[..],
            h(&c["curve25519_public_key"])[..]
        );
        let bit = c["curve25519_to_ed25519_sign_bit"].as_u64().unwrap() as u8;
        assert_eq!(
            ed25519_from_curve25519_public(curve.public(), bit).unwrap(),
            kp.public_key()
        );
        assert_eq!(
            crate::keys::curve25519_from_ed25519_public(&kp.public_key()),
            *curve.public()
        );
        // Deterministic signatures: seed form and expanded form agree with the vector.
        let msg = kp.public_key().to_bytes();
        assert_eq!(kp.sign(&msg).to_bytes()[..], h(&c["self_signature"])[..]);
        assert_eq!(exp.sign(&msg).to_bytes()[..], h(&c["self_signature"])[..]);
        // A blinded expanded key (scalar not clamped) yields the blinded public key.
        let blinded: [u8; 64] = h(&c["blinded_expanded_secret_key"]).try_into().unwrap();
        let bk = ExpandedEd25519Keypair::from_expanded_bytes(&blinded);
        assert_eq!(
            bk.public_key().as_bytes()[..],
            h(&c["blinded_public_key"])[..]
        );
        let sig = bk.sign(b"blinded");
        ed25519_dalek::Verifier::verify(&bk.public_key(), b"blinded", &sig).unwrap();
    }
}

/// A self-signed RSA-1024 certificate made by OpenSSL (through python `cryptography`,
/// sha256WithRSAEncryption, CN=www.abcdefgh.com, valid 2026-01-01..2027-01-01): an
/// independent encoder for our X.509 decoder and signature check.
#[test]
fn x509_from_openssl() {
    use crate::cert::Timestamp;
    use crate::x509::{check_identity_cert, RsaX509Cert, X509SigAlg};
    let der = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/x509_openssl_rsa1024_selfsigned.der"
    ))
    .unwrap();
    let c = RsaX509Cert::decode(&der).unwrap();
    assert_eq!(c.sig_alg(), X509SigAlg::Sha256WithRsa);
    assert!(c.is_self_issued());
    assert_eq!(c.not_before(), Timestamp(1_767_225_600));
    assert_eq!(c.not_after(), Timestamp(1_798_761_600));
    c.verify_signature(c.subject_key()).unwrap();
    let (key, id) = check_identity_cert(&der, Timestamp(1_795_418_141)).unwrap();
    assert_eq!(key.identity(), id);
    assert_eq!(key.bits(), 1024);
    let mut bad = der.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert!(RsaX509Cert::decode(&bad)
        .unwrap()
        .verify_signature(c.subject_key())
        .is_err());
}
