//! TLS for test servers: a throwaway CA and serving certificates signed by it.
use std::sync::Arc;

/// A new CA and a serving certificate for `localhost` signed by it: the
/// CA's PEM (what clients trust) and a rustls config serving the
/// certificate (ALPN unset).
pub fn localhost_server_config() -> (String, rustls::ServerConfig) {
    let certs = TestCerts::new(&["localhost"]);
    (certs.ca_pem, certs.server)
}

/// A throwaway CA, a server config serving one certificate for `names`
/// (DNS names, or IP addresses as IP SANs), and what a client needs to
/// trust it.
pub struct TestCerts {
    pub ca_pem: String,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
    pub server: rustls::ServerConfig,
}

impl TestCerts {
    pub fn new(names: &[&str]) -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("a CA certificate");
        let leaf_key = rcgen::KeyPair::generate().expect("a serving key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .expect("serving certificate parameters")
            .signed_by(&leaf_key, &ca)
            .expect("a serving certificate");
        let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der())
            .expect("a DER private key");
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .expect("a server config");
        TestCerts {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            server,
        }
    }

    /// A client config that trusts only this CA.
    pub fn client(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("the test CA");
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
