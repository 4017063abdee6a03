//! docs/PROTOCOL.md and the served OpenAPI document describe one contract:
//! every endpoint and every error code the prose lists is in the document,
//! with the same status, and the other way round.

use std::collections::BTreeSet;

use serde_json::Value;
use switchboard_api::openapi;
use switchboard_proto::ErrorCode;

fn protocol_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The rows of the first table after the heading `heading`, split into
/// cells (header and separator rows left out).
fn table(md: &str, heading: &str) -> Vec<Vec<String>> {
    let start = md
        .lines()
        .position(|l| l.trim() == heading)
        .unwrap_or_else(|| panic!("docs/PROTOCOL.md has no heading {heading:?}"));
    md.lines()
        .skip(start + 1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn unquote(cell: &str) -> &str {
    cell.trim_matches('`')
}

#[test]
fn endpoints_agree() {
    let md = protocol_md();
    let in_md: BTreeSet<(String, String)> = table(&md, "## Endpoints")
        .iter()
        .map(|row| {
            let (method, path) = unquote(&row[0])
                .split_once(' ')
                .unwrap_or_else(|| panic!("endpoint cell {:?} is not `METHOD /path`", row[0]));
            (method.to_ascii_lowercase(), path.to_string())
        })
        .collect();
    let doc = openapi::document();
    let mut in_doc = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                in_doc.insert((method.to_string(), path.clone()));
            }
        }
    }
    let only_md: Vec<_> = in_md.difference(&in_doc).collect();
    let only_doc: Vec<_> = in_doc.difference(&in_md).collect();
    assert!(
        only_md.is_empty() && only_doc.is_empty(),
        "docs/PROTOCOL.md only: {only_md:?}; OpenAPI only: {only_doc:?}"
    );
    let routes: BTreeSet<(String, String)> = openapi::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(routes, in_doc, "openapi::ROUTES and the document differ");
}

#[test]
fn error_codes_agree() {
    let md = protocol_md();
    let rows = table(&md, "## Errors");
    let mut in_md = BTreeSet::new();
    for row in &rows {
        let code = unquote(&row[0]);
        let status: u16 = row[1]
            .parse()
            .unwrap_or_else(|_| panic!("status of {code}: {:?}", row[1]));
        let retryable = match row[2].as_str() {
            "yes" => true,
            "no" => false,
            other => panic!("retryable of {code}: {other:?}"),
        };
        let known = ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == code)
            .unwrap_or_else(|| panic!("docs/PROTOCOL.md lists {code}, which the server does not have"));
        assert_eq!(known.status(), status, "status of {code}");
        assert_eq!(known.retryable(), retryable, "retryable of {code}");
        in_md.insert(code.to_string());
    }
    let doc = openapi::document();
    let in_doc: BTreeSet<String> = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
        ["code"]["enum"]
        .as_array()
        .expect("error code enum")
        .iter()
        .map(|v| v.as_str().expect("code").to_string())
        .collect();
    assert_eq!(
        in_md, in_doc,
        "error codes of docs/PROTOCOL.md and of the OpenAPI document"
    );
    let server: BTreeSet<String> = ErrorCode::ALL.iter().map(|c| c.as_str().to_string()).collect();
    assert_eq!(
        in_doc, server,
        "error codes of the OpenAPI document and of the server"
    );
    // every status an error can have is a documented response
    let responses = doc["components"]["responses"].as_object().expect("responses");
    for c in ErrorCode::ALL {
        let key = format!("E{}", c.status());
        let desc = responses
            .get(&key)
            .and_then(|r| r["description"].as_str())
            .unwrap_or_else(|| panic!("no shared response {key} for {c}"));
        assert!(desc.contains(c.as_str()), "{key} does not name {c}: {desc:?}");
    }
}

#[test]
fn operations_document_their_errors() {
    let doc = openapi::document();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let Some(responses) = op.get("responses").and_then(Value::as_object) else {
                continue;
            };
            let public = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty);
            if public {
                continue;
            }
            for status in ["400", "401", "403", "500", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} does not document {status}"
                );
            }
        }
    }
}
