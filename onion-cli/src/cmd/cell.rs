//! `onion cell decode`: decode captured Tor cells to JSON (tor-spec §3–§7, rend-spec-v3).
//!
//! ```text
//! onion cell decode --link-version N [--plaintext] [--stream] HEX
//! ```
//!
//! - `--link-version N`: the negotiated link protocol (circuit ids are 2 bytes for N <= 3,
//!   4 bytes from 4 on); `0` means "before negotiation" (how the first VERSIONS cell is read).
//! - `--plaintext`: the body of a RELAY/RELAY_EARLY cell is already decrypted; decode its
//!   relay header and message too.
//! - `--stream`: HEX holds several cells back to back; print one JSON object per line.
//!   Without it HEX must hold exactly one cell.
//! - HEX may contain whitespace and `:`; `-` reads it from stdin.
//!
//! Field names follow the spec (and stem's `stem.client.cell` where it has the same field):
//! byte strings are lower-case hex, numbers are numbers, enumerations give both the spec's
//! name and the numeric value. On error, nothing is printed to stdout.

use std::io::Read;
use std::net::IpAddr;

use onion_cell::chancell::{CertEntry, ChanMsg, NetinfoAddr};
use onion_cell::codec::{decode_cell, CellFormat, DecodeError};
use onion_cell::extension::{DosParams, ExtList};
use onion_cell::linkspec::LinkSpec;
use onion_cell::relay::RelayCellBody;
use onion_cell::relaymsg::{RelayMsg, ResolvedValue};
use onion_cell::{ChanCell, Error};
use serde_json::{json, Map, Value};

/// `onion cell` (see the module documentation).
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Decode cells given in hex, one JSON object per cell.
    Decode(DecodeArgs),
}

/// `onion cell decode`.
#[derive(clap::Args)]
struct DecodeArgs {
    /// The negotiated link protocol (0: before negotiation; circuit ids are 4 bytes from 4 on).
    #[arg(long, value_name = "N")]
    link_version: u16,
    /// RELAY bodies are already decrypted: decode the relay header and message too.
    #[arg(long)]
    plaintext: bool,
    /// The input holds several cells back to back.
    #[arg(long)]
    stream: bool,
    /// The cells in hex (whitespace and `:` allowed), or `-` for stdin.
    #[arg(value_name = "HEX|-", allow_hyphen_values = true)]
    input: String,
}

/// Run the subcommand.
pub fn run(args: Args) -> Result<(), String> {
    let Sub::Decode(DecodeArgs {
        link_version: version,
        plaintext,
        stream,
        input,
    }) = args.command;
    let text = if input == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("reading stdin: {e}"))?;
        s
    } else {
        input
    };
    let clean: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    let bytes = hex::decode(&clean).map_err(|e| format!("bad hex: {e}"))?;
    let format = if version == 0 {
        CellFormat::UNNEGOTIATED
    } else {
        CellFormat::for_version(version).map_err(|e| e.to_string())?
    };
    let out = decode_to_json(format, &bytes, plaintext, stream)?;
    for v in out {
        println!("{v}");
    }
    Ok(())
}

/// Decodes `bytes` into one JSON value per cell (exactly one unless `stream`).
pub fn decode_to_json(
    format: CellFormat,
    bytes: &[u8],
    plaintext: bool,
    stream: bool,
) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    loop {
        let rest = &bytes[off..];
        let (cell, n) = decode_cell(format, rest).map_err(|e| match e {
            DecodeError::NeedMore { need } => {
                format!("incomplete cell at offset {off}: {need} more byte(s) needed")
            }
            DecodeError::Malformed(e) => format!("malformed cell at offset {off}: {e}"),
            e => e.to_string(),
        })?;
        out.push(cell_json(&cell, n, plaintext).map_err(|e| format!("cell at offset {off}: {e}"))?);
        off += n;
        if off == bytes.len() {
            return Ok(out);
        }
        if !stream {
            return Err(format!(
                "{} trailing byte(s) after the cell (use --stream for several cells)",
                bytes.len() - off
            ));
        }
    }
}

fn hx(b: &[u8]) -> Value {
    Value::String(hex::encode(b))
}

fn named(name: Option<&str>, value: u64) -> (Value, Value) {
    (
        name.map_or(Value::Null, |n| Value::String(n.into())),
        json!(value),
    )
}

fn ip_json(a: IpAddr) -> Value {
    json!({"type": if a.is_ipv4() { "IPv4" } else { "IPv6" }, "address": a.to_string()})
}

fn netinfo_addr(a: &NetinfoAddr<'_>) -> Value {
    match a {
        NetinfoAddr::Ip(ip) => ip_json(*ip),
        NetinfoAddr::Other { atype, value } => json!({"type": atype, "value": hx(value)}),
    }
}

fn cell_json(cell: &ChanCell<'_>, wire_len: usize, plaintext: bool) -> Result<Value, Error> {
    let cmd = cell.msg.cmd();
    let (name, value) = named(cmd.name(), u64::from(cmd.0));
    let mut m = Map::new();
    m.insert("circ_id".into(), json!(cell.circ_id.get()));
    m.insert("command".into(), name);
    m.insert("command_value".into(), value);
    m.insert("wire_length".into(), json!(wire_len));
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    match &cell.msg {
        ChanMsg::Padding => {}
        ChanMsg::Vpadding { len } => put("length", json!(len)),
        ChanMsg::Versions(v) => put("versions", json!(v.versions)),
        ChanMsg::Certs(c) => put(
            "certificates",
            Value::Array(c.certs.iter().map(cert_json).collect()),
        ),
        ChanMsg::AuthChallenge(a) => {
            put("challenge", hx(&a.challenge));
            put("methods", json!(a.methods));
        }
        ChanMsg::Authenticate(a) => {
            put("auth_type", json!(a.auth_type));
            put("authentication", hx(&a.auth));
        }
        ChanMsg::Authorize(b) => put("body", hx(b)),
        ChanMsg::Netinfo(n) => {
            put("timestamp", json!(n.timestamp));
            put("receiver_address", netinfo_addr(&n.other_addr));
            put(
                "sender_addresses",
                Value::Array(n.my_addrs.iter().map(netinfo_addr).collect()),
            );
        }
        ChanMsg::Create(h) | ChanMsg::Created(h) => put("handshake", hx(h)),
        ChanMsg::CreateFast(x) => put("key_material", hx(x)),
        ChanMsg::CreatedFast { y, kh } => {
            put("key_material", hx(y));
            put("derivative_key", hx(kh));
        }
        ChanMsg::Create2(c) => {
            let (n, v) = named(c.handshake_type.name(), u64::from(c.handshake_type.0));
            put("handshake_type", n);
            put("handshake_type_value", v);
            put("handshake", hx(&c.hdata));
        }
        ChanMsg::Created2(c) => put("handshake", hx(&c.hdata)),
        ChanMsg::Destroy(r) => {
            let (n, v) = named(r.name(), u64::from(r.0));
            put("reason", n);
            put("reason_value", v);
        }
        ChanMsg::Relay(p) | ChanMsg::RelayEarly(p) => {
            if plaintext {
                put("relay", relay_json(&RelayCellBody(*p.as_bytes()))?);
            } else {
                put("payload", hx(p.as_bytes()));
            }
        }
        ChanMsg::PaddingNegotiate(p) => {
            put("version", json!(p.version));
            put(
                "padding_command",
                json!(match p.command {
                    1 => "STOP",
                    2 => "START",
                    _ => "unknown",
                }),
            );
            put("padding_command_value", json!(p.command));
            put("ito_low_ms", json!(p.ito_low_ms));
            put("ito_high_ms", json!(p.ito_high_ms));
        }
        ChanMsg::Unknown { body, .. } => put("body", hx(body)),
        _ => put("body", Value::Null),
    }
    Ok(Value::Object(m))
}

fn cert_json(c: &CertEntry<'_>) -> Value {
    let name = usize::from(c.cert_type)
        .checked_sub(1)
        .and_then(|i| CertEntry::TYPE_NAMES.get(i));
    json!({"type": c.cert_type, "type_name": name, "certificate": hx(&c.body)})
}

/// The JSON of a plaintext relay body: header fields and the decoded message.
fn relay_json(body: &RelayCellBody) -> Result<Value, Error> {
    let cell = body.decode()?;
    let cmd = body.cmd();
    let (name, value) = named(cmd.name(), u64::from(cmd.0));
    Ok(json!({
        "command": name,
        "command_value": value,
        "recognized": body.recognized(),
        "stream_id": onion_cell::relay::StreamId::to_field(body.stream_id()),
        "digest": hx(&body.digest()),
        "length": body.length(),
        "data": hx(body.data()?),
        "message": relay_msg_json(&cell.msg),
    }))
}

fn ext_json(l: &ExtList<'_>) -> Value {
    Value::Array(
        l.0.iter()
            .map(|e| json!({"type": e.ext_type, "body": hx(&e.body)}))
            .collect(),
    )
}

fn linkspec_json(l: &LinkSpec<'_>) -> Value {
    match l {
        LinkSpec::OrPortV4(a) => {
            json!({"type": 0, "address": a.ip().to_string(), "port": a.port()})
        }
        LinkSpec::OrPortV6(a) => {
            json!({"type": 1, "address": a.ip().to_string(), "port": a.port()})
        }
        LinkSpec::RsaId(id) => json!({"type": 2, "rsa_id": hx(id)}),
        LinkSpec::Ed25519Id(id) => json!({"type": 3, "ed25519_id": hx(id)}),
        LinkSpec::Unknown { ls_type, body } => json!({"type": ls_type, "body": hx(body)}),
    }
}

fn lossy_str(b: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(b).into_owned())
}

fn relay_msg_json(msg: &RelayMsg<'_>) -> Value {
    match msg {
        RelayMsg::Begin(b) => {
            json!({"address": b.host, "port": b.port, "flags": b.flags.0})
        }
        RelayMsg::Data(d) => json!({"length": d.data.len()}),
        RelayMsg::End(e) => {
            let (n, v) = named(e.reason.name(), u64::from(e.reason.0));
            let mut o = json!({"reason": n, "reason_value": v});
            if let Some(p) = &e.exit_policy {
                o["address"] = json!(p.addr.to_string());
                o["ttl"] = json!(p.ttl);
            }
            o
        }
        RelayMsg::Connected(c) => match c.addr {
            Some((a, ttl)) => json!({"address": a.to_string(), "ttl": ttl}),
            None => json!({}),
        },
        RelayMsg::Sendme(s) => match &s.tag {
            Some(t) => json!({"version": 1, "digest": hx(t)}),
            None => json!({"version": 0}),
        },
        RelayMsg::Extend(e) => json!({
            "address": e.addr.to_string(), "port": e.port,
            "onion_skin": hx(&e.onion_skin), "rsa_id": hx(&e.rsa_id),
        }),
        RelayMsg::Extended(e) => json!({"handshake": hx(&e.hdata)}),
        RelayMsg::Truncated(r) => {
            let (n, v) = named(r.name(), u64::from(r.0));
            json!({"reason": n, "reason_value": v})
        }
        RelayMsg::Resolve(r) => json!({"query": r.query}),
        RelayMsg::Resolved(r) => Value::Array(
            r.answers
                .iter()
                .map(|a| {
                    let (t, v) = match &a.value {
                        ResolvedValue::Hostname(h) => ("hostname", lossy_str(h)),
                        ResolvedValue::Ip(ip) => (
                            if ip.is_ipv4() { "IPv4" } else { "IPv6" },
                            json!(ip.to_string()),
                        ),
                        ResolvedValue::TransientError(v) => ("transient_error", hx(v)),
                        ResolvedValue::NontransientError(v) => ("nontransient_error", hx(v)),
                        ResolvedValue::Unknown { answer_type, value } => {
                            return json!({"type": answer_type, "value": hx(value), "ttl": a.ttl})
                        }
                    };
                    json!({"type": t, "value": v, "ttl": a.ttl})
                })
                .collect(),
        ),
        RelayMsg::Extend2(e) => {
            let (n, v) = named(e.handshake_type.name(), u64::from(e.handshake_type.0));
            json!({
                "link_specifiers": e.linkspecs.iter().map(linkspec_json).collect::<Vec<_>>(),
                "handshake_type": n, "handshake_type_value": v, "handshake": hx(&e.hdata),
            })
        }
        RelayMsg::Extended2(e) => json!({"handshake": hx(&e.hdata)}),
        RelayMsg::EstablishIntro(e) => {
            let mut o = json!({
                "auth_key_type": e.auth_key_type.0, "auth_key": hx(&e.auth_key),
                "extensions": ext_json(&e.extensions),
                "handshake_auth": hx(&e.handshake_auth), "signature": hx(&e.sig),
            });
            if let Some(Ok(d)) = e.extensions.get::<DosParams>() {
                o["dos_params"] = Value::Array(
                    d.0.iter()
                        .map(|(t, v)| json!({"type": t.0, "value": v}))
                        .collect(),
                );
            }
            o
        }
        RelayMsg::EstablishRendezvous(e) => json!({"rendezvous_cookie": hx(&e.cookie)}),
        RelayMsg::Introduce1(i) | RelayMsg::Introduce2(i) => json!({
            "legacy_key_id": hx(&i.legacy_key_id), "auth_key_type": i.auth_key_type.0,
            "auth_key": hx(&i.auth_key), "extensions": ext_json(&i.extensions),
            "client_pk": hx(&i.client_pk), "encrypted_data": hx(&i.encrypted_data),
            "mac": hx(&i.mac),
        }),
        RelayMsg::Rendezvous1(r) => json!({
            "rendezvous_cookie": hx(&r.cookie), "handshake_info": hx(&r.handshake_info),
        }),
        RelayMsg::Rendezvous2(r) => json!({"handshake_info": hx(&r.handshake_info)}),
        RelayMsg::IntroEstablished(i) => json!({"extensions": ext_json(&i.extensions)}),
        RelayMsg::IntroduceAck(a) => {
            let name = match a.status.0 {
                0 => "success",
                1 => "service id not recognized",
                2 => "bad message format",
                3 => "can't relay cell to service",
                _ => "unknown",
            };
            json!({"status": a.status.0, "status_name": name, "extensions": ext_json(&a.extensions)})
        }
        RelayMsg::Xon(x) => json!({"version": 0, "kbps_ewma": x.kbps_ewma}),
        RelayMsg::Xoff => json!({"version": 0}),
        RelayMsg::Unknown { body, .. } => json!({"body": hx(body)}),
        _ => json!({}),
    }
}
