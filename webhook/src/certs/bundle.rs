//! The pure part: an rcgen CA and a serving certificate for the webhook's
//! DNS names, and the renewal decision.
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use thiserror::Error;
use time::OffsetDateTime;

pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
pub const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Renew the serving certificate when less than this is left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Error)]
pub enum CertError {
    #[error("failed to generate a certificate: {0}")]
    Generate(#[source] rcgen::Error),
    #[error("failed to parse the certificate PEM: {0}")]
    Parse(#[source] rcgen::Error),
    #[error("failed to parse the certificate: {0}")]
    X509(String),
}

/// A CA and a serving certificate it signed, all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertBundle {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The names the API server uses to reach `service` in `namespace`.
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

fn validity(params: &mut CertificateParams, now: OffsetDateTime, lifetime: Duration) {
    // Backdate a little: clocks across a cluster are never exactly in sync.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + lifetime;
}

/// A new CA plus a serving certificate for `names` (DNS names or IPs).
pub fn generate(names: &[String], now: OffsetDateTime) -> Result<CertBundle, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "faultline-webhook-ca");
    dn.push(DnType::OrganizationName, "faultline");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, now, CA_VALIDITY);
    let ca_key = KeyPair::generate().map_err(CertError::Generate)?;
    let ca_cert = params.self_signed(&ca_key).map_err(CertError::Generate)?;
    let (ca_cert_pem, ca_key_pem) = (ca_cert.pem(), ca_key.serialize_pem());
    let (cert_pem, key_pem) = issue(&ca_cert_pem, &ca_key_pem, names, now)?;
    Ok(CertBundle {
        ca_cert_pem,
        ca_key_pem,
        cert_pem,
        key_pem,
    })
}

/// A serving certificate for `names`, signed by the given CA. Returns (cert, key) PEM.
pub fn issue(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    names: &[String],
    now: OffsetDateTime,
) -> Result<(String, String), CertError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(CertError::Parse)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(CertError::Parse)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(CertError::Generate)?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names
            .first()
            .map(String::as_str)
            .unwrap_or("faultline-webhook"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, now, SERVING_VALIDITY);
    let key = KeyPair::generate().map_err(CertError::Generate)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(CertError::Generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Expiry of a PEM certificate.
pub fn not_after(cert_pem: &str) -> Result<OffsetDateTime, CertError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| CertError::X509(e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| CertError::X509(e.to_string()))?;
    OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
        .map_err(|e| CertError::X509(e.to_string()))
}

/// Whether the certificate names every one of `names` (DNS names or IPs) as
/// a subject alternative name; false when it does not parse.
pub fn covers(cert_pem: &str, names: &[String]) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let present: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_string()),
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect();
    names.iter().all(|wanted| {
        let wanted = match wanted.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => wanted.clone(),
        };
        present.contains(&wanted)
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// What to do with the certificates found in the Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Valid for longer than the renewal margin.
    Keep,
    /// Serving certificate near expiry (or unreadable): issue a new one from the same CA.
    ServingCert,
    /// The CA itself is near expiry or unreadable: start over.
    Everything,
}

/// Pure renewal decision.
pub fn renewal(bundle: &CertBundle, now: OffsetDateTime) -> Renewal {
    let due =
        |pem: &str, margin: Duration| not_after(pem).map(|t| t - margin <= now).unwrap_or(true);
    // The CA must outlive any serving certificate it would sign.
    if due(&bundle.ca_cert_pem, SERVING_VALIDITY + RENEW_BEFORE)
        || KeyPair::from_pem(&bundle.ca_key_pem).is_err()
    {
        Renewal::Everything
    } else if due(&bundle.cert_pem, RENEW_BEFORE) {
        Renewal::ServingCert
    } else {
        Renewal::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        dns_names("faultline-webhook", "faultline-system")
    }

    #[test]
    fn serving_cert_covers_service_names_and_verifies() {
        let now = OffsetDateTime::now_utc();
        let bundle = generate(&names(), now).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(bundle.cert_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert!(sans.contains(&"faultline-webhook.faultline-system.svc".to_string()));
        assert!(sans.contains(&"faultline-webhook.faultline-system.svc.cluster.local".to_string()));
        // The pair loads in rustls (key matches certificate).
        crate::tls::certified_key(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes()).unwrap();
        assert_eq!(renewal(&bundle, now), Renewal::Keep);
    }

    #[test]
    fn covers_checks_every_dns_name_and_ip() {
        let now = OffsetDateTime::now_utc();
        let mut wanted = names();
        wanted.push("10.88.0.1".into());
        let bundle = generate(&wanted, now).unwrap();
        assert!(covers(&bundle.cert_pem, &wanted));
        assert!(covers(&bundle.cert_pem, &["10.88.0.1".to_string()]));
        let plain = generate(&names(), now).unwrap();
        assert!(covers(&plain.cert_pem, &names()));
        assert!(!covers(&plain.cert_pem, &wanted));
        assert!(!covers(&plain.cert_pem, &["127.0.0.1".to_string()]));
        assert!(!covers("garbage", &names()));
    }

    #[test]
    fn renewal_decisions() {
        let now = OffsetDateTime::now_utc();
        let bundle = generate(&names(), now).unwrap();
        let later = now + SERVING_VALIDITY - RENEW_BEFORE + time::Duration::hours(1);
        assert_eq!(renewal(&bundle, later), Renewal::ServingCert);
        let much_later = now + CA_VALIDITY - SERVING_VALIDITY;
        assert_eq!(renewal(&bundle, much_later), Renewal::Everything);
        let broken = CertBundle {
            cert_pem: "garbage".into(),
            ..bundle.clone()
        };
        assert_eq!(renewal(&broken, now), Renewal::ServingCert);
        let no_ca_key = CertBundle {
            ca_key_pem: "garbage".into(),
            ..bundle
        };
        assert_eq!(renewal(&no_ca_key, now), Renewal::Everything);
    }
}
