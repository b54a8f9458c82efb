//! A native (Rust SDK, QUIC `georelay/1`) peer for the browser end-to-end
//! run against a real fleet (`sdk/js/e2e/fleet.mjs`): it joins a channel
//! with a token minted from the config's app secret, then either publishes
//! `--count` media datagrams and `--messages` messages on one track, or
//! subscribes and counts what arrives. It prints JSON lines: `{"ready":…}`
//! once admitted (and, subscribing, subscribed), then its result.
//!
//! `cargo run --example native_peer -- --config regions.toml --role subscribe`

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
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
struct Args {
    /// The fleet's configuration (its `data/dev-ca.pem` is trusted).
    #[arg(long)]
    config: PathBuf,
    /// The app.
    #[arg(long)]
    app: String,
    /// The channel.
    #[arg(long)]
    channel: String,
    /// The node to dial.
    #[arg(long)]
    node: String,
    /// `publish` or `subscribe`.
    #[arg(long)]
    role: String,
    /// Source address (its geoip override gives the country).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Datagrams to publish or expect.
    #[arg(long, default_value_t = 500)]
    count: u64,
    /// Messages to publish or expect.
    #[arg(long, default_value_t = 20)]
    messages: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let policy = Policy::load(&args.config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let ca = args
        .config
        .parent()
        .unwrap_or_else(|| std::path::Path::new("."))
        .join("data")
        .join("dev-ca.pem");
    let roots = FleetPki::load_roots(&ca).with_context(|| format!("trusting {}", ca.display()))?;
    let node = policy.fleet.node(&args.node).context("no such node")?;
    let targets = [Target {
        node: node.id.to_string(),
        addr: node.listen,
    }];
    let mut options = ClientOptions::new(Arc::new(roots));
    options.bind = args.bind;
    let publish = args.role == "publish";
    let role = if publish {
        Role::Publish
    } else {
        Role::Subscribe
    };
    let claims = Claims {
        app: AppId::new(args.app.as_str()),
        channel: args.channel.clone(),
        user: format!("native-{}", args.role),
        role,
        expires_at: georelay::clock::wall_now()
            .duration_since(UNIX_EPOCH)?
            .as_secs()
            + 600,
    };
    let token = policy.keyring.mint(&claims).context("no secret for app")?;
    let join = Join {
        app: args.app.clone(),
        channel: args.channel.clone(),
        token,
    };
    let mut client = Client::connect(&options, &targets, &join).await?;
    if publish {
        let track = client.announce(TrackKind::Data, false, "native").await?;
        println!(r#"{{"ready":true,"node":"{}"}}"#, client.node());
        // The browser says when it sees the track: a line on stdin.
        tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await??;
        let mut ticks = tokio::time::interval(Duration::from_millis(2));
        for seq in 0..args.count {
            ticks.tick().await;
            client.send_media(track, seq, 0, &[0u8; 200])?;
        }
        for i in 0..args.messages {
            client
                .send_message(track, format!("m{i}").as_bytes())
                .await?;
        }
        println!(r#"{{"sent":{},"messages":{}}}"#, args.count, args.messages);
        tokio::time::sleep(Duration::from_millis(500)).await;
    } else {
        client.subscribe().await?;
        println!(r#"{{"ready":true,"node":"{}"}}"#, client.node());
        let mut seen = BTreeSet::new();
        let mut messages = Vec::new();
        while seen.len() < args.count as usize || (messages.len() as u64) < args.messages {
            match tokio::time::timeout(Duration::from_secs(3), client.events().next()).await {
                Ok(Some(Event::Media { header, .. })) => {
                    seen.insert(header.seq);
                }
                Ok(Some(Event::Message { payload, .. })) => {
                    messages.push(String::from_utf8_lossy(&payload).into_owned());
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let in_order = messages
            .iter()
            .enumerate()
            .all(|(i, m)| *m == format!("m{i}"));
        println!(
            r#"{{"received":{},"messages":{},"in_order":{in_order}}}"#,
            seen.len(),
            messages.len()
        );
    }
    client.close().await;
    Ok(())
}
