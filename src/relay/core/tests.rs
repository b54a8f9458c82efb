use std::sync::Mutex;

use bytes::Bytes;

use super::*;
use crate::relay::fanout::{DatagramQueue, DropCounters, DropReason, MessageQueue, Queued};
use crate::relay::routes::Forwarded;
use crate::wire::{MediaHeader, SubscriptionStatus, TrackKind};

const FLEET: &str = r#"
[geoip.overrides]
"127.1.0.0/16" = "DE"
[regions.eu]
countries = ["DE", "FR"]
[regions.uk]
countries = ["GB"]
[nodes.fra]
region = "eu"
listen = "127.0.0.1:4433"
admin = "127.0.0.1:9090"
[nodes.lon]
region = "uk"
listen = "127.0.0.2:4433"
admin = "127.0.0.2:9090"
[[links]]
between = ["fra", "lon"]
rtt_ms = 10
"#;

fn policy(apps: &str) -> Arc<Policy> {
    let text = format!("{FLEET}{apps}");
    let fleet = crate::config::Fleet::parse(&text, std::path::Path::new("core-test.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Policy::from_fleet(fleet).expect("policy"))
}

const OPEN: &str = r#"
[apps.acme]
secret = "s"
allow_regions = ["eu", "uk"]
"#;

const EU_ONLY: &str = r#"
[apps.acme]
secret = "s"
allow_regions = ["eu"]
"#;

/// A connection stand-in that records what the core sends it.
#[derive(Debug)]
struct Recorder {
    id: usize,
    full: bool,
    frames: Mutex<Vec<Outbound>>,
    aborted: Mutex<Option<ErrorCode>>,
}

impl Recorder {
    fn new(id: usize) -> Arc<Self> {
        Arc::new(Self {
            id,
            full: false,
            frames: Mutex::default(),
            aborted: Mutex::default(),
        })
    }

    fn full(id: usize) -> Arc<Self> {
        Arc::new(Self {
            id,
            full: true,
            frames: Mutex::default(),
            aborted: Mutex::default(),
        })
    }

    fn take(&self) -> Vec<Outbound> {
        std::mem::take(&mut *self.frames.lock().unwrap())
    }

    fn frames(&self) -> Vec<Frame> {
        self.take()
            .into_iter()
            .filter_map(|o| match o {
                Outbound::Frame(f) => Some(f),
                Outbound::Close(_) => None,
            })
            .collect()
    }

    fn peer_msgs(&self) -> Vec<PeerMsg> {
        self.frames()
            .into_iter()
            .filter_map(PeerMsg::from_frame)
            .collect()
    }
}

impl Control for Recorder {
    fn send(&self, out: Outbound) -> bool {
        if self.full {
            return false;
        }
        self.frames.lock().unwrap().push(out);
        true
    }

    fn abort(&self, code: ErrorCode, _reason: &str) {
        *self.aborted.lock().unwrap() = Some(code);
    }

    fn connection_id(&self) -> usize {
        self.id
    }

    fn rtt(&self) -> Duration {
        Duration::from_millis(10)
    }
}

struct Client {
    id: u64,
    control: Arc<Recorder>,
    datagrams: Arc<DatagramQueue>,
    _messages: tokio::sync::mpsc::Receiver<Queued>,
}

impl Client {
    fn received(&self) -> usize {
        let mut n = 0;
        while self.datagrams.try_pop().is_some() {
            n += 1;
        }
        n
    }
}

struct Node {
    core: NodeCore,
    routes: Arc<RouteTable>,
    drops: Arc<DropCounters>,
    now: Instant,
    next_key: u64,
}

fn node(id: &str, apps: &str) -> Node {
    let drops = Arc::new(DropCounters::default());
    let routes = Arc::new(RouteTable::new(Arc::clone(&drops)));
    let now = crate::clock::monotonic_now();
    let core = NodeCore::new(
        NodeId::new(id),
        policy(apps),
        Arc::clone(&routes),
        Arc::default(),
        now,
        1_700_000_000_000,
    );
    Node {
        core,
        routes,
        drops,
        now,
        next_key: 100,
    }
}

fn receiver(drops: &Arc<DropCounters>) -> (Receiver, tokio::sync::mpsc::Receiver<Queued>) {
    let (messages, rx) = MessageQueue::new(8, Arc::clone(drops));
    (
        Receiver {
            datagrams: Arc::new(DatagramQueue::new(64, Arc::clone(drops))),
            messages,
        },
        rx,
    )
}

impl Node {
    fn entry(&self, publish: bool, country: Option<&str>) -> (SessionEntry, Client) {
        let control = Recorder::new(0);
        let (receiver, rx) = receiver(&self.drops);
        let entry = SessionEntry {
            app: AppId::new("acme"),
            channel: "room".into(),
            user: "u".into(),
            can_publish: publish,
            client_region: None,
            client_country: country.map(|c| CountryCode::parse(c).expect("country")),
            control: control.clone(),
            receiver: receiver.clone(),
        };
        let client = Client {
            id: 0,
            control,
            datagrams: receiver.datagrams,
            _messages: rx,
        };
        (entry, client)
    }

    fn join(&mut self, publish: bool) -> Client {
        let (entry, mut client) = self.entry(publish, Some("DE"));
        client.id = self.core.add_session(entry, 100).expect("admitted");
        client
    }

    fn announce(&mut self, client: &Client) -> Result<u64, Refusal> {
        self.next_key += 1;
        let key = self.next_key;
        let announce = Announce {
            track_id: key,
            kind: TrackKind::Audio,
            e2ee: false,
            name: "mic".into(),
        };
        self.core
            .announce(client.id, &announce, 8, || key, self.now)
    }

    fn send(&self, client: &Client, track: u64) -> Forwarded {
        self.routes
            .client_datagram(client.id, track, datagram(track))
    }

    fn link(&mut self, peer: &str, id: usize) -> (Arc<Recorder>, Receiver) {
        let control = Recorder::new(id);
        let (receiver, rx) = receiver(&self.drops);
        std::mem::forget(rx);
        self.core.peer_up(
            NodeId::new(peer),
            PeerEntry {
                control: control.clone(),
                receiver: receiver.clone(),
            },
            self.now,
        );
        (control, receiver)
    }
}

fn datagram(track: u64) -> Bytes {
    MediaHeader {
        track,
        seq: 1,
        timestamp_us: 1,
    }
    .datagram(b"x")
}

fn states(frames: &[Frame]) -> Vec<SubscriptionStatus> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::SubscriptionState(s) => Some(s.state),
            _ => None,
        })
        .collect()
}

fn added(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::TrackAdded(t) => Some(t.track),
            _ => None,
        })
        .collect()
}

fn closes(control: &Recorder) -> Vec<ErrorFrame> {
    control
        .take()
        .into_iter()
        .filter_map(|o| match o {
            Outbound::Close(e) => Some(e),
            Outbound::Frame(_) => None,
        })
        .collect()
}

#[test]
fn a_subscriber_hears_of_a_local_track_is_active_and_gets_its_media() {
    let mut fra = node("fra", EU_ONLY);
    let viewer = fra.join(false);
    fra.core.subscribe(viewer.id, fra.now).unwrap();
    let studio = fra.join(true);
    let track = fra.announce(&studio).unwrap();
    let frames = viewer.control.frames();
    assert_eq!(added(&frames), [track]);
    assert_eq!(states(&frames), [SubscriptionStatus::Active]);
    assert_eq!(fra.send(&studio, track), Forwarded::Yes);
    assert_eq!(viewer.received(), 1);
    assert_eq!(
        studio.received(),
        0,
        "a publisher does not get its own media"
    );
}

#[test]
fn a_late_joiner_is_told_the_tracks_already_there() {
    let mut fra = node("fra", OPEN);
    let studio = fra.join(true);
    let track = fra.announce(&studio).unwrap();
    let late = fra.join(false);
    fra.core.subscribe(late.id, fra.now).unwrap();
    assert_eq!(added(&late.control.frames()), [track]);
    fra.send(&studio, track);
    assert_eq!(late.received(), 1);
}

#[test]
fn a_subscribe_token_may_not_announce() {
    let mut fra = node("fra", OPEN);
    let viewer = fra.join(false);
    let refusal = fra.announce(&viewer).unwrap_err();
    assert_eq!(refusal.code, ErrorCode::Unauthorized);
}

#[test]
fn a_clashing_random_key_is_redrawn() {
    let mut fra = node("fra", OPEN);
    let a = fra.join(true);
    let b = fra.join(true);
    let announce = Announce {
        track_id: 1,
        kind: TrackKind::Video,
        e2ee: false,
        name: "cam".into(),
    };
    let first = fra
        .core
        .announce(a.id, &announce, 8, || 7, fra.now)
        .unwrap();
    let mut keys = [7, 7, 9].into_iter();
    let second = fra
        .core
        .announce(b.id, &announce, 8, || keys.next().unwrap_or(11), fra.now)
        .unwrap();
    assert_eq!((first, second), (7, 9));
    assert_eq!(
        fra.core
            .directory()
            .owner(&(AppId::new("acme"), "room".into()), 7),
        Some(a.id)
    );
}

#[test]
fn the_session_limit_is_checked_and_taken_in_one_step() {
    let mut fra = node("fra", OPEN);
    let (first, _c1) = fra.entry(false, None);
    let (second, _c2) = fra.entry(false, None);
    let (third, _c3) = fra.entry(false, None);
    let id = fra.core.add_session(first, 2).unwrap();
    fra.core.add_session(second, 2).unwrap();
    let refusal = fra.core.add_session(third, 2).unwrap_err();
    assert_eq!(refusal.code, ErrorCode::LimitExceeded);
    assert_eq!(fra.core.session_count(), 2);
    fra.core.remove_session(id, fra.now);
    let (again, _c4) = fra.entry(false, None);
    fra.core.add_session(again, 2).expect("a slot was freed");
}

#[test]
fn an_unsubscribed_session_gets_no_more_media() {
    let mut fra = node("fra", OPEN);
    let leaving = fra.join(false);
    let staying = fra.join(false);
    fra.core.subscribe(leaving.id, fra.now).unwrap();
    fra.core.subscribe(staying.id, fra.now).unwrap();
    let studio = fra.join(true);
    let track = fra.announce(&studio).unwrap();
    fra.core.unsubscribe(leaving.id, fra.now).unwrap();
    fra.send(&studio, track);
    assert_eq!((leaving.received(), staying.received()), (0, 1));
}

#[test]
fn a_publisher_leaving_withdraws_its_tracks_from_subscribers_and_the_route_table() {
    let mut fra = node("fra", OPEN);
    let viewer = fra.join(false);
    fra.core.subscribe(viewer.id, fra.now).unwrap();
    let studio = fra.join(true);
    let track = fra.announce(&studio).unwrap();
    viewer.control.take();
    fra.core.remove_session(studio.id, fra.now);
    let frames = viewer.control.frames();
    assert!(
        frames.contains(&Frame::TrackRemoved { track }),
        "{frames:?}"
    );
    assert!(fra.routes.route(track).is_none());
    let events = fra.core.take_events();
    assert!(events.iter().any(|e| matches!(
        e,
        CoreEvent::Record {
            kind: EventKind::TrackUnpublished { .. },
            ..
        }
    )));
}

#[test]
fn only_the_owner_may_unannounce() {
    let mut fra = node("fra", OPEN);
    let studio = fra.join(true);
    let other = fra.join(true);
    let track = fra.announce(&studio).unwrap();
    let refusal = fra.core.unannounce(other.id, track, fra.now).unwrap_err();
    assert_eq!(refusal.code, ErrorCode::ProtocolViolation);
    assert_eq!(
        fra.send(&other, track),
        Forwarded::Dropped(DropReason::UnknownTrack)
    );
    fra.core.unannounce(studio.id, track, fra.now).unwrap();
    assert!(fra.routes.route(track).is_none());
}

#[test]
fn a_reload_that_disallows_the_node_revokes_with_a_redirect_and_stops_media_at_once() {
    let mut lon = node("lon", OPEN);
    let viewer = lon.join(false);
    lon.core.subscribe(viewer.id, lon.now).unwrap();
    let studio = lon.join(true);
    let track = lon.announce(&studio).unwrap();
    let applied = lon.core.set_policy(policy(EU_ONLY), lon.now);
    assert_eq!(applied.revoked_sessions, 2);
    let close = closes(&viewer.control);
    assert_eq!(close.len(), 1);
    assert_eq!(close[0].error_code(), Some(ErrorCode::GeofenceRevoked));
    assert!(
        close[0].redirect.iter().any(|t| t.node == "fra"),
        "redirected to the allowed node: {close:?}"
    );
    assert!(
        lon.routes.route(track).is_none(),
        "no route outlives the reload"
    );
    assert_eq!(lon.core.session_count(), 0);
    assert!(lon.core.take_events().iter().any(|e| matches!(
        e,
        CoreEvent::Decision {
            decision: GeofenceDecision::Revoked { .. },
            ..
        }
    )));
}

#[test]
fn a_reload_that_denies_the_clients_country_revokes_without_a_redirect() {
    let mut fra = node("fra", OPEN);
    let (entry, viewer) = fra.entry(false, Some("FR"));
    fra.core.add_session(entry, 10).unwrap();
    let (entry, _stays) = fra.entry(false, Some("DE"));
    fra.core.add_session(entry, 10).unwrap();
    let deny_fr = r#"
[apps.acme]
secret = "s"
allow_regions = ["eu", "uk"]
client_countries = { deny = ["FR"] }
"#;
    let applied = fra.core.set_policy(policy(deny_fr), fra.now);
    assert_eq!(applied.revoked_sessions, 1);
    let close = closes(&viewer.control);
    assert_eq!(close[0].error_code(), Some(ErrorCode::GeofenceRevoked));
    assert!(close[0].redirect.is_empty(), "no other node would admit it");
    assert_eq!(fra.core.session_count(), 1);
}

/// fra with a subscriber of acme/room, linked to lon, which announced a
/// track: fra subscribes upstream.
fn fra_pulling_from_lon() -> (Node, Client, Arc<Recorder>, u64) {
    let mut fra = node("fra", OPEN);
    let (to_lon, _) = fra.link("lon", 1);
    let viewer = fra.join(false);
    fra.core.subscribe(viewer.id, fra.now).unwrap();
    let track = 555;
    let announce = PeerMsg::Announce {
        key: (AppId::new("acme"), "room".into()),
        origin: NodeId::new("lon"),
        seq: 1,
        tracks: vec![TrackInfo {
            track,
            publisher: "far".into(),
            kind: TrackKind::Audio,
            e2ee: false,
            name: "mic".into(),
        }],
    };
    fra.core.peer_msg(&NodeId::new("lon"), announce, fra.now);
    (fra, viewer, to_lon, track)
}

#[test]
fn a_remote_track_is_subscribed_along_the_path_and_routed_from_its_upstream_only() {
    let (fra, viewer, to_lon, track) = fra_pulling_from_lon();
    let sent = to_lon.peer_msgs();
    assert!(
        sent.iter()
            .any(|m| matches!(m, PeerMsg::Subscribe { path, .. }
            if path == &[NodeId::new("fra"), NodeId::new("lon")])),
        "{sent:?}"
    );
    assert_eq!(added(&viewer.control.frames()), [track]);
    assert_eq!(
        fra.routes
            .peer_datagram(&NodeId::new("ams"), datagram(track)),
        Forwarded::Dropped(DropReason::UnknownTrack)
    );
    assert_eq!(
        fra.routes
            .peer_datagram(&NodeId::new("lon"), datagram(track)),
        Forwarded::Yes
    );
    assert_eq!(viewer.received(), 1);
}

#[test]
fn active_waits_for_the_upstream_to_confirm_the_path() {
    let (mut fra, viewer, _to_lon, _track) = fra_pulling_from_lon();
    assert!(
        states(&viewer.control.frames()).is_empty(),
        "the path is not established yet"
    );
    let ok = PeerMsg::SubscribeOk {
        key: (AppId::new("acme"), "room".into()),
        origin: NodeId::new("lon"),
    };
    fra.core.peer_msg(&NodeId::new("lon"), ok.clone(), fra.now);
    assert_eq!(
        states(&viewer.control.frames()),
        [SubscriptionStatus::Active]
    );
    fra.core.peer_msg(&NodeId::new("lon"), ok, fra.now);
    assert!(viewer.control.frames().is_empty(), "said once");
}

#[test]
fn the_route_is_rebuilt_when_the_link_goes_down_and_the_subscriber_is_told() {
    let (mut fra, viewer, _to_lon, track) = fra_pulling_from_lon();
    viewer.control.take();
    fra.core.peer_down(&NodeId::new("lon"), 1, fra.now);
    assert!(
        fra.routes.route(track).is_none(),
        "no route through a link that is down"
    );
    let frames = viewer.control.frames();
    assert_eq!(
        states(&frames),
        [SubscriptionStatus::Unavailable],
        "{frames:?}"
    );
    assert!(fra.core.take_events().iter().any(|e| matches!(
        e,
        CoreEvent::Route {
            outcome: RouteOutcome::Unavailable(_),
            ..
        }
    )));
}

#[test]
fn a_late_peer_down_of_a_replaced_connection_is_ignored() {
    let (mut fra, _viewer, _old, track) = fra_pulling_from_lon();
    let (_new, _) = fra.link("lon", 2);
    fra.core.peer_down(&NodeId::new("lon"), 1, fra.now);
    assert_eq!(fra.core.peers().count(), 1, "the new connection stays");
    assert!(fra.core.plane().peers().contains_key(&NodeId::new("lon")));
    assert!(fra.routes.route(track).is_some());
}

#[test]
fn a_peer_that_does_not_read_its_control_stream_is_cut_off() {
    let mut fra = node("fra", OPEN);
    let control = Recorder::full(3);
    let (receiver, rx) = receiver(&fra.drops);
    std::mem::forget(rx);
    fra.core.peer_up(
        NodeId::new("lon"),
        PeerEntry {
            control: control.clone(),
            receiver,
        },
        fra.now,
    );
    assert_eq!(
        *control.aborted.lock().unwrap(),
        Some(ErrorCode::LimitExceeded)
    );
}

#[test]
fn a_peer_announcing_an_app_not_allowed_here_is_a_violation_and_leaves_no_trace() {
    let mut lon = node("lon", EU_ONLY);
    let (_to_fra, _) = lon.link("fra", 1);
    lon.core.take_events();
    let announce = PeerMsg::Announce {
        key: (AppId::new("acme"), "secret-room".into()),
        origin: NodeId::new("fra"),
        seq: 1,
        tracks: Vec::new(),
    };
    lon.core.peer_msg(&NodeId::new("fra"), announce, lon.now);
    let events = lon.core.take_events();
    assert!(
        matches!(
            events.as_slice(),
            [CoreEvent::Violation {
                what: Violation::Announce,
                ..
            }]
        ),
        "{events:?}"
    );
    assert!(lon.core.plane().seen_channels().is_empty());
}

#[test]
fn the_timer_is_due_at_the_refresh_and_ticking_moves_it_forward() {
    let (mut fra, _viewer, to_lon, _track) = fra_pulling_from_lon();
    to_lon.take();
    let due = fra.core.poll_timeout();
    fra.core.tick(due);
    assert!(
        fra.core.poll_timeout() > due,
        "a tick never leaves itself due"
    );
    assert!(
        to_lon
            .peer_msgs()
            .iter()
            .any(|m| matches!(m, PeerMsg::Subscribe { .. })),
        "the refresh re-sends the subscription upstream"
    );
}

#[test]
fn channels_per_app_are_capped_and_a_slot_frees_when_its_last_session_leaves() {
    let mut fra = node(
        "fra",
        "[limits]\nmax_channels_per_app = 2\n[apps.acme]\nsecret = \"s\"\nallow_regions = [\"eu\", \"uk\"]\n",
    );
    let in_channel = |fra: &Node, channel: &str| {
        let (mut entry, _client) = fra.entry(false, Some("DE"));
        entry.channel = channel.into();
        entry
    };
    let a1 = fra.core.add_session(in_channel(&fra, "a"), 100).unwrap();
    let a2 = fra.core.add_session(in_channel(&fra, "a"), 100).unwrap();
    fra.core.add_session(in_channel(&fra, "b"), 100).unwrap();
    assert_eq!(fra.core.channel_count(&AppId::new("acme")), 2);
    let refusal = fra
        .core
        .add_session(in_channel(&fra, "c"), 100)
        .unwrap_err();
    assert_eq!(refusal.code, ErrorCode::LimitExceeded);
    assert!(
        refusal.message.contains("max_channels_per_app"),
        "{refusal:?}"
    );
    // Another session of an existing channel still gets in.
    fra.core.add_session(in_channel(&fra, "b"), 100).unwrap();
    // Channel "a" closes only with its last session.
    fra.core.remove_session(a1, fra.now);
    assert!(fra.core.add_session(in_channel(&fra, "c"), 100).is_err());
    fra.core.remove_session(a2, fra.now);
    assert_eq!(fra.core.channel_count(&AppId::new("acme")), 1);
    fra.core.add_session(in_channel(&fra, "c"), 100).unwrap();
}

#[test]
fn subscribers_per_channel_are_capped_and_a_repeat_subscribe_is_no_new_one() {
    let mut fra = node(
        "fra",
        "[limits]\nmax_subscribers_per_channel = 2\n[apps.acme]\nsecret = \"s\"\nallow_regions = [\"eu\", \"uk\"]\n",
    );
    let first = fra.join(false);
    let second = fra.join(false);
    let third = fra.join(false);
    fra.core.subscribe(first.id, fra.now).unwrap();
    fra.core.subscribe(second.id, fra.now).unwrap();
    fra.core.subscribe(second.id, fra.now).unwrap();
    let refusal = fra.core.subscribe(third.id, fra.now).unwrap_err();
    assert_eq!(refusal.code, ErrorCode::LimitExceeded);
    fra.core.unsubscribe(first.id, fra.now).unwrap();
    fra.core.subscribe(third.id, fra.now).unwrap();
}
