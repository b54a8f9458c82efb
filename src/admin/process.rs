//! Process metrics on every node's `/metrics`: CPU seconds, resident memory,
//! open and maximum file descriptors, threads, start time (the Prometheus
//! `process_*` names, read from `/proc/self` by the `metrics-process` crate),
//! and `georelay_process_id`.
//!
//! They are sampled when `/metrics` is rendered, so a scrape always sees
//! the current figures. `process_cpu_seconds_total` is exported as a gauge
//! (seconds with the kernel's 10 ms tick resolution): a Prometheus counter
//! in the `metrics` facade holds whole numbers only, which would round a
//! benchmark's fraction of a second away.
//!
//! Under `serve --all` every node shares one process: their `/metrics`
//! report the same process figures. `georelay_process_id` and
//! `process_start_time_seconds` together name the process, so a reader
//! such as `georelay loadgen` counts each process once.

use std::sync::OnceLock;

use metrics::{Unit, describe_gauge, gauge};
use metrics_process::Collector;

/// The OS process id (gauge), so that readers can tell nodes sharing one
/// process apart from nodes in separate processes.
pub const PROCESS_ID: &str = "georelay_process_id";

/// Process CPU time, user + system, in seconds.
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
/// Resident set size in bytes.
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
/// Open file descriptors.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// Start time of the process, seconds since the Unix epoch.
pub const PROCESS_START_TIME_SECONDS: &str = "process_start_time_seconds";

fn collector() -> &'static Collector {
    static COLLECTOR: OnceLock<Collector> = OnceLock::new();
    COLLECTOR.get_or_init(Collector::default)
}

/// Describes the process metrics to the installed recorder.
pub(super) fn describe() {
    collector().describe();
    describe_gauge!(PROCESS_ID, Unit::Count, "The operating system's process id");
}

/// Samples the process figures into the installed recorder.
pub(super) fn collect() {
    collector().collect();
    gauge!(PROCESS_ID).set(f64::from(std::process::id()));
}
