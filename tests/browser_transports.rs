//! The browser serving blocks on loopback, each by itself: a
//! `web-transport-quinn` client against the WebTransport acceptor (with the
//! development certificate pinned by its hash, as a browser's
//! `serverCertificateHashes` does), and a `tokio-tungstenite` client over
//! TLS against the WebSocket fallback listener.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use georelay::browser::devcert::{ALPN_H3, AlpnCertResolver, BrowserCertStore};
use georelay::browser::websocket::{
    WS_SUBPROTOCOL, WsAcceptor, WsClose, WsConfig, WsListener, WsSession,
};
use georelay::browser::webtransport::{self, WEBTRANSPORT_PATH, WebTransportError};
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(10);

fn now_unix() -> u64 {
    georelay::clock::wall_now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Stands in for the node certificate that non-browser ALPNs get.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

struct Certs {
    browser: Arc<BrowserCertStore>,
    node: Arc<BrowserCertStore>,
}

fn certs() -> Certs {
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    Certs {
        browser: Arc::new(BrowserCertStore::new(names.clone(), now_unix()).expect("cert")),
        node: Arc::new(BrowserCertStore::new(names, now_unix()).expect("cert")),
    }
}

fn server_tls(certs: &Certs, alpn: &[&[u8]]) -> rustls::ServerConfig {
    let resolver = AlpnCertResolver::new(
        Arc::clone(&certs.browser),
        Arc::new(Fixed(Arc::clone(&certs.node.current().certified))),
    );
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    tls.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tls
}

fn quic_endpoint(certs: &Certs) -> quinn::Endpoint {
    let tls = server_tls(certs, &[ALPN_H3, b"georelay/1"]);
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic tls");
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    quinn::Endpoint::server(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind")
}

fn hash_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The acceptor's verdict on the next connection: `None` when even the
/// QUIC handshake failed.
async fn accept_one(
    endpoint: quinn::Endpoint,
) -> Option<Result<web_transport_quinn::Session, WebTransportError>> {
    let conn = endpoint.accept().await?.await.ok()?;
    Some(webtransport::accept_session(conn, Duration::from_secs(5)).await)
}

type ClientResult = Result<web_transport_quinn::Session, web_transport_quinn::ClientError>;
type ServerResult = Option<Result<web_transport_quinn::Session, WebTransportError>>;

/// A client CONNECT to `path` pinning `hash`, and what the acceptor made of
/// it.
async fn wt_attempt(
    endpoint: &quinn::Endpoint,
    path: &str,
    hash: &str,
) -> (ClientResult, ServerResult) {
    let port = endpoint.local_addr().expect("addr").port();
    let server = tokio::spawn(accept_one(endpoint.clone()));
    let url = format!("https://127.0.0.1:{port}{path}");
    let client = wt_client(hash);
    let connected =
        tokio::time::timeout(WAIT, client.connect(url.parse::<url::Url>().expect("url")))
            .await
            .expect("in time");
    let served = tokio::time::timeout(WAIT, server)
        .await
        .expect("in time")
        .expect("task");
    (connected, served)
}

fn wt_client(hash: &str) -> web_transport_quinn::Client {
    web_transport_quinn::ClientBuilder::new()
        .with_server_certificate_hashes(vec![hash_bytes(hash)])
        .expect("client")
}

#[tokio::test]
async fn a_webtransport_client_pinning_the_hash_gets_a_session_with_georelay_streams_and_datagrams()
{
    let certs = certs();
    let endpoint = quic_endpoint(&certs);
    let (session, served) = wt_attempt(
        &endpoint,
        WEBTRANSPORT_PATH,
        &certs.browser.current().sha256_hex,
    )
    .await;
    let session = session.expect("session");
    let served = served.expect("handshake").expect("accepted");

    // The control stream: the client's first bidirectional stream.
    let (mut send, _recv) = session.open_bi().await.expect("open bi");
    send.write_all(b"\x04\x00").await.expect("write");
    let (_server_send, mut server_recv) = tokio::time::timeout(WAIT, served.accept_bi())
        .await
        .expect("in time")
        .expect("accept bi");
    let mut goodbye = [0u8; 2];
    server_recv.read_exact(&mut goodbye).await.expect("read");
    assert_eq!(&goodbye, b"\x04\x00");

    // A media datagram each way, unchanged.
    let datagram = Bytes::from_static(b"\x41\x2c\x07\x00hi");
    session
        .send_datagram(datagram.clone())
        .expect("send datagram");
    let got = tokio::time::timeout(WAIT, served.read_datagram())
        .await
        .expect("in time");
    assert_eq!(got.expect("datagram"), datagram);
    served
        .send_datagram(datagram.clone())
        .expect("send datagram");
    let got = tokio::time::timeout(WAIT, session.read_datagram())
        .await
        .expect("in time");
    assert_eq!(got.expect("datagram"), datagram);
    assert!(
        served.max_datagram_size() >= 1100,
        "{}",
        served.max_datagram_size()
    );

    // A server-opened message stream.
    let mut uni = served.open_uni().await.expect("open uni");
    uni.write_all(b"\x01\x41\x2c\x05hello")
        .await
        .expect("write");
    uni.finish().expect("finish");
    let mut incoming = tokio::time::timeout(WAIT, session.accept_uni())
        .await
        .expect("in time")
        .expect("accept uni");
    let bytes = incoming.read_to_end(1024).await.expect("read");
    assert_eq!(bytes, b"\x01\x41\x2c\x05hello");

    // The georelay code travels in the session close.
    served.close(6, b"malformed frame");
    let closed = tokio::time::timeout(WAIT, session.closed())
        .await
        .expect("in time");
    match closed {
        web_transport_quinn::SessionError::WebTransportError(
            web_transport_quinn::WebTransportError::Closed(code, reason),
        ) => assert_eq!((code, reason.as_str()), (6, "malformed frame")),
        other => panic!("unexpected close: {other}"),
    }
}

#[tokio::test]
async fn another_path_is_refused_and_native_clients_get_the_node_certificate() {
    let certs = certs();
    let endpoint = quic_endpoint(&certs);
    let port = endpoint.local_addr().expect("addr").port();
    let (refused, served) =
        wt_attempt(&endpoint, "/other", &certs.browser.current().sha256_hex).await;
    assert!(refused.is_err(), "a session at /other");
    assert!(
        matches!(&served, Some(Err(WebTransportError::WrongPath(path))) if path == "/other"),
        "{served:?}"
    );

    // h3 is served the browser certificate: a pin on the node certificate
    // fails the handshake.
    let (refused, served) = wt_attempt(
        &endpoint,
        WEBTRANSPORT_PATH,
        &certs.node.current().sha256_hex,
    )
    .await;
    assert!(
        refused.is_err(),
        "h3 must be served the browser certificate"
    );
    assert!(served.is_none(), "no QUIC handshake");

    // A client offering georelay/1 is shown the node certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.node.current().der().clone()).expect("root");
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"georelay/1".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut native =
        quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind");
    native.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let accepted = tokio::spawn({
        let endpoint = endpoint.clone();
        async move { endpoint.accept().await.expect("incoming").await }
    });
    let conn = tokio::time::timeout(
        WAIT,
        native
            .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "localhost")
            .expect("connect"),
    )
    .await
    .expect("in time")
    .expect("native handshake with the node certificate");
    let presented = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .expect("peer certificates");
    assert_eq!(&presented[0], certs.node.current().der());
    drop(accepted);
}

// ---- the WebSocket fallback ------------------------------------------------

type Client =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn ws_listener(certs: &Certs, config: WsConfig) -> WsListener {
    let tls = Arc::new(server_tls(certs, &[b"http/1.1"]));
    WsListener::bind(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        WsAcceptor::new(tls, config),
    )
    .await
    .expect("bind")
}

async fn ws_connect(
    certs: &Certs,
    addr: SocketAddr,
    path: &str,
    protocol: Option<&str>,
) -> Result<Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.node.current().der().clone()).expect("root");
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut request = format!("wss://localhost:{}{path}", addr.port())
        .into_client_request()
        .expect("request");
    if let Some(protocol) = protocol {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().expect("header"));
    }
    let (ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some(WS_SUBPROTOCOL)
    );
    Ok(ws)
}

async fn session_pair(config: WsConfig) -> (Certs, WsSession, Client) {
    let certs = certs();
    let listener = ws_listener(&certs, config).await;
    let addr = listener.local_addr().expect("addr");
    let server = async {
        let (tcp, remote) = listener.accept_tcp().await.expect("tcp");
        listener
            .acceptor()
            .accept(tcp, remote)
            .await
            .expect("session")
    };
    let (session, client) = tokio::join!(
        server,
        ws_connect(&certs, addr, "/georelay", Some(WS_SUBPROTOCOL))
    );
    (certs, session, client.expect("client"))
}

async fn next_binary(client: &mut Client) -> Vec<u8> {
    loop {
        let message = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("message");
        if let Message::Binary(bytes) = message {
            return bytes.to_vec();
        }
    }
}

#[tokio::test]
async fn the_fallback_carries_control_datagrams_and_streams_both_ways() {
    let (_certs, session, mut client) = session_pair(WsConfig::default()).await;
    assert_eq!(session.remote_address().ip(), Ipv4Addr::LOCALHOST);
    assert_eq!(session.max_datagram_size(), 1162);
    let (mut control_out, mut control_in) = session.accept_control().expect("control");
    assert!(session.accept_control().is_none(), "one control stream");

    client
        .send(Message::Binary(Bytes::from_static(b"\x00\x04\x00")))
        .await
        .expect("send");
    client
        .send(Message::Binary(Bytes::from_static(
            b"\x01\x41\x2c\x07\x00hi",
        )))
        .await
        .expect("send");
    client
        .send(Message::Binary(Bytes::from_static(
            b"\x02\x00\x01\x41\x2c\x05hello",
        )))
        .await
        .expect("send");
    client
        .send(Message::Binary(Bytes::from_static(b"\x03\x00")))
        .await
        .expect("send");

    let control = tokio::time::timeout(WAIT, control_in.read_chunk())
        .await
        .expect("in time");
    assert_eq!(control.as_deref(), Some(&b"\x04\x00"[..]));
    let datagram = tokio::time::timeout(WAIT, session.read_datagram())
        .await
        .expect("in time");
    assert_eq!(
        datagram.expect("datagram"),
        Bytes::from_static(b"\x41\x2c\x07\x00hi")
    );
    let mut stream = tokio::time::timeout(WAIT, session.accept_uni())
        .await
        .expect("in time")
        .expect("uni");
    assert_eq!(
        stream.read_chunk().await.as_deref(),
        Some(&b"\x01\x41\x2c\x05hello"[..])
    );
    assert_eq!(stream.read_chunk().await, None, "finished");

    control_out.write_all(&[7u8; 20_000]).await.expect("write");
    let first = next_binary(&mut client).await;
    let second = next_binary(&mut client).await;
    assert_eq!(
        (first[0], first.len(), second[0], second.len()),
        (0, 16385, 0, 3617)
    );
    session
        .send_datagram(Bytes::from_static(b"media"))
        .expect("send");
    assert_eq!(next_binary(&mut client).await, b"\x01media");
    let mut uni = session.open_uni().expect("uni");
    uni.write_all(b"\x01abc").await.expect("write");
    uni.finish().await.expect("finish");
    assert_eq!(next_binary(&mut client).await, b"\x02\x00\x01abc");
    assert_eq!(next_binary(&mut client).await, b"\x03\x00");

    session.close(9, b"draining");
    assert_eq!(next_binary(&mut client).await, b"\x04\x09draining");
    assert_eq!(
        session.closed().await,
        WsClose::Local {
            code: 9,
            reason: "draining".into()
        }
    );
}

#[tokio::test]
async fn a_slow_client_loses_the_oldest_media_instead_of_delaying_it() {
    let config = WsConfig {
        datagram_queue: 64,
        ..WsConfig::default()
    };
    let (_certs, session, mut client) = session_pair(config).await;
    // The client reads nothing while the node sends 30 MB of media: TCP
    // buffers fill, then the bounded queue drops the oldest.
    const SENT: u32 = 30_000;
    let payload = vec![0u8; 996];
    for seq in 0..SENT {
        let mut datagram = seq.to_be_bytes().to_vec();
        datagram.extend_from_slice(&payload);
        session.send_datagram(Bytes::from(datagram)).expect("send");
        if seq % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let dropped = session.dropped_datagrams_out();
    assert!(dropped > 0, "nothing dropped");
    // Now it reads: everything it gets is in order, and the newest arrives.
    let mut received = Vec::new();
    while received.last() != Some(&(SENT - 1)) {
        let message = next_binary(&mut client).await;
        assert_eq!(message[0], 0x01);
        received.push(u32::from_be_bytes([
            message[1], message[2], message[3], message[4],
        ]));
    }
    assert!(received.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(
        received.len() as u64 + dropped,
        u64::from(SENT),
        "each either delivered or dropped"
    );
}

#[tokio::test]
async fn bad_fallback_input_closes_with_the_georelay_code() {
    let reused = [
        &b"\x02\x05\x01"[..], // stream 5 opens
        b"\x03\x05",          // and finishes
        b"\x02\x05\x01",      // stream 5 again
    ];
    // Binary messages, then a text message if any, and the expected code.
    type Case<'a> = (Vec<&'a [u8]>, Option<&'a str>, u8);
    let cases: [Case<'_>; 4] = [
        (vec![b"\x09"], None, 6),
        (vec![], Some("hello"), 6),
        (vec![&[0u8; 70_000][..]], None, 7),
        (reused.to_vec(), None, 6),
    ];
    for (binary, text, code) in cases {
        let (_certs, session, mut client) = session_pair(WsConfig::default()).await;
        for message in binary {
            client
                .send(Message::Binary(Bytes::copy_from_slice(message)))
                .await
                .expect("send");
        }
        if let Some(text) = text {
            client.send(Message::Text(text.into())).await.expect("send");
        }
        let close = next_binary(&mut client).await;
        assert_eq!(&close[..2], &[0x04, code]);
        assert!(
            matches!(session.closed().await, WsClose::Local { code: c, .. } if c == u32::from(code))
        );
    }
}

#[tokio::test]
async fn the_handshake_requires_the_path_and_subprotocol() {
    let certs = certs();
    let listener = ws_listener(&certs, WsConfig::default()).await;
    let addr = listener.local_addr().expect("addr");
    for (path, protocol) in [("/other", Some(WS_SUBPROTOCOL)), ("/georelay", None)] {
        let server = async {
            let (tcp, remote) = listener.accept_tcp().await.expect("tcp");
            listener.acceptor().accept(tcp, remote).await
        };
        let (served, client) = tokio::join!(server, ws_connect(&certs, addr, path, protocol));
        assert!(served.is_err(), "{path}");
        assert!(client.is_err(), "{path}");
    }
}

#[tokio::test]
async fn a_client_that_goes_quiet_is_closed_after_the_idle_timeout() {
    let config = WsConfig {
        idle_timeout: Duration::from_millis(300),
        ping_interval: Duration::from_secs(60),
        ..WsConfig::default()
    };
    let (_certs, session, _client) = session_pair(config).await;
    let closed = tokio::time::timeout(WAIT, session.closed())
        .await
        .expect("in time");
    assert!(matches!(closed, WsClose::Lost(reason) if reason.contains("idle")));
}
