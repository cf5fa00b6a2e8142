//! TLS load for `bench/tls.sh`: a rustls server and a client that opens
//! TLS connections as fast as it can, so the proxy in between sees one new
//! TLS connection (and ClientHello) after another.
//!
//! - `server ADDR THREADS CA_OUT NAME...`: a rustls server with a fresh CA
//!   and a certificate for the NAMEs; writes the CA certificate (DER) to
//!   CA_OUT once it listens; echoes what each connection sends.
//! - `client ADDR CA CONNS SECONDS NAME`: CONNS loops, each connecting,
//!   handshaking with SNI NAME (trusting the CA in file CA), writing 64
//!   bytes, reading them back and closing, again and again for SECONDS.
//!   Prints `rps=<connections per second> errors=<failed connections>`.
//! - `parse NAME ITERATIONS`: what reading the server name costs: parses a
//!   rustls ClientHello for NAME (one record, then split over 8 records)
//!   ITERATIONS times each. Prints `one_record_ns=.. split_ns=..`.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bench-tls server ADDR THREADS CA_OUT NAME... | client ADDR CA CONNS SECONDS NAME \
                 | parse NAME ITERATIONS";
    match args.first().map(String::as_str) {
        Some("server") if args.len() >= 5 => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args[2].parse()?)
                .enable_all()
                .build()?;
            runtime.block_on(server(args[1].parse()?, &args[3], &args[4..]))
        }
        Some("client") if args.len() == 6 => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            runtime.block_on(client(
                args[1].parse()?,
                &args[2],
                args[3].parse()?,
                Duration::from_secs(args[4].parse()?),
                args[5].clone(),
            ))
        }
        Some("parse") if args.len() == 3 => parse(&args[1], args[2].parse()?),
        _ => Err(usage.into()),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn server(addr: std::net::SocketAddr, ca_out: &str, names: &[String]) -> Result<(), Error> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(names.to_vec())?.signed_by(&key, &ca)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der())?,
        )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    std::fs::write(ca_out, ca.der())?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let mut buf = [0u8; 4096];
            while let Ok(n) = tls.read(&mut buf).await {
                if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn client(
    addr: std::net::SocketAddr,
    ca: &str,
    conns: usize,
    seconds: Duration,
    name: String,
) -> Result<(), Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(std::fs::read(ca)?))?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(name)?;
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let until = Instant::now() + seconds;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (connector, name) = (connector.clone(), name.clone());
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                match exchange(addr, &connector, name.clone()).await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let done = done.load(Ordering::Relaxed);
    println!(
        "rps={:.0} errors={}",
        done as f64 / seconds.as_secs_f64(),
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

/// One TLS connection: handshake, 64 bytes there and back, close.
async fn exchange(
    addr: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    name: ServerName<'static>,
) -> Result<(), Error> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut tls = connector.connect(name, stream).await?;
    let sent = [7u8; 64];
    tls.write_all(&sent).await?;
    let mut back = [0u8; 64];
    tls.read_exact(&mut back).await?;
    tls.shutdown().await?;
    Ok(())
}

fn parse(name: &str, iterations: u32) -> Result<(), Error> {
    use faultline_proxy::traffic::client_hello::{self, Hello};
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let server = ServerName::try_from(name.to_owned())?;
    let mut client = rustls::ClientConnection::new(Arc::new(config), server)?;
    let mut hello = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut hello)?;
    }
    // The same handshake message in 8 records.
    let (header, message) = hello.split_at(5);
    let mut split = Vec::new();
    for piece in message.chunks(message.len().div_ceil(8)) {
        split.extend_from_slice(&header[..3]);
        split.extend_from_slice(&u16::try_from(piece.len())?.to_be_bytes());
        split.extend_from_slice(piece);
    }
    let time = |bytes: &[u8]| -> Result<f64, Error> {
        let expected = Hello::Done(Some(name.into()));
        let started = Instant::now();
        for _ in 0..iterations {
            if client_hello::parse(std::hint::black_box(bytes)) != expected {
                return Err("the server name was not read".into());
            }
        }
        Ok(started.elapsed().as_nanos() as f64 / f64::from(iterations))
    };
    println!(
        "one_record_ns={:.0} split_ns={:.0} bytes={}",
        time(&hello)?,
        time(&split)?,
        hello.len()
    );
    Ok(())
}
