//! A resolver stand-in: a small real DNS server over UDP and TCP on one
//! port, for tests of the proxy's DNS listener. It answers `A` queries with
//! [`ANSWER_V4`], `AAAA` with [`ANSWER_V6`], other types with no records,
//! and keeps every query it received, byte for byte. Two names behave
//! differently: [`SILENT`] is never answered, and [`BIG`] gets a TXT answer
//! too large for UDP.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ANSWER_V4: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
pub const ANSWER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x53);
/// Queries for this name get no answer at all.
pub const SILENT: &str = "silent.example.test";
/// Queries for this name get a TXT answer of about 6 KB.
pub const BIG: &str = "big.example.test";

/// A query as the stand-in received it.
pub type Received = (Transport, Vec<u8>);

/// The running stand-in.
#[derive(Clone)]
pub struct Resolver {
    pub addr: SocketAddr,
    queries: Arc<Mutex<Vec<Received>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Resolver {
    /// Binds UDP and TCP on `addr` (port 0: a port free for both).
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        for _ in 0..16 {
            let udp = std::net::UdpSocket::bind(addr)?;
            let port = udp.local_addr()?.port();
            match std::net::TcpListener::bind(SocketAddr::new(addr.ip(), port)) {
                Ok(tcp) => return Self::serve(udp, tcp),
                Err(error) if addr.port() != 0 => return Err(error),
                Err(_) => continue,
            }
        }
        Err(std::io::Error::other("no port free for both UDP and TCP"))
    }

    /// Serves on sockets bound elsewhere (in another network namespace).
    pub fn serve(udp: std::net::UdpSocket, tcp: std::net::TcpListener) -> std::io::Result<Self> {
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let addr = udp.local_addr()?;
        let udp = tokio::net::UdpSocket::from_std(udp)?;
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        let resolver = Self {
            addr,
            queries: Arc::default(),
        };
        tokio::spawn(serve_udp(resolver.clone(), udp));
        tokio::spawn(serve_tcp(resolver.clone(), tcp));
        Ok(resolver)
    }

    /// Every query received so far, in order.
    pub fn queries(&self) -> Vec<Received> {
        self.queries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, transport: Transport, msg: &[u8]) {
        self.queries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((transport, msg.to_vec()));
    }
}

async fn serve_udp(resolver: Resolver, socket: tokio::net::UdpSocket) {
    let mut buf = vec![0u8; 65_535];
    while let Ok((len, client)) = socket.recv_from(&mut buf).await {
        resolver.record(Transport::Udp, &buf[..len]);
        if let Some(answer) = answer(&buf[..len]) {
            let _ = socket.send_to(&answer, client).await;
        }
    }
}

async fn serve_tcp(resolver: Resolver, listener: tokio::net::TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let resolver = resolver.clone();
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut msg).await.is_err() {
                    return;
                }
                resolver.record(Transport::Tcp, &msg);
                let Some(answer) = answer(&msg) else { continue };
                let Ok(len) = u16::try_from(answer.len()) else {
                    return;
                };
                let mut framed = len.to_be_bytes().to_vec();
                framed.extend_from_slice(&answer);
                if stream.write_all(&framed).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The question of a query: its name (lowercase, dotted) and where it ends.
pub fn question(msg: &[u8]) -> Option<(String, u16, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*msg.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
    Some((labels.join("."), qtype, at + 4))
}

fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let (name, qtype, end) = question(query)?;
    if name == SILENT {
        return None;
    }
    let rdata: Vec<Vec<u8>> = match (qtype, name.as_str()) {
        (1, _) => vec![ANSWER_V4.octets().to_vec()],
        (28, _) => vec![ANSWER_V6.octets().to_vec()],
        (16, BIG) => (0..24).map(|_| txt(&[b'x'; 250])).collect(),
        _ => vec![],
    };
    let mut out = query.get(..2)?.to_vec();
    out.push(0x81 | (query.get(2)? & 0x01));
    out.push(0x80);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&u16::try_from(rdata.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(query.get(12..end)?);
    for data in rdata {
        // The name points at the question's (offset 12).
        out.extend_from_slice(&[0xC0, 12]);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 30]);
        out.extend_from_slice(&u16::try_from(data.len()).ok()?.to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some(out)
}

fn txt(text: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::try_from(text.len()).unwrap_or(u8::MAX)];
    out.extend_from_slice(text);
    out
}

/// A standard recursive query for `name` and `qtype`, as a stub resolver
/// sends it.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&[0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let label = &label.as_bytes()[..label.len().min(63)];
        out.push(u8::try_from(label.len()).unwrap_or(63));
        out.extend_from_slice(label);
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    out
}

/// The RCODE and answer count of an answer.
pub fn rcode_and_answers(msg: &[u8]) -> Option<(u8, u16)> {
    Some((
        msg.get(3)? & 0x0F,
        u16::from_be_bytes([*msg.get(6)?, *msg.get(7)?]),
    ))
}
