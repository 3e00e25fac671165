//! Mutual TLS between nodes: TLS 1.3 only, each side authenticated by the [`NodeId`] of
//! its self-signed certificate rather than by a certificate authority.
//!
//! A client pins the one node it means to reach; a server accepts the clients its
//! `peers` predicate allows. Either side still checks the handshake signatures, so only
//! the holder of a certificate's private key can present it.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    OtherError, ServerConfig, SignatureScheme,
};

use super::identity::Identity;
use super::nodeid::NodeId;

/// Why a TLS configuration could not be built (rustls's reason is part of the message, not
/// also a `source`).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration (for instance a key it cannot use).
    #[error("cannot build the TLS configuration: {0}")]
    Config(rustls::Error),
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Config(e)
    }
}

/// The server name to connect with, e.g. in `TlsConnector::connect(server_name(), tcp)`.
///
/// Nobody checks this name: the server is identified by its pinned [`NodeId`].
pub fn server_name() -> ServerName<'static> {
    // A constant that is a valid DNS name, so this cannot fail (a unit test checks it).
    ServerName::try_from("ferry").expect("\"ferry\" is a valid DNS name")
}

/// A client configuration presenting `identity` and accepting only the server whose
/// certificate has the id `server`.
pub fn client_config(identity: &Identity, server: NodeId) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let verifier = PinnedServer {
        expected: server,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![identity.certificate().clone()], identity.private_key())?;
    Ok(Arc::new(config))
}

/// A server configuration presenting `identity` and requiring every client to present a
/// certificate whose id `peers` accepts.
pub fn server_config(
    identity: &Identity,
    peers: Arc<dyn Fn(&NodeId) -> bool + Send + Sync>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = KnownPeers {
        peers,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(vec![identity.certificate().clone()], identity.private_key())?;
    Ok(Arc::new(config))
}

/// The id of the node at the other end of a connection, once it has sent its certificate.
pub fn peer_id(conn: &CommonState) -> Option<NodeId> {
    conn.peer_certificates()?
        .first()
        .map(|cert| NodeId::of_certificate(cert))
}

/// ring's provider, offering AES-128-GCM first: with AES instructions it encrypts about a
/// third faster than AES-256-GCM (10 rounds, not 14), and bulk data is what a link carries.
/// AES-256-GCM and ChaCha20-Poly1305 stay on offer; only TLS 1.3 suites are used.
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

/// A peer's certificate was valid but not the one wanted; the message names both ids.
#[derive(thiserror::Error)]
#[error("{0}")]
struct Rejected(String);

// rustls shows `CertificateError::Other` with `{:?}`, so Debug gives the plain message.
impl fmt::Debug for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A certificate error (sent to the peer as `certificate_unknown`) carrying `message`.
fn rejected(message: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Rejected(
        message,
    )))))
}

/// A handshake failure as one plain sentence: a pinned-id rejection gives just its message
/// (rustls would wrap it in `Other(OtherError(…))`), anything else its own text.
pub fn explain(e: &std::io::Error) -> String {
    let rejection = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|r| match r {
            rustls::Error::InvalidCertificate(CertificateError::Other(o)) => {
                o.0.downcast_ref::<Rejected>().map(|r| r.0.clone())
            }
            _ => None,
        });
    rejection.unwrap_or_else(|| e.to_string())
}

fn no_tls12() -> rustls::Error {
    rustls::Error::General("ferry speaks only TLS 1.3".to_string())
}

/// Accepts exactly the server certificate whose id is `expected`.
struct PinnedServer {
    expected: NodeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PinnedServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedServer")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = NodeId::of_certificate(end_entity);
        if got == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rejected(format!(
                "server is node {got}, expected {}",
                self.expected
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Requires a client certificate and accepts it when `peers` knows its id.
struct KnownPeers {
    peers: Arc<dyn Fn(&NodeId) -> bool + Send + Sync>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for KnownPeers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KnownPeers").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for KnownPeers {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let id = NodeId::of_certificate(end_entity);
        if (self.peers)(&id) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rejected(format!("unknown peer {id}")))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::timeout;
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;

    /// Generous: a handshake over a local pipe takes milliseconds; this only keeps a
    /// broken test from hanging forever.
    const LIMIT: Duration = Duration::from_secs(10);

    fn identity() -> Identity {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path()).unwrap().0
    }

    fn allow(ids: Vec<NodeId>) -> Arc<dyn Fn(&NodeId) -> bool + Send + Sync> {
        Arc::new(move |id| ids.contains(id))
    }

    #[tokio::test]
    async fn pinned_handshake_shows_both_ids() {
        let (client, server) = (identity(), identity());
        let connector = TlsConnector::from(client_config(&client, server.id()).unwrap());
        let acceptor = TlsAcceptor::from(server_config(&server, allow(vec![client.id()])).unwrap());
        let (client_io, server_io) = tokio::io::duplex(1 << 16);

        let (c, s) = timeout(LIMIT, async {
            tokio::join!(
                connector.connect(server_name(), client_io),
                acceptor.accept(server_io)
            )
        })
        .await
        .unwrap();
        let mut c = c.unwrap();
        let mut s = s.unwrap();

        assert_eq!(peer_id(c.get_ref().1), Some(server.id()));
        assert_eq!(peer_id(s.get_ref().1), Some(client.id()));
        assert_eq!(
            c.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert_eq!(
            c.get_ref().1.negotiated_cipher_suite().map(|s| s.suite()),
            Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );

        c.write_all(b"hello").await.unwrap();
        c.flush().await.unwrap();
        let mut buf = [0u8; 5];
        timeout(LIMIT, s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[tokio::test]
    async fn client_pinning_another_id_fails_naming_both() {
        let (client, server, other) = (identity(), identity(), identity());
        let connector = TlsConnector::from(client_config(&client, other.id()).unwrap());
        let acceptor = TlsAcceptor::from(server_config(&server, allow(vec![client.id()])).unwrap());
        let (client_io, server_io) = tokio::io::duplex(1 << 16);

        let (c, s) = timeout(LIMIT, async {
            tokio::join!(
                connector.connect(server_name(), client_io),
                acceptor.accept(server_io)
            )
        })
        .await
        .unwrap();
        let err = c.unwrap_err().to_string();
        assert!(err.contains(&server.id().to_string()), "{err}");
        assert!(err.contains(&other.id().to_string()), "{err}");
        assert!(err.contains("server is node"), "{err}");
        assert!(s.is_err());
    }

    #[tokio::test]
    async fn server_refuses_an_unknown_client() {
        let (client, server, other) = (identity(), identity(), identity());
        let connector = TlsConnector::from(client_config(&client, server.id()).unwrap());
        let acceptor = TlsAcceptor::from(server_config(&server, allow(vec![other.id()])).unwrap());
        let (client_io, server_io) = tokio::io::duplex(1 << 16);

        let (c, s) = timeout(LIMIT, async {
            tokio::join!(
                connector.connect(server_name(), client_io),
                acceptor.accept(server_io)
            )
        })
        .await
        .unwrap();
        let err = s.unwrap_err().to_string();
        assert!(
            err.contains(&format!("unknown peer {}", client.id())),
            "{err}"
        );

        // In TLS 1.3 the client may finish its half of the handshake before the server
        // has judged its certificate; it then learns of the refusal on its first read.
        if let Ok(mut c) = c {
            let mut buf = [0u8; 1];
            let read = timeout(LIMIT, c.read(&mut buf)).await.unwrap();
            assert!(matches!(read, Err(_) | Ok(0)), "{read:?}");
        }
    }

    #[tokio::test]
    async fn plain_tcp_garbage_fails_instead_of_hanging() {
        let (server, client) = (identity(), identity());
        let acceptor = TlsAcceptor::from(server_config(&server, allow(vec![client.id()])).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();

        let garbler = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: ferry\r\n\r\n")
                .await
                .unwrap();
            // Keep the connection open: the server must fail on what it read, not on EOF.
            let _ = done_rx.await;
        });

        let (tcp, _) = listener.accept().await.unwrap();
        let accepted = timeout(LIMIT, acceptor.accept(tcp))
            .await
            .expect("the server hung on garbage");
        assert!(accepted.is_err());
        let _ = done_tx.send(());
        garbler.await.unwrap();
    }

    #[test]
    fn server_name_is_ferry() {
        assert_eq!(server_name().to_str(), "ferry");
    }
}
