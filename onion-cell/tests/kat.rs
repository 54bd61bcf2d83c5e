//! Known-answer tests: cells and relay messages encoded by hand from the spec text
//! (tor-spec §3–§7, rend-spec-v3 §3–§4, prop 324), checked byte for byte in both
//! directions.

use onion_cell::chancell::*;
use onion_cell::codec::{decode_cell, encode_cell, CellFormat, DecodeError};
use onion_cell::extension::{CcRequest, CcResponse, DosParamType, DosParams, ExtList, Extension};
use onion_cell::hs::*;
use onion_cell::linkspec::LinkSpec;
use onion_cell::relay::{RelayCell, StreamId};
use onion_cell::relaymsg::*;
use onion_cell::{CircId, Error};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

/// Hex with spaces and `_` ignored.
fn h(s: &str) -> Vec<u8> {
    let s: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '_')
        .collect();
    hex::decode(s).expect("valid hex in test")
}

fn v4() -> CellFormat {
    CellFormat::for_version(4).unwrap()
}

/// Pads a fixed-cell encoding (header + body) to `len` with zeros.
fn padded(mut v: Vec<u8>, len: usize) -> Vec<u8> {
    v.resize(len, 0);
    v
}

/// Checks that `wire` decodes to `cell` (consuming all of it) and that `cell` encodes to `wire`.
fn check_cell(format: CellFormat, wire: &[u8], cell: ChanCell<'_>) {
    let (got, n) = decode_cell(format, wire).expect("decodes");
    assert_eq!(n, wire.len());
    assert_eq!(got, cell);
    let mut out = Vec::new();
    encode_cell(format, &cell, &mut out).expect("encodes");
    assert_eq!(hex::encode(&out), hex::encode(wire));
}

fn c0(msg: ChanMsg<'_>) -> ChanCell<'_> {
    ChanCell::new(CircId::ZERO, msg)
}

#[test]
fn versions_before_negotiation_has_two_byte_circid() {
    // tor-spec §3/§4.1: CircID 0000, command 07, length 0006, versions 3, 4, 5.
    let wire = h("0000 07 0006 0003 0004 0005");
    check_cell(
        CellFormat::UNNEGOTIATED,
        &wire,
        c0(ChanMsg::Versions(Versions {
            versions: vec![3, 4, 5],
        })),
    );
    let ChanMsg::Versions(v) = decode_cell(CellFormat::UNNEGOTIATED, &wire).unwrap().0.msg else {
        panic!()
    };
    assert_eq!(v.best_shared(&[3, 4]), Some(4));
    // An odd payload length is malformed (§4.1).
    assert!(matches!(
        decode_cell(CellFormat::UNNEGOTIATED, &h("0000 07 0003 000300")),
        Err(DecodeError::Malformed(Error::BadLength { .. }))
    ));
}

#[test]
fn padding_and_vpadding() {
    check_cell(v4(), &padded(h("00000000 00"), 514), c0(ChanMsg::Padding));
    check_cell(
        v4(),
        &h("00000000 80 0003 000000"),
        c0(ChanMsg::Vpadding { len: 3 }),
    );
    // Link protocol 3: 2-byte circuit id, 512-byte fixed cell.
    let v3 = CellFormat::for_version(3).unwrap();
    check_cell(v3, &padded(h("0000 00"), 512), c0(ChanMsg::Padding));
}

#[test]
fn certs() {
    // tor-spec §4.2: N=2; CertType 02 CLEN 0003 aabbcc; CertType 07 CLEN 0002 dddd.
    let wire = h("00000000 81 000c 02 02 0003 aabbcc 07 0002 dddd");
    let cell = c0(ChanMsg::Certs(Certs {
        certs: vec![
            CertEntry {
                cert_type: 2,
                body: Cow::Owned(h("aabbcc")),
            },
            CertEntry {
                cert_type: 7,
                body: Cow::Owned(h("dddd")),
            },
        ],
    }));
    check_cell(v4(), &wire, cell);
    // Extra bytes at the end MUST be ignored.
    let w = h("00000000 81 0004 00 ffffff");
    let (c, _) = decode_cell(v4(), &w).unwrap();
    assert_eq!(c.msg, ChanMsg::Certs(Certs { certs: vec![] }));
    // A certificate longer than the cell is truncated.
    assert!(matches!(
        decode_cell(v4(), &h("00000000 81 0004 01 02 0005")),
        Err(DecodeError::Malformed(Error::Truncated {
            field: "Certificate",
            need: 5
        }))
    ));
}

#[test]
fn auth_challenge_authenticate_authorize() {
    let chal = [0x11u8; 32];
    let mut wire = h("00000000 82 0026");
    wire.extend_from_slice(&chal);
    wire.extend(h("0002 0001 0003"));
    check_cell(
        v4(),
        &wire,
        c0(ChanMsg::AuthChallenge(AuthChallenge {
            challenge: chal,
            methods: vec![1, 3],
        })),
    );
    check_cell(
        v4(),
        &h("00000000 83 0008 0003 0004 deadbeef"),
        c0(ChanMsg::Authenticate(Authenticate {
            auth_type: 3,
            auth: Cow::Owned(h("deadbeef")),
        })),
    );
    check_cell(
        v4(),
        &h("00000000 84 0002 abcd"),
        c0(ChanMsg::Authorize(Cow::Owned(h("abcd")))),
    );
}

#[test]
fn netinfo() {
    // tor-spec §4.5: TIME, OTHERADDR (04 04 7f000001), NMYADDR 02, an IPv6 and an IPv4.
    let wire = padded(
        h("00000000 08 5f5e1000 04 04 7f000001 02
           06 10 20010db8000000000000000000000001
           04 04 c0000201"),
        514,
    );
    let cell = c0(ChanMsg::Netinfo(Netinfo {
        timestamp: 0x5f5e1000,
        other_addr: NetinfoAddr::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        my_addrs: vec![
            NetinfoAddr::Ip(IpAddr::V6("2001:db8::1".parse().unwrap())),
            NetinfoAddr::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
        ],
    }));
    check_cell(v4(), &wire, cell);
    // A wrong ALEN for the ATYPE is kept (to be ignored by the receiver), not an error.
    let wire = padded(h("00000000 08 00000000 04 03 010203 00"), 514);
    let (c, _) = decode_cell(v4(), &wire).unwrap();
    let ChanMsg::Netinfo(n) = c.msg else { panic!() };
    assert_eq!(n.other_addr.ip(), None);
}

#[test]
fn create_created_tap_and_fast() {
    let skin = vec![0x5a; TAP_C_HANDSHAKE_LEN];
    let mut wire = h("80000001 01");
    wire.extend(&skin);
    check_cell(
        v4(),
        &padded(wire, 514),
        ChanCell::new(CircId::new(0x8000_0001), ChanMsg::Create(Cow::Owned(skin))),
    );
    let reply = vec![0xa5; TAP_S_HANDSHAKE_LEN];
    let mut wire = h("80000001 02");
    wire.extend(&reply);
    check_cell(
        v4(),
        &padded(wire, 514),
        ChanCell::new(
            CircId::new(0x8000_0001),
            ChanMsg::Created(Cow::Owned(reply)),
        ),
    );
    let wire = padded(
        h("80000002 05 000102030405060708090a0b0c0d0e0f10111213"),
        514,
    );
    let x: [u8; 20] = core::array::from_fn(|i| i as u8);
    check_cell(
        v4(),
        &wire,
        ChanCell::new(CircId::new(0x8000_0002), ChanMsg::CreateFast(x)),
    );
    let mut wire = h("80000002 06");
    wire.extend([0x01; 20]);
    wire.extend([0x02; 20]);
    check_cell(
        v4(),
        &padded(wire, 514),
        ChanCell::new(
            CircId::new(0x8000_0002),
            ChanMsg::CreatedFast {
                y: [1; 20],
                kh: [2; 20],
            },
        ),
    );
}

#[test]
fn create2_created2() {
    // tor-spec §5.1: HTYPE 0002 (ntor), HLEN 0054 (84), HDATA.
    let hdata: Vec<u8> = (0..84).collect();
    let mut wire = h("80000003 0a 0002 0054");
    wire.extend(&hdata);
    check_cell(
        v4(),
        &padded(wire, 514),
        ChanCell::new(
            CircId::new(0x8000_0003),
            ChanMsg::Create2(Create2 {
                handshake_type: HandshakeType::NTOR,
                hdata: Cow::Owned(hdata),
            }),
        ),
    );
    let hdata = vec![0x77; 64];
    let mut wire = h("80000003 0b 0040");
    wire.extend(&hdata);
    check_cell(
        v4(),
        &padded(wire, 514),
        ChanCell::new(
            CircId::new(0x8000_0003),
            ChanMsg::Created2(Created2 {
                hdata: Cow::Owned(hdata),
            }),
        ),
    );
    // HLEN larger than the cell body.
    assert!(matches!(
        decode_cell(v4(), &padded(h("80000003 0a 0002 01fe"), 514)),
        Err(DecodeError::Malformed(Error::Truncated {
            field: "CREATE2 HDATA",
            ..
        }))
    ));
}

#[test]
fn destroy_relay_relay_early_padding_negotiate_unknown() {
    check_cell(
        v4(),
        &padded(h("80000004 04 03"), 514),
        ChanCell::new(
            CircId::new(0x8000_0004),
            ChanMsg::Destroy(DestroyReason::REQUESTED),
        ),
    );
    assert_eq!(DestroyReason(12).name(), Some("NOSUCHSERVICE"));
    let body: [u8; 509] = core::array::from_fn(|i| (i % 251) as u8);
    let mut wire = h("80000005 03");
    wire.extend(body);
    check_cell(
        v4(),
        &wire,
        ChanCell::new(CircId::new(0x8000_0005), ChanMsg::Relay(body.into())),
    );
    wire[4] = 9;
    check_cell(
        v4(),
        &wire,
        ChanCell::new(CircId::new(0x8000_0005), ChanMsg::RelayEarly(body.into())),
    );
    // tor-spec §7.2: version 0, command 2 (start), ito_low 1500, ito_high 9000.
    check_cell(
        v4(),
        &padded(h("00000000 0c 00 02 05dc 2328"), 514),
        c0(ChanMsg::PaddingNegotiate(PaddingNegotiate {
            version: 0,
            command: PaddingNegotiate::START,
            ito_low_ms: 1500,
            ito_high_ms: 9000,
        })),
    );
    // Unknown fixed-length command 13: all 509 bytes kept.
    let wire = padded(h("00000007 0d 0102"), 514);
    let (c, _) = decode_cell(v4(), &wire).unwrap();
    assert_eq!(
        c.msg,
        ChanMsg::Unknown {
            cmd: ChanCmd(13),
            body: Cow::Owned(wire[5..].to_vec())
        }
    );
    check_cell(
        v4(),
        &h("00000000 8c 0002 abcd"),
        c0(ChanMsg::Unknown {
            cmd: ChanCmd(140),
            body: Cow::Owned(h("abcd")),
        }),
    );
}

#[test]
fn need_more_is_not_malformed() {
    let wire = padded(h("80000004 04 03"), 514);
    for n in 0..wire.len() {
        match decode_cell(v4(), &wire[..n]) {
            Err(DecodeError::NeedMore { need }) => assert!(need >= 1 && n + need <= 514),
            other => panic!("prefix {n}: {other:?}"),
        }
    }
    // Variable-length: need is exact once the length field is known.
    assert_eq!(
        decode_cell(v4(), &h("00000000 80 0010 00")),
        Err(DecodeError::NeedMore { need: 15 })
    );
}

/// Checks a relay message body both ways.
fn check_msg(cmd: u8, body: &[u8], msg: RelayMsg<'_>) {
    let got = RelayMsg::decode(RelayCmd(cmd), body).expect("decodes");
    assert_eq!(got, msg);
    assert_eq!(msg.cmd(), RelayCmd(cmd));
    assert_eq!(hex::encode(msg.to_body_vec().unwrap()), hex::encode(body));
}

#[test]
fn relay_cell_header_and_padding() {
    // tor-spec §6.1: cmd 02, recognized 0000, stream 0007, digest 00000000, length 0005,
    // "hello", then four zero bytes, then random bytes.
    let msg = RelayMsg::Data(Data::new(b"hello").unwrap());
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    let body = RelayCell::new(StreamId::new(7), msg.clone())
        .encode(&mut rng)
        .unwrap();
    let mut expect = h("02 0000 0007 00000000 0005 68656c6c6f 00000000");
    let mut random = vec![0u8; 509 - expect.len()];
    rand_chacha::ChaCha20Rng::seed_from_u64(7).fill_bytes(&mut random);
    expect.extend(random);
    assert_eq!(hex::encode(body.as_bytes()), hex::encode(&expect));
    assert_eq!(body.cmd(), RelayCmd::DATA);
    assert_eq!(body.stream_id(), StreamId::new(7));
    assert_eq!(body.length(), 5);
    assert_eq!(body.data().unwrap(), b"hello");
    let dec = body.decode().unwrap();
    assert_eq!(dec.msg, msg);
    // A full DATA message leaves no room for padding.
    let full = [0xee; 498];
    let b = RelayCell::new(StreamId::new(1), RelayMsg::Data(Data::new(&full).unwrap()))
        .encode(&mut rng)
        .unwrap();
    assert_eq!(&b.as_bytes()[11..], &full[..]);
    assert!(Data::new(&[0; 499]).is_err());
    // 496 bytes of data: two bytes of padding, both zero.
    let b = RelayCell::new(
        StreamId::new(1),
        RelayMsg::Data(Data::new(&full[..496]).unwrap()),
    )
    .encode(&mut rng)
    .unwrap();
    assert_eq!(&b.as_bytes()[507..], &[0, 0]);
    // Length above 498 is rejected.
    let mut bad = [0u8; 509];
    bad[9..11].copy_from_slice(&499u16.to_be_bytes());
    assert!(matches!(
        RelayCell::decode(&bad),
        Err(Error::BadLength {
            field: "relay Length",
            len: 499
        })
    ));
}

#[test]
fn begin() {
    // tor-spec §6.2: "example.com:443" NUL, FLAGS 00000001 (IPv6 okay).
    check_msg(
        1,
        &h("6578616d706c652e636f6d3a343433 00 00000001"),
        RelayMsg::Begin(Begin {
            host: "example.com".into(),
            port: 443,
            flags: BeginFlags(BeginFlags::IPV6_OKAY),
        }),
    );
    // IPv6 literal in brackets, no FLAGS.
    check_msg(
        1,
        &hex::decode(hex::encode("[2001:db8::1]:80\0")).unwrap(),
        RelayMsg::Begin(Begin {
            host: "2001:db8::1".into(),
            port: 80,
            flags: BeginFlags(0),
        }),
    );
    // To an onion service C tor sends only the port: an empty host.
    check_msg(
        1,
        b":80\0",
        RelayMsg::Begin(Begin {
            host: "".into(),
            port: 80,
            flags: BeginFlags(0),
        }),
    );
    for bad in [
        "example.com\0",
        "example.com:0\0",
        "example.com:65536\0",
        "x:80",
    ] {
        assert!(
            RelayMsg::decode(RelayCmd::BEGIN, bad.as_bytes()).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn data_end_connected() {
    check_msg(
        2,
        b"GET / HTTP/1.0\r\n\r\n",
        RelayMsg::Data(Data::new(b"GET / HTTP/1.0\r\n\r\n").unwrap()),
    );
    // tor-spec §6.3.
    check_msg(3, &h("06"), RelayMsg::End(End::new(EndReason::DONE)));
    check_msg(
        3,
        &h("04 c0000201 00000e10"),
        RelayMsg::End(End {
            reason: EndReason::EXITPOLICY,
            exit_policy: Some(ExitPolicyAddr {
                addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                ttl: 3600,
            }),
        }),
    );
    check_msg(
        3,
        &h("04 20010db8000000000000000000000001 0000003c"),
        RelayMsg::End(End {
            reason: EndReason::EXITPOLICY,
            exit_policy: Some(ExitPolicyAddr {
                addr: IpAddr::V6("2001:db8::1".parse().unwrap()),
                ttl: 60,
            }),
        }),
    );
    // Empty END means MISC; EXITPOLICY without TTL means TTL 0xffffffff.
    assert_eq!(
        RelayMsg::decode(RelayCmd::END, &[]).unwrap(),
        RelayMsg::End(End::new(EndReason::MISC))
    );
    let RelayMsg::End(e) = RelayMsg::decode(RelayCmd::END, &h("04 0a000001")).unwrap() else {
        panic!()
    };
    assert_eq!(e.exit_policy.unwrap().ttl, u32::MAX);
    // tor-spec §6.2 CONNECTED forms.
    check_msg(4, &[], RelayMsg::Connected(Connected { addr: None }));
    check_msg(
        4,
        &h("c0000201 00000e10"),
        RelayMsg::Connected(Connected {
            addr: Some((IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 3600)),
        }),
    );
    // IPv4 without TTL (accepted as C tor does); zero address without the IPv6 form.
    assert_eq!(
        RelayMsg::decode(RelayCmd::CONNECTED, &h("c0000201")).unwrap(),
        RelayMsg::Connected(Connected {
            addr: Some((IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), u32::MAX)),
        })
    );
    assert!(matches!(
        RelayMsg::decode(RelayCmd::CONNECTED, &h("00000000 00000e10")),
        Err(Error::BadValue {
            field: "CONNECTED address type",
            value: 0
        })
    ));
    check_msg(
        4,
        &h("00000000 06 20010db8000000000000000000000001 00000e10"),
        RelayMsg::Connected(Connected {
            addr: Some((IpAddr::V6("2001:db8::1".parse().unwrap()), 3600)),
        }),
    );
}

#[test]
fn sendme() {
    // tor-spec §7.3.1.
    check_msg(5, &[], RelayMsg::Sendme(Sendme { tag: None }));
    let mut body = h("01 0014");
    body.extend([0xab; 20]);
    check_msg(
        5,
        &body,
        RelayMsg::Sendme(Sendme {
            tag: Some([0xab; 20]),
        }),
    );
    assert_eq!(
        RelayMsg::decode(RelayCmd::SENDME, &h("00 0000")).unwrap(),
        RelayMsg::Sendme(Sendme { tag: None })
    );
    assert!(matches!(
        RelayMsg::decode(RelayCmd::SENDME, &h("01 0013")),
        Err(Error::BadLength {
            field: "SENDME DATA_LEN",
            ..
        })
    ));
    assert!(matches!(
        RelayMsg::decode(RelayCmd::SENDME, &h("02 0000")),
        Err(Error::BadValue {
            field: "SENDME VERSION",
            value: 2
        })
    ));
}

#[test]
fn extend2_extended2_and_legacy() {
    // tor-spec §5.1.2: NSPEC 04; [00] 06 7f000001 2329; [02] 14 id; [03] 20 ed;
    // [01] 12 ::1 port 9001; HTYPE 0003; HLEN 0004; HDATA.
    let rsa = [0x22u8; 20];
    let ed = [0x33u8; 32];
    let mut body = h("04 00 06 7f000001 2329 02 14");
    body.extend(rsa);
    body.extend(h("03 20"));
    body.extend(ed);
    body.extend(h(
        "01 12 00000000000000000000000000000001 2329 0003 0004 01020304",
    ));
    check_msg(
        14,
        &body,
        RelayMsg::Extend2(Extend2 {
            linkspecs: vec![
                LinkSpec::OrPortV4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9001)),
                LinkSpec::RsaId(rsa),
                LinkSpec::Ed25519Id(ed),
                LinkSpec::OrPortV6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9001, 0, 0)),
            ],
            handshake_type: HandshakeType::NTOR_V3,
            hdata: Cow::Owned(h("01020304")),
        }),
    );
    // Unknown link specifier types are kept.
    check_msg(
        14,
        &h("01 09 02 abcd 0002 0000"),
        RelayMsg::Extend2(Extend2 {
            linkspecs: vec![LinkSpec::Unknown {
                ls_type: 9,
                body: Cow::Owned(h("abcd")),
            }],
            handshake_type: HandshakeType::NTOR,
            hdata: Cow::Owned(vec![]),
        }),
    );
    // A known type with a wrong length is rejected.
    assert!(matches!(
        RelayMsg::decode(RelayCmd::EXTEND2, &h("01 02 02 abcd 0002 0000")),
        Err(Error::BadLength {
            field: "LSPEC",
            len: 2
        })
    ));
    check_msg(
        15,
        &h("0002 beef"),
        RelayMsg::Extended2(Extended2 {
            hdata: Cow::Owned(h("beef")),
        }),
    );
    // Legacy EXTEND: address, port, TAP onion skin, identity.
    let mut body = h("c0000201 2329");
    body.extend([0x44; TAP_C_HANDSHAKE_LEN]);
    body.extend(rsa);
    check_msg(
        6,
        &body,
        RelayMsg::Extend(Extend {
            addr: Ipv4Addr::new(192, 0, 2, 1),
            port: 9001,
            onion_skin: Cow::Owned(vec![0x44; TAP_C_HANDSHAKE_LEN]),
            rsa_id: rsa,
        }),
    );
    check_msg(
        7,
        &[0x55; TAP_S_HANDSHAKE_LEN],
        RelayMsg::Extended(Extended {
            hdata: Cow::Owned(vec![0x55; TAP_S_HANDSHAKE_LEN]),
        }),
    );
}

#[test]
fn circuit_control_messages() {
    check_msg(8, &[], RelayMsg::Truncate);
    check_msg(9, &h("0b"), RelayMsg::Truncated(DestroyReason::DESTROYED));
    check_msg(10, &[], RelayMsg::Drop);
    check_msg(13, &[], RelayMsg::BeginDir);
    check_msg(39, &[], RelayMsg::RendezvousEstablished);
    // prop 324 §4: XOFF version 00; XON version 00, kbps_ewma 00000400.
    check_msg(43, &h("00"), RelayMsg::Xoff);
    check_msg(
        44,
        &h("00 00000400"),
        RelayMsg::Xon(Xon { kbps_ewma: 1024 }),
    );
    assert!(RelayMsg::decode(RelayCmd::XON, &h("01 00000400")).is_err());
    // Unknown relay command: kept.
    check_msg(
        200,
        &h("0102"),
        RelayMsg::Unknown {
            cmd: RelayCmd(200),
            body: Cow::Owned(h("0102")),
        },
    );
}

#[test]
fn resolve_resolved() {
    check_msg(
        11,
        b"torproject.org\0",
        RelayMsg::Resolve(Resolve {
            query: "torproject.org".into(),
        }),
    );
    // tor-spec §6.4: IPv4 answer (04 04 addr TTL), IPv6 answer, hostname answer,
    // nontransient error.
    let body = h("04 04 c0000201 0000012c
                   06 10 20010db8000000000000000000000001 0000012c
                   00 07 6578616d706c65 00000010
                   f1 03 455252 00000000");
    check_msg(
        12,
        &body,
        RelayMsg::Resolved(Resolved {
            answers: vec![
                ResolvedAnswer {
                    value: ResolvedValue::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
                    ttl: 300,
                },
                ResolvedAnswer {
                    value: ResolvedValue::Ip(IpAddr::V6("2001:db8::1".parse().unwrap())),
                    ttl: 300,
                },
                ResolvedAnswer {
                    value: ResolvedValue::Hostname(Cow::Owned(b"example".to_vec())),
                    ttl: 16,
                },
                ResolvedAnswer {
                    value: ResolvedValue::NontransientError(Cow::Owned(b"ERR".to_vec())),
                    ttl: 0,
                },
            ],
        }),
    );
    assert!(RelayMsg::decode(RelayCmd::RESOLVED, &h("04 03 010203 00000000")).is_err());
}

#[test]
fn establish_intro_with_dos_extension() {
    // rend-spec-v3 §3.1.1 and §3.1.1.1: the DoS extension brings the body to 155 bytes.
    let key = [0x0au8; 32];
    let mac = [0x0bu8; 32];
    let sig = [0x0cu8; 64];
    let mut body = h("02 0020");
    body.extend(key);
    body.extend(h("01 01 13 02 01 0000000000000019 02 00000000000000c8"));
    body.extend(mac);
    body.extend(h("0040"));
    body.extend(sig);
    assert_eq!(body.len(), 155);
    let mut ext = ExtList::new();
    ext.push(&DosParams(vec![
        (DosParamType::INTRODUCE2_RATE_PER_SEC, 25),
        (DosParamType::INTRODUCE2_BURST_PER_SEC, 200),
    ]))
    .unwrap();
    let msg = EstablishIntro {
        auth_key_type: AuthKeyType::ED25519_SHA3_256,
        auth_key: Cow::Owned(key.to_vec()),
        extensions: ext,
        handshake_auth: mac,
        sig: Cow::Owned(sig.to_vec()),
    };
    check_msg(32, &body, RelayMsg::EstablishIntro(msg.clone()));
    let (dec, ranges) = EstablishIntro::decode_with_ranges(&body).unwrap();
    assert_eq!(ranges.mac_input, 0..57);
    assert_eq!(ranges.sig_input, 0..89);
    let dos = dec.extensions.get::<DosParams>().unwrap().unwrap();
    assert_eq!(dos.0[1], (DosParamType::INTRODUCE2_BURST_PER_SEC, 200));
    let mut m = Vec::new();
    msg.encode_mac_input(&mut m).unwrap();
    assert_eq!(m, body[ranges.mac_input]);
    let mut s = Vec::new();
    msg.encode_sig_input(&mut s).unwrap();
    assert_eq!(s, body[ranges.sig_input]);
    // Without extensions: 134 bytes.
    let plain = EstablishIntro {
        extensions: ExtList::new(),
        ..msg
    };
    assert_eq!(
        RelayMsg::EstablishIntro(plain).to_body_vec().unwrap().len(),
        134
    );
}

#[test]
fn intro_established_and_ack() {
    check_msg(
        38,
        &h("00"),
        RelayMsg::IntroEstablished(IntroEstablished::default()),
    );
    assert_eq!(
        RelayMsg::decode(RelayCmd::INTRO_ESTABLISHED, &[]).unwrap(),
        RelayMsg::IntroEstablished(IntroEstablished::default())
    );
    // rend-spec-v3 §3.2.2: STATUS 0001, one unknown extension kept.
    check_msg(
        40,
        &h("0001 01 7f 02 abcd"),
        RelayMsg::IntroduceAck(IntroduceAck {
            status: IntroduceAckStatus::UNKNOWN_SERVICE,
            extensions: ExtList(vec![Extension {
                ext_type: 0x7f,
                body: Cow::Owned(h("abcd")),
            }]),
        }),
    );
}

#[test]
fn introduce1_and_plaintext() {
    // rend-spec-v3 §3.2.1 + §3.3.2.
    let mut body = vec![0u8; 20];
    body.extend(h("02 0020"));
    body.extend([0x01; 32]);
    body.extend(h("00"));
    body.extend([0x02; 32]); // CLIENT_PK
    body.extend([0x03; 10]); // ENCRYPTED_DATA
    body.extend([0x04; 32]); // MAC
    let msg = Introduce {
        legacy_key_id: [0; 20],
        auth_key_type: AuthKeyType::ED25519_SHA3_256,
        auth_key: Cow::Owned(vec![1; 32]),
        extensions: ExtList::new(),
        client_pk: [2; 32],
        encrypted_data: Cow::Owned(vec![3; 10]),
        mac: [4; 32],
    };
    check_msg(34, &body, RelayMsg::Introduce1(msg.clone()));
    check_msg(35, &body, RelayMsg::Introduce2(msg.clone()));
    let (_, range) = Introduce::decode_with_ranges(&body).unwrap();
    assert_eq!(range, 0..body.len() - 32);
    let mut m = Vec::new();
    msg.encode_mac_input(&mut m).unwrap();
    assert_eq!(m, body[range]);
    assert!(matches!(
        Introduce::decode(&body[..body.len() - 42]),
        Err(Error::Truncated {
            field: "INTRODUCE MAC",
            ..
        })
    ));

    // §3.3 plaintext: cookie, one CC request extension (prop 324 §9.2), onion key, two
    // link specifiers, then padding that is ignored.
    let mut pt = vec![0x09; 20];
    pt.extend(h("01 01 00 01 0020"));
    pt.extend([0x0e; 32]);
    pt.extend(h("02 00 06 c0000201 0050 02 14"));
    pt.extend([0x0f; 20]);
    let expect = IntroducePlaintext {
        rendezvous_cookie: [9; 20],
        extensions: ExtList(vec![Extension::from_typed(&CcRequest).unwrap()]),
        onion_key_type: OnionKeyType::NTOR,
        onion_key: Cow::Owned(vec![0x0e; 32]),
        link_specs: vec![
            LinkSpec::OrPortV4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 80)),
            LinkSpec::RsaId([0x0f; 20]),
        ],
    };
    let mut enc = Vec::new();
    expect.encode(&mut enc).unwrap();
    assert_eq!(hex::encode(&enc), hex::encode(&pt));
    pt.extend([0; 30]);
    let dec = IntroducePlaintext::decode(&pt).unwrap();
    assert_eq!(dec, expect);
    assert!(dec.extensions.get::<CcRequest>().is_some());
}

#[test]
fn rendezvous_messages() {
    check_msg(
        33,
        &[0x21; 20],
        RelayMsg::EstablishRendezvous(EstablishRendezvous { cookie: [0x21; 20] }),
    );
    let mut body = vec![0x21; 20];
    body.extend([0x31; 32]);
    body.extend([0x41; 32]);
    check_msg(
        36,
        &body,
        RelayMsg::Rendezvous1(Rendezvous1 {
            cookie: [0x21; 20],
            handshake_info: Cow::Owned(body[20..].to_vec()),
        }),
    );
    check_msg(
        37,
        &body[20..],
        RelayMsg::Rendezvous2(Rendezvous2 {
            handshake_info: Cow::Owned(body[20..].to_vec()),
        }),
    );
    let (pk, auth) = split_handshake_info(&body[20..]).unwrap();
    assert_eq!((pk, auth), (&[0x31; 32], &[0x41; 32]));
}

#[test]
fn ntor_v3_extensions() {
    // prop 332 message encoding with prop 324 §10.3 fields: N_EXTENSIONS 01, [01] len 00.
    let b = h("01 01 00");
    let l = ExtList::decode_all(&b).unwrap();
    assert!(l.get::<CcRequest>().is_some());
    let b = h("02 02 01 1f 02 01 20");
    let l = ExtList::decode_all(&b).unwrap();
    // The first occurrence wins.
    assert_eq!(
        l.get::<CcResponse>().unwrap().unwrap(),
        CcResponse { sendme_inc: 31 }
    );
    let mut out = Vec::new();
    l.encode(&mut out).unwrap();
    assert_eq!(out, h("02 02 01 1f 02 01 20"));
    assert!(matches!(
        ExtList::decode_all(&h("01 01 05 00")),
        Err(Error::Truncated { .. })
    ));
    assert!(matches!(
        ExtList::decode_all(&h("00 00")),
        Err(Error::TrailingBytes { .. })
    ));
}
