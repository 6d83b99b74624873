//! The lists: merged from every target, and who owns each name.

use std::collections::BTreeMap;

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::merge::{self, Entry, ListKind, Naming};
use super::{Client, INVALID_PARAMS, McpRoute, rpc_error, rpc_result, session_gone};
use crate::config::PrefixMode;
use crate::events::{EventKind, HealthEvent, Severity};
use crate::proxy::ProxyBody;

impl McpRoute {
    /// A list: the targets asked (those of the cursor, for a next page),
    /// the pages merged.
    pub(super) async fn list(
        &self,
        client: &Client<'_>,
        kind: ListKind,
        id: &Value,
        message: &Value,
    ) -> Response<ProxyBody> {
        let cursors = match message.pointer("/params/cursor").and_then(Value::as_str) {
            None => None,
            Some(c) => match merge::decode_cursor(c) {
                Some(cursors) => Some(cursors),
                None => return rpc_error(StatusCode::OK, id, INVALID_PARAMS, "invalid cursor"),
            },
        };
        // Whether a name is in conflict depends on every target's list, not
        // just the page asked for: the first list of its kind reads every
        // page first (names then stay the same from page to page).
        if self.targets.len() > 1 && self.prefix != PrefixMode::Always && !self.learned(kind) {
            self.learn(client, kind).await;
        }
        let targets = self.page_targets(client, cursors.as_ref());
        let message_for = |t: usize| {
            let mut m = message.clone();
            let cursor = cursors.as_ref().and_then(|c| c.get(&self.names[t]));
            match (m.get_mut("params").and_then(Value::as_object_mut), cursor) {
                (Some(params), Some(c)) => {
                    params.insert("cursor".into(), json!(c));
                }
                (Some(params), None) => {
                    params.remove("cursor");
                }
                (None, Some(c)) => m["params"] = json!({ "cursor": c }),
                (None, None) => {}
            }
            m
        };
        let (pages, failed, gone) = self.fan_out(client, &targets, message_for).await;
        if let Some(why) = gone {
            return session_gone(id, &why);
        }
        if let Some(response) = self.refuse(id, &failed, pages.is_empty() && !targets.is_empty()) {
            return response;
        }
        let mut merged = self.merge(kind, pages, &failed);
        client.guards.hide_forbidden(kind, &mut merged.result);
        rpc_result(id, merged.result)
    }

    /// The targets asked for a page: those of the session, or of a
    /// composite cursor's.
    fn page_targets(
        &self,
        client: &Client<'_>,
        cursors: Option<&BTreeMap<String, String>>,
    ) -> Vec<usize> {
        self.session_targets(client)
            .into_iter()
            .filter(|&t| cursors.is_none_or(|c| c.contains_key(&self.names[t])))
            .collect()
    }

    /// Merges the pages of `kind` and learns their owners.
    pub(super) fn merge(
        &self,
        kind: ListKind,
        pages: Vec<(usize, Value)>,
        failed: &[(usize, String)],
    ) -> merge::MergedList {
        let naming = self.naming();
        let merged = {
            let catalog = self.catalog.read().unwrap_or_else(|p| p.into_inner());
            merge::merge_list(kind, pages, failed, &naming, |t, name| {
                catalog
                    .listed_by
                    .get(&(kind, name.to_string()))
                    .is_some_and(|by| by.iter().any(|&other| other != t))
            })
        };
        let mut catalog = self.catalog.write().unwrap_or_else(|p| p.into_inner());
        for entry in &merged.entries {
            let by = catalog
                .listed_by
                .entry((kind, entry.original.clone()))
                .or_default();
            if !by.contains(&entry.target) {
                by.push(entry.target);
            }
            // A name exposed differently before (its conflict was not yet
            // known) is forgotten.
            if let Some(before) = catalog.exposed.insert(
                (kind, entry.target, entry.original.clone()),
                entry.exposed.clone(),
            ) && before != entry.exposed
            {
                catalog.entries.remove(&(kind, before));
            }
            catalog
                .entries
                .insert((kind, entry.exposed.clone()), entry.clone());
        }
        drop(catalog);
        for name in &merged.dropped {
            self.reporting.events.publish(HealthEvent::new(
                &format!("route {}", self.index),
                None,
                EventKind::McpNameConflict,
                Severity::Warning,
                format!(
                    "route {}: `{name}` is listed by more than one MCP target and prefix = \"never\": left out",
                    self.index
                ),
            ));
        }
        merged
    }

    pub(super) fn naming(&self) -> Naming<'_> {
        Naming {
            mode: self.prefix,
            separator: &self.separator,
            targets: &self.names,
        }
    }

    /// The owner of `name` in the list `kind`: learned from the lists, or
    /// read from its prefix, or learned by listing every page anew.
    pub(super) async fn owner(
        &self,
        client: &Client<'_>,
        kind: ListKind,
        name: &str,
    ) -> Option<Entry> {
        if let Some(entry) = self.known_owner(kind, name) {
            return Some(entry);
        }
        // The client did not list (or the list changed since): learn, so
        // that the owner and the tool's annotations are known.
        self.learn(client, kind).await;
        if let Some(entry) = self.known_owner(kind, name) {
            return Some(entry);
        }
        if self.targets.len() == 1 {
            return Some(Entry {
                exposed: name.to_string(),
                target: 0,
                original: name.to_string(),
                idempotent: false,
            });
        }
        self.known_owner(kind, name)
            .or_else(|| match (self.prefix, self.naming().split(name)) {
                (PrefixMode::Never, _) | (_, None) => None,
                (_, Some((target, original))) => Some(Entry {
                    exposed: name.to_string(),
                    target,
                    original: original.to_string(),
                    idempotent: false,
                }),
            })
    }

    /// The owner the catalog knows; for a resource, a template's too (the
    /// longest literal start of a template the URI begins with).
    pub(super) fn known_owner(&self, kind: ListKind, name: &str) -> Option<Entry> {
        let catalog = self.catalog.read().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = catalog.entries.get(&(kind, name.to_string())) {
            return Some(entry.clone());
        }
        if kind != ListKind::Resources {
            return None;
        }
        catalog
            .entries
            .iter()
            .filter(|((k, _), _)| *k == ListKind::Templates)
            .filter_map(|((_, template), entry)| {
                let literal = template.split('{').next().unwrap_or("");
                (!literal.is_empty() && name.starts_with(literal)).then_some((literal.len(), entry))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, entry)| Entry {
                exposed: name.to_string(),
                original: name.to_string(),
                ..entry.clone()
            })
    }

    /// Whether the list `kind` was read in full.
    pub(super) fn learned(&self, kind: ListKind) -> bool {
        let catalog = self.catalog.read().unwrap_or_else(|p| p.into_inner());
        catalog.learned.contains(&kind)
    }

    /// Lists every page of `kind` (and, for resources, the templates) so
    /// that the catalog knows every name.
    pub(super) async fn learn(&self, client: &Client<'_>, kind: ListKind) {
        let kinds: &[ListKind] = if kind == ListKind::Resources {
            &[ListKind::Resources, ListKind::Templates]
        } else {
            std::slice::from_ref(&kind)
        };
        for &kind in kinds {
            let mut cursors: Option<BTreeMap<String, String>> = None;
            // At most 100 pages: a server that never stops paginating does
            // not hold the call forever.
            for _ in 0..100 {
                let targets = self.page_targets(client, cursors.as_ref());
                let (pages, failed, _) = self
                    .fan_out(client, &targets, |t| {
                        let cursor = cursors.as_ref().and_then(|c| c.get(&self.names[t]));
                        let params = cursor.map_or_else(|| json!({}), |c| json!({ "cursor": c }));
                        json!({ "jsonrpc": "2.0", "id": 0, "method": kind.method(), "params": params })
                    })
                    .await;
                let merged = self.merge(kind, pages, &failed);
                cursors = merged
                    .result
                    .get("nextCursor")
                    .and_then(Value::as_str)
                    .and_then(merge::decode_cursor);
                if cursors.is_none() {
                    break;
                }
            }
            let mut catalog = self.catalog.write().unwrap_or_else(|p| p.into_inner());
            if !catalog.learned.contains(&kind) {
                catalog.learned.push(kind);
            }
        }
    }
}
