//! Configuration of `switchboard serve`: one serde tree, read from a TOML
//! file, then overridden by `SWITCHBOARD_*` environment variables and
//! flags (flags win), then validated with errors that name the key.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use switchboard_log::Durability;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The configuration file's keys (all optional).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP listener.
    pub listen: String,
    /// Directory of the embedded log, keys and token file.
    pub data_dir: PathBuf,
    /// The storage core: `file://DIR` (the embedded log) or `memory://`
    /// (nothing kept after the process ends). Default
    /// `file://<data_dir>/log`.
    pub store: Option<String>,
    /// Static bearer tokens. Empty: a generated admin token in
    /// `<data_dir>/admin.token`.
    pub tokens: Vec<String>,
    /// Node id, reported to clients and inside session ids.
    pub node_id: String,
    /// Server key file (cursor and session-secret keys, `<id> <hex>` lines,
    /// newest last). Nodes of one cluster share it. Default
    /// `<data_dir>/server.key`, created on first start.
    pub server_key_file: Option<PathBuf>,
    /// `always`, `interval[:MS]` or `never`.
    pub fsync: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Log filter (`info`, `switchboard_api=debug,info`, ...).
    pub log_level: String,
    /// Longest graceful shutdown before the process exits anyway.
    pub shutdown_timeout_ms: u64,
    /// On shutdown, how long to keep answering `unavailable` (and 503 on
    /// `/readyz`) before closing the listener, so load balancers notice.
    pub drain_delay_ms: u64,
    /// Session lease.
    pub lease_ms: u64,
    /// Most sessions on this node.
    pub max_sessions: usize,
    /// Read-ahead buffer per reader.
    pub readahead_bytes: usize,
    /// Scheduled-but-not-durable blocks per writer before backpressure.
    pub max_blocks_in_flight: usize,
    /// How long idempotency keys are remembered.
    pub idempotency_ttl_ms: u64,
    /// Segment size of the embedded log.
    pub segment_bytes: u64,
    /// Encrypt events at rest (AES-256-GCM).
    pub encryption: bool,
    /// File of master keys (`<id> <hex>` lines, newest last). Default
    /// `<data_dir>/keys/master.keys`, created on first start.
    pub master_key_file: Option<PathBuf>,
    /// Command printing master keys in the file's format (a KMS hook).
    pub master_key_command: Option<String>,
    /// Replace each stream's data key after this long.
    pub data_key_rotate_ms: u64,
    /// JWKS of the OAuth2 issuer: a file or an http(s) URL.
    pub auth_jwks: Option<String>,
    /// Required `iss` of JWTs.
    pub auth_issuer: Option<String>,
    /// Required `aud` of JWTs.
    pub auth_audience: Option<String>,
    /// Claim holding scopes (space-separated string or list).
    pub auth_scope_claim: String,
    /// Allowed clock skew for `exp` and `nbf`, seconds.
    pub auth_leeway_s: u64,
    /// Least time between JWKS fetches for unknown key ids.
    pub auth_jwks_refresh_ms: u64,
    /// RFC 7662 introspection endpoint for opaque tokens.
    pub auth_introspect: Option<String>,
    /// Client id for introspection.
    pub auth_client_id: Option<String>,
    /// Client secret for introspection.
    pub auth_client_secret: Option<String>,
    /// Extra CA certificate (PEM) trusted for JWKS and introspection.
    pub auth_ca_cert: Option<PathBuf>,
    /// TLS certificate chain (PEM) of the API listener; reloaded on SIGHUP
    /// and when the file changes.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a generated self-signed certificate (trials only).
    pub tls_self_signed: bool,
    /// CA (PEM) whose client certificates identify callers (mTLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Client certificate names accepted as identities, `NAME[:SCOPES]`.
    pub client_certs: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7700".into(),
            data_dir: PathBuf::from("./data"),
            store: None,
            tokens: Vec::new(),
            node_id: "local".into(),
            server_key_file: None,
            fsync: "always".into(),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            shutdown_timeout_ms: 30_000,
            drain_delay_ms: 0,
            lease_ms: 30_000,
            max_sessions: 10_000,
            readahead_bytes: 4 << 20,
            max_blocks_in_flight: 16,
            idempotency_ttl_ms: 24 * 3_600_000,
            segment_bytes: 128 << 20,
            encryption: true,
            master_key_file: None,
            master_key_command: None,
            data_key_rotate_ms: 24 * 3_600_000,
            auth_jwks: None,
            auth_issuer: None,
            auth_audience: None,
            auth_scope_claim: "scope".into(),
            auth_leeway_s: 30,
            auth_jwks_refresh_ms: 30_000,
            auth_introspect: None,
            auth_client_id: None,
            auth_client_secret: None,
            auth_ca_cert: None,
            tls_cert: None,
            tls_key: None,
            tls_self_signed: false,
            tls_client_ca: None,
            client_certs: Vec::new(),
        }
    }
}

const REDACTED: &str = "<redacted>";

impl Config {
    /// The configuration as JSON with every secret replaced: static tokens
    /// keep only their scopes, the introspection client secret and the
    /// master key command (which may carry a key) are hidden. Paths stay:
    /// they name where secrets are, not what they are.
    pub fn redacted(&self) -> serde_json::Value {
        serde_json::to_value(self.redact()).unwrap_or(serde_json::Value::Null)
    }

    /// The configuration as a TOML file, secrets redacted; settings left
    /// unset (no value, no default) are left out.
    pub fn redacted_toml(&self) -> Result<String> {
        toml::to_string(&self.redact()).context("rendering the configuration as TOML")
    }

    fn redact(&self) -> Config {
        let mut c = self.clone();
        c.tokens = c
            .tokens
            .iter()
            .map(|t| match t.split_once(':') {
                Some((_, scopes)) => format!("{REDACTED}:{scopes}"),
                None => REDACTED.to_string(),
            })
            .collect();
        if c.auth_client_secret.is_some() {
            c.auth_client_secret = Some(REDACTED.into());
        }
        if c.master_key_command.is_some() {
            c.master_key_command = Some(REDACTED.into());
        }
        c
    }
}

/// Flags of `switchboard serve`. Each also reads the environment variable
/// named beside it; both override the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file; its keys are the long flag names with `_`
    /// (listen, data_dir, tokens, node_id, fsync, log_format, log_level,
    /// shutdown_timeout_ms, drain_delay_ms, lease_ms, max_sessions, readahead_bytes,
    /// max_blocks_in_flight, idempotency_ttl_ms, segment_bytes, encryption,
    /// master_key_file, master_key_command, data_key_rotate_ms).
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (file, then environment, then
    /// flags, validated) as TOML with secrets redacted, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Address to listen on [default: 127.0.0.1:7700].
    #[arg(long, env = "SWITCHBOARD_LISTEN")]
    pub listen: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Storage core: file://DIR (the embedded log) or memory:// (for tests
    /// and demos: nothing survives the process) [default: file://<data-dir>/log].
    #[arg(long, env = "SWITCHBOARD_STORE")]
    pub store: Option<String>,
    /// A static bearer token, `TOKEN[:SCOPES]` (repeatable; the env variable
    /// takes a list separated by `;`). SCOPES is a comma-separated list like
    /// `switchboard:read:orders.*,switchboard:write:billing`; none means
    /// `switchboard:admin`. Without any token, an admin token is generated
    /// into <data-dir>/admin.token.
    #[arg(long = "token", env = "SWITCHBOARD_TOKENS", value_delimiter = ';')]
    pub tokens: Vec<String>,
    /// Node id, 1 to 64 of A-Z a-z 0-9 . _ - [default: local].
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: Option<String>,
    /// Server key file shared by the nodes of a cluster (cursors and
    /// session signatures) [default: <data-dir>/server.key, created].
    #[arg(long, env = "SWITCHBOARD_SERVER_KEY_FILE")]
    pub server_key_file: Option<PathBuf>,
    /// When appends reach the disk: always, interval[:MS] or never [default: always].
    #[arg(long, env = "SWITCHBOARD_FSYNC")]
    pub fsync: Option<String>,
    /// Log format [default: text].
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter [default: info].
    #[arg(long, env = "SWITCHBOARD_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Graceful shutdown bound in ms [default: 30000].
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_TIMEOUT_MS")]
    pub shutdown_timeout_ms: Option<u64>,
    /// Delay in ms between failing /readyz and closing the listener on shutdown; part of shutdown_timeout_ms, so below it [default: 0].
    #[arg(long, env = "SWITCHBOARD_DRAIN_DELAY_MS")]
    pub drain_delay_ms: Option<u64>,
    /// Session lease in ms [default: 30000].
    #[arg(long, env = "SWITCHBOARD_LEASE_MS")]
    pub lease_ms: Option<u64>,
    /// Most sessions on this node [default: 10000].
    #[arg(long, env = "SWITCHBOARD_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
    /// Read-ahead bytes per reader [default: 4194304].
    #[arg(long, env = "SWITCHBOARD_READAHEAD_BYTES")]
    pub readahead_bytes: Option<usize>,
    /// Blocks in flight per writer before backpressure [default: 16].
    #[arg(long, env = "SWITCHBOARD_MAX_BLOCKS_IN_FLIGHT")]
    pub max_blocks_in_flight: Option<usize>,
    /// Idempotency key lifetime in ms [default: 86400000].
    #[arg(long, env = "SWITCHBOARD_IDEMPOTENCY_TTL_MS")]
    pub idempotency_ttl_ms: Option<u64>,
    /// Log segment size in bytes [default: 134217728].
    #[arg(long, env = "SWITCHBOARD_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
    /// Encrypt events at rest: true or false [default: true].
    #[arg(long, env = "SWITCHBOARD_ENCRYPTION")]
    pub encryption: Option<bool>,
    /// Master key file [default: <data-dir>/keys/master.keys]. The variable
    /// SWITCHBOARD_MASTER_KEY (`<id>:<hex>`) gives one key instead.
    #[arg(long, env = "SWITCHBOARD_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Command printing the master keys (KMS hook).
    #[arg(long, env = "SWITCHBOARD_MASTER_KEY_COMMAND")]
    pub master_key_command: Option<String>,
    /// Data key lifetime in ms [default: 86400000].
    #[arg(long, env = "SWITCHBOARD_DATA_KEY_ROTATE_MS")]
    pub data_key_rotate_ms: Option<u64>,
    /// JWKS of the OAuth2 issuer: a file or an http(s) URL.
    #[arg(long, env = "SWITCHBOARD_AUTH_JWKS")]
    pub auth_jwks: Option<String>,
    /// Required `iss` of JWTs.
    #[arg(long, env = "SWITCHBOARD_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Required `aud` of JWTs.
    #[arg(long, env = "SWITCHBOARD_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Claim holding scopes (space-separated string or list).
    #[arg(long, env = "SWITCHBOARD_AUTH_SCOPE_CLAIM")]
    pub auth_scope_claim: Option<String>,
    /// Allowed clock skew for `exp` and `nbf`, seconds.
    #[arg(long, env = "SWITCHBOARD_AUTH_LEEWAY_S")]
    pub auth_leeway_s: Option<u64>,
    /// Least time between JWKS fetches for unknown key ids.
    #[arg(long, env = "SWITCHBOARD_AUTH_JWKS_REFRESH_MS")]
    pub auth_jwks_refresh_ms: Option<u64>,
    /// RFC 7662 introspection endpoint for opaque tokens.
    #[arg(long, env = "SWITCHBOARD_AUTH_INTROSPECT")]
    pub auth_introspect: Option<String>,
    /// Client id for introspection.
    #[arg(long, env = "SWITCHBOARD_AUTH_CLIENT_ID")]
    pub auth_client_id: Option<String>,
    /// Client secret for introspection.
    #[arg(long, env = "SWITCHBOARD_AUTH_CLIENT_SECRET", hide_env_values = true)]
    pub auth_client_secret: Option<String>,
    /// Extra CA certificate (PEM) trusted for JWKS and introspection.
    #[arg(long, env = "SWITCHBOARD_AUTH_CA_CERT")]
    pub auth_ca_cert: Option<PathBuf>,
    /// TLS certificate chain (PEM), reloaded on SIGHUP or change.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "SWITCHBOARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a self-signed certificate written to <data-dir>/tls
    /// (its fingerprint is printed): for local trials.
    #[arg(long, env = "SWITCHBOARD_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,
    /// CA (PEM) of client certificates: a verified client certificate
    /// identifies a caller that sends no bearer token (mutual TLS).
    #[arg(long, env = "SWITCHBOARD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// A client certificate name (subject CN, else first DNS name) accepted
    /// as an identity, `NAME[:SCOPES]` (repeatable; no scopes means admin).
    #[arg(long = "client-cert", env = "SWITCHBOARD_CLIENT_CERTS", value_delimiter = ';')]
    pub client_certs: Vec<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// As read.
    pub config: Config,
    /// Parsed `listen`.
    pub listen: SocketAddr,
    /// Parsed `fsync`.
    pub durability: Durability,
}

impl ServeArgs {
    /// File, then environment and flags, then validation.
    pub fn load(&self) -> Result<Settings> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<Config>(&text).with_context(|| format!("config file {}", path.display()))?
            }
            None => Config::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { c.$f = v.clone(); } )* };
        }
        set!(
            listen,
            data_dir,
            node_id,
            fsync,
            log_format,
            log_level,
            shutdown_timeout_ms,
            drain_delay_ms,
            lease_ms,
            max_sessions,
            readahead_bytes,
            max_blocks_in_flight,
            idempotency_ttl_ms,
            segment_bytes,
            encryption,
            data_key_rotate_ms,
            auth_scope_claim,
            auth_leeway_s,
            auth_jwks_refresh_ms
        );
        if self.auth_jwks.is_some() {
            c.auth_jwks = self.auth_jwks.clone();
        }
        if self.auth_issuer.is_some() {
            c.auth_issuer = self.auth_issuer.clone();
        }
        if self.auth_audience.is_some() {
            c.auth_audience = self.auth_audience.clone();
        }
        if self.auth_introspect.is_some() {
            c.auth_introspect = self.auth_introspect.clone();
        }
        if self.auth_client_id.is_some() {
            c.auth_client_id = self.auth_client_id.clone();
        }
        if self.auth_client_secret.is_some() {
            c.auth_client_secret = self.auth_client_secret.clone();
        }
        if self.tls_cert.is_some() {
            c.tls_cert = self.tls_cert.clone();
        }
        if self.tls_key.is_some() {
            c.tls_key = self.tls_key.clone();
        }
        if self.tls_self_signed {
            c.tls_self_signed = true;
        }
        if self.tls_client_ca.is_some() {
            c.tls_client_ca = self.tls_client_ca.clone();
        }
        if !self.client_certs.is_empty() {
            c.client_certs = self.client_certs.clone();
        }
        if self.auth_ca_cert.is_some() {
            c.auth_ca_cert = self.auth_ca_cert.clone();
        }

        if self.store.is_some() {
            c.store = self.store.clone();
        }
        if self.server_key_file.is_some() {
            c.server_key_file = self.server_key_file.clone();
        }
        if self.master_key_file.is_some() {
            c.master_key_file = self.master_key_file.clone();
        }
        if self.master_key_command.is_some() {
            c.master_key_command = self.master_key_command.clone();
        }
        if !self.tokens.is_empty() {
            c.tokens = self.tokens.clone();
        }
        validate(c)
    }
}

fn validate(c: Config) -> Result<Settings> {
    let listen: SocketAddr = c.listen.parse().with_context(|| {
        format!(
            "config key `listen`: {:?} is not an address like 127.0.0.1:7700",
            c.listen
        )
    })?;
    let durability: Durability = c.fsync.parse().map_err(|_| {
        anyhow::anyhow!(
            "config key `fsync`: {:?} is not always, interval, interval:MS or never",
            c.fsync
        )
    })?;
    if c.tokens
        .iter()
        .any(|t| t.trim().len() < 16 || t.contains(char::is_whitespace))
    {
        bail!("config key `tokens`: every token needs at least 16 characters and no whitespace");
    }
    let ranges: [(&str, u64, u64, u64); 9] = [
        (
            "data_key_rotate_ms",
            c.data_key_rotate_ms,
            60_000,
            365 * 24 * 3_600_000,
        ),
        ("drain_delay_ms", c.drain_delay_ms, 0, 600_000),
        ("shutdown_timeout_ms", c.shutdown_timeout_ms, 100, 3_600_000),
        ("lease_ms", c.lease_ms, 1000, 3_600_000),
        ("max_sessions", c.max_sessions as u64, 1, 10_000_000),
        ("readahead_bytes", c.readahead_bytes as u64, 64 * 1024, 1 << 30),
        ("max_blocks_in_flight", c.max_blocks_in_flight as u64, 1, 1024),
        (
            "idempotency_ttl_ms",
            c.idempotency_ttl_ms,
            60_000,
            30 * 24 * 3_600_000,
        ),
        ("segment_bytes", c.segment_bytes, 1 << 20, 1 << 40),
    ];
    for (key, v, lo, hi) in ranges {
        if !(lo..=hi).contains(&v) {
            bail!("config key `{key}`: {v} is outside {lo}..={hi}");
        }
    }
    if c.drain_delay_ms >= c.shutdown_timeout_ms {
        bail!(
            "config key `drain_delay_ms`: {} must be below `shutdown_timeout_ms` ({}), which it is part of",
            c.drain_delay_ms,
            c.shutdown_timeout_ms
        );
    }
    if tracing_subscriber::EnvFilter::try_new(&c.log_level).is_err() {
        bail!("config key `log_level`: {:?} is not a valid filter", c.log_level);
    }
    if c.tls_client_ca.is_some() && c.tls_cert.is_none() && !c.tls_self_signed {
        bail!("config key `tls_client_ca`: client certificates need TLS (`tls_cert` or `tls_self_signed`)");
    }
    if c.auth_jwks.is_some() && (c.auth_issuer.is_none() || c.auth_audience.is_none()) {
        bail!("config key `auth_jwks`: needs `auth_issuer` and `auth_audience` too");
    }
    if c.auth_introspect.is_some() && (c.auth_client_id.is_none() || c.auth_client_secret.is_none()) {
        bail!("config key `auth_introspect`: needs `auth_client_id` and `auth_client_secret` too");
    }
    if let Some(url) = &c.store {
        let file = url.strip_prefix("file://").is_some_and(|d| !d.is_empty());
        if !file && url != "memory://" {
            bail!("config key `store`: {url:?} is not file://DIR or memory://");
        }
    }
    if !switchboard_rpc::id::is_valid_node_id(&c.node_id) {
        bail!(
            "config key `node_id`: {:?} must be 1 to 64 of A-Z a-z 0-9 . _ -",
            c.node_id
        );
    }
    Ok(Settings {
        config: c,
        listen,
        durability,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        let bad = |c: Config| validate(c).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(bad(Config {
            fsync: "sometimes".into(),
            ..Config::default()
        })
        .contains("`fsync`"));
        assert!(bad(Config {
            lease_ms: 1,
            ..Config::default()
        })
        .contains("`lease_ms`"));
        assert!(bad(Config {
            listen: "nowhere".into(),
            ..Config::default()
        })
        .contains("`listen`"));
        let e = toml::from_str::<Config>("listen = \"127.0.0.1:1\"\nfsink = \"always\"").unwrap_err();
        assert!(e.to_string().contains("fsink"), "{e}");
        assert!(validate(Config::default()).is_ok());
    }
}
