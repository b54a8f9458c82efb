//! Mesh links with nodes of an older release, whose `PEER_HELLO` has no
//! policy version and who refuse the new form as trailing bytes
//! (docs/PROTOCOL.md §9). A real node (eu-fra-1) meets two stand-ins over
//! real QUIC with their fleet certificates:
//! - an old acceptor (uk-lon-1, which eu-fra-1 dials): it refuses the new
//!   form with `PROTOCOL_VIOLATION`, and eu-fra-1 greets it in the old form
//!   on its next dial;
//! - an old dialer (eu-ams-1, which dials eu-fra-1): eu-fra-1 answers in the
//!   old form.
//!
//! Both links come up, `/status` lists both peers with an unknown version,
//! and a reload that changes eu-fra-1's version sends no repeated
//! `PEER_HELLO` to either (they could not read it).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use georelay::admin::PeerVersion;
use georelay::error::ErrorCode;
use georelay::ids::NodeId;
use georelay::tls::{TransportKind, mesh_client_config, server_config, transport_config};
use georelay::wire::stream::FrameReader;
use georelay::wire::{ErrorFrame, Frame, PeerHello};
use support::fleet::{EXAMPLE_APPS, FleetSpec, TestFleet};

const STEP: Duration = Duration::from_secs(10);

fn old_hello(node: &str) -> Vec<u8> {
    let mut buf = BytesMut::new();
    Frame::PeerHello(PeerHello {
        node: node.into(),
        version: 1,
        policy_version: None,
    })
    .encode(&mut buf);
    buf.to_vec()
}

/// An old-release uk-lon-1 listening at its configured address: refuses a
/// `PEER_HELLO` with a policy version (counted in `refused`), answers the
/// old form and keeps the link, forwarding the frames it reads to `frames`.
fn old_acceptor(
    fleet: &TestFleet,
    refused: Arc<AtomicU32>,
    frames: tokio::sync::mpsc::UnboundedSender<Frame>,
) {
    let identity = fleet
        .pki
        .identity(&NodeId::new("uk-lon-1"))
        .expect("lon identity");
    let config = server_config(
        &identity,
        fleet.pki.roots.clone(),
        Arc::new(transport_config(TransportKind::Mesh)),
    )
    .expect("server config");
    let endpoint =
        quinn::Endpoint::server(config, fleet.node_addr("uk-lon-1")).expect("bind lon's address");
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let Ok(conn) = incoming.await else { continue };
            let Ok((mut send, recv)) = conn.accept_bi().await else {
                continue;
            };
            let mut reader = FrameReader::new(recv);
            let Ok(Some(Frame::PeerHello(hello))) = reader.next().await else {
                continue;
            };
            if hello.policy_version.is_some() {
                refused.fetch_add(1, Ordering::Relaxed);
                let mut buf = BytesMut::new();
                Frame::Error(ErrorFrame::new(
                    ErrorCode::ProtocolViolation,
                    "trailing bytes after the fields of PEER_HELLO",
                ))
                .encode(&mut buf);
                let _ = send.write_all(&buf).await;
                conn.close(
                    quinn::VarInt::from_u64(ErrorCode::ProtocolViolation.to_wire()).expect("code"),
                    b"trailing bytes",
                );
                continue;
            }
            send.write_all(&old_hello("uk-lon-1"))
                .await
                .expect("answer");
            let frames = frames.clone();
            tokio::spawn(async move {
                let _send = send;
                let _conn = conn;
                while let Ok(Some(frame)) = reader.next().await {
                    let _ = frames.send(frame);
                }
            });
        }
    });
}

/// An old-release `node` dialing eu-fra-1 from its own listen address (as
/// a node does) and greeting it in the old form; its connection and control
/// stream.
async fn old_dialer(
    fleet: &TestFleet,
    node: &str,
) -> (quinn::Endpoint, quinn::SendStream, quinn::RecvStream) {
    let identity = fleet.pki.identity(&NodeId::new(node)).expect("identity");
    let client = mesh_client_config(
        &identity,
        fleet.pki.roots.clone(),
        Arc::new(transport_config(TransportKind::Mesh)),
    )
    .expect("mesh client config");
    let endpoint = quinn::Endpoint::client(fleet.node_addr(node)).expect("bind the node's address");
    let conn = tokio::time::timeout(
        STEP,
        endpoint
            .connect_with(client, fleet.node_addr("eu-fra-1"), "eu-fra-1")
            .expect("connect"),
    )
    .await
    .expect("in time")
    .expect("handshake");
    let (mut send, recv) = conn.open_bi().await.expect("control stream");
    send.write_all(&old_hello(node)).await.expect("hello");
    (endpoint, send, recv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_with_an_older_release_come_up_in_the_old_form_either_way() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &["eu-fra-1"]).await;
    let old_version = fleet.status("eu-fra-1").await.policy_version;
    let refused = Arc::new(AtomicU32::new(0));
    let (lon_frames, mut from_fra_at_lon) = tokio::sync::mpsc::unbounded_channel();
    old_acceptor(&fleet, Arc::clone(&refused), lon_frames);

    // The old dialer: eu-ams-1 greets eu-fra-1 in the old form.
    let (_ams, send, recv) = old_dialer(&fleet, "eu-ams-1").await;
    let mut reader = FrameReader::new(recv);
    let answer = tokio::time::timeout(STEP, reader.next())
        .await
        .expect("answered in time")
        .expect("a frame");
    assert_eq!(
        answer,
        Some(Frame::PeerHello(PeerHello {
            node: "eu-fra-1".into(),
            version: 1,
            policy_version: None,
        })),
        "answered in the form it was greeted with"
    );

    // Both links up; both peers shown with an unknown version.
    let hub = &fleet.fleet.node("eu-fra-1").expect("fra").hub;
    support::events::until(STEP, "both old peers linked", || async {
        let status = hub.status();
        ["uk-lon-1", "eu-ams-1"]
            .iter()
            .all(|peer| status.links.get(*peer).is_some_and(|l| l.up))
    })
    .await;
    assert_eq!(
        refused.load(Ordering::Relaxed),
        1,
        "one refused new-form greeting, then the old form"
    );
    let unknown = |node: &str| PeerVersion {
        node: node.into(),
        policy_version: None,
    };
    assert_eq!(
        fleet.status("eu-fra-1").await.peers_on_other_versions,
        [unknown("eu-ams-1"), unknown("uk-lon-1")]
    );

    // A reload changes fra's version: no PEER_HELLO to the old peers. The
    // LINK_STATE fra floods when a third peer (ap-sin-1, an old dialer
    // too) comes up afterwards arrives on the same ordered stream, so any
    // repeated PEER_HELLO would come before it.
    let spec = FleetSpec {
        apps: EXAMPLE_APPS.replacen(r#"deny = ["RU"]"#, r#"deny = ["RU", "BY"]"#, 1),
        ..FleetSpec::default()
    };
    fleet.rewrite_config(&spec);
    let report = fleet.fleet.reload().expect("reload");
    assert_ne!(report.policy_version, old_version);
    let (_sin, sin_send, _sin_recv) = old_dialer(&fleet, "ap-sin-1").await;
    let lists_sin = |frame: &Frame| {
        matches!(frame, Frame::LinkState(state)
            if state.origin == "eu-fra-1" && state.links.iter().any(|l| l.peer == "ap-sin-1"))
    };
    let mut at_ams = Vec::new();
    while !at_ams.iter().any(lists_sin) {
        let frame = tokio::time::timeout(STEP, reader.next())
            .await
            .expect("fra's link state reaches ams")
            .expect("readable")
            .expect("stream open");
        at_ams.push(frame);
    }
    let mut at_lon = Vec::new();
    while !at_lon.iter().any(lists_sin) {
        let frame = tokio::time::timeout(STEP, from_fra_at_lon.recv())
            .await
            .expect("fra's link state reaches lon")
            .expect("stream open");
        at_lon.push(frame);
    }
    for (peer, frames) in [("eu-ams-1", &at_ams), ("uk-lon-1", &at_lon)] {
        assert!(
            !frames.iter().any(|f| matches!(f, Frame::PeerHello(_))),
            "{peer} got no PEER_HELLO it could not read: {frames:?}"
        );
    }
    drop((send, sin_send));
}
