//! The stable error codes of the contract (DESIGN.md, "Error codes").
//!
//! One enum serves the wire protocol (as a QUIC application close code and in
//! `ERROR` frames), logs, metadata and the CLI. Names are never reused.

use std::fmt;

/// A stable, named error code. The numeric value is the wire code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// Bad, expired or foreign token, or a role that does not permit the action.
    Unauthorized = 0x01,
    /// Wrong node for this app; the error carries alternative nodes.
    GeofenceRedirect = 0x02,
    /// The client's location is not allowed for this app.
    GeofenceDenied = 0x03,
    /// No path through allowed nodes exists right now.
    RouteUnavailable = 0x04,
    /// The policy changed under a live session; carries alternative nodes.
    GeofenceRevoked = 0x05,
    /// The peer broke the wire protocol (malformed frame, bad state).
    ProtocolViolation = 0x06,
    /// A size, rate or count limit was exceeded.
    LimitExceeded = 0x07,
    /// The named app, node, track or channel does not exist.
    NotFound = 0x08,
    /// The node is draining; carries alternative nodes.
    ShuttingDown = 0x09,
    /// The peer speaks a protocol version this node does not.
    UnsupportedVersion = 0x0a,
    /// A bug or resource failure inside the relay.
    InternalError = 0x0b,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::Unauthorized,
        ErrorCode::GeofenceRedirect,
        ErrorCode::GeofenceDenied,
        ErrorCode::RouteUnavailable,
        ErrorCode::GeofenceRevoked,
        ErrorCode::ProtocolViolation,
        ErrorCode::LimitExceeded,
        ErrorCode::NotFound,
        ErrorCode::ShuttingDown,
        ErrorCode::UnsupportedVersion,
        ErrorCode::InternalError,
    ];

    /// The stable name, e.g. `"GEOFENCE_REDIRECT"`.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::GeofenceRedirect => "GEOFENCE_REDIRECT",
            ErrorCode::GeofenceDenied => "GEOFENCE_DENIED",
            ErrorCode::RouteUnavailable => "ROUTE_UNAVAILABLE",
            ErrorCode::GeofenceRevoked => "GEOFENCE_REVOKED",
            ErrorCode::ProtocolViolation => "PROTOCOL_VIOLATION",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// The numeric wire code.
    pub const fn to_wire(self) -> u64 {
        self as u64
    }

    /// Maps a wire code back; `None` for codes this version does not know.
    pub fn from_wire(code: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.to_wire() == code)
    }

    /// Maps a stable name back (as printed in logs and JSON).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_by_number_and_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_wire(code.to_wire()), Some(code));
            assert_eq!(ErrorCode::from_name(code.name()), Some(code));
        }
        assert_eq!(ErrorCode::from_wire(0), None);
        assert_eq!(ErrorCode::from_wire(0xff), None);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}
