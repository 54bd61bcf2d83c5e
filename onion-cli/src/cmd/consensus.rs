//! `onion consensus`: directory-document tools (dir-spec), output as JSON.
//!
//! - `onion consensus path ...`: path selection, see [`crate::cmd::path`].
//! - `onion consensus summary FILE [--certs FILE] [--authorities FILE] [--now TIME]`: parse a
//!   consensus of either flavour and print its times, flavour, signature count and one object
//!   per relay (nickname, fingerprint, address, ports, flags, bandwidth, and the microdescriptor
//!   digest or server-descriptor digest). With `--certs` (authority key certificates, e.g. tor's
//!   `cached-certs`) the signatures are checked: `signatures_verified` says whether more than
//!   half of the authorities signed. The authorities are the consensus's own `dir-source`
//!   entries unless `--authorities` names a file of v3 identities (40 hex digits per line, or
//!   `DirAuthority` lines with `v3ident=`). Certificates are checked at `--now`
//!   (`YYYY-MM-DD HH:MM:SS` UTC or Unix seconds), by default the consensus's `valid-after`, so
//!   that the output does not depend on when it is run.

use std::io::Write;

use onion_dir::consensus::{self, Consensus, Flavor};
use onion_dir::{authcert, RsaIdentity, Timestamp};
use serde_json::{json, Value};

/// `onion consensus` (see the module documentation).
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Parse a consensus (either flavour) and print it as JSON; with --certs, check its
    /// signatures.
    Summary(SummaryArgs),
    /// Choose one path as the path selector would, and print it as JSON.
    Path(crate::cmd::path::Args),
}

/// `onion consensus summary`.
#[derive(clap::Args)]
struct SummaryArgs {
    /// The consensus file.
    #[arg(value_name = "FILE")]
    file: String,
    /// Authority key certificates (e.g. tor's `cached-certs`): check the signatures.
    #[arg(long, value_name = "FILE")]
    certs: Option<String>,
    /// The authorities' v3 identities (40 hex digits per line, or `DirAuthority` lines).
    #[arg(long, value_name = "FILE")]
    authorities: Option<String>,
    /// Check certificates at this time (`YYYY-MM-DD HH:MM:SS` UTC or Unix seconds; default:
    /// the consensus's valid-after).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    now: Option<Timestamp>,
}

/// Run the subcommand.
pub fn run(args: Args) -> Result<(), String> {
    match args.command {
        Sub::Summary(a) => summary(a),
        Sub::Path(a) => crate::cmd::path::run(a),
    }
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Timestamp::from_unix(n));
    }
    Timestamp::parse_str(s)
        .ok_or_else(|| format!("--now {s}: expected YYYY-MM-DD HH:MM:SS or Unix seconds"))
}

/// v3 identities from a file: bare 40-hex lines or `DirAuthority ... v3ident=HEX ...` lines.
fn read_authorities(path: &str) -> Result<Vec<RsaIdentity>, String> {
    let text = read(path)?;
    let mut out = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let id = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("v3ident="))
            .or_else(|| (line.len() == 40).then_some(line))
            .and_then(|h| RsaIdentity::from_hex(h).ok());
        match id {
            Some(id) => out.push(id),
            None if line.starts_with("DirAuthority") => {}
            None => return Err(format!("{path}: not a v3 identity: {line}")),
        }
    }
    Ok(out)
}

fn summary(args: SummaryArgs) -> Result<(), String> {
    let SummaryArgs {
        file,
        certs,
        authorities: auths,
        now,
    } = args;
    let text = read(&file)?;
    let unverified = consensus::parse(&text).map_err(|e| format!("{file}: {e}"))?;
    let c = unverified.peek();
    let now = now.unwrap_or(c.valid_after);
    let mut verification = Value::Null;
    let mut verified = Value::Null;
    if let Some(cf) = certs {
        let ctext = read(&cf)?;
        let mut good = Vec::new();
        let mut rejected = Vec::new();
        for u in authcert::parse_many(&ctext).map_err(|e| format!("{cf}: {e}"))? {
            let fp = u.peek().fingerprint;
            match u.verify(now) {
                Ok(k) => good.push(k),
                Err(e) => {
                    rejected.push(json!({"fingerprint": fp.to_string(), "error": e.to_string()}))
                }
            }
        }
        let ids = match &auths {
            Some(f) => read_authorities(f)?,
            None => c
                .authorities
                .iter()
                .filter(|a| !a.nickname.ends_with("-legacy"))
                .map(|a| a.identity)
                .collect(),
        };
        let rep = unverified.check_signatures(&ids, &good, now);
        verified = Value::Bool(rep.quorum());
        verification = json!({
            "configured_authorities": ids.len(),
            "needed": rep.needed,
            "verified": rep.verified.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            "bad": rep.bad.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            "missing_certificates": rep.missing_certs.iter().map(|(i, k)| json!({"identity": i.to_string(), "signing_key_digest": k.to_string()})).collect::<Vec<_>>(),
            "certificates_rejected": rejected,
            "checked_at": now.to_string(),
        });
    }
    let out = render(c, verified, verification);
    let text = serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.to_string()),
        _ => Ok(()),
    }
}

fn render(c: &Consensus<'_>, verified: Value, verification: Value) -> Value {
    let relays: Vec<Value> = c
        .relays
        .iter()
        .map(|r| {
            let mut o = json!({
                "nickname": r.nickname,
                "fingerprint": r.identity.to_string(),
                "address": r.address.to_string(),
                "or_port": r.or_port,
                "dir_port": r.dir_port,
                "flags": r.flags.names().collect::<Vec<_>>(),
                "bandwidth": r.bandwidth,
            });
            if let Some(obj) = o.as_object_mut() {
                if let Some(v6) = r.ipv6 {
                    obj.insert("ipv6".into(), json!(v6.to_string()));
                }
                match c.flavor {
                    Flavor::Microdesc => {
                        obj.insert(
                            "microdescriptor_digest".into(),
                            json!(r.md_digest.map(|d| d.to_base64())),
                        );
                    }
                    Flavor::Ns => {
                        obj.insert(
                            "descriptor_digest".into(),
                            json!(r.descriptor_digest.map(hex::encode_upper)),
                        );
                        obj.insert(
                            "policy".into(),
                            json!(r.policy.as_ref().map(|p| p.to_string())),
                        );
                    }
                }
            }
            o
        })
        .collect();
    json!({
        "flavor": c.flavor.name(),
        "consensus_method": c.consensus_method,
        "valid_after": c.valid_after.to_string(),
        "fresh_until": c.fresh_until.to_string(),
        "valid_until": c.valid_until.to_string(),
        "authorities": c.authorities.len(),
        "signature_count": c.signatures.len(),
        "signatures_verified": verified,
        "verification": verification,
        "relay_count": c.relays.len(),
        "relays": relays,
    })
}
