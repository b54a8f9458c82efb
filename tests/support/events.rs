//! Waiting on an SDK client's events in tests: the next matching event, a
//! track announcement, the media that arrives within a window. Every wait
//! is bounded in time.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use georelay::client::{Client, Event};
use georelay::wire::{SubscriptionStatus, TrackInfo};

/// Waits for the next event matching `pick`, up to `limit`.
pub async fn next_matching<T>(
    client: &mut Client,
    limit: Duration,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> Option<T> {
    let deadline = georelay::clock::timer_now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, client.events().next())
            .await
            .ok()??;
        if let Some(found) = pick(event) {
            return Some(found);
        }
    }
}

/// The next `TRACK_ADDED`, within 5 s.
pub async fn track_added(client: &mut Client) -> TrackInfo {
    next_matching(client, Duration::from_secs(5), |e| match e {
        Event::TrackAdded(info) => Some(info),
        _ => None,
    })
    .await
    .expect("a TRACK_ADDED within 5 s")
}

/// The next `SUBSCRIPTION_STATE active` (the media path to the publishers'
/// nodes is established), within 5 s.
pub async fn active(client: &mut Client) {
    next_matching(client, Duration::from_secs(5), |e| match e {
        Event::State(state) if state.state == SubscriptionStatus::Active => Some(()),
        _ => None,
    })
    .await
    .expect("SUBSCRIPTION_STATE active within 5 s")
}

/// A `TRACK_ADDED`, then `SUBSCRIPTION_STATE active`: media sent from now on
/// reaches the subscriber.
pub async fn track_ready(client: &mut Client) -> TrackInfo {
    let info = track_added(client).await;
    active(client).await;
    info
}

/// Polls `done` every 10 ms until it holds; panics after `limit` with
/// `what`.
pub async fn until<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = georelay::clock::timer_now() + limit;
    while !done().await {
        assert!(
            georelay::clock::timer_now() < deadline,
            "not within {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The distinct sequence numbers of `track`'s media that arrive within
/// `window`.
pub async fn media_seqs(client: &mut Client, track: u64, window: Duration) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    let deadline = georelay::clock::timer_now() + window;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, client.events().next()).await {
        if let Event::Media { header, .. } = event {
            if header.track == track {
                seen.insert(header.seq);
            }
        }
    }
    seen
}

/// How many media events of any track arrive within `window`.
pub async fn media_within(client: &mut Client, window: Duration) -> usize {
    let deadline = georelay::clock::timer_now() + window;
    let mut count = 0;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, client.events().next()).await {
        if matches!(event, Event::Media { .. }) {
            count += 1;
        }
    }
    count
}

/// Sends a media packet on `track` every 10 ms (sequence numbers from 1)
/// until `done`; returns how many it sent.
pub async fn send_until(
    publisher: &Client,
    track: u64,
    payload: &[u8],
    done: &std::sync::atomic::AtomicBool,
) -> u64 {
    let mut sent = 0u64;
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        pace.tick().await;
        sent += 1;
        publisher
            .send_media(track, sent, sent, payload)
            .expect("send");
    }
    sent
}

/// The sequence numbers of `track` that reach `subscriber` until `done`,
/// and in the 300 ms after it.
pub async fn receive_until(
    subscriber: &mut Client,
    track: u64,
    done: &std::sync::atomic::AtomicBool,
) -> BTreeSet<u64> {
    let mut got = BTreeSet::new();
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        got.extend(media_seqs(subscriber, track, Duration::from_millis(100)).await);
    }
    got.extend(media_seqs(subscriber, track, Duration::from_millis(300)).await);
    got
}
