//! Load generator for `bench/proxy.sh`, for what `wrk` cannot do:
//!
//! - `latency ADDR RATE CONNS SECONDS`: open-loop HTTP/1.1 at a fixed total
//!   rate over CONNS keep-alive connections; latency is measured from the
//!   send, or from the *scheduled* send time when the connection was still
//!   busy then, so a stall counts against every request it delays (no
//!   coordinated omission). Prints
//!   `rate=<achieved> p50_us=.. p90_us=.. p99_us=.. p999_us=.. errors=..`.
//! - `split ADDR RATE SECONDS SPLIT_MS`: open-loop HTTP/1.1 at a fixed rate,
//!   each request sent at its time on whichever keep-alive connection is
//!   idle (a new one when none is), so a slow response never holds back the
//!   next request. Latency is measured from the send; responses slower than
//!   SPLIT_MS (the ones a delay fault chose) are counted apart. Prints
//!   `rate=.. p50_us=.. p99_us=.. slow=<count> slow_pct=..` for the fast ones.
//! - `tcp ADDR CONNS SECONDS`: saturated raw TCP: CONNS connections each
//!   write 64 bytes and wait for the 64 bytes echoed back, again and again
//!   (the upstream is `bench-upstream`'s echo port). Prints `rps=..`.
//! - `hold ADDR CONNS SECONDS`: opens CONNS keep-alive connections, sends
//!   one request on each, then holds them idle for SECONDS (for RSS).
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bench-client latency ADDR RATE CONNS SECONDS | split ADDR RATE SECONDS SPLIT_MS \
                 | tcp ADDR CONNS SECONDS | hold ADDR CONNS SECONDS";
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("latency") if args.len() == 5 => runtime.block_on(latency(
            args[1].parse()?,
            args[2].parse()?,
            args[3].parse()?,
            Duration::from_secs(args[4].parse()?),
        )),
        Some("split") if args.len() == 5 => {
            // One thread, like the other modes' one worker: the dispatch
            // loop and the connections share it.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            runtime.block_on(local.run_until(split(
                args[1].parse()?,
                args[2].parse()?,
                Duration::from_secs(args[3].parse()?),
                Duration::from_millis(args[4].parse()?),
            )))
        }
        Some("tcp") if args.len() == 4 => runtime.block_on(tcp(
            args[1].parse()?,
            args[2].parse()?,
            Duration::from_secs(args[3].parse()?),
        )),
        Some("hold") if args.len() == 4 => runtime.block_on(hold(
            args[1].parse()?,
            args[2].parse()?,
            Duration::from_secs(args[3].parse()?),
        )),
        _ => Err(usage.into()),
    }
}

async fn connect(addr: std::net::SocketAddr) -> Result<Sender, Box<dyn std::error::Error>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    // Speak at once: a proxy that hears nothing for its detection timeout
    // (faultline-proxy: 200 ms) treats the connection as raw TCP, and the
    // benchmark would measure byte copying instead of HTTP proxying.
    request(&mut sender).await?;
    Ok(sender)
}

async fn request(sender: &mut Sender) -> Result<(), Box<dyn std::error::Error>> {
    sender.ready().await?;
    let req = Request::get("/")
        .header("host", "bench")
        .body(Empty::new())?;
    let response = sender.send_request(req).await?;
    response.into_body().collect().await?;
    Ok(())
}

async fn latency(
    addr: std::net::SocketAddr,
    rate: u64,
    conns: u64,
    length: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let interval = Duration::from_secs_f64(conns as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for i in 0..conns {
        let mut sender = connect(addr).await?;
        // Spread the connections' schedules evenly over one interval.
        let offset = interval.mul_f64(i as f64 / conns as f64);
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0u64;
            let mut next = start + offset;
            // Warm up for 1 s, then record.
            let record_from = start + Duration::from_secs(1);
            let end = start + length + Duration::from_secs(1);
            while next < end {
                // On schedule: wait for the send time and measure from the
                // moment the request really goes out (the timer's own
                // millisecond granularity is not the server's latency).
                // Behind schedule (the previous response came late): send
                // at once and measure from the scheduled time, so a stall
                // counts against every request it delays.
                let from = if Instant::now() < next {
                    tokio::time::sleep_until(next.into()).await;
                    Instant::now()
                } else {
                    next
                };
                let ok = request(&mut sender).await.is_ok();
                if !ok {
                    errors += 1;
                    // The server closed the connection: open another.
                    if let Ok(fresh) = connect(addr).await {
                        sender = fresh;
                    }
                }
                if next >= record_from && ok {
                    samples.push(from.elapsed().as_micros() as u64);
                }
                next += interval;
            }
            (samples, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (samples, e) = task.await?;
        all.extend(samples);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| quantile(&all, p);
    println!(
        "rate={:.0} p50_us={} p90_us={} p99_us={} p999_us={} errors={}",
        all.len() as f64 / length.as_secs_f64(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        errors
    );
    Ok(())
}

/// The value at quantile `p` of sorted samples.
fn quantile(sorted: &[u64], p: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

async fn split(
    addr: std::net::SocketAddr,
    rate: u64,
    length: Duration,
    slow: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    use std::cell::RefCell;
    use std::rc::Rc;
    let idle: Rc<RefCell<Vec<Sender>>> = Rc::new(RefCell::new(Vec::new()));
    for _ in 0..50 {
        let sender = connect(addr).await?;
        idle.borrow_mut().push(sender);
    }
    let fast = Rc::new(RefCell::new(Vec::new()));
    let slow_count = Rc::new(RefCell::new(0u64));
    let errors = Rc::new(RefCell::new(0u64));
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now() + Duration::from_millis(200);
    let record_from = start + Duration::from_secs(1);
    let end = start + length + Duration::from_secs(1);
    let mut next = start;
    let mut inflight = Vec::new();
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        // Every request whose time has come goes out now, each on its own
        // idle connection.
        while next <= Instant::now() && next < end {
            let record = next >= record_from;
            next += interval;
            let (idle, fast, slow_count, errors) = (
                idle.clone(),
                fast.clone(),
                slow_count.clone(),
                errors.clone(),
            );
            inflight.push(tokio::task::spawn_local(async move {
                let popped = idle.borrow_mut().pop();
                let mut sender = match popped {
                    Some(sender) => sender,
                    None => match connect(addr).await {
                        Ok(sender) => sender,
                        Err(_) => {
                            *errors.borrow_mut() += 1;
                            return;
                        }
                    },
                };
                let sent = Instant::now();
                if request(&mut sender).await.is_err() {
                    *errors.borrow_mut() += 1;
                    return;
                }
                let took = sent.elapsed();
                idle.borrow_mut().push(sender);
                if !record {
                } else if took >= slow {
                    *slow_count.borrow_mut() += 1;
                } else {
                    fast.borrow_mut().push(took.as_micros() as u64);
                }
            }));
        }
    }
    for task in inflight {
        task.await?;
    }
    let mut fast = fast.take();
    fast.sort_unstable();
    let slow_count = *slow_count.borrow();
    let total = fast.len() as u64 + slow_count;
    println!(
        "rate={:.0} p50_us={} p99_us={} slow={} slow_pct={:.1} errors={}",
        total as f64 / length.as_secs_f64(),
        quantile(&fast, 0.50),
        quantile(&fast, 0.99),
        slow_count,
        100.0 * slow_count as f64 / total.max(1) as f64,
        errors.borrow()
    );
    Ok(())
}

async fn tcp(
    addr: std::net::SocketAddr,
    conns: usize,
    length: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let end = Instant::now() + length;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut exchanges = 0u64;
            while Instant::now() < end {
                if stream.write_all(&[b'x'; 64]).await.is_err()
                    || stream.read_exact(&mut buf).await.is_err()
                {
                    break;
                }
                exchanges += 1;
            }
            exchanges
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await?;
    }
    println!("rps={:.0}", total as f64 / length.as_secs_f64());
    Ok(())
}

async fn hold(
    addr: std::net::SocketAddr,
    conns: usize,
    length: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut held = Vec::with_capacity(conns);
    for _ in 0..conns {
        held.push(connect(addr).await?);
    }
    println!("holding {conns} connections");
    tokio::time::sleep(length).await;
    drop(held);
    Ok(())
}
