//! `switchboard serve`: the API tier, the session host and the embedded
//! store in one process, the API reaching sessions through the in-process
//! router.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use switchboard_api::{ApiState, Authenticator, StaticTokens};
use switchboard_log::LogConfig;
use switchboard_router::LocalRouter;
use switchboard_rpc::keys::{write_secret_file, ServerKeys};
use switchboard_session::crypto::{Crypto, CryptoConfig, MasterSource};
use switchboard_session::{HostConfig, SessionHost};

use crate::config::{LogFormat, ServeArgs, Settings};

/// Name of the generated token file in the data directory.
pub const TOKEN_FILE: &str = "admin.token";

fn init_logging(s: &Settings) {
    let filter = tracing_subscriber::EnvFilter::new(&s.config.logging.level);
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match s.config.logging.format {
        LogFormat::Json => b.json().flatten_event(true).try_init(),
        LogFormat::Text => b.try_init(),
    };
}

/// Static tokens, then JWTs, then introspection: the first that knows a
/// token decides.
async fn authenticators(s: &Settings, tokens: &[String]) -> Result<Vec<Arc<dyn Authenticator>>> {
    use switchboard_api::oauth::{http_client, IntrospectConfig, Introspection, JwtAuth, JwtConfig};
    let c = &s.config.auth;
    let statics =
        StaticTokens::parse(tokens).map_err(|e| anyhow::anyhow!("config key `auth.tokens`: {e}"))?;
    let mut auth: Vec<Arc<dyn Authenticator>> = vec![Arc::new(statics)];
    let http =
        http_client(c.ca_cert.as_ref()).map_err(|e| anyhow::anyhow!("config key `auth.ca_cert`: {e}"))?;
    if let (Some(jwks), Some(issuer), Some(audience)) = (&c.jwks, &c.issuer, &c.audience) {
        let cfg = JwtConfig {
            jwks: jwks.clone(),
            issuer: issuer.clone(),
            audience: audience.clone(),
            scope_claim: c.scope_claim.clone(),
            leeway_s: c.leeway_s,
            refresh_interval: Duration::from_millis(c.jwks_refresh_ms),
        };
        let jwt = JwtAuth::new(cfg, http.clone())
            .await
            .map_err(|e| anyhow::anyhow!("config key `auth.jwks`: {e}"))?;
        auth.push(Arc::new(jwt));
    }
    if let (Some(url), Some(id), Some(secret)) = (&c.introspect, &c.client_id, &c.client_secret) {
        let cfg = IntrospectConfig {
            url: url.clone(),
            client_id: id.clone(),
            client_secret: secret.clone(),
            scope_claim: c.scope_claim.clone(),
            cache_size: 100_000,
        };
        auth.push(Arc::new(Introspection::new(cfg, http)));
    }
    Ok(auth)
}

/// The tokens to accept: configured ones, else (without an identity
/// provider) the token file's, created with a random token on first start.
fn tokens(s: &Settings) -> Result<Vec<String>> {
    let c = &s.config.auth;
    if !c.tokens.is_empty() || c.jwks.is_some() || c.introspect.is_some() || !c.client_certs.is_empty() {
        return Ok(s.config.auth.tokens.clone());
    }
    let path = s.config.node.data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => {
            tracing::info!(path = %path.display(), "using the admin token in the data directory");
            Ok(vec![t.trim().to_string()])
        }
        _ => {
            let token = format!("sb_{}", hex::encode(rand::random::<[u8; 24]>()));
            write_secret_file(&path, format!("{token}\n").as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::warn!(path = %path.display(), "no token configured: generated an admin token (mode 0600)");
            Ok(vec![token])
        }
    }
}

/// The store's URL: configured, else the embedded log in the data
/// directory.
pub fn store_url(s: &Settings) -> String {
    s.config
        .node
        .store
        .clone()
        .unwrap_or_else(|| format!("file://{}", s.config.node.data_dir.join("log").display()))
}

/// Where scheduled blocks the store cannot take at shutdown are spilled.
pub fn spill_dir(s: &Settings) -> std::path::PathBuf {
    s.config.node.data_dir.join("spill")
}

/// The Kafka store's settings, from the `[kafka]` section.
pub fn kafka_config(s: &Settings, brokers: &str) -> switchboard_kafka::KafkaConfig {
    let k = &s.config.kafka;
    let mut c = switchboard_kafka::KafkaConfig::new(brokers, &s.config.node.node_id);
    c.topic_prefix = k.topic_prefix.clone();
    c.replication_factor = k.replication_factor;
    c.lanes = k.lanes;
    c.fetchers = k.fetchers;
    c.fetcher_buffer_kib = k.fetcher_buffer_kib;
    c.state_partitions = k.state_partitions;
    // as the embedded log: keyed publishes' producers outlive their keys by
    // an hour
    c.short_producer_ttl_ms = s.config.session.idempotency_ttl_ms + 3_600_000;
    c.commit_timeout = Duration::from_millis(k.commit_timeout_ms);
    c.transaction_timeout = Duration::from_millis(k.transaction_timeout_ms);
    let tls = k.ca_cert.is_some();
    if let Some(ca) = &k.ca_cert {
        c.properties
            .push(("ssl.ca.location".into(), ca.display().to_string()));
    }
    if let (Some(m), Some(u), Some(p)) = (&k.sasl_mechanism, &k.sasl_username, &k.sasl_password) {
        c.properties.push(("sasl.mechanism".into(), m.clone()));
        c.properties.push(("sasl.username".into(), u.clone()));
        c.properties.push(("sasl.password".into(), p.clone()));
    }
    let protocol = match (tls, k.sasl_mechanism.is_some()) {
        (false, false) => None,
        (true, false) => Some("ssl"),
        (false, true) => Some("sasl_plaintext"),
        (true, true) => Some("sasl_ssl"),
    };
    if let Some(p) = protocol {
        c.properties.push(("security.protocol".into(), p.into()));
    }
    // the section's own properties come last, so they win
    for p in &k.properties {
        if let Some((name, value)) = p.split_once('=') {
            c.properties
                .push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    c
}

/// The server keys: a configured file must exist (a cluster shares it, and
/// a fresh key on one node would split it); the default one in the data
/// directory is created on first start.
fn server_keys(s: &Settings) -> Result<ServerKeys> {
    match &s.config.node.server_key_file {
        Some(path) => ServerKeys::from_file(path).with_context(|| {
            format!(
                "config key `node.server_key_file`: loading {} (create it with `switchboard keys init-server --file {}`)",
                path.display(),
                path.display()
            )
        }),
        None => {
            let path = s.config.node.data_dir.join("server.key");
            ServerKeys::load_or_create(&path).with_context(|| format!("loading {}", path.display()))
        }
    }
}

/// Where encryption keys live, if encryption is on.
pub fn crypto_config(s: &Settings) -> Option<CryptoConfig> {
    if !s.config.encryption.enabled {
        return None;
    }
    let keys_dir = s.config.node.data_dir.join("keys");
    let master = if let Some(cmd) = &s.config.encryption.master_key_command {
        MasterSource::Command(cmd.clone())
    } else if let Ok(v) = std::env::var("SWITCHBOARD_MASTER_KEY") {
        MasterSource::Env(v)
    } else {
        MasterSource::File(
            s.config
                .encryption
                .master_key_file
                .clone()
                .unwrap_or_else(|| keys_dir.join("master.keys")),
        )
    };
    Some(CryptoConfig {
        keys_dir,
        master,
        rotate_ms: s.config.encryption.data_key_rotate_ms,
        rotate_records: 1 << 32,
    })
}

/// The certificate resolver (reloaded on SIGHUP and when its files
/// change) and, for a self-signed certificate, its fingerprint.
type Tls = Option<(Arc<switchboard_api::tls::CertResolver>, Option<String>)>;

fn tls_setup(s: &Settings) -> Result<Tls> {
    use switchboard_api::tls::{self_signed, CertResolver};
    let c = &s.config.tls;
    let (cert, key, fp) = match (&c.cert, &c.key, c.self_signed) {
        (Some(cert), Some(key), _) => (cert.clone(), key.clone(), None),
        (None, None, true) => {
            let (cert, key, fp) =
                self_signed(&s.config.node.data_dir.join("tls")).map_err(anyhow::Error::msg)?;
            (cert, key, Some(fp))
        }
        (None, None, false) => return Ok(None),
        // checked with the configuration
        _ => anyhow::bail!("config key `tls.cert`: `tls.cert` and `tls.key` go together"),
    };
    let resolver = CertResolver::new(cert, key).map_err(|e| anyhow::anyhow!("config key `tls.cert`: {e}"))?;
    resolver.watch(Duration::from_secs(2));
    let r = resolver.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            let r = r.clone();
            let result = tokio::task::spawn_blocking(move || r.reload()).await;
            if let Ok(Err(e)) = result {
                tracing::error!(error = %e, "TLS certificate reload on SIGHUP failed; keeping the old one");
            }
        }
    });
    Ok(Some((resolver, fp)))
}

/// What a process of this binary runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `serve`: the API, the sessions and the store in one process.
    All,
    /// `api`: the stateless HTTP tier, reaching backends through the
    /// phone switch.
    Api,
    /// `backend`: a session host attached to the store and to one broker.
    Backend,
}

/// Runs the service until SIGTERM or SIGINT, then drains and exits.
pub fn run(args: ServeArgs, role: Role) -> Result<()> {
    let s = args.load()?;
    if args.print_config {
        print!("{}", s.config.redacted_toml()?);
        return Ok(());
    }
    match (role, s.config.router.brokers.len()) {
        (Role::Api, 0) => anyhow::bail!("config key `router.brokers`: `switchboard api` needs the phone switch's brokers (--router amqp://HOST:PORT,...)"),
        (Role::Backend, n) if n != 1 => anyhow::bail!("config key `router.brokers`: a backend node attaches to exactly one broker (--router amqp://HOST:PORT), not {n}"),
        _ => {}
    }
    init_logging(&s);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("switchboard")
        .build()
        .context("starting the runtime")?;
    let reload: Reload = Arc::new(move || args.load());
    match role {
        Role::All | Role::Api => rt.block_on(serve(s, role, reload)),
        Role::Backend => rt.block_on(backend(s)),
    }
}

/// Reads the configuration again (file, environment, flags), on SIGHUP.
type Reload = Arc<dyn Fn() -> Result<Settings> + Send + Sync>;

/// On SIGHUP, an API node reads its configuration again and connects to
/// the brokers added at the end of `router.brokers`.
fn reload_brokers_on_hangup(router: switchboard_amqp::AmqpRouter, reload: Reload) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let reload = reload.clone();
            let read = tokio::task::spawn_blocking(move || reload().and_then(|s| brokers(&s))).await;
            let outcome = match read {
                Ok(Ok(list)) => router.reload(&list).map_err(anyhow::Error::msg),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e.into()),
            };
            match outcome {
                Ok(0) => tracing::info!("configuration reloaded: no new broker"),
                Ok(n) => tracing::info!(added = n, "configuration reloaded: new brokers connected"),
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "configuration reload refused; keeping the brokers in use"
                ),
            }
        }
    });
}

/// The brokers of the `[router]` section.
fn brokers(s: &Settings) -> Result<Vec<switchboard_amqp::Broker>> {
    let ca = match &s.config.router.ca_cert {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("config key `router.ca_cert`: reading {}", p.display()))?,
        ),
        None => None,
    };
    s.config
        .router
        .brokers
        .iter()
        .map(|b| {
            switchboard_amqp::Broker::parse(b, ca.as_deref())
                .map_err(|e| anyhow::anyhow!("config key `router.brokers`: {e}"))
        })
        .collect()
}

/// Raises the soft limit on open files to the hard one (each partition of
/// the embedded log holds its active segment open, each connection one
/// more, and sealed segments up to `log.max_open_segments`); returns the
/// limit in force.
fn raise_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let lim = getrlimit(Resource::Nofile);
    let (soft, hard) = (lim.current, lim.maximum);
    if soft < hard {
        let mut raised = lim;
        raised.current = hard;
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(?soft, ?hard, error = %e, "could not raise the open-file limit");
            return soft;
        }
    }
    tracing::info!(limit = ?hard, was = ?soft, "open-file limit");
    hard
}

/// Warns when the open-file limit leaves little room for what this node
/// may hold open: sealed segments, connections, and one file per partition.
fn check_file_limit(limit: Option<u64>, s: &Settings) {
    let Some(limit) = limit else { return };
    let wanted = s.config.log.max_open_segments as u64 + s.config.http.max_connections as u64 + 256;
    if wanted > limit {
        tracing::warn!(
            limit,
            segments = s.config.log.max_open_segments,
            connections = s.config.http.max_connections,
            "the open-file limit is low for this configuration: sealed segments and connections alone may take {wanted} files, and each partition takes one more (raise `ulimit -n`, or lower log.max_open_segments and http.max_connections)"
        );
    }
}

/// The data directory, the server keys and (for nodes that take HTTP)
/// the tokens, read off the runtime.
async fn node_files(s: &Settings, with_tokens: bool) -> Result<(ServerKeys, Vec<String>)> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || -> Result<(ServerKeys, Vec<String>)> {
        let dir = &s.config.node.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating data directory {}", dir.display()))?;
        let keys = server_keys(&s)?;
        Ok((keys, if with_tokens { tokens(&s)? } else { Vec::new() }))
    })
    .await?
}

/// Opens the store, re-injects spilled blocks and starts the session host.
async fn open_host(s: &Settings, keys: &ServerKeys) -> Result<SessionHost> {
    let log_cfg = LogConfig {
        durability: s.durability,
        segment_bytes: s.config.log.segment_bytes,
        max_open_segments: s.config.log.max_open_segments,
        retention_check_ms: s.config.log.retention_check_ms,
        // the producers of keyed publishes outlive their keys by an hour
        short_producer_ttl_ms: s.config.session.idempotency_ttl_ms + 3_600_000,
        ..LogConfig::default()
    };
    let url = store_url(s);
    let store: Arc<dyn switchboard_store::Store> = match switchboard_kafka::brokers_of(&url) {
        Some(brokers) => Arc::new(
            switchboard_kafka::KafkaStore::open(kafka_config(s, brokers))
                .await
                .with_context(|| format!("opening the store {url}"))?,
        ),
        None => {
            let u = url.clone();
            tokio::task::spawn_blocking(move || switchboard_store::open(&u, log_cfg))
                .await?
                .with_context(|| format!("opening the store {url}"))?
        }
    };
    if url == "memory://" {
        tracing::warn!("store is memory://: events live in this process only and are gone when it stops");
    }
    // blocks spilled at the last shutdown go to the store before anything
    // is served
    let spilled = switchboard_session::spill::reinject(&spill_dir(s), &store).await;
    if spilled != Default::default() {
        tracing::info!(
            stored = spilled.stored,
            dropped = spilled.dropped,
            quarantined = spilled.quarantined,
            left = spilled.left,
            "spilled blocks re-injected"
        );
    }
    let crypto = match crypto_config(s) {
        Some(cfg) => Some(
            Crypto::open(cfg, store.clone())
                .await
                .context("loading encryption keys")?,
        ),
        None => {
            tracing::warn!("encryption at rest is off: events are stored in the clear");
            None
        }
    };
    SessionHost::start(
        store,
        keys.clone(),
        HostConfig {
            node_id: s.config.node.node_id.clone(),
            // behind the phone switch, each allocation names its shard
            shard: 0,
            lease_ms: s.config.session.lease_ms,
            max_sessions: s.config.session.max_sessions,
            readahead_bytes: s.config.session.readahead_bytes,
            memory_budget: usize::try_from(s.config.session.memory_budget).unwrap_or(usize::MAX),
            max_blocks_in_flight: s.config.session.max_blocks_in_flight,
            idempotency_ttl_ms: s.config.session.idempotency_ttl_ms,
            idempotency_max_keys: s.config.session.idempotency_max_keys,
            // only the embedded log can hold records an older version wrote
            legacy_records: url.starts_with("file://"),
            spill_dir: Some(spill_dir(s)),
            ..HostConfig::default()
        },
        crypto,
    )
    .await
    .context("starting the session host")
}

async fn serve(s: Settings, role: Role, reload: Reload) -> Result<()> {
    // first, so that what the layers below record at start is kept
    let metrics = switchboard_api::metrics_export::install();
    check_file_limit(raise_file_limit(), &s);
    // before anything is created in the data directory: a taken port
    // leaves no trace
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("listening on {} (is another server running there?)", s.listen))?;
    let dir = &s.config.node.data_dir;
    let (keys, tokens) = node_files(&s, true).await?;
    let addr = listener.local_addr()?;
    let (host, switch) = match role {
        Role::Api => (None, Some(api_router(&s, addr).await?)),
        _ => (Some(open_host(&s, &keys).await?), None),
    };
    if let Some(r) = &switch {
        reload_brokers_on_hangup(r.clone(), reload);
    }
    let router: Arc<dyn switchboard_router::Router> = match (&host, &switch) {
        (Some(host), _) => Arc::new(LocalRouter::new(Arc::new(host.clone()), addr.to_string())),
        (None, Some(r)) => Arc::new(r.clone()),
        (None, None) => anyhow::bail!("no router"),
    };
    let auth = authenticators(&s, &tokens).await?;
    let state = ApiState::new(router, auth, keys.session_secrets(), metrics)
        .with_client_certs(&s.config.auth.client_certs)
        .map_err(|e| anyhow::anyhow!("config key `auth.client_certs`: {e}"))?
        .with_config(&s.config.redacted())
        .map_err(|e| anyhow::anyhow!("serving the configuration: {e}"))?
        .with_limits(switchboard_api::ConnLimits {
            header_timeout: Duration::from_millis(s.config.http.header_timeout_ms),
            idle_timeout: Duration::from_millis(s.config.http.idle_timeout_ms),
            body_timeout: Duration::from_millis(s.config.http.body_timeout_ms),
            max_connections: s.config.http.max_connections,
            max_handshakes: s.config.http.max_handshakes,
            body_buffer_bytes: s.config.http.body_buffer_bytes,
            ..switchboard_api::ConnLimits::default()
        })
        .map_err(|e| anyhow::anyhow!("connection limits: {e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        let _ = stop_rx.await;
    };
    let tls = tls_setup(&s)?;
    let server = match &tls {
        Some((resolver, _)) => {
            let cfg =
                switchboard_api::tls::server_config(resolver.clone(), s.config.tls.client_ca.as_deref())
                    .map_err(|e| anyhow::anyhow!("config key `tls.client_ca`: {e}"))?;
            tokio::spawn(switchboard_api::run_tls(listener, cfg, state.clone(), stop))
        }
        None => tokio::spawn(switchboard_api::run(listener, state.clone(), stop)),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, data_dir = %dir.display(), "switchboard listening");
    // the first stdout line is the address: harnesses that start on port 0 read it
    // (a closed stdout must not stop the server: write errors are ignored)
    let mut out = std::io::stdout();
    let stop_signal = shutdown_signal();
    let _ = writeln!(out, "switchboard listening on {scheme}://{addr}");
    if let Some((_, Some(fp))) = &tls {
        let _ = writeln!(out, "self-signed TLS certificate, SHA-256 fingerprint {fp}");
        tracing::warn!(fingerprint = %fp, "serving a self-signed certificate: for trials only");
    }

    stop_signal.await;
    let deadline = shutdown_deadline(&s);
    state.start_draining();
    if let Some(r) = &switch {
        r.start_draining();
    }
    if s.config.node.drain_delay_ms > 0 {
        // keep answering (503) so that load balancers see /readyz fail
        // before the listener goes away
        let until = tokio::time::Instant::now() + Duration::from_millis(s.config.node.drain_delay_ms);
        tokio::time::sleep_until(until.min(deadline)).await;
    }
    // the delay is part of the bound, not added to it: the process is gone
    // within shutdown_timeout_ms of the signal, as orchestrators expect
    if let Some(host) = &host {
        drain_host(host, deadline).await;
    }
    let _ = stop_tx.send(());
    match tokio::time::timeout_at(deadline, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "server error"),
        Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
        Err(_) => tracing::warn!("requests still open at the shutdown bound; exiting"),
    }
    if let Some(r) = &switch {
        r.close();
    }
    tracing::info!("stopped");
    Ok(())
}

/// The shutdown bound from now: the process is gone by then.
fn shutdown_deadline(s: &Settings) -> tokio::time::Instant {
    tracing::info!(
        bound_ms = s.config.node.shutdown_timeout_ms,
        "shutting down: draining"
    );
    tokio::time::Instant::now() + Duration::from_millis(s.config.node.shutdown_timeout_ms)
}

/// Drains the session host: writers finish (or spill) their scheduled
/// blocks by `deadline`.
async fn drain_host(host: &SessionHost, deadline: tokio::time::Instant) {
    let unfinished = host
        .drain(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await;
    if unfinished > 0 {
        tracing::error!(
            writers = unfinished,
            "shutdown bound reached with blocks still in flight"
        );
    }
}

/// The brokers of the `[router]` section, its CA file read off the runtime.
async fn read_brokers(s: &Settings) -> Result<Vec<switchboard_amqp::Broker>> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || brokers(&s)).await?
}

/// The API tier's phone-switch router.
async fn api_router(s: &Settings, addr: std::net::SocketAddr) -> Result<switchboard_amqp::AmqpRouter> {
    Ok(switchboard_amqp::AmqpRouter::start(
        switchboard_amqp::RouterConfig {
            brokers: read_brokers(s).await?,
            node_id: s.config.node.node_id.clone(),
            address: addr.to_string(),
            call_timeout: Duration::from_millis(s.config.router.call_timeout_ms),
            names: switchboard_amqp::Names::new(&s.config.router.namespace),
        },
    ))
}

/// `switchboard backend`: a session host attached to the store and to one
/// phone-switch broker, until SIGTERM or SIGINT; then it stops taking
/// allocations, drains (spilling as a last resort) and detaches.
async fn backend(s: Settings) -> Result<()> {
    let metrics = switchboard_api::metrics_export::install();
    check_file_limit(raise_file_limit(), &s);
    let ops = match &s.config.node.metrics_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("config key `node.metrics_listen`: listening on {a}"))?,
        ),
        None => None,
    };
    let (keys, _) = node_files(&s, false).await?;
    let host = open_host(&s, &keys).await?;
    let broker = read_brokers(&s).await?.remove(0);
    let address = tokio::task::spawn_blocking(hostname).await.unwrap_or_default();
    let label = broker.label().to_string();
    let link = switchboard_amqp::BackendLink::start(
        Arc::new(host.clone()),
        switchboard_amqp::BackendConfig {
            broker,
            node_id: s.config.node.node_id.clone(),
            address,
            max_calls: s.config.router.max_calls,
            names: switchboard_amqp::Names::new(&s.config.router.namespace),
        },
    )
    .await
    .context("attaching to the phone switch")?;
    let (ops_stop, ops_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(listener) = ops {
        let (link, host) = (link.clone(), host.clone());
        let ready: switchboard_api::metrics_export::Readiness = Arc::new(move || {
            if host.is_draining() {
                return Err("draining".into());
            }
            if !link.attached() {
                return Err("not attached to its broker".into());
            }
            match switchboard_rpc::Backend::status(&host).store_error {
                Some(e) => Err(format!("store_unavailable: {e}")),
                None => Ok(()),
            }
        });
        let stop = async move {
            let _ = ops_stopped.await;
        };
        tokio::spawn(switchboard_api::metrics_export::run_ops(
            listener, metrics, ready, stop,
        ));
    }
    let stop_signal = shutdown_signal();
    tracing::info!(node = %s.config.node.node_id, broker = %label, "switchboard backend attached");
    let _ = writeln!(
        std::io::stdout(),
        "switchboard backend {} attached to {label}",
        s.config.node.node_id
    );
    stop_signal.await;
    let deadline = shutdown_deadline(&s);
    link.stop_taking_work();
    drain_host(&host, deadline).await;
    link.close(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await;
    let _ = ops_stop.send(());
    tracing::info!("stopped");
    Ok(())
}

/// This machine's name, for `GET /v1/cluster`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "-".into())
}

/// SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when it is first polled: a signal that arrives between the start
/// message and the wait still drains instead of killing the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            // without signal handlers, run until killed
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
