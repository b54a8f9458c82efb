//! The accept loop's gates, sans-IO: what a node decides about a QUIC
//! `Incoming` before spending a handshake on it, and the bounds on
//! connections that have completed it but not yet sent `HELLO`.
//!
//! - [`AcceptGate::on_incoming`]: refuse when the node or the source address
//!   already has its most connections (`max_connections`,
//!   `max_connections_per_address`), ask for a stateless Retry when too many
//!   handshakes from unvalidated addresses are in progress
//!   (`retry_threshold`, or always with `retry_always`), accept otherwise.
//!   Accepting yields a [`ConnectionSlot`] that holds the counts until it is
//!   dropped (the connection's end).
//! - [`AcceptGate::await_hello`]: a permit from a semaphore of
//!   `max_pending_hello`, held from the end of the handshake until `HELLO`
//!   arrives or [`AcceptGate::hello_deadline`] passes.
//!
//! - Refusals are counted per reason and source address
//!   ([`AcceptGate::take_refused`]) for the metadata recorder, which writes
//!   them as a few aggregated events per window rather than one per packet
//!   of a flood; at most [`MAX_REFUSAL_SOURCES`] addresses are told apart
//!   per window, the rest counted without an address.
//!
//! A source address is an IPv4 address or an IPv6 /64 (one subscriber's
//! allocation: counting single IPv6 addresses would let one host open as many
//! connections as it has addresses). IPv4-mapped IPv6 counts as IPv4.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;

/// Why the gate refused a connection; [`Refusal::as_str`] is the metric
/// label and metadata reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The node holds `max_connections` already.
    NodeFull,
    /// The source address holds `max_connections_per_address` already.
    AddressFull,
    /// `max_pending_hello` connections are already waiting for `HELLO`.
    TooManyAwaitingHello,
    /// The connection sent no `HELLO` within the `HELLO` deadline.
    HelloDeadline,
}

impl Refusal {
    /// `node_full`, `address_full`, `awaiting_hello_full` or
    /// `hello_deadline`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NodeFull => "node_full",
            Refusal::AddressFull => "address_full",
            Refusal::TooManyAwaitingHello => "awaiting_hello_full",
            Refusal::HelloDeadline => "hello_deadline",
        }
    }
}

/// What to do with one QUIC `Incoming`.
#[derive(Debug)]
pub enum IncomingDecision {
    /// `incoming.accept()`, and keep the slot for the connection's life.
    Accept(ConnectionSlot),
    /// `incoming.retry()`: validate the address with a stateless Retry first.
    Retry,
    /// `incoming.refuse()` (a QUIC CONNECTION_REFUSED, no state kept).
    Refuse(Refusal),
}

/// The grouping key of a source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// One IPv4 address.
    V4(std::net::Ipv4Addr),
    /// One IPv6 /64 (the upper 64 bits).
    V6Prefix(u64),
}

impl SourceKey {
    /// The key of `ip` (IPv4-mapped IPv6 counts as IPv4).
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey::V4(v4),
            IpAddr::V6(v6) => SourceKey::V6Prefix(prefix_64(v6)),
        }
    }
}

fn prefix_64(ip: Ipv6Addr) -> u64 {
    (ip.to_bits() >> 64) as u64
}

/// The counts the gate keeps.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    unvalidated_handshakes: usize,
    per_source: HashMap<SourceKey, usize>,
}

/// The limits the gate enforces (from `[limits]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateLimits {
    /// `max_connections`.
    pub max_connections: usize,
    /// `max_connections_per_address`.
    pub max_per_source: usize,
    /// `retry_threshold`.
    pub retry_threshold: usize,
    /// `retry_always`.
    pub retry_always: bool,
    /// `max_pending_hello`.
    pub max_pending_hello: usize,
    /// `hello_timeout_ms`.
    pub hello_deadline: Duration,
}

impl GateLimits {
    /// The gate's part of `limits`.
    pub fn from_limits(limits: &Limits) -> GateLimits {
        GateLimits {
            max_connections: limits.max_connections,
            max_per_source: limits.max_connections_per_address,
            retry_threshold: limits.retry_threshold,
            retry_always: limits.retry_always,
            max_pending_hello: limits.max_pending_hello,
            hello_deadline: Duration::from_millis(limits.hello_timeout_ms),
        }
    }
}

/// Whether an Initial from an address not yet validated gets a Retry, with
/// `in_progress` unvalidated handshakes already under way.
pub fn needs_retry(limits: &GateLimits, address_validated: bool, in_progress: usize) -> bool {
    !address_validated && (limits.retry_always || in_progress >= limits.retry_threshold)
}

/// Source addresses told apart in the refusal counts of one window.
pub const MAX_REFUSAL_SOURCES: usize = 1024;

/// Refusals since the last [`AcceptGate::take_refused`].
#[derive(Debug, Default)]
struct RefusalCounts {
    by_source: HashMap<(Refusal, IpAddr), u64>,
    without_source: HashMap<Refusal, u64>,
}

impl RefusalCounts {
    fn note(&mut self, refusal: Refusal, ip: IpAddr) {
        let key = (refusal, ip.to_canonical());
        if let Some(count) = self.by_source.get_mut(&key) {
            *count += 1;
        } else if self.by_source.len() < MAX_REFUSAL_SOURCES {
            self.by_source.insert(key, 1);
        } else {
            *self.without_source.entry(refusal).or_default() += 1;
        }
    }
}

/// Refused connections of one reason from one source address (`None`: from
/// addresses beyond [`MAX_REFUSAL_SOURCES`]) over a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedConnections {
    /// Why.
    pub reason: Refusal,
    /// From where (not yet minimised).
    pub source: Option<IpAddr>,
    /// How many.
    pub count: u64,
}

/// The accept loop's gate of one node. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct AcceptGate {
    limits: GateLimits,
    counts: Arc<Mutex<Counts>>,
    awaiting_hello: Arc<Semaphore>,
    refused: Arc<Mutex<RefusalCounts>>,
}

impl AcceptGate {
    /// A gate enforcing `limits`.
    pub fn new(limits: GateLimits) -> AcceptGate {
        AcceptGate {
            limits,
            counts: Arc::default(),
            awaiting_hello: Arc::new(Semaphore::new(limits.max_pending_hello)),
            refused: Arc::default(),
        }
    }

    /// Counts a refusal of a connection from `ip` for the metadata.
    /// [`AcceptGate::on_incoming`] counts its own refusals.
    pub fn note_refusal(&self, refusal: Refusal, ip: IpAddr) {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(refusal, ip);
    }

    /// The refusals counted since the last call, by reason and source.
    pub fn take_refused(&self) -> Vec<RefusedConnections> {
        let counts = std::mem::take(&mut *self.refused.lock().unwrap_or_else(|e| e.into_inner()));
        let mut out: Vec<RefusedConnections> =
            counts
                .by_source
                .into_iter()
                .map(|((reason, ip), count)| RefusedConnections {
                    reason,
                    source: Some(ip),
                    count,
                })
                .chain(counts.without_source.into_iter().map(|(reason, count)| {
                    RefusedConnections {
                        reason,
                        source: None,
                        count,
                    }
                }))
                .collect();
        out.sort_by_key(|r| (r.reason.as_str(), r.source));
        out
    }

    /// Decides about an `Incoming` from `remote`; `address_validated` is
    /// `incoming.remote_address_validated()` (true after a Retry).
    pub fn on_incoming(&self, remote: SocketAddr, address_validated: bool) -> IncomingDecision {
        let key = SourceKey::of(remote.ip());
        let mut counts = self.lock();
        let refusal = if counts.total >= self.limits.max_connections {
            Some(Refusal::NodeFull)
        } else if counts.per_source.get(&key).copied().unwrap_or(0) >= self.limits.max_per_source {
            Some(Refusal::AddressFull)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            drop(counts);
            self.note_refusal(refusal, remote.ip());
            return IncomingDecision::Refuse(refusal);
        }
        if needs_retry(
            &self.limits,
            address_validated,
            counts.unvalidated_handshakes,
        ) {
            return IncomingDecision::Retry;
        }
        counts.total += 1;
        *counts.per_source.entry(key).or_insert(0) += 1;
        if !address_validated {
            counts.unvalidated_handshakes += 1;
        }
        IncomingDecision::Accept(ConnectionSlot {
            gate: self.clone(),
            key,
            handshaking_unvalidated: !address_validated,
        })
    }

    /// A permit to wait for `HELLO`, or [`Refusal::TooManyAwaitingHello`]
    /// when `max_pending_hello` connections already wait. Hold it until
    /// `HELLO` arrives or the deadline passes.
    pub fn await_hello(&self) -> Result<HelloPermit, Refusal> {
        Arc::clone(&self.awaiting_hello)
            .try_acquire_owned()
            .map(|permit| HelloPermit {
                _permit: permit,
                gate: self.clone(),
            })
            .map_err(|_| Refusal::TooManyAwaitingHello)
    }

    /// How long a connection may wait between its handshake and `HELLO`.
    pub fn hello_deadline(&self) -> Duration {
        self.limits.hello_deadline
    }

    /// A snapshot of the counts, for metrics and tests.
    pub fn stats(&self) -> GateStats {
        let counts = self.lock();
        GateStats {
            connections: counts.total,
            unvalidated_handshakes: counts.unvalidated_handshakes,
            sources: counts.per_source.len(),
            awaiting_hello: self.limits.max_pending_hello - self.awaiting_hello.available_permits(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the gate holds right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateStats {
    /// Connections holding a slot (handshaking or open).
    pub connections: usize,
    /// Handshakes from unvalidated addresses in progress.
    pub unvalidated_handshakes: usize,
    /// Distinct source keys with at least one connection.
    pub sources: usize,
    /// Connections waiting for `HELLO`.
    pub awaiting_hello: usize,
}

/// One connection's place in the gate's counts, released on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    gate: AcceptGate,
    key: SourceKey,
    handshaking_unvalidated: bool,
}

impl ConnectionSlot {
    /// The handshake ended (completed or failed): it no longer counts
    /// towards the Retry threshold. Idempotent.
    pub fn handshake_done(&mut self) {
        if std::mem::take(&mut self.handshaking_unvalidated) {
            let mut counts = self.gate.lock();
            counts.unvalidated_handshakes = counts.unvalidated_handshakes.saturating_sub(1);
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.handshake_done();
        let mut counts = self.gate.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_source.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.per_source.remove(&self.key);
            }
        }
    }
}

/// A connection's turn to send `HELLO`; released on drop.
#[derive(Debug)]
pub struct HelloPermit {
    _permit: OwnedSemaphorePermit,
    gate: AcceptGate,
}

impl HelloPermit {
    /// The connection from `ip` sent no `HELLO` in time: counted as a
    /// [`Refusal::HelloDeadline`], and the permit released.
    pub fn expired(self, ip: IpAddr) {
        self.gate.note_refusal(Refusal::HelloDeadline, ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> GateLimits {
        GateLimits {
            max_connections: 10,
            max_per_source: 3,
            retry_threshold: 2,
            retry_always: false,
            max_pending_hello: 2,
            hello_deadline: Duration::from_millis(5000),
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("socket address")
    }

    fn accept(gate: &AcceptGate, remote: &str, validated: bool) -> ConnectionSlot {
        match gate.on_incoming(addr(remote), validated) {
            IncomingDecision::Accept(slot) => slot,
            other => panic!("expected accept for {remote}, got {other:?}"),
        }
    }

    #[test]
    fn refusals_are_counted_per_reason_and_address_and_taken_once() {
        let gate = AcceptGate::new(limits());
        let _slots: Vec<_> = (0..3)
            .map(|port| accept(&gate, &format!("127.1.0.7:{}", 5000 + port), true))
            .collect();
        for port in 0..4 {
            let refused = gate.on_incoming(addr(&format!("127.1.0.7:{}", 7000 + port)), true);
            assert!(matches!(
                refused,
                IncomingDecision::Refuse(Refusal::AddressFull)
            ));
        }
        let permit = gate.await_hello().expect("a permit");
        permit.expired(addr("[::ffff:127.1.0.8]:1").ip());
        let ip = |text: &str| Some(text.parse::<IpAddr>().expect("ip"));
        assert_eq!(
            gate.take_refused(),
            [
                RefusedConnections {
                    reason: Refusal::AddressFull,
                    source: ip("127.1.0.7"),
                    count: 4
                },
                RefusedConnections {
                    reason: Refusal::HelloDeadline,
                    source: ip("127.1.0.8"),
                    count: 1
                },
            ]
        );
        assert_eq!(gate.take_refused(), []);
        assert_eq!(
            gate.stats().awaiting_hello,
            0,
            "the expired permit is released"
        );
    }

    #[test]
    fn refusal_counts_tell_apart_a_bounded_number_of_addresses() {
        let gate = AcceptGate::new(limits());
        for n in 0..MAX_REFUSAL_SOURCES as u32 + 10 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            gate.note_refusal(Refusal::NodeFull, ip);
        }
        let taken = gate.take_refused();
        assert_eq!(taken.len(), MAX_REFUSAL_SOURCES + 1);
        let rest = taken.iter().find(|r| r.source.is_none()).expect("the rest");
        assert_eq!(rest.count, 10);
    }

    #[test]
    fn the_k_plus_first_connection_from_one_address_is_refused_until_one_ends() {
        let gate = AcceptGate::new(limits());
        let mut slots: Vec<_> = (0..3)
            .map(|port| {
                let mut slot = accept(&gate, &format!("127.1.0.7:{}", 5000 + port), true);
                slot.handshake_done();
                slot
            })
            .collect();
        assert!(matches!(
            gate.on_incoming(addr("127.1.0.7:6000"), true),
            IncomingDecision::Refuse(Refusal::AddressFull)
        ));
        // Another address is unaffected.
        let _other = accept(&gate, "127.1.0.8:5000", true);
        slots.pop();
        let _again = accept(&gate, "127.1.0.7:6000", true);
        assert_eq!(gate.stats().sources, 2);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let gate = AcceptGate::new(limits());
        let _a = accept(&gate, "[2001:db8:1:2::1]:1", true);
        let _b = accept(&gate, "[2001:db8:1:2::ffff]:1", true);
        let _c = accept(&gate, "[2001:db8:1:2:aaaa::1]:1", true);
        assert!(matches!(
            gate.on_incoming(addr("[2001:db8:1:2:bbbb::9]:1"), true),
            IncomingDecision::Refuse(Refusal::AddressFull)
        ));
        let _d = accept(&gate, "[2001:db8:1:3::1]:1", true);
        assert_eq!(
            SourceKey::of("::ffff:10.0.0.1".parse().expect("ip")),
            SourceKey::of("10.0.0.1".parse().expect("ip"))
        );
    }

    #[test]
    fn the_node_total_is_enforced_across_addresses() {
        let gate = AcceptGate::new(GateLimits {
            max_connections: 4,
            ..limits()
        });
        let slots: Vec<_> = (0..4)
            .map(|n| accept(&gate, &format!("127.1.0.{n}:9"), true))
            .collect();
        assert!(matches!(
            gate.on_incoming(addr("127.1.0.99:9"), true),
            IncomingDecision::Refuse(Refusal::NodeFull)
        ));
        drop(slots);
        assert_eq!(gate.stats().connections, 0);
        assert_eq!(gate.stats().sources, 0, "no key left behind");
    }

    #[test]
    fn retry_starts_at_the_threshold_of_unvalidated_handshakes() {
        let gate = AcceptGate::new(limits());
        let mut first = accept(&gate, "127.1.0.1:1", false);
        let _second = accept(&gate, "127.1.0.2:1", false);
        assert!(matches!(
            gate.on_incoming(addr("127.1.0.3:1"), false),
            IncomingDecision::Retry
        ));
        // After the Retry the address is validated: accepted.
        let _validated = accept(&gate, "127.1.0.3:1", true);
        first.handshake_done();
        first.handshake_done();
        assert_eq!(gate.stats().unvalidated_handshakes, 1, "idempotent");
        let _fourth = accept(&gate, "127.1.0.4:1", false);
    }

    #[test]
    fn retry_always_asks_every_unvalidated_address() {
        let always = GateLimits {
            retry_always: true,
            ..limits()
        };
        assert!(needs_retry(&always, false, 0));
        assert!(!needs_retry(&always, true, 1000));
        assert!(!needs_retry(&limits(), false, 1));
        assert!(needs_retry(&limits(), false, 2));
        let zero = GateLimits {
            retry_threshold: 0,
            ..limits()
        };
        assert!(needs_retry(&zero, false, 0), "threshold 0 = always");
    }

    #[test]
    fn hello_permits_are_bounded_and_returned() {
        let gate = AcceptGate::new(limits());
        let first = gate.await_hello().expect("permit 1");
        let _second = gate.await_hello().expect("permit 2");
        assert_eq!(
            gate.await_hello().err(),
            Some(Refusal::TooManyAwaitingHello)
        );
        assert_eq!(gate.stats().awaiting_hello, 2);
        drop(first);
        assert!(gate.await_hello().is_ok());
        assert_eq!(gate.hello_deadline(), Duration::from_secs(5));
    }

    #[test]
    fn default_limits_make_a_sane_gate() {
        let limits = GateLimits::from_limits(&Limits::default());
        assert!(limits.max_per_source < limits.max_connections);
        assert!(limits.retry_threshold > 0 && !limits.retry_always);
        assert_eq!(limits.hello_deadline, Duration::from_secs(5));
    }
}
