//! onion-tokio against the private C tor network (`tornet`): hyper through an exit, an
//! onion service that C tor's client fetches from, 50 streams from 50 tasks, and a
//! benchmark against the blocking `onion get`. Each test drives its client on a
//! current-thread runtime: a blocking call inside the async code would stall it.
//!
//! `cargo test -p onion-tokio --test interop -- --nocapture` (the network starts once per
//! run, 20-40 s).

#[path = "support/tornet.rs"]
mod tornet;

use std::convert::Infallible;
use std::future::Future;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use onion_tokio::{DataStream, OnionServiceConfig, TorClient, TorClientConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tornet::TorNet;

/// Run `f` on a current-thread runtime (one thread: any blocking call in it stalls
/// everything), bounded by `limit`.
fn on_one_thread<T>(limit: Duration, f: impl Future<Output = T>) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(limit, f)
            .await
            .expect("the test did not finish in time")
    })
}

async fn client(net: &TorNet) -> TorClient {
    client_in(net, None).await
}

async fn client_in(net: &TorNet, data_dir: Option<&std::path::Path>) -> TorClient {
    let mut cfg = TorClientConfig::builder();
    if let Some(d) = data_dir {
        cfg = cfg.data_directory(d);
    }
    let cfg = cfg
        .authorities_file(&net.authorities_file)
        .bootstrap_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let t = Instant::now();
    let c = TorClient::bootstrap(cfg).await.expect("bootstrap");
    eprintln!("bootstrapped in {:.1}s", t.elapsed().as_secs_f64());
    c
}

/// Connect to the local HTTP server through an exit; a young network's exit sometimes
/// refuses a stream from a relay it has not learnt of yet, so try a few times.
async fn connect_http(tor: &TorClient, net: &TorNet) -> DataStream {
    let mut last = None;
    for _ in 0..5 {
        match tor.connect(("127.0.0.1", net.http_port)).await {
            Ok(s) => return s,
            Err(e) => {
                eprintln!("connect failed ({e}, kind {:?}), trying again", e.kind());
                last = Some(e);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    panic!("no stream: {last:?}");
}

/// `len` bytes, the same each time, in the HTTP server's root under `name`; their SHA-256.
fn big_file(net: &TorNet, name: &str, len: usize) -> [u8; 32] {
    let mut data = Vec::with_capacity(len);
    let mut x: u32 = 0x1234_5678;
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(net.http_root.join(name), &data).unwrap();
    Sha256::digest(&data).into()
}

async fn hyper_get(stream: DataStream, host: &str, path: &str) -> (u16, Vec<u8>) {
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

const FIVE_MIB: usize = 5 << 20;

/// hyper's HTTP/1.1 client over a Tor stream through a C tor exit: 5 MiB arrive intact.
/// The client keeps its state in a data directory: private files, written by the shutdown.
#[test]
fn hyper_get_of_5_mib_through_an_exit() {
    let Some(net) = tornet::network() else { return };
    let digest = big_file(net, "five-mib-hyper", FIVE_MIB);
    let dd = net.dir.join("onion-tokio-data");
    on_one_thread(Duration::from_secs(400), async {
        let tor = client_in(net, Some(&dd)).await;
        let stream = connect_http(&tor, net).await;
        let t = Instant::now();
        let (status, body) = hyper_get(stream, "127.0.0.1", "/five-mib-hyper").await;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(status, 200);
        assert_eq!(body.len(), FIVE_MIB);
        assert_eq!(
            <[u8; 32]>::from(Sha256::digest(&body)),
            digest,
            "sha256 differs"
        );
        eprintln!("5 MiB with hyper in {secs:.2}s ({:.2} MiB/s)", 5.0 / secs);
        tor.shutdown().await;
    });
}

/// C tor's client fetches a page from an onion service launched through onion-tokio and
/// answered by hyper's server.
#[test]
fn c_tor_fetches_from_an_onion_service_hosted_here() {
    let Some(net) = tornet::network() else { return };
    let socks = net.socks_port;
    on_one_thread(Duration::from_secs(500), async {
        let tor = client(net).await;
        let (service, mut requests) = tor
            .launch_onion_service(OnionServiceConfig::new([80]))
            .await
            .unwrap();
        let addr = service.address().to_string();
        eprintln!("service at {addr}");
        let marker = format!("served by onion-tokio at {addr}");
        let page = marker.clone();
        tokio::spawn(async move {
            while let Some(req) = requests.next().await {
                assert_eq!(req.port(), 80);
                let io = hyper_util::rt::TokioIo::new(req.accept());
                let page = page.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let page = page.clone();
                        async move {
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(page))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        // C tor's client, through its SOCKS port (curl runs on the blocking pool): the
        // descriptor takes a while to be published and fetched.
        let url = format!("http://{addr}/");
        let t = Instant::now();
        let mut last = String::new();
        while t.elapsed() < Duration::from_secs(300) {
            let u = url.clone();
            let (status, body, err) =
                tokio::task::spawn_blocking(move || tornet::curl_socks(socks, &u, 60))
                    .await
                    .unwrap();
            let ok = status.success();
            if ok && body == marker.as_bytes() {
                eprintln!(
                    "C tor fetched the page after {:.1}s",
                    t.elapsed().as_secs_f64()
                );
                drop(service);
                tor.shutdown().await;
                return;
            }
            last = format!(
                "ok={ok} body={:?} err={}",
                String::from_utf8_lossy(&body),
                err.trim()
            );
            eprintln!("not yet: {last}");
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        panic!("C tor never fetched the page: {last}");
    });
}

/// A `.onion` host works as any other: a stream to the C tor onion service of the network
/// (its descriptor may still be on its way to the HSDirs at first).
#[test]
fn connect_to_a_c_tor_onion_service() {
    let Some(net) = tornet::network() else { return };
    on_one_thread(Duration::from_secs(400), async {
        let tor = client(net).await;
        let t = Instant::now();
        let mut last = None;
        while t.elapsed() < Duration::from_secs(240) {
            match tor.connect((net.onion_hostname.as_str(), 80)).await {
                Ok(mut s) => {
                    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                        .await
                        .unwrap();
                    let mut resp = Vec::new();
                    s.read_to_end(&mut resp).await.unwrap();
                    let text = String::from_utf8_lossy(&resp);
                    assert!(text.ends_with(&net.http_body), "{text}");
                    eprintln!(
                        "onion service answered after {:.1}s",
                        t.elapsed().as_secs_f64()
                    );
                    tor.shutdown().await;
                    return;
                }
                Err(e) => {
                    eprintln!("not yet: {e} ({:?})", e.kind());
                    last = Some(e);
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
            }
        }
        panic!("the onion service never answered: {last:?}");
    });
}

/// 50 tasks, each with its own stream and HTTP/1.0 request, at once, on one thread.
#[test]
fn fifty_concurrent_streams_from_fifty_tasks() {
    let Some(net) = tornet::network() else { return };
    let expect = net.http_body.clone();
    on_one_thread(Duration::from_secs(400), async {
        let tor = client(net).await;
        // One stream first, so the exit circuit exists and knows the path.
        drop(connect_http(&tor, net).await);
        let port = net.http_port;
        let mut tasks = Vec::new();
        for i in 0..50 {
            let tor = tor.clone();
            tasks.push(tokio::spawn(async move {
                let mut last = None;
                for _ in 0..3 {
                    let mut s = match tor.connect(("127.0.0.1", port)).await {
                        Ok(s) => s,
                        Err(e) => {
                            last = Some(e.to_string());
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    };
                    let req = format!("GET /?task={i} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
                    s.write_all(req.as_bytes()).await.unwrap();
                    s.flush().await.unwrap();
                    let mut resp = Vec::new();
                    s.read_to_end(&mut resp).await.unwrap();
                    return resp;
                }
                panic!("task {i}: {last:?}");
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let resp = t.await.unwrap();
            let text = String::from_utf8_lossy(&resp);
            assert!(text.starts_with("HTTP/1."), "task {i}: {text}");
            assert!(text.ends_with(&expect), "task {i}: {text}");
        }
        tor.shutdown().await;
    });
}

/// The `onion` binary next to this test binary (`cargo build -p onion-cli` in the same
/// profile), if built.
fn onion_bin() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("onion");
    bin.exists().then_some(bin)
}

/// 5 MiB through the same private network, onion-tokio (HTTP/1.0 over a stream) against
/// the blocking CLI (`onion get`), each after its own bootstrap; prints both figures.
/// `cargo build --release -p onion-cli && cargo test --release -p onion-tokio --test interop
/// bench -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: run it explicitly"]
fn bench_5_mib_onion_tokio_against_onion_get() {
    let Some(net) = tornet::network() else { return };
    let Some(onion) = onion_bin() else {
        panic!("build the `onion` binary in this profile first (cargo build -p onion-cli)");
    };
    let digest = big_file(net, "five-mib-bench", FIVE_MIB);
    let url = net.url("five-mib-bench");
    let mut tokio_secs = Vec::new();
    let mut cli_secs = Vec::new();
    for round in 0..3 {
        let secs = on_one_thread(Duration::from_secs(300), async {
            let tor = client(net).await;
            let mut s = connect_http(&tor, net).await;
            let t = Instant::now();
            s.write_all(b"GET /five-mib-bench HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .await
                .unwrap();
            let mut resp = Vec::new();
            s.read_to_end(&mut resp).await.unwrap();
            let secs = t.elapsed().as_secs_f64();
            let body = &resp[resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
            assert_eq!(<[u8; 32]>::from(Sha256::digest(body)), digest);
            tor.shutdown().await;
            secs
        });
        tokio_secs.push(secs);
        // `onion get` prints the body on stdout; its own bootstrap and circuit are included
        // in its wall time, so time the whole run and also a run for an empty page.
        let t = Instant::now();
        let out = std::process::Command::new(&onion)
            .arg("get")
            .arg("--authorities")
            .arg(&net.authorities_file)
            .arg(&url)
            .output()
            .unwrap();
        let whole = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(<[u8; 32]>::from(Sha256::digest(&out.stdout)), digest);
        let t = Instant::now();
        let small = std::process::Command::new(&onion)
            .arg("get")
            .arg("--authorities")
            .arg(&net.authorities_file)
            .arg(net.url("/"))
            .output()
            .unwrap();
        let base = t.elapsed().as_secs_f64();
        assert!(small.status.success());
        cli_secs.push((whole - base).max(0.001));
        eprintln!(
            "round {round}: onion-tokio {secs:.2}s, onion get {whole:.2}s total, {base:.2}s for an empty page"
        );
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mut cli: Vec<f64> = cli_secs;
    let (t, c) = (med(&mut tokio_secs), med(&mut cli));
    eprintln!(
        "BENCH 5 MiB transfer, median of 3: onion-tokio {t:.2}s ({:.2} MiB/s), onion get {c:.2}s ({:.2} MiB/s)",
        5.0 / t,
        5.0 / c
    );
}
