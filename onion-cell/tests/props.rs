//! Property tests: encode→decode round trips for every cell and message type, decoding
//! arbitrary bytes never panics, and the streaming decoder is independent of how the
//! stream is split.

use onion_cell::chancell::*;
use onion_cell::codec::{decode_cell, encode_cell, encode_cell_into, CellDecoder, CellFormat};
use onion_cell::extension::{CcResponse, DosParamType, DosParams, ExtBody, ExtList, Extension};
use onion_cell::hs::*;
use onion_cell::linkspec::LinkSpec;
use onion_cell::relay::{RelayCell, StreamId};
use onion_cell::relaymsg::*;
use onion_cell::CircId;
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

fn cow(max: usize) -> impl Strategy<Value = Cow<'static, [u8]>> {
    bytes(max).prop_map(Cow::Owned)
}

fn arr<const N: usize>() -> impl Strategy<Value = [u8; N]> {
    prop::collection::vec(any::<u8>(), N).prop_map(|v| v.try_into().unwrap())
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

fn netinfo_addr() -> impl Strategy<Value = NetinfoAddr<'static>> {
    prop_oneof![
        ip().prop_map(NetinfoAddr::Ip),
        (any::<u8>(), bytes(20))
            .prop_filter("not a well-formed address", |(t, v)| {
                !(*t == 4 && v.len() == 4 || *t == 6 && v.len() == 16)
            })
            .prop_map(|(atype, v)| NetinfoAddr::Other {
                atype,
                value: Cow::Owned(v)
            }),
    ]
}

fn is_known_chan(cmd: u8) -> bool {
    ChanCmd(cmd).name().is_some()
}

fn chan_msg() -> impl Strategy<Value = ChanMsg<'static>> {
    prop_oneof![
        Just(ChanMsg::Padding),
        (0u16..600).prop_map(|len| ChanMsg::Vpadding { len }),
        prop::collection::vec(any::<u16>(), 0..20)
            .prop_map(|versions| ChanMsg::Versions(Versions { versions })),
        prop::collection::vec((any::<u8>(), cow(100)), 0..5).prop_map(|c| ChanMsg::Certs(Certs {
            certs: c
                .into_iter()
                .map(|(cert_type, body)| CertEntry { cert_type, body })
                .collect()
        })),
        (arr::<32>(), prop::collection::vec(any::<u16>(), 0..10)).prop_map(
            |(challenge, methods)| { ChanMsg::AuthChallenge(AuthChallenge { challenge, methods }) }
        ),
        (any::<u16>(), cow(300))
            .prop_map(|(auth_type, auth)| ChanMsg::Authenticate(Authenticate { auth_type, auth })),
        cow(100).prop_map(ChanMsg::Authorize),
        (
            any::<u32>(),
            netinfo_addr(),
            prop::collection::vec(netinfo_addr(), 0..4)
        )
            .prop_map(
                |(timestamp, other_addr, my_addrs)| ChanMsg::Netinfo(Netinfo {
                    timestamp,
                    other_addr,
                    my_addrs
                })
            ),
        prop::collection::vec(any::<u8>(), TAP_C_HANDSHAKE_LEN)
            .prop_map(|v| ChanMsg::Create(Cow::Owned(v))),
        prop::collection::vec(any::<u8>(), TAP_S_HANDSHAKE_LEN)
            .prop_map(|v| ChanMsg::Created(Cow::Owned(v))),
        arr::<20>().prop_map(ChanMsg::CreateFast),
        (arr::<20>(), arr::<20>()).prop_map(|(y, kh)| ChanMsg::CreatedFast { y, kh }),
        (any::<u16>(), cow(505)).prop_map(|(t, hdata)| ChanMsg::Create2(Create2 {
            handshake_type: HandshakeType(t),
            hdata
        })),
        cow(507).prop_map(|hdata| ChanMsg::Created2(Created2 { hdata })),
        any::<u8>().prop_map(|r| ChanMsg::Destroy(DestroyReason(r))),
        arr::<509>().prop_map(|b| ChanMsg::Relay(b.into())),
        arr::<509>().prop_map(|b| ChanMsg::RelayEarly(b.into())),
        (any::<u8>(), any::<u8>(), any::<u16>(), any::<u16>()).prop_map(
            |(version, command, l, h)| {
                ChanMsg::PaddingNegotiate(PaddingNegotiate {
                    version,
                    command,
                    ito_low_ms: l,
                    ito_high_ms: h,
                })
            }
        ),
        // Unknown fixed-length commands keep all 509 body bytes; variable-length ones keep
        // exactly their body.
        (
            (13u8..128).prop_filter("unknown", |c| !is_known_chan(*c)),
            arr::<509>()
        )
            .prop_map(|(cmd, b)| ChanMsg::Unknown {
                cmd: ChanCmd(cmd),
                body: Cow::Owned(b.to_vec())
            }),
        ((133u8..=255), cow(300)).prop_map(|(cmd, body)| ChanMsg::Unknown {
            cmd: ChanCmd(cmd),
            body
        }),
    ]
}

fn ext_list() -> impl Strategy<Value = ExtList<'static>> {
    prop::collection::vec((any::<u8>(), cow(30)), 0..4).prop_map(|v| {
        ExtList(
            v.into_iter()
                .map(|(ext_type, body)| Extension { ext_type, body })
                .collect(),
        )
    })
}

fn link_spec() -> impl Strategy<Value = LinkSpec<'static>> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(a, p)| LinkSpec::OrPortV4(SocketAddrV4::new(Ipv4Addr::from(a), p))),
        (any::<u128>(), any::<u16>()).prop_map(|(a, p)| LinkSpec::OrPortV6(SocketAddrV6::new(
            Ipv6Addr::from(a),
            p,
            0,
            0
        ))),
        arr::<20>().prop_map(LinkSpec::RsaId),
        arr::<32>().prop_map(LinkSpec::Ed25519Id),
        (4u8..=255, cow(40)).prop_map(|(ls_type, body)| LinkSpec::Unknown { ls_type, body }),
    ]
}

fn host() -> impl Strategy<Value = Cow<'static, str>> {
    prop_oneof![
        "[a-z0-9.-]{1,40}".prop_map(Cow::Owned),
        any::<u128>().prop_map(|a| Cow::Owned(Ipv6Addr::from(a).to_string())),
    ]
}

fn is_known_relay(cmd: u8) -> bool {
    matches!(cmd, 1..=15 | 32..=40 | 43 | 44)
}

fn relay_msg() -> impl Strategy<Value = RelayMsg<'static>> {
    let stream = prop_oneof![
        (host(), 1u16..=65535, any::<u32>()).prop_map(|(host, port, f)| RelayMsg::Begin(Begin {
            host,
            port,
            flags: BeginFlags(f)
        })),
        cow(MAX_RELAY_DATA_LEN).prop_map(|data| RelayMsg::Data(Data { data })),
        (any::<u8>().prop_filter("not EXITPOLICY", |r| *r != 4))
            .prop_map(|r| RelayMsg::End(End::new(EndReason(r)))),
        (prop::option::of((ip(), any::<u32>()))).prop_map(|a| RelayMsg::End(End {
            reason: EndReason::EXITPOLICY,
            exit_policy: a.map(|(addr, ttl)| ExitPolicyAddr { addr, ttl }),
        })),
        // 0.0.0.0 is the marker of the IPv6 form (tor-spec §6.2), so it is not an IPv4 answer.
        prop::option::of((
            ip().prop_filter("not 0.0.0.0", |a| *a != IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            any::<u32>()
        ))
        .prop_map(|addr| RelayMsg::Connected(Connected { addr })),
        prop::option::of(arr::<20>()).prop_map(|tag| RelayMsg::Sendme(Sendme { tag })),
        Just(RelayMsg::Truncate),
        any::<u8>().prop_map(|r| RelayMsg::Truncated(DestroyReason(r))),
        Just(RelayMsg::Drop),
        "[a-z0-9.-]{0,60}".prop_map(|q| RelayMsg::Resolve(Resolve { query: q.into() })),
        prop::collection::vec(
            (
                prop_oneof![
                    cow(40).prop_map(ResolvedValue::Hostname),
                    ip().prop_map(ResolvedValue::Ip),
                    cow(40).prop_map(ResolvedValue::TransientError),
                    cow(40).prop_map(ResolvedValue::NontransientError),
                    (
                        any::<u8>().prop_filter("unknown", |t| ![0, 4, 6, 0xf0, 0xf1].contains(t)),
                        cow(40)
                    )
                        .prop_map(|(answer_type, value)| {
                            ResolvedValue::Unknown { answer_type, value }
                        }),
                ],
                any::<u32>()
            ),
            0..5
        )
        .prop_map(|a| RelayMsg::Resolved(Resolved {
            answers: a
                .into_iter()
                .map(|(value, ttl)| ResolvedAnswer { value, ttl })
                .collect()
        })),
        Just(RelayMsg::BeginDir),
        any::<u32>().prop_map(|kbps_ewma| RelayMsg::Xon(Xon { kbps_ewma })),
        Just(RelayMsg::Xoff),
    ];
    let circ = prop_oneof![
        (
            prop::collection::vec(link_spec(), 0..5),
            any::<u16>(),
            cow(200)
        )
            .prop_map(|(linkspecs, t, hdata)| RelayMsg::Extend2(Extend2 {
                linkspecs,
                handshake_type: HandshakeType(t),
                hdata
            })),
        cow(200).prop_map(|hdata| RelayMsg::Extended2(Extended2 { hdata })),
        (
            any::<u32>(),
            any::<u16>(),
            prop::collection::vec(any::<u8>(), TAP_C_HANDSHAKE_LEN),
            arr::<20>()
        )
            .prop_map(|(a, port, skin, rsa_id)| RelayMsg::Extend(Extend {
                addr: Ipv4Addr::from(a),
                port,
                onion_skin: Cow::Owned(skin),
                rsa_id
            })),
        prop::collection::vec(any::<u8>(), TAP_S_HANDSHAKE_LEN).prop_map(|v| RelayMsg::Extended(
            Extended {
                hdata: Cow::Owned(v)
            }
        )),
        (
            (16u8..=255).prop_filter("unknown", |c| !is_known_relay(*c)),
            cow(100)
        )
            .prop_map(|(c, body)| RelayMsg::Unknown {
                cmd: RelayCmd(c),
                body
            }),
    ];
    let hs = prop_oneof![
        (any::<u8>(), cow(40), ext_list(), arr::<32>(), cow(80)).prop_map(|(t, k, e, mac, sig)| {
            RelayMsg::EstablishIntro(EstablishIntro {
                auth_key_type: AuthKeyType(t),
                auth_key: k,
                extensions: e,
                handshake_auth: mac,
                sig,
            })
        }),
        arr::<20>()
            .prop_map(|cookie| RelayMsg::EstablishRendezvous(EstablishRendezvous { cookie })),
        (
            arr::<20>(),
            any::<u8>(),
            cow(40),
            ext_list(),
            arr::<32>(),
            cow(100),
            arr::<32>(),
            any::<bool>()
        )
            .prop_map(|(l, t, k, e, pk, data, mac, two)| {
                let m = Introduce {
                    legacy_key_id: l,
                    auth_key_type: AuthKeyType(t),
                    auth_key: k,
                    extensions: e,
                    client_pk: pk,
                    encrypted_data: data,
                    mac,
                };
                if two {
                    RelayMsg::Introduce2(m)
                } else {
                    RelayMsg::Introduce1(m)
                }
            }),
        (arr::<20>(), cow(100)).prop_map(|(cookie, handshake_info)| RelayMsg::Rendezvous1(
            Rendezvous1 {
                cookie,
                handshake_info
            }
        )),
        cow(100).prop_map(|handshake_info| RelayMsg::Rendezvous2(Rendezvous2 { handshake_info })),
        ext_list()
            .prop_map(|extensions| RelayMsg::IntroEstablished(IntroEstablished { extensions })),
        Just(RelayMsg::RendezvousEstablished),
        (any::<u16>(), ext_list()).prop_map(|(s, extensions)| RelayMsg::IntroduceAck(
            IntroduceAck {
                status: IntroduceAckStatus(s),
                extensions
            }
        )),
    ];
    prop_oneof![stream, circ, hs]
}

fn format() -> impl Strategy<Value = CellFormat> {
    prop_oneof![
        Just(CellFormat::UNNEGOTIATED),
        (1u16..=6).prop_map(|v| CellFormat::for_version(v).unwrap())
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn chan_cell_round_trip(msg in chan_msg(), id in any::<u32>(), v3 in any::<bool>()) {
        let format = CellFormat::for_version(if v3 { 3 } else { 4 }).unwrap();
        let id = if v3 { id & 0xffff } else { id };
        let cell = ChanCell::new(CircId::new(id), msg);
        let mut wire = Vec::new();
        encode_cell(format, &cell, &mut wire).unwrap();
        let (got, n) = decode_cell(format, &wire).unwrap();
        prop_assert_eq!(n, wire.len());
        prop_assert_eq!(&got, &cell);
        // Encoding into a slice gives the same bytes.
        let mut buf = vec![0u8; wire.len()];
        prop_assert_eq!(encode_cell_into(format, &cell, &mut buf).unwrap(), wire.len());
        prop_assert_eq!(&buf, &wire);
        // ... and a slice one byte short is an error, not a panic.
        let mut short = vec![0u8; wire.len() - 1];
        prop_assert!(encode_cell_into(format, &cell, &mut short).is_err());
        prop_assert_eq!(got.into_owned(), cell);
    }

    #[test]
    fn relay_msg_round_trip(msg in relay_msg(), sid in any::<u16>(), seed in any::<u64>()) {
        let body = msg.to_body_vec().unwrap();
        let got = RelayMsg::decode(msg.cmd(), &body).unwrap();
        prop_assert_eq!(&got, &msg);
        if body.len() <= MAX_RELAY_DATA_LEN {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
            let cell = RelayCell::new(StreamId::new(sid), msg.clone());
            let b = cell.encode(&mut rng).unwrap();
            prop_assert_eq!(b.decode().unwrap(), cell);
        }
        prop_assert_eq!(got.into_owned(), msg);
    }

    #[test]
    fn intro_plaintext_round_trip(
        cookie in arr::<20>(), e in ext_list(), t in any::<u8>(), k in cow(40),
        ls in prop::collection::vec(link_spec(), 0..5), pad in 0usize..40,
    ) {
        let p = IntroducePlaintext {
            rendezvous_cookie: cookie,
            extensions: e,
            onion_key_type: OnionKeyType(t),
            onion_key: k,
            link_specs: ls,
        };
        let mut v = Vec::new();
        p.encode(&mut v).unwrap();
        v.resize(v.len() + pad, 0);
        prop_assert_eq!(IntroducePlaintext::decode(&v).unwrap(), p);
    }

    #[test]
    fn typed_extensions_round_trip(
        params in prop::collection::vec((any::<u8>(), any::<u64>()), 0..28),
        inc in any::<u8>(),
        other in ext_list(),
    ) {
        let dos = DosParams(params.into_iter().map(|(t, v)| (DosParamType(t), v)).collect());
        let cc = CcResponse { sendme_inc: inc };
        let mut l = other.clone();
        l.push(&dos).unwrap();
        l.push(&cc).unwrap();
        let mut v = Vec::new();
        l.encode(&mut v).unwrap();
        let back = ExtList::decode_all(&v).unwrap();
        prop_assert_eq!(&back, &l);
        // The typed getters return the first occurrence of each type.
        let first_dos = other.0.iter().find(|e| e.ext_type == DosParams::EXT_TYPE).is_none();
        if first_dos {
            prop_assert_eq!(back.get::<DosParams>().unwrap().unwrap(), dos);
        }
        if other.0.iter().all(|e| e.ext_type != CcResponse::EXT_TYPE) {
            prop_assert_eq!(back.get::<CcResponse>().unwrap().unwrap(), cc);
        }
    }

    #[test]
    fn link_spec_list_round_trip(ls in prop::collection::vec(link_spec(), 0..10)) {
        let mut v = Vec::new();
        onion_cell::linkspec::encode_list(&ls, &mut v).unwrap();
        let mut r = onion_cell::reader::Reader::new(&v);
        prop_assert_eq!(onion_cell::linkspec::decode_list(&mut r).unwrap(), ls);
        prop_assert!(r.is_empty());
    }

    #[test]
    fn chan_decode_never_panics(f in format(), data in bytes(1200)) {
        let _ = decode_cell(f, &data);
        let mut dec = CellDecoder::new(f);
        dec.push(&data);
        for _ in 0..data.len() + 1 {
            match dec.next_cell() {
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => break,
            }
        }
    }

    #[test]
    fn arbitrary_stream_split_invariance(
        f in format(),
        data in bytes(3000),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        // Cells and errors come out the same whether the bytes arrive at once or in pieces.
        fn run(f: CellFormat, chunks: &[&[u8]]) -> Vec<Result<ChanCell<'static>, onion_cell::Error>> {
            let mut dec = CellDecoder::new(f);
            let mut out = Vec::new();
            for c in chunks {
                dec.push(c);
                loop {
                    match dec.next_cell() {
                        Ok(Some(cell)) => out.push(Ok(cell.into_owned())),
                        Ok(None) => break,
                        Err(e) => out.push(Err(e)),
                    }
                }
            }
            out
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        points.push(0);
        points.push(data.len());
        points.sort_unstable();
        let chunks: Vec<&[u8]> = points.windows(2).map(|w| &data[w[0]..w[1]]).collect();
        prop_assert_eq!(run(f, &[&data]), run(f, &chunks));
    }

    #[test]
    fn chan_body_decode_never_panics(cmd in any::<u8>(), data in bytes(600)) {
        let _ = ChanMsg::decode(ChanCmd(cmd), &data);
    }

    #[test]
    fn relay_decode_never_panics(cmd in any::<u8>(), data in bytes(600), body in arr::<509>()) {
        let _ = RelayMsg::decode(RelayCmd(cmd), &data);
        let _ = RelayCell::decode(&body);
        let _ = IntroducePlaintext::decode(&data);
        let _ = ExtList::decode_all(&data);
        let _ = EstablishIntro::decode_with_ranges(&data);
        let _ = Introduce::decode_with_ranges(&data);
    }

    #[test]
    fn stream_split_invariance(
        msgs in prop::collection::vec((any::<u32>(), chan_msg()), 0..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let v4 = CellFormat::for_version(4).unwrap();
        // A pre-negotiation VERSIONS cell, then cells in link protocol 4.
        let versions = ChanCell::new(CircId::ZERO, ChanMsg::Versions(Versions { versions: vec![3, 4, 5] }));
        let mut wire = Vec::new();
        encode_cell(CellFormat::UNNEGOTIATED, &versions, &mut wire).unwrap();
        let cells: Vec<ChanCell<'static>> =
            msgs.into_iter().map(|(id, m)| ChanCell::new(CircId::new(id), m)).collect();
        for c in &cells {
            encode_cell(v4, c, &mut wire).unwrap();
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        let mut dec = CellDecoder::new(CellFormat::UNNEGOTIATED);
        let mut got = Vec::new();
        for w in points.windows(2) {
            dec.push(&wire[w[0]..w[1]]);
            while let Some(c) = dec.next_cell().unwrap() {
                let c = c.into_owned();
                if matches!(c.msg, ChanMsg::Versions(_)) && dec.format() == CellFormat::UNNEGOTIATED {
                    dec.set_format(v4);
                    prop_assert_eq!(&c, &versions);
                } else {
                    got.push(c);
                }
            }
        }
        prop_assert_eq!(dec.buffered(), 0);
        prop_assert_eq!(got, cells);
    }
}
