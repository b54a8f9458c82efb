//! The operational events a node records, and nothing else.
//!
//! Every [`Event`] carries when it happened (`at_ms`, Unix milliseconds from
//! the injected clock), which node and region recorded it, and the app it
//! concerns (`None` only for mesh link events, which belong to no app).
//!
//! What each kind means:
//! - [`EventKind::SessionOpened`]: a client finished its hello and was
//!   admitted; who (user id, channel, role), from where (country, region,
//!   minimised IP) and with which SDK.
//! - [`EventKind::SessionClosed`]: the session ended; its duration, traffic
//!   counters and the close code (`None` for a normal close).
//! - [`EventKind::TrackPublished`] / [`EventKind::TrackUnpublished`]: a track
//!   appeared or went away, with the subscriber count at that moment.
//! - [`EventKind::QualitySample`]: a periodic (default 10 s) quality sample of
//!   one session: loss, bitrates, RTT, jitter and drops by reason.
//! - [`EventKind::Geofence`]: a geofence decision (admit, redirect, deny,
//!   route chosen, no route, revoke).
//! - [`EventKind::LinkUp`] / [`EventKind::LinkDown`]: a mesh link to a peer
//!   node came up (with its RTT) or went down.
//! - [`EventKind::ConnectionsRefused`]: connections the accept gate refused
//!   or closed before `HELLO` (per-address cap, total cap, no `HELLO` permit
//!   left, `HELLO` deadline), counted per reason and minimised source
//!   address over a short window, so that a flood is a few rows. No app.
//! - [`EventKind::Traffic`]: what the node carried for one app over one
//!   traffic interval in one direction, from or to one peer (clients or a
//!   node), under one policy version; `at_ms` is the interval's start.
//! - [`EventKind::TrafficInterval`]: the node reported this interval (with
//!   or without traffic): what lets an audit tell "carried nothing" from
//!   "did not report". No app.
//! - [`EventKind::Policy`]: the canonical geofence policy of a version, so
//!   that an audit can judge records of past versions. No app.
//!
//! Nothing here can hold media payload, a token or a secret: there is no
//! byte-buffer field, and the only address type is the already minimised
//! [`MinimisedIp`]. Free-text fields are identifiers and reasons chosen by the
//! relay.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::{CanonicalPolicy, PolicyVersion};
use crate::error::ErrorCode;
use crate::ids::{AppId, CountryCode, NodeId, RegionId};
use crate::metadata::ip::MinimisedIp;

/// One operational event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// When it happened, in Unix milliseconds.
    pub at_ms: u64,
    /// The node that recorded it.
    pub node: NodeId,
    /// The region of that node.
    pub region: RegionId,
    /// The app it concerns; `None` for mesh link events.
    pub app: Option<AppId>,
    /// What happened.
    pub kind: EventKind,
}

/// The role a client session holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionRole {
    /// May publish tracks.
    Publish,
    /// May subscribe to tracks.
    Subscribe,
}

/// The kind of media a track carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    /// Audio frames.
    Audio,
    /// Video frames.
    Video,
    /// Application data messages.
    Data,
}

/// What the SDK said about itself in its hello.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SdkInfo {
    /// SDK name, e.g. `georelay-rust`.
    pub name: String,
    /// SDK version.
    pub version: String,
    /// Device type, e.g. `desktop`, `phone`.
    pub device: String,
    /// Operating system.
    pub os: String,
    /// Network type, e.g. `wifi`, `cellular`.
    pub network: String,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A client session was admitted.
    SessionOpened {
        /// Node-unique session id.
        session_id: u64,
        /// The user id from the token.
        user: String,
        /// The channel from the token.
        channel: String,
        /// The role from the token.
        role: SessionRole,
        /// The client's geolocated country, if known.
        #[serde(with = "text_form::optional", default)]
        client_country: Option<CountryCode>,
        /// The region of that country, if any.
        #[serde(with = "text_form::optional", default)]
        client_region: Option<RegionId>,
        /// The client address after minimisation. Stored in its own column
        /// (so that the sweeper can remove full addresses), not in the detail.
        #[serde(skip)]
        client_ip: MinimisedIp,
        /// The SDK's self-description.
        sdk: SdkInfo,
    },
    /// A client session ended.
    SessionClosed {
        /// The session id of the matching `SessionOpened`.
        session_id: u64,
        /// How long the session lasted.
        duration_ms: u64,
        /// Bytes received from the client.
        bytes_in: u64,
        /// Bytes sent to the client.
        bytes_out: u64,
        /// Packets received from the client.
        packets_in: u64,
        /// Packets sent to the client.
        packets_out: u64,
        /// Why it ended; `None` for a normal close.
        #[serde(with = "text_form::optional", default)]
        close_code: Option<ErrorCode>,
    },
    /// A track was published.
    TrackPublished {
        /// The publishing session.
        session_id: u64,
        /// The track name.
        track: String,
        /// What the track carries.
        kind: TrackKind,
        /// Subscribers at this moment.
        subscribers: u32,
    },
    /// A track was unpublished.
    TrackUnpublished {
        /// The publishing session.
        session_id: u64,
        /// The track name.
        track: String,
        /// What the track carried.
        kind: TrackKind,
        /// Subscribers at this moment.
        subscribers: u32,
    },
    /// A periodic quality sample of one session.
    QualitySample {
        /// The sampled session.
        session_id: u64,
        /// Lost packets / expected packets over the interval, 0.0..=1.0.
        loss_ratio: f64,
        /// Bitrate received from the client.
        bitrate_in_bps: u64,
        /// Bitrate sent to the client.
        bitrate_out_bps: u64,
        /// Smoothed RTT from the QUIC path stats.
        rtt_ms: f64,
        /// Interarrival jitter, where measurable.
        jitter_ms: Option<f64>,
        /// Packets dropped over the interval, by reason.
        drops: BTreeMap<String, u64>,
    },
    /// A geofence decision.
    Geofence {
        /// The session it concerns, when one exists.
        session_id: Option<u64>,
        /// The decision.
        decision: GeofenceDecision,
    },
    /// A mesh link came up.
    LinkUp {
        /// The peer node.
        #[serde(with = "text_form::one")]
        peer: NodeId,
        /// Measured RTT.
        rtt_ms: f64,
    },
    /// A mesh link went down.
    LinkDown {
        /// The peer node.
        #[serde(with = "text_form::one")]
        peer: NodeId,
        /// Why.
        reason: String,
    },
    /// Connections refused before `HELLO`, from one minimised source
    /// address for one reason, since the previous such event.
    ConnectionsRefused {
        /// `address_full`, `node_full`, `awaiting_hello_full` or
        /// `hello_deadline`.
        reason: String,
        /// How many.
        count: u64,
        /// The source address after minimisation, in its own column (as for
        /// `SessionOpened`).
        #[serde(skip)]
        client_ip: MinimisedIp,
    },
    /// Media of one app carried over one traffic interval, in one
    /// direction, from or to one peer. The event's `at_ms` is the start of
    /// the interval.
    Traffic {
        /// The interval's length.
        interval_ms: u64,
        /// Received (`in`) or forwarded (`out`).
        direction: Direction,
        /// Where it came from or went to.
        peer: TrafficPeer,
        /// Media packets.
        packets: u64,
        /// Media bytes (whole datagrams and messages, headers included).
        bytes: u64,
        /// The policy version in force over the interval.
        policy_version: PolicyVersion,
    },
    /// The node reported a traffic interval (starting at the event's
    /// `at_ms`), whether or not it carried anything.
    TrafficInterval {
        /// The interval's length.
        interval_ms: u64,
        /// The policy version in force over the interval.
        policy_version: PolicyVersion,
    },
    /// The canonical geofence policy of a version, recorded when a node
    /// starts, reloads and on the first interval of each UTC day.
    Policy {
        /// Its version (the hash of `policy`).
        version: PolicyVersion,
        /// The policy.
        policy: Box<CanonicalPolicy>,
    },
}

/// A geofence decision, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum GeofenceDecision {
    /// The client may use this node.
    Admitted,
    /// Wrong node for this app; the client was sent to these nodes.
    Redirected {
        /// Alternative nodes, nearest first.
        #[serde(with = "text_form::list")]
        to: Vec<NodeId>,
    },
    /// The client was refused.
    Denied {
        /// The stable error code sent to the client.
        #[serde(with = "text_form::one")]
        code: ErrorCode,
        /// A human-readable reason.
        reason: String,
    },
    /// Media between nodes will take this path.
    RouteChosen {
        /// The nodes, source first.
        #[serde(with = "text_form::list")]
        path: Vec<NodeId>,
    },
    /// No allowed path exists.
    RouteUnavailable {
        /// Why.
        reason: String,
    },
    /// A live session was ended by a policy change.
    Revoked {
        /// Why.
        reason: String,
    },
}

impl EventKind {
    /// The stable kind name stored in the `kind` column, e.g. `session_opened`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::SessionOpened { .. } => "session_opened",
            EventKind::SessionClosed { .. } => "session_closed",
            EventKind::TrackPublished { .. } => "track_published",
            EventKind::TrackUnpublished { .. } => "track_unpublished",
            EventKind::QualitySample { .. } => "quality_sample",
            EventKind::Geofence { .. } => "geofence",
            EventKind::LinkUp { .. } => "link_up",
            EventKind::LinkDown { .. } => "link_down",
            EventKind::ConnectionsRefused { .. } => "connections_refused",
            EventKind::Traffic { .. } => "traffic",
            EventKind::TrafficInterval { .. } => "traffic_interval",
            EventKind::Policy { .. } => "policy",
        }
    }

    /// The session this event concerns, if any (the indexed `session_id`
    /// column).
    pub fn session_id(&self) -> Option<u64> {
        match self {
            EventKind::SessionOpened { session_id, .. }
            | EventKind::SessionClosed { session_id, .. }
            | EventKind::TrackPublished { session_id, .. }
            | EventKind::TrackUnpublished { session_id, .. }
            | EventKind::QualitySample { session_id, .. } => Some(*session_id),
            EventKind::Geofence { session_id, .. } => *session_id,
            EventKind::LinkUp { .. }
            | EventKind::LinkDown { .. }
            | EventKind::ConnectionsRefused { .. }
            | EventKind::Traffic { .. }
            | EventKind::TrafficInterval { .. }
            | EventKind::Policy { .. } => None,
        }
    }

    /// The client address, for `SessionOpened` and `ConnectionsRefused`.
    pub fn client_ip(&self) -> Option<MinimisedIp> {
        match self {
            EventKind::SessionOpened { client_ip, .. }
            | EventKind::ConnectionsRefused { client_ip, .. } => Some(*client_ip),
            _ => None,
        }
    }
}

/// Which way media went, seen from the recording node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Received by the node.
    In,
    /// Forwarded by the node.
    Out,
}

/// Where media came from or went to: the node's own clients, or a peer node.
/// Written `clients` or `node:<id>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrafficPeer {
    /// Client sessions on this node (any transport).
    Clients,
    /// A peer node over a mesh link.
    Node(NodeId),
}

impl TrafficPeer {
    const NODE_PREFIX: &'static str = "node:";

    /// The peer node, if the peer is one.
    pub fn node(&self) -> Option<&NodeId> {
        match self {
            TrafficPeer::Clients => None,
            TrafficPeer::Node(node) => Some(node),
        }
    }

    /// Parses `clients` or `node:<id>`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "clients" => Some(TrafficPeer::Clients),
            _ => text
                .strip_prefix(Self::NODE_PREFIX)
                .filter(|id| !id.is_empty())
                .map(|id| TrafficPeer::Node(NodeId::from(id))),
        }
    }
}

impl fmt::Display for TrafficPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrafficPeer::Clients => f.write_str("clients"),
            TrafficPeer::Node(node) => write!(f, "{}{node}", Self::NODE_PREFIX),
        }
    }
}

impl Serialize for TrafficPeer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TrafficPeer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid traffic peer {text:?}: expected clients or node:<id>"
            ))
        })
    }
}

/// The stored form of an event: indexed columns plus a JSON detail. Both
/// stores write and read exactly this.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StoredRow {
    pub(crate) at_ms: i64,
    pub(crate) node: String,
    pub(crate) region: String,
    pub(crate) app: Option<String>,
    pub(crate) kind: &'static str,
    pub(crate) session_id: Option<i64>,
    pub(crate) client_ip: Option<String>,
    pub(crate) detail: String,
}

/// A stored row that could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The JSON detail does not describe an event of this version.
    #[error("event detail is not valid: {0}")]
    Detail(#[from] serde_json::Error),
    /// The client address column holds something no store writes.
    #[error("stored client address {0:?} is not valid")]
    ClientIp(String),
    /// A column is out of range.
    #[error("stored {0} is out of range")]
    OutOfRange(&'static str),
}

impl Event {
    pub(crate) fn to_row(&self) -> Result<StoredRow, serde_json::Error> {
        let client_ip = self.kind.client_ip().unwrap_or_default();
        Ok(StoredRow {
            at_ms: i64::try_from(self.at_ms).unwrap_or(i64::MAX),
            node: self.node.to_string(),
            region: self.region.to_string(),
            app: self.app.as_ref().map(ToString::to_string),
            kind: self.kind.name(),
            session_id: self
                .kind
                .session_id()
                .map(|id| i64::from_ne_bytes(id.to_ne_bytes())),
            client_ip: client_ip.to_stored(),
            detail: serde_json::to_string(&self.kind)?,
        })
    }

    /// Rebuilds an event from stored columns.
    pub(crate) fn from_columns(
        at_ms: i64,
        node: &str,
        region: &str,
        app: Option<&str>,
        client_ip: Option<&str>,
        detail: &str,
    ) -> Result<Self, DecodeError> {
        let mut kind: EventKind = serde_json::from_str(detail)?;
        if let EventKind::SessionOpened { client_ip: ip, .. }
        | EventKind::ConnectionsRefused { client_ip: ip, .. } = &mut kind
        {
            *ip = MinimisedIp::from_stored(client_ip)
                .ok_or_else(|| DecodeError::ClientIp(client_ip.unwrap_or_default().to_owned()))?;
        }
        Ok(Event {
            at_ms: u64::try_from(at_ms).map_err(|_| DecodeError::OutOfRange("at_ms"))?,
            node: NodeId::from(node),
            region: RegionId::from(region),
            app: app.map(AppId::from),
            kind,
        })
    }
}

/// Serde helpers that write ids and codes as their text form.
mod text_form {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::error::ErrorCode;
    use crate::ids::{CountryCode, NodeId, RegionId};

    pub(super) trait TextForm: Sized {
        fn text(&self) -> &str;
        fn from_text(text: &str) -> Option<Self>;
    }

    impl TextForm for NodeId {
        fn text(&self) -> &str {
            self.as_str()
        }
        fn from_text(text: &str) -> Option<Self> {
            Some(Self::from(text))
        }
    }

    impl TextForm for RegionId {
        fn text(&self) -> &str {
            self.as_str()
        }
        fn from_text(text: &str) -> Option<Self> {
            Some(Self::from(text))
        }
    }

    impl TextForm for CountryCode {
        fn text(&self) -> &str {
            self.as_str()
        }
        fn from_text(text: &str) -> Option<Self> {
            Self::parse(text)
        }
    }

    impl TextForm for ErrorCode {
        fn text(&self) -> &str {
            self.name()
        }
        fn from_text(text: &str) -> Option<Self> {
            Self::from_name(text)
        }
    }

    fn parse<'de, D: Deserializer<'de>, T: TextForm>(text: &str) -> Result<T, D::Error> {
        T::from_text(text).ok_or_else(|| D::Error::custom(format!("invalid value {text:?}")))
    }

    pub(super) mod one {
        use super::*;

        pub(crate) fn serialize<S: Serializer, T: TextForm>(
            value: &T,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            serializer.serialize_str(value.text())
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: TextForm>(
            deserializer: D,
        ) -> Result<T, D::Error> {
            parse::<D, T>(&String::deserialize(deserializer)?)
        }
    }

    pub(super) mod optional {
        use super::*;

        pub(crate) fn serialize<S: Serializer, T: TextForm>(
            value: &Option<T>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(value) => serializer.serialize_some(value.text()),
                None => serializer.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: TextForm>(
            deserializer: D,
        ) -> Result<Option<T>, D::Error> {
            Option::<String>::deserialize(deserializer)?
                .map(|text| parse::<D, T>(&text))
                .transpose()
        }
    }

    pub(super) mod list {
        use serde::ser::SerializeSeq;

        use super::*;

        pub(crate) fn serialize<S: Serializer, T: TextForm>(
            values: &[T],
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(values.len()))?;
            for value in values {
                seq.serialize_element(value.text())?;
            }
            seq.end()
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: TextForm>(
            deserializer: D,
        ) -> Result<Vec<T>, D::Error> {
            Vec::<String>::deserialize(deserializer)?
                .iter()
                .map(|text| parse::<D, T>(text))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IpMode;
    use crate::metadata::ip::minimise;

    fn sample_events() -> Vec<Event> {
        let base = |kind| Event {
            at_ms: 1_795_000_000_000,
            node: NodeId::from("eu-fra-1"),
            region: RegionId::from("eu"),
            app: Some(AppId::from("acme")),
            kind,
        };
        vec![
            base(EventKind::SessionOpened {
                session_id: u64::MAX,
                user: "u1".into(),
                channel: "c1".into(),
                role: SessionRole::Publish,
                client_country: CountryCode::parse("DE"),
                client_region: Some(RegionId::from("eu")),
                client_ip: minimise("192.0.2.44".parse().unwrap(), IpMode::Full),
                sdk: SdkInfo {
                    name: "rust".into(),
                    version: "0.1".into(),
                    device: "desktop".into(),
                    os: "linux".into(),
                    network: "wifi".into(),
                },
            }),
            base(EventKind::SessionClosed {
                session_id: 7,
                duration_ms: 60_000,
                bytes_in: 10,
                bytes_out: 20,
                packets_in: 1,
                packets_out: 2,
                close_code: Some(ErrorCode::GeofenceRevoked),
            }),
            base(EventKind::QualitySample {
                session_id: 7,
                loss_ratio: 0.1 + 0.2,
                bitrate_in_bps: 1,
                bitrate_out_bps: 2,
                rtt_ms: 12.345_678_9,
                jitter_ms: None,
                drops: BTreeMap::from([("queue_full".into(), 3)]),
            }),
            base(EventKind::Geofence {
                session_id: None,
                decision: GeofenceDecision::Redirected {
                    to: vec![NodeId::from("us-iad-1")],
                },
            }),
            base(EventKind::Geofence {
                session_id: Some(3),
                decision: GeofenceDecision::Denied {
                    code: ErrorCode::GeofenceDenied,
                    reason: "country RU denied".into(),
                },
            }),
            base(EventKind::Traffic {
                interval_ms: 60_000,
                direction: Direction::Out,
                peer: TrafficPeer::Node(NodeId::from("uk-lon-1")),
                packets: 12,
                bytes: 3400,
                policy_version: "0123456789abcdef".parse().unwrap(),
            }),
            Event {
                app: None,
                ..base(EventKind::TrafficInterval {
                    interval_ms: 60_000,
                    policy_version: "0123456789abcdef".parse().unwrap(),
                })
            },
            Event {
                app: None,
                ..base(EventKind::LinkUp {
                    peer: NodeId::from("us-iad-1"),
                    rtt_ms: 80.0,
                })
            },
        ]
    }

    #[test]
    fn events_round_trip_through_the_stored_form() {
        for event in sample_events() {
            let row = event.to_row().unwrap();
            let back = Event::from_columns(
                row.at_ms,
                &row.node,
                &row.region,
                row.app.as_deref(),
                row.client_ip.as_deref(),
                &row.detail,
            )
            .unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn client_ip_lives_only_in_its_column() {
        let opened = &sample_events()[0];
        let row = opened.to_row().unwrap();
        assert_eq!(row.client_ip.as_deref(), Some("192.0.2.44"));
        assert!(!row.detail.contains("192.0.2"), "{}", row.detail);
        assert_eq!(row.session_id, Some(-1), "u64 ids are stored bit-for-bit");
    }
}
