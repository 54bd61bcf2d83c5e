//! Onion-service hot paths (onion-hs): address parse/format, key blinding (against one
//! variable-base scalar multiplication of the same curve crate as the yardstick), descriptor
//! build+encrypt and decrypt+parse, and both halves of hs-ntor.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use onion_hs::desc::{self, BuildIntroPoint, DescriptorBuilder};
use onion_hs::keys::{ExpandedKeypair, Subcredential};
use onion_hs::linkspec::RawLinkSpec;
use onion_hs::ntor::{self, HsNtorClient};
use onion_hs::time::TimePeriod;
use onion_hs::OnionAddress;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

const NOW: u64 = 1_795_418_409;

/// onion-hs's private checksum Keccak (lane-complemented, macro-expanded rounds), compiled in
/// so it can be timed against the `sha3` crate without making it public.
#[allow(dead_code)]
#[path = "../../onion-hs/src/keccak.rs"]
mod hs_keccak;

fn address(c: &mut Criterion) {
    let s = "skn4u3felenupawmdh43qijues5x5gc3jwgutk7miqfyptywyp6dm2ad.onion";
    c.bench_function("hs/address_parse", |b| {
        b.iter(|| OnionAddress::parse(black_box(s)).unwrap())
    });
    // Yardstick: the one SHA3-256 (one Keccak-f[1600] permutation) that any checksum check costs.
    let input = [7u8; 48];
    c.bench_function("hs/baseline_sha3_256_48B", |b| {
        b.iter(|| onion_hs::ops::sha3_256(&[black_box(&input)]))
    });
    // The checksum as onion-hs computes it: the same SHA3-256 of 48 bytes, first lane only, on
    // its own lane-complemented Keccak-f[1600] (first round folded with the zero lanes, last
    // round for lane 0 only).
    let lanes = [7u64; 6];
    c.bench_function("hs/checksum_sha3_256_48B_onion_hs", |b| {
        b.iter(|| hs_keccak::sha3_256_48_lane0(black_box(&lanes)))
    });
    let a = OnionAddress::parse(s).unwrap();
    c.bench_function("hs/address_format", |b| {
        b.iter(|| {
            let mut out = [0u8; 56];
            black_box(&a).encode_into(&mut out);
            out
        })
    });
    c.bench_function("hs/address_to_string", |b| {
        b.iter(|| black_box(&a).to_string())
    });
}

fn blinding(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let kp = ExpandedKeypair::generate(&mut rng);
    let id = kp.id_key();
    let period = TimePeriod::new(20_000, 1440, 720);
    // Yardstick: one constant-time variable-base scalar multiplication (curve25519-dalek).
    let point = CompressedEdwardsY(*id.as_bytes()).decompress().unwrap();
    let mut sb = [0u8; 32];
    rng.fill_bytes(&mut sb);
    let scalar = Scalar::from_bytes_mod_order(sb);
    c.bench_function("hs/baseline_ed25519_varbase_mul", |b| {
        b.iter(|| black_box(scalar) * black_box(point))
    });
    c.bench_function("hs/blind_public", |b| {
        b.iter(|| black_box(&id).blind(period))
    });
    c.bench_function("hs/blind_secret", |b| {
        b.iter(|| black_box(&kp).blind(period))
    });
    let addr = id.address();
    c.bench_function("hs/address_to_blinded_key", |b| {
        b.iter(|| black_box(&addr).identity_key().unwrap().blind(period))
    });
}

fn build_desc(rng: &mut ChaCha20Rng) -> (ExpandedKeypair, TimePeriod, String) {
    let id = ExpandedKeypair::generate(rng);
    let period = TimePeriod::new(3_740_454, 8, 4);
    let blinded = id.blind(period);
    let signing = ExpandedKeypair::generate(rng);
    let text = builder(&id, &blinded, &signing, rng).build(rng).unwrap();
    (id, period, text)
}

fn builder<'a>(
    id: &ExpandedKeypair,
    blinded: &'a onion_hs::HsBlindedKeypair,
    signing: &'a ExpandedKeypair,
    rng: &mut ChaCha20Rng,
) -> DescriptorBuilder<'a> {
    let ips = (0..3)
        .map(|i| {
            let mut k = [0u8; 32];
            rng.fill_bytes(&mut k);
            BuildIntroPoint {
                link_specifiers: vec![
                    RawLinkSpec::ipv4(std::net::SocketAddrV4::new([127, 0, 0, 1].into(), 9000 + i)),
                    RawLinkSpec::rsa_id(onion_crypto::RsaIdentity([i as u8; 20])),
                    RawLinkSpec::ed25519_id(k),
                ],
                onion_key_ntor: k,
                auth_key: *ExpandedKeypair::generate(rng).public_bytes(),
                enc_key_ntor: XPublic::from(&StaticSecret::random_from_rng(&mut *rng)).to_bytes(),
            }
        })
        .collect();
    DescriptorBuilder {
        blinded,
        credential: id.id_key().credential(),
        signing_key: signing,
        cert_expiry_hours: (NOW / 3600) as u32 + 100,
        revision_counter: 1,
        lifetime_minutes: 180,
        create2_formats: vec![2],
        intro_auth_required: None,
        single_onion_service: false,
        other_lines: vec![],
        intro_points: ips,
        client_auth: None,
    }
}

fn descriptors(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let id = ExpandedKeypair::generate(&mut rng);
    let period = TimePeriod::new(3_740_454, 8, 4);
    let blinded = id.blind(period);
    let signing = ExpandedKeypair::generate(&mut rng);
    let b = builder(&id, &blinded, &signing, &mut rng);
    c.bench_function("hs/desc_build_encrypt_3ip", |bch| {
        bch.iter(|| b.build(&mut rng).unwrap())
    });
    let (id, period, text) = build_desc(&mut rng);
    let idk = id.id_key();
    c.bench_function("hs/desc_decrypt_parse_3ip", |bch| {
        bch.iter(|| {
            desc::decode(
                black_box(&text),
                &idk,
                Some(period),
                None,
                onion_dir::Timestamp::from_unix(NOW),
            )
            .unwrap()
        })
    });
}

fn hs_ntor(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let b = StaticSecret::random_from_rng(&mut rng);
    let b_pub = XPublic::from(&b).to_bytes();
    let auth = [5u8; 32];
    let subcred = Subcredential([6; 32]);
    let (client, _) = HsNtorClient::new(&mut rng, &auth, &b_pub, &subcred).unwrap();
    let x = *client.public_key();
    let (info, _) = ntor::service_finish(&mut rng, &b, &auth, &x).unwrap();
    c.bench_function("hs/ntor_client_start", |bch| {
        bch.iter(|| HsNtorClient::new(&mut rng, &auth, &b_pub, &subcred).unwrap())
    });
    c.bench_function("hs/ntor_client_finish", |bch| {
        bch.iter(|| client.finish(black_box(&info)).unwrap())
    });
    c.bench_function("hs/ntor_service", |bch| {
        bch.iter(|| {
            let k = ntor::service_intro_keys(&b, &auth, black_box(&x), &subcred).unwrap();
            let r = ntor::service_finish(&mut rng, &b, &auth, &x).unwrap();
            (k, r)
        })
    });
}

criterion_group!(benches, address, blinding, descriptors, hs_ntor);
criterion_main!(benches);
