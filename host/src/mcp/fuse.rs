//! Result fusion of a tool's calls over several instances.

use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

use super::guard::ResultGuard;
use super::rpc::json_response;
use super::session::Pinned;
use super::upstream::{Call, CallError, Via};
use super::{Client, INTERNAL_ERROR, McpRoute, rpc_error};
use crate::fusion::{Answer, Builtin, Judge, Outcome, Quality, Resolve, Source, UpstreamResponse};
use crate::proxy::ProxyBody;

impl McpRoute {
    /// A `tools/call` asked of `count` instances of target `t`'s pool at
    /// once, each in a session of its own unless it holds the client's; the
    /// results resolved by `resolver`, the fused result judged by `guard`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fused(
        &self,
        client: &Client<'_>,
        t: usize,
        id: &Value,
        message: &Value,
        count: usize,
        resolver: &Builtin,
        guard: Option<Arc<ResultGuard>>,
    ) -> Response<ProxyBody> {
        let target = &self.targets[t];
        let pool = &target.pool;
        let ranking = crate::proxy::rank(
            pool,
            client.caller.parts,
            client.caller.host,
            client.caller.path_and_query,
            client.caller.peer,
            &crate::balance::Affinity::default(),
        );
        let mut asked_ids = Vec::with_capacity(count);
        while asked_ids.len() < count {
            match pool.next(&ranking, &asked_ids, None) {
                Some((instance, _admission)) => asked_ids.push(instance),
                None => break,
            }
        }
        let pinned = client
            .upstream(&self.names[t])
            .ok()
            .flatten()
            .and_then(|u| u.pinned.clone());
        let protocol = client
            .upstream(&self.names[t])
            .ok()
            .flatten()
            .map(|u| u.protocol.clone())
            .or_else(|| client.protocol.clone());
        let sources: Vec<Source> = asked_ids
            .iter()
            .enumerate()
            .map(|(i, &instance)| Source {
                name: pool
                    .members()
                    .get(instance)
                    .map_or_else(|| instance.to_string(), |e| e.url.clone()),
                priority: i as u32,
                weight: pool
                    .members()
                    .get(instance)
                    .map_or(1.0, |e| f64::from(e.weight())),
            })
            .collect();
        let calls = asked_ids.iter().enumerate().map(|(i, &instance)| {
            let holds = pinned
                .as_ref()
                .filter(|p| p.instance == sources[i].name)
                .cloned();
            let protocol = protocol.clone();
            async move {
                let started = Instant::now();
                let outcome = self
                    .call_instance(client, t, instance, holds, protocol, id, message)
                    .await;
                (i, started.elapsed().as_micros() as u64, outcome)
            }
        });
        let judging = resolver.judging();
        let judge_with = Judge {
            accept_status: 200..=200,
            needs_json: true,
            schema: None,
            vote: judging.vote,
        };
        let answers: Vec<Answer> = join_all(calls)
            .await
            .into_iter()
            .map(|(i, latency, outcome)| crate::fusion::judge(&judge_with, i, latency, outcome))
            .collect();
        let asked: Vec<usize> = (0..sources.len()).collect();
        let facts = crate::policy::RequestContext {
            method: &client.caller.parts.method,
            authority: client.caller.host,
            path: client.caller.path_and_query.as_str(),
            headers: &client.caller.parts.headers,
            client_addr: client.caller.peer,
        };
        let quality = Quality::new(sources.len());
        match resolver.fuse(&facts, &sources, &asked, &answers, &quality) {
            Ok(Ok(fused)) => {
                let mut result: Value = serde_json::from_slice(&fused.body).unwrap_or(Value::Null);
                let used: Vec<&str> = fused
                    .used
                    .iter()
                    .map(|&i| sources[i].name.as_str())
                    .collect();
                if let Some(object) = result.as_object_mut() {
                    let meta = object.entry("_meta").or_insert_with(|| json!({}));
                    meta["io.switchyard/fusion"] = json!({
                        "target": self.names[t],
                        "asked": sources.iter().map(|s| &s.name).collect::<Vec<_>>(),
                        "used": used,
                        "agreement": fused.agreement,
                    });
                }
                self.record_tool(t, message, None);
                let mut answer = json!({ "jsonrpc": "2.0", "id": id, "result": result });
                if let Some(guard) = guard {
                    guard.apply(&mut answer);
                }
                json_response(StatusCode::OK, &answer)
            }
            Ok(Err(error)) => {
                let error = CallError::Failed(format!("no fused result: {error}"));
                self.record_tool(t, message, Some(&error));
                rpc_error(
                    StatusCode::OK,
                    id,
                    INTERNAL_ERROR,
                    &format!("target `{}`: {error}", self.names[t]),
                )
            }
            Err(fault) => rpc_error(StatusCode::OK, id, INTERNAL_ERROR, &format!("{fault:?}")),
        }
    }

    /// One fused call on one instance: in the client's session when the
    /// instance holds it, else in a session opened for the call (ended
    /// after it) or none when the server keeps none. Its result (without
    /// `_meta`) as the answer the resolver judges.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn call_instance(
        &self,
        client: &Client<'_>,
        t: usize,
        instance: crate::balance::EndpointId,
        holds: Option<Pinned>,
        protocol: Option<String>,
        id: &Value,
        message: &Value,
    ) -> Outcome {
        let via = Via::Instance(instance);
        let mut opened: Option<String> = None;
        let session = match holds {
            Some(p) => Some(p.session),
            None => {
                let hello = json!({
                    "jsonrpc": "2.0", "id": 0, "method": "initialize",
                    "params": {
                        "protocolVersion": protocol.as_deref().unwrap_or(crate::health::mcp::PROTOCOL_VERSION),
                        "capabilities": {},
                        "clientInfo": { "name": "switchyard-fusion", "version": env!("CARGO_PKG_VERSION") },
                    },
                });
                let call = Call::post(&hello);
                match self.ask(client, t, via, &call, &json!(0)).await {
                    Ok((_, sent)) => {
                        opened = sent.session.clone();
                        if let Some(s) = &opened {
                            let note =
                                json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
                            let call = Call {
                                session: Some(s),
                                protocol: protocol.as_deref(),
                                ..Call::post(&note)
                            };
                            let _ = client
                                .caller
                                .send(&self.targets[t], via, &call, &mut Vec::new())
                                .await;
                        }
                        opened.clone()
                    }
                    Err(e) => return Outcome::Error(e.to_string()),
                }
            }
        };
        let call = Call {
            session: session.as_deref(),
            protocol: protocol.as_deref(),
            ..Call::post(message)
        };
        let outcome = match self.ask(client, t, via, &call, id).await {
            Ok((response, _)) => match response.get("result") {
                Some(result) if result.get("isError") != Some(&Value::Bool(true)) => {
                    let mut result = result.clone();
                    if let Some(o) = result.as_object_mut() {
                        o.remove("_meta");
                    }
                    Outcome::Response(UpstreamResponse {
                        status: StatusCode::OK,
                        headers: HeaderMap::new(),
                        body: Bytes::from(result.to_string()),
                    })
                }
                _ => Outcome::Error(format!("the tool failed: {response}")),
            },
            Err(e) => Outcome::Error(e.to_string()),
        };
        if let Some(s) = &opened {
            let call = Call {
                session: Some(s),
                protocol: protocol.as_deref(),
                ..Call::new(Method::DELETE, Bytes::new())
            };
            let _ = client
                .caller
                .send(&self.targets[t], via, &call, &mut Vec::new())
                .await;
        }
        outcome
    }
}
