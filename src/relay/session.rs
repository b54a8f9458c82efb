//! One SDK client connection (`georelay/1`), on any [`SessionTransport`]:
//! hello and admission, then the control loop (announce, subscribe), the
//! media datagram reader and the message stream readers. Every refusal is an
//! `ERROR` frame followed by an application close with the same code, never
//! a hang.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::admin::metric_names as m;
use crate::config::Limits;
use crate::error::ErrorCode;
use crate::ids::AppId;
use crate::metadata::{EventKind, GeofenceDecision, SessionRole};
use crate::wire::stream::{FrameReader, Outbound, StreamError, run_control_writer};
use crate::wire::{AnnounceOk, ErrorFrame, Frame, MessageDecoder, Welcome};

use super::admission::{AdmissionRequest, Refusal, admit, targets_to_wire};
use super::core::SessionEntry;
use super::fanout::{AppCounters, DatagramQueue, DropReason, MessageQueue};
use super::hub::{CONTROL_QUEUE, Hub};
use super::quality::JitterMeter;
use super::routes::{Forwarded, Receiver, Sender};
use super::transport::{QueuedControl, SessionTransport};
use super::writers::run_message_writer;

/// What a connection holds between its handshake and `HELLO`: a permit of
/// the accept gate's `max_pending_hello` (released when `HELLO` arrives)
/// and the one deadline (`hello_timeout_ms` after the node accepted the
/// connection, handshake included) for opening the control stream and
/// sending `HELLO`.
#[derive(Debug)]
pub struct AwaitingHello {
    /// When the connection is closed (`PROTOCOL_VIOLATION`) without `HELLO`.
    pub deadline: tokio::time::Instant,
    /// The gate's permit.
    pub permit: crate::gate::HelloPermit,
}

/// How many `ANNOUNCE`s one session may send in its life (each client-local
/// track id is remembered to refuse repeats).
const MAX_ANNOUNCES: usize = 4096;

/// How many reliable messages may wait for one subscriber.
const MESSAGE_QUEUE: usize = 1024;

/// Serves one client connection, on any transport, until it closes.
pub async fn run_client<T: SessionTransport + std::fmt::Debug>(
    hub: Arc<Hub>,
    conn: T,
    limits: Limits,
    awaiting: AwaitingHello,
) {
    let conn_id = conn.stable_id();
    let span = tracing::info_span!("conn", id = conn_id, app = tracing::field::Empty, region = %hub.region());
    async move {
        let AwaitingHello { deadline, permit } = awaiting;
        let client_ip = conn.remote_address().ip();
        let control_stream = tokio::time::timeout_at(deadline, conn.accept_control()).await;
        let Ok(Ok((send, recv))) = control_stream else {
            if control_stream.is_err() {
                permit.expired(client_ip);
            }
            conn.close(code(ErrorCode::ProtocolViolation), b"no control stream");
            return;
        };
        let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let closed_with = Arc::new(std::sync::OnceLock::new());
        tokio::spawn(run_control_writer(
            send,
            control_rx,
            conn.clone(),
            Arc::clone(&closed_with),
        ));
        let mut reader = FrameReader::new(recv);
        let hello = match tokio::time::timeout_at(deadline, reader.next()).await {
            Ok(Ok(Some(Frame::Hello(hello)))) => hello,
            Err(_deadline) => {
                permit.expired(client_ip);
                let refusal = Refusal::plain(
                    ErrorCode::ProtocolViolation,
                    "no HELLO within the HELLO deadline",
                );
                refuse(&hub, &control, None, refusal);
                return;
            }
            Ok(Err(err)) => {
                refuse(
                    &hub,
                    &control,
                    None,
                    Refusal::plain(err.code(), err.to_string()),
                );
                return;
            }
            _ => {
                let refusal = Refusal::plain(
                    ErrorCode::ProtocolViolation,
                    "the first frame must be HELLO",
                );
                refuse(&hub, &control, None, refusal);
                return;
            }
        };
        drop(permit);
        tracing::Span::current().record("app", hello.app.as_str());
        let policy = hub.policy();
        let request = AdmissionRequest {
            version: hello.version,
            app: &hello.app,
            channel: &hello.channel,
            token: &hello.token,
            client_ip: conn.remote_address().ip().to_canonical(),
        };
        let admitted = match admit(&policy, hub.me(), &request, hub.clock().now_unix_secs()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                let app = policy.fleet.app(&hello.app).map(|a| a.id.clone());
                refuse(&hub, &control, app, refusal);
                return;
            }
        };
        let app = admitted.claims.app.clone();

        let Some(max_datagram) = conn.max_datagram_size() else {
            let refusal = Refusal::plain(
                ErrorCode::ProtocolViolation,
                "QUIC DATAGRAM support (RFC 9221) is required",
            );
            refuse(&hub, &control, Some(app), refusal);
            return;
        };
        let datagrams = Arc::new(DatagramQueue::direct(
            Box::new(conn.clone()),
            Arc::clone(&hub.drops),
        ));
        let (messages, messages_rx) = MessageQueue::new(MESSAGE_QUEUE, Arc::clone(&hub.drops));
        let traffic = Arc::new(AppCounters::default());
        let can_publish = admitted.claims.role == crate::auth::Role::Publish;
        let entry = SessionEntry {
            app: app.clone(),
            channel: admitted.claims.channel.clone(),
            user: admitted.claims.user.clone(),
            can_publish,
            client_region: admitted.client_region.clone(),
            client_country: admitted.country,
            control: Arc::new(QueuedControl::new(control.clone(), conn.clone())),
            receiver: Receiver {
                datagrams: Arc::clone(&datagrams),
                messages,
            },
        };
        let session = match hub.add_session(entry, limits.max_sessions) {
            Ok(session) => session,
            Err(refusal) => {
                refuse(&hub, &control, Some(app), refusal);
                return;
            }
        };
        hub.decide(&app, Some(session), GeofenceDecision::Admitted);
        let role = match admitted.claims.role {
            crate::auth::Role::Publish => SessionRole::Publish,
            crate::auth::Role::Subscribe => SessionRole::Subscribe,
        };
        hub.record(
            Some(app.clone()),
            EventKind::SessionOpened {
                session_id: session,
                user: admitted.claims.user.clone(),
                channel: admitted.claims.channel.clone(),
                role,
                client_country: admitted.country,
                client_region: admitted.client_region.clone(),
                client_ip: crate::metadata::minimise(
                    request.client_ip,
                    policy.fleet.metadata.ip_mode,
                ),
                sdk: crate::metadata::SdkInfo {
                    name: hello.sdk.name.clone(),
                    version: hello.sdk.version.clone(),
                    device: hello.sdk.device.clone(),
                    os: hello.sdk.os.clone(),
                    network: hello.sdk.network.clone(),
                },
            },
        );
        let opened = crate::clock::timer_now();
        tokio::spawn(run_message_writer(
            messages_rx,
            conn.clone(),
            Arc::clone(&traffic),
        ));
        let max_payload =
            crate::wire::max_media_payload(max_datagram).min(limits.max_datagram_payload_bytes);
        let welcome = Frame::Welcome(Welcome {
            session_id: session,
            node: hub.me().to_string(),
            region: hub.region().to_string(),
            max_datagram_payload: max_payload as u64,
            max_message_bytes: limits.max_message_bytes as u64,
        });
        let _ = control.try_send(Outbound::Frame(welcome));
        tracing::debug!(session, "session admitted");

        let jitter: SharedJitter = Arc::default();
        let inbound = Inbound {
            hub: Arc::clone(&hub),
            session,
            can_publish,
            traffic: Arc::clone(&traffic),
        };
        let datagram_task = tokio::spawn(read_datagrams(
            inbound.clone(),
            conn.clone(),
            max_payload,
            Arc::clone(&jitter),
        ));
        let streams_task = tokio::spawn(read_message_streams(
            inbound,
            conn.clone(),
            limits.max_message_bytes,
        ));
        let quality_every = Duration::from_secs(policy.fleet.metadata.quality_interval_secs.max(1));
        let meters = Meters {
            traffic: Arc::clone(&traffic),
            datagrams: Arc::clone(&datagrams),
            jitter: Arc::clone(&jitter),
        };
        let sampler = tokio::spawn(sample_quality(
            Arc::clone(&hub),
            conn.clone(),
            app.clone(),
            session,
            meters,
            quality_every,
        ));
        let mut close_code = None;
        let mut announced = HashSet::new();
        loop {
            let frame = tokio::select! {
                frame = reader.next() => frame,
                extra = conn.accept_control() => {
                    if extra.is_ok() {
                        close_code = Some(ErrorCode::ProtocolViolation);
                        close(
                            &control,
                            ErrorFrame::new(
                                ErrorCode::ProtocolViolation,
                                "a client opens exactly one bidirectional stream",
                            ),
                        );
                    }
                    break;
                }
                _ = conn.closed() => break,
            };
            let ended = match frame {
                Ok(Some(frame)) => Ok(frame),
                Ok(None) => Err("the control stream ended without GOODBYE".to_string()),
                // The connection is gone (the client closed or vanished):
                // nothing to answer.
                Err(StreamError::Read(_)) if conn.close_reason().is_some() => break,
                Err(StreamError::Read(err)) => Err(format!("the control stream failed: {err}")),
                Err(err) => {
                    close_code = Some(err.code());
                    close(&control, ErrorFrame::new(err.code(), err.to_string()));
                    break;
                }
            };
            let frame = match ended {
                Ok(frame) => frame,
                Err(reason) => {
                    close_code = Some(ErrorCode::ProtocolViolation);
                    close(
                        &control,
                        ErrorFrame::new(ErrorCode::ProtocolViolation, reason),
                    );
                    break;
                }
            };
            if let Frame::Announce(announce) = &frame {
                if announced.len() >= MAX_ANNOUNCES {
                    let reason = format!("at most {MAX_ANNOUNCES} announcements per session");
                    close_code = Some(ErrorCode::LimitExceeded);
                    close(&control, ErrorFrame::new(ErrorCode::LimitExceeded, reason));
                    break;
                }
                if !announced.insert(announce.track_id) {
                    let reason = format!(
                        "track_id {} is already announced in this session",
                        announce.track_id
                    );
                    close_code = Some(ErrorCode::ProtocolViolation);
                    close(
                        &control,
                        ErrorFrame::new(ErrorCode::ProtocolViolation, reason),
                    );
                    break;
                }
            }
            if let Frame::Unannounce { track } = &frame {
                let mut meter = jitter.lock().unwrap_or_else(|e| e.into_inner());
                meter.forget(*track);
            }
            match handle_frame(
                &hub,
                session,
                frame,
                &control,
                limits.max_tracks_per_session,
            ) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Leave) => {
                    conn.close(0, b"goodbye");
                    break;
                }
                Err(refusal) => {
                    close_code = Some(refusal.code);
                    close(&control, refusal_frame(&refusal));
                    break;
                }
            }
        }
        datagram_task.abort();
        streams_task.abort();
        sampler.abort();
        if close_code.is_none() {
            close_code = closed_with.get().copied();
        }
        hub.remove_session(session);
        let totals = traffic.snapshot();
        let sent = datagrams.sent.snapshot();
        hub.record(
            Some(app),
            EventKind::SessionClosed {
                session_id: session,
                duration_ms: opened.elapsed().as_millis() as u64,
                bytes_in: totals.bytes_in,
                bytes_out: sent.bytes_out + totals.bytes_out,
                packets_in: totals.packets_in,
                packets_out: sent.packets_out + totals.packets_out,
                close_code,
            },
        );
        tracing::debug!(session, "session ended");
    }
    .instrument(span)
    .await
}

/// What the control loop does after a frame.
enum Flow {
    /// Keep serving.
    Continue,
    /// The client said `GOODBYE`: close normally (code 0).
    Leave,
}

/// Applies one control frame; an `Err` ends the session with that refusal.
fn handle_frame(
    hub: &Hub,
    session: u64,
    frame: Frame,
    control: &mpsc::Sender<Outbound>,
    max_tracks: usize,
) -> Result<Flow, Refusal> {
    match frame {
        Frame::Announce(announce) => {
            let track = hub.announce(session, &announce, max_tracks)?;
            let ok = Frame::AnnounceOk(AnnounceOk {
                track_id: announce.track_id,
                track,
            });
            let _ = control.try_send(Outbound::Frame(ok));
        }
        Frame::Unannounce { track } => hub.unannounce(session, track)?,
        Frame::Subscribe => hub.subscribe(session)?,
        Frame::Unsubscribe => hub.unsubscribe(session)?,
        Frame::Goodbye => return Ok(Flow::Leave),
        other => {
            return Err(Refusal::plain(
                ErrorCode::ProtocolViolation,
                format!("a client may not send {}", other.name()),
            ));
        }
    }
    Ok(Flow::Continue)
}

/// A session's jitter estimator, fed per packet, read per quality sample.
type SharedJitter = Arc<Mutex<JitterMeter>>;

/// What a session's inbound readers share.
#[derive(Clone)]
struct Inbound {
    hub: Arc<Hub>,
    session: u64,
    /// Whether the token's role is `publish`: media from any other session
    /// ends it with `UNAUTHORIZED` (PROTOCOL.md, Publishing).
    can_publish: bool,
    traffic: Arc<AppCounters>,
}

impl Inbound {
    /// Closes a subscribe-only session that sent media, with `what` it sent.
    fn refuse_media<T: SessionTransport>(&self, conn: &T, what: &str) {
        let reason = format!("a subscribe token may not send {what}");
        conn.close(code(ErrorCode::Unauthorized), reason.as_bytes());
    }
}

/// Reads the client's media datagrams: each is parsed once, checked against
/// the payload limit advertised in `WELCOME` (larger ones are dropped and
/// counted as `too_large`), measured for jitter, and handed to the hub.
async fn read_datagrams<T: SessionTransport>(
    inbound: Inbound,
    conn: T,
    max_payload: usize,
    jitter: SharedJitter,
) {
    let Inbound {
        hub,
        session,
        traffic,
        ..
    } = &inbound;
    let started = crate::clock::timer_now();
    while let Ok(datagram) = conn.read_datagram().await {
        if !inbound.can_publish {
            inbound.refuse_media(&conn, "datagrams");
            return;
        }
        traffic.count_in(datagram.len());
        let Ok((header, header_len)) = crate::wire::MediaHeader::parse(&datagram) else {
            hub.drops.count(DropReason::Malformed);
            continue;
        };
        if datagram.len() - header_len > max_payload {
            hub.drops.count(DropReason::TooLarge);
            continue;
        }
        let arrival_us = started.elapsed().as_micros() as u64;
        // Only tracks the session owns are measured: a client cannot grow
        // the estimator with made-up track keys.
        if hub
            .routes()
            .client_datagram(*session, header.track, datagram)
            == Forwarded::Yes
        {
            let mut meter = jitter.lock().unwrap_or_else(|e| e.into_inner());
            meter.observe(header.track, header.timestamp_us, arrival_us);
        }
    }
}

async fn read_message_streams<T: SessionTransport>(inbound: Inbound, conn: T, max_len: usize) {
    while let Ok(recv) = conn.accept_uni().await {
        if !inbound.can_publish {
            inbound.refuse_media(&conn, "message streams");
            return;
        }
        let (hub, traffic, session) = (
            Arc::clone(&inbound.hub),
            Arc::clone(&inbound.traffic),
            inbound.session,
        );
        tokio::spawn(read_messages(
            recv,
            conn.clone(),
            max_len,
            move |track, payload| {
                traffic.count_in(payload.len());
                hub.routes()
                    .message(Sender::Session(session), track, payload);
            },
        ));
    }
}

/// Records a quality sample of the session every `every`: loss from QUIC's
/// path statistics, bitrates from the session's counters, RTT, and drops.
/// What a session measures about itself, read by its quality sampler.
struct Meters {
    /// Bytes and packets from the client (in) and in messages to it (out).
    traffic: Arc<AppCounters>,
    /// The datagram queue to the client: what was sent, what was dropped.
    datagrams: Arc<DatagramQueue>,
    /// Interarrival jitter of the client's media.
    jitter: SharedJitter,
}

async fn sample_quality<T: SessionTransport>(
    hub: Arc<Hub>,
    conn: T,
    app: AppId,
    session: u64,
    meters: Meters,
    every: Duration,
) {
    let Meters {
        traffic,
        datagrams,
        jitter,
    } = meters;
    let mut interval = tokio::time::interval(every);
    interval.tick().await;
    let mut last_in = traffic.snapshot();
    let mut last_out = datagrams.sent.snapshot();
    let mut last_path = conn.path();
    let mut last_drops: Vec<u64> = DropReason::ALL
        .iter()
        .map(|r| datagrams.drops.get(*r))
        .collect();
    loop {
        interval.tick().await;
        let now_in = traffic.snapshot();
        let now_out = datagrams.sent.snapshot();
        let path = conn.path();
        let sent = path.sent_packets.saturating_sub(last_path.sent_packets);
        let lost = path.lost_packets.saturating_sub(last_path.lost_packets);
        let seconds = every.as_secs_f64();
        let drops = DropReason::ALL
            .iter()
            .zip(&mut last_drops)
            .filter_map(|(reason, last)| {
                let now = datagrams.drops.get(*reason);
                let delta = now - *last;
                *last = now;
                (delta > 0).then(|| (reason.label().to_string(), delta))
            })
            .collect();
        hub.record(
            Some(app.clone()),
            EventKind::QualitySample {
                session_id: session,
                loss_ratio: if sent == 0 {
                    0.0
                } else {
                    lost as f64 / sent as f64
                },
                bitrate_in_bps: ((now_in.bytes_in - last_in.bytes_in) as f64 * 8.0 / seconds)
                    as u64,
                bitrate_out_bps: ((now_out.bytes_out - last_out.bytes_out) as f64 * 8.0 / seconds)
                    as u64,
                rtt_ms: path.rtt.as_secs_f64() * 1000.0,
                jitter_ms: jitter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .jitter_us()
                    .map(|us| us / 1000.0),
                drops,
            },
        );
        last_in = now_in;
        last_out = now_out;
        last_path = path;
    }
}

/// Reads one message stream and hands each message to `deliver`.
pub async fn read_messages<T: SessionTransport>(
    mut recv: T::RecvStream,
    conn: T,
    max_len: usize,
    deliver: impl Fn(u64, &[u8]),
) {
    let mut decoder = MessageDecoder::new(max_len);
    let mut chunk = bytes::BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => deliver(message.track, &message.payload),
                Ok(None) => break,
                Err(err) => {
                    // An oversize or malformed message ends the connection
                    // (LIMIT_EXCEEDED or PROTOCOL_VIOLATION), as the spec says.
                    conn.close(code(err.code()), err.to_string().as_bytes());
                    return;
                }
            }
        }
        chunk.clear();
        match recv.read_buf(&mut chunk).await {
            Ok(n) if n > 0 => decoder.push(&chunk),
            _ => return,
        }
    }
}

fn refusal_frame(refusal: &Refusal) -> ErrorFrame {
    let mut frame = ErrorFrame::new(refusal.code, refusal.message.clone());
    frame.redirect = targets_to_wire(&refusal.redirect);
    frame
}

fn close(control: &mpsc::Sender<Outbound>, frame: ErrorFrame) {
    let _ = control.try_send(Outbound::Close(frame));
}

/// Counts and records a refusal, then closes with it.
fn refuse(
    hub: &Hub,
    control: &mpsc::Sender<Outbound>,
    app: Option<crate::ids::AppId>,
    refusal: Refusal,
) {
    metrics::counter!(m::REFUSALS_TOTAL, m::LABEL_NODE => hub.me().to_string(), m::LABEL_CODE => refusal.code.name()).increment(1);
    if let Some(app) = app {
        let decision = match refusal.code {
            ErrorCode::GeofenceRedirect => GeofenceDecision::Redirected {
                to: refusal.redirect.iter().map(|(n, _)| n.clone()).collect(),
            },
            code => GeofenceDecision::Denied {
                code,
                reason: refusal.message.clone(),
            },
        };
        hub.decide(&app, None, decision);
    }
    tracing::debug!(code = refusal.code.name(), reason = %refusal.message, "session refused");
    close(control, refusal_frame(&refusal));
}

fn code(code: ErrorCode) -> u32 {
    u32::try_from(code.to_wire()).unwrap_or(0)
}
