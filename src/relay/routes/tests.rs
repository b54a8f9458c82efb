use super::*;
use crate::wire::{MediaHeader, TrackKind};

fn datagram(track: u64) -> Bytes {
    MediaHeader {
        track,
        seq: 1,
        timestamp_us: 1,
    }
    .datagram(b"payload")
}

struct Queues {
    receiver: Receiver,
    _messages: tokio::sync::mpsc::Receiver<super::super::fanout::Queued>,
}

fn queues(drops: &Arc<DropCounters>) -> Queues {
    let (messages, rx) = MessageQueue::new(8, Arc::clone(drops));
    Queues {
        receiver: Receiver {
            datagrams: Arc::new(DatagramQueue::new(8, Arc::clone(drops))),
            messages,
        },
        _messages: rx,
    }
}

fn pending(queue: &Arc<DatagramQueue>) -> usize {
    let mut n = 0;
    while queue.try_pop().is_some() {
        n += 1;
    }
    n
}

fn key(channel: &str) -> ChannelKey {
    (AppId::new("acme"), channel.to_string())
}

fn table() -> (RouteTable, Arc<DropCounters>) {
    let drops = Arc::new(DropCounters::default());
    (RouteTable::new(Arc::clone(&drops)), drops)
}

fn route(publisher: Option<u64>, upstream: Option<&str>, receivers: &[&Queues]) -> Arc<TrackRoute> {
    Arc::new(TrackRoute::new(
        AppId::new("acme"),
        Arc::default(),
        publisher,
        upstream.map(NodeId::new),
        receivers
            .iter()
            .map(|q| Outlet {
                receiver: q.receiver.clone(),
                flow: Arc::default(),
            })
            .collect(),
    ))
}

#[test]
fn a_publishers_datagram_reaches_every_receiver_once_and_is_counted() {
    let (table, drops) = table();
    let (a, b) = (queues(&drops), queues(&drops));
    let r = route(Some(1), None, &[&a, &b]);
    let counters = Arc::clone(r.ingress.app());
    table.replace_channel(&key("room"), vec![(5, r)]);
    assert_eq!(table.client_datagram(1, 5, datagram(5)), Forwarded::Yes);
    assert_eq!(
        (
            pending(&a.receiver.datagrams),
            pending(&b.receiver.datagrams)
        ),
        (1, 1)
    );
    assert_eq!(counters.snapshot().packets_in, 1);
}

#[test]
fn a_session_that_does_not_own_the_track_is_dropped_as_unknown_track() {
    let (table, drops) = table();
    let a = queues(&drops);
    table.replace_channel(&key("room"), vec![(5, route(Some(1), None, &[&a]))]);
    assert_eq!(
        table.client_datagram(2, 5, datagram(5)),
        Forwarded::Dropped(DropReason::UnknownTrack)
    );
    assert_eq!(
        table.client_datagram(1, 6, datagram(6)),
        Forwarded::Dropped(DropReason::UnknownTrack)
    );
    assert_eq!(pending(&a.receiver.datagrams), 0);
    assert_eq!(drops.get(DropReason::UnknownTrack), 2);
}

#[test]
fn a_peer_is_accepted_only_as_the_tracks_upstream() {
    let (table, drops) = table();
    let a = queues(&drops);
    table.replace_channel(&key("room"), vec![(5, route(None, Some("lon"), &[&a]))]);
    assert_eq!(
        table.peer_datagram(&NodeId::new("ams"), datagram(5)),
        Forwarded::Dropped(DropReason::UnknownTrack)
    );
    assert_eq!(
        table.peer_datagram(&NodeId::new("lon"), datagram(5)),
        Forwarded::Yes
    );
    assert_eq!(pending(&a.receiver.datagrams), 1);
}

#[test]
fn a_peer_datagram_without_a_track_header_is_malformed() {
    let (table, drops) = table();
    assert_eq!(
        table.peer_datagram(&NodeId::new("lon"), Bytes::from_static(&[0xff])),
        Forwarded::Dropped(DropReason::Malformed)
    );
    assert_eq!(drops.get(DropReason::Malformed), 1);
}

#[test]
fn replacing_a_channel_drops_its_old_tracks_and_keeps_other_channels() {
    let (table, drops) = table();
    let a = queues(&drops);
    table.replace_channel(
        &key("room"),
        vec![
            (5, route(Some(1), None, &[&a])),
            (6, route(Some(1), None, &[&a])),
        ],
    );
    table.replace_channel(&key("hall"), vec![(7, route(Some(2), None, &[&a]))]);
    table.replace_channel(&key("room"), vec![(6, route(Some(1), None, &[]))]);
    assert!(table.route(5).is_none(), "a track gone from the channel");
    assert_eq!(table.route(6).map(|r| r.fanout()), Some(0), "rebuilt");
    assert!(table.route(7).is_some(), "another channel is untouched");
    table.replace_channel(&key("room"), Vec::new());
    assert_eq!(table.len(), 1);
}

#[test]
fn messages_are_framed_for_receivers_and_refused_from_others() {
    let (table, drops) = table();
    let (messages, mut rx) = MessageQueue::new(8, Arc::clone(&drops));
    let receiver = Receiver {
        datagrams: Arc::new(DatagramQueue::new(8, Arc::clone(&drops))),
        messages,
    };
    let r = Arc::new(TrackRoute::new(
        AppId::new("acme"),
        Arc::default(),
        Some(1),
        None,
        vec![Outlet {
            receiver,
            flow: Arc::default(),
        }],
    ));
    table.replace_channel(&key("room"), vec![(5, r)]);
    assert_eq!(
        table.message(Sender::Session(2), 5, b"hi"),
        Forwarded::Dropped(DropReason::UnknownTrack)
    );
    assert_eq!(
        table.message(Sender::Peer(&NodeId::new("lon")), 5, b"hi"),
        Forwarded::Dropped(DropReason::UnknownTrack)
    );
    assert_eq!(table.message(Sender::Session(1), 5, b"hi"), Forwarded::Yes);
    let (framed, _) = rx.try_recv().expect("one message queued");
    let mut expected = BytesMut::new();
    crate::wire::encode_message(5, b"hi", &mut expected);
    assert_eq!(framed, expected.freeze());
    assert!(rx.try_recv().is_err());
}

struct Fixed {
    sessions: Vec<(u64, Receiver)>,
    peers: Vec<(NodeId, Receiver)>,
}

impl Receivers for Fixed {
    fn session(&self, id: u64) -> Option<&Receiver> {
        self.sessions.iter().find(|(s, _)| *s == id).map(|(_, r)| r)
    }

    fn peer(&self, id: &NodeId) -> Option<&Receiver> {
        self.peers.iter().find(|(p, _)| p == id).map(|(_, r)| r)
    }
}

#[test]
fn a_rebuild_serves_local_subscribers_but_not_the_publisher_and_every_downstream_peer() {
    let drops = Arc::new(DropCounters::default());
    let (publisher, viewer, peer) = (queues(&drops), queues(&drops), queues(&drops));
    let room = key("room");
    let mut directory = Directory::default();
    let info = TrackInfo {
        track: 5,
        publisher: "studio".into(),
        kind: TrackKind::Video,
        e2ee: false,
        name: "cam".into(),
    };
    directory.announce(&room, 1, info.clone(), 4).unwrap();
    directory.subscribe(&room, 1);
    directory.subscribe(&room, 2);
    let me = NodeId::new("fra");
    let forwarding = BTreeMap::from([(
        me.clone(),
        Forwarding {
            upstream: None,
            downstream: vec![NodeId::new("lon"), NodeId::new("gone")],
            local: true,
        },
    )]);
    let receivers = Fixed {
        sessions: vec![
            (1, publisher.receiver.clone()),
            (2, viewer.receiver.clone()),
        ],
        peers: vec![(NodeId::new("lon"), peer.receiver.clone())],
    };
    let fresh = build_channel_routes(
        &me,
        &[(me.clone(), info)],
        &forwarding,
        ChannelView {
            directory: &directory,
            key: &room,
        },
        &receivers,
        &AppCounterSet::default(),
    );
    assert_eq!(fresh.len(), 1);
    let route = &fresh[0].1;
    assert_eq!(route.publisher, Some(1));
    assert!(!route.delivers_to(&publisher.receiver.datagrams));
    assert!(route.delivers_to(&viewer.receiver.datagrams));
    assert!(route.delivers_to(&peer.receiver.datagrams));
    assert_eq!(route.fanout(), 2, "a peer without a live link is skipped");
}

#[test]
fn a_track_without_forwarding_here_gets_no_route() {
    let directory = Directory::default();
    let room = key("room");
    let info = TrackInfo {
        track: 9,
        publisher: "far".into(),
        kind: TrackKind::Audio,
        e2ee: false,
        name: "mic".into(),
    };
    let fresh = build_channel_routes(
        &NodeId::new("fra"),
        &[(NodeId::new("sfo"), info)],
        &BTreeMap::new(),
        ChannelView {
            directory: &directory,
            key: &room,
        },
        &Fixed {
            sessions: Vec::new(),
            peers: Vec::new(),
        },
        &AppCounterSet::default(),
    );
    assert!(fresh.is_empty());
}

#[test]
fn a_transit_route_counts_in_from_its_upstream_and_out_to_each_downstream_peer() {
    let drops = Arc::new(DropCounters::default());
    let (to_ams, to_sin) = (queues(&drops), queues(&drops));
    let room = key("room");
    let directory = Directory::default();
    let info = TrackInfo {
        track: 7,
        publisher: "studio".into(),
        kind: TrackKind::Video,
        e2ee: false,
        name: "cam".into(),
    };
    let (lon, fra) = (NodeId::new("lon"), NodeId::new("fra"));
    let forwarding = BTreeMap::from([(
        fra.clone(),
        Forwarding {
            upstream: Some(fra.clone()),
            downstream: vec![NodeId::new("ams"), NodeId::new("sin")],
            local: false,
        },
    )]);
    let receivers = Fixed {
        sessions: Vec::new(),
        peers: vec![
            (NodeId::new("ams"), to_ams.receiver.clone()),
            (NodeId::new("sin"), to_sin.receiver.clone()),
        ],
    };
    let meter = Arc::new(TrafficMeter::default());
    let counters = AppCounterSet::with_meter(Arc::clone(&meter));
    let fresh = build_channel_routes(
        &lon,
        &[(fra.clone(), info)],
        &forwarding,
        ChannelView {
            directory: &directory,
            key: &room,
        },
        &receivers,
        &counters,
    );
    let (table, _) = table();
    table.replace_channel(&room, fresh);
    let packet = datagram(7);
    assert_eq!(table.peer_datagram(&fra, packet.clone()), Forwarded::Yes);
    assert_eq!(
        table.peer_datagram(&NodeId::new("ams"), packet.clone()),
        Forwarded::Dropped(DropReason::UnknownTrack),
        "not from the upstream: not forwarded, not counted"
    );
    // What a mesh link's writer does once QUIC took the datagram.
    for queue in [&to_ams, &to_sin] {
        let (sent, flow) = queue.receiver.datagrams.try_pop().expect("queued");
        flow.count_out(sent.len());
    }
    let len = packet.len() as u64;
    let flow = |direction, peer: &str| TrafficKey {
        app: AppId::new("acme"),
        direction,
        peer: TrafficPeer::Node(NodeId::new(peer)),
    };
    let snapshot = meter.snapshot();
    let counted: Vec<(&TrafficKey, u64, u64)> = snapshot
        .iter()
        .map(|(key, counts)| (key, counts.packets, counts.bytes))
        .collect();
    assert_eq!(
        counted,
        vec![
            (&flow(Direction::In, "fra"), 1, len),
            (&flow(Direction::Out, "ams"), 1, len),
            (&flow(Direction::Out, "sin"), 1, len),
        ],
        "transit is recorded by peer, and nothing from or to clients"
    );
    let app = counters.get(&AppId::new("acme")).snapshot();
    assert_eq!(
        (app.packets_in, app.packets_out),
        (1, 2),
        "as /status counts"
    );
}
