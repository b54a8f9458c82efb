//! Fan-out primitives: per-receiver bounded queues that drop rather than
//! delay real-time media, and per-app traffic counters.
//!
//! A datagram is a `Bytes`; fanning it out to N receivers clones the handle N
//! times (a reference count), never the payload. Each receiver (a subscriber
//! session or a mesh peer) has its own [`DatagramQueue`], its datagram
//! outlet, so one slow receiver never stalls the publisher or the others:
//!
//! - a **direct** outlet (client sessions and mesh links) hands each
//!   datagram straight to the connection's own bounded send buffer from the
//!   publisher's ingress task ([`DatagramSink::offer`], never waiting): no
//!   queue, writer task or wake-up of ours per delivered packet. When that
//!   buffer is full QUIC discards its oldest datagram, counted here as a
//!   `queue_full` drop;
//! - a **queued** outlet (simulated networks and tests, which drain it
//!   themselves with [`DatagramQueue::try_pop`]) keeps a bounded queue; when
//!   full the oldest datagram is dropped and counted.
//!
//! Every packet is counted against a [`FlowCounters`]: its app's `/status`
//! counters and, when traffic records are on, the traffic counter of its
//! flow (app, direction, clients or peer node X). Routes resolve these once
//! per route entry; counting is a few relaxed atomic additions.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;

use crate::admin::AppTraffic;
use crate::metadata::TrafficCounter;

/// Packet and byte counters of one app at one node.
#[derive(Debug, Default)]
pub struct AppCounters {
    packets_in: AtomicU64,
    packets_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl AppCounters {
    /// Counts a packet received from a client or a peer.
    pub fn count_in(&self, bytes: usize) {
        self.packets_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a packet handed to QUIC for a subscriber or a peer.
    pub fn count_out(&self, bytes: usize) {
        self.packets_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A snapshot for `/status`.
    pub fn snapshot(&self) -> AppTraffic {
        AppTraffic {
            packets_in: self.packets_in.load(Ordering::Relaxed),
            packets_out: self.packets_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// What one flow of an app's media counts against at a node: the app's
/// counters, and the flow's traffic-record counter (app, direction, clients
/// or a peer node) when traffic records are on.
#[derive(Debug, Default)]
pub struct FlowCounters {
    app: Arc<AppCounters>,
    traffic: Option<Arc<TrafficCounter>>,
}

impl FlowCounters {
    /// Counts into `app`, and into `traffic` when given.
    pub fn new(app: Arc<AppCounters>, traffic: Option<Arc<TrafficCounter>>) -> Self {
        Self { app, traffic }
    }

    /// Counts a packet received from a client or a peer.
    pub fn count_in(&self, bytes: usize) {
        self.app.count_in(bytes);
        if let Some(traffic) = &self.traffic {
            traffic.add(bytes);
        }
    }

    /// Counts a packet handed to QUIC for a subscriber or a peer.
    pub fn count_out(&self, bytes: usize) {
        self.app.count_out(bytes);
        if let Some(traffic) = &self.traffic {
            traffic.add(bytes);
        }
    }

    /// The app's counters.
    pub fn app(&self) -> &Arc<AppCounters> {
        &self.app
    }
}

/// Why a packet was dropped instead of delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// A receiver's queue was full; the oldest packet made room.
    QueueFull,
    /// Larger than the receiver's QUIC path allows.
    TooLarge,
    /// A datagram for a track this sender does not own or this node does not
    /// carry, or from a peer that is not the track's upstream.
    UnknownTrack,
    /// A datagram whose header does not parse.
    Malformed,
    /// A reliable message a receiver could not take in time.
    MessageQueueFull,
}

impl DropReason {
    /// Every reason, for metrics and status.
    pub const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::TooLarge,
        DropReason::UnknownTrack,
        DropReason::Malformed,
        DropReason::MessageQueueFull,
    ];

    /// The label used in metrics and `/status`.
    pub const fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::TooLarge => "too_large",
            DropReason::UnknownTrack => "unknown_track",
            DropReason::Malformed => "malformed",
            DropReason::MessageQueueFull => "message_queue_full",
        }
    }
}

/// Drop counters by reason.
#[derive(Debug, Default)]
pub struct DropCounters {
    counts: [AtomicU64; DropReason::ALL.len()],
}

impl DropCounters {
    /// Counts one drop.
    pub fn count(&self, reason: DropReason) {
        self.counts[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize].load(Ordering::Relaxed)
    }
}

/// One queued packet and the flow it is counted against once sent.
pub type Queued = (Bytes, Arc<FlowCounters>);

/// What became of a datagram offered to a connection's send buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Buffered for sending; nothing was discarded.
    Sent,
    /// Buffered, but the buffer was full: the connection discarded its
    /// oldest buffered datagram(s) to make room.
    DisplacedOldest,
    /// Larger than the path allows right now; not sent.
    TooLarge,
    /// The connection is gone; not sent.
    Closed,
}

/// A connection that takes a datagram now, never waiting: the object-safe
/// face of a transport that a direct outlet sends through (every
/// [`super::transport::SessionTransport`] is one).
pub trait DatagramSink: Send + Sync + std::fmt::Debug {
    /// Hands `datagram` to the connection's bounded send buffer.
    fn offer(&self, datagram: Bytes) -> Offer;
}

/// The datagram outlet of one receiver (see the module docs): direct to its
/// connection's send buffer, or a bounded queue that drops the oldest when
/// full. Either way it counts what it sent and dropped, so that for every
/// datagram pushed exactly one of `sent`, a `queue_full` or a `too_large`
/// drop grows (or, for a queue, it is still waiting).
#[derive(Debug)]
pub struct DatagramQueue {
    direct: Option<Box<dyn DatagramSink>>,
    queue: Mutex<VecDeque<Queued>>,
    capacity: usize,
    closed: AtomicBool,
    /// This receiver's drops, by reason.
    pub drops: DropCounters,
    /// What this receiver was sent.
    pub sent: AppCounters,
    node_drops: Arc<DropCounters>,
}

impl DatagramQueue {
    /// A queue holding at most `capacity` datagrams; drops are also counted
    /// in `node_drops`.
    pub fn new(capacity: usize, node_drops: Arc<DropCounters>) -> Self {
        Self {
            direct: None,
            queue: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
            drops: DropCounters::default(),
            sent: AppCounters::default(),
            node_drops,
        }
    }

    /// A direct outlet into `sink`'s own send buffer: no queue and no
    /// writer task; drops are also counted in `node_drops`.
    pub fn direct(sink: Box<dyn DatagramSink>, node_drops: Arc<DropCounters>) -> Self {
        Self {
            direct: Some(sink),
            queue: Mutex::new(VecDeque::new()),
            capacity: 1,
            closed: AtomicBool::new(false),
            drops: DropCounters::default(),
            sent: AppCounters::default(),
            node_drops,
        }
    }

    /// Whether this outlet sends directly (nothing is queued to drain).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Sends or queues a datagram without waiting. When full, the oldest
    /// datagram is dropped (fresher media is worth more) and counted. On a
    /// direct outlet whose connection discarded an older datagram to take
    /// this one, the drop is counted in place of this send (the totals
    /// stay exact: one packet was lost, one will go out).
    pub fn push(&self, datagram: Bytes, flow: &Arc<FlowCounters>) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        if let Some(sink) = &self.direct {
            let len = datagram.len();
            match sink.offer(datagram) {
                Offer::Sent => {
                    flow.count_out(len);
                    self.sent.count_out(len);
                }
                Offer::DisplacedOldest => self.count_drop(DropReason::QueueFull),
                Offer::TooLarge => self.count_drop(DropReason::TooLarge),
                Offer::Closed => self.closed.store(true, Ordering::Relaxed),
            }
            return;
        }
        let dropped = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let dropped = if queue.len() >= self.capacity {
                queue.pop_front().is_some()
            } else {
                false
            };
            queue.push_back((datagram, Arc::clone(flow)));
            dropped
        };
        if dropped {
            self.count_drop(DropReason::QueueFull);
        }
    }

    /// Counts a drop against this receiver and the node.
    pub fn count_drop(&self, reason: DropReason) {
        self.drops.count(reason);
        self.node_drops.count(reason);
    }

    /// The next queued datagram, without waiting (for drivers that drain
    /// queues themselves, such as a simulated network).
    pub fn try_pop(&self) -> Option<Queued> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// Closes the outlet: queued datagrams are discarded and nothing more
    /// is taken.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// A bounded queue of reliable messages to one receiver, drained onto one
/// unidirectional stream. A receiver that falls this far behind loses
/// messages (counted), rather than holding memory without bound.
#[derive(Debug, Clone)]
pub struct MessageQueue {
    tx: tokio::sync::mpsc::Sender<Queued>,
    drops: Arc<DropCounters>,
}

impl MessageQueue {
    /// A queue of `capacity` messages and the receiving end for its writer.
    pub fn new(
        capacity: usize,
        drops: Arc<DropCounters>,
    ) -> (Self, tokio::sync::mpsc::Receiver<Queued>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        (Self { tx, drops }, rx)
    }

    /// Queues one framed message (track, length, payload) without waiting.
    pub fn push(&self, framed: Bytes, flow: &Arc<FlowCounters>) {
        if self.tx.try_send((framed, Arc::clone(flow))).is_err() {
            self.drops.count(DropReason::MessageQueueFull);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let node = Arc::new(DropCounters::default());
        let queue = DatagramQueue::new(2, Arc::clone(&node));
        let app = Arc::new(FlowCounters::default());
        for i in 0..5u8 {
            queue.push(Bytes::from(vec![i]), &app);
        }
        assert_eq!(queue.drops.get(DropReason::QueueFull), 3);
        assert_eq!(node.get(DropReason::QueueFull), 3);
        assert_eq!(queue.try_pop().unwrap().0, Bytes::from(vec![3u8]));
        assert_eq!(queue.try_pop().unwrap().0, Bytes::from(vec![4u8]));
        assert!(queue.try_pop().is_none());
        queue.push(Bytes::from(vec![5u8]), &app);
        queue.close();
        assert!(queue.try_pop().is_none(), "closing discards what is queued");
        queue.push(Bytes::from(vec![6u8]), &app);
        assert!(queue.try_pop().is_none(), "a closed queue takes nothing");
    }

    /// A connection whose send buffer holds `room` datagrams; beyond that
    /// it displaces its oldest, like quinn's.
    #[derive(Debug)]
    struct Buffer {
        room: usize,
        held: Mutex<VecDeque<Bytes>>,
    }

    impl DatagramSink for Arc<Buffer> {
        fn offer(&self, datagram: Bytes) -> Offer {
            if datagram.len() > 4 {
                return Offer::TooLarge;
            }
            let mut held = self.held.lock().unwrap();
            held.push_back(datagram);
            if held.len() > self.room {
                held.pop_front();
                Offer::DisplacedOldest
            } else {
                Offer::Sent
            }
        }
    }

    #[test]
    fn a_direct_outlet_counts_each_datagram_once_as_sent_or_dropped() {
        let node = Arc::new(DropCounters::default());
        let buffer = Arc::new(Buffer {
            room: 2,
            held: Mutex::default(),
        });
        let outlet = DatagramQueue::direct(Box::new(Arc::clone(&buffer)), Arc::clone(&node));
        assert!(outlet.is_direct());
        let traffic = Arc::new(TrafficCounter::default());
        let app = Arc::new(FlowCounters::new(
            Arc::default(),
            Some(Arc::clone(&traffic)),
        ));
        for i in 0..5u8 {
            outlet.push(Bytes::from(vec![i]), &app);
        }
        outlet.push(Bytes::from_static(b"too large"), &app);
        assert_eq!(outlet.sent.snapshot().packets_out, 2);
        assert_eq!(app.app().snapshot().packets_out, 2);
        assert_eq!(
            traffic.counts().packets,
            2,
            "the flow counts what was sent, not what was dropped"
        );
        assert_eq!(outlet.drops.get(DropReason::QueueFull), 3);
        assert_eq!(node.get(DropReason::QueueFull), 3);
        assert_eq!(node.get(DropReason::TooLarge), 1);
        let held: Vec<Bytes> = buffer.held.lock().unwrap().iter().cloned().collect();
        assert_eq!(
            held,
            vec![Bytes::from(vec![3u8]), Bytes::from(vec![4u8])],
            "the freshest datagrams are the ones kept"
        );
        assert!(outlet.try_pop().is_none(), "nothing is queued on our side");
        outlet.close();
        outlet.push(Bytes::from_static(b"x"), &app);
        assert_eq!(buffer.held.lock().unwrap().len(), 2, "closed: not sent");
    }
}
