use super::*;
use crate::ids::AppId;
use crate::wire::TrackKind;

fn key(channel: &str) -> ChannelKey {
    (AppId::new("acme"), channel.to_string())
}

fn info(track: u64) -> TrackInfo {
    TrackInfo {
        track,
        publisher: format!("user-{track}"),
        kind: TrackKind::Audio,
        e2ee: false,
        name: format!("mic-{track}"),
    }
}

fn here(tracks: &[u64]) -> Vec<(NodeId, TrackInfo)> {
    tracks
        .iter()
        .map(|t| (NodeId::new("fra"), info(*t)))
        .collect()
}

fn active(origins: &[&str]) -> PathState {
    PathState::Active {
        origins: origins.iter().map(|o| NodeId::new(*o)).collect(),
    }
}

/// The frames owed to `session`, as short names.
fn names(updates: &[(u64, Vec<Frame>)], session: u64) -> Vec<String> {
    updates
        .iter()
        .filter(|(s, _)| *s == session)
        .flat_map(|(_, frames)| frames.iter())
        .map(|f| match f {
            Frame::TrackAdded(t) => format!("added {}", t.track),
            Frame::TrackRemoved { track } => format!("removed {track}"),
            Frame::SubscriptionState(s) => format!("{:?}", s.state),
            other => other.name().to_string(),
        })
        .collect()
}

#[test]
fn an_announced_track_is_owned_by_its_session() {
    let mut dir = Directory::default();
    dir.announce(&key("room"), 7, info(1), 4).unwrap();
    assert_eq!(dir.owner(&key("room"), 1), Some(7));
    assert_eq!(dir.owned_by(&key("room"), 7), 1);
    assert_eq!(
        dir.tracks(&key("room")).keys().copied().collect::<Vec<_>>(),
        [1]
    );
}

#[test]
fn a_key_in_use_in_any_channel_is_refused_and_the_owner_keeps_it() {
    let mut dir = Directory::default();
    dir.announce(&key("room"), 7, info(1), 4).unwrap();
    assert_eq!(
        dir.announce(&key("room"), 8, info(1), 4),
        Err(OwnershipError::KeyInUse(1))
    );
    assert_eq!(
        dir.announce(&key("other"), 8, info(1), 4),
        Err(OwnershipError::KeyInUse(1)),
        "keys index the node's route table across channels"
    );
    assert_eq!(dir.owner(&key("room"), 1), Some(7));
}

#[test]
fn a_session_may_own_at_most_max_tracks() {
    let mut dir = Directory::default();
    dir.announce(&key("room"), 7, info(1), 2).unwrap();
    dir.announce(&key("room"), 7, info(2), 2).unwrap();
    assert_eq!(
        dir.announce(&key("room"), 7, info(3), 2),
        Err(OwnershipError::TooManyTracks(2))
    );
    dir.announce(&key("room"), 8, info(3), 2)
        .expect("the limit is per session");
}

#[test]
fn only_the_owner_withdraws_a_track() {
    let mut dir = Directory::default();
    dir.announce(&key("room"), 7, info(1), 4).unwrap();
    assert_eq!(
        dir.withdraw(&key("room"), 8, 1),
        Err(OwnershipError::NotOwner)
    );
    assert_eq!(dir.owner(&key("room"), 1), Some(7));
    assert_eq!(dir.withdraw(&key("room"), 7, 1).map(|i| i.track), Ok(1));
    assert_eq!(dir.owner(&key("room"), 1), None);
    dir.announce(&key("room"), 8, info(1), 4)
        .expect("a withdrawn key is free again");
}

#[test]
fn withdraw_all_takes_only_that_sessions_tracks() {
    let mut dir = Directory::default();
    dir.announce(&key("room"), 7, info(1), 4).unwrap();
    dir.announce(&key("room"), 7, info(2), 4).unwrap();
    dir.announce(&key("room"), 8, info(3), 4).unwrap();
    let mut gone: Vec<u64> = dir
        .withdraw_all(&key("room"), 7)
        .iter()
        .map(|i| i.track)
        .collect();
    gone.sort_unstable();
    assert_eq!(gone, [1, 2]);
    assert_eq!(
        dir.tracks(&key("room")).keys().copied().collect::<Vec<_>>(),
        [3]
    );
}

#[test]
fn a_late_joiner_is_told_every_visible_track_and_the_state() {
    let mut dir = Directory::default();
    let room = key("room");
    dir.subscribe(&room, 1);
    assert_eq!(
        names(&dir.updates(&room, &here(&[10]), &active(&["fra"])), 1),
        ["added 10", "Active"]
    );
    dir.subscribe(&room, 2);
    let updates = dir.updates(&room, &here(&[10, 11]), &active(&["fra"]));
    assert_eq!(
        names(&updates, 1),
        ["added 11"],
        "the first one only hears news"
    );
    assert_eq!(names(&updates, 2), ["added 10", "added 11", "Active"]);
}

#[test]
fn a_subscriber_is_never_told_about_its_own_tracks() {
    let mut dir = Directory::default();
    let room = key("room");
    dir.announce(&room, 1, info(10), 4).unwrap();
    dir.subscribe(&room, 1);
    dir.subscribe(&room, 2);
    let updates = dir.updates(&room, &here(&[10]), &PathState::Pending);
    assert!(names(&updates, 1).is_empty(), "{updates:?}");
    assert_eq!(names(&updates, 2), ["added 10"]);
}

#[test]
fn removed_tracks_are_reported_once_and_nothing_is_repeated() {
    let mut dir = Directory::default();
    let room = key("room");
    dir.subscribe(&room, 1);
    dir.updates(&room, &here(&[10, 11]), &active(&["fra"]));
    let updates = dir.updates(&room, &here(&[11]), &active(&["fra"]));
    assert_eq!(names(&updates, 1), ["removed 10"]);
    assert!(
        dir.updates(&room, &here(&[11]), &active(&["fra"]))
            .is_empty(),
        "an unchanged view owes nothing"
    );
}

#[test]
fn unavailable_is_said_once_and_active_again_after_recovery() {
    let mut dir = Directory::default();
    let room = key("room");
    dir.subscribe(&room, 1);
    dir.updates(&room, &here(&[10]), &active(&["fra"]));
    let down = PathState::Unavailable {
        message: "no allowed route to: fra".into(),
    };
    assert_eq!(
        names(&dir.updates(&room, &here(&[10]), &down), 1),
        ["Unavailable"]
    );
    assert!(dir.updates(&room, &here(&[10]), &down).is_empty());
    assert!(
        dir.updates(&room, &here(&[10]), &PathState::Pending)
            .is_empty(),
        "a path being set up is not news"
    );
    assert_eq!(
        names(&dir.updates(&room, &here(&[10]), &active(&["fra"])), 1),
        ["Active"],
        "recovery is announced"
    );
}

#[test]
fn active_is_sent_again_when_another_origins_path_is_established() {
    let mut dir = Directory::default();
    let room = key("room");
    dir.subscribe(&room, 1);
    assert_eq!(
        names(&dir.updates(&room, &here(&[10]), &active(&["fra"])), 1),
        ["added 10", "Active"]
    );
    let mut both = here(&[10]);
    both.push((NodeId::new("ams"), info(20)));
    assert_eq!(
        names(&dir.updates(&room, &both, &PathState::Pending), 1),
        ["added 20"],
        "the new origin's path is not established yet"
    );
    assert_eq!(
        names(&dir.updates(&room, &both, &active(&["ams", "fra"])), 1),
        ["Active"]
    );
    assert!(
        dir.updates(&room, &both, &active(&["ams", "fra"]))
            .is_empty()
    );
}

#[test]
fn an_unsubscribed_session_is_told_nothing_more() {
    let mut dir = Directory::default();
    let room = key("room");
    dir.subscribe(&room, 1);
    dir.subscribe(&room, 2);
    assert!(dir.unsubscribe(&room, 1));
    assert!(
        !dir.unsubscribe(&room, 1),
        "a second unsubscribe is a no-op"
    );
    let updates = dir.updates(&room, &here(&[10]), &active(&["fra"]));
    assert!(names(&updates, 1).is_empty());
    assert_eq!(dir.subscriber_count(&room), 1);
    assert_eq!(dir.subscribers(&room).collect::<Vec<_>>(), [2]);
}

#[test]
fn a_channel_is_forgotten_only_when_nobody_publishes_or_subscribes() {
    let mut dir = Directory::default();
    let room = key("room");
    dir.subscribe(&room, 1);
    dir.forget_if_unused(&room);
    assert_eq!(dir.subscribed_channels(), std::slice::from_ref(&room));
    dir.unsubscribe(&room, 1);
    dir.forget_if_unused(&room);
    assert!(dir.subscribed_channels().is_empty());
    assert!(
        dir.updates(&room, &here(&[10]), &active(&["fra"]))
            .is_empty()
    );
}
