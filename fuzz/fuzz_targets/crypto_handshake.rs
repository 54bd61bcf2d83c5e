//! Fuzz the peer-facing inputs of onion-crypto's handshakes and relay-cell crypto: server
//! sides of ntor, ntor-v3 and CREATE_FAST on arbitrary onion skins, client sides on
//! arbitrary replies, and a relay's tor1 layer on arbitrary cell bodies. Randomness comes
//! from a seeded ChaCha so that runs are reproducible.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_crypto::keys::{Ed25519Identity, NtorSecretKey, RsaIdentity};
use onion_crypto::tor1::{Tor1RelayCrypto, CELL_BODY_LEN, TOR1_KEY_LEN};
use onion_crypto::{fast, ntor, ntor_v3};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(sel));
    let key = NtorSecretKey::from_bytes(&[7u8; 32]);
    let rid = RsaIdentity([1; 20]);
    let eid = Ed25519Identity([1; 32]);
    match sel % 4 {
        0 => {
            let _ = ntor::server(&mut rng, &rid, std::slice::from_ref(&key), rest);
            let (p, _) = ntor::NtorClient::start(&mut rng, &rid, key.public());
            let _ = p.finish(rest);
        }
        1 => {
            if let Ok((sp, _cm)) =
                ntor_v3::NtorV3Server::receive(&eid, std::slice::from_ref(&key), b"v", rest)
            {
                let _ = sp.reply(&mut rng, rest);
            }
            let (p, _) = ntor_v3::NtorV3Client::start(&mut rng, &eid, key.public(), rest, b"v");
            let _ = p.finish(rest);
        }
        2 => {
            let _ = fast::server(&mut rng, rest);
            let (p, _) = fast::FastClient::start(&mut rng);
            let _ = p.finish(rest);
        }
        _ => {
            let mut relay = Tor1RelayCrypto::from_key_material(&[3u8; TOR1_KEY_LEN]).unwrap();
            for chunk in rest.chunks(CELL_BODY_LEN) {
                let mut cell = [0u8; CELL_BODY_LEN];
                cell[..chunk.len()].copy_from_slice(chunk);
                let _ = relay.decrypt_outbound(&mut cell);
                relay.originate_inbound(&mut cell);
                relay.encrypt_inbound(&mut cell);
            }
        }
    }
});
