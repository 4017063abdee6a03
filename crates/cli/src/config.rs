//! Configuration of `switchboard serve`: one serde tree in sections, read
//! from a TOML file, then overridden by `SWITCHBOARD_*` environment
//! variables and flags (flags win), then validated with errors that name
//! the key.
//!
//! Every setting is declared once, in the [`settings!`] table below: its
//! section, name, type, default, flag and environment variable, and the
//! range it must be in (taken from the crate that owns the value). The
//! config structs, the flags, the merge and the range checks all come from
//! that table.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
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

/// Bounds of the settings this binary owns (the others come from the
/// crates that use them).
const SHUTDOWN_TIMEOUT_MS_RANGE: RangeInclusive<u64> = 100..=3_600_000;
const DRAIN_DELAY_MS_RANGE: RangeInclusive<u64> = 0..=600_000;
const KAFKA_LANES_RANGE: RangeInclusive<u64> = 1..=64;
const KAFKA_FETCHERS_RANGE: RangeInclusive<u64> = 1..=256;
const KAFKA_FETCHER_BUFFER_KIB_RANGE: RangeInclusive<u64> = 1024..=1 << 20;
const KAFKA_STATE_PARTITIONS_RANGE: RangeInclusive<u64> = 1..=1024;
const KAFKA_TIMEOUT_MS_RANGE: RangeInclusive<u64> = 1000..=900_000;
const ROUTER_CALL_TIMEOUT_MS_RANGE: RangeInclusive<u64> = 1000..=600_000;
const ROUTER_MAX_CALLS_RANGE: RangeInclusive<u64> = 1..=65_536;

/// The type of a setting in the config tree, by kind.
macro_rules! config_ty {
    (value $t:ty) => { $t };
    (opt $t:ty) => { Option<$t> };
    (list $t:ty) => { Vec<$t> };
    (switch $t:ty) => { bool };
}

/// A flag that was given overrides the setting.
macro_rules! merge {
    (value, $dst:expr, $src:expr) => {
        if let Some(v) = &$src {
            $dst = v.clone();
        }
    };
    (opt, $dst:expr, $src:expr) => {
        if $src.is_some() {
            $dst = $src.clone();
        }
    };
    (list, $dst:expr, $src:expr) => {
        if !$src.is_empty() {
            $dst = $src.clone();
        }
    };
    (switch, $dst:expr, $src:expr) => {
        if $src {
            $dst = true;
        }
    };
}

/// The settings table: generates the section structs, [`Config`],
/// [`Flags`], the merge of flags over the file, the range checks and the
/// list of keys.
macro_rules! settings {
    (
        $(
            $(#[$smeta:meta])*
            [$sect:ident] $sty:ident {
                $(
                    $(#[$fmeta:meta])*
                    $field:ident : $kind:ident $ty:ty = $default:expr,
                        flag $flag:ident [$($fty:tt)+] ($($arg:tt)*)
                        $(, range $range:expr)? ;
                )*
            }
        )*
    ) => {
        $(
            $(#[$smeta])*
            #[derive(Debug, Clone, Deserialize, Serialize)]
            #[serde(default, deny_unknown_fields)]
            pub struct $sty {
                $(
                    $(#[$fmeta])*
                    pub $field: config_ty!($kind $ty),
                )*
            }

            impl Default for $sty {
                fn default() -> Self {
                    $sty { $( $field: $default, )* }
                }
            }
        )*

        /// The configuration file: every key optional, in sections.
        #[derive(Debug, Clone, Default, Deserialize, Serialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $(
                $(#[$smeta])*
                pub $sect: $sty,
            )*
        }

        /// Flags of `switchboard serve` that override the file. Each also
        /// reads the environment variable named beside it.
        #[derive(Debug, Default, Args)]
        pub struct Flags {
            $($(
                $(#[$fmeta])*
                #[arg($($arg)*)]
                pub $flag: $($fty)+,
            )*)*
        }

        impl Flags {
            /// Overrides the settings whose flag (or variable) was given.
            fn apply(&self, c: &mut Config) {
                $($( merge!($kind, c.$sect.$field, self.$flag); )*)*
            }
        }

        /// Every (section, key, flag), in table order.
        pub const KEYS: &[(&str, &str, &str)] = &[
            $($( (stringify!($sect), stringify!($field), stringify!($flag)), )*)*
        ];

        fn check_ranges(c: &Config) -> Result<()> {
            $($($(
                let range: RangeInclusive<u64> = $range;
                let v = c.$sect.$field as u64;
                if !range.contains(&v) {
                    bail!(
                        "config key `{}.{}` (--{}): {v} is outside {}..={}",
                        stringify!($sect),
                        stringify!($field),
                        stringify!($flag).replace('_', "-"),
                        range.start(),
                        range.end()
                    );
                }
            )?)*)*
            Ok(())
        }
    };
}

settings! {
    /// The node: where it listens, where it keeps its files, what it is
    /// called, how it stops.
    [node] NodeConfig {
        /// Address to listen on [default: 127.0.0.1:7700].
        listen: value String = "127.0.0.1:7700".into(),
            flag listen [Option<String>] (long, env = "SWITCHBOARD_LISTEN");
        /// Data directory: the embedded log, keys, token file [default: ./data].
        data_dir: value PathBuf = PathBuf::from("./data"),
            flag data_dir [Option<PathBuf>] (long, env = "SWITCHBOARD_DATA_DIR");
        /// Storage core: file://DIR (the embedded log), kafka://HOST:PORT[,HOST:PORT]
        /// (Apache Kafka; see the [kafka] section) or memory:// (for tests and
        /// demos: nothing survives the process) [default: file://<data-dir>/log].
        store: opt String = None,
            flag store [Option<String>] (long, env = "SWITCHBOARD_STORE");
        /// Node id, 1 to 64 of A-Z a-z 0-9 . _ - [default: local].
        node_id: value String = "local".into(),
            flag node_id [Option<String>] (long, env = "SWITCHBOARD_NODE_ID");
        /// Server key file shared by the nodes of a cluster (cursors and
        /// session signatures) [default: <data-dir>/server.key, created].
        server_key_file: opt PathBuf = None,
            flag server_key_file [Option<PathBuf>] (long, env = "SWITCHBOARD_SERVER_KEY_FILE");
        /// Address of a backend node's /metrics, /healthz and /readyz (`api` and
        /// `serve` have them on `listen`) [default: none, not served].
        metrics_listen: opt String = None,
            flag metrics_listen [Option<String>] (long, env = "SWITCHBOARD_METRICS_LISTEN");
        /// Graceful shutdown bound in ms [default: 30000].
        shutdown_timeout_ms: value u64 = 30_000,
            flag shutdown_timeout_ms [Option<u64>] (long, env = "SWITCHBOARD_SHUTDOWN_TIMEOUT_MS"),
            range SHUTDOWN_TIMEOUT_MS_RANGE;
        /// Delay in ms between failing /readyz and closing the listener on
        /// shutdown; part of shutdown_timeout_ms, so below it [default: 0].
        drain_delay_ms: value u64 = 0,
            flag drain_delay_ms [Option<u64>] (long, env = "SWITCHBOARD_DRAIN_DELAY_MS"),
            range DRAIN_DELAY_MS_RANGE;
    }

    /// The HTTP listener's connections: how many, and how long a client
    /// may take.
    [http] HttpConfig {
        /// Most open connections; more are closed at once [default: 4096].
        max_connections: value usize = 4096,
            flag max_connections [Option<usize>] (long, env = "SWITCHBOARD_MAX_CONNECTIONS"),
            range switchboard_api::conn::MAX_CONNECTIONS_RANGE;
        /// Most TLS handshakes at once; more wait their turn [default: 256].
        max_handshakes: value usize = 256,
            flag max_handshakes [Option<usize>] (long, env = "SWITCHBOARD_MAX_HANDSHAKES"),
            range switchboard_api::conn::MAX_HANDSHAKES_RANGE;
        /// Most bytes of request bodies held at once; past it requests answer
        /// `backpressure` [default: 268435456].
        body_buffer_bytes: value usize = 256 << 20,
            flag body_buffer_bytes [Option<usize>] (long, env = "SWITCHBOARD_BODY_BUFFER_BYTES"),
            range switchboard_api::conn::BODY_BUFFER_BYTES_RANGE;
        /// Longest wait for a request's head, from its first byte, ms [default: 10000].
        header_timeout_ms: value u64 = 10_000,
            flag header_timeout_ms [Option<u64>] (long, env = "SWITCHBOARD_HEADER_TIMEOUT_MS"),
            range switchboard_api::conn::HEADER_TIMEOUT_MS_RANGE;
        /// Longest wait for a whole request body, ms [default: 60000].
        body_timeout_ms: value u64 = 60_000,
            flag body_timeout_ms [Option<u64>] (long, env = "SWITCHBOARD_BODY_TIMEOUT_MS"),
            range switchboard_api::conn::BODY_TIMEOUT_MS_RANGE;
        /// Longest time a connection may go without a byte either way, ms
        /// (above the longest read wait) [default: 120000].
        idle_timeout_ms: value u64 = 120_000,
            flag idle_timeout_ms [Option<u64>] (long, env = "SWITCHBOARD_IDLE_TIMEOUT_MS"),
            range switchboard_api::conn::IDLE_TIMEOUT_MS_RANGE;
    }

    /// The process's own log lines.
    [logging] LoggingConfig {
        /// Log line format [default: text].
        format: value LogFormat = LogFormat::Text,
            flag log_format [Option<LogFormat>] (long, env = "SWITCHBOARD_LOG_FORMAT", value_enum);
        /// Log filter (`info`, `switchboard_api=debug,info`, ...) [default: info].
        level: value String = "info".into(),
            flag log_level [Option<String>] (long, env = "SWITCHBOARD_LOG_LEVEL");
    }

    /// The embedded log (`file://` stores).
    [log] LogSection {
        /// When appends reach the disk: always, interval[:MS] or never [default: always].
        fsync: value String = "always".into(),
            flag fsync [Option<String>] (long, env = "SWITCHBOARD_FSYNC");
        /// Log segment size in bytes [default: 134217728].
        segment_bytes: value u64 = 128 << 20,
            flag segment_bytes [Option<u64>] (long, env = "SWITCHBOARD_SEGMENT_BYTES"),
            range switchboard_log::SEGMENT_BYTES_RANGE;
        /// Most sealed segment files open at once for reads; the least recently
        /// read closes first [default: 1024].
        max_open_segments: value usize = 1024,
            flag max_open_segments [Option<usize>] (long, env = "SWITCHBOARD_MAX_OPEN_SEGMENTS"),
            range switchboard_log::MAX_OPEN_SEGMENTS_RANGE;
        /// How often retention removes old segments, ms [default: 30000].
        retention_check_ms: value u64 = 30_000,
            flag retention_check_ms [Option<u64>] (long, env = "SWITCHBOARD_RETENTION_CHECK_MS"),
            range switchboard_log::RETENTION_CHECK_MS_RANGE;
    }

    /// Sessions of this node.
    [session] SessionConfig {
        /// Session lease in ms [default: 30000].
        lease_ms: value u64 = 30_000,
            flag lease_ms [Option<u64>] (long, env = "SWITCHBOARD_LEASE_MS"),
            range switchboard_session::host::LEASE_MS_RANGE;
        /// Most sessions on this node [default: 10000].
        max_sessions: value usize = 10_000,
            flag max_sessions [Option<usize>] (long, env = "SWITCHBOARD_MAX_SESSIONS"),
            range switchboard_session::host::MAX_SESSIONS_RANGE;
        /// Most read-ahead bytes one reader buffers, within the node's memory
        /// budget [default: 4194304].
        readahead_bytes: value usize = 4 << 20,
            flag readahead_bytes [Option<usize>] (long, env = "SWITCHBOARD_READAHEAD_BYTES"),
            range switchboard_session::host::READAHEAD_BYTES_RANGE;
        /// The node's memory budget for read-ahead, pending batches and write
        /// blocks, bytes [default: a quarter of the machine's memory (or
        /// cgroup limit), 64 MiB to 2 GiB].
        memory_budget: value u64 = switchboard_session::budget::default_budget(
            switchboard_session::budget::machine_memory().unwrap_or(4 << 30)),
            flag memory_budget [Option<u64>] (long, env = "SWITCHBOARD_MEMORY_BUDGET"),
            range switchboard_session::host::MEMORY_BUDGET_RANGE;
        /// Blocks in flight per writer before backpressure [default: 16].
        max_blocks_in_flight: value usize = 16,
            flag max_blocks_in_flight [Option<usize>] (long, env = "SWITCHBOARD_MAX_BLOCKS_IN_FLIGHT"),
            range switchboard_session::host::MAX_BLOCKS_IN_FLIGHT_RANGE;
        /// Idempotency key lifetime in ms [default: 86400000].
        idempotency_ttl_ms: value u64 = 24 * 3_600_000,
            flag idempotency_ttl_ms [Option<u64>] (long, env = "SWITCHBOARD_IDEMPOTENCY_TTL_MS"),
            range switchboard_session::host::IDEMPOTENCY_TTL_MS_RANGE;
        /// Most idempotency keys remembered; the oldest go first [default: 1000000].
        idempotency_max_keys: value usize = 1_000_000,
            flag idempotency_max_keys [Option<usize>] (long, env = "SWITCHBOARD_IDEMPOTENCY_MAX_KEYS"),
            range switchboard_session::host::IDEMPOTENCY_MAX_KEYS_RANGE;
    }

    /// Who may call: static tokens, OAuth2, client certificates.
    [auth] AuthConfig {
        /// A static bearer token, `TOKEN[:SCOPES]` (repeatable; the env variable
        /// takes a list separated by `;`). SCOPES is a comma-separated list like
        /// `switchboard:read:orders.*,switchboard:write:billing`; none means
        /// `switchboard:admin`. Without any token or identity provider, an
        /// admin token is generated into <data-dir>/admin.token.
        tokens: list String = Vec::new(),
            flag tokens [Vec<String>] (long = "token", env = "SWITCHBOARD_TOKENS", value_delimiter = ';');
        /// JWKS of the OAuth2 issuer: a file or an http(s) URL.
        jwks: opt String = None,
            flag auth_jwks [Option<String>] (long, env = "SWITCHBOARD_AUTH_JWKS");
        /// Required `iss` of JWTs.
        issuer: opt String = None,
            flag auth_issuer [Option<String>] (long, env = "SWITCHBOARD_AUTH_ISSUER");
        /// Required `aud` of JWTs.
        audience: opt String = None,
            flag auth_audience [Option<String>] (long, env = "SWITCHBOARD_AUTH_AUDIENCE");
        /// Claim holding scopes (space-separated string or list) [default: scope].
        scope_claim: value String = "scope".into(),
            flag auth_scope_claim [Option<String>] (long, env = "SWITCHBOARD_AUTH_SCOPE_CLAIM");
        /// Allowed clock skew for `exp` and `nbf`, seconds [default: 30].
        leeway_s: value u64 = 30,
            flag auth_leeway_s [Option<u64>] (long, env = "SWITCHBOARD_AUTH_LEEWAY_S"),
            range switchboard_api::oauth::LEEWAY_S_RANGE;
        /// Least time between JWKS fetches for unknown key ids, ms [default: 30000].
        jwks_refresh_ms: value u64 = 30_000,
            flag auth_jwks_refresh_ms [Option<u64>] (long, env = "SWITCHBOARD_AUTH_JWKS_REFRESH_MS"),
            range switchboard_api::oauth::JWKS_REFRESH_MS_RANGE;
        /// RFC 7662 introspection endpoint for opaque tokens.
        introspect: opt String = None,
            flag auth_introspect [Option<String>] (long, env = "SWITCHBOARD_AUTH_INTROSPECT");
        /// Client id for introspection.
        client_id: opt String = None,
            flag auth_client_id [Option<String>] (long, env = "SWITCHBOARD_AUTH_CLIENT_ID");
        /// Client secret for introspection.
        client_secret: opt String = None,
            flag auth_client_secret [Option<String>] (long, env = "SWITCHBOARD_AUTH_CLIENT_SECRET", hide_env_values = true);
        /// Extra CA certificate (PEM) trusted for JWKS and introspection.
        ca_cert: opt PathBuf = None,
            flag auth_ca_cert [Option<PathBuf>] (long, env = "SWITCHBOARD_AUTH_CA_CERT");
        /// A client certificate name (subject CN, else first DNS name) accepted
        /// as an identity, `NAME[:SCOPES]` (repeatable; no scopes means admin).
        client_certs: list String = Vec::new(),
            flag client_certs [Vec<String>] (long = "client-cert", env = "SWITCHBOARD_CLIENT_CERTS", value_delimiter = ';');
    }

    /// The Kafka store (`kafka://` stores).
    [kafka] KafkaSection {
        /// Prefix of the topics of streams and of the internal topics [default: none].
        topic_prefix: value String = String::new(),
            flag kafka_topic_prefix [Option<String>] (long, env = "SWITCHBOARD_KAFKA_TOPIC_PREFIX");
        /// Replication factor of the topics created (-1: the brokers' default) [default: -1].
        replication_factor: value i32 = -1,
            flag kafka_replication_factor [Option<i32>] (long, env = "SWITCHBOARD_KAFKA_REPLICATION_FACTOR", allow_hyphen_values = true);
        /// Transactional producers of this node for producer blocks [default: 4].
        lanes: value u32 = 4,
            flag kafka_lanes [Option<u32>] (long, env = "SWITCHBOARD_KAFKA_LANES"),
            range KAFKA_LANES_RANGE;
        /// Consumers this node lends to its readers [default: 8].
        fetchers: value usize = 8,
            flag kafka_fetchers [Option<usize>] (long, env = "SWITCHBOARD_KAFKA_FETCHERS"),
            range KAFKA_FETCHERS_RANGE;
        /// Most KiB each of those consumers prefetches [default: 8192].
        fetcher_buffer_kib: value usize = 8192,
            flag kafka_fetcher_buffer_kib [Option<usize>] (long, env = "SWITCHBOARD_KAFKA_FETCHER_BUFFER_KIB"),
            range KAFKA_FETCHER_BUFFER_KIB_RANGE;
        /// Partitions of the producer state topic; fixed once created [default: 8].
        state_partitions: value u32 = 8,
            flag kafka_state_partitions [Option<u32>] (long, env = "SWITCHBOARD_KAFKA_STATE_PARTITIONS"),
            range KAFKA_STATE_PARTITIONS_RANGE;
        /// Longest wait for the brokers to take a write, then `unavailable`, ms [default: 10000].
        commit_timeout_ms: value u64 = 10_000,
            flag kafka_commit_timeout_ms [Option<u64>] (long, env = "SWITCHBOARD_KAFKA_COMMIT_TIMEOUT_MS"),
            range KAFKA_TIMEOUT_MS_RANGE;
        /// Kafka's transaction.timeout.ms: how long the open transaction of a
        /// node that stopped holds readers back, ms [default: 15000].
        transaction_timeout_ms: value u64 = 15_000,
            flag kafka_transaction_timeout_ms [Option<u64>] (long, env = "SWITCHBOARD_KAFKA_TRANSACTION_TIMEOUT_MS"),
            range KAFKA_TIMEOUT_MS_RANGE;
        /// CA certificate (PEM) of the brokers; turns TLS on.
        ca_cert: opt PathBuf = None,
            flag kafka_ca_cert [Option<PathBuf>] (long, env = "SWITCHBOARD_KAFKA_CA_CERT");
        /// SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512); turns SASL on.
        sasl_mechanism: opt String = None,
            flag kafka_sasl_mechanism [Option<String>] (long, env = "SWITCHBOARD_KAFKA_SASL_MECHANISM");
        /// SASL user name.
        sasl_username: opt String = None,
            flag kafka_sasl_username [Option<String>] (long, env = "SWITCHBOARD_KAFKA_SASL_USERNAME");
        /// SASL password.
        sasl_password: opt String = None,
            flag kafka_sasl_password [Option<String>] (long, env = "SWITCHBOARD_KAFKA_SASL_PASSWORD", hide_env_values = true);
        /// A librdkafka property for every Kafka client, `name=value`
        /// (repeatable; the env variable takes a list separated by `;`).
        properties: list String = Vec::new(),
            flag kafka_properties [Vec<String>] (long = "kafka-property", env = "SWITCHBOARD_KAFKA_PROPERTIES", value_delimiter = ';');
    }

    /// The phone switch between `switchboard api` and `switchboard
    /// backend` nodes: RabbitMQ brokers, each an independent shard.
    [router] RouterSection {
        /// Brokers, amqp://[USER:PASS@]HOST:PORT[/VHOST] or amqps://..., separated
        /// by commas. API nodes list every broker, all in the same order (new ones
        /// at the end); a backend node lists the one it attaches to.
        brokers: list String = Vec::new(),
            flag router [Vec<String>] (long = "router", env = "SWITCHBOARD_ROUTER", value_delimiter = ',', hide_env_values = true);
        /// Prefix of the cluster's queues and exchange on the brokers, so that
        /// clusters can share brokers (1 to 64 of A-Z a-z 0-9 . _ -) [default: switchboard].
        namespace: value String = switchboard_amqp::DEFAULT_NAMESPACE.into(),
            flag router_namespace [Option<String>] (long, env = "SWITCHBOARD_ROUTER_NAMESPACE");
        /// CA certificate (PEM) of amqps:// brokers [default: the system's roots].
        ca_cert: opt PathBuf = None,
            flag router_ca_cert [Option<PathBuf>] (long, env = "SWITCHBOARD_ROUTER_CA_CERT");
        /// How long an API node waits for a backend node's answer before
        /// `unavailable`, ms; a long-poll read's wait comes on top [default: 30000].
        call_timeout_ms: value u64 = 30_000,
            flag router_call_timeout_ms [Option<u64>] (long, env = "SWITCHBOARD_ROUTER_CALL_TIMEOUT_MS"),
            range ROUTER_CALL_TIMEOUT_MS_RANGE;
        /// Most calls a backend node works on at once; more wait in its
        /// broker [default: 1024].
        max_calls: value usize = 1024,
            flag router_max_calls [Option<usize>] (long, env = "SWITCHBOARD_ROUTER_MAX_CALLS"),
            range ROUTER_MAX_CALLS_RANGE;
    }

    /// TLS of the API listener.
    [tls] TlsConfig {
        /// TLS certificate chain (PEM), reloaded on SIGHUP or change.
        cert: opt PathBuf = None,
            flag tls_cert [Option<PathBuf>] (long, env = "SWITCHBOARD_TLS_CERT");
        /// TLS private key (PEM).
        key: opt PathBuf = None,
            flag tls_key [Option<PathBuf>] (long, env = "SWITCHBOARD_TLS_KEY");
        /// Serve TLS with a self-signed certificate written to <data-dir>/tls
        /// (its fingerprint is printed): for local trials.
        self_signed: switch bool = false,
            flag tls_self_signed [bool] (long, env = "SWITCHBOARD_TLS_SELF_SIGNED");
        /// CA (PEM) of client certificates: a verified client certificate
        /// identifies a caller that sends no bearer token (mutual TLS).
        client_ca: opt PathBuf = None,
            flag tls_client_ca [Option<PathBuf>] (long, env = "SWITCHBOARD_TLS_CLIENT_CA");
    }

    /// Encryption of events at rest.
    [encryption] EncryptionConfig {
        /// Encrypt events at rest: true or false [default: true].
        enabled: value bool = true,
            flag encryption [Option<bool>] (long, env = "SWITCHBOARD_ENCRYPTION");
        /// Master key file [default: <data-dir>/keys/master.keys]. The variable
        /// SWITCHBOARD_MASTER_KEY (`<id>:<hex>`) gives one key instead.
        master_key_file: opt PathBuf = None,
            flag master_key_file [Option<PathBuf>] (long, env = "SWITCHBOARD_MASTER_KEY_FILE");
        /// Command printing the master keys (KMS hook).
        master_key_command: opt String = None,
            flag master_key_command [Option<String>] (long, env = "SWITCHBOARD_MASTER_KEY_COMMAND");
        /// Data key lifetime in ms [default: 86400000].
        data_key_rotate_ms: value u64 = 24 * 3_600_000,
            flag data_key_rotate_ms [Option<u64>] (long, env = "SWITCHBOARD_DATA_KEY_ROTATE_MS"),
            range switchboard_session::crypto::ROTATE_MS_RANGE;
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
        c.auth.tokens = c
            .auth
            .tokens
            .iter()
            .map(|t| match t.split_once(':') {
                Some((_, scopes)) => format!("{REDACTED}:{scopes}"),
                None => REDACTED.to_string(),
            })
            .collect();
        if c.auth.client_secret.is_some() {
            c.auth.client_secret = Some(REDACTED.into());
        }
        if c.encryption.master_key_command.is_some() {
            c.encryption.master_key_command = Some(REDACTED.into());
        }
        c.router.brokers = c
            .router
            .brokers
            .iter()
            .map(|b| switchboard_amqp::redact(b))
            .collect();
        c
    }
}

/// `switchboard serve`'s arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file, in sections: [node], [http], [logging], [log], [session],
    /// [auth], [kafka], [router], [tls], [encryption]; `serve --print-config` prints one with
    /// every key. Environment variables and flags override it.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (file, then environment, then
    /// flags, validated) as TOML with secrets redacted, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// The settings.
    #[command(flatten)]
    pub flags: Flags,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// As read.
    pub config: Config,
    /// Parsed `node.listen`.
    pub listen: SocketAddr,
    /// Parsed `log.fsync`.
    pub durability: Durability,
}

/// Reads a config file. A key of an older, flat file gets a message that
/// names its section.
fn parse_file(text: &str) -> Result<Config> {
    if let Ok(toml::Value::Table(t)) = toml::from_str::<toml::Value>(text) {
        for (k, v) in &t {
            if v.is_table() {
                continue;
            }
            let hit = KEYS
                .iter()
                .find(|(_, field, flag)| *field == k.as_str() || *flag == k.as_str());
            if let Some((sect, field, _)) = hit {
                bail!("config key `{k}` belongs in a section now: write it as `{field}` under [{sect}]");
            }
        }
    }
    Ok(toml::from_str::<Config>(text)?)
}

impl ServeArgs {
    /// File, then environment and flags, then validation.
    pub fn load(&self) -> Result<Settings> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                parse_file(&text).with_context(|| format!("config file {}", path.display()))?
            }
            None => Config::default(),
        };
        self.flags.apply(&mut c);
        validate(c)
    }
}

fn validate(c: Config) -> Result<Settings> {
    check_ranges(&c)?;
    let listen: SocketAddr = c.node.listen.parse().with_context(|| {
        format!(
            "config key `node.listen`: {:?} is not an address like 127.0.0.1:7700",
            c.node.listen
        )
    })?;
    if let Some(a) = &c.node.metrics_listen {
        if a.parse::<SocketAddr>().is_err() {
            bail!("config key `node.metrics_listen`: {a:?} is not an address like 127.0.0.1:9100");
        }
    }
    let durability: Durability = c.log.fsync.parse().map_err(|_| {
        anyhow::anyhow!(
            "config key `log.fsync`: {:?} is not always, interval, interval:MS or never",
            c.log.fsync
        )
    })?;
    if c.auth
        .tokens
        .iter()
        .any(|t| t.trim().len() < 16 || t.contains(char::is_whitespace))
    {
        bail!("config key `auth.tokens`: every token needs at least 16 characters and no whitespace");
    }
    if c.node.drain_delay_ms >= c.node.shutdown_timeout_ms {
        bail!(
            "config key `node.drain_delay_ms`: {} must be below `node.shutdown_timeout_ms` ({}), which it is part of",
            c.node.drain_delay_ms,
            c.node.shutdown_timeout_ms
        );
    }
    if tracing_subscriber::EnvFilter::try_new(&c.logging.level).is_err() {
        bail!(
            "config key `logging.level`: {:?} is not a valid filter",
            c.logging.level
        );
    }
    if c.tls.client_ca.is_some() && c.tls.cert.is_none() && !c.tls.self_signed {
        bail!("config key `tls.client_ca`: client certificates need TLS (`tls.cert` or `tls.self_signed`)");
    }
    if c.tls.cert.is_some() != c.tls.key.is_some() {
        bail!("config key `tls.cert`: `tls.cert` and `tls.key` go together");
    }
    if c.auth.jwks.is_some() && (c.auth.issuer.is_none() || c.auth.audience.is_none()) {
        bail!("config key `auth.jwks`: needs `auth.issuer` and `auth.audience` too");
    }
    if c.auth.introspect.is_some() && (c.auth.client_id.is_none() || c.auth.client_secret.is_none()) {
        bail!("config key `auth.introspect`: needs `auth.client_id` and `auth.client_secret` too");
    }
    if let Some(url) = &c.node.store {
        let file = url.strip_prefix("file://").is_some_and(|d| !d.is_empty());
        let kafka = switchboard_kafka::brokers_of(url).is_some();
        if !file && !kafka && url != "memory://" {
            bail!("config key `node.store`: {url:?} is not file://DIR, kafka://HOST:PORT[,HOST:PORT] or memory://");
        }
    }
    if c.kafka.replication_factor != -1 && !(1..=32).contains(&c.kafka.replication_factor) {
        bail!(
            "config key `kafka.replication_factor`: {} must be -1 (the brokers' default) or 1 to 32",
            c.kafka.replication_factor
        );
    }
    for p in &c.kafka.properties {
        if p.split_once('=').is_none_or(|(k, _)| k.trim().is_empty()) {
            bail!("config key `kafka.properties`: {p:?} is not name=value");
        }
    }
    if c.kafka.sasl_mechanism.is_some() != c.kafka.sasl_username.is_some()
        || c.kafka.sasl_username.is_some() != c.kafka.sasl_password.is_some()
    {
        bail!("config key `kafka.sasl_mechanism`: `kafka.sasl_mechanism`, `kafka.sasl_username` and `kafka.sasl_password` go together");
    }
    if !switchboard_rpc::id::is_valid_node_id(&c.router.namespace) {
        bail!(
            "config key `router.namespace`: {:?} must be 1 to 64 of A-Z a-z 0-9 . _ -",
            c.router.namespace
        );
    }
    for b in &c.router.brokers {
        if let Err(e) = switchboard_amqp::Broker::parse(b, None) {
            bail!("config key `router.brokers`: {e}");
        }
    }
    if !switchboard_rpc::id::is_valid_node_id(&c.node.node_id) {
        bail!(
            "config key `node.node_id`: {:?} must be 1 to 64 of A-Z a-z 0-9 . _ -",
            c.node.node_id
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

    fn bad(edit: impl FnOnce(&mut Config)) -> String {
        let mut c = Config::default();
        edit(&mut c);
        validate(c).err().map(|e| format!("{e:#}")).unwrap_or_default()
    }

    #[test]
    fn errors_name_the_key() {
        assert!(bad(|c| c.log.fsync = "sometimes".into()).contains("`log.fsync`"));
        assert!(bad(|c| c.session.lease_ms = 1).contains("`session.lease_ms` (--lease-ms)"));
        assert!(bad(|c| c.node.listen = "nowhere".into()).contains("`node.listen`"));
        // the log's own bound, not a looser copy of it
        let e = bad(|c| c.log.segment_bytes = 1 << 40);
        assert!(
            e.contains("`log.segment_bytes`") && e.contains("2147483648"),
            "{e}"
        );
        let e = toml::from_str::<Config>("[log]\nfsink = \"always\"").unwrap_err();
        assert!(e.to_string().contains("fsink"), "{e}");
        let e = parse_file("lease_ms = 45000\n").unwrap_err().to_string();
        assert!(e.contains("under [session]"), "{e}");
        assert!(validate(Config::default()).is_ok());
    }

    #[test]
    fn every_key_has_its_own_flag() {
        let mut flags: Vec<_> = KEYS.iter().map(|k| k.2).collect();
        flags.sort_unstable();
        let n = flags.len();
        flags.dedup();
        assert_eq!(flags.len(), n);
        // the printed file parses back to the same settings
        let text = Config::default().redacted_toml().unwrap();
        let back = parse_file(&text).unwrap();
        assert_eq!(back.redacted_toml().unwrap(), text);
    }
}
