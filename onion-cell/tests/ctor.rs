//! Cells sent by a real C tor 0.4.9 relay (see `testdata/README.md`): the responder side
//! of the in-protocol link handshake. They must decode as tor-spec §4 describes, and
//! re-encode to exactly the bytes C tor sent.

use onion_cell::chancell::ChanMsg;
use onion_cell::codec::{encode_cell, CellDecoder, CellFormat};
use std::net::{IpAddr, Ipv4Addr};

fn capture() -> Vec<u8> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/ctor-responder-handshake.hex"
    ))
    .expect("test data present");
    hex::decode(text.trim()).expect("hex")
}

#[test]
fn ctor_responder_handshake_cells() {
    let wire = capture();
    for chunk_len in [1, 7, 512, 4096] {
        let mut dec = CellDecoder::new(CellFormat::UNNEGOTIATED);
        let mut cells = Vec::new();
        let mut reencoded = Vec::new();
        for chunk in wire.chunks(chunk_len) {
            dec.push(chunk);
            while let Some(cell) = dec.next_cell().expect("well-formed") {
                let cell = cell.into_owned();
                encode_cell(dec.format(), &cell, &mut reencoded).expect("encodes");
                if let ChanMsg::Versions(v) = &cell.msg {
                    // Both sides offered 3..=5: link protocol 5.
                    let v = v.best_shared(&[3, 4, 5]).expect("shared version");
                    dec.set_format(CellFormat::for_version(v).expect("valid"));
                }
                cells.push(cell);
            }
        }
        assert_eq!(dec.buffered(), 0);
        assert_eq!(reencoded, wire, "re-encoding reproduces C tor's bytes");
        let cmds: Vec<_> = cells.iter().map(|c| c.msg.cmd().name().unwrap()).collect();
        assert_eq!(cmds, ["VERSIONS", "CERTS", "AUTH_CHALLENGE", "NETINFO"]);
        assert!(cells.iter().all(|c| c.circ_id.is_zero()));
        let ChanMsg::Certs(certs) = &cells[1].msg else {
            panic!("CERTS")
        };
        let types: Vec<(u8, usize)> = certs
            .certs
            .iter()
            .map(|c| (c.cert_type, c.body.len()))
            .collect();
        assert_eq!(types, [(1, 578), (2, 455), (4, 140), (5, 104), (7, 165)]);
        // Types 1 and 2 are DER X.509 (SEQUENCE); 4 and 5 are cert-spec version 1.
        assert_eq!(certs.find(2).unwrap()[0], 0x30);
        assert_eq!(certs.find(4).unwrap()[0], 0x01);
        let ChanMsg::AuthChallenge(ac) = &cells[2].msg else {
            panic!("AUTH_CHALLENGE")
        };
        assert_eq!(ac.methods, [3]);
        let ChanMsg::Netinfo(n) = &cells[3].msg else {
            panic!("NETINFO")
        };
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(n.other_addr.ip(), Some(lo));
        assert_eq!(
            n.my_addrs.iter().map(|a| a.ip()).collect::<Vec<_>>(),
            [Some(lo)]
        );
        assert!(n.timestamp > 1_700_000_000);
    }
}
