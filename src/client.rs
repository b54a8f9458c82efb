//! The Rust SDK: connect to a relay (following redirects like any SDK must),
//! publish tracks, send media datagrams and reliable messages, subscribe, and
//! receive everything as a [`Stream`] of typed [`Event`]s.
//!
//! ```no_run
//! # async fn demo(options: georelay::client::ClientOptions, targets: Vec<georelay::client::Target>, join: georelay::client::Join) -> Result<(), georelay::client::ClientError> {
//! use futures_util::StreamExt;
//! let mut client = georelay::client::Client::connect(&options, &targets, &join).await?;
//! let track = client.announce(georelay::wire::TrackKind::Audio, false, "mic").await?;
//! client.send_media(track, 0, 0, b"opus frame")?;
//! client.subscribe().await?;
//! while let Some(event) = client.events().next().await { /* ... */ }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use rustls::RootCertStore;
use tokio::sync::{mpsc, oneshot};

use crate::error::ErrorCode;
use crate::wire::stream::{CLOSE_GRACE, FrameReader};
use crate::wire::{
    Announce, ErrorFrame, Frame, Hello, MediaHeader, MessageDecoder, PROTOCOL_VERSION, SdkInfo,
    SubscriptionState, TrackInfo, TrackKind, Welcome,
};

/// How many events may wait for the application before media is dropped.
const EVENT_QUEUE: usize = 65_536;
/// The largest UDP payload a client endpoint accepts (and advertises in its
/// `max_udp_payload_size` transport parameter): quinn's path MTU discovery
/// never goes above 1,452 bytes by default, and the endpoint sizes its
/// receive buffer from this figure (× 32 datagrams × GRO segments), which at
/// quinn's default of 65,527 bytes costs each client's socket 128 MiB of
/// address space and grows its resident memory as batches land in it.
pub const CLIENT_MAX_UDP_PAYLOAD: u16 = 1_472;

/// A node to connect to: its id (the TLS server name) and address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The node id, which its certificate names.
    pub node: String,
    /// Its QUIC address.
    pub addr: SocketAddr,
}

/// What the client asks to join.
#[derive(Clone, Debug)]
pub struct Join {
    /// The app.
    pub app: String,
    /// The channel.
    pub channel: String,
    /// A token for that app and channel.
    pub token: String,
}

/// How the client connects.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Certificates the relays' chains must lead to.
    pub roots: Arc<RootCertStore>,
    /// Local address to bind (so a test can appear to come from a country).
    pub bind: IpAddr,
    /// Operation data sent in `HELLO`.
    pub sdk: SdkInfo,
    /// How many redirects to follow before giving up.
    pub max_redirects: usize,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// A client endpoint (one UDP socket) to open the connection on, shared
    /// with other clients, e.g. many idle sessions of a load test (see
    /// [`bind_client_endpoint`]); `None`: the client binds its own at
    /// `bind`, as an SDK on a device does.
    pub endpoint: Option<quinn::Endpoint>,
}

impl ClientOptions {
    /// Defaults: bind 127.0.0.1, follow 3 redirects, 5 s per attempt.
    pub fn new(roots: Arc<RootCertStore>) -> Self {
        Self {
            roots,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sdk: SdkInfo {
                name: "georelay-rust".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                device: "server".into(),
                os: std::env::consts::OS.into(),
                network: "loopback".into(),
            },
            max_redirects: 3,
            connect_timeout: Duration::from_secs(5),
            endpoint: None,
        }
    }
}

/// Why the SDK could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The relay refused with a stable code (and maybe alternatives).
    #[error("{code}: {message}")]
    Refused {
        /// The stable code.
        code: ErrorCode,
        /// The relay's reason.
        message: String,
        /// Where the relay suggested going instead.
        redirect: Vec<Target>,
    },
    /// No connection could be made to any target.
    #[error("could not connect: {0}")]
    Connect(String),
    /// A payload is larger than the relay accepts.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The connection is gone.
    #[error("connection lost: {0}")]
    Closed(String),
    /// The relay broke the protocol.
    #[error("protocol violation by the relay: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The stable code of a refusal, if this is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn refused(frame: ErrorFrame) -> Self {
        let redirect = frame
            .redirect
            .iter()
            .filter_map(|t| {
                Some(Target {
                    node: t.node.clone(),
                    addr: t.addr.parse().ok()?,
                })
            })
            .collect();
        ClientError::Refused {
            code: frame.error_code().unwrap_or(ErrorCode::InternalError),
            message: frame.message,
            redirect,
        }
    }
}

/// Something the relay told this client.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A track appeared in the channel.
    TrackAdded(TrackInfo),
    /// A track went away.
    TrackRemoved(u64),
    /// A media datagram.
    Media {
        /// The header.
        header: MediaHeader,
        /// The payload (after the header).
        payload: Bytes,
    },
    /// A reliable message.
    Message {
        /// The track.
        track: u64,
        /// The payload.
        payload: Bytes,
    },
    /// `SUBSCRIPTION_STATE`: `active` once the media path from the
    /// publishers' nodes is established (again for each new publisher's
    /// node, and after every recovery): media sent from then on arrives;
    /// `unavailable` (`ROUTE_UNAVAILABLE`) while no allowed path exists.
    State(SubscriptionState),
    /// A [`Session`] lost its node and is connected again, to `node`; its
    /// tracks were re-announced (with new keys) and its subscription restored.
    Reconnected {
        /// The node that admitted the new connection.
        node: String,
    },
    /// The relay closed the session.
    Closed {
        /// The code, if the relay sent one.
        code: Option<ErrorCode>,
        /// The reason.
        message: String,
        /// Where to go instead (redirect, revocation, drain).
        redirect: Vec<Target>,
    },
}

/// The stream of a client's events.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<u64, ClientError>>>>>;

/// A connected session. Dropping it closes the connection.
#[derive(Debug)]
pub struct Client {
    conn: quinn::Connection,
    /// Its own endpoint, closed with it; `None` on a shared one.
    endpoint: Option<quinn::Endpoint>,
    welcome: Welcome,
    control: mpsc::Sender<Frame>,
    events: Events,
    pending: Pending,
    next_track_id: AtomicU64,
    messages: tokio::sync::Mutex<Option<quinn::SendStream>>,
    redirects: usize,
    dropped_events: Arc<AtomicU64>,
}

impl Client {
    /// Connects to the first target that admits this client, following
    /// `GEOFENCE_REDIRECT` (and `SHUTTING_DOWN`/`GEOFENCE_REVOKED`)
    /// alternatives up to `options.max_redirects` times.
    pub async fn connect(
        options: &ClientOptions,
        targets: &[Target],
        join: &Join,
    ) -> Result<Client, ClientError> {
        crate::tls::install_default_provider();
        let transport = Arc::new(crate::tls::transport_config(
            crate::tls::TransportKind::Client,
        ));
        let config = crate::tls::client_config(Arc::clone(&options.roots), transport)
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (endpoint, own_endpoint) = match &options.endpoint {
            Some(shared) => (shared.clone(), false),
            None => {
                let own = bind_client_endpoint(options.bind)
                    .map_err(|e| ClientError::Connect(e.to_string()))?;
                (own.clone(), true)
            }
        };
        let mut queue: Vec<Target> = targets.to_vec();
        let mut redirects = 0;
        let mut last_error = ClientError::Connect("no target given".into());
        let mut index = 0;
        while index < queue.len() {
            let target = queue[index].clone();
            index += 1;
            match attempt(&endpoint, &config, options, &target, join).await {
                Ok((conn, welcome, send, reader)) => {
                    let endpoint = own_endpoint.then_some(endpoint);
                    return Ok(Client::start(
                        endpoint, conn, welcome, send, reader, redirects,
                    ));
                }
                Err(ClientError::Refused {
                    code,
                    message,
                    redirect,
                }) if matches!(
                    code,
                    ErrorCode::GeofenceRedirect
                        | ErrorCode::ShuttingDown
                        | ErrorCode::GeofenceRevoked
                ) && !redirect.is_empty()
                    && redirects < options.max_redirects =>
                {
                    redirects += 1;
                    // Try the suggested nodes next, in their order.
                    let rest: Vec<Target> = queue.drain(index..).collect();
                    queue.extend(redirect.iter().cloned());
                    queue.extend(rest);
                    last_error = ClientError::Refused {
                        code,
                        message,
                        redirect,
                    };
                }
                Err(err @ ClientError::Refused { .. }) => return Err(err),
                Err(err) => last_error = err,
            }
        }
        Err(last_error)
    }

    fn start(
        endpoint: Option<quinn::Endpoint>,
        conn: quinn::Connection,
        welcome: Welcome,
        send: quinn::SendStream,
        reader: FrameReader<quinn::RecvStream>,
        redirects: usize,
    ) -> Client {
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let (control, control_rx) = mpsc::channel(1024);
        let pending: Pending = Arc::default();
        let dropped_events = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_control(send, control_rx));
        tokio::spawn(read_control(
            reader,
            conn.clone(),
            event_tx.clone(),
            Arc::clone(&pending),
        ));
        tokio::spawn(read_datagrams(
            conn.clone(),
            event_tx.clone(),
            Arc::clone(&dropped_events),
        ));
        tokio::spawn(read_message_streams(
            conn.clone(),
            event_tx,
            welcome.max_message_bytes as usize,
        ));
        Client {
            conn,
            endpoint,
            welcome,
            control,
            events: Events { rx: event_rx },
            pending,
            next_track_id: AtomicU64::new(1),
            messages: tokio::sync::Mutex::new(None),
            redirects,
            dropped_events,
        }
    }

    /// The node that admitted this client.
    pub fn node(&self) -> &str {
        &self.welcome.node
    }

    /// That node's region.
    pub fn region(&self) -> &str {
        &self.welcome.region
    }

    /// The session id the relay assigned.
    pub fn session_id(&self) -> u64 {
        self.welcome.session_id
    }

    /// How many redirects were followed to get here.
    pub fn redirects(&self) -> usize {
        self.redirects
    }

    /// The largest media payload the relay accepts.
    pub fn max_media_payload(&self) -> usize {
        self.welcome.max_datagram_payload as usize
    }

    /// Events dropped because the application did not read them in time.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events.load(Ordering::Relaxed)
    }

    /// The event stream.
    pub fn events(&mut self) -> &mut Events {
        &mut self.events
    }

    async fn send_frame(&self, frame: Frame) -> Result<(), ClientError> {
        self.control
            .send(frame)
            .await
            .map_err(|_| ClientError::Closed("control stream closed".into()))
    }

    /// Announces a track; returns the relay-assigned key to send media with.
    pub async fn announce(
        &self,
        kind: TrackKind,
        e2ee: bool,
        name: &str,
    ) -> Result<u64, ClientError> {
        let track_id = self.next_track_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(track_id, tx);
        self.send_frame(Frame::Announce(Announce {
            track_id,
            kind,
            e2ee,
            name: name.to_string(),
        }))
        .await?;
        rx.await
            .map_err(|_| ClientError::Closed(self.close_reason()))?
    }

    /// Withdraws a track.
    pub async fn unannounce(&self, track: u64) -> Result<(), ClientError> {
        self.send_frame(Frame::Unannounce { track }).await
    }

    /// Subscribes to the channel's tracks, current and future.
    pub async fn subscribe(&self) -> Result<(), ClientError> {
        self.send_frame(Frame::Subscribe).await
    }

    /// Stops receiving the channel's media.
    pub async fn unsubscribe(&self) -> Result<(), ClientError> {
        self.send_frame(Frame::Unsubscribe).await
    }

    /// Sends one media datagram (dropped by QUIC rather than delayed when
    /// the path is congested).
    pub fn send_media(
        &self,
        track: u64,
        seq: u64,
        timestamp_us: u64,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        let max = self.max_media_payload();
        if payload.len() > max {
            return Err(ClientError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let header = MediaHeader {
            track,
            seq,
            timestamp_us,
        };
        let mut buf = BytesMut::with_capacity(MediaHeader::MAX_LEN + payload.len());
        header.encode(&mut buf);
        buf.extend_from_slice(payload);
        self.conn
            .send_datagram(buf.freeze())
            .map_err(|e| ClientError::Closed(e.to_string()))
    }

    /// Sends one reliable, ordered message on the track.
    pub async fn send_message(&self, track: u64, payload: &[u8]) -> Result<(), ClientError> {
        let max = self.welcome.max_message_bytes as usize;
        if payload.len() > max {
            return Err(ClientError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let mut stream = self.messages.lock().await;
        let mut buf = BytesMut::new();
        if stream.is_none() {
            let opened = self
                .conn
                .open_uni()
                .await
                .map_err(|e| ClientError::Closed(e.to_string()))?;
            crate::wire::encode_message_stream_header(&mut buf);
            *stream = Some(opened);
        }
        crate::wire::encode_message(track, payload, &mut buf);
        let Some(out) = stream.as_mut() else {
            return Err(ClientError::Closed("message stream".into()));
        };
        out.write_all(&buf)
            .await
            .map_err(|e| ClientError::Closed(e.to_string()))
    }

    /// Leaves cleanly: sends `GOODBYE`, lets the relay close the connection
    /// (at most [`CLOSE_GRACE`]), then closes and waits
    /// briefly for the close to reach the relay.
    pub async fn close(self) {
        if self.send_frame(Frame::Goodbye).await.is_ok() {
            let _ = tokio::time::timeout(CLOSE_GRACE, self.conn.closed()).await;
        }
        self.conn.close(0u32.into(), b"bye");
        if let Some(endpoint) = &self.endpoint {
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    fn close_reason(&self) -> String {
        self.conn
            .close_reason()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "closed".into())
    }
}

type Attempt = (
    quinn::Connection,
    Welcome,
    quinn::SendStream,
    FrameReader<quinn::RecvStream>,
);

async fn attempt(
    endpoint: &quinn::Endpoint,
    config: &quinn::ClientConfig,
    options: &ClientOptions,
    target: &Target,
    join: &Join,
) -> Result<Attempt, ClientError> {
    let connect = async {
        let connecting = endpoint
            .connect_with(config.clone(), target.addr, &target.node)
            .map_err(|e| ClientError::Connect(format!("{}: {e}", target.node)))?;
        let conn = connecting
            .await
            .map_err(|e| ClientError::Connect(format!("{}: {e}", target.node)))?;
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let mut buf = BytesMut::new();
        Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            app: join.app.clone(),
            channel: join.channel.clone(),
            token: join.token.clone(),
            sdk: options.sdk.clone(),
        })
        .encode(&mut buf);
        send.write_all(&buf)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let mut reader = FrameReader::new(recv);
        match reader.next().await {
            Ok(Some(Frame::Welcome(welcome))) => Ok((conn, welcome, send, reader)),
            Ok(Some(Frame::Error(error))) => {
                conn.close(0u32.into(), b"refused");
                Err(ClientError::refused(error))
            }
            Ok(Some(other)) => Err(ClientError::Protocol(format!(
                "expected WELCOME, got {}",
                other.name()
            ))),
            Ok(None) | Err(_) => Err(closed_error(&conn)),
        }
    };
    tokio::time::timeout(options.connect_timeout, connect)
        .await
        .map_err(|_| ClientError::Connect(format!("{}: timed out", target.node)))?
}

/// The refusal carried by a connection's application close, if any.
/// A client-only QUIC endpoint on its own UDP socket at `bind` (any port),
/// with a receive buffer sized for [`CLIENT_MAX_UDP_PAYLOAD`].
pub fn bind_client_endpoint(bind: IpAddr) -> std::io::Result<quinn::Endpoint> {
    let addr = SocketAddr::new(bind, 0);
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        // Dual-stack, as quinn's own client endpoints are.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(CLIENT_MAX_UDP_PAYLOAD)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    quinn::Endpoint::new(config, None, socket.into(), runtime)
}

fn closed_error(conn: &quinn::Connection) -> ClientError {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(close)) => {
            match ErrorCode::from_wire(close.error_code.into_inner()) {
                Some(code) => ClientError::Refused {
                    code,
                    message: String::from_utf8_lossy(&close.reason).into_owned(),
                    redirect: Vec::new(),
                },
                None => ClientError::Closed(format!("closed with code {}", close.error_code)),
            }
        }
        Some(other) => ClientError::Closed(other.to_string()),
        None => ClientError::Closed("control stream ended".into()),
    }
}

async fn write_control(mut send: quinn::SendStream, mut rx: mpsc::Receiver<Frame>) {
    let mut buf = BytesMut::new();
    while let Some(frame) = rx.recv().await {
        buf.clear();
        frame.encode(&mut buf);
        if send.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

async fn read_control(
    mut reader: FrameReader<quinn::RecvStream>,
    conn: quinn::Connection,
    events: mpsc::Sender<Event>,
    pending: Pending,
) {
    loop {
        let frame = match reader.next().await {
            Ok(Some(frame)) => frame,
            _ => break,
        };
        let event = match frame {
            Frame::AnnounceOk(ok) => {
                if let Some(tx) = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&ok.track_id)
                {
                    let _ = tx.send(Ok(ok.track));
                }
                continue;
            }
            Frame::TrackAdded(info) => Event::TrackAdded(info),
            Frame::TrackRemoved { track } => Event::TrackRemoved(track),
            Frame::SubscriptionState(state) => Event::State(state),
            Frame::Error(error) => {
                let err = ClientError::refused(error.clone());
                for (_, tx) in pending.lock().unwrap_or_else(|e| e.into_inner()).drain() {
                    let _ = tx.send(Err(ClientError::refused(error.clone())));
                }
                let (code, message, redirect) = match err {
                    ClientError::Refused {
                        code,
                        message,
                        redirect,
                    } => (Some(code), message, redirect),
                    other => (None, other.to_string(), Vec::new()),
                };
                let _ = events
                    .send(Event::Closed {
                        code,
                        message,
                        redirect,
                    })
                    .await;
                // The relay waits for us to close after reading its reason.
                conn.close(0u32.into(), b"closing after relay error");
                return;
            }
            other => {
                tracing::warn!(frame = other.name(), "unexpected frame from the relay");
                continue;
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
    let reason = closed_error(&conn);
    pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let _ = events
        .send(Event::Closed {
            code: reason.code(),
            message: reason.to_string(),
            redirect: Vec::new(),
        })
        .await;
}

/// Turns `conn`'s media datagrams into [`Event::Media`] on `events`,
/// counting in `dropped` those the full queue could not take.
pub(crate) async fn read_datagrams(
    conn: quinn::Connection,
    events: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
) {
    while let Ok(datagram) = conn.read_datagram().await {
        let Ok((header, len)) = MediaHeader::parse(&datagram) else {
            continue;
        };
        let event = Event::Media {
            header,
            payload: datagram.slice(len..),
        };
        if events.try_send(event).is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn read_message_streams(
    conn: quinn::Connection,
    events: mpsc::Sender<Event>,
    max_len: usize,
) {
    while let Ok(mut recv) = conn.accept_uni().await {
        let events = events.clone();
        tokio::spawn(async move {
            let mut decoder = MessageDecoder::new(max_len);
            while let Ok(Some(chunk)) = recv.read_chunk(64 * 1024, true).await {
                decoder.push(&chunk.bytes);
                while let Ok(Some(message)) = decoder.next_message() {
                    let event = Event::Message {
                        track: message.track,
                        payload: message.payload,
                    };
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// How many rounds over the targets a [`Session`] makes before giving up.
const RECONNECT_ROUNDS: usize = 10;
/// The pause between rounds.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// A publisher's track as a [`Session`] knows it across reconnections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrackHandle(usize);

#[derive(Debug)]
struct SessionTrack {
    kind: TrackKind,
    e2ee: bool,
    name: String,
    key: u64,
}

/// A [`Client`] that survives the loss of its node, as an SDK should: when
/// the connection closes (the node died, drained with `SHUTTING_DOWN`, or
/// the policy revoked it with `GEOFENCE_REVOKED`), it connects to the
/// suggested nodes or else to its other targets, re-announces its tracks and
/// restores its subscription. Refusals that another node would repeat
/// (`UNAUTHORIZED`, `GEOFENCE_DENIED`) end it.
#[derive(Debug)]
pub struct Session {
    options: ClientOptions,
    targets: Vec<Target>,
    join: Join,
    client: Client,
    tracks: Vec<SessionTrack>,
    subscribed: bool,
    reconnects: u64,
}

impl Session {
    /// Connects like [`Client::connect`]; `targets` are also the fallbacks
    /// for later reconnections.
    pub async fn connect(
        options: &ClientOptions,
        targets: &[Target],
        join: &Join,
    ) -> Result<Session, ClientError> {
        let client = Client::connect(options, targets, join).await?;
        Ok(Session {
            options: options.clone(),
            targets: targets.to_vec(),
            join: join.clone(),
            client,
            tracks: Vec::new(),
            subscribed: false,
            reconnects: 0,
        })
    }

    /// The current connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// How many times the session reconnected.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Announces a track that is re-announced after every reconnection.
    pub async fn announce(
        &mut self,
        kind: TrackKind,
        e2ee: bool,
        name: &str,
    ) -> Result<TrackHandle, ClientError> {
        let key = self.client.announce(kind, e2ee, name).await?;
        self.tracks.push(SessionTrack {
            kind,
            e2ee,
            name: name.to_string(),
            key,
        });
        Ok(TrackHandle(self.tracks.len() - 1))
    }

    /// The relay key the track has on the current connection.
    pub fn track_key(&self, track: TrackHandle) -> Option<u64> {
        self.tracks.get(track.0).map(|t| t.key)
    }

    /// Sends a media datagram on the track's current key.
    pub fn send_media(
        &self,
        track: TrackHandle,
        seq: u64,
        timestamp_us: u64,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        let key = self
            .track_key(track)
            .ok_or_else(|| ClientError::Protocol("unknown track handle".into()))?;
        self.client.send_media(key, seq, timestamp_us, payload)
    }

    /// Subscribes now and after every reconnection.
    pub async fn subscribe(&mut self) -> Result<(), ClientError> {
        self.subscribed = true;
        self.client.subscribe().await
    }

    /// Reconnects if the connection is gone; returns whether it did.
    pub async fn ensure_connected(&mut self) -> Result<bool, ClientError> {
        if !self.client.is_closed() {
            return Ok(false);
        }
        self.reconnect(Vec::new()).await?;
        Ok(true)
    }

    /// The next event; a lost connection is replaced transparently and
    /// reported as [`Event::Reconnected`].
    pub async fn next_event(&mut self) -> Option<Event> {
        use futures_util::StreamExt;
        let (code, message, redirect) = match self.client.events().next().await {
            Some(Event::Closed {
                code,
                message,
                redirect,
            }) => (code, message, redirect),
            Some(other) => return Some(other),
            None => (None, "connection lost".to_string(), Vec::new()),
        };
        let final_refusal = matches!(
            code,
            Some(ErrorCode::Unauthorized | ErrorCode::GeofenceDenied)
        );
        if !final_refusal && self.reconnect(redirect.clone()).await.is_ok() {
            return Some(Event::Reconnected {
                node: self.client.node().to_string(),
            });
        }
        Some(Event::Closed {
            code,
            message,
            redirect,
        })
    }

    /// Connects again: first to `preferred` (a relay's redirect targets),
    /// then to the session's targets other than the node it lost.
    pub async fn reconnect(&mut self, preferred: Vec<Target>) -> Result<(), ClientError> {
        let lost = self.client.node().to_string();
        let mut targets = preferred;
        targets.extend(self.targets.iter().filter(|t| t.node != lost).cloned());
        targets.extend(self.targets.iter().filter(|t| t.node == lost).cloned());
        let mut last = ClientError::Connect("no target".into());
        for _ in 0..RECONNECT_ROUNDS {
            match Client::connect(&self.options, &targets, &self.join).await {
                Ok(client) => {
                    self.client = client;
                    for track in &mut self.tracks {
                        track.key = self
                            .client
                            .announce(track.kind, track.e2ee, &track.name)
                            .await?;
                    }
                    if self.subscribed {
                        self.client.subscribe().await?;
                    }
                    self.reconnects += 1;
                    return Ok(());
                }
                Err(
                    err @ ClientError::Refused {
                        code: ErrorCode::Unauthorized | ErrorCode::GeofenceDenied,
                        ..
                    },
                ) => {
                    return Err(err);
                }
                Err(err) => last = err,
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
        Err(last)
    }
}
