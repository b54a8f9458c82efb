//! Network namespaces the test creates and removes itself, with nftables
//! rules inside them: random loss between two addresses
//! (`numgen random mod 100 < N drop`) and partitions. This kernel has no
//! `netem`. Nothing here touches the host's own namespace: the rules live in
//! a table of the test's namespace, which is deleted on drop.
//!
//! Code runs inside a namespace by [`Netns::run`]: a dedicated thread joins
//! the namespace (`setns`) and then builds a tokio runtime, whose worker
//! threads inherit the namespace, so every socket the future creates (relay
//! nodes, clients) belongs to the namespace. Its loopback interface is up, so all of 127.0.0.0/8 works
//! there exactly as on the host, isolated from other tests.

use std::io;
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether this machine can run namespace tests: root, `ip` and `nft`.
/// `.ci/run` installs both and runs as root; it also sets
/// `GEORELAY_REQUIRE_NETNS=1` so that a missing tool fails instead of skips.
pub fn available() -> bool {
    let root = rustix::process::geteuid().is_root();
    let tools = ["ip", "nft"].iter().all(|tool| {
        Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    });
    let ok = root && tools;
    if !ok && std::env::var_os("GEORELAY_REQUIRE_NETNS").is_some() {
        panic!("namespace tests need root, iproute2 and nftables (GEORELAY_REQUIRE_NETNS is set)");
    }
    if !ok {
        eprintln!("skipping: namespace tests need root, iproute2 (ip) and nftables (nft)");
    }
    ok
}

/// A network namespace, deleted (with its rules) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

fn checked(output: io::Result<Output>, what: &str) -> io::Result<()> {
    let output = output?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// The nftables table every rule goes into.
const TABLE: &str = "georelay_faults";

impl Netns {
    /// Creates a fresh namespace with loopback up and an empty rule table
    /// whose output chain accepts everything.
    pub fn create() -> io::Result<Netns> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "gr-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        checked(
            Command::new("ip").args(["netns", "add", &name]).output(),
            "ip netns add",
        )?;
        let netns = Netns { name };
        checked(
            Command::new("ip")
                .args(["-n", &netns.name, "link", "set", "lo", "up"])
                .output(),
            "ip link set lo up",
        )?;
        netns.rules().nft(&format!(
            "add table inet {TABLE}\n\
             add chain inet {TABLE} output {{ type filter hook output priority 0; policy accept; }}\n"
        ))?;
        Ok(netns)
    }

    /// The namespace's name (under /run/netns).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A handle on the namespace's rules, usable from any thread (also from
    /// inside [`Netns::run`]).
    pub fn rules(&self) -> Rules {
        Rules {
            name: self.name.clone(),
        }
    }

    /// Runs `future` inside the namespace, on a two-worker runtime whose
    /// threads are created by a thread that joined the namespace first (new
    /// threads inherit it), and returns its output.
    pub fn run<F, T>(&self, future: impl FnOnce() -> F + Send + 'static) -> T
    where
        F: std::future::Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        let worker = std::thread::spawn(move || {
            let handle = std::fs::File::open(&path).expect("open the namespace");
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&handle),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns into the namespace");
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(future())
        });
        match worker.join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// The nftables rules of one namespace.
#[derive(Clone, Debug)]
pub struct Rules {
    name: String,
}

impl Rules {
    /// Runs an nft script inside the namespace.
    pub fn nft(&self, script: &str) -> io::Result<()> {
        use std::io::Write as _;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("nft stdin"))?
            .write_all(script.as_bytes())?;
        checked(child.wait_with_output(), "nft")
    }

    /// Drops `percent` of the UDP packets from `from` to `to`, and of those
    /// from `to` to `from`, at random (`numgen random mod 100 < N`).
    pub fn drop_random(&self, from: IpAddr, to: IpAddr, percent: u8) -> io::Result<()> {
        let mut script = String::new();
        for (a, b) in [(from, to), (to, from)] {
            script.push_str(&format!(
                "add rule inet {TABLE} output {} saddr {a} {} daddr {b} meta l4proto udp numgen random mod 100 < {percent} counter drop comment \"loss\"\n",
                family(a),
                family(b),
            ));
        }
        self.nft(&script)
    }

    /// Drops every packet between `a` and `b` (both directions).
    pub fn partition(&self, a: IpAddr, b: IpAddr) -> io::Result<()> {
        let mut script = String::new();
        for (x, y) in [(a, b), (b, a)] {
            script.push_str(&format!(
                "add rule inet {TABLE} output {} saddr {x} {} daddr {y} counter drop comment \"partition\"\n",
                family(x),
                family(y),
            ));
        }
        self.nft(&script)
    }

    /// Removes every rule (loss and partitions): the network is whole again.
    pub fn heal(&self) -> io::Result<()> {
        self.nft(&format!("flush chain inet {TABLE} output\n"))
    }

    /// Packets the rules dropped so far, from their counters.
    pub fn dropped_packets(&self) -> io::Result<u64> {
        let output = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "nft", "list", "chain", "inet", TABLE, "output",
            ])
            .output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|pair| pair[0] == "packets")
            .filter_map(|pair| pair[1].parse::<u64>().ok())
            .sum())
    }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "ip" } else { "ip6" }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its nftables tables too.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
