//! The HTTP tier of Switchboard: docs/PROTOCOL.md's endpoints over axum.
//!
//! This tier is stateless. It checks bearer tokens and session-call
//! signatures, reads and decompresses bodies within the limits, parses the
//! small JSON requests, and hands every call to a
//! [`switchboard_router::Router`]; it never touches sessions or storage
//! itself. Errors of every layer become wire errors in [`error`], in one
//! place. [`run`] serves on a given listener until a shutdown future
//! resolves, so tests start real servers on port 0.

// the OpenAPI document is one large `json!` literal
#![recursion_limit = "256"]

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, Path, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use switchboard_proto::signing;
use switchboard_proto::wire::{Allocate, CreateStream, Read};
use switchboard_proto::ErrorCode;
use switchboard_router::Router;
use switchboard_rpc::keys::SessionSecrets;
use switchboard_rpc::{Call, Context, Request, Response as Reply};

pub mod auth;
mod body;
pub mod conn;
pub mod error;
pub mod metrics_export;
pub mod oauth;
pub mod openapi;
pub mod tls;
mod ui;

pub use auth::{Action, AuthError, Authenticator, Identity, StaticTokens};
pub use conn::ConnLimits;
pub use error::ApiError;

/// How long a routed request stays worth starting: longer than the
/// longest read wait and durable commit.
const ROUTE_DEADLINE_MS: u64 = 120_000;

/// Header that carries the request id, in both directions.
pub const REQUEST_ID: &str = "x-request-id";

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    router: Arc<dyn Router>,
    auth: Vec<Arc<dyn Authenticator>>,
    mtls: std::collections::HashMap<String, Identity>,
    secrets: SessionSecrets,
    next_request: std::sync::atomic::AtomicU64,
    draining: AtomicBool,
    limits: ConnLimits,
    bodies: body::BodyBudget,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The node's effective configuration, secrets redacted.
    config: Bytes,
}

impl ApiState {
    /// State over `router`, authenticating callers with `auth` (tried in
    /// order), checking signatures with `secrets`.
    pub fn new(
        router: Arc<dyn Router>,
        auth: Vec<Arc<dyn Authenticator>>,
        secrets: SessionSecrets,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> ApiState {
        ApiState {
            inner: Arc::new(Inner {
                router,
                auth,
                mtls: std::collections::HashMap::new(),
                secrets,
                next_request: std::sync::atomic::AtomicU64::new(1),
                draining: AtomicBool::new(false),
                limits: ConnLimits::default(),
                bodies: body::BodyBudget::new(ConnLimits::default().body_buffer_bytes),
                metrics,
                config: Bytes::from_static(b"{}"),
            }),
        }
    }

    /// Identities for client certificate names (`NAME[:SCOPES]`, no scopes
    /// meaning `switchboard:admin`); certificates with other names are
    /// refused.
    pub fn with_client_certs(mut self, entries: &[String]) -> Result<ApiState, String> {
        let mut map = std::collections::HashMap::new();
        for e in entries {
            let (name, scopes) = match e.split_once(':') {
                Some((n, s)) => (n, auth::parse_scopes(s)?),
                None => (e.as_str(), auth::parse_scopes("switchboard:admin")?),
            };
            let id = Identity {
                subject: format!("cert:{name}"),
                scopes,
            };
            map.insert(name.to_string(), id);
        }
        let inner = Arc::get_mut(&mut self.inner).ok_or("state already shared")?;
        inner.mtls = map;
        Ok(self)
    }

    /// Bounds on connections: timeouts and the cap (see [`conn`]).
    pub fn with_limits(mut self, limits: ConnLimits) -> Result<ApiState, String> {
        let inner = Arc::get_mut(&mut self.inner).ok_or("state already shared")?;
        inner.limits = limits;
        inner.bodies = body::BodyBudget::new(limits.body_buffer_bytes);
        Ok(self)
    }

    /// The configuration `GET /v1/config` shows: the caller redacts
    /// secrets, this tier only serves it.
    pub fn with_config(mut self, redacted: &serde_json::Value) -> Result<ApiState, String> {
        let inner = Arc::get_mut(&mut self.inner).ok_or("state already shared")?;
        inner.config = Bytes::from(serde_json::to_vec(redacted).map_err(|e| e.to_string())?);
        Ok(self)
    }

    /// From now on `/readyz` answers 503 and calls answer `unavailable`.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// Authenticates the caller (and refuses calls while draining): by
    /// bearer token, or else by a verified client certificate.
    async fn identity(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        let has_bearer = headers.contains_key(header::AUTHORIZATION);
        if !has_bearer {
            let cert = CLIENT_CERT.try_with(|c| c.clone()).ok().flatten();
            if let Some(name) = cert {
                if self.inner.draining.load(Ordering::Acquire) {
                    return Err(ApiError::new(
                        ErrorCode::Unavailable,
                        "node is draining: retry on another node",
                    ));
                }
                return self.inner.mtls.get(&name).cloned().ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::Unauthorized,
                        format!("client certificate {name:?} is not mapped to an identity"),
                    )
                });
            }
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "missing bearer token"))?;
        if self.inner.draining.load(Ordering::Acquire) {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "node is draining: retry on another node",
            ));
        }
        for a in &self.inner.auth {
            match a.authenticate(token).await {
                Ok(Some(id)) => return Ok(id),
                Ok(None) => {}
                Err(AuthError::Invalid(m)) => return Err(ApiError::new(ErrorCode::Unauthorized, m)),
                Err(e @ AuthError::Unavailable(_)) => {
                    return Err(ApiError::new(ErrorCode::Unavailable, e.to_string()))
                }
            }
        }
        Err(ApiError::new(ErrorCode::Unauthorized, "invalid bearer token"))
    }

    /// Authenticates and checks `action` on `stream`.
    async fn allowed(&self, headers: &HeaderMap, action: Action, stream: &str) -> Result<Identity, ApiError> {
        let id = self.identity(headers).await?;
        check_stream_name(stream)?;
        require(&id, action, stream)?;
        Ok(id)
    }
}

/// Checks that `id` may do `action` on `stream`.
fn require(id: &Identity, action: Action, stream: &str) -> Result<(), ApiError> {
    if !id.allows(action, stream) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "{} lacks the {} scope for stream {stream:?}",
                id.subject,
                action.as_str()
            ),
        ));
    }
    Ok(())
}

impl ApiState {
    /// Routes `req` on behalf of `caller`. The deadline leaves room for
    /// the longest call (a read's wait, a durable commit) and tells a node
    /// that receives a request late not to start it.
    async fn route(&self, caller: &str, req: Request) -> Result<Reply, ApiError> {
        let ctx = Context {
            request_id: self.inner.next_request.fetch_add(1, Ordering::Relaxed),
            deadline_ms: u64::try_from(switchboard_proto::time::now_ms()).unwrap_or(0) + ROUTE_DEADLINE_MS,
            caller: caller.to_string(),
            shard: None,
        };
        Ok(self.inner.router.route(ctx, req).await?)
    }
}

/// The application: every route with its middleware.
pub fn app(state: ApiState) -> axum::Router {
    let api = axum::Router::new()
        .route("/v1/streams", post(create_stream).get(list_streams))
        .route("/v1/streams/{name}", get(describe_stream).delete(delete_stream))
        .route("/v1/streams/{name}/events", post(publish))
        .route("/v1/sessions", post(allocate))
        .route(
            "/v1/sessions/{id}",
            get(|r: SessionReq| r.run(|_| Ok(Call::Get)))
                .delete(|r: SessionReq| r.run(|_| Ok(Call::Dispose))),
        )
        .route("/v1/sessions/{id}/read", post(|r: SessionReq| r.run(read_call)))
        .route(
            "/v1/sessions/{id}/ack",
            post(|r: SessionReq| r.run(|b| Ok(Call::Ack(body::json(&b, false)?)))),
        )
        .route(
            "/v1/sessions/{id}/write",
            post(|r: SessionReq| r.run(|b| Ok(Call::Write(b)))),
        )
        .route(
            "/v1/sessions/{id}/commit",
            post(|r: SessionReq| r.run(|b| Ok(Call::Commit(body::json(&b, false)?)))),
        )
        .route("/v1/cluster", get(cluster))
        .route("/v1/config", get(config))
        .route("/v1/openapi.json", get(openapi_doc))
        .layer(
            tower_http::compression::CompressionLayer::new()
                .gzip(true)
                .zstd(true),
        );
    axum::Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/ui", get(ui::page))
        .route("/ui/app.js", get(ui::script))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(observe))
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then
/// finishes the requests in flight. Connections are bounded in number and
/// time by the state's [`ConnLimits`] (see [`conn`]).
pub async fn run(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.inner.limits;
    let gate = conn::Gate::new(limits.max_connections);
    let app = app(state);
    let listener = Arc::new(listener);
    let accept = move || {
        let (listener, gate) = (listener.clone(), gate.clone());
        async move {
            loop {
                let (tcp, _) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // out of descriptors, most likely: let others finish
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // over the cap the connection is closed at once
                let Some(slot) = gate.enter() else { continue };
                // small answers (acks, commits) must not wait behind Nagle's algorithm
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                return (tcp, slot, None);
            }
        }
    };
    serve(accept, app, limits, shutdown).await
}

/// Like [`run`], over TLS.
pub async fn run_tls(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.inner.limits;
    let gate = conn::Gate::new(limits.max_connections);
    let listener = tokio::sync::Mutex::new(tls::TlsListener::new(
        listener,
        config,
        gate,
        limits.max_handshakes,
    )?);
    let app = app(state).layer(axum::middleware::from_fn(client_cert));
    let accept = || async {
        let (io, slot, peer) = listener.lock().await.accept().await;
        (io, slot, Some(peer))
    };
    serve(accept, app, limits, shutdown).await
}

/// The accept loop: each connection, guarded by the timeouts and holding
/// its place under the cap, is served by hyper (HTTP/1.1 and HTTP/2) in a
/// task of its own. On shutdown, stops accepting and waits for the
/// connections' requests in flight.
async fn serve<IO, F>(
    mut accept: impl FnMut() -> F,
    app: axum::Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = (IO, conn::Slot, Option<tls::PeerCert>)>,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use tower::ServiceExt;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    // an HTTP/2 connection's requests share its place under the caps
    builder.http2().max_concurrent_streams(limits.max_streams);
    tokio::pin!(shutdown);
    loop {
        let (io, slot, peer) = tokio::select! {
            c = accept() => c,
            _ = &mut shutdown => break,
        };
        let svc = app
            .clone()
            .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                if let Some(p) = &peer {
                    req.extensions_mut().insert(axum::extract::ConnectInfo(p.clone()));
                }
                req
            });
        let io = TokioIo::new(conn::Guarded::new(io, limits));
        let connection = builder
            .serve_connection_with_upgrades(io, hyper_util::service::TowerToHyperService::new(svc))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    graceful.shutdown().await;
    Ok(())
}

tokio::task_local! {
    /// The verified client certificate's name on this request's connection.
    static CLIENT_CERT: Option<String>;
}

/// Makes the connection's client certificate (if any) visible to
/// authentication for the duration of the request.
async fn client_cert(req: HttpRequest, next: Next) -> Response {
    let name = req
        .extensions()
        .get::<axum::extract::ConnectInfo<tls::PeerCert>>()
        .and_then(|c| c.0 .0.clone());
    CLIENT_CERT.scope(name, next.run(req)).await
}

/// Request id, span, access log and request metrics for every call.
async fn observe(req: HttpRequest, next: Next) -> Response {
    let started = Instant::now();
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let method = req.method().clone();
    let span = tracing::info_span!("request", request_id = %id, %method, route = %route);
    let mut resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    let route_label = static_route(&route);
    metrics::counter!(
        "switchboard_requests_total",
        "route" => route_label,
        "method" => method_label(&method),
        "status" => status_label(status)
    )
    .increment(1);
    metrics::histogram!("switchboard_request_duration_seconds", "route" => route_label)
        .record(elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    let _e = span.enter();
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    // why it failed, when it did (fields left out otherwise)
    let failure = resp.extensions().get::<error::Failure>();
    let code = failure.map(|f| f.code.as_str());
    let reason = failure.map(|f| f.message.as_str());
    if status >= 500 {
        tracing::warn!(status, code, reason, elapsed_ms, "request failed");
    } else {
        tracing::debug!(status, code, reason, elapsed_ms, "request");
    }
    resp
}

/// Route labels come from this fixed set only.
fn static_route(route: &str) -> &'static str {
    openapi::ROUTES
        .iter()
        .map(|r| r.1)
        .chain(["/healthz", "/readyz", "/metrics"])
        .find(|r| *r == route)
        .unwrap_or("unmatched")
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        410 => "410",
        413 => "413",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no endpoint {method} {}: see /v1/openapi.json", uri.path()),
    )
}

/// axum adds the `Allow` header of the matched route to this answer.
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} does not take {method}", uri.path()),
    )
}

async fn readyz(State(s): State<ApiState>) -> Response {
    if s.inner.draining.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    match s.inner.router.readiness().await {
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
    }
}

async fn metrics_text(State(s): State<ApiState>) -> Response {
    let text = s.inner.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The document describes the API and holds no data: it needs no token,
/// so that tools can fetch it.
async fn openapi_doc() -> Response {
    json_bytes(StatusCode::OK, openapi::document_bytes())
}

async fn cluster(State(s): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    s.identity(&headers).await?;
    let (nodes, brokers) = (s.inner.router.nodes().await, s.inner.router.brokers().await);
    Ok(json(
        StatusCode::OK,
        &switchboard_proto::wire::ClusterInfo { nodes, brokers },
    ))
}

async fn config(State(s): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let id = s.identity(&headers).await?;
    if !id.is_node_admin() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "{} lacks switchboard:admin on every stream, which the node's configuration needs",
                id.subject
            ),
        ));
    }
    Ok(json_bytes(StatusCode::OK, s.inner.config.clone()))
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(b) => json_bytes(status, Bytes::from(b)),
        Err(e) => {
            ApiError::new(ErrorCode::Internal, format!("encoding the answer failed: {e}")).into_response()
        }
    }
}

fn reply(r: Reply) -> Response {
    match r {
        Reply::StreamCreated(info, created) => json(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &info,
        ),
        Reply::Streams(l) => json(StatusCode::OK, &l),
        Reply::Stream(d) => json(StatusCode::OK, &d),
        Reply::StreamDeleted => StatusCode::NO_CONTENT.into_response(),
        Reply::Published(b) | Reply::Batch(b) => json_bytes(StatusCode::OK, b),
        Reply::Allocated(a) => json(StatusCode::CREATED, &a),
        Reply::Info(i) => json(StatusCode::OK, &i),
        Reply::Acked(a) => json(StatusCode::OK, &a),
        Reply::Written(w) => json(StatusCode::OK, &w),
        Reply::Committed(c) => json(StatusCode::OK, &c),
        Reply::Disposed(d) => json(StatusCode::OK, &d),
    }
}

/// Reads and decodes the body of an authenticated call.
/// The claim on the body budget is held until the request is answered.
async fn read_body(
    s: &ApiState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, body::BodyClaim), ApiError> {
    let (raw, mut claim) =
        body::read_raw(headers, body, s.inner.limits.body_timeout, &s.inner.bodies).await?;
    let decoded = body::decode_within(headers, raw, &mut claim, &s.inner.bodies).await?;
    Ok((decoded, claim))
}

async fn create_stream(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = s.identity(&headers).await?;
    let (b, _claim) = read_body(&s, &headers, body).await?;
    let req: CreateStream = body::json(&b, false)?;
    require(&id, Action::Admin, &req.name)?;
    Ok(reply(s.route(&id.subject, Request::CreateStream(req)).await?))
}

async fn list_streams(State(s): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let id = s.identity(&headers).await?;
    match s.route(&id.subject, Request::ListStreams).await? {
        Reply::Streams(mut l) => {
            // a caller sees the streams it has some scope on
            l.streams.retain(|st| id.sees(&st.name));
            Ok(json(StatusCode::OK, &l))
        }
        other => Ok(reply(other)),
    }
}

/// The `{name}` of a stream path. A name that does not decode (`%FF`) is a
/// `bad_request` with the JSON error body; whether it is a valid name is
/// checked by [`ApiState::allowed`] after authentication, so that a caller
/// without a token learns nothing from the answer.
struct StreamPath(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for StreamPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad(format!("stream name in the path: {}", e.body_text())))?;
        Ok(StreamPath(name))
    }
}

/// A stream name from a path: malformed is a `bad_request`, not a stream
/// that was not found.
fn check_stream_name(name: &str) -> Result<(), ApiError> {
    if switchboard_proto::wire::is_valid_name(name, switchboard_proto::wire::limits::MAX_STREAM_NAME) {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "stream name {name:?}: must be 1 to 200 characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

async fn describe_stream(
    State(s): State<ApiState>,
    StreamPath(name): StreamPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = s.identity(&headers).await?;
    check_stream_name(&name)?;
    if !id.sees(&name) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("{} has no scope on stream {name:?}", id.subject),
        ));
    }
    Ok(reply(s.route(&id.subject, Request::DescribeStream(name)).await?))
}

async fn delete_stream(
    State(s): State<ApiState>,
    StreamPath(name): StreamPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = s.allowed(&headers, Action::Admin, &name).await?;
    Ok(reply(s.route(&id.subject, Request::DeleteStream(name)).await?))
}

async fn publish(
    State(s): State<ApiState>,
    StreamPath(name): StreamPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = s.allowed(&headers, Action::Write, &name).await?;
    let (b, _claim) = read_body(&s, &headers, body).await?;
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad("Idempotency-Key: must be printable ASCII"))?
                .to_string(),
        ),
        None => None,
    };
    Ok(reply(
        s.route(
            &id.subject,
            Request::Publish {
                stream: name,
                idempotency_key: key,
                body: b,
            },
        )
        .await?,
    ))
}

async fn allocate(State(s): State<ApiState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let id = s.identity(&headers).await?;
    let (b, _claim) = read_body(&s, &headers, body).await?;
    let req: Allocate = body::json(&b, false)?;
    check_stream_name(&req.stream)?;
    let action = match req.mode {
        switchboard_proto::wire::Mode::Read => Action::Read,
        switchboard_proto::wire::Mode::Write => Action::Write,
    };
    require(&id, action, &req.stream)?;
    Ok(reply(s.route(&id.subject, Request::Allocate(req)).await?))
}

/// Checks token and signature of a session call; returns the caller's
/// subject and the decoded body, with its claim on the body budget.
async fn signed(
    s: &ApiState,
    id: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<(String, Bytes, body::BodyClaim), ApiError> {
    let caller = s.identity(headers).await?.subject;
    let (raw, mut claim) =
        body::read_raw(headers, body, s.inner.limits.body_timeout, &s.inner.bodies).await?;
    let mut sigs = headers.get_all(signing::HEADER).iter();
    let sig = sigs
        .next()
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::new(ErrorCode::BadSignature, "missing X-Switchboard-Signature header"))?;
    if sigs.next().is_some() {
        // which one would count is a guess an attacker could exploit
        return Err(ApiError::new(
            ErrorCode::BadSignature,
            "more than one X-Switchboard-Signature header",
        ));
    }
    let path = uri
        .path_and_query()
        .map_or(uri.path(), |p| p.as_str())
        .to_string();
    // an id this cluster did not make, or minted under a retired key, names
    // no session anywhere
    let secret = s.inner.secrets.secret(id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::SessionGone,
            "no such session (unknown id, or minted under a retired server key): allocate a new one",
        )
    })?;
    let now = u64::try_from(switchboard_proto::time::now_ms()).unwrap_or(0);
    let (sig, method) = (sig.to_string(), method.clone());
    let check = move |raw: &[u8]| {
        signing::verify(
            &sig,
            secret.as_bytes(),
            method.as_str(),
            &path,
            raw,
            now,
            signing::MAX_SKEW_MS,
        )
        .map(|_| ())
        .map_err(|e| ApiError::new(ErrorCode::BadSignature, e.to_string()))
    };
    // hashing a large body takes longer than a runtime thread should be
    // held: other calls (acks, reads) would queue behind it
    if raw.len() <= body::INLINE_WORK {
        check(&raw)?;
    } else {
        let raw = raw.clone();
        tokio::task::spawn_blocking(move || check(&raw))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("signature task failed: {e}")))??;
    }
    let decoded = body::decode_within(headers, raw, &mut claim, &s.inner.bodies).await?;
    Ok((caller, decoded, claim))
}

async fn session_call(s: &ApiState, id: String, caller: String, call: Call) -> Result<Response, ApiError> {
    Ok(reply(s.route(&caller, Request::Session { id, call }).await?))
}

/// The parts of a session call, taken from the request: every session
/// endpoint checks the token and signature the same way, then turns the
/// body into its [`Call`].
struct SessionReq {
    state: ApiState,
    id: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
}

impl axum::extract::FromRequest<ApiState> for SessionReq {
    type Rejection = ApiError;

    async fn from_request(req: HttpRequest, state: &ApiState) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let Path(id) = Path::<String>::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| ApiError::bad(format!("session id: {e}")))?;
        Ok(SessionReq {
            state: state.clone(),
            id,
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
        })
    }
}

impl SessionReq {
    /// Authenticates, checks the signature, builds the call from the
    /// decoded body and routes it.
    async fn run(self, call: impl FnOnce(Bytes) -> Result<Call, ApiError>) -> Result<Response, ApiError> {
        let s = self.state;
        let (caller, b, _claim) =
            signed(&s, &self.id, &self.method, &self.uri, &self.headers, self.body).await?;
        let call = call(b)?;
        session_call(&s, self.id, caller, call).await
    }
}

fn read_call(b: Bytes) -> Result<Call, ApiError> {
    // the limits are checked by the session layer, which owns them
    Ok(Call::Read(body::json::<Read>(&b, true)?))
}
