//! TLS (feature `tls`): the settings ([`TlsConfig`]), the rustls client
//! configuration built from them once per client (so sessions are resumed
//! across connections), the blocking handshake, and the errors a handshake
//! gives, in words a user can act on.
//!
//! Crypto is rustls's `ring` provider: it builds in seconds on a small
//! machine, where `aws-lc-rs` needs cmake and a long C build.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct};

use crate::error::{Error, ErrorKind, Result};

/// TLS settings for [`ClientBuilder::tls`](crate::ClientBuilder::tls)
/// (feature `tls`). By default the server's certificate must chain to one of
/// Mozilla's roots (bundled, `webpki-roots`) and name the host of each
/// server address (an IP address works, if the certificate names it).
///
/// ```no_run
/// use memring::{Client, TlsConfig};
/// // A managed endpoint with a public certificate:
/// let client = Client::builder()
///     .servers("my-cache.example.com:11211")
///     .tls(TlsConfig::new())
///     .build()?;
/// // A private CA, and a client certificate for mutual TLS:
/// let tls = TlsConfig::new()
///     .ca_pem_file("/etc/memcached/ca.pem")
///     .client_cert_pem_files("/etc/memcached/client.pem", "/etc/memcached/client.key");
/// # Ok::<(), memring::Error>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct TlsConfig {
    mozilla_roots: bool,
    native_roots: bool,
    cas: Vec<Pem>,
    server_name: Option<String>,
    client_cert: Option<(Pem, Pem)>,
    accept_any_certificate: bool,
}

/// PEM text, or a file to read it from when the client is built.
#[derive(Clone)]
enum Pem {
    File(PathBuf),
    Text(Vec<u8>),
}

impl Pem {
    fn read(&self, what: &str) -> Result<Vec<u8>> {
        match self {
            Pem::Text(t) => Ok(t.clone()),
            Pem::File(p) => std::fs::read(p).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    format!("cannot read the {what} file {}", p.display()),
                )
                .with_source(e)
            }),
        }
    }

    fn describe(&self) -> String {
        match self {
            Pem::File(p) => p.display().to_string(),
            Pem::Text(_) => "<PEM text>".into(),
        }
    }
}

impl std::fmt::Debug for TlsConfig {
    /// Names the files; never shows a key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("mozilla_roots", &self.mozilla_roots)
            .field("native_roots", &self.native_roots)
            .field(
                "cas",
                &self.cas.iter().map(Pem::describe).collect::<Vec<_>>(),
            )
            .field("server_name", &self.server_name)
            .field(
                "client_cert",
                &self.client_cert.as_ref().map(|(c, _)| c.describe()),
            )
            .field("accept_any_certificate", &self.accept_any_certificate)
            .finish()
    }
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig::new()
    }
}

/// The crypto of TLS connections: the application's process-wide rustls
/// provider when it installed one (`CryptoProvider::install_default`, say
/// aws-lc-rs for post-quantum key exchange), else *ring*, which this crate
/// builds with. rustls 0.23.48 deprecates *ring*'s provider because it has
/// no post-quantum key exchange; memcached's TLS (OpenSSL) offers X25519 and
/// the NIST curves, which *ring* has, and *ring* needs no C toolchain beyond
/// a compiler, so it stays the default here.
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    if let Some(installed) = rustls::crypto::CryptoProvider::get_default() {
        return installed.clone();
    }
    #[allow(deprecated)]
    let ring = rustls::crypto::ring::default_provider();
    Arc::new(ring)
}

impl TlsConfig {
    /// Verifies servers against Mozilla's bundled roots, by the host of
    /// each server address, with no client certificate.
    pub fn new() -> TlsConfig {
        TlsConfig {
            mozilla_roots: true,
            native_roots: false,
            cas: Vec::new(),
            server_name: None,
            client_cert: None,
            accept_any_certificate: false,
        }
    }

    /// Whether Mozilla's bundled roots are trusted. Defaults to true; turn
    /// it off to trust only the CAs you add.
    pub fn mozilla_roots(mut self, on: bool) -> Self {
        self.mozilla_roots = on;
        self
    }

    /// Whether the platform's trust store (`/etc/ssl/certs` and the like)
    /// is trusted too. Defaults to false. It is read when the client is
    /// built; a store that cannot be read is [`ErrorKind::InvalidConfig`].
    pub fn native_roots(mut self, on: bool) -> Self {
        self.native_roots = on;
        self
    }

    /// Also trusts the CA certificates in this PEM file (read when the
    /// client is built).
    pub fn ca_pem_file(mut self, path: impl AsRef<Path>) -> Self {
        self.cas.push(Pem::File(path.as_ref().to_path_buf()));
        self
    }

    /// Also trusts the CA certificates in this PEM text.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.cas.push(Pem::Text(pem.into()));
        self
    }

    /// The name every server's certificate must carry (and that is sent as
    /// SNI), instead of the host of each server address: for servers
    /// addressed by IP behind one certificate. A name that is neither a DNS
    /// name nor an IP address is [`ErrorKind::InvalidConfig`].
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// A client certificate (chain) and its private key, from PEM files,
    /// for servers that require mutual TLS (`ssl_verify_mode=2`).
    pub fn client_cert_pem_files(
        mut self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Self {
        self.client_cert = Some((
            Pem::File(cert_chain.as_ref().to_path_buf()),
            Pem::File(key.as_ref().to_path_buf()),
        ));
        self
    }

    /// [`client_cert_pem_files`](Self::client_cert_pem_files) from PEM
    /// text.
    pub fn client_cert_pem(
        mut self,
        cert_chain: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_cert = Some((Pem::Text(cert_chain.into()), Pem::Text(key.into())));
        self
    }

    /// **Dangerous**: accepts any server certificate, so anyone on the path
    /// can read and change the traffic. For tests against self-signed
    /// servers only; the traffic is still encrypted.
    pub fn dangerous_accept_any_certificate(mut self) -> Self {
        self.accept_any_certificate = true;
        self
    }

    /// The rustls configuration, built once per client.
    pub(crate) fn build(&self) -> Result<Tls> {
        let invalid = |what: String| Error::new(ErrorKind::InvalidConfig, what);
        let provider = crypto_provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("no TLS protocol version available".into()).with_source(e))?;
        let builder = if self.accept_any_certificate {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            if self.mozilla_roots {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            if self.native_roots {
                let found = rustls_native_certs::load_native_certs();
                if found.certs.is_empty() {
                    let e = invalid("no certificate found in the platform's trust store".into());
                    return Err(match found.errors.into_iter().next() {
                        Some(cause) => e.with_source(cause),
                        None => e,
                    });
                }
                roots.add_parsable_certificates(found.certs);
            }
            for ca in &self.cas {
                let pem = ca.read("CA certificate")?;
                let certs = certificates(&pem, &ca.describe())?;
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        invalid(format!("{}: not a usable CA certificate", ca.describe()))
                            .with_source(e)
                    })?;
                }
            }
            if roots.is_empty() {
                return Err(invalid(
                    "no trusted root: keep Mozilla's roots, add native roots or a CA".into(),
                ));
            }
            builder.with_root_certificates(roots)
        };
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates(&cert.read("client certificate")?, &cert.describe())?;
                let key_pem = key.read("client key")?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
                    invalid(format!("{}: no private key found in it", key.describe()))
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    invalid("the client key does not fit its certificate".into()).with_source(e)
                })?
            }
        };
        let server_name = match &self.server_name {
            Some(n) => Some(name(n)?),
            None => None,
        };
        Ok(Tls {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// Every certificate in `pem`; at least one.
fn certificates(pem: &[u8], source: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| {
            Error::new(ErrorKind::InvalidConfig, format!("{source}: malformed PEM")).with_source(e)
        })?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("{source}: no certificate found in it"),
        ));
    }
    Ok(certs)
}

fn name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).map_err(|e| {
        Error::new(
            ErrorKind::InvalidConfig,
            format!("{host:?} is not a name a TLS certificate can carry"),
        )
        .with_source(e)
    })
}

/// The built TLS settings a client's connections share.
#[derive(Debug)]
pub(crate) struct Tls {
    pub config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl Tls {
    /// The name `host`'s certificate must carry.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>> {
        match &self.server_name {
            Some(n) => Ok(n.clone()),
            None => name(host),
        }
    }

    /// Runs the handshake over a connected socket, within `deadline`.
    pub fn handshake(
        &self,
        sock: &socket2::Socket,
        host: &str,
        deadline: Instant,
    ) -> Result<rustls::ClientConnection> {
        let mut conn = rustls::ClientConnection::new(self.config.clone(), self.server_name(host)?)
            .map_err(|e| Error::new(ErrorKind::Tls, "cannot start a TLS session").with_source(e))?;
        while conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(handshake_timeout());
            }
            let left = left.max(Duration::from_millis(1));
            let timeouts = sock
                .set_read_timeout(Some(left))
                .and_then(|()| sock.set_write_timeout(Some(left)));
            timeouts.map_err(|e| {
                Error::new(ErrorKind::Connect, "cannot set socket timeouts").with_source(e)
            })?;
            if let Err(e) = conn.complete_io(&mut &*sock) {
                return Err(handshake_error(e));
            }
        }
        Ok(conn)
    }
}

/// Whether a completed handshake resumed a session.
pub(crate) fn resumed(c: &rustls::ClientConnection) -> bool {
    c.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

pub(crate) fn handshake_timeout() -> Error {
    Error::new(
        ErrorKind::Timeout,
        "TLS handshake timed out within connect_timeout (does the server speak TLS?)",
    )
}

/// What a failed handshake means: a rustls error in the user's terms
/// ([`ErrorKind::Tls`]), a timeout, or the connection lost.
pub(crate) fn handshake_error(e: io::Error) -> Error {
    if let Some(tls) = rustls_error(&e) {
        return tls;
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => handshake_timeout(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => Error::new(
            ErrorKind::Connect,
            "the server closed the connection during the TLS handshake",
        )
        .with_source(e),
        _ => Error::new(ErrorKind::Connect, "TLS handshake failed").with_source(e),
    }
}

/// The error for an I/O error that carries a rustls error (during the
/// handshake or after it, such as an alert refusing a client without a
/// certificate): [`ErrorKind::Tls`] for what configuration must fix, an
/// I/O error for a session that went bad.
pub(crate) fn rustls_error(e: &io::Error) -> Option<Error> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(tls_error(inner))
}

pub(crate) fn tls_error(e: &rustls::Error) -> Error {
    use rustls::Error as E;
    let what = match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "the server's certificate is not trusted: it does not chain to a trusted root \
                 (add its CA with TlsConfig::ca_pem_file)"
                    .to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate does not name this server (set TlsConfig::server_name \
                 to the name it carries)"
                    .to_owned()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (check the clocks)".to_owned()
            }
            other => format!("the server's certificate was refused: {other:?}"),
        },
        E::AlertReceived(
            a @ (AlertDescription::CertificateRequired
            | AlertDescription::HandshakeFailure
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied),
        ) => format!(
            "the server refused the connection ({a:?}): it may require a client certificate it \
             trusts (TlsConfig::client_cert_pem_files)"
        ),
        E::InvalidMessage(_) => {
            "the server's answer is not TLS: does it serve plaintext on this port?".to_owned()
        }
        E::PeerIncompatible(_) | E::NoCertificatesPresented | E::AlertReceived(_) => {
            format!("the server and memring could not agree on TLS: {e}")
        }
        // Anything else (a record that does not decrypt, say) is a session
        // gone bad, not a misconfiguration: an I/O failure like any other.
        other => {
            return Error::new(ErrorKind::Io, format!("the TLS session failed: {other}"))
                .with_source(e.clone())
        }
    };
    Error::new(ErrorKind::Tls, what).with_source(e.clone())
}

/// The verifier of `dangerous_accept_any_certificate`: checks the
/// handshake's signatures, not the certificate.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_fix_and_only_configuration_is_tls() {
        let kind = |e: rustls::Error| tls_error(&e);
        let e = kind(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert_eq!(e.kind(), ErrorKind::Tls);
        assert!(e.to_string().contains("ca_pem_file"), "{e}");
        let e = kind(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        ));
        assert!(e.to_string().contains("client certificate"), "{e}");
        // A record that does not decrypt is a session gone bad.
        assert_eq!(kind(rustls::Error::DecryptError).kind(), ErrorKind::Io);
        // A bad name or file is refused when the client is built.
        let bad = TlsConfig::new()
            .server_name("not a name")
            .build()
            .unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::InvalidConfig);
        let missing = TlsConfig::new()
            .ca_pem_file("/nonexistent/ca.pem")
            .build()
            .unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::InvalidConfig);
        let empty = TlsConfig::new().mozilla_roots(false).build().unwrap_err();
        assert!(empty.to_string().contains("no trusted root"), "{empty}");
        let garbage = TlsConfig::new().ca_pem("not PEM").build().unwrap_err();
        assert_eq!(garbage.kind(), ErrorKind::InvalidConfig);
        // Debug names the files and never shows a key.
        let with_key =
            TlsConfig::new().client_cert_pem("CERT", "-----BEGIN PRIVATE KEY-----secret");
        assert!(!format!("{with_key:?}").contains("secret"));
    }
}
