//! The test network's directory documents (onion-dir/testdata/tornet: three authorities and
//! eight relays, written by C tor 0.4.9), shared by the unit tests of the descriptor store,
//! the directory cache and the saved directory.

use onion_crypto::{RsaIdentity, Timestamp};

use crate::store::DescriptorStore;

/// The consensus (`ns` flavour).
pub(crate) const NS: &str = include_str!("../../onion-dir/testdata/tornet/cached-consensus");
/// The microdescriptor consensus.
pub(crate) const MD: &str =
    include_str!("../../onion-dir/testdata/tornet/cached-microdesc-consensus");
/// The microdescriptors the microdescriptor consensus lists.
pub(crate) const MICRO: &str =
    include_str!("../../onion-dir/testdata/tornet/cached-microdescs.new");
/// The server descriptors: the eight the consensus lists, and older ones it does not.
pub(crate) const DESCS: &str =
    include_str!("../../onion-dir/testdata/tornet/cached-descriptors.new");
/// The three authorities' key certificates.
pub(crate) const CERTS: [&str; 3] = [
    include_str!("../../onion-dir/testdata/tornet/authority_certificate.auth0"),
    include_str!("../../onion-dir/testdata/tornet/authority_certificate.auth1"),
    include_str!("../../onion-dir/testdata/tornet/authority_certificate.auth2"),
];

/// The network's v3 authorities: the identities of [`CERTS`].
pub(crate) fn v3_authorities() -> Vec<RsaIdentity> {
    CERTS
        .iter()
        .map(|t| {
            onion_dir::authcert::UnverifiedAuthCert::parse(t)
                .expect("cert")
                .peek()
                .fingerprint
        })
        .collect()
}

/// A time at which both consensuses are valid: [`NS`]'s valid-after.
pub(crate) fn valid_time() -> Timestamp {
    onion_dir::consensus::parse(NS)
        .expect("ns")
        .peek()
        .valid_after
}

/// A store of `max` bytes that knows both consensuses and holds no descriptor yet.
pub(crate) fn listing_store(max: usize) -> DescriptorStore {
    let mut s = DescriptorStore::new(max);
    s.set_consensus(onion_dir::consensus::parse(NS).expect("ns").peek());
    s.set_consensus(onion_dir::consensus::parse(MD).expect("md").peek());
    s
}
