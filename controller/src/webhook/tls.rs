//! The webhook's certificate: read from the files a Secret volume (or an operator) provides,
//! and read again whenever they change, so a rotated certificate is served from the next
//! handshake on, without a restart and without dropping a connection.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::dirwatch::DirChanges;

/// How long a burst of changes (kubelet swaps a Secret volume in several steps) must be quiet.
const SETTLE: Duration = Duration::from_millis(100);
/// Files are also re-read this often, in case a change went unseen.
const POLL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not PEM: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path}: not a private key rustls can sign with: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
}

/// The certificate and key files, and what was last read from them.
#[derive(Debug)]
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Option<Loaded>>,
}

#[derive(Debug)]
struct Loaded {
    certified: Arc<CertifiedKey>,
    /// The files' bytes, to tell a real change from a touch.
    pem: (Vec<u8>, Vec<u8>),
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().ok()?;
        current.as_ref().map(|loaded| Arc::clone(&loaded.certified))
    }
}

impl Certificates {
    /// Nothing is read yet: call [`reload`](Self::reload).
    pub fn new(cert: PathBuf, key: PathBuf, provider: Arc<CryptoProvider>) -> Self {
        Self {
            cert,
            key,
            provider,
            current: RwLock::new(None),
        }
    }

    /// Whether there is a certificate to serve.
    pub fn is_loaded(&self) -> bool {
        self.current.read().is_ok_and(|c| c.is_some())
    }

    /// Reads both files; `Ok(true)` when they hold a new certificate, which is served from
    /// the next handshake on. Files that are missing, half-written or do not belong together
    /// leave the current certificate in place.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let pem = (read(&self.cert)?, read(&self.key)?);
        let unchanged = self
            .current
            .read()
            .is_ok_and(|c| c.as_ref().is_some_and(|loaded| loaded.pem == pem));
        if unchanged {
            return Ok(false);
        }
        let certified = self.certified_key(&pem.0, &pem.1)?;
        if let Ok(mut current) = self.current.write() {
            *current = Some(Loaded {
                certified: Arc::new(certified),
                pem,
            });
        }
        Ok(true)
    }

    fn certified_key(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                path: self.cert.clone(),
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: self.cert.clone(),
            });
        }
        let key_error = |reason: String| TlsError::Key {
            path: self.key.clone(),
            reason,
        };
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| key_error(e.to_string()))?;
        let signer = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| key_error(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signer);
        certified.keys_match().map_err(|_| TlsError::Mismatch {
            cert: self.cert.clone(),
            key: self.key.clone(),
        })?;
        Ok(certified)
    }

    /// Re-reads the files whenever their directories change (a Secret volume is updated by
    /// swapping a symlink in it), and every [`POLL`] in any case. Runs until dropped.
    pub async fn keep_current(self: Arc<Self>) {
        let dirs: BTreeSet<&Path> = [&self.cert, &self.key]
            .into_iter()
            .filter_map(|file| file.parent())
            .map(|dir| {
                if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                }
            })
            .collect();
        let mut watches: Vec<DirChanges> = dirs
            .into_iter()
            .filter_map(|dir| match DirChanges::watch(dir) {
                Ok(watch) => Some(watch),
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "cannot watch the certificate's directory; re-reading it every {}s", POLL.as_secs());
                    None
                }
            })
            .collect();
        loop {
            tokio::select! {
                seen = any_change(&mut watches) => {
                    if seen.is_none() {
                        watches.clear();
                    }
                }
                () = tokio::time::sleep(POLL) => {}
            }
            self.reload_and_log();
        }
    }

    /// One reload, with what happened in the log.
    pub fn reload_and_log(&self) {
        match self.reload() {
            Ok(true) => {
                tracing::info!(cert = %self.cert.display(), key = %self.key.display(), "serving a new certificate");
            }
            Ok(false) => {}
            Err(error) if self.is_loaded() => {
                tracing::warn!(%error, "the certificate files changed but cannot be used; still serving the previous certificate");
            }
            Err(error) => {
                tracing::warn!(%error, "no certificate yet: TLS handshakes fail until there is one");
            }
        }
    }
}

/// The next change in any of the directories; `None` if watching ended.
async fn any_change(watches: &mut [DirChanges]) -> Option<()> {
    if watches.is_empty() {
        return std::future::pending().await;
    }
    let nexts = watches.iter_mut().map(|w| Box::pin(w.next(SETTLE)));
    futures::future::select_all(nexts).await.0
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn certificates(dir: &Path) -> Certificates {
        Certificates::new(
            dir.join("tls.crt"),
            dir.join("tls.key"),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
    }

    fn served(certs: &Certificates) -> Vec<u8> {
        let current = certs.current.read().unwrap();
        current.as_ref().unwrap().certified.cert[0].to_vec()
    }

    #[test]
    fn a_pair_is_loaded_and_a_changed_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let certs = certificates(dir.path());
        assert!(matches!(certs.reload(), Err(TlsError::Read { .. })));
        assert!(!certs.is_loaded());
        let (cert, key) = pair("a.example");
        std::fs::write(dir.path().join("tls.crt"), &cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), &key).unwrap();
        assert!(certs.reload().unwrap());
        assert!(!certs.reload().unwrap(), "the same files are no change");
        let first = served(&certs);
        let (cert, key) = pair("b.example");
        std::fs::write(dir.path().join("tls.crt"), &cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), &key).unwrap();
        assert!(certs.reload().unwrap());
        assert_ne!(served(&certs), first);
    }

    #[test]
    fn a_half_rotated_pair_keeps_the_previous_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let certs = certificates(dir.path());
        let (cert, key) = pair("a.example");
        std::fs::write(dir.path().join("tls.crt"), &cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), &key).unwrap();
        certs.reload().unwrap();
        let first = served(&certs);

        let (new_cert, _) = pair("b.example");
        std::fs::write(dir.path().join("tls.crt"), &new_cert).unwrap();
        assert!(matches!(certs.reload(), Err(TlsError::Mismatch { .. })));
        std::fs::write(dir.path().join("tls.crt"), "").unwrap();
        assert!(matches!(
            certs.reload(),
            Err(TlsError::NoCertificate { .. })
        ));
        std::fs::write(dir.path().join("tls.crt"), &cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), "garbage").unwrap();
        assert!(matches!(certs.reload(), Err(TlsError::Key { .. })));
        assert_eq!(served(&certs), first);
    }
}
