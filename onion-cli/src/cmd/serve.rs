//! `onion serve --target 127.0.0.1:PORT --key-dir DIR [--port VIRTPORT]
//! [--client-auth FILE|DIR]... [--authorities FILE] [--data-dir DIR] [--timeout SECS]`: host
//! a v3 onion service whose streams to VIRTPORT (default 80) are forwarded to the local TCP
//! port, as C tor's `HiddenServicePort VIRTPORT 127.0.0.1:PORT`.
//!
//! `--client-auth` (repeatable) restricts the service to authorized clients (rend-spec-v3
//! §1.9.1, §2.5.1): each FILE, or each `*.auth` file in DIR (C tor's
//! `authorized_clients/`), holds `descriptor:x25519:<base32 public key>`; only the holders of
//! the matching private keys (`onion get --client-key`, C tor's `ClientOnionAuthDir`) can
//! decrypt the descriptor.
//!
//! The identity key is read from, or created in, DIR in C tor's formats
//! (`hs_ed25519_secret_key`, `hs_ed25519_public_key`, `hostname`), so a C tor service
//! directory can be served by onion and back. The address is the first line on stdout;
//! progress goes to stderr ("service published" once the first descriptor reached an HSDir).
//! The target must accept connections at startup. Runs until killed: introduction points
//! that fail are rebuilt or replaced, rotated, and descriptors re-uploaded as
//! `onion_hs::publish::Publisher` decides.
//!
//! `--congestion-control` runs congestion control (proposal 324) as C tor 0.4.9 does when
//! its consensus enables it (cc_alg != 0): the descriptor advertises
//! `flow-control 1-2 <cc_sendme_inc>`, and the rendezvous circuit of a client that asks for
//! it in INTRODUCE2 runs Tor Vegas on the client's virtual hop ("rendezvous with a client
//! (congestion control, ...)" on stderr); a client that does not ask gets fixed windows.
//! Without the flag, or when the consensus disables it, the descriptor has no
//! `flow-control` line and an introduction that asks anyway is refused and logged.
//! Introductions are rate-limited (25/s, bursts of 200) and at most 64 wait for a
//! rendezvous circuit; at most 256 target connections are open; what is buffered per
//! stream is bounded both ways (see `net::service`).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use onion_hs::desc::ClientAuthConfig;
use onion_hs::publish::{Publisher, PublisherConfig};
use onion_hs::service::{HsService, HsServiceConfig};
use onion_hs::x25519_dalek::PublicKey as XPublic;
use onion_hs::ExpandedKeypair;
use rand_core::OsRng;

use super::get::NetArgs;
use crate::net::client::Client;
use crate::net::path;
use crate::net::private::{self, DirKind};
use crate::net::service::Service;

/// `onion serve` (see the module documentation).
#[derive(clap::Args)]
pub struct Args {
    /// The local TCP service that streams to the virtual port are forwarded to.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_target)]
    target: SocketAddr,
    /// The service's key directory (C tor's `HiddenServiceDir` files; created if missing).
    #[arg(long, value_name = "DIR")]
    key_dir: PathBuf,
    /// The onion service's virtual port (C tor's `HiddenServicePort VIRTPORT`).
    #[arg(long, value_name = "VIRTPORT", default_value_t = 80,
          value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Authorized clients: a `<name>.auth` file or a directory of them (repeatable).
    #[arg(long, value_name = "FILE|DIR")]
    client_auth: Vec<PathBuf>,
    /// Offer congestion control (proposal 324) to clients when the consensus enables it:
    /// the descriptor advertises flow-control, and clients that ask get it.
    #[arg(long)]
    congestion_control: bool,
    #[command(flatten)]
    net: NetArgs,
}

fn parse_target(v: &str) -> Result<SocketAddr, String> {
    let t: SocketAddr = v.parse().map_err(|_| format!("{v:?}: not an ADDR:PORT"))?;
    if t.port() == 0 {
        return Err(format!("{v:?}: port 0"));
    }
    Ok(t)
}

const SECRET_FILE: &str = "hs_ed25519_secret_key";
const SECRET_HEADER: &[u8; 32] = b"== ed25519v1-secret: type0 ==\0\0\0";
const PUBLIC_HEADER: &[u8; 32] = b"== ed25519v1-public: type0 ==\0\0\0";

/// Run the subcommand.
pub fn run(args: Args) -> Result<(), String> {
    let Args {
        target,
        key_dir,
        port,
        client_auth,
        congestion_control,
        net,
    } = args;
    let mut clients: Vec<XPublic> = Vec::new();
    for path in &client_auth {
        clients.extend(read_client_auth(path)?);
    }
    let opts = net.open()?;
    let identity = load_or_create_key(&key_dir)?;
    // A target that is not listening is almost surely a typo: say so now, not per stream.
    TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .map_err(|e| format!("--target {target}: {e}"))?;
    let n_clients = clients.len();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", identity.id_key().address())
        .and_then(|_| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    drop(out);

    let mut client = Client::new();
    let dir = opts.bootstrap(&mut client)?;
    // The consensus decides both the descriptor's line and the circuits' parameters.
    let cc = match congestion_control {
        true => crate::cmd::get::onion_cc(&dir),
        false => None,
    };
    let hs_config = HsServiceConfig {
        client_auth: (!clients.is_empty()).then_some(ClientAuthConfig { clients }),
        flow_control_sendme_inc: cc.map(|c| c.sendme_inc),
        ..HsServiceConfig::default()
    };
    let hs = HsService::new(identity, hs_config);
    if let Some(c) = &cc {
        eprintln!(
            "onion: congestion control offered (flow-control 1-2 {})",
            c.sendme_inc
        );
    }
    let testing = path::is_testing_network(&opts.auths);
    let config = path::path_config(&opts.auths);
    if n_clients > 0 {
        eprintln!("onion: client authorization: {n_clients} authorized client(s)");
    }
    let publisher = Publisher::new(hs, PublisherConfig::default());
    let mut service = Service::new(publisher, dir, config, testing, target, port);
    service.set_congestion_control(cc);
    service.run(&mut client, &|c, current| opts.refresh(c, current))
}

/// The largest `.auth` file read: one is a single `descriptor:x25519:<52 base32 chars>` line
/// of about 71 bytes; C tor sets no bound of its own, so this one leaves ample room for
/// whitespace while keeping a mistaken `--client-auth` (a large file) from being read whole.
const MAX_CLIENT_AUTH_FILE: u64 = 4096;

/// The most `*.auth` files read from one directory. A descriptor is at most 50,000 bytes
/// (rend-spec-v3 §2.5, C tor's `HS_DESC_MAX_LEN`) and each client costs an `auth-client`
/// line of 70 bytes that is encrypted and base64-encoded again in the outer layer (rend-spec
/// §2.5.1.2 and §2.5.2), so no more than about 530 clients fit; C tor counts none itself.
const MAX_CLIENT_AUTH_FILES: usize = 512;

/// Authorized clients' public keys from a `<name>.auth` file, or from every `*.auth` file of a
/// directory (C tor's `authorized_clients/`), in file-name order. Each file is at most
/// [`MAX_CLIENT_AUTH_FILE`] bytes and a directory holds at most [`MAX_CLIENT_AUTH_FILES`]
/// of them; beyond either the error is one line naming the path and the bound.
fn read_client_auth(path: &Path) -> Result<Vec<XPublic>, String> {
    let p = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("--client-auth {p}: {e}"))?;
    let files = if meta.is_dir() {
        let mut v: Vec<std::path::PathBuf> = Vec::new();
        let entries = std::fs::read_dir(path).map_err(|e| format!("--client-auth {p}: {e}"))?;
        for f in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if f.extension().is_some_and(|x| x == "auth") {
                if v.len() == MAX_CLIENT_AUTH_FILES {
                    return Err(format!(
                        "--client-auth {p}: more than {MAX_CLIENT_AUTH_FILES} *.auth files"
                    ));
                }
                v.push(f);
            }
        }
        v.sort();
        if v.is_empty() {
            return Err(format!("--client-auth {p}: no *.auth files"));
        }
        v
    } else {
        vec![path.to_path_buf()]
    };
    files
        .iter()
        .map(|f| {
            let text = read_bounded_text(f, MAX_CLIENT_AUTH_FILE)
                .map_err(|e| format!("--client-auth {}: {e}", f.display()))?;
            onion_hs::keys::parse_authorized_client(&text)
                .map_err(|e| format!("--client-auth {}: {e}", f.display()))
        })
        .collect()
}

/// The text of `f`, refused if it is longer than `max` bytes or not UTF-8.
fn read_bounded_text(f: &Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    let mut data = Vec::new();
    std::fs::File::open(f)
        .and_then(|h| h.take(max.saturating_add(1)).read_to_end(&mut data))
        .map_err(|e| e.to_string())?;
    if data.len() as u64 > max {
        return Err(format!("longer than {max} bytes"));
    }
    String::from_utf8(data).map_err(|_| "not UTF-8 text".to_string())
}

/// The identity key in `dir` (C tor's `hs_ed25519_secret_key`), or a new one written there
/// with `hs_ed25519_public_key` and `hostname`. The directory must be private
/// ([`private::check_private_dir`] with [`DirKind::Keys`]: created 0700 if missing; refused
/// if another user owns it or others may read or write it, as C tor refuses such a
/// `HiddenServiceDir`), and so must an existing secret key file (refused if its mode lets
/// others read it). New files are written 0600.
fn load_or_create_key(dir: &Path) -> Result<ExpandedKeypair, String> {
    let d = dir.display();
    create_private_dir(dir).map_err(|e| format!("--key-dir: {e}"))?;
    let file = dir.join(SECRET_FILE);
    // The file is 96 bytes (a 32-byte header and the expanded key); anything much longer
    // is not read.
    match private::read_secret(&file, 4096) {
        Ok(data) => {
            let data = zeroize::Zeroizing::new(data);
            return ExpandedKeypair::from_tor_file(&data)
                .map_err(|e| format!("{}: {e}", file.display()));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("--key-dir: {e}"))
        }
        Err(_) => {}
    }
    let key = ExpandedKeypair::generate(&mut OsRng);
    let mut secret = SECRET_HEADER.to_vec();
    secret.extend_from_slice(&zeroize::Zeroizing::new(key.to_expanded_bytes())[..]);
    let mut public = PUBLIC_HEADER.to_vec();
    public.extend_from_slice(key.public_bytes());
    let hostname = format!("{}\n", key.id_key().address());
    // The secret key goes last: a run interrupted before it leaves no key, and the next run
    // makes a new one and rewrites the other two files.
    let r = write_private(dir, "hs_ed25519_public_key", &public)
        .and_then(|_| write_private(dir, "hostname", hostname.as_bytes()))
        .and_then(|_| write_private(dir, SECRET_FILE, &secret));
    zeroize::Zeroize::zeroize(&mut secret);
    r.map_err(|e| format!("--key-dir {d}: {e}"))?;
    eprintln!("onion: new onion-service key written to {d}");
    Ok(key)
}

/// Check (or create, mode 0700) the key directory: see [`private::check_private_dir`].
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    private::check_private_dir(dir, DirKind::Keys)
}

/// Write the file `name` of the key directory `dir`, readable by its owner only and
/// replaced atomically ([`private::write_atomic`]).
fn write_private(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    private::write_atomic(dir, name, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("onion-serve-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn key_is_created_then_loaded_in_tor_format() {
        let d = tmp("key");
        let k1 = load_or_create_key(&d).unwrap();
        let secret = std::fs::read(d.join(SECRET_FILE)).unwrap();
        assert_eq!(secret.len(), 96);
        assert_eq!(&secret[..32], SECRET_HEADER);
        let public = std::fs::read(d.join("hs_ed25519_public_key")).unwrap();
        assert_eq!(&public[32..], k1.public_bytes());
        let host = std::fs::read_to_string(d.join("hostname")).unwrap();
        assert_eq!(host.trim(), k1.id_key().address().to_string());
        let k2 = load_or_create_key(&d).unwrap();
        assert_eq!(k1.public_bytes(), k2.public_bytes());
        #[cfg(unix)]
        {
            for f in [SECRET_FILE, "hs_ed25519_public_key", "hostname"] {
                assert_eq!(mode(&d.join(f)), 0o600, "{f}");
            }
            assert_eq!(mode(&d), 0o700);
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[cfg(unix)]
    fn chmod(p: &Path, m: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    /// A secret key others may read is refused with one line naming the file and its mode;
    /// so is a key directory others may read or write (as C tor refuses such a
    /// `HiddenServiceDir`); nothing is changed or created then.
    #[cfg(unix)]
    #[test]
    fn keys_and_key_directories_others_can_read_are_refused() {
        let d = tmp("perm");
        let k = load_or_create_key(&d).unwrap();
        chmod(&d.join(SECRET_FILE), 0o644);
        let e = load_or_create_key(&d).err().unwrap();
        assert!(
            e.contains(&d.join(SECRET_FILE).display().to_string())
                && e.contains("mode 0644")
                && !e.contains('\n'),
            "{e}"
        );
        assert_eq!(mode(&d.join(SECRET_FILE)), 0o644, "left as it was");
        chmod(&d.join(SECRET_FILE), 0o600);
        for (m, what) in [
            (0o755, "other users can read it"),
            (0o777, "other users can write"),
        ] {
            chmod(&d, m);
            let e = load_or_create_key(&d).err().unwrap();
            assert!(
                e.contains(what) && e.contains(&format!("{m:04o}")) && !e.contains('\n'),
                "{e}"
            );
            assert_eq!(mode(&d), m, "left as it was");
        }
        chmod(&d, 0o700);
        assert_eq!(
            load_or_create_key(&d).unwrap().public_bytes(),
            k.public_bytes()
        );
        // A world-writable key directory without a key: refused before any key is written.
        std::fs::remove_file(d.join(SECRET_FILE)).unwrap();
        chmod(&d, 0o777);
        assert!(load_or_create_key(&d).is_err());
        assert!(!d.join(SECRET_FILE).exists());
        chmod(&d, 0o700);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn client_auth_files_and_directories() {
        let d = tmp("auth");
        std::fs::create_dir_all(&d).unwrap();
        // base32 of 32 bytes of 0x01 and of 0x02 (Python's base64.b32encode).
        let b32 = [
            "AEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQ",
            "aibaeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqcaiba",
        ];
        let keys = [XPublic::from([1u8; 32]), XPublic::from([2u8; 32])];
        for (name, k) in ["alice", "bob"].iter().zip(b32) {
            let text = format!("descriptor:x25519:{k}\n");
            std::fs::write(d.join(format!("{name}.auth")), text).unwrap();
        }
        std::fs::write(d.join("notes.txt"), "ignored").unwrap();
        assert_eq!(read_client_auth(&d).unwrap(), keys);
        assert_eq!(read_client_auth(&d.join("bob.auth")).unwrap(), keys[1..]);
        std::fs::write(d.join("carol.auth"), "descriptor:x25519:nonsense").unwrap();
        let e = read_client_auth(&d).unwrap_err();
        assert!(e.contains("carol.auth") && !e.contains('\n'), "{e}");
        let e = read_client_auth(&d.join("missing.auth")).unwrap_err();
        assert!(e.starts_with("--client-auth "), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn client_auth_file_size_and_count_are_bounded() {
        let d = tmp("auth-bounds");
        std::fs::create_dir_all(&d).unwrap();
        let line = "descriptor:x25519:AEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQ\n";
        // Exactly the bound (the key line padded with trailing whitespace) is read.
        let mut text = line.to_string();
        text.push_str(&" ".repeat(MAX_CLIENT_AUTH_FILE as usize - line.len()));
        let f = d.join("a.auth");
        std::fs::write(&f, &text).unwrap();
        assert_eq!(read_client_auth(&f).unwrap(), [XPublic::from([1u8; 32])]);
        // One byte more is refused with a one-line error naming the bound.
        text.push(' ');
        std::fs::write(&f, &text).unwrap();
        let e = read_client_auth(&f).unwrap_err();
        assert!(
            e.contains("a.auth") && e.contains("longer than 4096 bytes"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        // A directory of exactly MAX_CLIENT_AUTH_FILES files is read; one more is refused.
        std::fs::remove_file(&f).unwrap();
        for i in 0..MAX_CLIENT_AUTH_FILES {
            std::fs::write(d.join(format!("c{i:04}.auth")), line).unwrap();
        }
        assert_eq!(read_client_auth(&d).unwrap().len(), MAX_CLIENT_AUTH_FILES);
        std::fs::write(d.join("extra.auth"), line).unwrap();
        let e = read_client_auth(&d).unwrap_err();
        assert!(
            e.contains("more than 512 *.auth files") && !e.contains('\n'),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_key_file_and_bad_arguments_are_one_line_errors() {
        let d = tmp("bad");
        create_private_dir(&d).unwrap();
        write_private(&d, SECRET_FILE, b"garbage").unwrap();
        let e = load_or_create_key(&d).err().unwrap();
        assert!(e.contains(SECRET_FILE) && !e.contains('\n'), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        // Parse as `onion serve` would, then run; a parse error counts as the run's error.
        let run = |v: Vec<String>| -> Result<(), String> {
            let cli = <Cli as clap::Parser>::try_parse_from(
                std::iter::once("serve".to_string()).chain(v),
            )
            .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_string())?;
            run(cli.args)
        };
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port().to_string();
        drop(closed);
        let key_dir = tmp("target");
        let e = run(args(&[
            "--target",
            &format!("127.0.0.1:{closed_port}"),
            "--key-dir",
            key_dir.to_str().unwrap(),
        ]))
        .err()
        .unwrap();
        assert!(
            e.starts_with("--target 127.0.0.1:") && !e.contains('\n'),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&key_dir);
        for bad in [
            args(&["--key-dir", "/tmp/x"]),
            args(&["--target", "nonsense", "--key-dir", "/tmp/x"]),
            args(&["--target", "127.0.0.1:0", "--key-dir", "/tmp/x"]),
            args(&[
                "--target",
                "127.0.0.1:80",
                "--key-dir",
                "/tmp/x",
                "--port",
                "0",
            ]),
            args(&["--target", "127.0.0.1:80", "--key-dir", "/proc/nope/x"]),
        ] {
            let e = run(bad).err().unwrap();
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
