//! TLS for the API listener (rustls): certificates from PEM files,
//! reloaded without a restart, or a self-signed one for local trials.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// Serves whichever certificate was loaded last.
#[derive(Debug)]
pub struct CertResolver {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: RwLock<Option<std::time::SystemTime>>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("reading {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| format!("certificate and key do not fit: {e}"))
}

fn stamp(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl CertResolver {
    /// Loads `cert` and `key` (PEM).
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Arc<CertResolver>, String> {
        let ck = load(&cert, &key)?;
        let s = stamp(&cert).max(stamp(&key));
        Ok(Arc::new(CertResolver {
            cert,
            key,
            current: RwLock::new(Arc::new(ck)),
            stamp: RwLock::new(s),
        }))
    }

    /// Loads the files again; on error the old certificate stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let ck = load(&self.cert, &self.key)?;
        *self.current.write() = Arc::new(ck);
        *self.stamp.write() = stamp(&self.cert).max(stamp(&self.key));
        tracing::info!(cert = %self.cert.display(), fingerprint = %fingerprint(self.current.read().cert.first().map_or(&[][..], |c| c.as_ref())), "TLS certificate loaded");
        Ok(())
    }

    /// Reloads when either file changed since the last load.
    pub fn reload_if_changed(&self) {
        let now = stamp(&self.cert).max(stamp(&self.key));
        if now.is_some() && now != *self.stamp.read() {
            if let Err(e) = self.reload() {
                tracing::error!(error = %e, "TLS certificate reload failed; keeping the old one");
                *self.stamp.write() = now;
            }
        }
    }

    /// Watches the files every `every` until the process ends (file checks
    /// and reloads run on the blocking pool).
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(r) = me.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || r.reload_if_changed()).await;
            }
        });
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

/// SHA-256 fingerprint of a DER certificate, as colon-separated hex.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Writes a self-signed certificate for `localhost` and `127.0.0.1` into
/// `dir` (`self-signed.crt`, `self-signed.key`), unless one is there;
/// returns the paths and the fingerprint.
pub fn self_signed(dir: &Path) -> Result<(PathBuf, PathBuf, String), String> {
    let (cert, key) = (dir.join("self-signed.crt"), dir.join("self-signed.key"));
    if !cert.exists() || !key.exists() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(|e| format!("generating a certificate: {e}"))?;
        std::fs::write(&cert, c.cert.pem()).map_err(|e| format!("writing {}: {e}", cert.display()))?;
        switchboard_rpc::keys::write_secret_file(&key, c.key_pair.serialize_pem().as_bytes())
            .map_err(|e| format!("writing {}: {e}", key.display()))?;
    }
    let der = CertificateDer::from_pem_file(&cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let fp = fingerprint(der.as_ref());
    Ok((cert, key, fp))
}

/// The rustls server configuration over a resolver (HTTP/2 and 1.1).
/// With `client_ca`, clients may present a certificate signed by it (then
/// it is verified; clients without one are still accepted and need a
/// bearer token).
pub fn server_config(
    resolver: Arc<CertResolver>,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in
                CertificateDer::pem_file_iter(ca).map_err(|e| format!("reading {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A listener that hands out connections once their TLS handshake is done.
/// Handshakes run in their own tasks (bounded in time), so a slow or bogus
/// client never holds up others; a plain-HTTP client gets its connection
/// closed. Every connection, handshaking or served, holds a place under
/// the listener's connection cap.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, crate::conn::Slot)>,
}

impl TlsListener {
    /// Starts accepting on `tcp`, at most as many connections as `gate`
    /// allows.
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        gate: crate::conn::Gate,
        max_handshakes: usize,
    ) -> std::io::Result<TlsListener> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(max_handshakes.max(1)));
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (sock, peer) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let Some(slot) = gate.enter() else { continue };
                let _ = sock.set_nodelay(true);
                let (acceptor, tx, handshakes) = (acceptor.clone(), tx.clone(), handshakes.clone());
                tokio::spawn(async move {
                    // a turn among the handshakes in progress, then the
                    // handshake itself, all within the bound
                    let handshake = async {
                        let _turn = handshakes.acquire().await;
                        acceptor.accept(sock).await
                    };
                    match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, slot)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx })
    }

    /// The next connection whose handshake is done, with its client
    /// certificate's name if it presented one.
    pub async fn accept(&mut self) -> (TlsStream<TcpStream>, crate::conn::Slot, PeerCert) {
        match self.rx.recv().await {
            Some((io, slot)) => {
                let (_, conn) = io.get_ref();
                let peer = PeerCert(
                    conn.peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| cert_name(c.as_ref())),
                );
                (io, slot, peer)
            }
            // the accept task only ends when this listener is dropped
            None => std::future::pending().await,
        }
    }
}

/// The verified client certificate's name (subject CN, else the first DNS
/// name), if the client presented one.
#[derive(Debug, Clone, Default)]
pub struct PeerCert(pub Option<String>);

/// Name of a certificate: its subject CN, else its first DNS name.
pub fn cert_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
    {
        return Some(cn.to_string());
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
        _ => None,
    })
}
