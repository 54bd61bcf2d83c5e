//! Equal-work comparison of onion with Arti 0.47's public crates, in one process.
//!
//! Each row does the same work from the same input bytes in both implementations, and the
//! set-up checks that both produce the same result (same bytes, same stream id, same relay
//! count, same key) before anything is timed. Where the two differ in allocations, a row
//! says so, and where it can, has a third contender: onion made to allocate as Arti does.
//!
//! Two passes over the same closures:
//! * criterion, one group per row (absolute times, one contender after another);
//! * an interleaved pass (`arti_compare::interleave`): the contenders of a row alternate in
//!   chunks, and each round's ratio Arti/onion is recorded. It prints `ROW` lines; on a busy
//!   machine the ratios are the figures to trust.
//!
//! `ARTI_COMPARE=ratios` runs only the interleaved pass, `ARTI_COMPARE=criterion` only
//! criterion. A filter argument (`cargo bench -- tor1`) selects rows in both passes.
//! `ARTI_COMPARE_ROUNDS` sets the interleaved pass's rounds (default 101).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::borrow::Cow;
use std::hint::black_box;
use std::io::Read;
use std::str::FromStr;
use std::time::{Duration, Instant};

use arti_compare::{interleave, report, Contender, Row};
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use onion_cell::chancell::{ChanCell, ChanMsg, Create2, HandshakeType};
use onion_cell::codec::{decode_cell, encode_cell_into, CellDecoder, CellFormat};
use onion_cell::relay::{RelayCell, StreamId};
use onion_cell::relaymsg::{Data, RelayMsg};
use onion_cell::CircId;

use tor_cell::chancell::codec::ChannelCodec;
use tor_cell::chancell::msg::{self as amsg, AnyChanMsg};
use tor_cell::chancell::{ChanCell as AChanCell, ChanCmd as AChanCmd, CircId as ACircId};
use tor_cell::relaycell::msg::{AnyRelayMsg, Data as AData};
use tor_cell::relaycell::{
    AnyRelayMsgOuter, RelayCellDecoder, RelayCellFormat, StreamId as AStreamId,
};
use tor_checkable::Timebound;
use tor_proto::bench_utils::{
    tor1 as ator1, CryptInit, InboundClientCrypt, OutboundClientCrypt, OutboundRelayLayer as _,
    RelayCellBody as ARelayCellBody, RelayLayer,
};

/// The same full DATA payload (498 bytes) in every relay-cell row.
const PAYLOAD: [u8; 498] = {
    let mut p = [0u8; 498];
    let mut i = 0;
    while i < p.len() {
        p[i] = (i * 7 + 3) as u8;
        i += 1;
    }
    p
};
const STREAM: u16 = 3;
const CIRC: u32 = 0x8000_0001;
/// An ntor onion skin's length; the CREATE2 rows carry this much handshake data.
const NTOR_ONIONSKIN_LEN: usize = 84;

fn fixture(name: &str) -> String {
    let p = format!(
        "{}/../../onion-dir/testdata/real/{name}.gz",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let mut s = String::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_string(&mut s)
        .expect("gzip");
    s
}

/// The 514-byte wire form (link protocol 5) of a RELAY cell carrying a full DATA message,
/// built by onion and checked against Arti's encoding of the same message.
fn relay_wire() -> [u8; 514] {
    let format = CellFormat::for_version(5).expect("v5");
    let body = RelayCell::new(
        StreamId::new(STREAM),
        RelayMsg::Data(Data::new(&PAYLOAD).expect("fits")),
    )
    .encode(&mut ChaCha20Rng::seed_from_u64(1))
    .expect("encodes");
    let cell = ChanCell::new(CircId::new(CIRC), ChanMsg::Relay(body.0.into()));
    let mut wire = [0u8; 514];
    encode_cell_into(format, &cell, &mut wire).expect("encodes");
    // Arti encodes the same message to the same bytes (a full DATA message has no padding).
    let a = AnyRelayMsgOuter::new(
        AStreamId::new(STREAM),
        AnyRelayMsg::Data(AData::new(&PAYLOAD).expect("fits")),
    )
    .encode(RelayCellFormat::V0, &mut rand::rng())
    .expect("encodes");
    assert_eq!(&a[..], &wire[5..], "onion and Arti encode DATA differently");
    wire
}

/// Row: from wire bytes arriving on a channel to an owned DATA relay message (stream id and
/// data), as a client does after relay crypto (not included here). Both copy the bytes into
/// their channel buffer, copy the 509-byte body into a heap box, and copy the data into a
/// vector. The middle contender is what onion's circuit does instead of the last copy.
fn row_relay_decode_owned(wire: [u8; 514]) -> Row {
    let format = CellFormat::for_version(5).expect("v5");
    let onion = move |n: u64| {
        let mut dec = CellDecoder::new(format);
        for _ in 0..n {
            dec.push(black_box(&wire));
            let cell = dec.next_cell().expect("decodes").expect("complete");
            let ChanMsg::Relay(p) = cell.msg else {
                panic!("not RELAY")
            };
            let body = p.into_box();
            let rc = RelayCell::decode(&body).expect("relay decodes");
            let msg = rc.msg.into_owned();
            black_box((rc.stream_id, msg));
        }
    };
    // onion-circuit's own path for DATA (`Circuit::handle_relay`): the header is read from
    // the boxed body, and the data stays in that box, handed over as `Bytes` (no second
    // copy, no second allocation for a full cell).
    let onion_circuit = move |n: u64| {
        let mut dec = CellDecoder::new(format);
        for _ in 0..n {
            dec.push(black_box(&wire));
            let cell = dec.next_cell().expect("decodes").expect("complete");
            let ChanMsg::Relay(p) = cell.msg else {
                panic!("not RELAY")
            };
            let body = p.into_box();
            assert_eq!(body[0], onion_cell::relaymsg::RelayCmd::DATA.0);
            let stream = u16::from_be_bytes([body[3], body[4]]);
            let len = usize::from(u16::from_be_bytes([body[9], body[10]]));
            assert!(len <= PAYLOAD.len());
            let boxed: Box<[u8]> = body;
            let mut v = boxed.into_vec();
            v.truncate(11 + len);
            let mut b = bytes::Bytes::from(v);
            bytes::Buf::advance(&mut b, 11);
            black_box((stream, b));
        }
    };
    let arti = move |n: u64| {
        let mut codec = ChannelCodec::new(5);
        let mut buf = BytesMut::new();
        let mut decoder = RelayCellDecoder::new(RelayCellFormat::V0);
        for _ in 0..n {
            buf.extend_from_slice(black_box(&wire));
            let (cell, raw) = codec
                .decode_cell::<AnyChanMsg>(&mut buf)
                .expect("decodes")
                .expect("complete");
            let AnyChanMsg::Relay(r) = cell.into_circid_and_msg().1 else {
                panic!("not RELAY")
            };
            drop(raw);
            let res = decoder.decode(r.into_relay_body()).expect("relay decodes");
            let (mut msgs, _) = res.into_parts();
            let m = msgs
                .next()
                .expect("one message")
                .decode::<AnyRelayMsg>()
                .expect("parses");
            black_box(m);
        }
    };
    // Both see the same message.
    {
        let mut dec = CellDecoder::new(format);
        dec.push(&wire);
        let cell = dec.next_cell().unwrap().unwrap();
        let ChanMsg::Relay(p) = cell.msg else {
            panic!()
        };
        let body = p.into_box();
        let rc = RelayCell::decode(&body).unwrap();
        let RelayMsg::Data(d) = rc.msg.into_owned() else {
            panic!()
        };
        assert_eq!(
            (StreamId::to_field(rc.stream_id), &d.data[..]),
            (STREAM, &PAYLOAD[..])
        );

        let mut buf = BytesMut::from(&wire[..]);
        let (cell, _) = ChannelCodec::new(5)
            .decode_cell::<AnyChanMsg>(&mut buf)
            .unwrap()
            .unwrap();
        let AnyChanMsg::Relay(r) = cell.into_circid_and_msg().1 else {
            panic!()
        };
        let m =
            AnyRelayMsgOuter::decode_singleton(RelayCellFormat::V0, r.into_relay_body()).unwrap();
        assert_eq!(AStreamId::get_or_zero(m.stream_id()), STREAM);
        let AnyRelayMsg::Data(d) = m.into_msg() else {
            panic!()
        };
        assert_eq!(d.as_ref(), &PAYLOAD[..]);
    }
    Row {
        name: "relay_decode_owned",
        contenders: vec![
            Contender::new("onion", onion),
            Contender::new("onion, circuit's DATA path", onion_circuit),
            Contender::new("arti", arti),
        ],
    }
}

/// Row: onion's zero-copy decode of the same cell from a byte slice: channel framing and
/// relay header, the DATA bytes borrowed from the input; no copy, no allocation. Arti has no
/// borrowing decode (its RELAY message always owns a boxed copy of the body).
fn row_relay_decode_zero_copy(wire: [u8; 514]) -> Row {
    let format = CellFormat::for_version(5).expect("v5");
    let onion = move |n: u64| {
        for _ in 0..n {
            let (cell, _) = decode_cell(format, black_box(&wire)).expect("decodes");
            let ChanMsg::Relay(p) = &cell.msg else {
                panic!("not RELAY")
            };
            let rc = RelayCell::decode(p.as_bytes()).expect("relay decodes");
            black_box(rc);
        }
    };
    Row {
        name: "relay_decode_zero_copy",
        contenders: vec![Contender::new("onion", onion)],
    }
}

/// Row: a full DATA message (498 bytes from a slice, stream 3) encoded into a new relay cell
/// body. Arti's API takes the data as an owned vector and returns a new boxed body;
/// onion's returns the body by value (no heap). The middle contender is onion with Arti's two
/// allocations (owned data vector, boxed body).
fn row_data_encode_fresh() -> Row {
    // `relay_wire` checks that onion's and Arti's encodings agree; onion's owned-data path
    // must give the same body.
    let wire = relay_wire();
    let mut check = Box::new([0u8; 509]);
    let owned = RelayMsg::Data(Data {
        data: Cow::Owned(PAYLOAD.to_vec()),
    });
    RelayCell::new(StreamId::new(STREAM), owned)
        .encode_into(&mut check, &mut ChaCha20Rng::seed_from_u64(0))
        .expect("encodes");
    assert_eq!(&check[..], &wire[5..]);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let onion = move |n: u64| {
        for _ in 0..n {
            let msg = RelayMsg::Data(Data::new(black_box(&PAYLOAD)).expect("fits"));
            let body = RelayCell::new(StreamId::new(STREAM), msg)
                .encode(&mut rng)
                .expect("encodes");
            black_box(&body);
        }
    };
    let mut rng2 = ChaCha20Rng::seed_from_u64(3);
    let onion_alloc = move |n: u64| {
        for _ in 0..n {
            let msg = RelayMsg::Data(Data {
                data: Cow::Owned(black_box(&PAYLOAD).to_vec()),
            });
            let mut out = Box::new([0u8; 509]);
            RelayCell::new(StreamId::new(STREAM), msg)
                .encode_into(&mut out, &mut rng2)
                .expect("encodes");
            black_box(out);
        }
    };
    let mut arng = rand::rng();
    let arti = move |n: u64| {
        for _ in 0..n {
            let msg = AnyRelayMsg::Data(AData::new(black_box(&PAYLOAD)).expect("fits"));
            let body = AnyRelayMsgOuter::new(AStreamId::new(STREAM), msg)
                .encode(RelayCellFormat::V0, &mut arng)
                .expect("encodes");
            black_box(body);
        }
    };
    Row {
        name: "data_encode_fresh",
        contenders: vec![
            Contender::new("onion", onion),
            Contender::new("onion, Arti's allocations", onion_alloc),
            Contender::new("arti", arti),
        ],
    }
}

/// Row: onion encoding the same message into a reused buffer. Arti's API has no such path
/// (`RelayMsgOuter::encode` always returns a new boxed body).
fn row_data_encode_reused() -> Row {
    let wire = relay_wire();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut out = [0u8; 509];
    let msg = RelayMsg::Data(Data::new(&PAYLOAD).expect("fits"));
    RelayCell::new(StreamId::new(STREAM), msg)
        .encode_into(&mut out, &mut rng)
        .expect("encodes");
    assert_eq!(&out[..], &wire[5..]);
    let onion = move |n: u64| {
        for _ in 0..n {
            let msg = RelayMsg::Data(Data::new(black_box(&PAYLOAD)).expect("fits"));
            RelayCell::new(StreamId::new(STREAM), msg)
                .encode_into(&mut out, &mut rng)
                .expect("encodes");
            black_box(&out);
        }
    };
    Row {
        name: "data_encode_reused",
        contenders: vec![Contender::new("onion", onion)],
    }
}

fn create2_wire(hdata: &[u8; NTOR_ONIONSKIN_LEN]) -> [u8; 514] {
    let format = CellFormat::for_version(5).expect("v5");
    let cell = ChanCell::new(
        CircId::new(CIRC),
        ChanMsg::Create2(Create2 {
            handshake_type: HandshakeType::NTOR,
            hdata: Cow::Borrowed(hdata),
        }),
    );
    let mut wire = [0u8; 514];
    encode_cell_into(format, &cell, &mut wire).expect("encodes");
    let mut a = BytesMut::new();
    ChannelCodec::new(5)
        .write_cell(
            AChanCell::<AnyChanMsg>::new(
                ACircId::new(CIRC),
                amsg::Create2::new(amsg::HandshakeType::NTOR, hdata.to_vec()).into(),
            ),
            &mut a,
        )
        .expect("encodes");
    assert_eq!(
        &a[..],
        &wire[..],
        "onion and Arti encode CREATE2 differently"
    );
    wire
}

/// Row: a CREATE2 cell (ntor, 84-byte onion skin) from wire bytes on a channel to an owned
/// message (handshake data in a vector), as in `relay_decode_owned`. The second onion
/// contender decodes from a slice and borrows the handshake data.
fn row_create2_decode(hdata: [u8; NTOR_ONIONSKIN_LEN]) -> Row {
    let wire = create2_wire(&hdata);
    let format = CellFormat::for_version(5).expect("v5");
    let onion = move |n: u64| {
        let mut dec = CellDecoder::new(format);
        for _ in 0..n {
            dec.push(black_box(&wire));
            let cell = dec.next_cell().expect("decodes").expect("complete");
            let ChanMsg::Create2(c) = cell.msg.into_owned() else {
                panic!("not CREATE2")
            };
            black_box(c);
        }
    };
    let onion_borrowed = move |n: u64| {
        for _ in 0..n {
            let (cell, _) = decode_cell(format, black_box(&wire)).expect("decodes");
            let ChanMsg::Create2(c) = cell.msg else {
                panic!("not CREATE2")
            };
            black_box(c);
        }
    };
    let arti = move |n: u64| {
        let mut codec = ChannelCodec::new(5);
        let mut buf = BytesMut::new();
        for _ in 0..n {
            buf.extend_from_slice(black_box(&wire));
            let (cell, raw) = codec
                .decode_cell::<AnyChanMsg>(&mut buf)
                .expect("decodes")
                .expect("complete");
            drop(raw);
            let AnyChanMsg::Create2(c) = cell.into_circid_and_msg().1 else {
                panic!("not CREATE2")
            };
            black_box(c);
        }
    };
    {
        let (cell, _) = decode_cell(format, &wire).unwrap();
        let ChanMsg::Create2(c) = cell.msg else {
            panic!()
        };
        assert_eq!(
            (c.handshake_type, &c.hdata[..]),
            (HandshakeType::NTOR, &hdata[..])
        );
        let mut buf = BytesMut::from(&wire[..]);
        let (cell, _) = ChannelCodec::new(5)
            .decode_cell::<AnyChanMsg>(&mut buf)
            .unwrap()
            .unwrap();
        let AnyChanMsg::Create2(c) = cell.into_circid_and_msg().1 else {
            panic!()
        };
        assert_eq!(
            (c.handshake_type(), c.body()),
            (amsg::HandshakeType::NTOR, &hdata[..])
        );
    }
    Row {
        name: "create2_decode",
        contenders: vec![
            Contender::new("onion", onion),
            Contender::new("onion, slice, borrowed", onion_borrowed),
            Contender::new("arti", arti),
        ],
    }
}

/// Row: build a CREATE2 cell from the onion skin and write its 514 bytes into a reused
/// buffer. Arti's message owns its handshake data and `write_cell` consumes the cell, so it
/// copies the skin into a new vector every time; so does the first onion contender (owned
/// data). The second borrows the skin.
fn row_create2_encode(hdata: [u8; NTOR_ONIONSKIN_LEN]) -> Row {
    // `create2_wire` checks that onion (skin borrowed) and Arti agree; with the skin owned,
    // onion must write the same bytes.
    let wire = create2_wire(&hdata);
    let format = CellFormat::for_version(5).expect("v5");
    let mut out = [0u8; 514];
    let owned = ChanCell::new(
        CircId::new(CIRC),
        ChanMsg::Create2(Create2 {
            handshake_type: HandshakeType::NTOR,
            hdata: Cow::Owned(hdata.to_vec()),
        }),
    );
    encode_cell_into(format, &owned, &mut out).expect("encodes");
    assert_eq!(out, wire);
    let onion = move |n: u64| {
        for _ in 0..n {
            let cell = ChanCell::new(
                CircId::new(CIRC),
                ChanMsg::Create2(Create2 {
                    handshake_type: HandshakeType::NTOR,
                    hdata: Cow::Owned(black_box(&hdata).to_vec()),
                }),
            );
            encode_cell_into(format, &cell, &mut out).expect("encodes");
            black_box(&out);
        }
    };
    let mut out2 = [0u8; 514];
    let onion_borrowed = move |n: u64| {
        for _ in 0..n {
            let cell = ChanCell::new(
                CircId::new(CIRC),
                ChanMsg::Create2(Create2 {
                    handshake_type: HandshakeType::NTOR,
                    hdata: Cow::Borrowed(black_box(&hdata)),
                }),
            );
            encode_cell_into(format, &cell, &mut out2).expect("encodes");
            black_box(&out2);
        }
    };
    let arti = move |n: u64| {
        let mut codec = ChannelCodec::new(5);
        let mut buf = BytesMut::with_capacity(514);
        for _ in 0..n {
            buf.clear();
            let cell = AChanCell::new(
                ACircId::new(CIRC),
                amsg::Create2::new(amsg::HandshakeType::NTOR, black_box(&hdata).to_vec()).into(),
            );
            codec
                .write_cell::<AnyChanMsg>(cell, &mut buf)
                .expect("encodes");
            black_box(&buf);
        }
    };
    Row {
        name: "create2_encode",
        contenders: vec![
            Contender::new("onion", onion),
            Contender::new("onion, borrowed skin", onion_borrowed),
            Contender::new("arti", arti),
        ],
    }
}

/// tor1 key material: onion takes Df|Db|Kf|Kb (72 bytes, tor-spec §5.2.2); Arti's seed is
/// the same followed by its 20-byte circuit binding key.
fn tor1_keys(rng: &mut ChaCha20Rng) -> ([u8; 72], Vec<u8>) {
    let mut k = [0u8; 72];
    rng.fill_bytes(&mut k);
    let mut seed = k.to_vec();
    let mut binding = [0u8; 20];
    rng.fill_bytes(&mut binding);
    seed.extend_from_slice(&binding);
    (k, seed)
}

type ATor1 = ator1::CryptStatePair<tor_llcrypto::cipher::aes::Aes128Ctr, tor_llcrypto::d::Sha1>;

fn arti_body(bytes: &[u8; 509]) -> ARelayCellBody {
    ARelayCellBody::from(Box::new(*bytes))
}

/// Row: a middle relay's tor1 layer on a 509-byte cell that is not for it (one AES-128-CTR
/// pass, the recognized check), on a buffer the relay already owns.
fn row_tor1_relay_layer() -> Row {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let (k, seed) = tor1_keys(&mut rng);
    let mut cell = [0u8; 509];
    rng.fill_bytes(&mut cell);
    cell[1] = 0x5a; // recognized != 0: not for this relay

    // Same keys, same cells: same output bytes.
    {
        let mut o = onion_crypto::tor1::Tor1RelayCrypto::from_key_material(&k).unwrap();
        let (mut a, _, _) = ATor1::initialize(&seed).unwrap().split_relay_layer();
        let mut oc = cell;
        let mut ac = arti_body(&cell);
        for _ in 0..3 {
            assert!(!o.decrypt_outbound(&mut oc));
            assert!(a.decrypt_outbound(AChanCmd::RELAY, &mut ac).is_none());
            assert_eq!(&oc[..], ac.as_ref());
        }
    }
    let mut o = onion_crypto::tor1::Tor1RelayCrypto::from_key_material(&k).unwrap();
    let mut oc = cell;
    let onion = move |n: u64| {
        for _ in 0..n {
            black_box(o.decrypt_outbound(black_box(&mut oc)));
        }
    };
    let (mut a, _, _) = ATor1::initialize(&seed).unwrap().split_relay_layer();
    let mut ac = arti_body(&cell);
    let arti = move |n: u64| {
        for _ in 0..n {
            black_box(a.decrypt_outbound(AChanCmd::RELAY, black_box(&mut ac)));
        }
    };
    Row {
        name: "tor1_relay_layer",
        contenders: vec![Contender::new("onion", onion), Contender::new("arti", arti)],
    }
}

/// Row: a client's tor1 encryption of one cell to the third hop of a circuit (digest of
/// the third hop, then three AES-128-CTR passes).
fn row_tor1_client_encrypt() -> Row {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let keys: Vec<_> = (0..3).map(|_| tor1_keys(&mut rng)).collect();
    let mut cell = [0u8; 509];
    rng.fill_bytes(&mut cell);
    cell[1] = 0;
    cell[2] = 0;
    cell[5..9].fill(0);
    let onion_circ = || {
        let mut c = onion_crypto::tor1::ClientCircuitCrypto::new();
        for (k, _) in &keys {
            c.add_hop(onion_crypto::tor1::Tor1ClientHop::from_key_material(k).unwrap());
        }
        c
    };
    let arti_circ = || {
        let mut c = OutboundClientCrypt::new();
        for (_, s) in &keys {
            c.add_layer_from_pair(ATor1::initialize(s).unwrap());
        }
        c
    };
    {
        let (mut o, mut a) = (onion_circ(), arti_circ());
        for _ in 0..3 {
            let mut oc = cell;
            let mut ac = arti_body(&cell);
            o.encrypt_outbound(&mut oc, 2).unwrap();
            a.encrypt(AChanCmd::RELAY, &mut ac, 2.into()).unwrap();
            assert_eq!(&oc[..], ac.as_ref());
        }
    }
    let mut o = onion_circ();
    let mut oc = cell;
    let onion = move |n: u64| {
        for _ in 0..n {
            oc[1] = 0;
            oc[2] = 0;
            o.encrypt_outbound(black_box(&mut oc), 2).unwrap();
        }
    };
    let mut a = arti_circ();
    let mut ac = arti_body(&cell);
    let arti = move |n: u64| {
        for _ in 0..n {
            ac.as_mut()[1] = 0;
            ac.as_mut()[2] = 0;
            black_box(
                a.encrypt(AChanCmd::RELAY, black_box(&mut ac), 2.into())
                    .unwrap(),
            );
        }
    };
    Row {
        name: "tor1_client_encrypt_3hop",
        contenders: vec![Contender::new("onion", onion), Contender::new("arti", arti)],
    }
}

/// Row: a client's tor1 decryption of a cell from hop 3 of a circuit: three AES-128-CTR
/// passes, the recognized check at each hop and the digest check at hop 3 (Arti:
/// `InboundClientCrypt::decrypt`). The cells (the DATA cell of the other rows, as hop 3 sends
/// it) are made before each timed batch by onion's relay layers with the same keys, so both
/// clients decrypt the same sequence of cells.
fn row_tor1_client_decrypt() -> Row {
    use onion_crypto::tor1::{ClientCircuitCrypto, Tor1ClientHop, Tor1RelayCrypto};
    use std::cell::RefCell;
    use std::rc::Rc;

    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let keys: Vec<_> = (0..3).map(|_| tor1_keys(&mut rng)).collect();
    let mut plain = [0u8; 509];
    plain.copy_from_slice(&relay_wire()[5..]);
    let relays = |keys: &[([u8; 72], Vec<u8>)]| -> Vec<Tor1RelayCrypto> {
        keys.iter()
            .map(|(k, _)| Tor1RelayCrypto::from_key_material(k).unwrap())
            .collect()
    };
    // The next `n` cells from hop 3, as the client's first hop hands them on.
    fn make(relays: &mut [Tor1RelayCrypto], plain: &[u8; 509], n: u64) -> Vec<[u8; 509]> {
        (0..n)
            .map(|_| {
                let mut c = *plain;
                relays[2].originate_inbound(&mut c);
                relays[1].encrypt_inbound(&mut c);
                relays[0].encrypt_inbound(&mut c);
                c
            })
            .collect()
    }
    let onion_client = |keys: &[([u8; 72], Vec<u8>)]| {
        let mut c = ClientCircuitCrypto::new();
        for (k, _) in keys {
            c.add_hop(Tor1ClientHop::from_key_material(k).unwrap());
        }
        c
    };
    let arti_client = |keys: &[([u8; 72], Vec<u8>)]| {
        let mut c = InboundClientCrypt::new();
        for (_, s) in keys {
            c.add_layer_from_pair(ATor1::initialize(s).unwrap());
        }
        c
    };
    let hop3 = tor_proto::HopNum::from(2u8);
    {
        let mut r = relays(&keys);
        let (mut o, mut a) = (onion_client(&keys), arti_client(&keys));
        for mut c in make(&mut r, &plain, 3) {
            let mut ac = arti_body(&c);
            assert_eq!(o.decrypt_inbound(&mut c), Ok(2));
            assert_eq!(a.decrypt(AChanCmd::RELAY, &mut ac).unwrap().0, hop3);
            // Same plaintext, apart from the digest field each may leave as it likes.
            assert_eq!((&c[..5], &c[9..]), (&plain[..5], &plain[9..]));
            assert_eq!(
                (&ac.as_ref()[..5], &ac.as_ref()[9..]),
                (&plain[..5], &plain[9..])
            );
        }
    }

    let o_state = Rc::new(RefCell::new((
        relays(&keys),
        onion_client(&keys),
        Vec::<[u8; 509]>::new(),
    )));
    let o_setup = {
        let st = Rc::clone(&o_state);
        move |n: u64| {
            let (r, _, pool) = &mut *st.borrow_mut();
            *pool = make(r, &plain, n);
        }
    };
    let onion = move |n: u64| {
        let (_, client, pool) = &mut *o_state.borrow_mut();
        for c in pool.iter_mut().take(n as usize) {
            assert_eq!(client.decrypt_inbound(black_box(c)), Ok(2));
        }
    };
    let a_state = Rc::new(RefCell::new((
        relays(&keys),
        arti_client(&keys),
        Vec::<ARelayCellBody>::new(),
    )));
    let a_setup = {
        let st = Rc::clone(&a_state);
        move |n: u64| {
            let (r, _, pool) = &mut *st.borrow_mut();
            *pool = make(r, &plain, n).iter().map(arti_body).collect();
        }
    };
    let arti = move |n: u64| {
        let (_, client, pool) = &mut *a_state.borrow_mut();
        for c in pool.iter_mut().take(n as usize) {
            let (hop, _) = client.decrypt(AChanCmd::RELAY, black_box(c)).unwrap();
            assert_eq!(hop, hop3);
        }
    };
    Row {
        name: "tor1_client_decrypt_3hop",
        contenders: vec![
            Contender::with_setup("onion", o_setup, onion),
            Contender::with_setup("arti", a_setup, arti),
        ],
    }
}

/// Rows: parse the real November 2022 consensus (microdesc and `ns` flavours, 6,088
/// relays) without checking signatures or times, and count its relays. onion's result
/// borrows strings from the text; Arti's owns them.
fn row_consensus(flavour: &'static str) -> Row {
    let (name, file) = match flavour {
        "md" => (
            "consensus_parse_md",
            "real-microdesc-consensus-2022-11-19.txt",
        ),
        _ => ("consensus_parse_ns", "real-ns-consensus-2022-11-19.txt"),
    };
    let text = fixture(file);
    let onion_count = |t: &str| {
        onion_dir::consensus::parse(t)
            .expect("onion parses")
            .assume_verified()
            .relays
            .len()
    };
    let arti_count = move |t: &str| -> usize {
        if flavour == "md" {
            let (_, _, c) = tor_netdoc::doc::netstatus::MdConsensus::parse(t).expect("arti parses");
            c.dangerously_assume_timely().consensus.relays().len()
        } else {
            let (_, _, c) = tor_netdoc::doc::netstatus::NsConsensus::parse(t).expect("arti parses");
            c.dangerously_assume_timely().consensus.relays().len()
        }
    };
    assert_eq!(onion_count(&text), arti_count(&text));
    assert_eq!(onion_count(&text), 6088);
    let t1 = text.clone();
    let onion = move |n: u64| {
        for _ in 0..n {
            black_box(onion_count(black_box(&t1)));
        }
    };
    let arti = move |n: u64| {
        for _ in 0..n {
            black_box(arti_count(black_box(&text)));
        }
    };
    Row {
        name,
        contenders: vec![Contender::new("onion", onion), Contender::new("arti", arti)],
    }
}

/// Row: parse the real cached-microdescs file (with its `@last-listed` annotations) and
/// count the microdescriptors.
fn row_microdescs() -> Row {
    let text = fixture("real-cached-microdescs-2022-11-19.txt");
    let onion_count = |t: &str| onion_dir::microdesc::parse_many(t).expect("parses").len();
    let arti_count = |t: &str| {
        let reader = tor_netdoc::doc::microdesc::MicrodescReader::new(
            t,
            &tor_netdoc::AllowAnnotations::AnnotationsAllowed,
        )
        .expect("reader");
        let mut n = 0usize;
        for md in reader {
            black_box(md.expect("arti parses"));
            n += 1;
        }
        n
    };
    let n = onion_count(&text);
    assert_eq!(n, arti_count(&text));
    assert!(n > 1000, "{n} microdescriptors");
    let t1 = text.clone();
    let onion = move |n: u64| {
        for _ in 0..n {
            black_box(onion_count(black_box(&t1)));
        }
    };
    let arti = move |n: u64| {
        for _ in 0..n {
            black_box(arti_count(black_box(&text)));
        }
    };
    Row {
        name: "microdescs_parse",
        contenders: vec![Contender::new("onion", onion), Contender::new("arti", arti)],
    }
}

const ADDR: &str = "skn4u3felenupawmdh43qijues5x5gc3jwgutk7miqfyptywyp6dm2ad.onion";

/// Row: parse a v3 onion address (base32, checksum, version) into its 32-byte key.
fn row_hs_address_parse() -> Row {
    let o = onion_hs::OnionAddress::parse(ADDR).unwrap();
    let a = tor_hscrypto::pk::HsId::from_str(ADDR).unwrap();
    assert_eq!(o.public_key_bytes(), a.as_ref());
    let onion = |n: u64| {
        for _ in 0..n {
            black_box(onion_hs::OnionAddress::parse(black_box(ADDR)).unwrap());
        }
    };
    let arti = |n: u64| {
        for _ in 0..n {
            black_box(tor_hscrypto::pk::HsId::from_str(black_box(ADDR)).unwrap());
        }
    };
    Row {
        name: "hs_address_parse",
        contenders: vec![Contender::new("onion", onion), Contender::new("arti", arti)],
    }
}

/// Row: format a v3 onion address (checksum, base32, `.onion`) into a new `String`.
fn row_hs_address_format() -> Row {
    use safelog::DisplayRedacted as _;
    let o = onion_hs::OnionAddress::parse(ADDR).unwrap();
    let a = tor_hscrypto::pk::HsId::from_str(ADDR).unwrap();
    assert_eq!(o.to_string(), ADDR);
    assert_eq!(a.display_unredacted().to_string(), ADDR);
    let onion = move |n: u64| {
        for _ in 0..n {
            black_box(black_box(&o).to_string());
        }
    };
    let arti = move |n: u64| {
        for _ in 0..n {
            black_box(black_box(&a).display_unredacted().to_string());
        }
    };
    Row {
        name: "hs_address_format",
        contenders: vec![Contender::new("onion", onion), Contender::new("arti", arti)],
    }
}

/// Row: a client's key blinding for one time period (rend-spec-v3 A.2 and §2.1): blinding
/// factor, blinded public key, subcredential. Same key and period, same outputs.
fn row_hs_blind() -> Row {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let id = onion_hs::keys::ExpandedKeypair::generate(&mut rng).id_key();
    let period = onion_hs::TimePeriod::new(20_000, 1440, 720);
    let akey: tor_hscrypto::pk::HsIdKey =
        tor_llcrypto::pk::ed25519::PublicKey::from_bytes(id.as_bytes())
            .unwrap()
            .into();
    let aperiod = tor_hscrypto::time::TimePeriod::from_parts(1440, 20_000, 720 * 60);
    let onion_blind = move |id: &onion_hs::keys::HsIdKey| {
        let b = id.blind(period);
        let sub = b.subcredential(&id.credential());
        (b, sub)
    };
    {
        let (ob, os) = onion_blind(&id);
        let (ab, asub) = akey.compute_blinded_key(aperiod).unwrap();
        assert_eq!(ob.as_bytes(), ab.as_bytes());
        assert_eq!(&os.0, asub.as_ref());
    }
    let onion = move |n: u64| {
        for _ in 0..n {
            black_box(onion_blind(black_box(&id)));
        }
    };
    let arti = move |n: u64| {
        for _ in 0..n {
            black_box(black_box(&akey).compute_blinded_key(aperiod).unwrap());
        }
    };
    Row {
        name: "hs_blind_public",
        contenders: vec![Contender::new("onion", onion), Contender::new("arti", arti)],
    }
}

/// Every row, by name, built only when selected (set-up parses documents and checks
/// that both implementations agree, which takes a while).
/// A row's name and the function that builds it.
type RowBuilder = (&'static str, fn() -> Row);

fn all_rows() -> Vec<RowBuilder> {
    fn hdata() -> [u8; NTOR_ONIONSKIN_LEN] {
        let mut h = [0u8; NTOR_ONIONSKIN_LEN];
        ChaCha20Rng::seed_from_u64(9).fill_bytes(&mut h);
        h
    }
    vec![
        (
            "relay_decode_owned",
            || row_relay_decode_owned(relay_wire()),
        ),
        ("relay_decode_zero_copy", || {
            row_relay_decode_zero_copy(relay_wire())
        }),
        ("data_encode_fresh", row_data_encode_fresh),
        ("data_encode_reused", row_data_encode_reused),
        ("create2_decode", || row_create2_decode(hdata())),
        ("create2_encode", || row_create2_encode(hdata())),
        ("tor1_relay_layer", row_tor1_relay_layer),
        ("tor1_client_encrypt_3hop", row_tor1_client_encrypt),
        ("tor1_client_decrypt_3hop", row_tor1_client_decrypt),
        ("consensus_parse_md", || row_consensus("md")),
        ("consensus_parse_ns", || row_consensus("ns")),
        ("microdescs_parse", row_microdescs),
        ("hs_address_parse", row_hs_address_parse),
        ("hs_address_format", row_hs_address_format),
        ("hs_blind_public", row_hs_blind),
    ]
}

/// The row filter: the first command-line argument that is neither an option nor the value
/// of one of criterion's options (what `cargo bench -- <filter>` passes on to criterion).
fn filter() -> Option<String> {
    const WITH_VALUE: &[&str] = &[
        "--profile-time",
        "--save-baseline",
        "--baseline",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--plotting-backend",
        "--output-format",
        "--format",
        "--color",
        "-c",
        "-s",
        "-b",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

/// Whether row `name` matches the filter; the part of the filter before a `/` (which names
/// a criterion benchmark within the row) is matched as a substring.
fn selected(name: &str) -> bool {
    filter().is_none_or(|f| {
        let row = f.split('/').next().unwrap_or_default();
        name.contains(row.trim_start_matches('^'))
    })
}

fn mode() -> String {
    std::env::var("ARTI_COMPARE").unwrap_or_default()
}

fn criterion_pass(c: &mut Criterion) {
    if mode() == "ratios" {
        return;
    }
    for (name, build) in all_rows() {
        if !selected(name) {
            continue;
        }
        let mut row = build();
        assert_eq!(row.name, name);
        let mut g = c.benchmark_group(row.name);
        for ct in &mut row.contenders {
            g.bench_function(ct.name, |b| b.iter_custom(|iters| ct.time(iters)));
        }
        g.finish();
    }
}

fn interleaved_pass(_c: &mut Criterion) {
    if mode() == "criterion" {
        return;
    }
    let rounds = std::env::var("ARTI_COMPARE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(101);
    let start = Instant::now();
    for (name, build) in all_rows() {
        if !selected(name) {
            continue;
        }
        let mut row = build();
        let sums = interleave(&mut row, rounds, Duration::from_millis(2));
        report(row.name, rounds, &sums);
    }
    println!("interleaved pass: {:.1} s", start.elapsed().as_secs_f64());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = criterion_pass, interleaved_pass
}
criterion_main!(benches);
