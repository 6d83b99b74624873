//! Event streams to the client: a target's answer relayed as it comes, and
//! the session's notification stream merged from the targets'.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};

use super::guard::ResultGuard;
use super::upstream::{Call, CallError, Reply, Sent, Stream, Via};
use super::{Client, INTERNAL_ERROR, INVALID_REQUEST, McpRoute, outbound, rpc_error, session_gone};
use crate::proxy::ProxyBody;
use crate::sse;

impl McpRoute {
    /// Relays target `t`'s event stream to the client as it comes (server
    /// requests renamed `T:ID`, event ids `T.ID`), until the response to
    /// `until` (a POST's) or the end of the stream.
    pub(super) fn stream_back(
        &self,
        t: usize,
        held: Vec<sse::Event>,
        stream: Option<Stream>,
        until: Option<Value>,
        guard: Option<Arc<ResultGuard>>,
    ) -> Response<ProxyBody> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let target = self.names[t].clone();
        tokio::spawn(async move {
            // Relays one event; whether the stream is over for the client.
            let relay = |event: sse::Event| {
                let tx = &tx;
                let until = &until;
                let guard = &guard;
                async move {
                    let Ok(mut message) = serde_json::from_str::<Value>(&event.data) else {
                        return false;
                    };
                    let done = until.as_ref().is_some_and(|id| {
                        message.get("method").is_none() && message.get("id") == Some(id)
                    });
                    if let (true, Some(guard)) = (done, guard) {
                        guard.apply(&mut message);
                    }
                    let message = outbound(t, message);
                    let event_id = event.id.map(|i| format!("{t}.{i}"));
                    let chunk = sse::encode(event_id.as_deref(), &message.to_string());
                    tx.send(Bytes::from(chunk)).await.is_err() || done
                }
            };
            for event in held {
                if relay(event).await {
                    return;
                }
            }
            let Some(mut stream) = stream else {
                return;
            };
            loop {
                let next = tokio::select! {
                    next = stream.next() => next,
                    () = tx.closed() => return,
                };
                match next {
                    Ok(Some(event)) => {
                        if relay(event).await {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        if let Some(id) = &until {
                            let text = format!("target `{target}`: {e}");
                            let error = json!({ "jsonrpc": "2.0", "id": id, "error": { "code": INTERNAL_ERROR, "message": text } });
                            let _ = tx
                                .send(Bytes::from(sse::encode(None, &error.to_string())))
                                .await;
                        }
                        return;
                    }
                }
            }
        });
        event_stream(rx)
    }

    /// GET: the session's notification stream, merged from the targets'.
    pub(super) async fn notifications(
        &self,
        client: &Client<'_>,
        last_event_id: Option<&str>,
    ) -> Response<ProxyBody> {
        let Some(session) = &client.session else {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                INVALID_REQUEST,
                "GET needs an Mcp-Session-Id",
            );
        };
        // `T.ID`: the stream of target T resumes after its event ID.
        let resume = last_event_id
            .and_then(|l| l.split_once('.'))
            .and_then(|(t, rest)| Some((t.parse::<usize>().ok()?, rest)));
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let mut opened = 0;
        for upstream in &session.upstreams {
            let Some(t) = self.names.iter().position(|n| *n == upstream.target) else {
                continue;
            };
            let Some(pinned) = &upstream.pinned else {
                continue;
            };
            let call = Call {
                session: Some(&pinned.session),
                protocol: Some(&upstream.protocol),
                last_event_id: resume.filter(|(r, _)| *r == t).map(|(_, id)| id),
                ..Call::new(Method::GET, Bytes::new())
            };
            match client
                .caller
                .send(
                    &self.targets[t],
                    Via::Pinned(pinned),
                    &call,
                    &mut Vec::new(),
                )
                .await
            {
                Ok(Sent {
                    reply: Reply::Stream(mut stream),
                    ..
                }) => {
                    opened += 1;
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        loop {
                            let event = tokio::select! {
                                next = stream.next() => match next {
                                    Ok(Some(event)) => event,
                                    _ => return,
                                },
                                () = tx.closed() => return,
                            };
                            let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
                                continue;
                            };
                            let event_id = event.id.map(|i| format!("{t}.{i}"));
                            let chunk =
                                sse::encode(event_id.as_deref(), &outbound(t, message).to_string());
                            if tx.send(Bytes::from(chunk)).await.is_err() {
                                return;
                            }
                        }
                    });
                }
                Err(CallError::Gone(why)) => return session_gone(&Value::Null, &why),
                Ok(_) | Err(_) => {}
            }
        }
        if opened == 0 {
            let mut response = rpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                &Value::Null,
                INVALID_REQUEST,
                "no target offers a notification stream",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
            return response;
        }
        event_stream(rx)
    }
}

/// Reads `stream` until the client must see it: the response to `id`
/// (then the stream is complete) or a request to the client (then it
/// continues); the events read, and the rest of the stream.
///
/// # Errors
/// The stream failed or ended first.
pub(super) async fn hold(
    mut stream: Stream,
    id: &Value,
) -> Result<(Vec<sse::Event>, Option<Stream>), CallError> {
    let mut held = Vec::new();
    while let Some(event) = stream.next().await? {
        let message = serde_json::from_str::<Value>(&event.data).unwrap_or(Value::Null);
        let method = message.get("method").is_some();
        let answered = !method && message.get("id") == Some(id);
        let asks = method && message.get("id").is_some();
        held.push(event);
        if answered {
            return Ok((held, None));
        }
        if asks {
            return Ok((held, Some(stream)));
        }
    }
    Err(CallError::Failed(
        "the event stream ended without the response".into(),
    ))
}

fn event_stream(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Channel(rx));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
