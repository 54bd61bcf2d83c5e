//! TLS to a Tor relay's ORPort, with Tor's certificate rules (tor-spec §2 "Connections").
//!
//! A relay's TLS certificate is self-signed by a throw-away key and names a random hostname:
//! no certificate authority vouches for it, and none is expected to. The relay's identity is
//! proven inside the channel instead, by the CERTS cell, whose link certificate (ed25519 cert
//! type 5, or the RSA link certificate) commits to the SHA-256 digest of exactly this TLS
//! certificate (tor-spec §4.2). So the verifier of [`client_config`]:
//!
//! - accepts any certificate chain (no CA, no name, no validity check), but
//! - still verifies the TLS handshake signature with the certificate's key, so that whoever
//!   answered really holds that key;
//!
//! and the caller hands the certificate's digest ([`cert_sha256`]) to the channel
//! (`onion_client::Client::handle_connected`), which checks the binding.
//!
//! C tor 0.4.9 negotiates TLS 1.3 with a 2048-bit RSA link key (RSA-PSS signatures), which
//! ring verifies; no separate RSA code is needed. Relays ignore SNI, so any server name will
//! do; the front ends give the relay's IP address or a fixed name.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// Accepts Tor's self-signed link certificates; still checks handshake signatures.
#[derive(Debug)]
struct TorLinkVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for TorLinkVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // tor-spec §2: the certificate proves nothing by itself; the CERTS cell binds its
        // digest to the relay's identity keys, and the channel checks that binding.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The rustls client configuration for relay connections: ring, TLS 1.2 and 1.3, Tor's
/// certificate rules (see the [module documentation](self)), no client certificate.
pub fn client_config() -> Arc<ClientConfig> {
    let provider = rustls::crypto::ring::default_provider();
    let verifier = Arc::new(TorLinkVerifier {
        algorithms: provider.signature_verification_algorithms,
    });
    // The ring provider supports the default versions; should that ever change, the
    // process-wide default provider (ring as well: the only one compiled in) is used.
    let builder = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| ClientConfig::builder());
    Arc::new(
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    )
}

/// SHA-256 of a DER certificate: what the relay's CERTS cell must certify (tor-spec §4.2).
pub fn cert_sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_offers_rsa_pss_for_tor_link_keys() {
        let v = TorLinkVerifier {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        };
        let schemes = v.supported_verify_schemes();
        assert!(schemes.contains(&SignatureScheme::RSA_PSS_SHA256));
        assert!(schemes.contains(&SignatureScheme::RSA_PKCS1_SHA256));
    }

    /// The configuration offers TLS 1.3 (what C tor 0.4.9 picks) and 1.2, and no client
    /// certificate.
    #[test]
    fn config_offers_tls13_and_tls12_without_client_auth() {
        let cfg = client_config();
        let versions: Vec<_> = cfg
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.version().version)
            .collect();
        assert!(versions.contains(&rustls::ProtocolVersion::TLSv1_3));
        assert!(versions.contains(&rustls::ProtocolVersion::TLSv1_2));
        assert!(!cfg.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn digest_is_sha256() {
        assert_eq!(
            hex::encode(cert_sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
