//! The relay's browser wiring through real nodes on loopback: a
//! `web-transport-quinn` client (WebTransport at `https://<listen>/georelay`,
//! the development certificate pinned by the hash `/certificate.sha256`
//! serves, as `serverCertificateHashes` does) and a `tokio-tungstenite`
//! client (the WebSocket fallback, docs/PROTOCOL.md §12), each bound to a
//! source address that geolocates to a chosen country, speaking georelay/1
//! frame by frame next to native SDK clients.
//!
//! - admission and geofence decisions are the native ones (`WELCOME`,
//!   `GEOFENCE_DENIED`, `GEOFENCE_REDIRECT` with the same targets), and
//!   the session close carries the code;
//! - browser and native clients exchange media in one channel and `/status`
//!   counts every session and packet;
//! - a reload that revokes the app closes browser sessions with the code
//!   and targets native sessions get;
//! - a malformed frame is `PROTOCOL_VIOLATION` for that session only;
//! - the development certificate is renewed by the node's renewal task on
//!   its injected clock (at a reload), `/certificate.sha256` changes, open
//!   sessions continue, new sessions need the new hash.

mod support;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use georelay::auth::Role;
use georelay::client::{ClientError, Event};
use georelay::clock::Clock;
use georelay::error::ErrorCode;
use georelay::wire::{Announce, Frame, FrameDecoder, Hello, MediaHeader, SdkInfo, TrackKind};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use support::events::next_matching;
use support::fleet::{FleetSpec, TestFleet, http_get};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts exactly the certificate whose SHA-256 is `hash`, as a browser's
/// `serverCertificateHashes` does (no chain, no validity dates).
#[derive(Debug)]
struct PinnedHash {
    hash: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedHash {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        if hex == self.hash {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The client offers TLS 1.3 only (as WebTransport requires).
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn pinned_tls(hash: &str, alpn: &[u8]) -> rustls::ClientConfig {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedHash {
            hash: hash.to_owned(),
            provider: provider(),
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls
}

/// The hash a node serves at `/certificate.sha256`.
async fn certificate_hash(fleet: &TestFleet, node: &str) -> String {
    let body = http_get(fleet.admin_addr(node), "/certificate.sha256").await;
    let hash = body.trim().to_owned();
    assert_eq!(hash.len(), 64, "not a hash: {body:?}");
    hash
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Browser {
    WebTransport,
    WebSocket,
}

const BROWSERS: [Browser; 2] = [Browser::WebTransport, Browser::WebSocket];

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

struct WtLink {
    session: web_transport_quinn::Session,
    send: web_transport_quinn::SendStream,
    recv: web_transport_quinn::RecvStream,
}

enum Link {
    Wt(Box<WtLink>),
    Ws {
        ws: Box<WsStream>,
        datagrams: VecDeque<Bytes>,
        close: Option<(u32, String)>,
    },
}

/// A browser-side georelay/1 client, frame by frame.
struct Peer {
    link: Link,
    decoder: FrameDecoder,
}

/// Why a connection attempt failed below georelay/1.
type Unreachable = String;

impl Peer {
    /// Opens a session to `node` from a source address in `country`,
    /// trusting the certificate with `hash`.
    async fn open(
        fleet: &TestFleet,
        browser: Browser,
        node: &str,
        country: Option<&str>,
        hash: &str,
    ) -> Result<Peer, Unreachable> {
        let bind = fleet.client_ip(country);
        let link = match browser {
            Browser::WebTransport => Self::open_wt(fleet.node_addr(node), bind, hash).await?,
            Browser::WebSocket => Self::open_ws(fleet.websocket_addr(node), bind, hash).await?,
        };
        Ok(Peer {
            link,
            decoder: FrameDecoder::new(65536),
        })
    }

    async fn open_wt(addr: SocketAddr, bind: IpAddr, hash: &str) -> Result<Link, Unreachable> {
        let fail = |e: &dyn std::fmt::Display| e.to_string();
        let tls = pinned_tls(hash, b"h3");
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| fail(&e))?;
        let endpoint = quinn::Endpoint::client(SocketAddr::new(bind, 0)).map_err(|e| fail(&e))?;
        let conn = endpoint
            .connect_with(
                quinn::ClientConfig::new(Arc::new(crypto)),
                addr,
                &addr.ip().to_string(),
            )
            .map_err(|e| fail(&e))?;
        let conn = tokio::time::timeout(WAIT, conn)
            .await
            .map_err(|e| fail(&e))?
            .map_err(|e| fail(&e))?;
        let url: url::Url = format!("https://{addr}/georelay").parse().expect("url");
        let session = tokio::time::timeout(WAIT, web_transport_quinn::Session::connect(conn, url))
            .await
            .map_err(|e| fail(&e))?
            .map_err(|e| fail(&e))?;
        let (send, recv) = session.open_bi().await.map_err(|e| fail(&e))?;
        Ok(Link::Wt(Box::new(WtLink {
            session,
            send,
            recv,
        })))
    }

    async fn open_ws(addr: SocketAddr, bind: IpAddr, hash: &str) -> Result<Link, Unreachable> {
        let fail = |e: &dyn std::fmt::Display| e.to_string();
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| fail(&e))?;
        socket
            .bind(SocketAddr::new(bind, 0))
            .map_err(|e| fail(&e))?;
        let tcp = socket.connect(addr).await.map_err(|e| fail(&e))?;
        let name = ServerName::try_from(addr.ip().to_string()).expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(pinned_tls(hash, b"http/1.1")))
            .connect(name, tcp)
            .await
            .map_err(|e| fail(&e))?;
        let mut request = format!("wss://{addr}/georelay")
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            georelay::browser::websocket::WS_SUBPROTOCOL
                .parse()
                .expect("header"),
        );
        let (ws, _) = tokio_tungstenite::client_async(request, tls)
            .await
            .map_err(|e| fail(&e))?;
        Ok(Link::Ws {
            ws: Box::new(ws),
            datagrams: VecDeque::new(),
            close: None,
        })
    }

    /// Connects and sends `HELLO`; returns the peer and the relay's answer.
    #[allow(clippy::too_many_arguments)]
    async fn join(
        fleet: &TestFleet,
        browser: Browser,
        node: &str,
        app: &str,
        channel: &str,
        role: Role,
        country: Option<&str>,
        hash: &str,
    ) -> (Peer, Frame) {
        let mut peer = Self::open(fleet, browser, node, country, hash)
            .await
            .expect("transport up");
        let hello = Frame::Hello(Hello {
            version: 1,
            app: app.to_owned(),
            channel: channel.to_owned(),
            token: fleet.token(app, channel, "browser", role, 12 * 24 * 3600),
            sdk: SdkInfo {
                name: "browser-relay-test".into(),
                ..SdkInfo::default()
            },
        });
        peer.send_frame(&hello).await;
        let answer = peer.next_frame().await.expect("an answer to HELLO");
        (peer, answer)
    }

    async fn send_control(&mut self, bytes: &[u8]) {
        match &mut self.link {
            Link::Wt(wt) => wt.send.write_all(bytes).await.expect("control write"),
            Link::Ws { ws, .. } => {
                let mut message = vec![0x00];
                message.extend_from_slice(bytes);
                ws.send(Message::Binary(message.into()))
                    .await
                    .expect("control write");
            }
        }
    }

    async fn send_frame(&mut self, frame: &Frame) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        self.send_control(&buf).await;
    }

    async fn send_datagram(&mut self, datagram: Bytes) {
        match &mut self.link {
            Link::Wt(wt) => wt.session.send_datagram(datagram).expect("datagram"),
            Link::Ws { ws, .. } => {
                let mut message = vec![0x01];
                message.extend_from_slice(&datagram);
                ws.send(Message::Binary(message.into()))
                    .await
                    .expect("datagram");
            }
        }
    }

    /// Reads one fallback message into the decoder or the datagram queue;
    /// `false` once the WebSocket is closed.
    async fn pump_ws(&mut self) -> bool {
        let Link::Ws {
            ws,
            datagrams,
            close,
        } = &mut self.link
        else {
            unreachable!("WebSocket only");
        };
        let Some(Ok(message)) = ws.next().await else {
            return false;
        };
        let Message::Binary(bytes) = message else {
            return true;
        };
        match bytes.first() {
            Some(0x00) => self.decoder.push(&bytes[1..]),
            Some(0x01) => datagrams.push_back(bytes.slice(1..)),
            Some(0x04) => {
                let mut reader = &bytes[1..];
                let code = read_varint(&mut reader);
                *close = Some((
                    u32::try_from(code).expect("code"),
                    String::from_utf8_lossy(reader).into_owned(),
                ));
            }
            _ => {}
        }
        true
    }

    /// The next control frame, or `None` when the stream or session ended.
    async fn next_frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(frame) = self.decoder.next_frame().expect("well-formed frames") {
                    return Some(frame);
                }
                match &mut self.link {
                    Link::Wt(wt) => {
                        let mut chunk = vec![0u8; 4096];
                        match wt.recv.read(&mut chunk).await {
                            Ok(Some(n)) => self.decoder.push(&chunk[..n]),
                            _ => return None,
                        }
                    }
                    Link::Ws { .. } => {
                        if !self.pump_ws().await {
                            return None;
                        }
                    }
                }
            }
        })
        .await
        .expect("a frame or the end in time")
    }

    /// The next frame that `pick` accepts (others are skipped).
    async fn frame_matching<T>(&mut self, mut pick: impl FnMut(Frame) -> Option<T>) -> T {
        loop {
            let frame = self.next_frame().await.expect("session open");
            if let Some(found) = pick(frame) {
                return found;
            }
        }
    }

    async fn next_datagram(&mut self, within: Duration) -> Option<Bytes> {
        tokio::time::timeout(within, async {
            match &mut self.link {
                Link::Wt(wt) => wt.session.read_datagram().await.ok(),
                Link::Ws { .. } => loop {
                    if let Link::Ws { datagrams, .. } = &mut self.link
                        && let Some(datagram) = datagrams.pop_front()
                    {
                        return Some(datagram);
                    }
                    if !self.pump_ws().await {
                        return None;
                    }
                },
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// The application close code and reason the session ended with.
    async fn closed(&mut self) -> (u32, String) {
        tokio::time::timeout(WAIT, async {
            match &mut self.link {
                Link::Wt(wt) => match wt.session.closed().await {
                    web_transport_quinn::SessionError::WebTransportError(
                        web_transport_quinn::WebTransportError::Closed(code, reason),
                    ) => (code, reason),
                    other => panic!("session ended without a close code: {other}"),
                },
                Link::Ws { .. } => {
                    while self.pump_ws().await {}
                    let Link::Ws { close, .. } = &self.link else {
                        unreachable!()
                    };
                    close
                        .clone()
                        .expect("a CLOSE message before the WebSocket closed")
                }
            }
        })
        .await
        .expect("closed in time")
    }

    /// Whether the session is still open.
    fn is_open(&self) -> bool {
        match &self.link {
            Link::Wt(wt) => wt.session.close_reason().is_none(),
            Link::Ws { close, .. } => close.is_none(),
        }
    }
}

fn read_varint(buf: &mut &[u8]) -> u64 {
    let first = buf[0];
    let len = 1usize << (first >> 6);
    let mut value = u64::from(first & 0x3f);
    for byte in &buf[1..len] {
        value = (value << 8) | u64::from(*byte);
    }
    *buf = &buf[len..];
    value
}

fn wire(code: ErrorCode) -> u32 {
    u32::try_from(code.to_wire()).expect("code")
}

/// An `ERROR` frame's code and redirect targets `(node, addr)`.
fn refusal(frame: Frame) -> (u64, Vec<(String, String)>) {
    match frame {
        Frame::Error(error) => (
            error.code,
            error
                .redirect
                .into_iter()
                .map(|t| (t.node, t.addr))
                .collect(),
        ),
        other => panic!("expected ERROR, got {other:?}"),
    }
}

fn native_refusal(
    result: Result<georelay::client::Client, ClientError>,
) -> (u64, Vec<(String, String)>) {
    match result {
        Err(ClientError::Refused { code, redirect, .. }) => (
            code.to_wire(),
            redirect
                .into_iter()
                .map(|t| (t.node, t.addr.to_string()))
                .collect(),
        ),
        Err(other) => panic!("native client: {other}"),
        Ok(_) => panic!("native client admitted"),
    }
}

fn browser_spec() -> FleetSpec {
    FleetSpec {
        websocket: true,
        ..FleetSpec::default()
    }
}

/// A browser session of acme-health at eu-fra-1 from DE, admitted.
async fn admitted(
    fleet: &TestFleet,
    browser: Browser,
    channel: &str,
    role: Role,
    hash: &str,
) -> Peer {
    let (peer, answer) = Peer::join(
        fleet,
        browser,
        "eu-fra-1",
        "acme-health",
        channel,
        role,
        Some("DE"),
        hash,
    )
    .await;
    assert!(
        matches!(answer, Frame::Welcome(_)),
        "{browser:?}: {answer:?}"
    );
    peer
}

/// A native SDK client of acme-health at eu-fra-1 from NL, admitted, with
/// a token valid for 12 days (tests that step the node's clock need it).
async fn native(
    fleet: &TestFleet,
    channel: &str,
    user: &str,
    role: Role,
) -> georelay::client::Client {
    let join = georelay::client::Join {
        app: "acme-health".into(),
        channel: channel.into(),
        token: fleet.token("acme-health", channel, user, role, 12 * 24 * 3600),
    };
    georelay::client::Client::connect(
        &fleet.options(Some("NL")),
        &[fleet.target("eu-fra-1")],
        &join,
    )
    .await
    .unwrap_or_else(|e| panic!("native {user} admitted: {e}"))
}

/// Waits for `TRACK_ADDED` of `track` at a native client.
async fn native_track_added(client: &mut georelay::client::Client, track: u64) {
    next_matching(client, WAIT, |e| match e {
        Event::TrackAdded(info) if info.track == track => Some(()),
        _ => None,
    })
    .await
    .expect("track added at the native client");
}

/// A native publisher's new track, once `subscriber` has seen it; then
/// `count` datagrams on it.
async fn publish_to(
    publisher: &georelay::client::Client,
    subscriber: &mut Peer,
    name: &str,
    count: u64,
) -> u64 {
    let track = publisher
        .announce(TrackKind::Data, false, name)
        .await
        .expect("announce");
    track_added(subscriber, track).await;
    for seq in 0..count {
        publisher
            .send_media(track, seq, seq * 1000, &[0xa5; 100])
            .expect("send");
    }
    track
}

/// Joins as an acme-health subscriber with `(browser, node, country,
/// hash)` and checks the `ERROR` frame equals the native client's refusal
/// and the session closes with `code`.
async fn assert_refused(
    fleet: &TestFleet,
    (browser, node, country, hash): (Browser, &str, Option<&str>, &str),
    native: &(u64, Vec<(String, String)>),
    code: ErrorCode,
) {
    let (mut peer, answer) = Peer::join(
        fleet,
        browser,
        node,
        "acme-health",
        "room",
        Role::Subscribe,
        country,
        hash,
    )
    .await;
    assert_eq!(
        &refusal(answer),
        native,
        "{browser:?} at {node} from {country:?}"
    );
    assert_eq!(peer.closed().await.0, wire(code), "{browser:?} at {node}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_admission_and_geofence_decisions_are_the_native_ones() {
    let fleet = TestFleet::start_nodes(browser_spec(), &["eu-fra-1", "eu-ams-1", "us-iad-1"]).await;
    // Native decisions first: a denied country, a disallowed node.
    let denied_native = native_refusal(
        fleet
            .connect(
                "eu-fra-1",
                "acme-health",
                "room",
                "n",
                Role::Subscribe,
                Some("RU"),
            )
            .await,
    );
    let mut options = fleet.options(Some("DE"));
    options.max_redirects = 0;
    let join = georelay::client::Join {
        app: "acme-health".into(),
        channel: "room".into(),
        token: fleet.token("acme-health", "room", "n", Role::Subscribe, 600),
    };
    let redirect_native = native_refusal(
        georelay::client::Client::connect(&options, &[fleet.target("us-iad-1")], &join).await,
    );
    assert_eq!(denied_native.0, ErrorCode::GeofenceDenied.to_wire());
    assert_eq!(redirect_native.0, ErrorCode::GeofenceRedirect.to_wire());
    assert!(
        redirect_native.1.iter().any(|(node, _)| node == "eu-fra-1"),
        "{redirect_native:?}"
    );
    for browser in BROWSERS {
        let hash_eu = certificate_hash(&fleet, "eu-fra-1").await;
        let hash_us = certificate_hash(&fleet, "us-iad-1").await;
        let denied = (browser, "eu-fra-1", Some("RU"), hash_eu.as_str());
        assert_refused(&fleet, denied, &denied_native, ErrorCode::GeofenceDenied).await;
        let redirected = (browser, "us-iad-1", Some("DE"), hash_us.as_str());
        assert_refused(
            &fleet,
            redirected,
            &redirect_native,
            ErrorCode::GeofenceRedirect,
        )
        .await;

        let (peer, answer) = Peer::join(
            &fleet,
            browser,
            "eu-fra-1",
            "acme-health",
            "room",
            Role::Subscribe,
            Some("DE"),
            &hash_eu,
        )
        .await;
        match answer {
            Frame::Welcome(welcome) => {
                assert_eq!(
                    (welcome.node.as_str(), welcome.region.as_str()),
                    ("eu-fra-1", "eu")
                );
            }
            other => panic!("{browser:?}: expected WELCOME, got {other:?}"),
        }
        assert!(peer.is_open());
    }
}

/// Announces a track from `peer`; returns its relay key.
async fn announce(peer: &mut Peer, name: &str) -> u64 {
    peer.send_frame(&Frame::Announce(Announce {
        track_id: 1,
        kind: TrackKind::Data,
        e2ee: false,
        name: name.into(),
    }))
    .await;
    peer.frame_matching(|f| match f {
        Frame::AnnounceOk(ok) => Some(ok.track),
        _ => None,
    })
    .await
}

/// Waits for `TRACK_ADDED` of `track`.
async fn track_added(peer: &mut Peer, track: u64) {
    peer.frame_matching(|f| match f {
        Frame::TrackAdded(info) if info.track == track => Some(()),
        _ => None,
    })
    .await;
}

/// Receives datagrams of `track` until `count` distinct sequence numbers
/// or a quiet second; returns how many arrived.
async fn receive_seqs(peer: &mut Peer, track: u64, count: usize) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < count {
        let Some(datagram) = peer.next_datagram(Duration::from_secs(1)).await else {
            break;
        };
        let (header, _) = MediaHeader::parse(&datagram).expect("media header");
        if header.track == track {
            seen.insert(header.seq);
        }
    }
    seen.len()
}

fn datagram(track: u64, seq: u64) -> Bytes {
    MediaHeader {
        track,
        seq,
        timestamp_us: seq * 1000,
    }
    .datagram(&[0x5a; 100])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_and_native_clients_exchange_media_and_status_counts_every_session() {
    const COUNT: u64 = 50;
    let fleet = TestFleet::start_nodes(browser_spec(), &["eu-fra-1"]).await;
    let hash = certificate_hash(&fleet, "eu-fra-1").await;
    let mut native_sub = native(&fleet, "mixed", "native-sub", Role::Subscribe).await;
    native_sub.subscribe().await.expect("subscribe");
    let mut wt_sub = admitted(
        &fleet,
        Browser::WebTransport,
        "mixed",
        Role::Subscribe,
        &hash,
    )
    .await;
    wt_sub.send_frame(&Frame::Subscribe).await;
    let mut ws_pub = admitted(&fleet, Browser::WebSocket, "mixed", Role::Publish, &hash).await;
    let native_pub = native(&fleet, "mixed", "native-pub", Role::Publish).await;

    // Fallback browser → native and WebTransport subscribers.
    let ws_track = announce(&mut ws_pub, "browser-cam").await;
    track_added(&mut wt_sub, ws_track).await;
    native_track_added(&mut native_sub, ws_track).await;
    for seq in 0..COUNT {
        ws_pub.send_datagram(datagram(ws_track, seq)).await;
    }
    let to_wt = receive_seqs(&mut wt_sub, ws_track, COUNT as usize).await;
    let to_native = support::events::media_seqs(&mut native_sub, ws_track, Duration::from_secs(2))
        .await
        .len();
    // Native → the WebTransport subscriber.
    let native_track = publish_to(&native_pub, &mut wt_sub, "native-cam", COUNT).await;
    let native_to_wt = receive_seqs(&mut wt_sub, native_track, COUNT as usize).await;
    let min = (COUNT as usize) * 95 / 100;
    assert!(to_wt >= min, "fallback → WebTransport: {to_wt}/{COUNT}");
    assert!(to_native >= min, "fallback → native: {to_native}/{COUNT}");
    assert!(
        native_to_wt >= min,
        "native → WebTransport: {native_to_wt}/{COUNT}"
    );

    let status = fleet.status("eu-fra-1").await;
    assert_eq!(status.sessions, 4, "two browser and two native sessions");
    let traffic = &status.apps["acme-health"];
    assert!(
        traffic.packets_in >= 2 * min as u64,
        "packets in from both publishers: {traffic:?}"
    );
    assert!(
        traffic.packets_out >= (to_wt + to_native + native_to_wt) as u64,
        "packets out to both subscribers: {traffic:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_revokes_the_app_closes_browser_sessions_as_native_ones() {
    let fleet = TestFleet::start_nodes(browser_spec(), &["eu-fra-1", "us-iad-1"]).await;
    let hash = certificate_hash(&fleet, "eu-fra-1").await;
    let mut native = native(&fleet, "room", "native", Role::Subscribe).await;
    let mut browsers = Vec::new();
    for browser in BROWSERS {
        let peer = admitted(&fleet, browser, "room", Role::Subscribe, &hash).await;
        browsers.push((browser, peer));
    }
    // acme-health may now use only the US: every session at eu-fra-1 ends.
    let spec = FleetSpec {
        apps: support::fleet::EXAMPLE_APPS.replace(
            "[apps.acme-health]\nsecret = \"acme-test-secret\"\nallow_regions = [\"eu\"]",
            "[apps.acme-health]\nsecret = \"acme-test-secret\"\nallow_regions = [\"us\"]",
        ),
        ..browser_spec()
    };
    assert_ne!(
        spec.apps,
        support::fleet::EXAMPLE_APPS,
        "the policy changes"
    );
    fleet.rewrite_config(&spec);
    fleet.fleet.reload().expect("valid config");
    let native_closed = next_matching(&mut native, WAIT, |e| match e {
        Event::Closed { code, redirect, .. } => Some((code, redirect)),
        _ => None,
    })
    .await
    .expect("native session closed");
    assert_eq!(native_closed.0, Some(ErrorCode::GeofenceRevoked));
    let native_targets: Vec<(String, String)> = native_closed
        .1
        .into_iter()
        .map(|t| (t.node, t.addr.to_string()))
        .collect();
    assert!(
        native_targets.iter().any(|(n, _)| n == "us-iad-1"),
        "{native_targets:?}"
    );
    for (browser, mut peer) in browsers {
        let error = peer
            .frame_matching(|f| matches!(f, Frame::Error(_)).then_some(f))
            .await;
        assert_eq!(
            refusal(error),
            (ErrorCode::GeofenceRevoked.to_wire(), native_targets.clone()),
            "{browser:?}"
        );
        assert_eq!(
            peer.closed().await.0,
            wire(ErrorCode::GeofenceRevoked),
            "{browser:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_from_a_browser_is_a_protocol_violation_and_bystanders_stay() {
    let fleet = TestFleet::start_nodes(browser_spec(), &["eu-fra-1"]).await;
    let hash = certificate_hash(&fleet, "eu-fra-1").await;
    let mut bystander = admitted(
        &fleet,
        Browser::WebTransport,
        "room",
        Role::Subscribe,
        &hash,
    )
    .await;
    bystander.send_frame(&Frame::Subscribe).await;
    let mut native_bystander = native(&fleet, "room", "native", Role::Subscribe).await;
    native_bystander.subscribe().await.expect("subscribe");
    for browser in BROWSERS {
        // Before HELLO: a frame of an undefined type.
        let mut peer = Peer::open(&fleet, browser, "eu-fra-1", Some("DE"), &hash)
            .await
            .expect("transport up");
        peer.send_control(&[0x3f, 0x00]).await;
        let (code, _) = refusal(peer.next_frame().await.expect("ERROR"));
        assert_eq!(code, ErrorCode::ProtocolViolation.to_wire(), "{browser:?}");
        assert_eq!(
            peer.closed().await,
            (
                wire(ErrorCode::ProtocolViolation),
                "PROTOCOL_VIOLATION".to_owned()
            ),
            "{browser:?}"
        );
        // After WELCOME: an ANNOUNCE whose body ends inside its fields.
        let mut peer = admitted(&fleet, browser, "room", Role::Publish, &hash).await;
        peer.send_control(&[0x10, 0x02, 0x01, 0x00]).await;
        let error = peer
            .frame_matching(|f| matches!(f, Frame::Error(_)).then_some(f))
            .await;
        assert_eq!(
            refusal(error).0,
            ErrorCode::ProtocolViolation.to_wire(),
            "{browser:?}"
        );
        assert_eq!(
            peer.closed().await.0,
            wire(ErrorCode::ProtocolViolation),
            "{browser:?}"
        );
    }
    // Both bystanders are still served: media from a new publisher reaches them.
    let publisher = native(&fleet, "room", "pub", Role::Publish).await;
    let track = publisher
        .announce(TrackKind::Data, false, "after")
        .await
        .expect("announce");
    native_track_added(&mut native_bystander, track).await;
    track_added(&mut bystander, track).await;
    for seq in 0..20 {
        publisher
            .send_media(track, seq, seq, &[1; 10])
            .expect("send");
    }
    assert!(receive_seqs(&mut bystander, track, 20).await >= 19);
    assert!(
        support::events::media_seqs(&mut native_bystander, track, Duration::from_secs(2))
            .await
            .len()
            >= 19
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_certificate_is_renewed_on_the_nodes_clock_and_open_sessions_continue() {
    let start_ms = georelay::clock::SystemClock.now_unix_ms();
    let clock = Arc::new(georelay::clock::ManualClock::new(start_ms));
    let fleet =
        TestFleet::start_nodes_with_clock(browser_spec(), &["eu-fra-1"], clock.clone()).await;
    let node = fleet.fleet.node("eu-fra-1").expect("node");
    let store = node.browser.cert.clone().expect("development certificate");
    let first = store.current();
    let old_hash = certificate_hash(&fleet, "eu-fra-1").await;
    assert_eq!(old_hash, first.sha256_hex);
    let mut open_session = admitted(
        &fleet,
        Browser::WebTransport,
        "room",
        Role::Subscribe,
        &old_hash,
    )
    .await;
    open_session.send_frame(&Frame::Subscribe).await;

    // 11 days on: inside the renewal window (the last 3 of 13 days), still
    // before expiry. A reload makes the renewal task look at the clock.
    clock.advance(Duration::from_secs(11 * 24 * 3600));
    let now = clock.now_unix_secs();
    assert!(first.due(now) && now < first.not_after);
    fleet.fleet.reload().expect("valid config");
    let renewed = tokio::time::timeout(WAIT, async {
        loop {
            let hash = certificate_hash(&fleet, "eu-fra-1").await;
            if hash != old_hash {
                return hash;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("renewed in time");
    let second = store.current();
    assert_eq!(renewed, second.sha256_hex);
    assert!(second.not_after > first.not_after && !second.due(now));

    // The session opened on the old certificate is still served (the
    // publisher's token is valid on the node's clock, 11 days on).
    let publisher = native(&fleet, "room", "pub", Role::Publish).await;
    let track = publish_to(&publisher, &mut open_session, "after-renewal", 20).await;
    assert!(receive_seqs(&mut open_session, track, 20).await >= 19);

    // New sessions need the new hash: over WebTransport and the fallback.
    for browser in BROWSERS {
        assert!(
            Peer::open(&fleet, browser, "eu-fra-1", Some("DE"), &old_hash)
                .await
                .is_err(),
            "{browser:?} accepted the replaced certificate"
        );
        admitted(&fleet, browser, "room", Role::Subscribe, &renewed).await;
    }
}
