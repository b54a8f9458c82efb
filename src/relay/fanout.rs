//! Fan-out primitives: per-receiver bounded queues that drop rather than
//! delay real-time media, and per-app traffic counters.
//!
//! A datagram is a `Bytes`; fanning it out to N receivers clones the handle N
//! times (a reference count), never the payload. Each receiver (a subscriber
//! session or a mesh peer) has its own [`DatagramQueue`], drained by its own
//! writer task, so one slow receiver never stalls the publisher or the others:
//! when its queue is full the oldest datagram is dropped and counted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::admin::AppTraffic;

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

/// One queued datagram and the app it is counted against.
pub type Queued = (Bytes, Arc<AppCounters>);

/// A bounded queue of datagrams to one receiver; drops the oldest when full.
#[derive(Debug)]
pub struct DatagramQueue {
    queue: Mutex<VecDeque<Queued>>,
    capacity: usize,
    ready: Notify,
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
            queue: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            drops: DropCounters::default(),
            sent: AppCounters::default(),
            node_drops,
        }
    }

    /// Queues a datagram without waiting. When full, the oldest queued
    /// datagram is dropped (fresher media is worth more) and counted.
    pub fn push(&self, datagram: Bytes, app: &Arc<AppCounters>) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let dropped = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let dropped = if queue.len() >= self.capacity {
                queue.pop_front().is_some()
            } else {
                false
            };
            queue.push_back((datagram, Arc::clone(app)));
            dropped
        };
        if dropped {
            self.count_drop(DropReason::QueueFull);
        }
        self.ready.notify_one();
    }

    /// Counts a drop against this receiver and the node.
    pub fn count_drop(&self, reason: DropReason) {
        self.drops.count(reason);
        self.node_drops.count(reason);
    }

    /// Waits for the next datagram; `None` once closed.
    pub async fn pop(&self) -> Option<Queued> {
        loop {
            let notified = self.ready.notified();
            if let Some(item) = self
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                return Some(item);
            }
            if self.closed.load(Ordering::Relaxed) {
                return None;
            }
            notified.await;
        }
    }

    /// The next datagram if one is queued, without waiting (for drivers
    /// that drain queues themselves, such as a simulated network).
    pub fn try_pop(&self) -> Option<Queued> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// Closes the queue: queued datagrams are discarded and the writer ends.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.ready.notify_one();
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
    pub fn push(&self, framed: Bytes, app: &Arc<AppCounters>) {
        if self.tx.try_send((framed, Arc::clone(app))).is_err() {
            self.drops.count(DropReason::MessageQueueFull);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_and_counts_it() {
        let node = Arc::new(DropCounters::default());
        let queue = DatagramQueue::new(2, Arc::clone(&node));
        let app = Arc::new(AppCounters::default());
        for i in 0..5u8 {
            queue.push(Bytes::from(vec![i]), &app);
        }
        assert_eq!(queue.drops.get(DropReason::QueueFull), 3);
        assert_eq!(node.get(DropReason::QueueFull), 3);
        assert_eq!(queue.pop().await.unwrap().0, Bytes::from(vec![3u8]));
        assert_eq!(queue.pop().await.unwrap().0, Bytes::from(vec![4u8]));
        queue.close();
        assert!(queue.pop().await.is_none());
    }
}
