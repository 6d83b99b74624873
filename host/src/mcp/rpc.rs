//! JSON-RPC 2.0 as the gateway speaks it: error codes, the responses it
//! makes, and the ids of requests a server sends the client.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use super::upstream::CallError;
use crate::proxy::ProxyBody;

/// JSON-RPC: the message is not JSON.
pub(super) const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request.
pub(super) const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: no such method.
pub(super) const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: bad parameters (an unknown tool, a bad cursor).
pub(super) const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC: the gateway could not get an answer.
pub(super) const INTERNAL_ERROR: i64 = -32603;
/// The session is unknown, expired or broken: initialize again.
pub(super) const SESSION_GONE: i64 = -32001;
/// The caller may not make this call (an `authorize` filter's denial; a
/// server-defined code of the range JSON-RPC 2.0 §5.1 reserves).
pub(super) const FORBIDDEN: i64 = -32003;
/// The `Mcp-Method` or `Mcp-Name` header does not say what the body does
/// (the 2026-07-28 revision's code for a header mismatch).
pub(super) const HEADER_MISMATCH: i64 = -32020;
/// A tool call over a `rate-limit` filter's limit (the call never reaches
/// a server; HTTP's 429, in the server-defined range of JSON-RPC 2.0 §5.1).
pub(super) const RATE_LIMITED: i64 = -32029;

/// A server's message bound for the client: a request's id becomes `T:ID`
/// (so that the client's response finds target `t`).
pub(super) fn outbound(t: usize, mut message: Value) -> Value {
    if message.get("method").is_some()
        && let Some(id) = message.get_mut("id")
    {
        *id = Value::String(format!("{t}:{id}"));
    }
    message
}

/// The target and original id of a gateway id `T:ID`.
pub(super) fn inbound(id: &Value) -> Option<(usize, Value)> {
    let (t, original) = id.as_str()?.split_once(':')?;
    Some((t.parse().ok()?, serde_json::from_str(original).ok()?))
}

/// The `result` of a JSON-RPC response; its `error` as a failure.
pub(super) fn result_of(response: Value) -> Result<Value, CallError> {
    if let Some(result) = response.get("result") {
        return Ok(result.clone());
    }
    let error = response.get("error").cloned().unwrap_or(Value::Null);
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    Err(CallError::Failed(format!(
        "JSON-RPC error {code}: {message}"
    )))
}

/// A POST body as one JSON-RPC message; else the JSON-RPC error code and
/// why (answered 400).
pub(super) fn parse(body: &[u8]) -> Result<Value, (i64, String)> {
    let message: Value =
        serde_json::from_slice(body).map_err(|e| (PARSE_ERROR, format!("not JSON: {e}")))?;
    if message.is_array() {
        return Err((
            INVALID_REQUEST,
            "JSON-RPC batches are not supported (MCP 2025-06-18 removed them)".into(),
        ));
    }
    if message.get("jsonrpc") != Some(&json!("2.0")) {
        return Err((INVALID_REQUEST, "not JSON-RPC 2.0".into()));
    }
    Ok(message)
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(super) fn json_response(status: StatusCode, value: &Value) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Local(Full::new(Bytes::from(value.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(super) fn rpc_result(id: &Value, result: Value) -> Response<ProxyBody> {
    json_response(
        StatusCode::OK,
        &json!({ "jsonrpc": "2.0", "id": id, "result": result }),
    )
}

/// A JSON-RPC error answer, with `data` when given.
pub(super) fn rpc_error_data(
    status: StatusCode,
    id: &Value,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Response<ProxyBody> {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    json_response(
        status,
        &json!({ "jsonrpc": "2.0", "id": id, "error": error }),
    )
}

pub(super) fn rpc_error(
    status: StatusCode,
    id: &Value,
    code: i64,
    message: &str,
) -> Response<ProxyBody> {
    rpc_error_data(status, id, code, message, None)
}

/// 404 with a JSON-RPC error: the client must initialize a new session.
pub(super) fn session_gone(id: &Value, why: &str) -> Response<ProxyBody> {
    rpc_error(
        StatusCode::NOT_FOUND,
        id,
        SESSION_GONE,
        &format!("session expired ({why}); initialize a new session"),
    )
}

pub(super) fn empty(status: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Local(Full::new(Bytes::new())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_request_id_goes_out_and_comes_back() {
        let out = outbound(
            2,
            json!({ "jsonrpc": "2.0", "id": "x:1", "method": "sampling/createMessage" }),
        );
        assert_eq!(out["id"], json!("2:\"x:1\""));
        assert_eq!(inbound(&out["id"]), Some((2, json!("x:1"))));
        let numeric = outbound(
            0,
            json!({ "jsonrpc": "2.0", "id": 7, "method": "roots/list" }),
        );
        assert_eq!(inbound(&numeric["id"]), Some((0, json!(7))));
        // Responses and notifications keep their ids.
        let response = outbound(1, json!({ "jsonrpc": "2.0", "id": 3, "result": {} }));
        assert_eq!(response["id"], json!(3));
        assert_eq!(inbound(&json!(5)), None);
    }
}
