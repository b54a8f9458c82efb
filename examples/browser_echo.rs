//! A georelay/1 echo fixture for browser tests of the SDK and of the
//! browser serving blocks (not a relay): it accepts WebTransport sessions
//! (`h3`, `/georelay`, the browser development certificate) and WebSocket
//! fallback sessions, admits every `HELLO` with a `WELCOME`, answers
//! `ANNOUNCE` with `ANNOUNCE_OK`, and echoes media datagrams and message
//! streams back unchanged. It prints one JSON line with its addresses, the
//! certificate hash for `serverCertificateHashes` and the SPKI hash for
//! Chromium's `--ignore-certificate-errors-spki-list` (the fallback's TLS),
//! then serves until stdin closes.
//!
//! `cargo run --example browser_echo` (used by `sdk/js/e2e/run.mjs`).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use georelay::browser::devcert::{ALPN_H3, AlpnCertResolver, BrowserCertStore};
use georelay::browser::transport::WsTransport;
use georelay::browser::websocket::{WsAcceptor, WsConfig, WsListener};
use georelay::browser::webtransport;
use georelay::clock::{Clock, SystemClock};
use georelay::relay::transport::SessionTransport;
use georelay::wire::{AnnounceOk, Frame, FrameDecoder, MAX_FRAME_BODY, MediaHeader, Welcome};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The same certificate for every ALPN (the fixture has no node identity).
#[derive(Debug)]
struct Same(Arc<BrowserCertStore>);

impl ResolvesServerCert for Same {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current().certified))
    }
}

fn tls(store: &Arc<BrowserCertStore>, alpn: &[u8]) -> rustls::ServerConfig {
    let resolver = AlpnCertResolver::new(Arc::clone(store), Arc::new(Same(Arc::clone(store))));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap_or_else(|err| panic!("{err}"))
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

/// Answers the control stream: `HELLO` → `WELCOME`, `ANNOUNCE` →
/// `ANNOUNCE_OK`, until `GOODBYE` or the stream ends.
async fn respond(mut input: mpsc::Receiver<Bytes>, output: mpsc::Sender<Bytes>, max_payload: u64) {
    let mut decoder = FrameDecoder::new(MAX_FRAME_BODY);
    while let Some(chunk) = input.recv().await {
        decoder.push(&chunk);
        while let Ok(Some(frame)) = decoder.next_frame() {
            let reply = match frame {
                Frame::Hello(_) => Frame::Welcome(Welcome {
                    session_id: 1,
                    node: "echo".into(),
                    region: "local".into(),
                    max_datagram_payload: max_payload,
                    max_message_bytes: 65536,
                }),
                Frame::Announce(announce) => Frame::AnnounceOk(AnnounceOk {
                    track_id: announce.track_id,
                    track: 1000 + announce.track_id,
                }),
                Frame::Goodbye => return,
                _ => continue,
            };
            let mut buf = BytesMut::new();
            reply.encode(&mut buf);
            if output.send(buf.freeze()).await.is_err() {
                return;
            }
        }
    }
}

/// Serves one session, WebTransport or fallback, through the relay's
/// transport abstraction: the control stream answered by [`respond`],
/// datagrams and message streams echoed.
async fn serve<T: SessionTransport>(session: T) {
    let Ok((mut send, mut recv)) = session.accept_control().await else {
        return;
    };
    let (in_tx, in_rx) = mpsc::channel(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(64);
    let max_payload = session.max_datagram_size().unwrap_or_default() - MediaHeader::MAX_LEN;
    tokio::spawn(respond(in_rx, out_tx, max_payload as u64));
    tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(65536);
        while recv.read_buf(&mut buf).await.is_ok_and(|n| n > 0) {
            if in_tx.send(buf.split().freeze()).await.is_err() {
                return;
            }
        }
    });
    let echo = session.clone();
    tokio::spawn(async move {
        while let Ok(datagram) = echo.read_datagram().await {
            let _ = echo.send_datagram_now(datagram);
        }
    });
    let streams = session.clone();
    tokio::spawn(async move {
        while let Ok(mut incoming) = streams.accept_uni().await {
            let Ok(mut outgoing) = streams.open_uni().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut incoming, &mut outgoing).await;
            });
        }
    });
    while let Some(bytes) = out_rx.recv().await {
        if send.write_all(&bytes).await.is_err() {
            return;
        }
    }
    session.close(0, b"bye");
}

#[tokio::main]
async fn main() {
    georelay::tls::install_default_provider();
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let store = Arc::new(
        BrowserCertStore::new(names, SystemClock.now_unix_secs())
            .unwrap_or_else(|err| panic!("{err}")),
    );
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));

    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls(&store, ALPN_H3))
        .unwrap_or_else(|err| panic!("{err}"));
    let endpoint =
        quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(crypto)), loopback)
            .unwrap_or_else(|err| panic!("{err}"));
    let ws = WsListener::bind(
        loopback,
        WsAcceptor::new(Arc::new(tls(&store, b"http/1.1")), WsConfig::default()),
    )
    .await
    .unwrap_or_else(|err| panic!("{err}"));

    let cert = store.current();
    let spki = webpki::EndEntityCert::try_from(cert.der())
        .map(|parsed| parsed.subject_public_key_info())
        .unwrap_or_else(|err| panic!("{err}"));
    let spki_sha256 = ring::digest::digest(&ring::digest::SHA256, spki.as_ref());
    let ports = serde_json::json!({
        "webtransport": endpoint.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "websocket": ws.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "certificate_sha256": cert.sha256_hex,
        "spki_sha256_base64": base64::engine::general_purpose::STANDARD.encode(spki_sha256),
    });
    println!("{ports}");

    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                if let Ok(session) =
                    webtransport::accept_session(conn, Duration::from_secs(5)).await
                {
                    serve(session).await;
                }
            });
        }
    });
    tokio::spawn(async move {
        while let Ok((tcp, remote)) = ws.accept_tcp().await {
            let acceptor = ws.acceptor().clone();
            tokio::spawn(async move {
                if let Ok(session) = acceptor.accept(tcp, remote).await {
                    serve(WsTransport::new(session)).await;
                }
            });
        }
    });
    // Serve until the parent closes stdin.
    let _ = tokio::task::spawn_blocking(|| {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    })
    .await;
}
