//! Mutual TLS for internal gRPC (Raft, cluster calls, config streaming and
//! usage reporting): every member presents a certificate signed by the
//! cluster CA, and accepts only peers that do. Both halves build their
//! tonic TLS settings here, so there is one notion of "a cluster member".

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

#[derive(Clone)]
pub struct MutualTls {
    identity: Identity,
    ca: Certificate,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsFilesError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM {what}")]
    NotPem { path: String, what: &'static str },
}

fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsFilesError> {
    let bytes = std::fs::read(path).map_err(|source| TlsFilesError::Read {
        path: path.display().to_string(),
        source,
    })?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN") {
        return Err(TlsFilesError::NotPem {
            path: path.display().to_string(),
            what,
        });
    }
    Ok(bytes)
}

impl MutualTls {
    /// This member's certificate chain and key, and the cluster CA.
    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsFilesError> {
        Ok(Self::from_pem(
            read_pem(cert, "certificate")?,
            read_pem(key, "private key")?,
            read_pem(ca, "CA certificate")?,
        ))
    }

    pub fn from_pem(cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>, ca: impl AsRef<[u8]>) -> Self {
        Self {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
        }
    }

    /// Server side: present our identity, require a client certificate
    /// from the cluster CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// Client side: verify the server against the cluster CA, present our
    /// identity.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
    }

    /// An endpoint for `url` that speaks TLS (an `http://` URL is taken as
    /// `https://`: with mutual TLS on there is no plaintext).
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, tonic::transport::Error> {
        let url = match url.strip_prefix("http://") {
            Some(rest) => format!("https://{rest}"),
            None => url.to_string(),
        };
        Endpoint::from_shared(url)?.tls_config(self.client())
    }
}
