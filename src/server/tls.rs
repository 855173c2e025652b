//! TLS on the listener: the certificate, the optional client CA for mTLS, and their reload.
//!
//! [`TlsState`] holds the rustls `ServerConfig` in use behind an [`ArcSwap`]: every new
//! handshake takes the current one, so a reload (SIGHUP, [`TlsState::reload`]) changes what
//! new connections see while connections already open keep the session they made. A reload
//! that cannot read or use a file keeps the previous configuration and logs why; at start the
//! same failure stops the server with a message naming the flag.
//!
//! ALPN offers `h2` and `http/1.1`; a client that negotiates neither gets the decrypted bytes
//! sniffed as on a plaintext port (HTTP or the JSON-lines door). With a client CA, every client
//! must present a certificate that CA issued; its subject CN and URI SANs become a
//! [`PeerIdentity`] ([`peer_identity`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio_rustls::TlsAcceptor;

use super::peer::PeerIdentity;
use crate::config::TlsConfig;

/// Why a TLS file could not be used; the message names the flag and config key.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {problem}")]
pub struct TlsError {
    /// The flag and key, such as `--tls-cert (tls.cert_file)`.
    what: &'static str,
    /// The file as configured.
    path: String,
    /// What is wrong with it.
    problem: String,
}

impl TlsError {
    fn new(what: &'static str, path: &Path, problem: impl Into<String>) -> Self {
        Self {
            what,
            path: path.display().to_string(),
            problem: problem.into(),
        }
    }
}

const CERT: &str = "--tls-cert (tls.cert_file)";
const KEY: &str = "--tls-key (tls.key_file)";
const CLIENT_CA: &str = "--tls-client-ca (tls.client_ca_file)";

/// The files a TLS listener is made of.
#[derive(Debug, Clone)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

/// The TLS configuration new handshakes use, reloadable while connections stay open.
pub struct TlsState {
    files: TlsFiles,
    /// Swapped whole on reload; a handshake loads it once and keeps that `Arc` (no lock is
    /// held across the handshake's awaits).
    current: ArcSwap<ServerConfig>,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsState {
    /// Loads the files `config` names; `Ok(None)` when TLS is not configured.
    pub fn load(config: &TlsConfig) -> Result<Option<Arc<Self>>, TlsError> {
        let (cert, key) = match (&config.cert_file, &config.key_file) {
            (None, None) => {
                if let Some(ca) = &config.client_ca_file {
                    return Err(TlsError::new(
                        CLIENT_CA,
                        ca,
                        "needs --tls-cert and --tls-key as well (mTLS runs inside TLS)",
                    ));
                }
                return Ok(None);
            }
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (Some(cert), None) => {
                return Err(TlsError::new(CERT, cert, "needs --tls-key as well"));
            }
            (None, Some(key)) => {
                return Err(TlsError::new(KEY, key, "needs --tls-cert as well"));
            }
        };
        let files = TlsFiles {
            cert,
            key,
            client_ca: config.client_ca_file.clone(),
        };
        let server_config = build(&files)?;
        Ok(Some(Arc::new(Self {
            files,
            current: ArcSwap::from_pointee(server_config),
        })))
    }

    /// An acceptor with the configuration in use now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Whether clients must present a certificate (a client CA is configured).
    pub fn verifies_clients(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Reads the files again; on success new handshakes use them, on failure the previous
    /// configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let server_config = build(&self.files)?;
        self.current.store(Arc::new(server_config));
        Ok(())
    }

    /// Reloads on every SIGHUP, for as long as the returned task runs.
    pub fn reload_on_sighup(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let mut hangups = match signal(SignalKind::hangup()) {
                    Ok(hangups) => hangups,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS files are not reloaded");
                        return;
                    }
                };
                while hangups.recv().await.is_some() {
                    match self.reload() {
                        Ok(()) => tracing::info!(
                            cert = %self.files.cert.display(),
                            "TLS certificate reloaded; new connections use it"
                        ),
                        Err(e) => tracing::error!(
                            error = %e,
                            "TLS reload failed; keeping the previous certificate"
                        ),
                    }
                }
            }
        })
    }
}

/// Builds a rustls server configuration from the files.
fn build(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(CERT, &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::new(KEY, &files.key, format!("no PEM private key found ({e})")))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(CERT, &files.cert, e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider)?),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        TlsError::new(
            KEY,
            &files.key,
            format!("does not fit the certificate in --tls-cert ({e})"),
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The verifier that requires a client certificate issued by the CA in `path`.
fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(CLIENT_CA, path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::new(CLIENT_CA, path, format!("not a usable CA ({e})")))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| TlsError::new(CLIENT_CA, path, e.to_string()))
}

/// The PEM certificates in `path`: at least one.
fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::new(what, path, pem_problem(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(what, path, pem_problem(e)))?;
    if certs.is_empty() {
        return Err(TlsError::new(what, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// A PEM reading error in words.
fn pem_problem(error: rustls::pki_types::pem::Error) -> String {
    match error {
        rustls::pki_types::pem::Error::Io(e) => format!("cannot be read ({e})"),
        other => format!("is not valid PEM ({other:?})"),
    }
}

/// The names in a client certificate: its subject's CN and its URI SANs. `None` when the
/// certificate cannot be parsed (the handshake verified it, so that does not happen with a
/// real one).
pub fn peer_identity(cert: &CertificateDer<'_>) -> Option<PeerIdentity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let common_name = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
        .map(str::to_string);
    let uri_sans = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some(PeerIdentity {
        common_name,
        uri_sans,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    #[test]
    fn a_client_certificate_names_its_cn_and_uri_sans() {
        let mut params = CertificateParams::new(vec!["client.example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "tenant-a");
        for uri in ["spiffe://example.org/a", "urn:contextd:tenant:a"] {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().unwrap()));
        }
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        assert_eq!(
            peer_identity(cert.der()),
            Some(PeerIdentity {
                common_name: Some("tenant-a".to_string()),
                uri_sans: vec![
                    "spiffe://example.org/a".to_string(),
                    "urn:contextd:tenant:a".to_string()
                ],
            })
        );
        // No CN, no SANs: an identity with nothing in it.
        let bare = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap();
        let identity = peer_identity(bare.der()).unwrap();
        assert!(identity.uri_sans.is_empty());
    }

    #[test]
    fn files_that_cannot_be_used_name_their_flag() {
        let config = TlsConfig {
            cert_file: Some("/nonexistent/cert.pem".into()),
            key_file: Some("/nonexistent/key.pem".into()),
            client_ca_file: None,
        };
        let error = TlsState::load(&config).unwrap_err().to_string();
        assert!(error.starts_with("--tls-cert (tls.cert_file)"), "{error}");
        let half = TlsConfig {
            key_file: None,
            ..config.clone()
        };
        let error = TlsState::load(&half).unwrap_err().to_string();
        assert!(error.contains("needs --tls-key"), "{error}");
        assert!(TlsState::load(&TlsConfig::default()).unwrap().is_none());
    }
}
