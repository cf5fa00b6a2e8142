//! Serving certificate with hot reload.
//!
//! [`TlsReloader`] holds the current `CertifiedKey` in an `ArcSwap`; the
//! rustls `ResolvesServerCert` reads it on every handshake, so a swap takes
//! effect for new connections while established ones keep theirs: no restart,
//! no failed handshake. Sources: files (a mounted Secret, cert-manager, `make
//! certs`) polled for changes, or PEM pushed by the certificate manager
//! ([`crate::certs`]). A new pair is installed only once the certificate and
//! key parse and match, so a half-written Secret update is never served.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse the certificate PEM: {0}")]
    CertPem(#[source] std::io::Error),
    #[error("failed to parse the certificate PEM: no CERTIFICATE block")]
    NoCertificate,
    #[error("failed to parse the private key PEM: {0}")]
    KeyPem(#[source] std::io::Error),
    #[error("failed to parse the private key PEM: no PRIVATE KEY block")]
    NoKey,
    #[error("failed to load the certificate and key (do they belong together?): {0}")]
    Key(#[source] rustls::Error),
    #[error("failed to build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The current serving certificate, swappable at runtime. Cheap to clone.
#[derive(Clone)]
pub struct TlsReloader {
    current: Arc<ArcSwap<CertifiedKey>>,
    /// Bytes of the last files loaded, to tell a real change from a poll.
    loaded: Arc<Mutex<(Vec<u8>, Vec<u8>)>>,
    files: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parse a PEM certificate chain and its private key into a checked pair.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::CertPem)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(TlsError::KeyPem)?
        .ok_or(TlsError::NoKey)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::Key)
}

impl TlsReloader {
    /// Serve a certificate held in memory (pushed later with [`Self::set_pem`]).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let key = certified_key(cert_pem, key_pem)?;
        Ok(Self {
            current: Arc::new(ArcSwap::from_pointee(key)),
            loaded: Arc::new(Mutex::new((cert_pem.to_vec(), key_pem.to_vec()))),
            files: None,
        })
    }

    /// Serve the certificate in `cert` + `key`; [`Self::watch`] picks up changes.
    pub fn from_files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let (cert_pem, key_pem) = (read(&cert)?, read(&key)?);
        let mut reloader = Self::from_pem(&cert_pem, &key_pem)?;
        reloader.files = Some((cert, key));
        Ok(reloader)
    }

    /// Install a new certificate and key (both PEM) if they are valid together.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let key = certified_key(cert_pem, key_pem)?;
        self.current.store(Arc::new(key));
        if let Ok(mut loaded) = self.loaded.lock() {
            *loaded = (cert_pem.to_vec(), key_pem.to_vec());
        }
        Ok(())
    }

    /// Re-read the files; `Ok(true)` when a new certificate was installed.
    pub fn reload_files(&self) -> Result<bool, TlsError> {
        let Some((cert, key)) = &self.files else {
            return Ok(false);
        };
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let unchanged = self
            .loaded
            .lock()
            .map(|l| l.0 == cert_pem && l.1 == key_pem)
            .unwrap_or(false);
        if unchanged {
            return Ok(false);
        }
        self.set_pem(&cert_pem, &key_pem)?;
        Ok(true)
    }

    /// Poll the files every `interval` until `shutdown`; `on_reload(ok)` is
    /// called for each change seen (for metrics). No-op for in-memory certificates.
    pub fn watch(
        &self,
        interval: Duration,
        shutdown: CancellationToken,
        on_reload: impl Fn(bool) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            if this.files.is_none() {
                return;
            }
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                // Two small files every few seconds: a blocking read is cheaper than a thread hop.
                let result = this.reload_files();
                match result {
                    Ok(true) => {
                        tracing::info!(files = ?this.files, "serving certificate reloaded");
                        failing = false;
                        on_reload(true);
                    }
                    Ok(false) => failing = false,
                    // Secret updates swap files one by one: a mismatch usually
                    // heals on the next poll, so report once per failure streak.
                    Err(error) => {
                        if !failing {
                            tracing::warn!(%error, "failed to reload the serving certificate; keeping the current one");
                            on_reload(false);
                        }
                        failing = true;
                    }
                }
            }
        })
    }

    /// rustls configuration: TLS 1.2 and 1.3, ALPN h2 then http/1.1, the
    /// certificate chosen per handshake from the current pair.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.current.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The end-entity certificate currently served (DER).
    pub fn current_cert_der(&self) -> Vec<u8> {
        self.current
            .load()
            .cert
            .first()
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[derive(Debug)]
struct Resolver(Arc<ArcSwap<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}
