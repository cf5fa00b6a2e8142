//! A minimal, fast upstream for `bench/proxy.sh`: answers every request
//! with a 13-byte body over HTTP/1.1 or h2c (prior knowledge).
//!
//! With ECHO_ADDR, also echoes raw TCP there (for `bench-client tcp`).
//!
//! Usage: bench-upstream ADDR [WORKER_THREADS [ECHO_ADDR]]
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: std::net::SocketAddr = args
        .next()
        .ok_or("usage: bench-upstream ADDR [THREADS]")?
        .parse()?;
    let threads: usize = args.next().map_or(Ok(1), |t| t.parse())?;
    let echo: Option<std::net::SocketAddr> = args.next().map(|a| a.parse()).transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        if let Some(echo) = echo {
            let listener = tokio::net::TcpListener::bind(echo).await?;
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(async move {
                        let (mut reader, mut writer) = stream.split();
                        let _ = tokio::io::copy(&mut reader, &mut writer).await;
                    });
                }
            });
        }
        let listener = tokio::net::TcpListener::bind(addr).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            b"hello, world\n",
                        ))))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
