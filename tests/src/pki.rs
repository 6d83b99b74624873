//! Certificates made at test time (rcgen): a test CA, and server and
//! client certificates it signs, written as PEM files into a directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

/// A test certificate authority whose files live in `dir`.
pub struct Pki {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and key written as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, signed by the CA.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8).
    pub key_file: PathBuf,
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server's certificate.
    Server,
    /// A TLS client's certificate.
    Client,
    /// Both: a server that also connects to itself as a client (etcd's
    /// gateway does, with its server certificate, under
    /// `--client-cert-auth`).
    ServerAndClient,
}

impl Pki {
    /// A new CA named `name`; its certificate is `dir/NAME-ca.pem`.
    ///
    /// # Panics
    /// When the key cannot be made or the file written (test set-up).
    pub fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let cert = params.self_signed(&key).expect("CA certificate");
        std::fs::write(dir.join(format!("{name}-ca.pem")), cert.pem()).expect("write CA");
        Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// Issues a certificate for `sans` (DNS names, IP addresses, or URIs
    /// with a `://`) with common name `cn`, written as `dir/FILE.pem` and
    /// `dir/FILE.key`; `expired` makes one whose validity ended in 2020.
    ///
    /// # Panics
    /// On a bad name or a failed write (test set-up).
    pub fn issue(
        &self,
        file: &str,
        cn: &str,
        sans: &[&str],
        usage: Usage,
        expired: bool,
    ) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        for san in sans {
            params.subject_alt_names.push(if san.contains("://") {
                SanType::URI((*san).try_into().expect("URI SAN"))
            } else if let Ok(ip) = san.parse() {
                SanType::IpAddress(ip)
            } else {
                SanType::DnsName((*san).try_into().expect("DNS SAN"))
            });
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = match usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let issued = Issued {
            cert_file: self.dir.join(format!("{file}.pem")),
            key_file: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert_file, cert.pem()).expect("write certificate");
        std::fs::write(&issued.key_file, key.serialize_pem()).expect("write key");
        issued
    }
}
