//! TLS for test servers: a throwaway CA and a certificate for `localhost`.
use std::sync::Arc;

/// A new CA and a serving certificate for `localhost` signed by it: the
/// CA's PEM (what clients trust) and a rustls config serving the
/// certificate (ALPN unset).
pub fn localhost_server_config() -> (String, rustls::ServerConfig) {
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("a CA certificate");
    let leaf_key = rcgen::KeyPair::generate().expect("a serving key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("serving certificate parameters")
        .signed_by(&leaf_key, &ca)
        .expect("a serving certificate");
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der())
        .expect("a DER private key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .expect("a server config");
    (ca.pem(), config)
}
