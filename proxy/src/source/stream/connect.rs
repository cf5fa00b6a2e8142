//! One connection to the controller: TCP, TLS verified against the injected
//! CA, an HTTP/1.1 `GET` of the stream with the pod's bearer token, and a
//! body that yields raw chunks.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::error::ClientError;
use faultline_policy::wire::{CONTENT_TYPE, STREAM_PATH};

/// Where and how to connect, derived once from the client config.
#[derive(Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({}:{})", self.host, self.port)
    }
}

impl Endpoint {
    /// Validate the URL (https only) and build the TLS config from CA PEM text.
    pub fn new(url: &str, ca_pem: &[u8]) -> Result<Self, ClientError> {
        let uri: Uri = url.parse().map_err(|source| ClientError::Url {
            url: url.to_string(),
            source,
        })?;
        if uri.scheme_str() != Some("https") {
            return Err(ClientError::Scheme(url.to_string()));
        }
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Scheme(url.to_string()))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| ClientError::ServerName(host.clone()))?;
        Ok(Self {
            host,
            port,
            server_name,
            tls: Arc::new(tls_config(ca_pem)?),
        })
    }

    /// Connect and issue the stream request; returns the response body when
    /// the controller accepted it (200), else the status as an error.
    pub async fn open(
        &self,
        token: &str,
        pod: Option<(&str, &str)>,
    ) -> Result<Incoming, ClientError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| ClientError::Connect {
                endpoint: format!("{}:{}", self.host, self.port),
                source,
            })?;
        // Heartbeats are small; without NODELAY they could sit in Nagle's buffer.
        let _ = tcp.set_nodelay(true);
        let tls = TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(ClientError::Tls)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(ClientError::Http)?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "policy stream connection ended");
            }
        });
        let path = match pod {
            Some((namespace, name)) => format!("{STREAM_PATH}?namespace={namespace}&pod={name}"),
            None => STREAM_PATH.to_string(),
        };
        let authority = if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let request = Request::get(path)
            .header(header::HOST, authority)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::ACCEPT, CONTENT_TYPE)
            .body(Empty::<Bytes>::new())
            .map_err(ClientError::Request)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(ClientError::Http)?;
        let status = response.status();
        if status != StatusCode::OK {
            let retry_after = retry_after(response.headers());
            // Read a little of the reason, but never wait long for it.
            let limited = http_body_util::Limited::new(response.into_body(), 4096).collect();
            let body = match tokio::time::timeout(std::time::Duration::from_secs(2), limited).await
            {
                Ok(Ok(b)) => b.to_bytes(),
                _ => Bytes::new(),
            };
            let text = String::from_utf8_lossy(&body[..body.len().min(512)])
                .trim()
                .to_string();
            return Err(ClientError::Status {
                status,
                body: text,
                retry_after,
            });
        }
        Ok(response.into_body())
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the controller).
fn retry_after(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(std::time::Duration::from_secs)
}

fn tls_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut reader = ca_pem;
    for cert in rustls_pemfile::certs(&mut reader) {
        let cert = cert.map_err(ClientError::CaPem)?;
        roots.add(cert).map_err(ClientError::CaCert)?;
    }
    if roots.is_empty() {
        return Err(ClientError::NoCa);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ClientError::CaCert)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
