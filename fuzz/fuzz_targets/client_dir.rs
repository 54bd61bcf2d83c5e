//! Fuzz the onion-client directory machine: arbitrary responses, failures, stray request
//! ids and waits, with the private test network's real documents available to splice in
//! (so that inputs reach the certificate and descriptor steps). The machine must not
//! panic, and its queues must stay within their bounds.
//!
//! Input: a sequence of records `op len bytes[len]`; `op % 6` picks the step.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use onion_circuit::Instant;
use onion_client::dir::{
    Authority, Cached, DirConfig, DirMachine, DirMode, Failure, Request, RequestId, MAX_EVENTS,
};
use onion_dir::{RsaIdentity, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const CONSENSUS: &str = include_str!("../../onion-dir/testdata/tornet/cached-microdesc-consensus");
const CERTS: &str = include_str!("../../onion-dir/testdata/tornet/cached-certs");
const MICRODESCS: &str = include_str!("../../onion-dir/testdata/tornet/cached-microdescs.new");
/// The test network's authorities: (v3 identity, relay identity).
const AUTHS: [(&str, &str); 3] = [
    (
        "329F4451BAA808E78DF40D2F286080779AD22095",
        "A07048407BC479AA3FDD636ABF78594D2378FAF6",
    ),
    (
        "2332F32FF2867FDC5BB4865EC0C8B5BBA6C570E6",
        "3E95D3B4C2A798D03C13808585DBD79A253B69FE",
    ),
    (
        "782671BC1D5C5E8D3AC5E9E615327F5DA5D2C6EE",
        "7BDEF435B2FDE59E98EA25C6E2D7D5AEB797CB35",
    ),
];

fn id(h: &str) -> RsaIdentity {
    let mut b = [0u8; 20];
    for (i, out) in b.iter_mut().enumerate() {
        *out = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    RsaIdentity(b)
}

fuzz_target!(|data: &[u8]| {
    let auths = AUTHS
        .iter()
        .enumerate()
        .map(|(i, (v3, rsa))| Authority {
            name: format!("auth{i}"),
            rsa_id: id(rsa),
            v3ident: id(v3),
            or_addr: Some(format!("127.0.0.1:{}", 5000 + i).parse().unwrap()),
        })
        .collect();
    let cfg = DirConfig::new(auths, vec![], DirMode::Micro);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut now = Instant::ZERO;
    let mut wall = Timestamp(1_795_418_410);
    let Ok(mut m) = DirMachine::new(cfg, Cached::default(), now, wall, &mut rng) else {
        return;
    };
    let mut queue: Vec<Request> = Vec::new();
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, after) = tail.split_at(n);
        rest = after;
        while let Some(r) = m.poll_request() {
            queue.push(r);
        }
        match op % 6 {
            0 => {
                now = now + Duration::from_secs(u64::from(*len));
                wall = Timestamp(wall.0 + u64::from(*len));
                m.handle_timeout(now, wall, &mut rng);
            }
            1 => m.handle_response(
                RequestId(u64::from(*len)),
                now,
                wall,
                Ok(bytes.to_vec()),
                &mut rng,
            ),
            op => {
                if queue.is_empty() {
                    continue;
                }
                let r = queue.remove(0);
                let answer = match op {
                    2 => Ok(bytes.to_vec()),
                    3 => {
                        let doc = [CONSENSUS, CERTS, MICRODESCS][usize::from(*len) % 3];
                        let mut b = doc.as_bytes().to_vec();
                        // Overwrite a few bytes of the document with the input.
                        for (i, x) in bytes.iter().enumerate() {
                            let at = (usize::from(*x) * 31 + i * 997) % b.len().max(1);
                            if let Some(y) = b.get_mut(at) {
                                *y = *x;
                            }
                        }
                        Ok(b)
                    }
                    4 => Ok([CONSENSUS, CERTS, MICRODESCS][usize::from(*len) % 3]
                        .as_bytes()
                        .to_vec()),
                    _ => Err(match len % 4 {
                        0 => Failure::Timeout,
                        1 => Failure::TooLarge,
                        2 => Failure::Http {
                            status: 404,
                            reason: String::from_utf8_lossy(bytes).into(),
                        },
                        _ => Failure::Network(String::from_utf8_lossy(bytes).into()),
                    }),
                };
                m.handle_response(r.id, now, wall, answer, &mut rng);
            }
        }
        let mut events = 0;
        while m.poll_event().is_some() {
            events += 1;
        }
        assert!(events <= MAX_EVENTS);
    }
});
