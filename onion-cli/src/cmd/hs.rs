//! `onion hs`: onion-service tools (rend-spec-v3), output as JSON.
//!
//! - `onion hs address --public-key FILE|HEX`: the v3 address of an identity key, given as
//!   64 hex characters, C tor's `hs_ed25519_public_key` file, or a file of 32 raw bytes or hex.
//! - `onion hs descriptor decrypt --address ADDR FILE [--client-key FILE] [--now UNIX]
//!   [--period-length MIN] [--period NUM]`: verify and decrypt a v3 descriptor, and print its
//!   fields and introduction points. The descriptor is accepted only if its blinded key is
//!   the one derived from the address for a time period (rend-spec-v3 §2.1 key blinding,
//!   §2.2.1 time periods): `--period NUM` if given, else the periods within 4 of the one at
//!   `--now` (default: the clock), with `--period-length` (default 1440 minutes; 8 in a
//!   20-second-voting test network). Anyone can make a descriptor that decrypts for an
//!   address (the encryption keys come from its public key and the blinded key the
//!   descriptor names itself), so without such a period it is refused, not trusted.

use std::time::{SystemTime, UNIX_EPOCH};

use onion_hs::desc::{HsDescriptor, OuterDescriptor};
use onion_hs::time::{TimePeriod, TimePeriodConfig};
use onion_hs::OnionAddress;
use onion_hs::{keyfile::parse_client_auth_key, keys::HsIdKey};
use serde_json::{json, Value};

/// `onion hs` (see the module documentation).
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// The v3 onion address of an identity key (JSON).
    Address(AddressArgs),
    /// v3 descriptor tools.
    Descriptor(DescriptorArgs),
}

/// `onion hs address`.
#[derive(clap::Args)]
struct AddressArgs {
    /// The identity key: 64 hex characters, C tor's `hs_ed25519_public_key`, or a file of 32
    /// raw bytes or hex.
    #[arg(long, value_name = "FILE|HEX")]
    public_key: String,
}

/// `onion hs descriptor`.
#[derive(clap::Args)]
struct DescriptorArgs {
    #[command(subcommand)]
    command: DescriptorSub,
}

#[derive(clap::Subcommand)]
enum DescriptorSub {
    /// Verify and decrypt a v3 descriptor bound to an address, and print it (JSON).
    Decrypt(DecryptArgs),
}

/// `onion hs descriptor decrypt`.
#[derive(clap::Args)]
struct DecryptArgs {
    /// The onion address the descriptor must belong to.
    #[arg(long, value_name = "ADDR")]
    address: String,
    /// The descriptor file.
    #[arg(value_name = "FILE")]
    file: String,
    /// Client-authorization key (C tor's `.auth_private` file).
    #[arg(long, value_name = "FILE")]
    client_key: Option<String>,
    /// The time (Unix seconds) whose nearby time periods are tried (default: the clock).
    #[arg(long, value_name = "UNIX")]
    now: Option<u64>,
    /// Length of a time period in minutes (8 in a 20-second-voting test network).
    #[arg(long, value_name = "MIN", default_value_t = 1440,
          value_parser = clap::value_parser!(u32).range(1..))]
    period_length: u32,
    /// The time period number the descriptor is for (instead of searching near --now).
    #[arg(long, value_name = "NUM")]
    period: Option<u64>,
}

/// Run the subcommand.
pub fn run(args: Args) -> Result<(), String> {
    let out = match args.command {
        Sub::Address(a) => address_json(&a)?,
        Sub::Descriptor(DescriptorArgs {
            command: DescriptorSub::Decrypt(a),
        }) => decrypt_json(&a)?,
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    hex::decode(s.trim()).ok()?.try_into().ok()
}

fn read_public_key(arg: &str) -> Result<[u8; 32], String> {
    if let Some(k) = parse_hex32(arg) {
        return Ok(k);
    }
    let data = std::fs::read(arg).map_err(|e| format!("--public-key {arg}: {e}"))?;
    if let Ok(k) = HsIdKey::from_tor_file(&data) {
        return Ok(*k.as_bytes());
    }
    if let Ok(k) = <[u8; 32]>::try_from(data.as_slice()) {
        return Ok(k);
    }
    std::str::from_utf8(&data)
        .ok()
        .and_then(parse_hex32)
        .ok_or_else(|| {
            format!("--public-key {arg}: not a tor key file, 32 raw bytes, or 64 hex characters")
        })
}

fn address_json(args: &AddressArgs) -> Result<Value, String> {
    let key = read_public_key(&args.public_key)?;
    let addr = OnionAddress::from_public_key(key);
    let valid_point = addr.identity_key().map_err(|e| e.to_string());
    let out = json!({
        "address": addr.to_string(),
        "public_key_hex": hex::encode(key),
        "valid_ed25519_point": valid_point.is_ok(),
        "key_error": valid_point.err(),
    });
    Ok(out)
}

fn decrypt_json(args: &DecryptArgs) -> Result<Value, String> {
    let DecryptArgs {
        address: addr,
        file,
        client_key,
        now,
        period_length: period_len,
        period: period_num,
    } = args;
    let (file, period_len, period_num) = (file.as_str(), *period_len, *period_num);
    let now = *now;
    let addr = OnionAddress::parse(addr).map_err(|e| format!("--address: {e}"))?;
    let id = addr.identity_key().map_err(|e| format!("--address: {e}"))?;
    let text = read_text(file, onion_hs::desc::MAX_DESCRIPTOR_LEN)?;
    let sk = match client_key.as_deref() {
        Some(path) => {
            let t = read_text(path, 4096)?;
            let (sk, for_addr) =
                parse_client_auth_key(&t).map_err(|e| format!("--client-key {path}: {e}"))?;
            if for_addr.is_some_and(|a| a != addr) {
                return Err(format!(
                    "--client-key {path}: key file is for another address"
                ));
            }
            Some(sk)
        }
        None => None,
    };
    let now = onion_dir::Timestamp::from_unix(match now {
        Some(n) => n,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs(),
    });
    let outer = OuterDescriptor::parse(&text).map_err(|e| format!("{file}: {e}"))?;
    let claimed = outer
        .claimed_blinded_key()
        .map_err(|e| format!("{file}: {e}"))?;
    // The time period whose blinded key, derived from the address, is the one the
    // descriptor is signed with: that binds the descriptor to the address.
    let candidates = match period_num {
        Some(n) => n..=n,
        None => {
            let cfg = TimePeriodConfig::new(period_len, 0, 3600).map_err(|e| e.to_string())?;
            let here = cfg.period_at(now).num();
            here.saturating_sub(PERIOD_SEARCH)..=here.saturating_add(PERIOD_SEARCH)
        }
    };
    let (first, last) = (*candidates.start(), *candidates.end());
    let Some(period) = candidates
        .map(|n| TimePeriod::new(n, period_len, 0))
        .find(|p| id.blind(*p) == claimed)
    else {
        let periods = match first == last {
            true => format!("time period {first}"),
            false => format!("any time period from {first} to {last}"),
        };
        return Err(format!(
            "{file}: its blinded key is not the one of {addr} for {periods} \
             ({period_len}-minute periods): refused, as it may be anyone's forgery; give the \
             right --period, --now or --period-length if it is genuine"
        ));
    };
    let expected = id.blind(period);
    let verified = outer
        .verify(Some(&expected), now)
        .map_err(|e| format!("{file}: {e}"))?;
    let hs = verified
        .decrypt(&id, sk.as_ref(), now)
        .map_err(|e| format!("{file}: {e}"))?;
    Ok(to_json(&addr, period, &hs))
}

/// The text file `path`, refused if longer than `max` bytes (a descriptor is at most
/// `MAX_DESCRIPTOR_LEN`, rend-spec-v3 §2.4; a client key file is one short line), so that
/// no input makes the command read without bound.
fn read_text(path: &str, max: usize) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut text = String::new();
    f.take(max as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{path}: {e}"))?;
    if text.len() > max {
        return Err(format!("{path}: longer than {max} bytes"));
    }
    Ok(text)
}

/// How many time periods on either side of the current one are tried when `--period` is
/// not given (a descriptor is published for the current and the next period, and may be
/// read some days later).
const PERIOD_SEARCH: u64 = 4;

fn to_json(addr: &OnionAddress, period: TimePeriod, hs: &HsDescriptor) -> Value {
    let ips: Vec<Value> = hs
        .second_layer
        .intro_points
        .iter()
        .map(|ip| {
            let ls: Vec<Value> = ip
                .link_specifiers
                .iter()
                .map(|l| {
                    let mut v = json!({"type": l.ty, "value_hex": hex::encode(&l.body)});
                    if let Some(a) = l.as_ipv4() {
                        v["address"] = json!(a.ip().to_string());
                        v["port"] = json!(a.port());
                    } else if let Some(a) = l.as_ipv6() {
                        v["address"] = json!(a.ip().to_string());
                        v["port"] = json!(a.port());
                    } else if let Some(id) = l.as_rsa_id() {
                        v["rsa_id_hex"] = json!(hex::encode_upper(id.0));
                    }
                    v
                })
                .collect();
            json!({
                "link_specifiers": ls,
                "onion_key_ntor_hex": hex::encode(ip.onion_key_ntor),
                "auth_key_hex": hex::encode(ip.auth_key()),
                "enc_key_ntor_hex": hex::encode(ip.enc_key_ntor),
                "enc_key_cert_key_hex": hex::encode(ip.enc_key_cert.certified_key),
                "certs_expiry_hours": ip.auth_key_cert.expiry_hours,
            })
        })
        .collect();
    json!({
        "address": addr.to_string(),
        "time_period": {"num": period.num(), "length_minutes": period.length_minutes()},
        "blinded_key_hex": hex::encode(hs.blinded_key),
        "signing_key_hex": hex::encode(hs.signing_key),
        "signing_cert_expiry_hours": hs.signing_cert_expiry_hours,
        "lifetime_minutes": hs.lifetime_minutes,
        "revision_counter": hs.revision_counter,
        "desc_auth_type": hs.first_layer.auth_type,
        "auth_client_lines": hs.first_layer.auth_clients.len(),
        "create2_formats": hs.second_layer.create2_formats,
        "intro_auth_required": hs.second_layer.intro_auth_required,
        "single_onion_service": hs.second_layer.single_onion_service,
        "other_lines": hs.second_layer.other_lines,
        "introduction_points": ips,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use onion_hs::ExpandedKeypair;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    /// Parse `args` as `onion hs` would, then run the JSON step.
    fn json_of(args: &[&str]) -> Result<Value, String> {
        let cli = Cli::try_parse_from(std::iter::once("hs").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        match cli.command {
            Sub::Address(a) => super::address_json(&a),
            Sub::Descriptor(DescriptorArgs {
                command: DescriptorSub::Decrypt(a),
            }) => super::decrypt_json(&a),
        }
    }

    fn address_json(args: &[&str]) -> Result<Value, String> {
        json_of(&[&["address"][..], args].concat())
    }

    fn decrypt_json(args: &[&str]) -> Result<Value, String> {
        json_of(&[&["descriptor", "decrypt"][..], args].concat())
    }

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../onion-hs/testdata");
    const ADDR: &str = "skn4u3felenupawmdh43qijues5x5gc3jwgutk7miqfyptywyp6dm2ad.onion";

    #[test]
    fn address_from_tor_key_file_and_hex() {
        let f = format!("{DIR}/hs.hs_ed25519_public_key");
        let v = address_json(&["--public-key", &f]).unwrap();
        assert_eq!(v["address"], ADDR);
        assert_eq!(v["valid_ed25519_point"], true);
        let hex = v["public_key_hex"].as_str().unwrap().to_string();
        assert_eq!(
            address_json(&["--public-key", &hex]).unwrap()["address"],
            ADDR
        );
        assert!(address_json(&["--public-key", "/nonexistent"]).is_err());
        assert!(address_json(&[]).is_err());
    }

    #[test]
    fn decrypt_real_descriptors() {
        for (file, period) in [
            ("hs-descriptor.client-fetched", 3_740_454u64),
            ("hs-descriptor.service", 3_740_453),
        ] {
            let f = format!("{DIR}/{file}");
            let v = decrypt_json(&[
                "--address",
                ADDR,
                &f,
                "--period-length",
                "8",
                "--now",
                "1795418409",
            ])
            .unwrap();
            assert_eq!(v["time_period"]["num"], period);
            assert_eq!(v["introduction_points"].as_array().unwrap().len(), 3);
            assert_eq!(v["create2_formats"], serde_json::json!([2]));
        }
        // Another address: a clear error.
        let f = format!("{DIR}/hs-descriptor.service");
        let e = decrypt_json(&[
            "--address",
            "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid",
            &f,
            "--now",
            "1795418409",
        ])
        .unwrap_err();
        assert!(e.contains("refused, as it may be anyone's forgery"), "{e}");
        // The right address but a period that is not the descriptor's: refused too.
        let e = decrypt_json(&[
            "--address",
            ADDR,
            &f,
            "--period-length",
            "8",
            "--period",
            "3740452",
        ])
        .unwrap_err();
        assert!(e.contains("time period 3740452 (8-minute periods)"), "{e}");
        // A file longer than any descriptor is not read.
        let big = std::env::temp_dir().join(format!("onion-hs-big-{}", std::process::id()));
        std::fs::write(&big, "x".repeat(onion_hs::desc::MAX_DESCRIPTOR_LEN + 1)).unwrap();
        let e = decrypt_json(&["--address", ADDR, big.to_str().unwrap()]).unwrap_err();
        assert!(e.ends_with("longer than 50000 bytes"), "{e}");
        let _ = std::fs::remove_file(big);
    }

    /// Write a descriptor for the identity key `credential_of`'s address, signed with the
    /// blinded key of `blind_with` for `period`; its file name.
    fn forged(
        name: &str,
        blind_with: &ExpandedKeypair,
        credential_of: &HsIdKey,
        period: TimePeriod,
    ) -> String {
        use onion_hs::desc::DescriptorBuilder;
        use rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let blinded = blind_with.blind(period);
        let signing = ExpandedKeypair::generate(&mut rng);
        let b = DescriptorBuilder {
            blinded: &blinded,
            credential: credential_of.credential(),
            signing_key: &signing,
            cert_expiry_hours: u32::try_from(NOW / 3600 + 24).unwrap(),
            revision_counter: 1,
            lifetime_minutes: 180,
            create2_formats: vec![2],
            intro_auth_required: None,
            single_onion_service: false,
            other_lines: vec![],
            intro_points: vec![],
            client_auth: None,
        };
        let text = b.build(&mut rng).unwrap();
        let f = std::env::temp_dir().join(format!("onion-hs-{name}-{}", std::process::id()));
        std::fs::write(&f, text).unwrap();
        f.to_str().unwrap().to_string()
    }

    const NOW: u64 = 1_795_418_409;

    /// A descriptor that names address B's public key for its encryption but is signed with
    /// a blinded key that is not B's (an attacker's): it "decrypts" for B, yet it is refused,
    /// as is a genuine descriptor of A presented as B's; A's own is accepted.
    #[test]
    fn descriptor_not_bound_to_the_address_is_refused() {
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(1);
        let a = ExpandedKeypair::generate(&mut rng);
        let b = ExpandedKeypair::generate(&mut rng);
        let cfg = TimePeriodConfig::new(1440, 0, 3600).unwrap();
        let period = TimePeriod::new(
            cfg.period_at(onion_dir::Timestamp::from_unix(NOW)).num(),
            1440,
            0,
        );
        let now = NOW.to_string();
        let (addr_a, addr_b) = (
            a.id_key().address().to_string(),
            b.id_key().address().to_string(),
        );

        let genuine = forged("genuine", &a, &a.id_key(), period);
        let v = decrypt_json(&["--address", &addr_a, &genuine, "--now", &now]).unwrap();
        assert_eq!(v["time_period"]["num"], period.num());
        let e = decrypt_json(&["--address", &addr_b, &genuine, "--now", &now]).unwrap_err();
        assert!(e.contains(&format!("not the one of {addr_b}")), "{e}");

        let forgery = forged("forgery", &a, &b.id_key(), period);
        // The forgery is well made: decrypted with the blinded key it names, it reads.
        let outer = OuterDescriptor::parse(&std::fs::read_to_string(&forgery).unwrap()).unwrap();
        let claimed = outer.claimed_blinded_key().unwrap();
        let at = onion_dir::Timestamp::from_unix(NOW);
        let verified = outer.verify(Some(&claimed), at).unwrap();
        assert!(verified.decrypt(&b.id_key(), None, at).is_ok());
        for extra in [&[][..], &["--period", &period.num().to_string()][..]] {
            let mut args = vec!["--address", &addr_b, &forgery, "--now", &now];
            args.extend_from_slice(extra);
            let e = decrypt_json(&args).unwrap_err();
            assert!(
                e.contains("refused, as it may be anyone's forgery") && !e.contains('\n'),
                "{e}"
            );
        }
        let _ = std::fs::remove_file(genuine);
        let _ = std::fs::remove_file(forgery);
    }
}
