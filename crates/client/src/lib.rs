//! Rust SDK for Switchboard.
//!
//! - [`Client`]: one typed method per endpoint of docs/PROTOCOL.md; session
//!   calls are signed with the session's secret.
//! - [`Reader`]: the client half of `read -> ack`: retries with backoff,
//!   re-allocates from the last acked cursor when the session is gone, and
//!   resumes from a saved cursor.
//! - [`Writer`]: the client half of `write -> commit`: numbers blocks,
//!   pipelines commits up to a window, honours `retry_after_ms`, and with a
//!   producer id keeps every block until it is durable and replays the
//!   ones after `last_block` into a new session, so each event is stored
//!   exactly once.
//!
//! Other SDKs copy this design: the server is a mirror of these state
//! machines, so every call here is safe to repeat.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::Method;
use serde::de::DeserializeOwned;
use switchboard_proto::wire::{
    Ack, AckAnswer, Allocate, Allocated, ClusterInfo, Commit, CommitAnswer, CreateStream, Disposed, Event,
    Publish, PublishAnswer, Read, ReadAnswer, SessionInfo, StreamDescription, StreamInfo, StreamList,
    WriteAnswer,
};
use switchboard_proto::{signing, ErrorBody};

mod error;
mod reader;
mod retry;
mod writer;

pub use error::{Error, Result};
pub use reader::{RawBatch, Reader, ReaderOptions};
pub use retry::Backoff;
pub use switchboard_proto::signing::sign;
pub use switchboard_proto::wire;
pub use writer::{Writer, WriterOptions};

/// How request bodies are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Sent as is.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Bodies larger than this are signed off the async runtime.
const INLINE_SIGN: usize = 64 * 1024;

/// Bodies smaller than this are never compressed.
const COMPRESS_FROM: usize = 1024;

/// How a [`Client`] connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Ask for gzip or zstd answers.
    pub accept_compressed: bool,
    /// A CA certificate (PEM) to trust besides the system roots, for
    /// servers with a private or self-signed certificate.
    pub ca_cert_pem: Option<Vec<u8>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            accept_compressed: true,
            ca_cert_pem: None,
        }
    }
}

/// Supplies a bearer token for each call (for example an OAuth2 access
/// token that a token manager refreshes before it expires).
pub type TokenProvider = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
enum Auth {
    Static(HeaderValue),
    Provider(TokenProvider),
}

/// A connection to a Switchboard server. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Auth,
    compression: Compression,
}

/// A session: its id and signing secret.
#[derive(Clone)]
pub struct Session {
    /// Session id.
    pub id: String,
    secret: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session from an allocation answer.
    pub fn new(a: &Allocated) -> Session {
        Session {
            id: a.session.clone(),
            secret: a.secret.clone(),
        }
    }
}

fn bearer(token: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .map_err(|_| Error::Protocol("the token is not a valid header value".into()))
}

fn now_ms() -> u64 {
    u64::try_from(switchboard_proto::time::now_ms()).unwrap_or(0)
}

impl Client {
    /// A client for the server at `url` (like `http://127.0.0.1:7700`).
    /// Answers may come compressed (gzip or zstd).
    pub fn new(url: &str, token: &str) -> Result<Client> {
        Self::with_options(url, token, ClientOptions::default())
    }

    /// Like [`Client::new`], but asks for uncompressed answers: cheaper on
    /// a fast local link.
    pub fn new_uncompressed(url: &str, token: &str) -> Result<Client> {
        let opts = ClientOptions {
            accept_compressed: false,
            ..ClientOptions::default()
        };
        Self::with_options(url, token, opts)
    }

    /// A client with explicit options.
    pub fn with_options(url: &str, token: &str, opts: ClientOptions) -> Result<Client> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true);
        if !opts.accept_compressed {
            b = b.no_gzip().no_zstd();
        }
        if let Some(pem) = &opts.ca_cert_pem {
            let cert = reqwest::Certificate::from_pem(pem)?;
            b = b.add_root_certificate(cert);
        }
        let http = b.build()?;
        Ok(Client {
            http,
            base: url.trim_end_matches('/').to_string(),
            auth: Auth::Static(bearer(token)?),
            compression: Compression::None,
        })
    }

    /// Takes each call's bearer token from `provider` from now on.
    pub fn with_token_provider(mut self, provider: TokenProvider) -> Client {
        self.auth = Auth::Provider(provider);
        self
    }

    /// Compresses request bodies from now on.
    pub fn with_compression(mut self, c: Compression) -> Client {
        self.compression = c;
        self
    }

    fn encode(&self, body: Bytes) -> Result<(Bytes, Option<&'static str>)> {
        if body.len() < COMPRESS_FROM {
            return Ok((body, None));
        }
        match self.compression {
            Compression::None => Ok((body, None)),
            Compression::Gzip => {
                use std::io::Write;
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&body)?;
                Ok((Bytes::from(e.finish()?), Some("gzip")))
            }
            Compression::Zstd => Ok((Bytes::from(zstd::bulk::compress(&body, 1)?), Some("zstd"))),
        }
    }

    /// Sends one request; decodes a JSON answer or the error body.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        session: Option<&Session>,
        extra: Option<(&'static str, &str)>,
    ) -> Result<(u16, T)> {
        let (status, bytes) = self.call_bytes(method, path, body, session, extra).await?;
        let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        let v = serde_json::from_slice(body).map_err(|e| Error::Protocol(format!("invalid answer: {e}")))?;
        Ok((status, v))
    }

    /// Sends one request; returns a successful answer's bytes.
    async fn call_bytes(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        session: Option<&Session>,
        extra: Option<(&'static str, &str)>,
    ) -> Result<(u16, Bytes)> {
        let mut headers = HeaderMap::new();
        let auth = match &self.auth {
            Auth::Static(v) => v.clone(),
            Auth::Provider(p) => bearer(&p())?,
        };
        headers.insert(AUTHORIZATION, auth);
        let body = match body {
            Some(b) => {
                let (b, enc) = self.encode(b)?;
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                if let Some(enc) = enc {
                    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(enc));
                }
                b
            }
            None => Bytes::new(),
        };
        if let Some(s) = session {
            let sig = if body.len() <= INLINE_SIGN {
                signing::sign(s.secret.as_bytes(), now_ms(), method.as_str(), path, &body)
            } else {
                // hashing a large body would hold a runtime thread
                let (secret, m, p, b) = (s.secret.clone(), method.clone(), path.to_string(), body.clone());
                tokio::task::spawn_blocking(move || {
                    signing::sign(secret.as_bytes(), now_ms(), m.as_str(), &p, &b)
                })
                .await
                .map_err(|e| Error::Protocol(format!("signing task failed: {e}")))?
            };
            let v =
                HeaderValue::from_str(&sig).map_err(|_| Error::Protocol("bad signature header".into()))?;
            headers.insert(signing::HEADER, v);
        }
        if let Some((k, v)) = extra {
            let v = HeaderValue::from_str(v)
                .map_err(|_| Error::Protocol(format!("{k} is not a valid header value")))?;
            headers.insert(k, v);
        }
        let resp = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .headers(headers)
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await?;
        if status >= 400 {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => Error::Api {
                    status,
                    code: e.error.code,
                    message: e.error.message,
                    retryable: e.error.retryable,
                    retry_after_ms: e.error.retry_after_ms,
                    fenced_by_epoch: e.error.fenced_by_epoch,
                    request_id,
                },
                Err(_) => Error::Protocol(format!(
                    "status {status} with body {:?}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                )),
            });
        }
        Ok((status, bytes))
    }

    fn json<T: serde::Serialize>(v: &T) -> Result<Bytes> {
        serde_json::to_vec(v)
            .map(Bytes::from)
            .map_err(|e| Error::Protocol(e.to_string()))
    }

    /// `POST /v1/streams`; the flag is true if the stream was created.
    pub async fn create_stream(&self, req: &CreateStream) -> Result<(StreamInfo, bool)> {
        let (status, s) = self
            .call(Method::POST, "/v1/streams", Some(Self::json(req)?), None, None)
            .await?;
        Ok((s, status == 201))
    }

    /// `GET /v1/streams`.
    pub async fn list_streams(&self) -> Result<StreamList> {
        Ok(self.call(Method::GET, "/v1/streams", None, None, None).await?.1)
    }

    /// `GET /v1/streams/{name}`.
    pub async fn describe_stream(&self, name: &str) -> Result<StreamDescription> {
        Ok(self
            .call(Method::GET, &format!("/v1/streams/{name}"), None, None, None)
            .await?
            .1)
    }

    /// `DELETE /v1/streams/{name}`.
    pub async fn delete_stream(&self, name: &str) -> Result<()> {
        let _: (u16, Option<serde_json::Value>) = self
            .call(Method::DELETE, &format!("/v1/streams/{name}"), None, None, None)
            .await?;
        Ok(())
    }

    /// `POST /v1/streams/{name}/events`, answered once durable.
    ///
    /// Safe to repeat: without an `idempotency_key` one is generated, and
    /// transport failures and retryable errors are retried with the same
    /// key (honouring `retry_after_ms`), so that each event is stored once
    /// even when an answer is lost.
    pub async fn publish(
        &self,
        stream: &str,
        events: &[Event],
        idempotency_key: Option<&str>,
    ) -> Result<PublishAnswer> {
        let body = Self::json(&Publish { events })?;
        self.publish_raw(stream, body, idempotency_key).await
    }

    /// A publish with a pre-encoded `{"events": [...]}` body, retried as
    /// [`Client::publish`] is.
    pub async fn publish_raw(
        &self,
        stream: &str,
        body: Bytes,
        idempotency_key: Option<&str>,
    ) -> Result<PublishAnswer> {
        let generated;
        let key = match idempotency_key {
            Some(k) => k,
            None => {
                generated = format!("{:032x}", rand::random::<u128>());
                &generated
            }
        };
        let path = format!("/v1/streams/{stream}/events");
        let mut backoff = Backoff::default();
        loop {
            let r = self
                .call(
                    Method::POST,
                    &path,
                    Some(body.clone()),
                    None,
                    Some(("idempotency-key", key)),
                )
                .await;
            match r {
                Ok((_, a)) => return Ok(a),
                Err(e) => reader::retry_or_fail(&mut backoff, e).await?,
            }
        }
    }

    /// `POST /v1/sessions`.
    pub async fn allocate(&self, req: &Allocate) -> Result<Allocated> {
        Ok(self
            .call(Method::POST, "/v1/sessions", Some(Self::json(req)?), None, None)
            .await?
            .1)
    }

    /// A signed call on `/v1/sessions/{id}{op}`.
    async fn on_session<T: DeserializeOwned>(
        &self,
        method: Method,
        s: &Session,
        op: &str,
        body: Option<Bytes>,
    ) -> Result<T> {
        let path = format!("/v1/sessions/{}{op}", s.id);
        Ok(self.call(method, &path, body, Some(s), None).await?.1)
    }

    /// `GET /v1/sessions/{id}` (the heartbeat).
    pub async fn session_info(&self, s: &Session) -> Result<SessionInfo> {
        self.on_session(Method::GET, s, "", None).await
    }

    /// `POST /v1/sessions/{id}/read`.
    pub async fn read(&self, s: &Session, req: &Read) -> Result<ReadAnswer> {
        self.on_session(Method::POST, s, "/read", Some(Self::json(req)?))
            .await
    }

    /// `POST /v1/sessions/{id}/read`, the answer's JSON undecoded (for
    /// callers that parse it their own way).
    pub async fn read_raw(&self, s: &Session, req: &Read) -> Result<Bytes> {
        let (_, bytes) = self
            .call_bytes(
                Method::POST,
                &format!("/v1/sessions/{}/read", s.id),
                Some(Self::json(req)?),
                Some(s),
                None,
            )
            .await?;
        Ok(bytes)
    }

    /// `POST /v1/sessions/{id}/ack`.
    pub async fn ack(&self, s: &Session, batch: u64) -> Result<AckAnswer> {
        let body = Self::json(&Ack { batch })?;
        self.on_session(Method::POST, s, "/ack", Some(body)).await
    }

    /// `POST /v1/sessions/{id}/write` with a body built by [`write_body`].
    pub async fn write(&self, s: &Session, body: Bytes) -> Result<WriteAnswer> {
        self.on_session(Method::POST, s, "/write", Some(body)).await
    }

    /// `POST /v1/sessions/{id}/commit`.
    pub async fn commit(&self, s: &Session, block: u64, durable: bool) -> Result<CommitAnswer> {
        let body = Self::json(&Commit {
            block,
            durable: Some(durable),
        })?;
        self.on_session(Method::POST, s, "/commit", Some(body)).await
    }

    /// `DELETE /v1/sessions/{id}`.
    pub async fn dispose(&self, s: &Session) -> Result<Disposed> {
        self.on_session(Method::DELETE, s, "", None).await
    }

    /// `GET /v1/config`: the node's effective configuration, secrets
    /// redacted (needs `switchboard:admin`).
    pub async fn config(&self) -> Result<serde_json::Value> {
        Ok(self.call(Method::GET, "/v1/config", None, None, None).await?.1)
    }

    /// `GET /readyz`: whether the node serves (false while it drains,
    /// while its store is out of reach, or, on an API node, while no
    /// backend takes sessions).
    pub async fn ready(&self) -> Result<bool> {
        let resp = self.http.get(format!("{}/readyz", self.base)).send().await?;
        match resp.status().as_u16() {
            200 => Ok(true),
            503 => Ok(false),
            s => Err(Error::Protocol(format!("/readyz answered {s}"))),
        }
    }

    /// `GET /v1/openapi.json`: the contract as OpenAPI 3.1.
    pub async fn openapi(&self) -> Result<serde_json::Value> {
        Ok(self
            .call(Method::GET, "/v1/openapi.json", None, None, None)
            .await?
            .1)
    }

    /// `GET /v1/cluster`.
    pub async fn cluster(&self) -> Result<ClusterInfo> {
        Ok(self.call(Method::GET, "/v1/cluster", None, None, None).await?.1)
    }
}

/// Encodes events as the JSON array text of a write (done once per block,
/// so that retries send identical bytes).
pub fn encode_events(events: &[Event]) -> Result<Bytes> {
    serde_json::to_vec(events)
        .map(Bytes::from)
        .map_err(|e| Error::Protocol(e.to_string()))
}

/// The body of `write {block, events}` around pre-encoded events.
pub fn write_body(block: u64, events_json: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(events_json.len() + 32);
    b.extend_from_slice(b"{\"block\":");
    b.extend_from_slice(block.to_string().as_bytes());
    b.extend_from_slice(b",\"events\":");
    b.extend_from_slice(events_json);
    b.push(b'}');
    Bytes::from(b)
}
