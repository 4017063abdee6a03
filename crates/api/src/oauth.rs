//! OAuth2 bearer tokens: JWTs checked against an issuer, an audience and a
//! JWKS ([`JwtAuth`]), and opaque tokens checked by RFC 7662 introspection
//! ([`Introspection`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::{parse_scopes, AuthError, Authenticator, Identity};

/// An HTTP client for identity providers, trusting `ca_cert` (PEM) besides
/// the system roots.
pub fn http_client(ca_cert: Option<&PathBuf>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5));
    if let Some(p) = ca_cert {
        let pem = std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", p.display()))?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| e.to_string())
}

/// Where scopes are in a token's claims.
fn scopes_of(claims: &serde_json::Value, claim: &str) -> Result<Vec<crate::auth::Scope>, AuthError> {
    let text = match claims.get(claim) {
        None => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(a)) => {
            a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(" ")
        }
        Some(_) => {
            return Err(AuthError::Invalid(format!(
                "claim {claim:?} is neither a string nor a list"
            )))
        }
    };
    parse_scopes(&text).map_err(AuthError::Invalid)
}

/// Allowed clock skew for `exp` and `nbf`, seconds.
pub const LEEWAY_S_RANGE: std::ops::RangeInclusive<u64> = 0..=3600;
/// Allowed least time between JWKS fetches for unknown key ids, ms.
pub const JWKS_REFRESH_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=86_400_000;

/// Settings of [`JwtAuth`].
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// A JWKS file path, or an `http(s)://` URL.
    pub jwks: String,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Claim holding scopes (a space-separated string or a list).
    pub scope_claim: String,
    /// Allowed clock skew for `exp` and `nbf`, seconds.
    pub leeway_s: u64,
    /// Least time between two JWKS fetches for unknown key ids.
    pub refresh_interval: Duration,
}

struct KeySet {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Option<Instant>,
}

/// Checks JWTs (RS256, ES256, EdDSA) against a JWKS. A verified token is
/// remembered (by digest) until it expires, at most 5 minutes, so that the
/// many calls of one session do not each verify a signature again.
pub struct JwtAuth {
    cfg: JwtConfig,
    http: reqwest::Client,
    keys: Mutex<KeySet>,
    refresh: tokio::sync::Mutex<()>,
    verified: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
}

/// Most verified tokens remembered.
const VERIFIED_CACHE: usize = 100_000;

/// Inserts into a bounded cache of identities, dropping expired entries
/// (and then an arbitrary one) when full.
fn remember(
    cache: &Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
    key: [u8; 32],
    id: Identity,
    until: Instant,
    cap: usize,
) {
    let mut c = cache.lock();
    if c.len() >= cap {
        let now = Instant::now();
        c.retain(|_, (_, u)| *u > now);
        if c.len() >= cap {
            if let Some(k) = c.keys().next().copied() {
                c.remove(&k);
            }
        }
    }
    c.insert(key, (id, until));
}

fn recall(cache: &Mutex<HashMap<[u8; 32], (Identity, Instant)>>, key: &[u8; 32]) -> Option<Identity> {
    let c = cache.lock();
    c.get(key)
        .filter(|(_, u)| Instant::now() < *u)
        .map(|(id, _)| id.clone())
}

fn parse_jwks(bytes: &[u8]) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| format!("invalid JWKS: {e}"))?;
    let mut out = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
            // symmetric keys and other curves are not accepted
            _ => continue,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWKS key {kid:?}: {e}"))?;
        out.insert(kid, (key, alg));
    }
    Ok(out)
}

impl JwtAuth {
    /// Loads the JWKS once; fails if it cannot be read.
    pub async fn new(cfg: JwtConfig, http: reqwest::Client) -> Result<JwtAuth, String> {
        let auth = JwtAuth {
            cfg,
            http,
            keys: Mutex::new(KeySet {
                keys: HashMap::new(),
                fetched: None,
            }),
            refresh: tokio::sync::Mutex::new(()),
            verified: Mutex::new(HashMap::new()),
        };
        let keys = auth.fetch().await?;
        *auth.keys.lock() = KeySet {
            keys,
            fetched: Some(Instant::now()),
        };
        Ok(auth)
    }

    async fn fetch(&self) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
        let src = &self.cfg.jwks;
        let bytes = if src.starts_with("http://") || src.starts_with("https://") {
            let resp = self
                .http
                .get(src)
                .send()
                .await
                .map_err(|e| format!("fetching JWKS {src}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("fetching JWKS {src}: status {}", resp.status()));
            }
            resp.bytes()
                .await
                .map_err(|e| format!("fetching JWKS {src}: {e}"))?
                .to_vec()
        } else {
            tokio::fs::read(src)
                .await
                .map_err(|e| format!("reading JWKS {src}: {e}"))?
        };
        parse_jwks(&bytes)
    }

    /// The key for `kid`, refetching the JWKS (at most once per refresh
    /// interval) when it is unknown.
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), AuthError> {
        if let Some(k) = self.keys.lock().keys.get(kid) {
            return Ok(k.clone());
        }
        let _one = self.refresh.lock().await;
        {
            let ks = self.keys.lock();
            if let Some(k) = ks.keys.get(kid) {
                return Ok(k.clone());
            }
            if ks
                .fetched
                .is_some_and(|t| t.elapsed() < self.cfg.refresh_interval)
            {
                return Err(AuthError::Invalid(format!("unknown signing key {kid:?}")));
            }
        }
        match self.fetch().await {
            Ok(keys) => {
                let mut ks = self.keys.lock();
                ks.keys = keys;
                ks.fetched = Some(Instant::now());
                ks.keys
                    .get(kid)
                    .cloned()
                    .ok_or_else(|| AuthError::Invalid(format!("unknown signing key {kid:?}")))
            }
            Err(e) => {
                self.keys.lock().fetched = Some(Instant::now());
                tracing::warn!(error = %e, "JWKS refresh failed");
                Err(AuthError::Unavailable(e))
            }
        }
    }
}

#[async_trait]
impl Authenticator for JwtAuth {
    async fn authenticate(&self, token: &str) -> Result<Option<Identity>, AuthError> {
        if token.bytes().filter(|&c| c == b'.').count() != 2 {
            return Ok(None); // not a JWT
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(id) = recall(&self.verified, &digest) {
            return Ok(Some(id));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("malformed token: {e}")))?;
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Invalid("token has no key id (kid)".into()))?;
        let (key, alg) = self.key(&kid).await?;
        if header.alg != alg {
            return Err(AuthError::Invalid(format!(
                "token algorithm {:?} does not match key {kid:?}",
                header.alg
            )));
        }
        let mut v = Validation::new(alg);
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.audience]);
        v.leeway = self.cfg.leeway_s;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            AuthError::Invalid(
                match e.kind() {
                    K::ExpiredSignature => "token expired",
                    K::ImmatureSignature => "token not yet valid",
                    K::InvalidIssuer => "token has the wrong issuer",
                    K::InvalidAudience => "token has the wrong audience",
                    K::InvalidSignature => "token signature does not verify",
                    K::MissingRequiredClaim(_) => "token lacks a required claim (exp, iss, aud, sub)",
                    _ => "malformed token",
                }
                .to_string(),
            )
        })?;
        let sub = data
            .claims
            .get("sub")
            .and_then(|s| s.as_str())
            .unwrap_or_default();
        let id = Identity {
            subject: format!("jwt:{sub}"),
            scopes: scopes_of(&data.claims, &self.cfg.scope_claim)?,
        };
        let now = switchboard_proto::time::now_ms() / 1000;
        let left = data
            .claims
            .get("exp")
            .and_then(|e| e.as_i64())
            .map_or(0, |exp| exp - now);
        if left > 0 {
            let until = Instant::now() + Duration::from_secs(left.min(300) as u64);
            remember(&self.verified, digest, id.clone(), until, VERIFIED_CACHE);
        }
        Ok(Some(id))
    }
}

/// Settings of [`Introspection`].
#[derive(Debug, Clone)]
pub struct IntrospectConfig {
    /// The RFC 7662 endpoint.
    pub url: String,
    /// Client credentials (HTTP basic auth to the endpoint).
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// Claim holding scopes.
    pub scope_claim: String,
    /// Most tokens cached.
    pub cache_size: usize,
}

/// Checks opaque tokens by introspection; answers are cached until the
/// token expires (at most 5 minutes), in a bounded cache.
pub struct Introspection {
    cfg: IntrospectConfig,
    http: reqwest::Client,
    cache: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
}

#[derive(Deserialize)]
struct IntrospectAnswer {
    active: bool,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(flatten)]
    rest: serde_json::Value,
}

impl Introspection {
    /// An introspecting authenticator.
    pub fn new(cfg: IntrospectConfig, http: reqwest::Client) -> Introspection {
        Introspection {
            cfg,
            http,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Authenticator for Introspection {
    async fn authenticate(&self, token: &str) -> Result<Option<Identity>, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(id) = recall(&self.cache, &digest) {
            return Ok(Some(id));
        }
        let resp = self
            .http
            .post(&self.cfg.url)
            .basic_auth(&self.cfg.client_id, Some(&self.cfg.client_secret))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(format!("introspection: {e}")))?;
        if !resp.status().is_success() {
            return Err(AuthError::Unavailable(format!(
                "introspection answered {}",
                resp.status()
            )));
        }
        let a: IntrospectAnswer = resp
            .json()
            .await
            .map_err(|e| AuthError::Unavailable(format!("introspection answer: {e}")))?;
        if !a.active {
            self.cache.lock().remove(&digest);
            return Err(AuthError::Invalid("token is not active".into()));
        }
        let now = switchboard_proto::time::now_ms() / 1000;
        let left = a.exp.map_or(60, |exp| exp - now);
        if left <= 0 {
            return Err(AuthError::Invalid("token expired".into()));
        }
        let subject = a.sub.or(a.client_id).unwrap_or_default();
        let id = Identity {
            subject: format!("oauth:{subject}"),
            scopes: scopes_of(&a.rest, &self.cfg.scope_claim)?,
        };
        let until = Instant::now() + Duration::from_secs(left.min(300) as u64);
        remember(&self.cache, digest, id.clone(), until, self.cfg.cache_size);
        Ok(Some(id))
    }
}
