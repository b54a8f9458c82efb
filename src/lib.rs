//! georelay: a fleet of QUIC relays that carries real-time media between RTC
//! SDK clients, encrypted on every hop, and only through the regions each
//! customer app allows. Media is never stored; operational metadata is kept at
//! most 30 days.
//!
//! # Layout
//!
//! Foundation (no networking):
//! - [`ids`]: node, region, app and country identifiers.
//! - [`error`]: the stable error codes of the contract (`UNAUTHORIZED`, ...).
//! - [`clock`]: the only module that reads clocks (wall and monotonic).
//! - [`config`]: `regions.toml` parsing and validation into a [`config::Fleet`].
//! - [`geo`]: IP address → country → region (MaxMind DB + overrides).
//! - [`auth`]: signed client tokens (`gr1` and standard JWTs).
//! - [`routing`]: the sans-IO geofenced routing core: cheapest allowed paths,
//!   redirect targets. One core serves `route`, admission and the mesh.
//! - [`wire`]: the `georelay/1` and `georelay-mesh/1` codecs, and the
//!   control-stream framing the relay and the SDK share.
//! - [`relay`]'s sans-IO core: the mesh control plane, the local channel
//!   directory, the media route table and `NodeCore` over them, all driven
//!   with a monotonic `now`.
//!
//! Runtime (tokio + quinn):
//! - [`tls`]: dev CA and node certificates, rustls configs, peer identity.
//! - [`gate`]: the accept loop's bounds: per-address and total connection
//!   counts, Retry under load, connections waiting for `HELLO`.
//! - [`relay`]'s drivers: the thin hub, client sessions over any
//!   `SessionTransport`, mesh links, the timer loop, the one reload path.
//! - [`browser`]: WebTransport sessions, the browser development certificate
//!   and the WebSocket fallback, for web clients.
//! - [`admin`]: the per-node HTTP surface (`/metrics`, `/status`, ...).
//! - [`client`]: the Rust SDK used by tests, loadgen and examples.
//! - [`loadgen`]: synthetic SDK clients with exact loss and latency accounting.
//! - [`metadata`]: operational events, IP minimisation, stores and retention.
//! - [`cli`]: the `georelay` command line.

pub mod admin;
pub mod auth;
pub mod browser;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod gate;
pub mod geo;
pub mod ids;
pub mod loadgen;
pub mod metadata;
pub mod relay;
pub mod routing;
pub mod tls;
pub mod wire;
