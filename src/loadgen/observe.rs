//! The run seen while it happens: once a second, a [`Snapshot`] of what was
//! sent and received so far and the latency of the last second, handed to
//! an observer (the CLI's progress line and `--series` file).
//!
//! Packets still in flight count as lost in a snapshot until they arrive;
//! only the final [`super::Summary`] is exact.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{Latency, MAX_LATENCY_US, Shared, latency};

/// Called once a second with the run so far.
pub type Observer = Box<dyn FnMut(&Snapshot) + Send>;

/// The run so far, once a second from the start of the send phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// Seconds since the send phase started.
    pub t_s: f64,
    /// Packets sent so far.
    pub sent: u64,
    /// What the subscribers expect of what was sent so far.
    pub expected: u64,
    /// Distinct packets received so far.
    pub received: u64,
    /// `expected − received` (in-flight packets included).
    pub lost: u64,
    /// `lost / expected`.
    pub loss_ratio: f64,
    /// Packets received in the last interval.
    pub interval_received: u64,
    /// Latency of the packets received in the last interval (2 significant digits).
    pub interval_latency_us: Latency,
    /// 99th percentile latency since the start.
    pub p99_us: Option<u64>,
}

/// The task that takes the snapshots.
pub(super) struct Ticker {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    pub(super) fn spawn(shared: Arc<Shared>, mut observer: Observer) -> Ticker {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let started = crate::clock::monotonic_now();
            let Ok(mut total) = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 2) else {
                return;
            };
            let mut last_received = 0;
            let mut ticks = tokio::time::interval_at(
                crate::clock::timer_now() + Duration::from_secs(1),
                Duration::from_secs(1),
            );
            loop {
                let last = tokio::select! {
                    _ = ticks.tick() => false,
                    _ = &mut stopped => true,
                };
                let snapshot = take(&shared, started, &mut total, &mut last_received);
                observer(&snapshot);
                if last {
                    return;
                }
            }
        });
        Ticker { stop, task }
    }

    /// Takes a last snapshot and stops.
    pub(super) async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

fn take(
    shared: &Shared,
    started: Instant,
    total: &mut Histogram<u64>,
    last_received: &mut u64,
) -> Snapshot {
    let Ok(mut interval) = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 2) else {
        return Snapshot::default();
    };
    let mut received = 0;
    let mut expected = 0;
    for (slot, progress) in shared.subscribers.iter().enumerate() {
        received += progress.received.load(Ordering::Relaxed);
        expected += shared.expected(slot);
        if let Some(h) = &progress.interval {
            let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
            // Same bounds and precision: adding cannot fail.
            let _ = interval.add(&*h);
            h.reset();
        }
    }
    let _ = total.add(&interval);
    let sent = shared.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum();
    let lost = expected.saturating_sub(received);
    let snapshot = Snapshot {
        t_s: started.elapsed().as_secs_f64(),
        sent,
        expected,
        received,
        lost,
        loss_ratio: super::ratio(lost, expected),
        interval_received: received.saturating_sub(*last_received),
        interval_latency_us: latency(&interval),
        p99_us: (!total.is_empty()).then(|| total.value_at_quantile(0.99)),
    };
    *last_received = received;
    snapshot
}
