//! `onion cell decode` agrees with an independent decoder, stem's `stem.client.cell`
//! (Debian python3-stem). Skipped (with a message) when stem is not importable.

use std::process::Command;

use serde_json::{json, Value};

const PYTHON: &str = "/usr/bin/python3";

/// Decodes one cell with stem and prints the fields both decoders share, normalised.
const STEM_SCRIPT: &str = r#"
import sys, json, calendar, ipaddress
from stem.client.cell import Cell, CircuitCell
lp = int(sys.argv[1])
cell, rest = Cell.pop(bytes.fromhex(sys.argv[2]), lp)
o = {"command_value": cell.VALUE}
if isinstance(cell, CircuitCell):
    o["circ_id"] = cell.circ_id
n = type(cell).__name__
ip = lambda a: ipaddress.ip_address(a.value).compressed
if n == "VersionsCell":
    o["versions"] = cell.versions
elif n == "NetinfoCell":
    o["timestamp"] = calendar.timegm(cell.timestamp.utctimetuple())
    o["receiver_address"] = ip(cell.receiver_address)
    o["sender_addresses"] = [ip(a) for a in cell.sender_addresses]
elif n == "CertsCell":
    o["certificates"] = [[c.type_int, c.value.hex()] for c in cell.certificates]
elif n == "AuthChallengeCell":
    o["challenge"] = cell.challenge.hex()
    o["methods"] = cell.methods
elif n == "CreateFastCell":
    o["key_material"] = cell.key_material.hex()
elif n == "CreatedFastCell":
    o["key_material"] = cell.key_material.hex()
    o["derivative_key"] = cell.derivative_key.hex()
elif n == "DestroyCell":
    o["reason_value"] = cell.reason_int
elif n == "VPaddingCell":
    o["length"] = len(cell.payload)
elif n in ("RelayCell", "RelayEarlyCell"):
    o["relay"] = {"command_value": cell.command_int, "recognized": cell.recognized,
                  "stream_id": cell.stream_id, "digest": cell.digest, "data": cell.data.hex()}
print(json.dumps(o, sort_keys=True))
"#;

fn stem_available() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import stem.client.cell"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn stem_decode(link: u16, hex: &str) -> Value {
    let out = Command::new(PYTHON)
        .args(["-c", STEM_SCRIPT, &link.to_string(), hex])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "stem failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stem JSON")
}

fn onion_decode(link: u16, hex: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_onion"))
        .args([
            "cell",
            "decode",
            "--link-version",
            &link.to_string(),
            "--plaintext",
            hex,
        ])
        .output()
        .expect("run onion");
    assert!(
        out.status.success(),
        "onion failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("onion JSON")
}

/// Our JSON reduced to the keys stem's normalised output has.
fn project(ours: &Value, theirs: &Value) -> Value {
    let mut o = serde_json::Map::new();
    for k in theirs.as_object().expect("object").keys() {
        let v = match k.as_str() {
            "receiver_address" => ours[k]["address"].clone(),
            "sender_addresses" => Value::Array(
                ours[k]
                    .as_array()
                    .expect("array")
                    .iter()
                    .map(|a| a["address"].clone())
                    .collect(),
            ),
            "certificates" => Value::Array(
                ours[k]
                    .as_array()
                    .expect("array")
                    .iter()
                    .map(|c| json!([c["type"], c["certificate"]]))
                    .collect(),
            ),
            "relay" => {
                let r = &ours["relay"];
                let digest = u32::from_str_radix(r["digest"].as_str().expect("digest"), 16)
                    .expect("hex digest");
                json!({
                    "command_value": r["command_value"], "recognized": r["recognized"],
                    "stream_id": r["stream_id"], "digest": digest, "data": r["data"],
                })
            }
            _ => ours[k].clone(),
        };
        o.insert(k.clone(), v);
    }
    Value::Object(o)
}

fn fixed(link: u16, h: &str) -> String {
    let mut s: String = h.split_whitespace().collect();
    let len = if link >= 4 { 514 } else { 512 };
    while s.len() < len * 2 {
        s.push_str("00");
    }
    s
}

#[test]
fn cell_decode_agrees_with_stem() {
    if !stem_available() {
        eprintln!("skipping: python3 stem not importable");
        return;
    }
    let mut relay_data = String::from("80000001 03 02 0000 0007 00000000 0005 68656c6c6f");
    relay_data.push_str(&"00".repeat(509 - 16));
    let mut relay_end = String::from("80000001 03 03 0000 0007 1a2b3c4d 0009 04 c0000201 00000e10");
    relay_end.push_str(&"ab".repeat(509 - 20));
    let mut relay_begin = String::from("00000005 03 01 0000 0009 00000000 0014");
    relay_begin.push_str(&hex::encode("example.com:443\0"));
    relay_begin.push_str("00000001");
    relay_begin.push_str(&"00".repeat(509 - 11 - 20));
    let cases: Vec<(u16, String)> = vec![
        (2, "0000 07 0006 0003 0004 0005".into()),
        (4, fixed(4, "00000000 08 5f5e1000 04 04 7f000001 02 06 10 20010db8000000000000000000000001 04 04 c0000201")),
        (3, fixed(3, "0000 08 00000000 04 04 0a000001 01 04 04 0a000002")),
        (4, "00000000 81 000c 02 02 0003 aabbcc 07 0002 dddd".into()),
        (4, format!("00000000 82 0026 {} 0002 0001 0003", "11".repeat(32))),
        (4, fixed(4, "80000002 05 000102030405060708090a0b0c0d0e0f10111213")),
        (4, fixed(4, &format!("80000002 06 {} {}", "01".repeat(20), "02".repeat(20)))),
        (4, fixed(4, "80000004 04 03")),
        (3, fixed(3, "8004 04 0b")),
        (4, "00000000 80 0003 000000".into()),
        (4, fixed(4, "00000000 00")),
        (4, fixed(4, &relay_data)),
        (4, fixed(4, &relay_end)),
        (4, fixed(4, &relay_begin)),
    ];
    for (link, h) in cases {
        let h: String = h.split_whitespace().collect();
        let theirs = stem_decode(link, &h);
        let ours = onion_decode(link, &h);
        assert_eq!(project(&ours, &theirs), theirs, "cell {h}");
    }
}

#[test]
fn cell_decode_errors_go_to_stderr() {
    let out = Command::new(env!("CARGO_BIN_EXE_onion"))
        .args(["cell", "decode", "--link-version", "4", "80000004 04 03"])
        .output()
        .expect("run onion");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("508 more byte(s)"));
    // Malformed: VERSIONS with an odd length.
    let out = Command::new(env!("CARGO_BIN_EXE_onion"))
        .args(["cell", "decode", "--link-version", "0", "0000 07 0001 00"])
        .output()
        .expect("run onion");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("VERSIONS body"));
}
