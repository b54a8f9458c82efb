//! The local channel directory of one node, sans-IO: which local session
//! owns which track of a channel, which sessions subscribe, and what each
//! subscriber has been told, so that it can be sent exactly the
//! `TRACK_ADDED`, `TRACK_REMOVED` and `SUBSCRIPTION_STATE` frames it is owed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::ids::NodeId;
use crate::wire::{Frame, SubscriptionState, SubscriptionStatus, TrackInfo};

use super::plane::ChannelKey;

/// Why a track could not be taken or given up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OwnershipError {
    /// Another local track (of any channel: keys are the node's route
    /// table index) already has this key; the driver picks another random
    /// key and retries.
    #[error("track key {0} is already in use")]
    KeyInUse(u64),
    /// The session already owns the most tracks it may.
    #[error("at most {0} tracks per session")]
    TooManyTracks(usize),
    /// The session does not own this track.
    #[error("no such track in this session")]
    NotOwner,
}

/// What local subscribers of a channel should know about its media paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathState {
    /// Not yet known: no origin to reach, or a path is being set up.
    Pending,
    /// Media from these origins can flow: each path is established.
    Active {
        /// The origins (this node included) whose path is established.
        origins: BTreeSet<NodeId>,
    },
    /// No allowed path reaches some origin or allowed node right now.
    Unavailable {
        /// Why, for the subscriber.
        message: String,
    },
}

#[derive(Debug, Default)]
struct SubscriberView {
    told: BTreeSet<u64>,
    /// Origins the subscriber was told are active; `None` before any state.
    active: Option<BTreeSet<NodeId>>,
    unavailable: Option<String>,
}

#[derive(Debug, Default)]
struct LocalChannel {
    /// Track key → the publishing session.
    owners: BTreeMap<u64, u64>,
    tracks: BTreeMap<u64, TrackInfo>,
    subscribers: BTreeMap<u64, SubscriberView>,
}

/// The local channel directory. See the module docs.
#[derive(Debug, Default)]
pub struct Directory {
    channels: HashMap<ChannelKey, LocalChannel>,
    /// Every local track key, whatever its channel.
    keys: HashMap<u64, ChannelKey>,
}

impl Directory {
    /// Session `session` publishes `info` in `key`, as one of at most
    /// `max_tracks` tracks it owns there.
    pub fn announce(
        &mut self,
        key: &ChannelKey,
        session: u64,
        info: TrackInfo,
        max_tracks: usize,
    ) -> Result<(), OwnershipError> {
        if self.owned_by(key, session) >= max_tracks {
            return Err(OwnershipError::TooManyTracks(max_tracks));
        }
        if self.keys.contains_key(&info.track) {
            return Err(OwnershipError::KeyInUse(info.track));
        }
        self.keys.insert(info.track, key.clone());
        let channel = self.channels.entry(key.clone()).or_default();
        channel.owners.insert(info.track, session);
        channel.tracks.insert(info.track, info);
        Ok(())
    }

    /// Session `session` withdraws a track it owns.
    pub fn withdraw(
        &mut self,
        key: &ChannelKey,
        session: u64,
        track: u64,
    ) -> Result<TrackInfo, OwnershipError> {
        let channel = self
            .channels
            .get_mut(key)
            .filter(|c| c.owners.get(&track) == Some(&session))
            .ok_or(OwnershipError::NotOwner)?;
        channel.owners.remove(&track);
        self.keys.remove(&track);
        channel
            .tracks
            .remove(&track)
            .ok_or(OwnershipError::NotOwner)
    }

    /// Withdraws every track `session` owns in `key`.
    pub fn withdraw_all(&mut self, key: &ChannelKey, session: u64) -> Vec<TrackInfo> {
        let Some(channel) = self.channels.get_mut(key) else {
            return Vec::new();
        };
        let gone: Vec<u64> = channel
            .owners
            .iter()
            .filter(|(_, s)| **s == session)
            .map(|(t, _)| *t)
            .collect();
        gone.into_iter()
            .filter_map(|track| {
                channel.owners.remove(&track);
                self.keys.remove(&track);
                channel.tracks.remove(&track)
            })
            .collect()
    }

    /// The session that publishes `track` in `key`.
    pub fn owner(&self, key: &ChannelKey, track: u64) -> Option<u64> {
        self.channels.get(key)?.owners.get(&track).copied()
    }

    /// How many tracks `session` owns in `key`.
    pub fn owned_by(&self, key: &ChannelKey, session: u64) -> usize {
        self.channels
            .get(key)
            .map(|c| c.owners.values().filter(|s| **s == session).count())
            .unwrap_or(0)
    }

    /// The tracks local publishers have in `key`.
    pub fn tracks(&self, key: &ChannelKey) -> BTreeMap<u64, TrackInfo> {
        self.channels
            .get(key)
            .map(|c| c.tracks.clone())
            .unwrap_or_default()
    }

    /// Session `session` subscribes to `key`; false if it already did.
    pub fn subscribe(&mut self, key: &ChannelKey, session: u64) -> bool {
        let channel = self.channels.entry(key.clone()).or_default();
        if channel.subscribers.contains_key(&session) {
            return false;
        }
        channel
            .subscribers
            .insert(session, SubscriberView::default());
        true
    }

    /// Session `session` leaves `key`; false if it did not subscribe.
    pub fn unsubscribe(&mut self, key: &ChannelKey, session: u64) -> bool {
        self.channels
            .get_mut(key)
            .is_some_and(|c| c.subscribers.remove(&session).is_some())
    }

    /// The local subscribers of `key`.
    pub fn subscribers(&self, key: &ChannelKey) -> impl Iterator<Item = u64> + '_ {
        self.channels
            .get(key)
            .into_iter()
            .flat_map(|c| c.subscribers.keys().copied())
    }

    /// How many local sessions subscribe to `key`.
    pub fn subscriber_count(&self, key: &ChannelKey) -> usize {
        self.channels.get(key).map_or(0, |c| c.subscribers.len())
    }

    /// Channels with at least one local subscriber.
    pub fn subscribed_channels(&self) -> Vec<ChannelKey> {
        self.channels
            .iter()
            .filter(|(_, c)| !c.subscribers.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Forgets `key` if no local session publishes or subscribes in it.
    pub fn forget_if_unused(&mut self, key: &ChannelKey) {
        if self
            .channels
            .get(key)
            .is_some_and(|c| c.owners.is_empty() && c.subscribers.is_empty())
        {
            self.channels.remove(key);
        }
    }

    /// Forgets everything (node stop).
    pub fn clear(&mut self) {
        self.channels.clear();
        self.keys.clear();
    }

    /// The frames each local subscriber of `key` is owed so that what it
    /// was told matches `visible` (the tracks of the channel this node can
    /// see, with their origin) and `state`: `TRACK_REMOVED` for tracks gone,
    /// `TRACK_ADDED` for new ones (never a subscriber's own tracks), and
    /// `SUBSCRIPTION_STATE` when the state changed — `active` whenever the
    /// path to another origin is established or a path recovered.
    pub fn updates(
        &mut self,
        key: &ChannelKey,
        visible: &[(NodeId, TrackInfo)],
        state: &PathState,
    ) -> Vec<(u64, Vec<Frame>)> {
        let Some(channel) = self.channels.get_mut(key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (session, view) in channel.subscribers.iter_mut() {
            let now: BTreeMap<u64, &TrackInfo> = visible
                .iter()
                .filter(|(_, t)| channel.owners.get(&t.track) != Some(session))
                .map(|(_, t)| (t.track, t))
                .collect();
            let mut frames = Vec::new();
            let gone: Vec<u64> = view
                .told
                .iter()
                .filter(|t| !now.contains_key(t))
                .copied()
                .collect();
            for track in gone {
                view.told.remove(&track);
                frames.push(Frame::TrackRemoved { track });
            }
            for (track, info) in &now {
                if view.told.insert(*track) {
                    frames.push(Frame::TrackAdded((*info).clone()));
                }
            }
            if let Some(frame) = view.state_change(state) {
                frames.push(frame);
            }
            if !frames.is_empty() {
                out.push((*session, frames));
            }
        }
        out
    }
}

impl SubscriberView {
    /// The `SUBSCRIPTION_STATE` frame owed for `state`, if any.
    fn state_change(&mut self, state: &PathState) -> Option<Frame> {
        match state {
            PathState::Pending => None,
            PathState::Unavailable { message } => {
                if self.unavailable.as_ref() == Some(message) {
                    return None;
                }
                self.unavailable = Some(message.clone());
                self.active = None;
                Some(Frame::SubscriptionState(SubscriptionState {
                    state: SubscriptionStatus::Unavailable,
                    code: crate::error::ErrorCode::RouteUnavailable.to_wire(),
                    message: message.clone(),
                }))
            }
            PathState::Active { origins } => {
                let known = self.active.get_or_insert_with(BTreeSet::new);
                let recovered = self.unavailable.take().is_some();
                let new: Vec<&NodeId> = origins.iter().filter(|o| !known.contains(*o)).collect();
                if new.is_empty() && !recovered {
                    known.retain(|o| origins.contains(o));
                    return None;
                }
                let names: Vec<String> = origins.iter().map(NodeId::to_string).collect();
                *known = origins.clone();
                Some(Frame::SubscriptionState(SubscriptionState {
                    state: SubscriptionStatus::Active,
                    code: 0,
                    message: format!("media path established from {}", names.join(", ")),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests;
