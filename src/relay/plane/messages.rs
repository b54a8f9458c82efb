//! The plane's control messages between peers ([`PeerMsg`]) and their
//! one-to-one mapping to `georelay-mesh/1` wire frames.

use crate::error::ErrorCode;
use crate::ids::{AppId, NodeId};
use crate::wire::{
    ChannelAnnounce, ChannelRef, Frame, LinkInfo, LinkState, MeshSubscribe, MeshSubscribeError,
    TrackInfo,
};

/// An app's channel: the unit of announcement and subscription.
pub type ChannelKey = (AppId, String);

/// A control message between peers; maps one-to-one to a mesh wire frame.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerMsg {
    /// Flooded link state of `origin`: the peers it has a live link to.
    LinkState {
        origin: NodeId,
        seq: u64,
        links: Vec<(NodeId, u64)>,
    },
    /// The full current track set of a channel at `origin`.
    Announce {
        key: ChannelKey,
        origin: NodeId,
        seq: u64,
        tracks: Vec<TrackInfo>,
    },
    /// Subscribe to a channel's tracks at `origin` along `path`
    /// (`path[0]` is the subscriber's node, the last entry the origin).
    Subscribe {
        key: ChannelKey,
        origin: NodeId,
        path: Vec<NodeId>,
    },
    /// Stop forwarding the channel's tracks from `origin` to the sender.
    Unsubscribe { key: ChannelKey, origin: NodeId },
    /// A subscription failed or was torn down; the receiver re-routes.
    SubscribeError {
        key: ChannelKey,
        origin: NodeId,
        code: ErrorCode,
        message: String,
    },
    /// The sender's subscription for `origin`'s tracks is established up to
    /// the origin: media can flow from it to the receiver.
    SubscribeOk { key: ChannelKey, origin: NodeId },
}

impl PeerMsg {
    /// The app the message concerns; `None` for link state.
    pub fn app(&self) -> Option<&AppId> {
        match self {
            PeerMsg::LinkState { .. } => None,
            PeerMsg::Announce { key, .. }
            | PeerMsg::Subscribe { key, .. }
            | PeerMsg::Unsubscribe { key, .. }
            | PeerMsg::SubscribeError { key, .. }
            | PeerMsg::SubscribeOk { key, .. } => Some(&key.0),
        }
    }

    /// The message a mesh frame carries; `None` for frames a peer may not
    /// send once the link is up.
    pub fn from_frame(frame: Frame) -> Option<PeerMsg> {
        Some(match frame {
            Frame::LinkState(ls) => PeerMsg::LinkState {
                origin: NodeId::new(ls.origin),
                seq: ls.seq,
                links: ls
                    .links
                    .into_iter()
                    .map(|l| (NodeId::new(l.peer), l.rtt_us))
                    .collect(),
            },
            Frame::ChannelAnnounce(a) => PeerMsg::Announce {
                key: (AppId::new(a.app), a.channel),
                origin: NodeId::new(a.origin),
                seq: a.seq,
                tracks: a.tracks,
            },
            Frame::MeshSubscribe(s) => PeerMsg::Subscribe {
                key: (AppId::new(s.app), s.channel),
                origin: NodeId::new(s.origin),
                path: s.path.into_iter().map(NodeId::new).collect(),
            },
            Frame::MeshUnsubscribe(r) => PeerMsg::Unsubscribe {
                key: (AppId::new(r.app), r.channel),
                origin: NodeId::new(r.origin),
            },
            Frame::MeshSubscribeOk(r) => PeerMsg::SubscribeOk {
                key: (AppId::new(r.app), r.channel),
                origin: NodeId::new(r.origin),
            },
            Frame::MeshSubscribeError(e) => PeerMsg::SubscribeError {
                key: (AppId::new(e.app), e.channel),
                origin: NodeId::new(e.origin),
                code: ErrorCode::from_wire(e.code).unwrap_or(ErrorCode::RouteUnavailable),
                message: e.message,
            },
            _ => return None,
        })
    }
}

impl From<PeerMsg> for Frame {
    fn from(msg: PeerMsg) -> Frame {
        match msg {
            PeerMsg::LinkState { origin, seq, links } => Frame::LinkState(LinkState {
                origin: origin.to_string(),
                seq,
                links: links
                    .into_iter()
                    .map(|(peer, rtt_us)| LinkInfo {
                        peer: peer.to_string(),
                        rtt_us,
                    })
                    .collect(),
            }),
            PeerMsg::Announce {
                key,
                origin,
                seq,
                tracks,
            } => Frame::ChannelAnnounce(ChannelAnnounce {
                app: key.0.to_string(),
                channel: key.1,
                origin: origin.to_string(),
                seq,
                tracks,
            }),
            PeerMsg::Subscribe { key, origin, path } => Frame::MeshSubscribe(MeshSubscribe {
                app: key.0.to_string(),
                channel: key.1,
                origin: origin.to_string(),
                path: path.iter().map(NodeId::to_string).collect(),
            }),
            PeerMsg::Unsubscribe { key, origin } => {
                Frame::MeshUnsubscribe(channel_ref(key, &origin))
            }
            PeerMsg::SubscribeOk { key, origin } => {
                Frame::MeshSubscribeOk(channel_ref(key, &origin))
            }
            PeerMsg::SubscribeError {
                key,
                origin,
                code,
                message,
            } => Frame::MeshSubscribeError(MeshSubscribeError {
                app: key.0.to_string(),
                channel: key.1,
                origin: origin.to_string(),
                code: code.to_wire(),
                message,
            }),
        }
    }
}

/// A channel at its origin, in wire form.
fn channel_ref((app, channel): ChannelKey, origin: &NodeId) -> ChannelRef {
    ChannelRef {
        app: app.to_string(),
        channel,
        origin: origin.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ChannelKey {
        (AppId::new("acme"), "room".to_string())
    }

    #[test]
    fn every_message_survives_the_wire_frame_round_trip() {
        let messages = [
            PeerMsg::LinkState {
                origin: NodeId::new("a"),
                seq: 7,
                links: vec![(NodeId::new("b"), 1500)],
            },
            PeerMsg::Announce {
                key: key(),
                origin: NodeId::new("a"),
                seq: 3,
                tracks: Vec::new(),
            },
            PeerMsg::Subscribe {
                key: key(),
                origin: NodeId::new("c"),
                path: vec![NodeId::new("a"), NodeId::new("b"), NodeId::new("c")],
            },
            PeerMsg::Unsubscribe {
                key: key(),
                origin: NodeId::new("c"),
            },
            PeerMsg::SubscribeOk {
                key: key(),
                origin: NodeId::new("c"),
            },
            PeerMsg::SubscribeError {
                key: key(),
                origin: NodeId::new("c"),
                code: ErrorCode::GeofenceRevoked,
                message: "revoked".into(),
            },
        ];
        for msg in messages {
            let frame = Frame::from(msg.clone());
            assert_eq!(PeerMsg::from_frame(frame), Some(msg));
        }
    }

    #[test]
    fn client_frames_are_not_mesh_messages() {
        assert_eq!(PeerMsg::from_frame(Frame::Subscribe), None);
        assert_eq!(PeerMsg::from_frame(Frame::Goodbye), None);
    }
}
