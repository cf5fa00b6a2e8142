//! Key material for a test control plane, generated fresh for every start:
//! a CA, the kube-apiserver's serving certificate signed by it (valid for
//! `127.0.0.1` and `localhost`, so clients verify it normally instead of
//! skipping verification), the service-account signing key, and the static
//! admin token.
//!
//! We generate the serving certificate ourselves rather than letting the API
//! server self-sign into `--cert-dir`: that way the CA is known up front and
//! goes into the kubeconfig, `kube::Client` and the controller-manager's
//! `--root-ca-file` (the `ca.crt` in service-account token Secrets).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::HarnessError;

/// PEM texts written into the control plane's directory.
pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    pub(crate) serving_cert_pem: String,
    pub(crate) serving_key_pem: String,
    /// PKCS#8 ECDSA P-256: `--service-account-signing-key-file` and the
    /// controller-manager's `--service-account-private-key-file`.
    pub(crate) sa_key_pem: String,
    /// SubjectPublicKeyInfo: `--service-account-key-file` (1.20 does not
    /// derive the public key from a PKCS#8 private key file).
    pub(crate) sa_pub_pem: String,
    pub(crate) admin_token: String,
}

fn rcgen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> HarnessError {
    move |source| HarnessError::Pki { what, source }
}

impl Pki {
    pub(crate) fn generate() -> Result<Pki, HarnessError> {
        let ca_key = KeyPair::generate().map_err(rcgen_err("generate the CA key"))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())
            .map_err(rcgen_err("build the CA parameters"))?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "faultline-envtest-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(rcgen_err("self-sign the CA"))?;
        let ca = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate().map_err(rcgen_err("generate the serving key"))?;
        let mut serving_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(rcgen_err("build the serving certificate parameters"))?;
        serving_params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let serving_cert = serving_params
            .signed_by(&serving_key, &ca)
            .map_err(rcgen_err("sign the serving certificate"))?;

        let sa_key = KeyPair::generate().map_err(rcgen_err("generate the service-account key"))?;

        Ok(Pki {
            ca_pem: ca_cert.pem(),
            serving_cert_pem: serving_cert.pem(),
            serving_key_pem: serving_key.serialize_pem(),
            sa_key_pem: sa_key.serialize_pem(),
            sa_pub_pem: sa_key.public_key_pem(),
            admin_token: random_token(),
        })
    }
}

/// 32 random bytes as hex; the token only has to be unguessable by other
/// local processes for the lifetime of one test run.
fn random_token() -> String {
    use std::fmt::Write as _;
    let bytes: [u8; 32] = rand::random();
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
