//! Interarrival jitter of a publisher's media, as RFC 3550 (§6.4.1) defines
//! it: the smoothed mean deviation of the spacing between arrivals from the
//! spacing between the sender's timestamps. Measured per track at the node
//! the publisher is connected to; the session's figure is the largest of its
//! tracks'. No clock is read here: arrival times are arguments.

use std::collections::HashMap;

/// The jitter estimator of one session.
#[derive(Debug, Default)]
pub struct JitterMeter {
    tracks: HashMap<u64, TrackJitter>,
}

#[derive(Debug, Clone, Copy)]
struct TrackJitter {
    packets: u64,
    last_sent_us: u64,
    last_arrival_us: u64,
    jitter_us: f64,
}

impl JitterMeter {
    /// Accounts one packet of `track` sent at `sent_us` (the sender's
    /// timestamp) that arrived at `arrival_us` (this node's monotonic clock).
    pub fn observe(&mut self, track: u64, sent_us: u64, arrival_us: u64) {
        match self.tracks.get_mut(&track) {
            Some(state) => {
                let arrival_gap = arrival_us as f64 - state.last_arrival_us as f64;
                let sent_gap = sent_us as f64 - state.last_sent_us as f64;
                let deviation = (arrival_gap - sent_gap).abs();
                state.jitter_us += (deviation - state.jitter_us) / 16.0;
                state.last_sent_us = sent_us;
                state.last_arrival_us = arrival_us;
                state.packets += 1;
            }
            None => {
                self.tracks.insert(
                    track,
                    TrackJitter {
                        packets: 1,
                        last_sent_us: sent_us,
                        last_arrival_us: arrival_us,
                        jitter_us: 0.0,
                    },
                );
            }
        }
    }

    /// The largest jitter of any track, in µs; `None` before two packets of
    /// one track arrived.
    pub fn jitter_us(&self) -> Option<f64> {
        self.tracks
            .values()
            .filter(|t| t.packets >= 2)
            .map(|t| t.jitter_us)
            .fold(None, |max, j| Some(max.map_or(j, |m: f64| m.max(j))))
    }

    /// Forgets a track (unannounced).
    pub fn forget(&mut self, track: u64) {
        self.tracks.remove(&track);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenly_spaced_packets_have_no_jitter() {
        let mut meter = JitterMeter::default();
        for i in 0..100u64 {
            meter.observe(7, i * 20_000, 1_000_000 + i * 20_000);
        }
        assert_eq!(meter.jitter_us(), Some(0.0));
    }

    #[test]
    fn alternating_delay_converges_to_the_deviation() {
        let mut meter = JitterMeter::default();
        // Every other packet arrives 2 ms late: each gap deviates by 2 ms.
        for i in 0..2_000u64 {
            let late = if i % 2 == 1 { 2_000 } else { 0 };
            meter.observe(1, i * 20_000, 1_000_000 + i * 20_000 + late);
        }
        let jitter = meter.jitter_us().expect("measured");
        assert!((jitter - 2_000.0).abs() < 1.0, "{jitter}");
    }

    #[test]
    fn the_session_reports_its_worst_track() {
        let mut meter = JitterMeter::default();
        for i in 0..500u64 {
            meter.observe(1, i * 10_000, i * 10_000);
            let late = if i % 2 == 1 { 500 } else { 0 };
            meter.observe(2, i * 10_000, i * 10_000 + late);
        }
        let jitter = meter.jitter_us().expect("measured");
        assert!((jitter - 500.0).abs() < 1.0, "{jitter}");
        meter.forget(2);
        assert_eq!(meter.jitter_us(), Some(0.0));
    }

    #[test]
    fn nothing_measured_before_two_packets() {
        let mut meter = JitterMeter::default();
        assert_eq!(meter.jitter_us(), None);
        meter.observe(3, 0, 5);
        assert_eq!(meter.jitter_us(), None);
        meter.observe(3, 20_000, 20_005);
        assert_eq!(meter.jitter_us(), Some(0.0));
    }
}
