//! A fault-injecting HTTP proxy between an SDK and the server.
//!
//! Every request is forwarded as sent (compressed bodies stay compressed,
//! signatures stay valid); a rule can then drop the answer after the
//! server acted (the client sees the connection close), delay it, or
//! answer `backpressure` itself without forwarding. Every request is
//! logged with its time, so that a scenario can check how a client
//! retried.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;

/// What a rule does to a matching call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forward, then close the connection instead of answering.
    Drop,
    /// Forward, then hold the answer this long.
    Delay(Duration),
    /// Answer `429 backpressure` with this `retry_after_ms`, unforwarded.
    Backpressure(u64),
}

/// A fault armed for the next `times` matching calls.
#[derive(Debug, Clone)]
pub struct Rule {
    /// HTTP method.
    pub method: String,
    /// Path pattern: segments, `*` matching any one segment.
    pub path: String,
    /// What happens.
    pub action: Action,
    /// Calls left to hit.
    pub times: u32,
    /// Calls hit so far.
    pub fired: u32,
}

/// One call seen by the proxy.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it arrived.
    pub at: Instant,
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The index of the rule that hit it, if any.
    pub rule: Option<usize>,
}

#[derive(Default)]
struct State {
    upstream: String,
    rules: Vec<Rule>,
    log: Vec<Seen>,
}

/// A running proxy; dropping it does not stop it (the runtime does).
#[derive(Clone)]
pub struct Proxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<Mutex<State>>,
}

/// Whether `path` matches `pattern` segment by segment.
pub fn matches(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    p.len() == s.len() && p.iter().zip(&s).all(|(a, b)| *a == "*" || a == b)
}

impl Proxy {
    /// Starts a proxy on a free loopback port in front of `upstream`.
    pub async fn start(upstream: &str) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            upstream: upstream.to_string(),
            ..State::default()
        }));
        let http = reqwest::Client::builder()
            .no_gzip()
            .no_zstd()
            .pool_max_idle_per_host(32)
            .timeout(Duration::from_secs(120))
            .build()?;
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let _ = conn.set_nodelay(true);
                let (st, http) = (st.clone(), http.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), http.clone(), req));
                    // an Err from the service closes the connection: that is
                    // how an answer is dropped
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(conn), svc)
                        .await;
                });
            }
        });
        Ok(Proxy {
            url: format!("http://{addr}"),
            state,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Points the proxy at another server address.
    pub fn set_upstream(&self, upstream: &str) {
        self.lock().upstream = upstream.to_string();
    }

    /// Arms a rule; returns its index.
    pub fn arm(&self, rule: Rule) -> usize {
        let mut s = self.lock();
        s.rules.push(rule);
        s.rules.len() - 1
    }

    /// Disarms every rule and forgets the log.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.rules.clear();
        s.log.clear();
    }

    /// The rules, with how often each fired.
    pub fn rules(&self) -> Vec<Rule> {
        self.lock().rules.clone()
    }

    /// Every call seen since the last reset.
    pub fn log(&self) -> Vec<Seen> {
        self.lock().log.clone()
    }
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("answer dropped by the proxy")
    }
}

impl std::error::Error for Dropped {}

type Answer = Result<Response<Full<Bytes>>, Dropped>;

async fn handle(state: Arc<Mutex<State>>, http: reqwest::Client, req: Request<Incoming>) -> Answer {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let path_q = req
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.as_str().to_string());
    let (upstream, action, rule) = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let hit = s
            .rules
            .iter()
            .position(|r| r.fired < r.times && r.method == method && matches(&r.path, &path));
        let action = hit.map(|i| {
            s.rules[i].fired += 1;
            s.rules[i].action.clone()
        });
        s.log.push(Seen {
            at: Instant::now(),
            method: method.clone(),
            path: path.clone(),
            rule: hit,
        });
        (s.upstream.clone(), action, hit)
    };
    if let Some(Action::Backpressure(ms)) = action {
        let body = format!(
            r#"{{"error":{{"code":"backpressure","message":"injected by the conformance proxy","retryable":true,"retry_after_ms":{ms}}}}}"#
        );
        return Ok(Response::builder()
            .status(429)
            .header("content-type", "application/json")
            .header("retry-after", ms.div_ceil(1000).to_string())
            .header("x-request-id", format!("proxy-{}", rule.unwrap_or(0)))
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default());
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let mut out = http.request(parts.method.clone(), format!("{upstream}{path_q}"));
    for (k, v) in &parts.headers {
        if !matches!(
            k.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding"
        ) {
            out = out.header(k, v);
        }
    }
    let resp = match out.body(body).send().await {
        Ok(r) => r,
        Err(_) => {
            // the server is down: the client sees a connection failure
            return Err(Dropped);
        }
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.map_err(|_| Dropped)?;
    match action {
        Some(Action::Drop) => return Err(Dropped),
        Some(Action::Delay(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    let mut b = Response::builder().status(status);
    for (k, v) in &headers {
        if !matches!(k.as_str(), "connection" | "content-length" | "transfer-encoding") {
            b = b.header(k, v);
        }
    }
    Ok(b.body(Full::new(bytes)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_match_whole_segments() {
        assert!(matches("/v1/sessions", "/v1/sessions"));
        assert!(!matches("/v1/sessions", "/v1/sessions/abc"));
        assert!(matches("/v1/sessions/*/read", "/v1/sessions/abc/read"));
        assert!(!matches("/v1/sessions/*/read", "/v1/sessions/abc/ack"));
        assert!(matches("/v1/sessions/*", "/v1/sessions/abc"));
    }
}
