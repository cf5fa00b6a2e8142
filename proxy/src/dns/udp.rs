//! DNS over UDP: one datagram, one query. Each query the bounds admit gets
//! a task of its own; the answer goes back from the socket the query came
//! in on, so the kernel's NAT of the capture maps it back to the resolver
//! address the client asked.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::OwnedSemaphorePermit;

use super::{DnsState, InFlight, MAX_UDP_MESSAGE, wire};
use crate::metrics::TransportLabels;

const UDP: TransportLabels = TransportLabels { transport: "udp" };

pub(super) async fn serve(state: Arc<DnsState>, socket: Arc<UdpSocket>) {
    // One byte more than the largest message, to tell a larger one apart.
    let mut buf = vec![0u8; MAX_UDP_MESSAGE + 1];
    loop {
        let received = tokio::select! {
            () = state.shutdown.cancelled() => return,
            received = socket.recv_from(&mut buf) => received,
        };
        let (len, client) = match received {
            Ok(got) => got,
            Err(error) => {
                tracing::debug!(%error, "failed to receive a DNS datagram");
                continue;
            }
        };
        state.metrics.dns.queries.get_or_create(&UDP).inc();
        if len > MAX_UDP_MESSAGE {
            state.metrics.dns.reject("too_large");
            continue;
        }
        let Ok(permit) = state.in_flight.clone().try_acquire_owned() else {
            state.metrics.dns.reject("in_flight");
            continue;
        };
        let msg = buf[..len].to_vec();
        state
            .tracker
            .spawn(query(state.clone(), socket.clone(), client, msg, permit));
    }
}

async fn query(
    state: Arc<DnsState>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    msg: Vec<u8>,
    _permit: OwnedSemaphorePermit,
) {
    let _in_flight = InFlight::new(&state.metrics);
    let plan = state.plan(&msg, client.ip());
    let answer = state.run(plan, || forward(&state, &msg)).await;
    if let Some(answer) = answer
        && let Err(error) = socket.send_to(&answer, client).await
    {
        tracing::debug!(%error, %client, "failed to send a DNS answer");
    }
}

/// Asks the resolver from a socket of its own (the proxy's UID keeps it
/// out of the capture) and waits for the answer with the query's ID.
async fn forward(state: &DnsState, msg: &[u8]) -> Option<Vec<u8>> {
    let exchange = async {
        let local: IpAddr = if state.upstream.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let socket = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
        socket.connect(state.upstream).await?;
        socket.send(msg).await?;
        let id = wire::message_id(msg);
        let mut buf = vec![0u8; MAX_UDP_MESSAGE + 1];
        loop {
            let len = socket.recv(&mut buf).await?;
            if len >= 2 && wire::message_id(&buf[..len]) == id {
                buf.truncate(len);
                return Ok::<_, std::io::Error>(buf);
            }
        }
    };
    let answer = match tokio::time::timeout(state.config.timeout, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => {
            tracing::debug!(%error, upstream = %state.upstream, "DNS resolver failed");
            state.metrics.dns.upstream_error("io");
            return None;
        }
        Err(_) => {
            state.metrics.dns.upstream_error("timeout");
            return None;
        }
    };
    if answer.len() > MAX_UDP_MESSAGE {
        state.metrics.dns.reject("too_large");
        // The client asks again over TCP, where the answer fits.
        return wire::parse_query(msg)
            .ok()
            .map(|query| wire::truncated_answer(msg, &query));
    }
    Some(answer)
}
