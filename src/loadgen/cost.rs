//! Relay-side cost of a run: CPU seconds and resident memory of the
//! processes that carried it, read before and after the steady window.
//!
//! A georelay node is read through its admin `/metrics`
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, `georelay_process_id`,
//! `process_start_time_seconds`), so a remote relay is measured like a
//! local one. Nodes that report the same process (`serve --all`) are
//! counted once. The baseline forwarder, a child of the loadgen, is read
//! from `/proc/PID/stat` and `/proc/PID/status`: the same kernel counters
//! `/metrics` reports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::admin::process::{
    PROCESS_CPU_SECONDS_TOTAL, PROCESS_ID, PROCESS_OPEN_FDS, PROCESS_RESIDENT_MEMORY_BYTES,
    PROCESS_START_TIME_SECONDS,
};

/// How long one `/metrics` request may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes read from one `/metrics` answer.
const SCRAPE_LIMIT: u64 = 16 << 20;

/// Where the cost of a run is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CostProbe {
    /// The admin addresses of georelay nodes.
    Admin(Vec<SocketAddr>),
    /// A local process, by pid.
    Pid(u32),
}

/// One process at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct ProcessSample {
    pub(super) cpu_s: f64,
    pub(super) rss_bytes: f64,
    pub(super) open_fds: Option<f64>,
}

/// The processes behind a probe, by identity (pid and start time).
pub(super) type Samples = BTreeMap<(u64, u64), ProcessSample>;

impl CostProbe {
    /// Reads every process of the probe once; errors name the address.
    pub(super) async fn sample(&self) -> Result<Samples, String> {
        let mut samples = Samples::new();
        match self {
            CostProbe::Admin(addrs) => {
                for addr in addrs {
                    let text = scrape(*addr).await.map_err(|e| format!("{addr}: {e}"))?;
                    let (identity, sample) =
                        parse_metrics(&text).ok_or_else(|| {
                            format!("{addr}: /metrics has no process metrics ({PROCESS_CPU_SECONDS_TOTAL}, {PROCESS_ID})")
                        })?;
                    samples.insert(identity, sample);
                }
            }
            CostProbe::Pid(pid) => {
                let sample = proc_sample(*pid).map_err(|e| format!("/proc/{pid}: {e}"))?;
                samples.insert((u64::from(*pid), 0), sample);
            }
        }
        Ok(samples)
    }
}

/// What the processes spent between two samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RelayCost {
    /// Distinct processes measured.
    pub processes: usize,
    /// CPU seconds (user + system) they spent in the window.
    pub cpu_s: f64,
    /// Their resident memory at the end, summed.
    pub rss_bytes: u64,
    /// Their open file descriptors at the end, summed, when reported.
    pub open_fds: Option<u64>,
}

/// The cost between `before` and `after`; processes present only in one
/// of them (restarted) are left out.
pub(super) fn cost(before: &Samples, after: &Samples) -> RelayCost {
    let mut total = RelayCost::default();
    let mut fds = None::<u64>;
    for (identity, end) in after {
        let Some(start) = before.get(identity) else {
            continue;
        };
        total.processes += 1;
        total.cpu_s += (end.cpu_s - start.cpu_s).max(0.0);
        total.rss_bytes += end.rss_bytes as u64;
        if let Some(open) = end.open_fds {
            *fds.get_or_insert(0) += open as u64;
        }
    }
    total.open_fds = fds;
    total
}

/// Resident bytes summed over the processes of `samples`.
pub(super) fn rss(samples: &Samples) -> u64 {
    samples.values().map(|s| s.rss_bytes as u64).sum()
}

/// Parses the process figures out of Prometheus text.
fn parse_metrics(text: &str) -> Option<((u64, u64), ProcessSample)> {
    let value = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let rest = rest.strip_prefix(' ').or_else(|| {
                // A labelled series: `name{...} value`.
                rest.starts_with('{')
                    .then(|| rest.split_once("} ").map(|(_, v)| v))
                    .flatten()
            })?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
    };
    let pid = value(PROCESS_ID)? as u64;
    let start = value(PROCESS_START_TIME_SECONDS).unwrap_or(0.0) as u64;
    Some((
        (pid, start),
        ProcessSample {
            cpu_s: value(PROCESS_CPU_SECONDS_TOTAL)?,
            rss_bytes: value(PROCESS_RESIDENT_MEMORY_BYTES)?,
            open_fds: value(PROCESS_OPEN_FDS),
        },
    ))
}

/// `GET /metrics` over plain HTTP/1.1; the body.
async fn scrape(addr: SocketAddr) -> Result<String, String> {
    let request = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let head = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream
            .take(SCRAPE_LIMIT)
            .read_to_end(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(SCRAPE_TIMEOUT, request)
        .await
        .map_err(|_| format!("no answer within {SCRAPE_TIMEOUT:?}"))??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP answer")?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("GET /metrics answered {status}"));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

/// CPU and memory of a local process from `/proc`.
fn proc_sample(pid: u32) -> Result<ProcessSample, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) else {
        return Err("unreadable stat".into());
    };
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|dir| dir.count() as f64);
    Ok(ProcessSample {
        cpu_s: (utime + stime) / hz,
        rss_bytes: rss_kib * 1024.0,
        open_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_process_metrics_and_counts_a_shared_process_once() {
        let text = "# TYPE process_cpu_seconds_total gauge\nprocess_cpu_seconds_total 1.25\nprocess_resident_memory_bytes 1048576\nprocess_open_fds 12\nprocess_start_time_seconds 1700000000\ngeorelay_process_id 4242\ngeorelay_sessions{node=\"a\",app=\"x\"} 3\n";
        let (identity, sample) = parse_metrics(text).expect("process metrics");
        assert_eq!(identity, (4242, 1_700_000_000));
        assert_eq!(sample.cpu_s, 1.25);
        assert_eq!(sample.rss_bytes, 1_048_576.0);
        assert_eq!(sample.open_fds, Some(12.0));
        assert!(parse_metrics("georelay_sessions 1\n").is_none());

        let mut before = Samples::new();
        before.insert(identity, sample);
        let mut after = Samples::new();
        // Two nodes of one process report the same identity: one entry.
        after.insert(
            identity,
            ProcessSample {
                cpu_s: 3.75,
                ..sample
            },
        );
        after.insert(
            identity,
            ProcessSample {
                cpu_s: 3.75,
                ..sample
            },
        );
        // A process seen only afterwards (restarted) is not counted.
        after.insert((1, 1), sample);
        let cost = cost(&before, &after);
        assert_eq!(cost.processes, 1);
        assert!((cost.cpu_s - 2.5).abs() < 1e-9);
        assert_eq!(cost.rss_bytes, 1_048_576);
        assert_eq!(cost.open_fds, Some(12));
    }

    #[test]
    fn reads_this_process_from_proc() {
        let sample = proc_sample(std::process::id()).expect("own /proc");
        assert!(sample.rss_bytes > 0.0);
        assert!(sample.open_fds.is_some_and(|n| n >= 1.0));
    }
}
