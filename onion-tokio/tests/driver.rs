//! The tokio driver in this process, without a Tor network: an authority whose port is
//! closed. Everything runs on a current-thread runtime, so a blocking call would stall it.

use std::time::{Duration, Instant};

use onion_tokio::{ErrorKind, TorClient, TorClientConfig};

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Bootstrap against an authority nobody answers for: progress events come, the bootstrap
/// fails within its deadline with a typed error, a stream waiting meanwhile fails after the
/// shutdown, and the shutdown returns.
#[tokio::test(flavor = "current_thread")]
async fn unreachable_authority_fails_in_time_and_shutdown_ends_everything() {
    let port = closed_port();
    let line = format!(
        "DirAuthority gone orport={port} v3ident=329F4451BAA808E78DF40D2F286080779AD22095 \
         127.0.0.1:{port} A07048407BC479AA3FDD636ABF78594D2378FAF6\n"
    );
    let cfg = TorClientConfig::builder()
        .authorities(line)
        .bootstrap_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let t = Instant::now();
    let tor = TorClient::create(cfg).await.unwrap();
    let mut events = tor.bootstrap_events();
    let first = events.next().await.expect("a status");
    assert!(!first.ready);
    let waiting = {
        let tor = tor.clone();
        tokio::spawn(async move { tor.connect(("127.0.0.1", 80)).await })
    };
    let e = tor.wait_bootstrapped().await.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Network),
        "{e} ({:?})",
        e.kind()
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(!tor.bootstrap_status().ready);
    tor.shutdown().await;
    let r = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting stream ends with the shutdown")
        .unwrap();
    assert!(r.is_err());
    let e = tor.connect(("127.0.0.1", 80)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Misuse, "{e}");
}
