//! Traffic shapes: what one publisher sends at each tick of its clock, and
//! the timing header at the start of every payload.
//!
//! | profile | tick | per tick | payload |
//! |---------|------|----------|---------|
//! | `raw`   | `1/rate` (≥ 1 ms) | `rate × duration` packets spread evenly | `--size` |
//! | `data`  | as `raw` | as `raw`, sent as reliable messages | `--size` |
//! | `audio` | 20 ms | 1 packet (50 pps) | 160 B |
//! | `video` | 1/30 s | 5 packets; a keyframe every 2 s (60 frames): 50 packets | 1,100 B |
//!
//! Video: a delta frame of ~5.5 kB and a keyframe ten times larger every
//! 2 s make (59 × 5 + 50) × 1,100 B × 8 / 2 s = 1.52 Mbit/s; a frame's
//! packets leave back to back at its tick, as an encoder hands them over,
//! so each keyframe is a 50-packet burst. Keyframe packets carry the
//! [`KEYFRAME_FLAG`] so subscribers measure loss and latency during bursts
//! apart.

use std::time::Duration;

/// Length of the loadgen's own header at the start of every payload.
pub const TIMING_HEADER_LEN: usize = 20;

/// Set in the publisher-index field of packets sent in a keyframe burst.
pub const KEYFRAME_FLAG: u32 = 1 << 31;

/// No QUIC datagram can carry more than a UDP datagram.
pub(super) const MAX_PAYLOAD: usize = 65_535;

/// Audio: 50 packets per second of this many bytes (an Opus frame of 20 ms
/// at ~64 kbit/s with RTP-like framing).
pub const AUDIO_PAYLOAD: usize = 160;
/// Audio packets per second.
pub const AUDIO_PPS: u32 = 50;
/// Video frames per second.
pub const VIDEO_FPS: u32 = 30;
/// Bytes of one video packet.
pub const VIDEO_PACKET: usize = 1100;
/// Packets of a delta frame.
pub const VIDEO_DELTA_PACKETS: u64 = 5;
/// Packets of a keyframe (10× a delta frame).
pub const VIDEO_KEYFRAME_PACKETS: u64 = 50;
/// Frames between keyframes (2 s at 30 fps).
pub const VIDEO_KEYFRAME_EVERY: u64 = 60;

/// What each publisher sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Profile {
    /// `rate` datagrams per second of `size` bytes.
    #[default]
    Raw,
    /// `rate` reliable messages per second of `size` bytes.
    Data,
    /// 50 datagrams per second of 160 bytes.
    Audio,
    /// 30 fps at ~1.5 Mbit/s in 1,100-byte datagrams, keyframe bursts every 2 s.
    Video,
}

impl Profile {
    /// The profile's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Raw => "raw",
            Profile::Data => "data",
            Profile::Audio => "audio",
            Profile::Video => "video",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Profile> {
        [Profile::Raw, Profile::Data, Profile::Audio, Profile::Video]
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// Whether the profile takes `--rate` and `--size`.
    pub fn takes_rate_and_size(self) -> bool {
        matches!(self, Profile::Raw | Profile::Data)
    }

    /// Whether packets go as reliable messages rather than datagrams.
    pub fn reliable(self) -> bool {
        self == Profile::Data
    }
}

/// The packets due at one tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Burst {
    pub(super) packets: u64,
    pub(super) size: usize,
    pub(super) keyframe: bool,
}

/// One publisher's clock and what it sends at each tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Schedule {
    profile: Profile,
    pub(super) period: Duration,
    pub(super) ticks: u64,
    /// `raw`/`data`: packets over the whole run.
    total: u64,
    size: usize,
}

impl Schedule {
    /// The schedule of `profile` over `duration`; `rate_pps` and `size`
    /// apply to `raw` and `data` only.
    pub(super) fn new(profile: Profile, rate_pps: u32, size: usize, duration: Duration) -> Self {
        let (period, size) = match profile {
            Profile::Raw | Profile::Data => (
                (Duration::from_secs(1) / rate_pps.max(1)).max(Duration::from_millis(1)),
                size,
            ),
            Profile::Audio => (Duration::from_secs(1) / AUDIO_PPS, AUDIO_PAYLOAD),
            Profile::Video => (Duration::from_secs(1) / VIDEO_FPS, VIDEO_PACKET),
        };
        // Whole ticks that fit, rounding away the nanosecond a 1/30 s
        // period loses: 4 s of video is 120 frames, not 121.
        let ticks = (duration.as_secs_f64() / period.as_secs_f64() - 1e-3)
            .ceil()
            .max(1.0) as u64;
        let total = (duration.as_secs_f64() * f64::from(rate_pps)).round() as u64;
        Schedule {
            profile,
            period,
            ticks,
            total,
            size,
        }
    }

    /// What is due at tick `k`.
    pub(super) fn burst(&self, k: u64) -> Burst {
        match self.profile {
            Profile::Raw | Profile::Data => {
                let (total, ticks, k) = (
                    u128::from(self.total),
                    u128::from(self.ticks),
                    u128::from(k),
                );
                Burst {
                    packets: (total * (k + 1) / ticks - total * k / ticks) as u64,
                    size: self.size,
                    keyframe: false,
                }
            }
            Profile::Audio => Burst {
                packets: 1,
                size: self.size,
                keyframe: false,
            },
            Profile::Video => {
                let keyframe = k % VIDEO_KEYFRAME_EVERY == 0;
                Burst {
                    packets: if keyframe {
                        VIDEO_KEYFRAME_PACKETS
                    } else {
                        VIDEO_DELTA_PACKETS
                    },
                    size: self.size,
                    keyframe,
                }
            }
        }
    }

    /// Packets over the whole schedule.
    pub(super) fn packets(&self) -> u64 {
        match self.profile {
            Profile::Raw | Profile::Data => self.total,
            Profile::Audio => self.ticks,
            Profile::Video => {
                let keyframes = self.ticks.div_ceil(VIDEO_KEYFRAME_EVERY);
                keyframes * VIDEO_KEYFRAME_PACKETS + (self.ticks - keyframes) * VIDEO_DELTA_PACKETS
            }
        }
    }

    /// The largest payload of the schedule.
    pub(super) fn max_size(&self) -> usize {
        self.size
    }
}

/// A payload of `size` bytes: a zeroed timing header, then `text` repeated.
pub(super) fn payload_template(size: usize, text: &str) -> Vec<u8> {
    let mut payload = vec![0u8; TIMING_HEADER_LEN];
    let fill = if text.is_empty() { "\0" } else { text };
    payload.extend(
        fill.bytes()
            .cycle()
            .take(size.saturating_sub(TIMING_HEADER_LEN)),
    );
    payload
}

/// The fields of a timing header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Timing {
    pub(super) publisher: u32,
    pub(super) keyframe: bool,
    pub(super) seq: u64,
    pub(super) sent_us: u64,
}

impl Timing {
    pub(super) fn write(&self, payload: &mut [u8]) {
        let index = self.publisher | if self.keyframe { KEYFRAME_FLAG } else { 0 };
        payload[0..4].copy_from_slice(&index.to_be_bytes());
        payload[4..12].copy_from_slice(&self.seq.to_be_bytes());
        payload[12..20].copy_from_slice(&self.sent_us.to_be_bytes());
    }

    /// The timing header of `payload`, if it has one.
    pub(super) fn read(payload: &[u8]) -> Option<Timing> {
        let index = u32::from_be_bytes(payload.get(0..4)?.try_into().ok()?);
        Some(Timing {
            publisher: index & !KEYFRAME_FLAG,
            keyframe: index & KEYFRAME_FLAG != 0,
            seq: u64::from_be_bytes(payload.get(4..12)?.try_into().ok()?),
            sent_us: u64::from_be_bytes(payload.get(12..20)?.try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(schedule: &Schedule) -> u64 {
        (0..schedule.ticks).map(|k| schedule.burst(k).packets).sum()
    }

    #[test]
    fn raw_spreads_exactly_the_planned_packets() {
        for (rate, secs) in [(200u32, 5u64), (300, 5), (20_000, 3), (7, 2), (1000, 1)] {
            let s = Schedule::new(Profile::Raw, rate, 200, Duration::from_secs(secs));
            assert_eq!(total(&s), u64::from(rate) * secs, "rate {rate}");
            assert_eq!(s.packets(), u64::from(rate) * secs);
            assert!(s.period >= Duration::from_millis(1));
            let max = (0..s.ticks).map(|k| s.burst(k).packets).max().unwrap_or(0);
            assert!(max <= u64::from(rate).div_ceil(1000).max(1), "rate {rate}");
        }
        let s = Schedule::new(Profile::Raw, 200, 200, Duration::from_secs(5));
        assert_eq!(s.period, Duration::from_millis(5));
        assert!((0..s.ticks).all(|k| s.burst(k).packets == 1));
    }

    #[test]
    fn audio_is_50_pps_of_160_bytes() {
        let s = Schedule::new(Profile::Audio, 1, 1, Duration::from_secs(3));
        assert_eq!(s.period, Duration::from_millis(20));
        assert_eq!(s.packets(), 150);
        assert_eq!(total(&s), 150);
        assert_eq!(s.burst(7).size, 160);
        assert_eq!(s.max_size(), AUDIO_PAYLOAD);
    }

    #[test]
    fn video_is_about_1_5_mbit_with_a_keyframe_burst_every_2_s() {
        let s = Schedule::new(Profile::Video, 1, 1, Duration::from_secs(4));
        assert_eq!(s.ticks, 120);
        let keyframes: Vec<u64> = (0..s.ticks).filter(|k| s.burst(*k).keyframe).collect();
        assert_eq!(keyframes, vec![0, 60]);
        assert_eq!(s.burst(0).packets, 10 * s.burst(1).packets);
        assert_eq!(total(&s), s.packets());
        let bits = s.packets() as f64 * VIDEO_PACKET as f64 * 8.0 / 4.0;
        assert!((1.4e6..1.6e6).contains(&bits), "{bits} bit/s");
    }

    #[test]
    fn timing_header_round_trips_with_the_keyframe_flag() {
        let mut payload = payload_template(40, "ab");
        assert_eq!(payload.len(), 40);
        assert_eq!(&payload[20..24], b"abab");
        for keyframe in [false, true] {
            let timing = Timing {
                publisher: 7,
                keyframe,
                seq: 1234,
                sent_us: 99_000,
            };
            timing.write(&mut payload);
            assert_eq!(Timing::read(&payload), Some(timing));
        }
        assert_eq!(Timing::read(&payload[..19]), None);
    }

    #[test]
    fn profiles_parse_by_name() {
        for p in [Profile::Raw, Profile::Data, Profile::Audio, Profile::Video] {
            assert_eq!(Profile::from_name(p.name()), Some(p));
        }
        assert_eq!(Profile::from_name("screen"), None);
    }
}
