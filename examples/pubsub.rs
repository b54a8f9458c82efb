//! Publish and subscribe through a running relay with the Rust SDK.
//!
//! Start the example fleet in one terminal:
//!
//! ```text
//! cargo run -- serve --all
//! ```
//!
//! and run this in another:
//!
//! ```text
//! cargo run --example pubsub -- --count 100
//! ```
//!
//! It reads the app's secret from the same `regions.toml` to mint its own
//! tokens (as an app backend would), trusts the dev CA certificate that
//! `serve` wrote to `data/dev-ca.pem` next to the config, connects a
//! subscriber and a publisher to one node (following redirects if the node
//! is outside the app's regions), publishes `--count` media datagrams and one
//! reliable message, and prints what the subscriber received.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::StreamExt;
use georelay::auth::{Claims, Role};
use georelay::client::{Client, ClientOptions, Event, Join, Target};
use georelay::ids::AppId;
use georelay::relay::policy::Policy;
use georelay::tls::FleetPki;
use georelay::wire::TrackKind;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(about = "Publish N packets through a georelay node and print what a subscriber got")]
struct Args {
    /// The fleet configuration (the one `serve` runs).
    #[arg(long, default_value = "regions.toml")]
    config: PathBuf,
    /// The CA certificate to trust; defaults to `data/dev-ca.pem` next to the config.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The app to join.
    #[arg(long, default_value = "acme-health")]
    app: String,
    /// The channel to join.
    #[arg(long, default_value = "example-room")]
    channel: String,
    /// The node to connect to.
    #[arg(long, default_value = "eu-fra-1")]
    node: String,
    /// Local address to bind (with the example overrides, 127.1.0.x is DE).
    #[arg(long, default_value = "127.1.0.7")]
    bind: IpAddr,
    /// How many media datagrams to publish.
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Packets per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let policy = Policy::load(&args.config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let ca = args.ca.clone().unwrap_or_else(|| {
        args.config
            .parent()
            .unwrap_or_else(|| std::path::Path::new("."))
            .join("data")
            .join("dev-ca.pem")
    });
    let roots = FleetPki::load_roots(&ca)
        .with_context(|| format!("trusting {} (is `georelay serve` running?)", ca.display()))?;
    let node = policy
        .fleet
        .node(&args.node)
        .with_context(|| format!("no node {:?} in {}", args.node, args.config.display()))?;
    let targets = [Target {
        node: node.id.to_string(),
        addr: node.listen,
    }];
    let mut options = ClientOptions::new(Arc::new(roots));
    options.bind = args.bind;
    let join_as = |user: &str, role: Role| -> anyhow::Result<Join> {
        let expires_at = georelay::clock::wall_now()
            .duration_since(UNIX_EPOCH)?
            .as_secs()
            + 600;
        let claims = Claims {
            app: AppId::new(args.app.as_str()),
            channel: args.channel.clone(),
            user: user.to_string(),
            role,
            expires_at,
        };
        let token = policy
            .keyring
            .mint(&claims)
            .with_context(|| format!("no secret for app {:?}", args.app))?;
        Ok(Join {
            app: args.app.clone(),
            channel: args.channel.clone(),
            token,
        })
    };

    let mut subscriber = Client::connect(
        &options,
        &targets,
        &join_as("example-sub", Role::Subscribe)?,
    )
    .await?;
    subscriber.subscribe().await?;
    println!(
        "subscriber admitted by {} ({}), session {}, after {} redirect(s)",
        subscriber.node(),
        subscriber.region(),
        subscriber.session_id(),
        subscriber.redirects()
    );
    let publisher =
        Client::connect(&options, &targets, &join_as("example-pub", Role::Publish)?).await?;
    println!(
        "publisher admitted by {} ({}), session {}",
        publisher.node(),
        publisher.region(),
        publisher.session_id()
    );
    let track = publisher
        .announce(TrackKind::Audio, false, "example-mic")
        .await?;
    wait_for_track(&mut subscriber, track).await?;
    println!("subscriber was told of track {track:#x}");

    // Receive while publishing, so that latency is the relay's, not ours.
    let started = georelay::clock::monotonic_now();
    let count = args.count;
    let receiving = tokio::spawn(async move {
        let outcome = receive(&mut subscriber, track, count, &started).await;
        (subscriber, outcome)
    });
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let mut ticks = tokio::time::interval(interval);
    for seq in 0..args.count {
        ticks.tick().await;
        let sent_us = started.elapsed().as_micros() as u64;
        publisher.send_media(track, seq, sent_us, format!("packet {seq}").as_bytes())?;
    }
    publisher.send_message(track, b"that was all").await?;
    println!(
        "published {} datagrams and 1 message in {:?}",
        args.count,
        started.elapsed()
    );

    let (subscriber, (received, latencies, message)) = receiving.await?;
    let lost = args.count - received.len() as u64;
    println!(
        "subscriber received {}/{} datagrams ({} lost), message: {}",
        received.len(),
        args.count,
        lost,
        message.as_deref().unwrap_or("<none>")
    );
    if let Some(summary) = latency_summary(latencies) {
        println!("one-way latency: {summary}");
    }
    publisher.close().await;
    subscriber.close().await;
    if received.is_empty() {
        bail!("the subscriber received nothing");
    }
    Ok(())
}

/// Waits (up to 5 s) until the subscriber is told of `track`.
async fn wait_for_track(subscriber: &mut Client, track: u64) -> anyhow::Result<()> {
    let deadline = georelay::clock::timer_now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, subscriber.events().next()).await {
            Ok(Some(Event::TrackAdded(info))) if info.track == track => return Ok(()),
            Ok(Some(Event::Closed { code, message, .. })) => {
                bail!("subscriber closed: {code:?} {message}")
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("subscriber connection ended"),
            Err(_) => bail!("the subscriber was not told of the track within 5 s"),
        }
    }
}

/// Collects the track's datagrams and the message, until all arrived or the
/// stream has been quiet for a second.
async fn receive(
    subscriber: &mut Client,
    track: u64,
    count: u64,
    started: &Instant,
) -> (BTreeSet<u64>, Vec<u64>, Option<String>) {
    let mut received = BTreeSet::new();
    let mut latencies = Vec::new();
    let mut message = None;
    while received.len() < count as usize || message.is_none() {
        match tokio::time::timeout(Duration::from_secs(1), subscriber.events().next()).await {
            Ok(Some(Event::Media { header, .. })) if header.track == track => {
                received.insert(header.seq);
                latencies.push(
                    (started.elapsed().as_micros() as u64).saturating_sub(header.timestamp_us),
                );
            }
            Ok(Some(Event::Message { track: t, payload })) if t == track => {
                message = Some(String::from_utf8_lossy(&payload).into_owned());
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    (received, latencies, message)
}

/// p50/p99/max of the latencies, in microseconds.
fn latency_summary(mut latencies: Vec<u64>) -> Option<String> {
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let max = *latencies.last()?;
    Some(format!(
        "p50 {} us, p99 {} us, max {max} us",
        at(0.5),
        at(0.99)
    ))
}
