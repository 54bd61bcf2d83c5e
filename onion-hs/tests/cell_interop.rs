//! Every message body onion-hs builds decodes with onion-cell and re-encodes to the same bytes
//! (onion-cell is the one codec of rend-spec-v3 §3–§4), and what onion-hs checks on a message
//! onion-cell decoded (MAC, signature) holds over exactly the bytes that were sent.

use onion_cell::{RelayCmd, RelayMsg};
use onion_hs::keys::ExpandedKeypair;
use onion_hs::msg::{DosParams, EstablishIntro, Rendezvous1};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn same(cmd: RelayCmd, body: &[u8]) {
    let m = RelayMsg::decode(cmd, body).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert_eq!(m.cmd(), cmd);
    let mut again = Vec::new();
    m.encode_body(&mut again).unwrap();
    assert_eq!(again, body, "{cmd:?}");
}

/// The body a circuit puts in the cell for `m`.
fn body(m: &RelayMsg<'_>) -> Vec<u8> {
    let mut b = Vec::new();
    m.encode_body(&mut b).unwrap();
    b
}

#[test]
fn bodies_agree_with_onion_cell() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let auth = ExpandedKeypair::generate(&mut rng);
    let dos = DosParams {
        rate_per_sec: Some(25),
        burst_per_sec: Some(200),
    };
    let (_, est) = EstablishIntro::build(&auth, vec![dos.to_extension()], &[7u8; 20]).unwrap();
    let est = body(&RelayMsg::EstablishIntro(est));
    assert_eq!(
        est.len(),
        155,
        "rend-spec §3.1.1.1: 155 bytes with the DoS extension"
    );
    same(RelayCmd::ESTABLISH_INTRO, &est);
    // Decoded by onion-cell, the MAC over KH and the signature check out.
    let RelayMsg::EstablishIntro(cell) = RelayMsg::decode(RelayCmd::ESTABLISH_INTRO, &est).unwrap()
    else {
        panic!("not ESTABLISH_INTRO");
    };
    let checked = EstablishIntro::from_cell(&cell).unwrap();
    checked.verify(&[7u8; 20]).unwrap();
    assert!(checked.verify(&[8u8; 20]).is_err(), "another circuit's KH");
    assert_eq!(checked.dos_params(), Some(Ok(dos)));
    let (_, est) = EstablishIntro::build(&auth, vec![], &[7u8; 20]).unwrap();
    let est = body(&RelayMsg::EstablishIntro(est));
    assert_eq!(est.len(), 134);
    same(RelayCmd::ESTABLISH_INTRO, &est);

    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/hs_ntor.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let intro1 = hex::decode(v["cases"][0]["introduce1_body"].as_str().unwrap()).unwrap();
    same(RelayCmd::INTRODUCE1, &intro1);
    same(RelayCmd::INTRODUCE2, &intro1);

    same(RelayCmd::INTRO_ESTABLISHED, &[0]);
    same(RelayCmd::INTRODUCE_ACK, &[0, 1, 0]);
    same(RelayCmd::ESTABLISH_RENDEZVOUS, &[9u8; 20]);
    let r1 = body(&RelayMsg::Rendezvous1(
        Rendezvous1 {
            rend_cookie: [1; 20],
            handshake_info: [2; 64],
        }
        .to_cell(),
    ));
    same(RelayCmd::RENDEZVOUS1, &r1);
    same(RelayCmd::RENDEZVOUS2, &[2u8; 64]);
}
