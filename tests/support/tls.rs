//! Certificates for TLS tests and benches, made at run time with rcgen: a
//! CA, server certificates (good, for another name, expired), a client
//! certificate, and memcached serving TLS with them.

use std::path::PathBuf;

use memring::TlsConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use super::Memcached;

/// A CA and certificates signed by it, written to a temporary directory.
pub struct Pki {
    dir: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert, Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    names: &[&str],
    client: bool,
    expired: bool,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "memring test");
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new() -> Pki {
        let dir = super::temp_dir("tls");
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        let (ca_cert, issuer) = ca("memring test CA");
        write("ca.pem", &ca_cert.pem());
        let (other_ca, _) = ca("some other CA");
        write("other-ca.pem", &other_ca.pem());
        let (c, k) = leaf(&issuer, &["localhost", "127.0.0.1"], false, false);
        write("server.pem", &c);
        write("server.key", &k);
        let (c, k) = leaf(&issuer, &["cache.example.net"], false, false);
        write("wrong-name.pem", &c);
        write("wrong-name.key", &k);
        let (c, k) = leaf(&issuer, &["localhost", "127.0.0.1"], false, true);
        write("expired.pem", &c);
        write("expired.key", &k);
        let (c, k) = leaf(&issuer, &["memring client"], true, false);
        write("client.pem", &c);
        write("client.key", &k);
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// memcached serving TLS with this certificate (`server`, `expired`,
    /// `wrong-name`), plus extra `-o` options and arguments.
    pub fn server(&self, cert: &str, options: &str, extra: &[&str]) -> Memcached {
        let mut o = format!(
            "ssl_chain_cert={},ssl_key={},ssl_session_cache",
            self.path(&format!("{cert}.pem")).display(),
            self.path(&format!("{cert}.key")).display()
        );
        if !options.is_empty() {
            o.push(',');
            o.push_str(options);
        }
        let mut args = vec!["-Z", "-o", o.as_str()];
        args.extend_from_slice(extra);
        Memcached::start_with(&args)
    }

    /// Trusts only the test CA.
    pub fn trust(&self) -> TlsConfig {
        TlsConfig::new()
            .mozilla_roots(false)
            .ca_pem_file(self.path("ca.pem"))
    }
}
