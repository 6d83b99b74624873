//! Merging the targets' answers into one: `initialize`/`server/discover`
//! results, and the pages of the four lists with their names prefixed
//! (or not) and their cursors combined.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use crate::config::PrefixMode;

/// The key under a result's `_meta` where the gateway says how each target
/// fared.
pub const META_TARGETS: &str = "io.switchyard/targets";

/// Where the 2026-07-28 revision names the server: a `_meta` key.
const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// One of the lists a federation merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    /// `tools/list`.
    Tools,
    /// `prompts/list`.
    Prompts,
    /// `resources/list`.
    Resources,
    /// `resources/templates/list`.
    Templates,
}

impl ListKind {
    /// The list a method asks for.
    pub fn of(method: &str) -> Option<Self> {
        Some(match method {
            "tools/list" => Self::Tools,
            "prompts/list" => Self::Prompts,
            "resources/list" => Self::Resources,
            "resources/templates/list" => Self::Templates,
            _ => return None,
        })
    }

    /// Its method.
    pub fn method(self) -> &'static str {
        match self {
            Self::Tools => "tools/list",
            Self::Prompts => "prompts/list",
            Self::Resources => "resources/list",
            Self::Templates => "resources/templates/list",
        }
    }

    /// The result field holding the items.
    pub fn field(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::Templates => "resourceTemplates",
        }
    }

    /// The item field that identifies an item.
    pub fn key(self) -> &'static str {
        match self {
            Self::Tools | Self::Prompts => "name",
            Self::Resources => "uri",
            Self::Templates => "uriTemplate",
        }
    }

    /// Whether items are renamed with their target's prefix (tools and
    /// prompts; resources are identified by URIs, which are global).
    pub fn renamed(self) -> bool {
        matches!(self, Self::Tools | Self::Prompts)
    }
}

/// How names are exposed.
pub struct Naming<'a> {
    /// When a prefix is added.
    pub mode: PrefixMode,
    /// Between target name and item name.
    pub separator: &'a str,
    /// The targets' names, by index.
    pub targets: &'a [String],
}

impl Naming<'_> {
    /// `name` of target `target` with its prefix.
    pub fn prefixed(&self, target: usize, name: &str) -> String {
        format!("{}{}{name}", self.targets[target], self.separator)
    }

    /// The target and unprefixed name `exposed` stands for when it carries
    /// a target's prefix.
    pub fn split<'n>(&self, exposed: &'n str) -> Option<(usize, &'n str)> {
        self.targets.iter().enumerate().find_map(|(i, t)| {
            exposed
                .strip_prefix(t.as_str())?
                .strip_prefix(self.separator)
                .filter(|rest| !rest.is_empty())
                .map(|rest| (i, rest))
        })
    }
}

/// One item of a merged list: what the client sees and whose it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The name (or URI) the client sees.
    pub exposed: String,
    /// The target that listed it.
    pub target: usize,
    /// Its name (or URI) at the target.
    pub original: String,
    /// For a tool: whether its annotations say a call may be repeated
    /// (`readOnlyHint` or `idempotentHint`).
    pub idempotent: bool,
}

/// A merged list.
pub struct MergedList {
    /// The result sent to the client.
    pub result: Value,
    /// Its items.
    pub entries: Vec<Entry>,
    /// Names left out as ambiguous (`prefix = "never"`).
    pub dropped: Vec<String>,
}

/// Merges the list `kind` of each target that answered (`pages`: target,
/// result; their items are moved into the merged list) into one result: every item, named by `naming` (a name is in
/// conflict when another target lists it in this answer or when
/// `elsewhere(target, name)` says another target was seen listing it);
/// `nextCursor` combines the targets' cursors; the other fields merge as
/// [`merge_fields`] says; `failed` targets are named in `_meta`.
pub fn merge_list(
    kind: ListKind,
    mut pages: Vec<(usize, Value)>,
    failed: &[(usize, String)],
    naming: &Naming<'_>,
    elsewhere: impl Fn(usize, &str) -> bool,
) -> MergedList {
    let (field, key) = (kind.field(), kind.key());
    // Each page's items, taken out (moved, not copied); the rest of the
    // page merges as fields.
    let lists: Vec<(usize, Vec<Value>)> = pages
        .iter_mut()
        .map(|(t, page)| match page.get_mut(field).map(Value::take) {
            Some(Value::Array(items)) => (*t, items),
            _ => (*t, Vec::new()),
        })
        .collect();
    let name_of = |item: &Value| item.get(key).and_then(Value::as_str).map(str::to_owned);
    // How many targets list each name in this answer.
    let mut listed: HashMap<String, usize> = HashMap::new();
    for (_, items) in &lists {
        for name in items.iter().filter_map(name_of) {
            *listed.entry(name).or_default() += 1;
        }
    }
    let total = lists.iter().map(|(_, items)| items.len()).sum();
    let mut merged_items = Vec::with_capacity(total);
    let mut entries = Vec::with_capacity(total);
    let mut dropped: Vec<String> = Vec::new();
    for (target, items) in lists {
        for mut item in items {
            let Some(name) = name_of(&item) else {
                continue;
            };
            let exposed = if kind.renamed() {
                let conflict =
                    listed.get(&name).is_some_and(|&n| n > 1) || elsewhere(target, &name);
                match (naming.mode, conflict) {
                    (PrefixMode::Always, _) | (PrefixMode::OnConflict, true) => {
                        naming.prefixed(target, &name)
                    }
                    (PrefixMode::Never, true) => {
                        if !dropped.contains(&name) {
                            dropped.push(name);
                        }
                        continue;
                    }
                    (_, false) => name.clone(),
                }
            } else {
                name.clone()
            };
            let hint = |h: &str| {
                item.get("annotations")
                    .and_then(|a| a.get(h))
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            };
            entries.push(Entry {
                idempotent: hint("readOnlyHint") || hint("idempotentHint"),
                target,
                original: name,
                exposed: exposed.clone(),
            });
            item[key] = Value::String(exposed);
            merged_items.push(item);
        }
    }
    let mut result = merge_fields(&pages, failed, naming.targets, &[field, "nextCursor"]);
    let cursors: BTreeMap<&str, &str> = pages
        .iter()
        .filter_map(|(t, r)| {
            let cursor = r.get("nextCursor").and_then(Value::as_str)?;
            Some((naming.targets[*t].as_str(), cursor))
        })
        .collect();
    result.insert(field.into(), Value::Array(merged_items));
    if !cursors.is_empty() {
        result.insert("nextCursor".into(), Value::String(encode_cursor(&cursors)));
    }
    MergedList {
        result: Value::Object(result),
        entries,
        dropped,
    }
}

/// The fields of the targets' results other than `skip`, merged: `_meta`
/// objects joined (the first target's key wins) with [`META_TARGETS`]
/// saying how each target fared; `ttlMs` the smallest; `cacheScope` and
/// `resultType` kept when every target agrees (a `cacheScope` in dispute
/// is left out: nothing may be cached); any other field the first
/// target's.
pub fn merge_fields(
    results: &[(usize, Value)],
    failed: &[(usize, String)],
    names: &[String],
    skip: &[&str],
) -> Map<String, Value> {
    let mut merged = Map::new();
    let mut meta = Map::new();
    let mut ttl: Option<u64> = None;
    let mut agreed: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for (_, result) in results {
        let Some(fields) = result.as_object() else {
            continue;
        };
        for (key, value) in fields {
            match key.as_str() {
                k if skip.contains(&k) => {}
                "_meta" => {
                    for (k, v) in value.as_object().into_iter().flatten() {
                        meta.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                "ttlMs" => {
                    if let Some(t) = value.as_u64() {
                        ttl = Some(ttl.map_or(t, |m| m.min(t)));
                    }
                }
                k @ ("cacheScope" | "resultType") => agreed.entry(k).or_default().push(value),
                _ => {
                    merged.entry(key.clone()).or_insert_with(|| value.clone());
                }
            }
        }
    }
    for (key, values) in agreed {
        // Every target must have said the same.
        if values.len() == results.len() && values.windows(2).all(|w| w[0] == w[1]) {
            merged.insert(key.into(), values[0].clone());
        }
    }
    if let Some(ttl) = ttl {
        merged.insert("ttlMs".into(), json!(ttl));
    }
    let mut targets = Map::new();
    for (t, _) in results {
        targets.insert(names[*t].clone(), json!({ "ok": true }));
    }
    for (t, why) in failed {
        targets.insert(names[*t].clone(), json!({ "ok": false, "error": why }));
    }
    meta.insert(META_TARGETS.into(), Value::Object(targets));
    merged.insert("_meta".into(), Value::Object(meta));
    merged
}

/// Merges the `initialize` (or `server/discover`) results of the targets
/// that answered: the lowest protocol revision, the union of the
/// capabilities, the `supportedVersions` every target supports (2026-07-28),
/// the instructions of each target under its name, the gateway as
/// `serverInfo` (a single target's own when it is alone).
pub fn merge_initialize(
    results: &[(usize, Value)],
    failed: &[(usize, String)],
    names: &[String],
) -> Value {
    let skip = [
        "protocolVersion",
        "capabilities",
        "serverInfo",
        "instructions",
    ];
    let mut merged = merge_fields(results, failed, names, &skip);
    let lowest = results
        .iter()
        .filter_map(|(_, r)| r.get("protocolVersion").and_then(Value::as_str))
        .min();
    if let Some(version) = lowest {
        merged.insert("protocolVersion".into(), json!(version));
    }
    let mut capabilities = Value::Object(Map::new());
    for (_, r) in results {
        if let Some(c) = r.get("capabilities") {
            union(&mut capabilities, c);
        }
    }
    merged.insert("capabilities".into(), capabilities);
    let gateway = || json!({ "name": "switchyard", "title": "Switchyard MCP gateway", "version": env!("CARGO_PKG_VERSION") });
    match (names.len(), results.first()) {
        (1, Some((_, r))) => {
            if let Some(info) = r.get("serverInfo") {
                merged.insert("serverInfo".into(), info.clone());
            }
        }
        _ => {
            if results.iter().any(|(_, r)| r.get("serverInfo").is_some()) {
                merged.insert("serverInfo".into(), gateway());
            }
            // 2026-07-28 stamps it in `_meta`.
            if let Some(meta) = merged.get_mut("_meta").and_then(Value::as_object_mut)
                && meta.contains_key(SERVER_INFO)
            {
                meta.insert(SERVER_INFO.into(), gateway());
            }
        }
    }
    let instructions: Vec<String> = results
        .iter()
        .filter_map(|(t, r)| {
            let text = r.get("instructions").and_then(Value::as_str)?;
            Some(if names.len() == 1 {
                text.to_string()
            } else {
                format!("## {}\n{text}", names[*t])
            })
        })
        .collect();
    if !instructions.is_empty() {
        merged.insert("instructions".into(), json!(instructions.join("\n\n")));
    }
    Value::Object(merged)
}

/// `into` ∪ `from`: objects merged key by key, `true` wins over `false`,
/// otherwise what `into` has.
fn union(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) => union(existing, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (a @ Value::Bool(false), Value::Bool(true)) => *a = Value::Bool(true),
        _ => {}
    }
}

/// The composite cursor of the targets' cursors (by target name).
pub fn encode_cursor(cursors: &BTreeMap<&str, &str>) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursors).expect("strings serialize"))
}

/// The targets' cursors in a composite cursor; `None` when it is not one.
pub fn decode_cursor(cursor: &str) -> Option<BTreeMap<String, String>> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["alpha".into(), "beta".into()]
    }

    fn tools(list: &[&str], cursor: Option<&str>) -> Value {
        let tools: Vec<Value> = list.iter().map(|n| json!({ "name": n })).collect();
        let mut result = json!({ "tools": tools });
        if let Some(c) = cursor {
            result["nextCursor"] = json!(c);
        }
        result
    }

    fn exposed(merged: &MergedList) -> Vec<&str> {
        merged.entries.iter().map(|e| e.exposed.as_str()).collect()
    }

    #[test]
    fn names_are_prefixed_as_the_mode_says() {
        let names = names();
        let pages = [
            (0, tools(&["echo", "a"], None)),
            (1, tools(&["echo", "b"], None)),
        ];
        let naming = |mode| Naming {
            mode,
            separator: "__",
            targets: &names,
        };
        let never_elsewhere = |_: usize, _: &str| false;
        let on_conflict = merge_list(
            ListKind::Tools,
            pages.to_vec(),
            &[],
            &naming(PrefixMode::OnConflict),
            never_elsewhere,
        );
        assert_eq!(
            exposed(&on_conflict),
            ["alpha__echo", "a", "beta__echo", "b"]
        );
        let always = merge_list(
            ListKind::Tools,
            pages.to_vec(),
            &[],
            &naming(PrefixMode::Always),
            never_elsewhere,
        );
        assert_eq!(
            exposed(&always),
            ["alpha__echo", "alpha__a", "beta__echo", "beta__b"]
        );
        let never = merge_list(
            ListKind::Tools,
            pages.to_vec(),
            &[],
            &naming(PrefixMode::Never),
            never_elsewhere,
        );
        assert_eq!(exposed(&never), ["a", "b"]);
        assert_eq!(never.dropped, ["echo"]);
        // A name another target was seen listing before is in conflict too.
        let seen = merge_list(
            ListKind::Tools,
            vec![(0, tools(&["a"], None))],
            &[],
            &naming(PrefixMode::OnConflict),
            |t, n| t == 0 && n == "a",
        );
        assert_eq!(exposed(&seen), ["alpha__a"]);
        assert_eq!(
            naming(PrefixMode::Always).split("beta__echo"),
            Some((1, "echo"))
        );
        assert_eq!(naming(PrefixMode::Always).split("gamma__echo"), None);
        assert_eq!(naming(PrefixMode::Always).split("alpha__"), None);
    }

    #[test]
    fn cursors_and_fields_merge() {
        let names = names();
        let naming = Naming {
            mode: PrefixMode::OnConflict,
            separator: "__",
            targets: &names,
        };
        let mut a = tools(&["x"], Some("a-2"));
        a["ttlMs"] = json!(5000);
        a["cacheScope"] = json!("public");
        a["_meta"] = json!({ "k": 1 });
        let mut b = tools(&["y"], None);
        b["ttlMs"] = json!(1000);
        b["cacheScope"] = json!("public");
        let merged = merge_list(
            ListKind::Tools,
            vec![(0, a), (1, b)],
            &[],
            &naming,
            |_, _| false,
        );
        let r = &merged.result;
        assert_eq!(r["ttlMs"], json!(1000));
        assert_eq!(r["cacheScope"], json!("public"));
        assert_eq!(r["_meta"]["k"], json!(1));
        assert_eq!(r["_meta"][META_TARGETS]["beta"]["ok"], json!(true));
        let cursor = decode_cursor(r["nextCursor"].as_str().unwrap()).unwrap();
        assert_eq!(cursor, BTreeMap::from([("alpha".into(), "a-2".into())]));
        assert_eq!(decode_cursor("not a cursor!"), None);
        // Scopes in dispute are dropped; a failing target is named.
        let (mut c, mut d) = (tools(&[], None), tools(&[], None));
        c["cacheScope"] = json!("public");
        d["cacheScope"] = json!("private");
        let merged = merge_list(
            ListKind::Tools,
            vec![(0, c)],
            &[(1, "down".into())],
            &naming,
            |_, _| false,
        );
        assert_eq!(
            merged.result["_meta"][META_TARGETS]["beta"]["error"],
            json!("down")
        );
        let fields = merge_fields(&[(0, tools(&[], None)), (1, d)], &[], &names, &[]);
        assert!(!fields.contains_key("cacheScope"));
    }

    #[test]
    fn initialize_results_merge_to_the_lowest_revision_and_the_union() {
        let names = names();
        let a = json!({
            "protocolVersion": "2025-06-18",
            "capabilities": { "tools": { "listChanged": false } },
            "serverInfo": { "name": "a", "version": "1" },
            "instructions": "use a",
        });
        let b = json!({
            "protocolVersion": "2025-03-26",
            "capabilities": { "tools": { "listChanged": true }, "prompts": {} },
            "serverInfo": { "name": "b", "version": "1" },
        });
        let merged = merge_initialize(&[(0, a.clone()), (1, b)], &[], &names);
        assert_eq!(merged["protocolVersion"], json!("2025-03-26"));
        assert_eq!(
            merged["capabilities"],
            json!({ "tools": { "listChanged": true }, "prompts": {} })
        );
        assert_eq!(merged["serverInfo"]["name"], json!("switchyard"));
        assert_eq!(merged["instructions"], json!("## alpha\nuse a"));
        let alone = merge_initialize(&[(0, a)], &[], &names[..1]);
        assert_eq!(alone["serverInfo"]["name"], json!("a"));
        assert_eq!(alone["instructions"], json!("use a"));
    }
}
