//! onion-crypto hot paths, each next to its physical floor measured in the same run:
//!
//! * tor1 relay-cell crypto on a 509-byte body: one middle-relay layer (floor: one
//!   AES-128-CTR pass), client 3-hop encryption and 3-hop decryption with recognition
//!   (floor: three AES-128-CTR passes + one SHA-1 update over 509 bytes and a digest read);
//! * handshakes: ntor and ntor-v3 (client + server) and CREATE_FAST (floor: the x25519
//!   work, 2 key generations + 4 Diffie-Hellman operations);
//! * link authentication: one RSA-1024 signature verification, prefixed (X.509, SHA-256
//!   DigestInfo) and unprefixed (cross-certificate form), parsing an RSA-1024 public key
//!   from PKCS#1 DER, and the whole CERTS-cell chain check of a responder
//!   (`relay_keys::verify_cert_chain`) on keys generated before the timing.
//!
//! Ratios are printed at the end of the run as `RATIO name = x`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use aes::Aes128;
use cipher::{KeyIvInit, StreamCipher};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use onion_crypto::keys::{Ed25519Identity, NtorSecretKey, RsaIdentity};
use onion_crypto::tor1::{
    ClientCircuitCrypto, Tor1ClientHop, Tor1RelayCrypto, CELL_BODY_LEN, TOR1_KEY_LEN,
};
use onion_crypto::{fast, ntor, ntor_v3};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha1::{Digest, Sha1};
use x25519_dalek::{PublicKey, StaticSecret};

type Aes128Ctr = ctr::Ctr128BE<Aes128>;

fn keys(rng: &mut ChaCha20Rng) -> [u8; TOR1_KEY_LEN] {
    let mut k = [0u8; TOR1_KEY_LEN];
    rng.fill_bytes(&mut k);
    k
}

fn tor1(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut g = c.benchmark_group("tor1");
    g.throughput(Throughput::Bytes(CELL_BODY_LEN as u64));

    // Floors: the same crates, same sizes, stream continuing across cells.
    let mut cell = [0u8; CELL_BODY_LEN];
    rng.fill_bytes(&mut cell);
    let mut aes = Aes128Ctr::new(&[1u8; 16].into(), &[0u8; 16].into());
    g.bench_function("floor_aes128ctr_509B", |b| {
        b.iter(|| aes.apply_keystream(black_box(&mut cell)))
    });
    let mut sha = Sha1::new();
    sha.update([2u8; 20]);
    g.bench_function("floor_sha1_509B_update_and_read", |b| {
        b.iter(|| {
            sha.update(black_box(&cell[..]));
            black_box(sha.clone().finalize());
        })
    });
    let mut aes3 = [
        Aes128Ctr::new(&[1u8; 16].into(), &[0u8; 16].into()),
        Aes128Ctr::new(&[2u8; 16].into(), &[0u8; 16].into()),
        Aes128Ctr::new(&[3u8; 16].into(), &[0u8; 16].into()),
    ];
    g.bench_function("floor_3aes_plus_sha1_509B", |b| {
        b.iter(|| {
            sha.update(black_box(&cell[..]));
            black_box(sha.clone().finalize());
            for a in aes3.iter_mut() {
                a.apply_keystream(black_box(&mut cell));
            }
        })
    });

    // A middle relay's layer on a cell that is not for it.
    let mut relay = Tor1RelayCrypto::from_key_material(&keys(&mut rng)).unwrap();
    g.bench_function("relay_one_layer_not_for_us", |b| {
        b.iter(|| black_box(relay.decrypt_outbound(black_box(&mut cell))))
    });

    // Client: 3-hop encryption of one cell to the exit.
    let mut circ = ClientCircuitCrypto::new();
    let ks: Vec<_> = (0..3).map(|_| keys(&mut rng)).collect();
    for k in &ks {
        circ.add_hop(Tor1ClientHop::from_key_material(k).unwrap());
    }
    g.bench_function("client_3hop_encrypt", |b| {
        b.iter(|| {
            cell[1] = 0;
            cell[2] = 0;
            circ.encrypt_outbound(black_box(&mut cell), 2).unwrap()
        })
    });

    // Client: 3-hop decryption with recognition at the exit. Cells are produced in
    // untimed batches by the three relays, then decrypted in order.
    g.bench_function("client_3hop_decrypt_recognize", |b| {
        b.iter_custom(|iters| {
            let mut circ = ClientCircuitCrypto::new();
            let mut relays = Vec::new();
            for k in &ks {
                circ.add_hop(Tor1ClientHop::from_key_material(k).unwrap());
                relays.push(Tor1RelayCrypto::from_key_material(k).unwrap());
            }
            let mut total = Duration::ZERO;
            let mut left = iters;
            let mut batch = vec![[0u8; CELL_BODY_LEN]; 1024];
            while left > 0 {
                let n = left.min(batch.len() as u64) as usize;
                for c in batch[..n].iter_mut() {
                    c.fill(0x5a);
                    c[0] = 2;
                    c[1] = 0;
                    c[2] = 0;
                    relays[2].originate_inbound(c);
                    relays[1].encrypt_inbound(c);
                    relays[0].encrypt_inbound(c);
                }
                let t = Instant::now();
                for c in batch[..n].iter_mut() {
                    let hop = circ.decrypt_inbound(black_box(c)).unwrap();
                    black_box(hop);
                }
                total += t.elapsed();
                left -= n as u64;
            }
            total
        })
    });
    g.finish();
}

fn handshakes(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut g = c.benchmark_group("handshake");
    let key = NtorSecretKey::generate(&mut rng);
    let keys = [key.clone()];

    // Floor: what every curve25519 handshake here must do (2 keygens + 4 DH).
    let b_secret = StaticSecret::from(*key.to_bytes());
    let b_pub = PublicKey::from(&b_secret);
    g.bench_function("floor_x25519_2keygen_4dh", |b| {
        b.iter(|| {
            let mut s = [0u8; 32];
            rng.fill_bytes(&mut s);
            let x = StaticSecret::from(s);
            let xp = PublicKey::from(&x);
            rng.fill_bytes(&mut s);
            let y = StaticSecret::from(s);
            let yp = PublicKey::from(&y);
            black_box(y.diffie_hellman(&xp));
            black_box(b_secret.diffie_hellman(&xp));
            black_box(x.diffie_hellman(&yp));
            black_box(x.diffie_hellman(&b_pub));
        })
    });
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    let x = StaticSecret::from(s);
    g.bench_function("floor_x25519_one_dh", |b| {
        b.iter(|| black_box(x.diffie_hellman(&b_pub)))
    });
    g.bench_function("floor_x25519_one_keygen", |b| {
        b.iter(|| black_box(PublicKey::from(&StaticSecret::from(black_box(s)))))
    });

    let rid = RsaIdentity([7; 20]);
    g.bench_function("ntor_client_and_server", |b| {
        b.iter(|| {
            let (p, m) = ntor::NtorClient::start(&mut rng, &rid, key.public());
            let (r, sk) = ntor::server(&mut rng, &rid, &keys, &m).unwrap();
            let ck = p.finish(&r).unwrap();
            black_box((ck, sk));
        })
    });
    let eid = Ed25519Identity([7; 32]);
    g.bench_function("ntor_v3_client_and_server", |b| {
        b.iter(|| {
            let (p, m) = ntor_v3::NtorV3Client::start(
                &mut rng,
                &eid,
                key.public(),
                &[1, 1, 0],
                b"circuit extend",
            );
            let (sp, cm) =
                ntor_v3::NtorV3Server::receive(&eid, &keys, b"circuit extend", &m).unwrap();
            let (r, sk) = sp.reply(&mut rng, &[1, 2, 1, 31]).unwrap();
            let (sm, ck) = p.finish(&r).unwrap();
            black_box((cm, sm, ck, sk));
        })
    });
    g.bench_function("create_fast_client_and_server", |b| {
        b.iter(|| {
            let (p, m) = fast::FastClient::start(&mut rng);
            let (r, sk) = fast::server(&mut rng, &m).unwrap();
            let ck = p.finish(&r).unwrap();
            black_box((ck, sk));
        })
    });
    g.finish();
}

/// Interleaved A/B timing: `rounds` rounds, each timing `n` iterations of the floor and then
/// `n` of the target back to back, so that load from other processes hits both alike.
/// Prints the median of the per-round ratios and the ratio of the fastest rounds.
fn ratio(name: &str, rounds: usize, n: u32, mut floor: impl FnMut(), mut target: impl FnMut()) {
    let mut ratios = Vec::with_capacity(rounds);
    let (mut best_f, mut best_t) = (f64::MAX, f64::MAX);
    for _ in 0..rounds {
        let t0 = Instant::now();
        for _ in 0..n {
            floor();
        }
        let f = t0.elapsed().as_secs_f64() / f64::from(n);
        let t0 = Instant::now();
        for _ in 0..n {
            target();
        }
        let t = t0.elapsed().as_secs_f64() / f64::from(n);
        ratios.push(t / f);
        best_f = best_f.min(f);
        best_t = best_t.min(t);
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    let per_cell_mbs = |secs: f64| CELL_BODY_LEN as f64 / secs / 1e6;
    println!(
        "RATIO {name}: median {:.3}, best/best {:.3} (floor best {:.0} ns = {:.0} MB/s, target best {:.0} ns = {:.0} MB/s)",
        ratios[rounds / 2],
        best_t / best_f,
        best_f * 1e9,
        per_cell_mbs(best_f),
        best_t * 1e9,
        per_cell_mbs(best_t),
    );
}

fn ratios(_c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut cell = [0u8; CELL_BODY_LEN];
    rng.fill_bytes(&mut cell);
    let ks: Vec<_> = (0..3).map(|_| keys(&mut rng)).collect();

    // Middle relay layer vs one AES-128-CTR pass.
    let mut aes = Aes128Ctr::new(&[1u8; 16].into(), &[0u8; 16].into());
    let mut relay = Tor1RelayCrypto::from_key_material(&ks[0]).unwrap();
    let mut c2 = cell;
    let cellp = std::cell::RefCell::new(cell);
    ratio(
        "relay_one_layer / aes128ctr_509B",
        41,
        20_000,
        || aes.apply_keystream(black_box(&mut *cellp.borrow_mut())),
        || {
            black_box(relay.decrypt_outbound(black_box(&mut c2)));
        },
    );

    // Client 3-hop encryption vs 3 AES + SHA-1 update and read.
    let mut aes3 = [
        Aes128Ctr::new(&[1u8; 16].into(), &[0u8; 16].into()),
        Aes128Ctr::new(&[2u8; 16].into(), &[0u8; 16].into()),
        Aes128Ctr::new(&[3u8; 16].into(), &[0u8; 16].into()),
    ];
    let mut sha = Sha1::new();
    sha.update([2u8; 20]);
    let mut circ = ClientCircuitCrypto::new();
    for k in &ks {
        circ.add_hop(Tor1ClientHop::from_key_material(k).unwrap());
    }
    let mut c3 = cell;
    let mut floor3 = || {
        let mut c = cellp.borrow_mut();
        sha.update(black_box(&c[..]));
        black_box(sha.clone().finalize());
        for a in aes3.iter_mut() {
            a.apply_keystream(black_box(&mut *c));
        }
    };
    ratio(
        "client_3hop_encrypt / (3 aes + sha1)",
        41,
        5_000,
        &mut floor3,
        || {
            c3[1] = 0;
            c3[2] = 0;
            circ.encrypt_outbound(black_box(&mut c3), 2).unwrap();
        },
    );

    // Client 3-hop decryption with recognition at hop 3 vs the same floor. Cells are
    // prepared in advance (untimed) by the relays.
    let mut dcirc = ClientCircuitCrypto::new();
    let mut relays = Vec::new();
    for k in &ks {
        dcirc.add_hop(Tor1ClientHop::from_key_material(k).unwrap());
        relays.push(Tor1RelayCrypto::from_key_material(k).unwrap());
    }
    let rounds = 41;
    let n = 2_000u32;
    let mut prepared = Vec::with_capacity(rounds * n as usize);
    for _ in 0..rounds * n as usize {
        let mut c = [0x5au8; CELL_BODY_LEN];
        c[0] = 2;
        c[1] = 0;
        c[2] = 0;
        relays[2].originate_inbound(&mut c);
        relays[1].encrypt_inbound(&mut c);
        relays[0].encrypt_inbound(&mut c);
        prepared.push(c);
    }
    let mut it = prepared.iter_mut();
    ratio(
        "client_3hop_decrypt_recognize / (3 aes + sha1)",
        rounds,
        n,
        &mut floor3,
        || {
            if let Some(c) = it.next() {
                assert_eq!(dcirc.decrypt_inbound(black_box(c)), Ok(2));
            }
        },
    );

    // Handshakes vs their x25519 work (2 key generations + 4 DH).
    let key = NtorSecretKey::generate(&mut rng);
    let keys = [key.clone()];
    let b_secret = StaticSecret::from(*key.to_bytes());
    let b_pub = PublicKey::from(&b_secret);
    let rng = std::cell::RefCell::new(rng);
    let floor_x = || {
        let mut r = rng.borrow_mut();
        let mut s = [0u8; 32];
        r.fill_bytes(&mut s);
        let x = StaticSecret::from(s);
        let xp = PublicKey::from(&x);
        r.fill_bytes(&mut s);
        let y = StaticSecret::from(s);
        let yp = PublicKey::from(&y);
        black_box(y.diffie_hellman(&xp));
        black_box(b_secret.diffie_hellman(&xp));
        black_box(x.diffie_hellman(&yp));
        black_box(x.diffie_hellman(&b_pub));
    };
    // Our X25519 (Edwards lift + AVX2 variable-base multiplication) vs x25519-dalek's
    // Montgomery ladder: why the handshakes can come in under their floor.
    let kb = [0x42u8; 32];
    let ub = *b_pub.as_bytes();
    ratio(
        "onion_crypto::keys::x25519 / x25519_dalek ladder",
        101,
        4,
        || {
            black_box(x25519_dalek::x25519(black_box(kb), ub));
        },
        || {
            black_box(onion_crypto::keys::x25519(black_box(&kb), &ub));
        },
    );
    let rid = RsaIdentity([7; 20]);
    ratio(
        "ntor_client_and_server / x25519 work",
        301,
        2,
        floor_x,
        || {
            let mut r = rng.borrow_mut();
            let (p, m) = ntor::NtorClient::start(&mut *r, &rid, key.public());
            let (rep, sk) = ntor::server(&mut *r, &rid, &keys, &m).unwrap();
            black_box((p.finish(&rep).unwrap(), sk));
        },
    );
    let eid = Ed25519Identity([7; 32]);
    ratio(
        "ntor_v3_client_and_server / x25519 work",
        301,
        2,
        floor_x,
        || {
            let mut r = rng.borrow_mut();
            let (p, m) = ntor_v3::NtorV3Client::start(
                &mut *r,
                &eid,
                key.public(),
                &[1, 1, 0],
                b"circuit extend",
            );
            let (sp, cm) =
                ntor_v3::NtorV3Server::receive(&eid, &keys, b"circuit extend", &m).unwrap();
            let (rep, sk) = sp.reply(&mut *r, &[1, 2, 1, 31]).unwrap();
            black_box((cm, p.finish(&rep).unwrap(), sk));
        },
    );
}

fn link_auth(c: &mut Criterion) {
    use onion_crypto::cert::Timestamp;
    use onion_crypto::relay_keys::{verify_cert_chain, CertChain, LinkKeys};
    use onion_crypto::rsa::RsaPublicKey;
    use sha2::Sha256;

    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let now = Timestamp(1_795_418_141);
    let keys = LinkKeys::generate(now, &mut rng).unwrap();
    let rsa = keys.rsa_identity();
    let public = rsa.public().clone();
    let digest256: [u8; 32] = Sha256::digest(b"signed data").into();
    let digest1: [u8; 20] = Sha1::digest(b"signed data").into();
    let sig_prefixed = rsa.sign_prefixed::<Sha256>(&mut rng, &digest256).unwrap();
    let sig_unprefixed = rsa.sign_unprefixed(&mut rng, &digest1).unwrap();
    let der = public.to_pkcs1_der();
    let certs = keys.responder_certs(&[9; 32], now).unwrap();
    let [(_, rsa_id), (_, id_signing), (_, leaf), (_, crosscert)] = certs.entries();
    let chain = CertChain {
        rsa_id,
        id_signing,
        leaf,
        crosscert,
    };
    let later = Timestamp(now.0 + 60);

    let mut g = c.benchmark_group("link_auth");
    g.bench_function("rsa1024_verify_prefixed_sha256", |b| {
        b.iter(|| {
            public
                .verify_prefixed::<Sha256>(black_box(&digest256), black_box(&sig_prefixed))
                .unwrap()
        })
    });
    g.bench_function("rsa1024_verify_unprefixed_sha1", |b| {
        b.iter(|| {
            public
                .verify_unprefixed(black_box(&digest1), black_box(&sig_unprefixed))
                .unwrap()
        })
    });
    g.bench_function("rsa1024_public_key_from_der", |b| {
        b.iter(|| black_box(RsaPublicKey::from_pkcs1_der(black_box(&der)).unwrap()))
    });
    g.bench_function("verify_cert_chain_responder", |b| {
        b.iter(|| black_box(verify_cert_chain(black_box(&chain), 5, later).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, tor1, handshakes, link_auth, ratios);
criterion_main!(benches);
