//! "curl through Tor" without SOCKS: `torcurl http://host[:port]/path [AUTHORITIES_FILE]`
//! writes the response body to stdout (HTTP/1.0, so the body ends with the stream).

use onion_tokio::{TorClient, TorClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: torcurl http://host[:port]/path [AUTHORITIES]")?;
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse()?),
        None => (authority, 80),
    };

    let mut config = TorClientConfig::builder();
    if let Some(file) = args.next() {
        config = config.authorities_file(file);
    }
    let tor = TorClient::bootstrap(config.build()?).await?;
    let mut stream = tor.connect((host, port)).await?;
    let path = if path.is_empty() { "/" } else { path };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;

    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header")?;
    eprintln!("{}", String::from_utf8_lossy(&response[..split]));
    tokio::io::stdout()
        .write_all(&response[split + 4..])
        .await?;
    tor.shutdown().await;
    Ok(())
}
