//! The OpenAPI 3.1 document of the API, served at `/v1/openapi.json`.
//! [`ROUTES`] lists every routed endpoint; a test checks that the document
//! and the live router agree on it.

use serde_json::{json, Value};
use switchboard_proto::wire::limits;
use switchboard_proto::ErrorCode;

/// Every (method, path) the API routes, besides the probes.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/streams"),
    ("get", "/v1/streams"),
    ("get", "/v1/streams/{name}"),
    ("delete", "/v1/streams/{name}"),
    ("post", "/v1/streams/{name}/events"),
    ("post", "/v1/sessions"),
    ("get", "/v1/sessions/{id}"),
    ("delete", "/v1/sessions/{id}"),
    ("post", "/v1/sessions/{id}/read"),
    ("post", "/v1/sessions/{id}/ack"),
    ("post", "/v1/sessions/{id}/write"),
    ("post", "/v1/sessions/{id}/commit"),
    ("get", "/v1/cluster"),
    ("get", "/v1/config"),
    ("get", "/v1/openapi.json"),
    ("get", "/ui"),
    ("get", "/ui/app.js"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// A user stream's name: names starting with `__` are the server's own.
fn stream_name() -> Value {
    json!({ "type": "string", "pattern": "^(?!__)[A-Za-z0-9._-]{1,200}$" })
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn body(name: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": r(name) } } })
}

fn ok(desc: &str, name: &str) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": r(name) } } })
}

fn errors(codes: &[&str]) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for c in codes {
        m.insert(
            (*c).to_string(),
            json!({ "$ref": format!("#/components/responses/E{c}") }),
        );
    }
    m
}

fn op(
    id: &str,
    summary: &str,
    req: Option<Value>,
    good: (&str, Value),
    errs: &[&str],
    signed: bool,
) -> Value {
    let mut responses = errors(errs);
    responses.insert(good.0.to_string(), good.1);
    let mut o = json!({
        "operationId": id,
        "summary": summary,
        "responses": responses,
    });
    if let Some(b) = req {
        o["requestBody"] = b;
    }
    if signed {
        o["parameters"] = json!([{ "$ref": "#/components/parameters/Signature" }]);
        // any session call: the session is gone (410), or its stream was
        // deleted under it (404)
        for code in ["404", "410"] {
            o["responses"][code] = json!({ "$ref": format!("#/components/responses/E{code}") });
        }
    }
    o
}

/// What any authenticated call may answer: bad input, no or a bad token,
/// a token without the scope, a draining node, a bug.
const COMMON: &[&str] = &["400", "401", "403", "503", "500"];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v: Vec<&str> = COMMON.to_vec();
    v.extend_from_slice(extra);
    v
}

/// The document.
pub fn document() -> Value {
    let name_param = json!([{ "name": "name", "in": "path", "required": true, "schema": stream_name() }]);
    let id_param = json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "minLength": 1 } }]);
    let mut publish = op(
        "publish",
        "Publish events at once; answers when they are durable",
        Some(body("Publish")),
        (
            "200",
            ok("offsets of the events, in request order", "PublishAnswer"),
        ),
        &with(&["404", "409", "413", "429"]),
        false,
    );
    publish["parameters"] = json!([{ "name": "Idempotency-Key", "in": "header", "required": false,
        "description": "1 to 255 printable ASCII characters; the same key from the same caller on the same stream returns the first answer for at least 24 h",
        "schema": { "type": "string", "pattern": format!("^[!-~]{{1,{}}}$", limits::MAX_IDEMPOTENCY_KEY) } }]);
    let mut read_op = op(
        "readBatch",
        "Read the pending batch, or the next one",
        Some(json!({ "required": false, "content": { "application/json": { "schema": r("Read") } } })),
        (
            "200",
            ok(
                "a batch; batch 0 with no events when nothing came within wait_ms",
                "ReadAnswer",
            ),
        ),
        &with(&["409", "410", "413", "429"]),
        true,
    );
    read_op["description"] = json!("A pending batch is returned byte for byte until acked.");
    read_op["responses"]["200"]["links"] = json!({
        "ack": { "operationId": "ackBatch",
            "parameters": { "id": "$request.path.id" },
            "requestBody": { "batch": "$response.body#/batch" } } });
    let mut create = op(
        "createStream",
        "Create a stream",
        Some(body("CreateStream")),
        ("201", ok("created", "Stream")),
        &with(&["409", "413", "429"]),
        false,
    );
    create["responses"]["200"] = ok("it existed with the same settings", "Stream");
    let stream_links = json!({
        "describe": { "operationId": "describeStream", "parameters": { "name": "$response.body#/name" } },
        "publish": { "operationId": "publish", "parameters": { "name": "$response.body#/name" } },
        "read": { "operationId": "allocateSession",
            "requestBody": { "stream": "$response.body#/name", "mode": "read", "cursor": "earliest" } },
        "write": { "operationId": "allocateSession",
            "requestBody": { "stream": "$response.body#/name", "mode": "write" } },
        "delete": { "operationId": "deleteStream", "parameters": { "name": "$response.body#/name" } },
    });
    create["responses"]["201"]["links"] = stream_links.clone();
    create["responses"]["200"]["links"] = stream_links;
    let mut allocate = op(
        "allocateSession",
        "Allocate a read or write session",
        Some(body("Allocate")),
        (
            "201",
            ok("the session; keep the secret to sign its calls", "Allocated"),
        ),
        &with(&["404", "413", "429"]),
        false,
    );
    let session = json!({ "id": "$response.body#/session" });
    allocate["responses"]["201"]["links"] = json!({
        "get": { "operationId": "getSession", "parameters": session },
        "read": { "operationId": "readBatch", "parameters": session },
        "write": { "operationId": "writeBlock", "parameters": session,
            "requestBody": { "block": 1, "events": [{ "value": { "n": 1 } }] } },
        "ack": { "operationId": "ackBatch", "parameters": session },
        "commit": { "operationId": "commitBlock", "parameters": session },
        "dispose": { "operationId": "disposeSession", "parameters": session },
    });
    let mut write_op = op(
        "writeBlock",
        "Stage a block",
        Some(body("Write")),
        ("200", ok("staged", "WriteAnswer")),
        &with(&["409", "410", "413", "429"]),
        true,
    );
    write_op["responses"]["200"]["links"] = json!({
        "commit": { "operationId": "commitBlock",
            "parameters": { "id": "$request.path.id" },
            "requestBody": { "block": "$response.body#/block", "durable": true } } });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard",
            "version": "1",
            "description": "Event streams with two-phase, idempotent sessions; docs/PROTOCOL.md in the repository is the contract in prose. Request and answer bodies may be gzip or zstd encoded (Content-Encoding / Accept-Encoding). Request bodies are at most 16 MiB after decompression. Stream names starting with `__` are reserved. Integers may be written in any JSON number form with a whole value (2, 2.0, 2e0). A path that names no endpoint answers 404 `not_found`; an endpoint called with a method it does not take answers 405 `method_not_allowed` with an `Allow` header."
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/v1/streams": {
                "post": create,
                "get": op("listStreams", "List streams", None, ("200", ok("streams", "StreamList")), COMMON, false),
            },
            "/v1/streams/{name}": {
                "parameters": name_param,
                "get": op("describeStream", "A stream's settings and offsets", None,
                    ("200", ok("the stream", "StreamDescription")), &with(&["404"]), false),
                "delete": op("deleteStream", "Delete a stream and its data", None,
                    ("204", json!({ "description": "deleted" })), &with(&["404"]), false),
            },
            "/v1/streams/{name}/events": { "parameters": name_param, "post": publish },
            "/v1/sessions": {
                "post": allocate,
            },
            "/v1/sessions/{id}": {
                "parameters": id_param,
                "get": op("getSession", "Session state; renews the lease", None,
                    ("200", ok("state", "SessionInfo")), &with(&["410"]), true),
                "delete": op("disposeSession", "End a session (a writer first waits, bounded, for its scheduled blocks)", None,
                    ("200", ok("final position", "Disposed")), &with(&["410"]), true),
            },
            "/v1/sessions/{id}/read": { "parameters": id_param, "post": read_op },
            "/v1/sessions/{id}/ack": { "parameters": id_param,
                "post": op("ackBatch", "Ack the pending batch", Some(body("Ack")), ("200", ok("new cursor", "AckAnswer")), &with(&["409", "410", "413", "429"]), true) },
            "/v1/sessions/{id}/write": { "parameters": id_param, "post": write_op },
            "/v1/sessions/{id}/commit": { "parameters": id_param,
                "post": op("commitBlock", "Schedule a staged block for publishing", Some(body("Commit")),
                    ("200", ok("status", "CommitAnswer")), &with(&["409", "410", "413", "429"]), true) },
            "/v1/cluster": { "get": op("cluster", "Nodes of the cluster", None, ("200", ok("nodes", "Cluster")), COMMON, false) },
            "/v1/config": { "get": op("config", "The node's effective configuration, secrets redacted; needs switchboard:admin on every stream", None,
                ("200", ok("settings by key, as in the configuration file", "Config")), COMMON, false) },
            "/v1/openapi.json": { "get": { "operationId": "openapi", "security": [], "summary": "This document; needs no token",
                "responses": { "200": { "description": "OpenAPI 3.1", "content": { "application/json": { "schema": { "type": "object" } } } } } } },
            "/ui": { "get": { "operationId": "dashboard", "security": [], "summary": "The operator dashboard; the page signs in with a pasted token",
                "responses": { "200": { "description": "HTML page", "content": { "text/html": { "schema": { "type": "string" } } } } } } },
            "/ui/app.js": { "get": { "operationId": "dashboardScript", "security": [], "summary": "The dashboard's script",
                "responses": { "200": { "description": "JavaScript", "content": { "text/javascript": { "schema": { "type": "string" } } } } } } },
            "/healthz": { "get": { "operationId": "healthz", "security": [], "summary": "Liveness", "responses": { "200": { "description": "alive" } } } },
            "/readyz": { "get": { "operationId": "readyz", "security": [], "summary": "Readiness", "responses": { "200": { "description": "ready" }, "503": { "description": "draining, or the store cannot serve (`<node>: store_unavailable`); on an API node of the two tiers, no broker with a backend node serving (a full node serves its sessions)" } } } },
            "/metrics": { "get": { "operationId": "metrics", "security": [], "summary": "Prometheus metrics", "responses": { "200": { "description": "text exposition format", "content": { "text/plain": {} } } } } },
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "parameters": {
                "Signature": { "name": "X-Switchboard-Signature", "in": "header", "required": true,
                    "description": "t=<unix ms>,v1=<hex HMAC-SHA256(secret, t \\n METHOD \\n path \\n hex SHA-256(body as sent))>",
                    "schema": { "type": "string" } }
            },
            "responses": error_responses(),
            "schemas": schemas(),
        }
    })
}

fn error_responses() -> Value {
    let mut m = serde_json::Map::new();
    for (status, desc) in [
        ("400", "bad_request or bad_cursor"),
        ("401", "unauthorized or bad_signature"),
        ("403", "forbidden"),
        (
            "404",
            "stream_not_found, or not_found for a path that names no endpoint",
        ),
        ("405", "method_not_allowed"),
        ("409", "conflict"),
        ("410", "session_gone: allocate again from your cursor"),
        ("413", "payload_too_large"),
        ("429", "backpressure: retry after retry_after_ms"),
        ("500", "internal"),
        ("503", "unavailable: retry, or re-allocate"),
    ] {
        m.insert(
            format!("E{status}"),
            json!({ "description": desc, "content": { "application/json": { "schema": r("Error") } } }),
        );
    }
    Value::Object(m)
}

fn schemas() -> Value {
    let u64_ = json!({ "type": "integer", "minimum": 0 });
    let u32_ = json!({ "type": "integer", "minimum": 0, "maximum": 4294967295u64 });
    let opt_u64 = json!({ "type": ["integer", "null"], "minimum": 1 });
    let req_u64 = json!({ "type": "integer", "minimum": 0, "maximum": u64::MAX });
    let block = json!({ "type": "integer", "minimum": 1, "maximum": u64::MAX });
    let base64 = json!({ "type": "string", "contentEncoding": "base64",
        "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$" });
    json!({
        "Error": { "type": "object", "required": ["error"], "properties": { "error": {
            "type": "object", "required": ["code", "message", "retryable"], "properties": {
                "code": { "type": "string", "enum": ErrorCode::ALL.map(ErrorCode::as_str) },
                "message": { "type": "string" },
                "retryable": { "type": "boolean" },
                "retry_after_ms": u64_,
                "fenced_by_epoch": u64_ } } } },
        "CreateStream": { "type": "object", "additionalProperties": false, "required": ["name"], "properties": {
            "name": stream_name(),
            "partitions": { "type": ["integer", "null"], "minimum": 1, "maximum": limits::MAX_PARTITIONS, "default": 1 },
            "retention_ms": { "type": ["integer", "null"], "minimum": 1, "maximum": limits::MAX_RETENTION_MS,
                "description": "null or absent: no retention by age" },
            "retention_bytes": { "type": ["integer", "null"], "minimum": 1, "maximum": u64::MAX,
                "description": "null or absent: no retention by size" },
            "encrypt_keys": { "type": ["boolean", "null"], "default": true,
                "description": "false keeps event keys in the clear at rest (values and headers stay encrypted); null or absent: true" } } },
        "Stream": { "type": "object", "required": ["name", "partitions", "retention_ms", "retention_bytes", "encrypt_keys"], "properties": {
            "name": { "type": "string" }, "partitions": u32_, "retention_ms": opt_u64, "retention_bytes": opt_u64,
            "encrypt_keys": { "type": "boolean" } } },
        "StreamList": { "type": "object", "required": ["streams"], "properties": { "streams": { "type": "array", "items": r("Stream") } } },
        "StreamDescription": { "type": "object", "required": ["name", "partitions", "retention_ms", "retention_bytes", "encrypt_keys", "start_offsets", "end_offsets"], "properties": {
            "name": { "type": "string" }, "partitions": u32_, "retention_ms": opt_u64, "retention_bytes": opt_u64,
            "encrypt_keys": { "type": "boolean" },
            "start_offsets": { "type": "array", "items": u64_ }, "end_offsets": { "type": "array", "items": u64_ } } },
        "Event": { "type": "object", "additionalProperties": false,
            "description": "exactly one of value and value_b64; a key of at most 16 KiB of UTF-8 and header names of at most 256 bytes (larger is payload_too_large); header names starting with `sb.` are reserved",
            "oneOf": [{ "required": ["value"] }, { "required": ["value_b64"] }],
            "properties": {
            "key": { "type": ["string", "null"], "maxLength": limits::MAX_KEY_BYTES },
            "headers": { "type": ["object", "null"], "additionalProperties": { "type": "string" }, "maxProperties": limits::MAX_HEADERS,
                "propertyNames": { "maxLength": limits::MAX_HEADER_NAME_BYTES, "not": { "pattern": "^sb\\." } } },
            "value": { "description": format!("any JSON value, null included, nested at most {} levels deep, without lone surrogate escapes in strings", switchboard_proto::value::MAX_DEPTH) },
            "value_b64": base64 } },
        "ReadEvent": { "type": "object", "required": ["partition", "offset", "timestamp"], "properties": {
            "partition": u32_, "offset": u64_, "timestamp": { "type": "string", "format": "date-time" },
            "key": { "type": "string" }, "headers": { "type": "object", "additionalProperties": { "type": "string" } },
            "value": {}, "value_b64": { "type": "string", "contentEncoding": "base64" } } },
        "Publish": { "type": "object", "additionalProperties": false, "required": ["events"], "properties": {
            "events": { "type": "array", "items": r("Event"), "minItems": 1, "maxItems": limits::MAX_EVENTS_PER_BLOCK } } },
        "PublishAnswer": { "type": "object", "required": ["offsets"], "properties": { "offsets": { "type": "array", "items": {
            "type": "object", "required": ["partition", "offset"], "properties": { "partition": u32_, "offset": u64_ } } } } },
        "Allocate": { "oneOf": [r("AllocateReader"), r("AllocateWriter")] },
        "AllocateReader": { "type": "object", "additionalProperties": false, "required": ["stream", "mode"], "properties": {
            "stream": stream_name(), "mode": { "const": "read" },
            "cursor": { "type": ["string", "null"], "minLength": 1,
                "description": "a cursor this server minted, earliest, latest, or at:<RFC 3339 time> (each partition from its first event at or after that time; a malformed time is bad_request); null or absent: latest. A cursor it did not mint, of an earlier stream of the same name, or past a partition's end is bad_cursor" },
            "partitions": { "type": ["array", "null"], "items": { "type": "integer", "minimum": 0, "maximum": limits::MAX_PARTITIONS - 1 },
                "minItems": 1, "uniqueItems": true, "description": "only these partitions, each below the stream's count (null or absent: all)" },
            "producer": { "type": "null", "description": "writers only" } } },
        "AllocateWriter": { "type": "object", "additionalProperties": false, "required": ["stream", "mode"], "properties": {
            "stream": stream_name(), "mode": { "const": "write" },
            "producer": { "type": ["string", "null"], "pattern": "^[A-Za-z0-9._-]{1,128}$", "description": "exactly-once producer id" },
            "cursor": { "type": "null", "description": "readers only" },
            "partitions": { "type": "null", "description": "readers only" } } },
        "Allocated": { "type": "object", "required": ["session", "secret", "mode", "stream", "lease_ms", "node"], "properties": {
            "session": { "type": "string" }, "secret": { "type": "string" }, "mode": { "type": "string", "enum": ["read", "write"] },
            "stream": { "type": "string" }, "cursor": { "type": "string" }, "last_block": u64_, "lease_ms": u64_, "node": { "type": "string" } } },
        "SessionInfo": { "type": "object", "required": ["mode", "stream", "lease_ms"], "properties": {
            "mode": { "type": "string", "enum": ["read", "write"] }, "stream": { "type": "string" }, "cursor": { "type": "string" },
            "pending_batch": u64_, "last_block": u64_, "durable_through_block": u64_, "blocks_in_flight": u64_, "lease_ms": u64_ } },
        "Read": { "type": "object", "additionalProperties": false, "properties": {
            "max_events": { "type": ["integer", "null"], "minimum": 1, "maximum": limits::MAX_EVENTS_LIMIT, "default": limits::MAX_EVENTS_DEFAULT },
            "max_bytes": { "type": ["integer", "null"], "minimum": 1, "maximum": limits::MAX_BYTES_LIMIT, "default": limits::MAX_BYTES_DEFAULT },
            "wait_ms": { "type": ["integer", "null"], "minimum": 0, "maximum": limits::WAIT_MS_LIMIT, "default": limits::WAIT_MS_DEFAULT } } },
        "ReadAnswer": { "type": "object", "required": ["batch", "events", "cursor"], "properties": {
            "batch": u64_, "events": { "type": "array", "items": r("ReadEvent") }, "cursor": { "type": "string" },
            "gaps": { "type": "array", "description": "ranges retention removed before they were read; the cursor moves past them",
                "items": { "type": "object", "required": ["partition", "from", "to"],
                    "properties": { "partition": u32_, "from": u64_, "to": u64_ } } } } },
        "Ack": { "type": "object", "additionalProperties": false, "required": ["batch"], "properties": { "batch": req_u64 } },
        "AckAnswer": { "type": "object", "required": ["batch", "cursor"], "properties": { "batch": u64_, "cursor": { "type": "string" } } },
        "Write": { "type": "object", "additionalProperties": false, "required": ["block", "events"], "properties": {
            "block": block.clone(), "events": { "type": "array", "items": r("Event"), "minItems": 1, "maxItems": limits::MAX_EVENTS_PER_BLOCK } } },
        "WriteAnswer": { "type": "object", "required": ["block", "events"], "properties": { "block": u64_, "events": u64_ } },
        "Commit": { "type": "object", "additionalProperties": false, "required": ["block"], "properties": {
            "block": block, "durable": { "type": ["boolean", "null"], "default": false } } },
        "CommitAnswer": { "type": "object", "required": ["block", "status"], "properties": {
            "block": u64_, "status": { "type": "string", "enum": ["scheduled", "durable"] },
            "offsets": { "type": "array", "description": "ranges in offset order; a partition may appear more than once", "items": { "type": "object", "required": ["partition", "first", "last"],
                "properties": { "partition": u32_, "first": u64_, "last": u64_ } } } } },
        "Disposed": { "type": "object", "properties": { "cursor": { "type": "string" }, "durable_through_block": u64_ } },
        "Config": { "type": "object", "description": "the keys of `switchboard serve --help`; static tokens show only their scopes" },
        "Cluster": { "type": "object", "required": ["nodes", "brokers"], "properties": { "nodes": { "type": "array", "items": {
            "type": "object", "required": ["id", "role", "state", "sessions", "address", "last_seen", "memory_bytes", "memory_budget", "load"], "properties": {
                "id": { "type": "string" }, "role": { "type": "string", "enum": ["api", "backend", "api+backend"] },
                "state": { "type": "string", "description": "ready, draining, full, store_unavailable or lost (not heard from lately)" }, "sessions": u64_,
                "address": { "type": "string" }, "last_seen": { "type": "string", "format": "date-time" },
                "broker": { "type": "string", "description": "the phone-switch broker it was heard on" },
                "memory_bytes": u64_, "memory_budget": u64_, "load": { "type": "integer", "minimum": 0, "description": "calls in progress" } } } },
            "brokers": { "type": "array", "items": { "type": "object", "required": ["shard", "address", "state", "in_flight"], "properties": {
                "shard": { "type": "integer", "minimum": 0, "maximum": 65535 }, "address": { "type": "string" },
                "state": { "type": "string", "enum": ["up", "down"] }, "in_flight": u64_ } } } } },
    })
}

/// The document, serialized once (a clone shares the bytes).
pub fn document_bytes() -> bytes::Bytes {
    static DOC: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    DOC.get_or_init(|| bytes::Bytes::from(serde_json::to_vec(&document()).unwrap_or_default()))
        .clone()
}
