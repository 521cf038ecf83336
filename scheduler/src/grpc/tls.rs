//! TLS for the scheduler's gRPC listener (mTLS when a client CA is set) and for its clients.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Largest PEM file read (certificate chains and CA bundles are a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// PEM files for the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
    /// When set, clients must present a certificate issued by one of these CAs (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading the file failed.
    #[error("tls file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than any PEM bundle we accept.
    #[error("tls file {path} is larger than {MAX_PEM_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no PEM block.
    #[error("tls file {path} holds no PEM data")]
    NotPem {
        /// The file.
        path: PathBuf,
    },
    /// A client identity needs both a certificate and a key.
    #[error("a client certificate needs its key, and a key its certificate")]
    HalfIdentity,
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    if std::fs::metadata(path).map_err(io)?.len() > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            path: path.to_owned(),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    // Fail here, naming the file, rather than at the first handshake.
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(TlsError::NotPem {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

impl ServerTls {
    /// Reads the files into tonic's server configuration.
    pub fn load(&self) -> Result<ServerTlsConfig, TlsError> {
        let identity = Identity::from_pem(read_pem(&self.cert)?, read_pem(&self.key)?);
        let mut cfg = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            cfg = cfg
                .client_ca_root(Certificate::from_pem(read_pem(ca)?))
                .client_auth_optional(false);
        }
        Ok(cfg)
    }
}

/// Client TLS for an `https://` scheduler URL: trust `ca` (without one, only the roots
/// enabled in tonic's features, none in this build, so give one), and present `identity` (certificate, key) to a listener that requires mTLS.
pub fn client_tls(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<ClientTlsConfig, TlsError> {
    let mut cfg = ClientTlsConfig::new();
    cfg = match ca {
        Some(ca) => cfg.ca_certificate(Certificate::from_pem(read_pem(ca)?)),
        None => cfg.with_enabled_roots(),
    };
    match (cert, key) {
        (Some(c), Some(k)) => Ok(cfg.identity(Identity::from_pem(read_pem(c)?, read_pem(k)?))),
        (None, None) => Ok(cfg),
        _ => Err(TlsError::HalfIdentity),
    }
}
