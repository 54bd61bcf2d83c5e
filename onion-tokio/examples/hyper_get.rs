//! An HTTP GET with hyper over a Tor stream.
//!
//! ```text
//! cargo run -p onion-tokio --example hyper_get -- http://example.com/ [AUTHORITIES_FILE]
//! ```
//!
//! Without an authorities file the public Tor network is used.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use onion_tokio::{TorClient, TorClientConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url: hyper::Uri = args
        .next()
        .unwrap_or("http://example.com/".into())
        .parse()?;
    let mut config = TorClientConfig::builder();
    if let Some(file) = args.next() {
        config = config.authorities_file(file);
    }
    let tor = TorClient::bootstrap(config.build()?).await?;

    let host = url.host().ok_or("the URL has no host")?.to_string();
    let stream = tor
        .connect((host.as_str(), url.port_u16().unwrap_or(80)))
        .await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);

    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    eprintln!("{}", response.status());
    let body = response.into_body().collect().await?.to_bytes();
    println!("{}", String::from_utf8_lossy(&body));
    tor.shutdown().await;
    Ok(())
}
