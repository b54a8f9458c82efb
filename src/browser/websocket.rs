//! The WebSocket (TLS) fallback listener (docs/PROTOCOL.md §12): accepts
//! `wss://<addr>/georelay` with subprotocol `georelay-ws.1` and exposes each
//! connection as a [`WsSession`] with the same parts as a QUIC connection:
//! the control stream, datagrams, unidirectional streams, a close with an
//! application code.
//!
//! Media towards the client waits in a bounded drop-oldest
//! [`DatagramQueue`] per session, so a slow client loses packets instead of
//! delaying them; control and stream bytes are reliable and apply
//! backpressure (bounded channels whose writes wait, as QUIC flow control
//! does). Every buffer a peer can fill is bounded: message size, open
//! incoming streams, queued datagrams and chunks per stream.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as TungsteniteError, Message};

use crate::error::ErrorCode;
use crate::wire::varint;

/// The URL path of the fallback.
pub const WS_PATH: &str = "/georelay";
/// The WebSocket subprotocol of the fallback.
pub const WS_SUBPROTOCOL: &str = "georelay-ws.1";
/// The datagram size a fallback session reports (QUIC's smallest path).
pub const WS_MAX_DATAGRAM: usize = 1162;
/// The largest binary message accepted or sent.
pub const WS_MAX_MESSAGE: usize = 65536 + 16;
/// Control and stream bytes are sent in chunks of at most this size.
pub const WS_CHUNK: usize = 16 * 1024;
/// Incoming unidirectional streams open at once, at most.
pub const WS_MAX_INCOMING_STREAMS: usize = 64;
/// The longest close reason sent.
const MAX_REASON: usize = 512;

const KIND_CONTROL: u8 = 0x00;
const KIND_DATAGRAM: u8 = 0x01;
const KIND_STREAM: u8 = 0x02;
const KIND_STREAM_FIN: u8 = 0x03;
const KIND_CLOSE: u8 = 0x04;

/// Fallback settings.
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// Datagrams queued per direction before the oldest is dropped.
    pub datagram_queue: usize,
    /// Chunks queued per stream (and for outgoing reliable data) before
    /// writers wait.
    pub stream_queue: usize,
    /// How often the node pings the client.
    pub ping_interval: Duration,
    /// A session that receives nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Time allowed for the TLS and WebSocket handshakes.
    pub handshake_timeout: Duration,
}

impl Default for WsConfig {
    /// 256 datagrams, 64 chunks, ping every 1 s, 10 s idle (as QUIC
    /// clients), 5 s handshake.
    fn default() -> Self {
        Self {
            datagram_queue: 256,
            stream_queue: 64,
            ping_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a connection did not become a session.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// TLS failed.
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The WebSocket handshake failed or was refused (path, subprotocol).
    #[error("WebSocket handshake failed: {0}")]
    Handshake(#[from] TungsteniteError),
    /// Not done within the handshake timeout.
    #[error("handshake not done within {0:?}")]
    Timeout(Duration),
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsClose {
    /// This side closed with the code (0 = normal) and reason.
    Local {
        /// The application code.
        code: u32,
        /// The reason sent.
        reason: String,
    },
    /// The peer sent CLOSE with the code and reason.
    Peer {
        /// The application code.
        code: u32,
        /// The peer's reason.
        reason: String,
    },
    /// The connection was lost without CLOSE (TCP reset, idle timeout,
    /// WebSocket closed).
    Lost(String),
}

/// A bounded queue that drops the oldest item when full (one consumer).
#[derive(Debug)]
pub struct DatagramQueue {
    items: Mutex<VecDeque<Bytes>>,
    capacity: usize,
    dropped: AtomicU64,
    ready: Notify,
}

impl DatagramQueue {
    /// A queue holding at most `capacity` (at least 1) datagrams.
    pub fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            ready: Notify::new(),
        }
    }

    /// Queues `datagram`, dropping the oldest if full; returns whether one
    /// was dropped.
    pub fn push(&self, datagram: Bytes) -> bool {
        let dropped = {
            let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
            let full = items.len() >= self.capacity;
            if full {
                items.pop_front();
            }
            items.push_back(datagram);
            full
        };
        if dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.ready.notify_one();
        dropped
    }

    /// The oldest queued datagram, if any.
    pub fn pop(&self) -> Option<Bytes> {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// Waits for a datagram.
    pub async fn pop_wait(&self) -> Bytes {
        loop {
            if let Some(datagram) = self.pop() {
                return datagram;
            }
            self.ready.notified().await;
        }
    }

    /// How many are queued.
    pub fn len(&self) -> usize {
        self.items.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Datagrams dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Reliable data for the writer.
#[derive(Debug)]
enum Outgoing {
    Control(Bytes),
    Stream(u64, Bytes),
    Fin(u64),
}

#[derive(Debug)]
struct Shared {
    datagrams_out: DatagramQueue,
    datagrams_in: DatagramQueue,
    close: watch::Sender<Option<WsClose>>,
    next_stream: AtomicU64,
    rtt_us: AtomicU64,
}

impl Shared {
    fn set_close(&self, close: WsClose) {
        self.close.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(close);
            true
        });
    }

    fn closed(&self) -> Option<WsClose> {
        self.close.borrow().clone()
    }
}

/// The session is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("WebSocket session closed: {0:?}")]
pub struct WsClosed(pub WsClose);

/// One fallback connection.
#[derive(Debug)]
pub struct WsSession {
    shared: Arc<Shared>,
    remote: SocketAddr,
    reliable: mpsc::Sender<Outgoing>,
    control_in: Mutex<Option<mpsc::Receiver<Bytes>>>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<WsRecvStream>>,
}

impl WsSession {
    /// The client's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.remote
    }

    /// The datagram size the session reports ([`WS_MAX_DATAGRAM`]).
    pub fn max_datagram_size(&self) -> usize {
        WS_MAX_DATAGRAM
    }

    /// The round-trip time measured by the last ping, if any.
    pub fn rtt(&self) -> Option<Duration> {
        match self.shared.rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Datagrams to the client dropped because its queue was full.
    pub fn dropped_datagrams_out(&self) -> u64 {
        self.shared.datagrams_out.dropped()
    }

    /// Datagrams from the client dropped because they were not read in time.
    pub fn dropped_datagrams_in(&self) -> u64 {
        self.shared.datagrams_in.dropped()
    }

    fn check_open(&self) -> Result<(), WsClosed> {
        match self.shared.closed() {
            Some(close) => Err(WsClosed(close)),
            None => Ok(()),
        }
    }

    /// Queues a datagram for the client (the oldest is dropped when full).
    pub fn send_datagram(&self, datagram: Bytes) -> Result<(), WsClosed> {
        self.send_datagram_displacing(datagram).map(drop)
    }

    /// [`WsSession::send_datagram`], saying whether the datagram displaced
    /// the oldest queued one.
    pub fn send_datagram_displacing(&self, datagram: Bytes) -> Result<bool, WsClosed> {
        self.check_open()?;
        Ok(self.shared.datagrams_out.push(datagram))
    }

    /// The next datagram from the client.
    pub async fn read_datagram(&self) -> Result<Bytes, WsClosed> {
        let mut close = self.shared.close.subscribe();
        tokio::select! {
            datagram = self.shared.datagrams_in.pop_wait() => Ok(datagram),
            () = wait_closed(&mut close) => Err(WsClosed(
                self.shared.closed().unwrap_or(WsClose::Lost("closed".into())),
            )),
        }
    }

    /// The control stream: the client's first bidirectional stream, which
    /// exists from the start. `None` after the first call.
    pub fn accept_control(&self) -> Option<(WsSendStream, WsRecvStream)> {
        let rx = self
            .control_in
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        Some((
            WsSendStream {
                target: StreamTarget::Control,
                tx: self.reliable.clone(),
                shared: Arc::clone(&self.shared),
            },
            WsRecvStream { rx },
        ))
    }

    /// Opens a unidirectional stream to the client.
    pub fn open_uni(&self) -> Result<WsSendStream, WsClosed> {
        self.check_open()?;
        let id = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        Ok(WsSendStream {
            target: StreamTarget::Stream(id),
            tx: self.reliable.clone(),
            shared: Arc::clone(&self.shared),
        })
    }

    /// The next unidirectional stream the client opened.
    pub async fn accept_uni(&self) -> Result<WsRecvStream, WsClosed> {
        let mut incoming = self.incoming.lock().await;
        match incoming.recv().await {
            Some(stream) => Ok(stream),
            None => Err(WsClosed(
                self.shared
                    .closed()
                    .unwrap_or(WsClose::Lost("closed".into())),
            )),
        }
    }

    /// Closes with an application code (0 = normal) and reason: sends
    /// CLOSE, then closes the WebSocket.
    pub fn close(&self, code: u32, reason: &[u8]) {
        let reason = String::from_utf8_lossy(&reason[..reason.len().min(MAX_REASON)]).into_owned();
        self.shared.set_close(WsClose::Local { code, reason });
    }

    /// Waits until the session is over and says how.
    pub async fn closed(&self) -> WsClose {
        let mut close = self.shared.close.subscribe();
        match close.wait_for(Option::is_some).await {
            Ok(close) => close.clone().unwrap_or(WsClose::Lost("closed".into())),
            Err(_) => WsClose::Lost("closed".into()),
        }
    }

    /// How the session ended, if it has.
    pub fn close_reason(&self) -> Option<WsClose> {
        self.shared.closed()
    }
}

#[derive(Clone, Copy, Debug)]
enum StreamTarget {
    Control,
    Stream(u64),
}

/// The sending half of the control stream or of a unidirectional stream.
#[derive(Debug)]
pub struct WsSendStream {
    target: StreamTarget,
    tx: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
}

impl WsSendStream {
    fn closed_error(&self) -> WsClosed {
        WsClosed(
            self.shared
                .closed()
                .unwrap_or(WsClose::Lost("closed".into())),
        )
    }

    /// Sends `data` (in chunks of at most [`WS_CHUNK`]); waits while the
    /// session's reliable queue is full.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), WsClosed> {
        for chunk in data.chunks(WS_CHUNK) {
            let chunk = Bytes::copy_from_slice(chunk);
            let message = match self.target {
                StreamTarget::Control => Outgoing::Control(chunk),
                StreamTarget::Stream(id) => Outgoing::Stream(id, chunk),
            };
            if self.shared.closed().is_some() || self.tx.send(message).await.is_err() {
                return Err(self.closed_error());
            }
        }
        Ok(())
    }

    /// Finishes a unidirectional stream (the control stream is never
    /// finished while the session is up; this is a no-op for it).
    pub async fn finish(&mut self) -> Result<(), WsClosed> {
        if let StreamTarget::Stream(id) = self.target
            && self.tx.send(Outgoing::Fin(id)).await.is_err()
        {
            return Err(self.closed_error());
        }
        Ok(())
    }
}

/// The receiving half of the control stream or of a unidirectional stream.
#[derive(Debug)]
pub struct WsRecvStream {
    rx: mpsc::Receiver<Bytes>,
}

impl WsRecvStream {
    /// The next bytes; `None` once the stream is finished or the session is
    /// gone.
    pub async fn read_chunk(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    /// Polls for the next bytes, as [`Self::read_chunk`].
    pub fn poll_chunk(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Bytes>> {
        self.rx.poll_recv(cx)
    }
}

/// Accepts fallback sessions: TLS, then the WebSocket handshake (path
/// [`WS_PATH`], subprotocol [`WS_SUBPROTOCOL`]).
#[derive(Clone)]
pub struct WsAcceptor {
    tls: TlsAcceptor,
    config: WsConfig,
}

impl std::fmt::Debug for WsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsAcceptor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WsAcceptor {
    /// An acceptor with the node's TLS config (its ALPN list should offer
    /// `http/1.1`).
    pub fn new(tls: Arc<rustls::ServerConfig>, config: WsConfig) -> Self {
        Self {
            tls: TlsAcceptor::from(tls),
            config,
        }
    }

    /// Runs both handshakes on `tcp` and starts the session.
    pub async fn accept(&self, tcp: TcpStream, remote: SocketAddr) -> Result<WsSession, WsError> {
        let timeout = self.config.handshake_timeout;
        let handshake = async {
            let tls = self.tls.accept(tcp).await.map_err(WsError::Tls)?;
            let ws_config = WebSocketConfig::default()
                .max_message_size(Some(WS_MAX_MESSAGE))
                .max_frame_size(Some(WS_MAX_MESSAGE));
            let ws = tokio_tungstenite::accept_hdr_async_with_config(
                tls,
                check_request,
                Some(ws_config),
            )
            .await?;
            Ok::<_, WsError>(ws)
        };
        let ws = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| WsError::Timeout(timeout))??;
        Ok(start(ws, remote, &self.config))
    }
}

/// A TCP listener for the fallback.
#[derive(Debug)]
pub struct WsListener {
    tcp: TcpListener,
    acceptor: WsAcceptor,
}

impl WsListener {
    /// Listens on `addr`.
    pub async fn bind(addr: SocketAddr, acceptor: WsAcceptor) -> std::io::Result<Self> {
        Ok(Self {
            tcp: TcpListener::bind(addr).await?,
            acceptor,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The next TCP connection; finish it with [`WsAcceptor::accept`]
    /// (spawned, so one slow handshake does not hold up others).
    pub async fn accept_tcp(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        self.tcp.accept().await
    }

    /// The acceptor for the connections.
    pub fn acceptor(&self) -> &WsAcceptor {
        &self.acceptor
    }
}

#[allow(clippy::result_large_err)] // the signature tungstenite's callback requires
fn check_request(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let refuse = |status: StatusCode, why: &str| {
        let mut response = ErrorResponse::new(Some(why.to_owned()));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != WS_PATH {
        return Err(refuse(StatusCode::NOT_FOUND, "no such path"));
    }
    let offers = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim() == WS_SUBPROTOCOL);
    if !offers {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "subprotocol georelay-ws.1 required",
        ));
    }
    response.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(WS_SUBPROTOCOL),
    );
    Ok(response)
}

fn start<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    remote: SocketAddr,
    config: &WsConfig,
) -> WsSession
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (close, _) = watch::channel(None);
    let shared = Arc::new(Shared {
        datagrams_out: DatagramQueue::new(config.datagram_queue),
        datagrams_in: DatagramQueue::new(config.datagram_queue),
        close,
        next_stream: AtomicU64::new(0),
        rtt_us: AtomicU64::new(0),
    });
    let (reliable_tx, reliable_rx) = mpsc::channel(config.stream_queue);
    let (control_tx, control_rx) = mpsc::channel(config.stream_queue);
    let (incoming_tx, incoming_rx) = mpsc::channel(WS_MAX_INCOMING_STREAMS);
    let (sink, stream) = ws.split();
    let pings = Arc::new(Mutex::new(HashMap::new()));
    tokio::spawn(write_loop(
        sink,
        Arc::clone(&shared),
        reliable_rx,
        config.ping_interval,
        Arc::clone(&pings),
    ));
    tokio::spawn(read_loop(
        stream,
        Arc::clone(&shared),
        Inbound {
            control: control_tx,
            incoming: incoming_tx,
            streams: HashMap::new(),
            next_new_stream: 0,
            stream_queue: config.stream_queue,
        },
        config.idle_timeout,
        pings,
    ));
    WsSession {
        shared,
        remote,
        reliable: reliable_tx,
        control_in: Mutex::new(Some(control_rx)),
        incoming: tokio::sync::Mutex::new(incoming_rx),
    }
}

/// Resolves once the session has a close reason.
async fn wait_closed(close: &mut watch::Receiver<Option<WsClose>>) {
    let _ = close.wait_for(Option::is_some).await;
}

fn encode_close(code: u32, reason: &str) -> Bytes {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[KIND_CLOSE]);
    varint::encode(u64::from(code), &mut buf);
    buf.extend_from_slice(&reason.as_bytes()[..reason.len().min(MAX_REASON)]);
    buf.freeze()
}

fn with_kind(kind: u8, stream: Option<u64>, data: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + 9);
    buf.extend_from_slice(&[kind]);
    if let Some(id) = stream {
        varint::encode(id, &mut buf);
    }
    buf.extend_from_slice(data);
    buf.freeze()
}

type PingTimes = Arc<Mutex<HashMap<u64, tokio::time::Instant>>>;

async fn write_loop<S>(
    mut sink: futures_util::stream::SplitSink<tokio_tungstenite::WebSocketStream<S>, Message>,
    shared: Arc<Shared>,
    mut reliable: mpsc::Receiver<Outgoing>,
    ping_interval: Duration,
    pings: PingTimes,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut close = shared.close.subscribe();
    let mut ticker = tokio::time::interval(ping_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping_seq = 0u64;
    loop {
        let message = tokio::select! {
            biased;
            () = wait_closed(&mut close) => break,
            outgoing = reliable.recv() => match outgoing {
                Some(Outgoing::Control(bytes)) => with_kind(KIND_CONTROL, None, &bytes),
                Some(Outgoing::Stream(id, bytes)) => with_kind(KIND_STREAM, Some(id), &bytes),
                Some(Outgoing::Fin(id)) => with_kind(KIND_STREAM_FIN, Some(id), &[]),
                None => break,
            },
            datagram = shared.datagrams_out.pop_wait() => with_kind(KIND_DATAGRAM, None, &datagram),
            _ = ticker.tick() => {
                ping_seq += 1;
                {
                    let mut pending = pings.lock().unwrap_or_else(|e| e.into_inner());
                    pending.retain(|seq, _| seq + 8 > ping_seq);
                    pending.insert(ping_seq, crate::clock::timer_now());
                }
                if sink.send(Message::Ping(Bytes::copy_from_slice(&ping_seq.to_be_bytes()))).await.is_err() {
                    shared.set_close(WsClose::Lost("write failed".into()));
                    return;
                }
                continue;
            }
        };
        if sink.send(Message::Binary(message)).await.is_err() {
            shared.set_close(WsClose::Lost("write failed".into()));
            return;
        }
    }
    if let Some(WsClose::Local { code, reason }) = shared.closed() {
        let _ = sink
            .send(Message::Binary(encode_close(code, &reason)))
            .await;
    }
    let _ = sink.close().await;
}

/// What the reader feeds.
struct Inbound {
    control: mpsc::Sender<Bytes>,
    incoming: mpsc::Sender<WsRecvStream>,
    streams: HashMap<u64, mpsc::Sender<Bytes>>,
    /// One more than the highest stream id opened so far: ids are never
    /// reused.
    next_new_stream: u64,
    stream_queue: usize,
}

/// A peer error: the code to close with and why.
struct Violation(ErrorCode, &'static str);

impl Inbound {
    async fn handle(&mut self, shared: &Shared, message: Bytes) -> Result<bool, Violation> {
        let Some((&kind, rest)) = message.split_first() else {
            return Err(Violation(ErrorCode::ProtocolViolation, "empty message"));
        };
        let body = message.slice(1..);
        match kind {
            KIND_CONTROL => {
                // A closed receiver means the relay stopped reading: drop.
                let _ = self.control.send(body).await;
            }
            KIND_DATAGRAM => {
                shared.datagrams_in.push(body);
            }
            KIND_STREAM => {
                let (id, used) = stream_id(rest)?;
                let data = body.slice(used..);
                if !self.streams.contains_key(&id) {
                    if id < self.next_new_stream {
                        return Err(Violation(ErrorCode::ProtocolViolation, "stream id reused"));
                    }
                    self.next_new_stream = id + 1;
                    if self.streams.len() >= WS_MAX_INCOMING_STREAMS {
                        return Err(Violation(ErrorCode::LimitExceeded, "too many streams"));
                    }
                    let (tx, rx) = mpsc::channel(self.stream_queue);
                    let _ = self.incoming.send(WsRecvStream { rx }).await;
                    self.streams.insert(id, tx);
                }
                if let Some(stream) = self.streams.get(&id) {
                    let _ = stream.send(data).await;
                }
            }
            KIND_STREAM_FIN => {
                let (id, used) = stream_id(rest)?;
                if used != rest.len() {
                    return Err(Violation(
                        ErrorCode::ProtocolViolation,
                        "bytes after STREAM_FIN",
                    ));
                }
                self.streams.remove(&id);
            }
            KIND_CLOSE => {
                let mut cursor = rest;
                let code = varint::decode(&mut cursor)
                    .ok()
                    .and_then(|code| u32::try_from(code).ok())
                    .ok_or(Violation(ErrorCode::ProtocolViolation, "bad close code"))?;
                let reason = String::from_utf8_lossy(cursor).into_owned();
                shared.set_close(WsClose::Peer { code, reason });
                return Ok(false);
            }
            _ => {
                return Err(Violation(
                    ErrorCode::ProtocolViolation,
                    "unknown message kind",
                ));
            }
        }
        Ok(true)
    }
}

fn stream_id(rest: &[u8]) -> Result<(u64, usize), Violation> {
    let mut cursor = rest;
    let id = varint::decode(&mut cursor)
        .map_err(|_| Violation(ErrorCode::ProtocolViolation, "truncated stream id"))?;
    Ok((id, rest.len() - cursor.len()))
}

async fn read_loop<S>(
    mut stream: futures_util::stream::SplitStream<tokio_tungstenite::WebSocketStream<S>>,
    shared: Arc<Shared>,
    mut inbound: Inbound,
    idle_timeout: Duration,
    pings: PingTimes,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut close = shared.close.subscribe();
    loop {
        let next = tokio::select! {
            () = wait_closed(&mut close) => return,
            next = tokio::time::timeout(idle_timeout, stream.next()) => next,
        };
        let message = match next {
            Err(_) => {
                shared.set_close(WsClose::Lost(format!("idle for {idle_timeout:?}")));
                return;
            }
            Ok(None) => {
                shared.set_close(WsClose::Lost("WebSocket ended".into()));
                return;
            }
            Ok(Some(Err(TungsteniteError::Capacity(_)))) => {
                fail(
                    &shared,
                    Violation(ErrorCode::LimitExceeded, "message too large"),
                );
                return;
            }
            Ok(Some(Err(err))) => {
                shared.set_close(WsClose::Lost(err.to_string()));
                return;
            }
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Binary(bytes) => {
                // Handing bytes on may wait (backpressure); a close ends it.
                let handled = tokio::select! {
                    handled = inbound.handle(&shared, bytes) => handled,
                    () = wait_closed(&mut close) => return,
                };
                match handled {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(violation) => {
                        fail(&shared, violation);
                        return;
                    }
                }
            }
            Message::Text(_) => {
                fail(
                    &shared,
                    Violation(ErrorCode::ProtocolViolation, "text message"),
                );
                return;
            }
            Message::Pong(payload) => {
                let sent = <[u8; 8]>::try_from(payload.as_ref()).ok().and_then(|seq| {
                    pings
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&u64::from_be_bytes(seq))
                });
                if let Some(sent) = sent {
                    let rtt = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    shared.rtt_us.store(rtt.max(1), Ordering::Relaxed);
                }
            }
            Message::Close(_) => {
                shared.set_close(WsClose::Lost("WebSocket closed without CLOSE".into()));
                return;
            }
            Message::Ping(_) | Message::Frame(_) => {}
        }
    }
}

fn fail(shared: &Shared, Violation(code, why): Violation) {
    tracing::debug!(code = code.name(), why, "closing a WebSocket session");
    shared.set_close(WsClose::Local {
        code: u32::try_from(code.to_wire()).unwrap_or(u32::MAX),
        reason: why.to_owned(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_datagram_queue_drops_the_oldest_and_counts() {
        let queue = DatagramQueue::new(3);
        for n in 0u8..5 {
            queue.push(Bytes::from(vec![n]));
        }
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.dropped(), 2);
        let kept: Vec<u8> = std::iter::from_fn(|| queue.pop()).map(|b| b[0]).collect();
        assert_eq!(kept, [2, 3, 4]);
        assert!(queue.is_empty());
    }

    #[test]
    fn close_messages_carry_the_code_and_a_bounded_reason() {
        assert_eq!(&encode_close(6, "bad frame")[..], b"\x04\x06bad frame");
        assert_eq!(encode_close(0, &"x".repeat(2000)).len(), 2 + MAX_REASON);
        assert_eq!(
            &with_kind(KIND_STREAM, Some(300), b"hi")[..],
            b"\x02\x41\x2chi"
        );
    }
}
