//! An onion service answering HTTP with hyper.
//!
//! ```text
//! cargo run -p onion-tokio --example onion_service -- [AUTHORITIES_FILE]
//! ```
//!
//! Prints the service's address, then answers every request with a short page until
//! interrupted.

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use onion_tokio::{OnionServiceConfig, TorClient, TorClientConfig};

async fn hello(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let page = format!(
        "hello from onion-tokio; you asked for {}\n",
        req.uri().path()
    );
    Ok(Response::new(Full::new(Bytes::from(page))))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = TorClientConfig::builder();
    if let Some(file) = std::env::args().nth(1) {
        config = config.authorities_file(file);
    }
    let tor = TorClient::bootstrap(config.build()?).await?;
    let (service, mut requests) = tor
        .launch_onion_service(OnionServiceConfig::new([80]))
        .await?;
    println!("serving http://{}/", service.address());

    while let Some(request) = requests.next().await {
        let io = TokioIo::new(request.accept());
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service_fn(hello))
                .await;
            if let Err(e) = served {
                eprintln!("connection: {e}");
            }
        });
    }
    Ok(())
}
