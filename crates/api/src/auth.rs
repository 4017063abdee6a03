//! Who is calling, and what they may do.
//!
//! An [`Identity`] is a subject and its scopes. Scopes grant an action on
//! stream names matching a pattern:
//!
//! - `switchboard:read:<pattern>`, `switchboard:write:<pattern>`,
//!   `switchboard:admin:<pattern>`;
//! - `switchboard:<action>` alone covers every stream;
//! - patterns are stream names where `*` matches any run of characters
//!   (`orders.*`, `*`).
//!
//! `admin` includes `read` and `write` on the same streams, and adds stream
//! creation and deletion. Scopes that do not start with `switchboard:` are
//! ignored, so tokens shared with other services keep working.

use std::collections::HashMap;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

/// An action a scope grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Describe streams, read sessions.
    Read,
    /// Publish, write sessions.
    Write,
    /// Everything, plus creating and deleting streams.
    Admin,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        match s {
            "read" => Some(Action::Read),
            "write" => Some(Action::Write),
            "admin" => Some(Action::Admin),
            _ => None,
        }
    }

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Admin => "admin",
        }
    }
}

/// One granted scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    action: Action,
    pattern: String,
}

impl Scope {
    /// Parses `switchboard:<action>[:<pattern>]`; `None` for other scopes.
    pub fn parse(s: &str) -> Option<Result<Scope, String>> {
        let rest = s.strip_prefix("switchboard:")?;
        let (action, pattern) = match rest.split_once(':') {
            Some((a, p)) => (a, p),
            None => (rest, "*"),
        };
        let Some(action) = Action::parse(action) else {
            return Some(Err(format!(
                "scope {s:?}: the action must be read, write or admin"
            )));
        };
        if pattern.is_empty()
            || pattern.len() > 200
            || !pattern
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'*'))
        {
            return Some(Err(format!(
                "scope {s:?}: the pattern must be a stream name, with * for any characters"
            )));
        }
        Some(Ok(Scope {
            action,
            pattern: pattern.to_string(),
        }))
    }

    fn covers(&self, action: Action, stream: &str) -> bool {
        (self.action == Action::Admin || self.action == action) && glob(&self.pattern, stream)
    }
}

/// Parses a list of scopes separated by spaces or commas; scopes of other
/// services are skipped.
pub fn parse_scopes(list: &str) -> Result<Vec<Scope>, String> {
    list.split([' ', ','])
        .filter(|s| !s.is_empty())
        .filter_map(Scope::parse)
        .collect()
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Stable name of the caller (sessions are bound to it).
    pub subject: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

impl Identity {
    /// Whether `action` on `stream` is granted.
    pub fn allows(&self, action: Action, stream: &str) -> bool {
        self.scopes.iter().any(|s| s.covers(action, stream))
    }

    /// Whether `admin` is granted on every stream (not on a pattern):
    /// what node-wide views, such as the configuration, need.
    pub fn is_node_admin(&self) -> bool {
        self.scopes
            .iter()
            .any(|s| s.action == Action::Admin && s.pattern == "*")
    }

    /// Whether any action on `stream` is granted (listing shows it).
    pub fn sees(&self, stream: &str) -> bool {
        self.allows(Action::Read, stream) || self.allows(Action::Write, stream)
    }
}

/// Why a token was refused (all `unauthorized`, or `unavailable` when the
/// identity provider cannot be reached).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is not valid; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// The provider could not answer.
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
}

/// Turns a bearer token into an identity.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Checks `token`. `Ok(None)`: not this authenticator's kind of token.
    async fn authenticate(&self, token: &str) -> Result<Option<Identity>, AuthError>;
}

/// Static tokens from the configuration, each with its scopes.
pub struct StaticTokens {
    by_digest: HashMap<[u8; 32], Identity>,
}

impl StaticTokens {
    /// Parses `TOKEN[:SCOPES]` entries; no scopes means `switchboard:admin`.
    pub fn parse(entries: &[String]) -> Result<StaticTokens, String> {
        let mut by_digest = HashMap::new();
        for e in entries {
            let (token, scopes) = match e.split_once(':') {
                Some((t, s)) => (t, parse_scopes(s)?),
                None => (e.as_str(), parse_scopes("switchboard:admin")?),
            };
            let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
            let subject = format!("static:{}", &hex::encode(digest)[..12]);
            by_digest.insert(digest, Identity { subject, scopes });
        }
        Ok(StaticTokens { by_digest })
    }
}

#[async_trait]
impl Authenticator for StaticTokens {
    async fn authenticate(&self, token: &str) -> Result<Option<Identity>, AuthError> {
        // compare digests: the map lookup does not leak the token's prefix
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        Ok(self.by_digest.get(&digest).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_patterns() {
        let id = Identity {
            subject: "s".into(),
            scopes: parse_scopes("openid switchboard:read:orders.* switchboard:write:billing").unwrap(),
        };
        assert!(id.allows(Action::Read, "orders.eu"));
        assert!(!id.allows(Action::Read, "orders"));
        assert!(!id.allows(Action::Write, "orders.eu"));
        assert!(id.allows(Action::Write, "billing"));
        assert!(!id.allows(Action::Read, "billing"));
        assert!(!id.allows(Action::Admin, "billing"));
        let admin = Identity {
            subject: "a".into(),
            scopes: parse_scopes("switchboard:admin").unwrap(),
        };
        assert!(admin.allows(Action::Write, "anything") && admin.allows(Action::Admin, "x"));
        assert!(parse_scopes("switchboard:delete:x").is_err());
        assert!(parse_scopes("switchboard:read:bad/name").is_err());
        assert!(glob("*", "") && glob("a*b*c", "axxbyyc") && !glob("a*b", "ab.c") && glob("a*", "a"));
    }

    #[tokio::test]
    async fn static_tokens_with_scopes() {
        let t =
            StaticTokens::parse(&["root-token".into(), "reader-token:switchboard:read:logs".into()]).unwrap();
        let root = t.authenticate("root-token").await.unwrap().unwrap();
        assert!(root.allows(Action::Admin, "x"));
        let r = t.authenticate("reader-token").await.unwrap().unwrap();
        assert!(r.allows(Action::Read, "logs") && !r.allows(Action::Write, "logs"));
        assert_ne!(root.subject, r.subject);
        assert!(t.authenticate("nope").await.unwrap().is_none());
    }
}
