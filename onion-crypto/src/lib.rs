//! Tor cryptography: ntor, ntor-v3, CREATE_FAST, tor1 relay-cell crypto and certificates
//! (tor-spec, cert-spec, proposal 332).
//!
//! Part of onion, a sans-IO Tor stack: nothing here opens a socket, reads a clock or draws
//! from a global random number generator. Time and randomness are parameters
//! (`&mut impl rand_core::CryptoRngCore`). Secrets are zeroized on drop and MACs, digests
//! and keys are compared in constant time. `#![no_std]` with `alloc` when the `std` feature
//! is off.
//!
//! # Spec map
//!
//! | spec section | module |
//! |---|---|
//! | tor-spec 5.2.1 KDF-TOR, 5.2.2 KDF-RFC5869 (HKDF-SHA256); rend-spec-v3 "CRYPTOGRAPHY" (SHA3-256, SHAKE-256, MAC) | [`kdf`] |
//! | tor-spec 5.1.4 "The ntor handshake" (CREATE2 type 2) | [`ntor`] |
//! | proposal 332 / tor-spec 5.1.4.x "ntor-v3" (CREATE2 type 3) | [`ntor_v3`] |
//! | tor-spec 5.1.5 "CREATE_FAST/CREATED_FAST" | [`fast`] |
//! | tor-spec 5.5 "Routing relay cells", 6.1 (tor1: AES-128-CTR + running SHA-1); rend-spec-v3 virtual hop | [`tor1`] |
//! | tor-spec 0.3 keys and identities | [`keys`] |
//! | cert-spec 2 ed25519 certificates (types 4, 5, 6, 8, 9, 0A, 0B, extensions, expiry); dir-spec ntor-onion-key-crosscert | [`cert`] |
//! | cert-spec 2.3 RSA→ed25519 cross-cert (CERTS type 7); dir-spec onion-key-crosscert | [`rsa_crosscert`] |
//! | tor-spec 4.2 CERTS: RSA-1024 X.509 identity and link certificates | [`x509`] |
//! | tor-spec 4.2 CERTS (types 2, 4, 5, 6, 7): relay link keys, creation of a responder's and an authenticating initiator's certificates, the certificate-chain check (C tor's `or_handshake_certs_ed25519_ok`) | [`relay_keys`] |
//! | C tor's key files (`secret_id_key`, `ed25519_*`, `secret_onion_key_ntor`) as bytes | [`keyfile`] |
//! | a relay's whole key set: identities, signing key and certificate, ntor and TAP onion keys, their rotation (C tor's schedule and consensus parameters) | [`relay_keyset`] |
//! | tor-spec 0.3 RSA identity, PKCS#1 v1.5 signatures (prefixed and Tor's unprefixed form) | [`rsa`] |
//! | wall-clock time (seconds since the Unix epoch) and its dir-spec text form | [`time`] |
//! | errors of all of the above | [`error`] |
//!
//! # Example: an ntor handshake and one relay cell
//!
//! ```
//! use onion_crypto::{ntor, tor1, keys::{NtorSecretKey, RsaIdentity}};
//! use rand_core::SeedableRng;
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
//!
//! // The relay's identity and onion key (from its descriptor, on the client side).
//! let relay_id = RsaIdentity([0x42; 20]);
//! let onion_key = NtorSecretKey::generate(&mut rng);
//!
//! let (pending, create2_body) = ntor::NtorClient::start(&mut rng, &relay_id, onion_key.public());
//! let (created2_body, relay_keys) =
//!     ntor::server(&mut rng, &relay_id, &[onion_key.clone()], &create2_body).unwrap();
//! let client_keys = pending.finish(&created2_body).unwrap();
//!
//! let mut circ = tor1::ClientCircuitCrypto::new();
//! circ.add_hop(tor1::Tor1ClientHop::from_key_material(&client_keys.expand(tor1::TOR1_KEY_LEN).unwrap()).unwrap());
//! let mut relay = tor1::Tor1RelayCrypto::from_key_material(&relay_keys.expand(tor1::TOR1_KEY_LEN).unwrap()).unwrap();
//!
//! let mut cell = [0u8; tor1::CELL_BODY_LEN];
//! cell[0] = 2; // RELAY_DATA, recognized = 0
//! circ.encrypt_outbound(&mut cell, 0).unwrap();
//! assert!(relay.decrypt_outbound(&mut cell));
//! assert_eq!(cell[0], 2);
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
extern crate alloc;

pub mod cert;
pub mod error;
pub mod fast;
pub mod kdf;
pub mod keyfile;
pub mod keys;
pub mod ntor;
pub mod ntor_v3;
pub mod relay_keys;
pub mod relay_keyset;
pub mod rsa;
pub mod rsa_crosscert;
pub mod time;
pub mod tor1;
pub mod x509;

pub use error::{CertError, Error, ErrorKind, HandshakeError, KdfError, KeyError, Tor1Error};
pub use kdf::{KeyGenerator, SecretBytes};
pub use keys::{Ed25519Identity, RsaIdentity};
pub use time::{Instant, Timestamp};

#[cfg(test)]
extern crate std;
#[cfg(test)]
mod kat;
