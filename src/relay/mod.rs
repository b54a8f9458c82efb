//! The relay node at runtime (tokio + quinn): the QUIC endpoint(s) on the
//! listen port for SDK clients and mesh peers, the admin HTTP server, the
//! mesh dialers and the timer loop, all stopped together by
//! [`RunningNode::shutdown`].
//!
//! Sans-IO (deterministic, unit-tested, driven with a monotonic `now`):
//! - [`policy`]: the policy snapshot (validated fleet, keys, geo).
//! - [`admission`]: the admission checks of a client.
//! - [`plane`]: the mesh control plane (link state, announcements, routes).
//! - [`directory`]: the local channel directory (ownership, subscribers,
//!   what each subscriber was told).
//! - [`routes`]: the media fast path (route table, forwarding, rebuild).
//! - [`core`]: one node's relay logic over the three, behind the
//!   [`core::Control`] trait for connections.
//! - [`fanout`]: bounded drop-oldest queues and per-app counters.
//! - [`quality`]: interarrival jitter of publishers' media.
//!
//! Drivers (tokio + quinn):
//! - `endpoints`: the UDP sockets and QUIC endpoints of the listen port
//!   (one, or several with `SO_REUSEPORT`).
//! - `accept`: the accept loop, gated by [`crate::gate::AcceptGate`]
//!   (Retry, connection caps, HELLO permits).
//! - [`hub`]: the node's shared state: a mutex around the core, the clock,
//!   metrics and metadata.
//! - [`transport`]: what the relay needs from a client connection (native
//!   QUIC, WebTransport, WebSocket).
//! - [`writers`]: the task that drains a receiver's reliable messages into
//!   its connection.
//! - [`session`]: one client connection.
//! - [`mesh`]: mesh links.
//! - [`reload`]: the one reload path (SIGHUP and `POST /reload`).

mod accept;
pub mod admission;
pub mod core;
pub mod directory;
mod endpoints;
pub mod fanout;
pub mod hub;
pub mod mesh;
pub mod plane;
pub mod policy;
pub mod quality;
pub mod reload;
pub mod routes;
pub mod session;
pub mod transport;
pub mod writers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::AdminAuth;
use crate::admin::{ChannelSeen, NodeIntrospect, Readiness, ReloadReport, StatusReport};
use crate::clock::SharedClock;
use crate::error::ErrorCode;
use crate::gate::{AcceptGate, GateLimits};
use crate::ids::NodeId;
use crate::tls::{FleetPki, NodeTls};

use self::hub::Hub;
use self::policy::{Policy, PolicyError};
use self::reload::{ReloadError, ReloadSource, Reloader};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The node id is not in the configuration.
    #[error("node {0} is not in the configuration")]
    UnknownNode(NodeId),
    /// TLS material is missing or invalid.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The admin authentication could not be set up (token unreadable, or
    /// a non-loopback admin address without one).
    #[error(transparent)]
    AdminAuth(#[from] crate::admin::AdminAuthError),
    /// A listen or admin address could not be bound.
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        /// `listen` or `admin`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The browser development certificate could not be issued.
    #[error(transparent)]
    BrowserCert(#[from] crate::browser::devcert::DevCertError),
}

/// What a node needs to start.
#[derive(Clone)]
pub struct NodeOptions {
    /// The node to run.
    pub id: NodeId,
    /// The policy in force at start.
    pub policy: Arc<Policy>,
    /// Certificates of the fleet.
    pub pki: Arc<FleetPki>,
    /// Wall clock for tokens and metadata.
    pub clock: SharedClock,
    /// Where operational metadata goes.
    pub recorder: crate::metadata::Recorder,
    /// The Prometheus handle that renders `/metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// What `POST /reload` runs (the process's one reload path); `None`
    /// disables it.
    pub reloader: Option<Arc<Reloader>>,
}

/// A started node.
pub struct RunningNode {
    /// The node's shared state.
    pub hub: Arc<Hub>,
    /// The bound QUIC address.
    pub listen: SocketAddr,
    /// The bound admin address.
    pub admin: SocketAddr,
    /// The node's TLS material, rotated on reload.
    pub tls: NodeTls,
    /// The accept loop's gate (connection counts, HELLO permits).
    pub gate: AcceptGate,
    /// The bound WebSocket fallback address, when configured.
    pub websocket: Option<SocketAddr>,
    /// The node's browser serving state (development certificate).
    pub browser: crate::browser::serve::BrowserServing,
    endpoints: Vec<quinn::Endpoint>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("node", self.hub.me())
            .field("listen", &self.listen)
            .field("admin", &self.admin)
            .finish()
    }
}

struct Introspect {
    hub: Arc<Hub>,
    reloader: Option<Arc<Reloader>>,
}

impl NodeIntrospect for Introspect {
    fn status(&self) -> StatusReport {
        self.hub.status()
    }

    fn readiness(&self) -> Readiness {
        let reasons: Vec<String> = self
            .hub
            .links_down()
            .into_iter()
            .map(|peer| format!("mesh link to {peer} down"))
            .collect();
        Readiness {
            ready: reasons.is_empty(),
            reasons,
        }
    }

    fn reload(&self) -> BoxFuture<'static, Result<ReloadReport, String>> {
        match &self.reloader {
            Some(reloader) => {
                let reloader = Arc::clone(reloader);
                Box::pin(async move {
                    reloader
                        .reload(ReloadSource::ConfigFile)
                        .await
                        .map_err(|e| e.to_string())
                })
            }
            None => Box::pin(async { Err("reload is not available on this node".to_string()) }),
        }
    }

    fn reload_with_config(
        &self,
        config: String,
    ) -> BoxFuture<'static, Result<ReloadReport, String>> {
        match &self.reloader {
            Some(reloader) => {
                let reloader = Arc::clone(reloader);
                Box::pin(async move {
                    tokio::task::spawn_blocking(move || {
                        crate::config::apply_pushed_config(reloader.path(), &config)
                            .map_err(|e| e.to_string())?;
                        reloader
                            .reload_blocking(&ReloadSource::ConfigFile)
                            .map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(|e| e.to_string())?
                })
            }
            None => Box::pin(async { Err("reload is not available on this node".to_string()) }),
        }
    }

    fn debug_channels(&self) -> Vec<ChannelSeen> {
        self.hub.seen_channels()
    }

    fn export_metrics(&self) {
        self.hub.export_metrics();
    }
}

impl RunningNode {
    /// Binds the node's QUIC and admin addresses and starts serving.
    pub async fn start(options: NodeOptions) -> Result<RunningNode, RelayError> {
        let policy = Arc::clone(&options.policy);
        let node = policy
            .fleet
            .nodes
            .get(options.id.as_str())
            .ok_or_else(|| RelayError::UnknownNode(options.id.clone()))?
            .clone();
        let limits = policy.fleet.limits.clone();
        let tls = NodeTls::new(&node.id, &options.pki)?;
        let client_transport = Arc::new(crate::tls::client_transport_config(&limits));
        let mesh_transport = Arc::new(crate::tls::mesh_transport_config(&limits));
        let browser = crate::browser::serve::BrowserServing::new(
            options.pki.dev_ca().is_some(),
            node.listen,
            options.clock.now_unix_secs(),
        )?;
        let mut server =
            crate::browser::serve::client_server_config(&tls, client_transport, &browser)?;
        crate::tls::apply_handshake_limits(&mut server, &limits);
        // A linked peer dials from its own listen address: its connection is
        // accepted with the mesh transport, like the dialling side's.
        let mesh_server = Arc::new(tls.server_config(Arc::clone(&mesh_transport))?);
        let mesh_client = tls.mesh_client_config(mesh_transport)?;
        let admin_auth = AdminAuth::for_node(&policy.fleet.admin, &node.id, node.admin)?;
        let mesh_peers: std::collections::HashSet<SocketAddr> = policy
            .fleet
            .links
            .iter()
            .filter_map(|l| {
                let peer = if l.a == node.id {
                    &l.b
                } else if l.b == node.id {
                    &l.a
                } else {
                    return None;
                };
                policy.fleet.nodes.get(peer.as_str()).map(|n| n.listen)
            })
            .collect();
        let endpoints =
            endpoints::bind_listen_endpoints(node.listen, server, limits.quic_endpoints).map_err(
                |source| RelayError::Bind {
                    what: "listen",
                    addr: node.listen,
                    source,
                },
            )?;
        let listen = endpoints[0]
            .local_addr()
            .map_err(|source| RelayError::Bind {
                what: "listen",
                addr: node.listen,
                source,
            })?;
        let admin_listener = tokio::net::TcpListener::bind(node.admin)
            .await
            .map_err(|source| RelayError::Bind {
                what: "admin",
                addr: node.admin,
                source,
            })?;
        let admin = admin_listener
            .local_addr()
            .map_err(|source| RelayError::Bind {
                what: "admin",
                addr: node.admin,
                source,
            })?;

        let websocket_listener = match node.websocket {
            Some(addr) => {
                let tls = browser.websocket_tls(&tls)?;
                Some(
                    crate::browser::serve::bind_websocket(addr, tls)
                        .await
                        .map_err(|source| RelayError::Bind {
                            what: "websocket",
                            addr,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let websocket = websocket_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok());
        let hub = Arc::new(Hub::new(
            node.id.clone(),
            Arc::clone(&policy),
            options.clock.clone(),
            options.recorder.clone(),
        ));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let gate = AcceptGate::new(GateLimits::from_limits(&limits));

        let mesh_acceptance = accept::MeshAcceptance {
            server: mesh_server,
            peers: mesh_peers,
        };
        tasks.spawn(accept::record_refusals(
            Arc::clone(&hub),
            gate.clone(),
            shutdown_rx.clone(),
        ));
        for endpoint in &endpoints {
            tasks.spawn(accept::accept_loop(
                Arc::clone(&hub),
                endpoint.clone(),
                gate.clone(),
                limits.clone(),
                mesh_acceptance.clone(),
                shutdown_rx.clone(),
            ));
        }
        for link in &policy.fleet.links {
            let peer = if link.a == node.id {
                &link.b
            } else if link.b == node.id {
                &link.a
            } else {
                continue;
            };
            if node.id >= *peer {
                continue;
            }
            let Some(peer_node) = policy.fleet.nodes.get(peer.as_str()) else {
                continue;
            };
            let dial_from = if endpoints.len() > 1 {
                endpoints::bind_dial_endpoint(listen, peer_node.listen).map_err(|source| {
                    RelayError::Bind {
                        what: "mesh dial",
                        addr: listen,
                        source,
                    }
                })?
            } else {
                endpoints[0].clone()
            };
            tasks.spawn(mesh::run_dialer(
                Arc::clone(&hub),
                dial_from,
                mesh_client.clone(),
                peer.clone(),
                peer_node.listen,
                limits.max_message_bytes,
                shutdown_rx.clone(),
            ));
        }
        tasks.spawn(timer_loop(Arc::clone(&hub), shutdown_rx.clone()));
        if let Some(every) = hub.traffic_interval() {
            tasks.spawn(traffic_loop(Arc::clone(&hub), every, shutdown_rx.clone()));
        }
        if let Some(listener) = websocket_listener {
            tasks.spawn(crate::browser::serve::run_websocket_listener(
                Arc::clone(&hub),
                listener,
                limits.clone(),
                gate.clone(),
                shutdown_rx.clone(),
            ));
        }
        if let Some(renewal) = browser.renewal(options.clock.clone(), shutdown_rx.clone()) {
            tasks.spawn(renewal);
            if let Some(reloader) = &options.reloader {
                let browser = browser.clone();
                reloader.on_applied(move |_| browser.recheck_certificate());
            }
        }
        let introspect = Arc::new(Introspect {
            hub: Arc::clone(&hub),
            reloader: options.reloader.clone(),
        });
        let router = browser.admin_routes(crate::admin::router_with_auth(
            introspect,
            options.metrics.clone(),
            admin_auth,
        ));
        let mut admin_shutdown = shutdown_rx.clone();
        tasks.spawn(async move {
            let stop = async move {
                let _ = admin_shutdown.changed().await;
            };
            if let Err(err) = crate::admin::serve(admin_listener, router, stop).await {
                tracing::error!(%err, "admin server failed");
            }
        });
        tracing::info!(node = %node.id, region = %node.region, %listen, %admin, "node started");
        Ok(RunningNode {
            hub,
            listen,
            admin,
            tls,
            gate,
            websocket,
            browser,
            endpoints,
            shutdown,
            tasks,
        })
    }

    /// Drains: stops accepting, tells every client `SHUTTING_DOWN` with
    /// redirect targets, waits for them to leave (at most the configured
    /// drain timeout), closes the endpoints, then records the partial
    /// traffic interval (before the caller shuts the metadata stores).
    pub async fn shutdown(mut self) {
        let drain = Duration::from_millis(self.hub.policy().fleet.limits.drain_timeout_ms);
        for endpoint in &self.endpoints {
            endpoint.set_server_config(None);
        }
        let _ = self.shutdown.send(true);
        let sessions = self.hub.close_all_sessions(
            ErrorCode::ShuttingDown,
            "this node is shutting down; reconnect elsewhere",
        );
        let deadline = crate::clock::monotonic_now() + drain;
        while self.hub.session_count() > 0 && crate::clock::monotonic_now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(node = %self.hub.me(), sessions, "node drained");
        self.close_endpoints(0u32.into(), b"shutdown", Duration::from_secs(1))
            .await;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.hub.record_traffic_interval();
        self.hub.clear();
    }

    /// Stops the node at once, without draining: as if its process died.
    /// Peers and clients see the connections close.
    pub async fn kill(mut self) {
        let _ = self.shutdown.send(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.hub.clear();
        let code = ErrorCode::ShuttingDown
            .to_wire()
            .try_into()
            .unwrap_or_default();
        self.close_endpoints(code, b"killed", Duration::from_secs(2))
            .await;
    }

    /// Closes every listening endpoint's connections with `code` and waits
    /// up to `wait` for them to be acknowledged.
    async fn close_endpoints(&self, code: quinn::VarInt, reason: &[u8], wait: Duration) {
        for endpoint in &self.endpoints {
            endpoint.close(code, reason);
        }
        let idle = futures_util::future::join_all(self.endpoints.iter().map(|e| e.wait_idle()));
        let _ = tokio::time::timeout(wait, idle).await;
    }

    /// Puts a new policy in force on this node.
    pub fn set_policy(&self, policy: Arc<Policy>) -> ReloadReport {
        self.hub.set_policy(policy)
    }
}

/// Runs the hub's timers: sleeps until the plane's next deadline
/// ([`Hub::poll_timeout`]), or until an input moved it, then ticks.
async fn timer_loop(hub: Arc<Hub>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let deadline = tokio::time::Instant::from_std(hub.poll_timeout());
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => hub.tick(),
            _ = hub.deadline_moved() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Records the node's traffic every `every` (the first interval ends
/// `every` after the node started), until shutdown.
async fn traffic_loop(hub: Arc<Hub>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval_at(crate::clock::timer_now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => hub.record_traffic_interval(),
            _ = shutdown.changed() => return,
        }
    }
}

/// Every node of a configuration in one process (`serve --all`), sharing one
/// policy: a reload applies to all of them before it returns.
pub struct Fleet {
    /// The running nodes, in id order.
    pub nodes: Vec<RunningNode>,
    /// The configuration file, re-read on reload.
    pub path: PathBuf,
    reloader: Arc<Reloader>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("nodes", &self.nodes).finish()
    }
}

impl Fleet {
    /// Starts `ids` (every node when empty) of the configuration at `path`.
    pub async fn start(
        path: PathBuf,
        policy: Arc<Policy>,
        pki: Arc<FleetPki>,
        ids: Vec<NodeId>,
        clock: SharedClock,
        recorder: crate::metadata::Recorder,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
    ) -> Result<Fleet, RelayError> {
        let ids: Vec<NodeId> = if ids.is_empty() {
            policy.fleet.nodes.keys().cloned().collect()
        } else {
            ids
        };
        let reloader = Arc::new(Reloader::new(path.clone()));
        let mut nodes = Vec::new();
        for id in ids {
            let node = RunningNode::start(NodeOptions {
                id,
                policy: Arc::clone(&policy),
                pki: Arc::clone(&pki),
                clock: clock.clone(),
                recorder: recorder.clone(),
                metrics: metrics.clone(),
                reloader: Some(Arc::clone(&reloader)),
            })
            .await?;
            reloader.add_hub(Arc::clone(&node.hub));
            reloader.add_node_tls(node.tls.clone());
            nodes.push(node);
        }
        Ok(Fleet {
            nodes,
            path,
            reloader,
        })
    }

    /// The hubs of every node.
    pub fn hubs(&self) -> Vec<Arc<Hub>> {
        self.nodes.iter().map(|n| Arc::clone(&n.hub)).collect()
    }

    /// The process's reload path (SIGHUP and `POST /reload`).
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// Re-reads the configuration and applies it to every node, blocking
    /// (tests and tools; a serving process uses [`Reloader::reload`]).
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.reloader.reload_blocking(&ReloadSource::ConfigFile)
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&RunningNode> {
        self.nodes.iter().find(|n| n.hub.me().as_str() == id)
    }

    /// Removes a node from the fleet (to kill or drain it).
    pub fn take(&mut self, id: &str) -> Option<RunningNode> {
        let index = self.nodes.iter().position(|n| n.hub.me().as_str() == id)?;
        Some(self.nodes.remove(index))
    }

    /// Drains every node.
    pub async fn shutdown(self) {
        let drains = self.nodes.into_iter().map(RunningNode::shutdown);
        futures_util::future::join_all(drains).await;
    }
}

/// Loads the policy, or explains why not.
pub fn load_policy(path: &std::path::Path) -> Result<Policy, PolicyError> {
    Policy::load(path)
}
