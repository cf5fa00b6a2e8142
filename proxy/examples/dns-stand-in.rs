//! A resolver and a lookup for `make demo`'s DNS step, which has no DNS
//! tools to rely on: `serve` runs the tests' resolver stand-in (it answers
//! every A query with 10.1.2.3), `ask` sends one A query over UDP and prints
//! what came back, as `nslookup` would sum it up.
//!
//! Usage: dns-stand-in serve ADDR | dns-stand-in ask ADDR NAME
use std::net::SocketAddr;
use std::time::Duration;

use faultline_test_support::dns;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: dns-stand-in serve ADDR | dns-stand-in ask ADDR NAME";
    let command = args.next().ok_or(usage)?;
    let addr: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command.as_str() {
            "serve" => {
                dns::Resolver::start(addr).await?;
                std::future::pending::<()>().await;
                Ok(())
            }
            "ask" => {
                let name = args.next().ok_or(usage)?;
                let started = std::time::Instant::now();
                let answer = ask(addr, &name).await?;
                println!("{answer} in {:.2}s", started.elapsed().as_secs_f64());
                Ok(())
            }
            _ => Err(usage.into()),
        }
    })
}

async fn ask(server: SocketAddr, name: &str) -> Result<String, Box<dyn std::error::Error>> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.send_to(&dns::query(7, name, 1), server).await?;
    let mut buf = vec![0u8; 4096];
    let Ok(received) = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await
    else {
        return Ok("no answer".into());
    };
    let answer = &buf[..received?];
    Ok(match dns::rcode_and_answers(answer) {
        Some((0, n)) if n > 0 => format!("{}", dns::ANSWER_V4),
        Some((0, _)) => "no records".into(),
        Some((2, _)) => "SERVFAIL".into(),
        Some((3, _)) => "NXDOMAIN".into(),
        Some((5, _)) => "REFUSED".into(),
        Some((rcode, _)) => format!("rcode {rcode}"),
        None => "not a DNS answer".into(),
    })
}
