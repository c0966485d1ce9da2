//! Server-side apply as the real API server does it: field ownership per manager in
//! `metadata.managedFields` (FieldsV1), the merge of the live object with a manager's
//! applied configuration, removal of what a manager stopped applying, conflicts, list
//! merging by the OpenAPI list extensions, and the server's defaulting and storage
//! round trip (which is where the known "no-op apply still writes" quirks come from).
//!
//! Sources (read to write this; no code copied):
//! - kubernetes-sigs/structured-merge-diff: `typed/tofieldset.go` (what an object's field
//!   set is), `typed/merge.go` (merging live with applied), `merge/update.go` (`Apply`,
//!   `update`, `prune`: conflicts, removal of fields no longer applied),
//!   `fieldpath/serialize-pe.go` and `fieldpath/element.go` (the `f:`/`k:`/`v:`/`i:`
//!   path elements and their `.a[k=v]` text), `typed/helpers.go` (list-map keys with
//!   schema defaults).
//! - kubernetes/kubernetes `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager`
//!   and `k8s.io/apimachinery/pkg/util/managedfields/internal`: `stripmeta.go` (server-set
//!   metadata is never owned), `managedfieldsupdater.go` (a manager's `time` changes
//!   only when the apply changed the object), `conflict.go` (the 409 Status and its
//!   message), `structuredmerge.go` (defaulting runs on the merged object, so defaults
//!   are not owned by the applier).
//! - The schemas: the OpenAPI of Kubernetes 1.36 as kubernetes-validate ships it
//!   (`kubernetes-json-schema/v1.36.0-local/_definitions.json`), which keeps
//!   `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and `x-kubernetes-map-type`.
//!
//! Limits (what the engine does not depend on): one API version per kind (no
//! conversion between versions), list order after a merge follows the applied order
//! with live-only items kept in place (upstream interleaves shared items the same way
//! in the common cases), `managedFields[].time` has one-second precision here as
//! upstream, but a write is stored (and its resourceVersion bumped) even when it lands
//! in the same second as the previous one (upstream's etcd store would skip a
//! byte-identical write); custom resources are typed with structured-merge-diff's
//! deduced type (lists atomic, maps granular), not their CRD's schema, so their
//! FieldsV1 mark every map with `.`; an Update with duplicate list-map keys loses its
//! ownership instead of owning the list whole.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------

/// The Kubernetes 1.36 OpenAPI definitions, by name, and which definition is the root
/// of each (group, version, kind).
pub struct Schemas {
    defs: Map<String, Value>,
    roots: HashMap<(String, String, String), String>,
}

/// The schemas, loaded once per test binary. Panics with the fix when
/// kubernetes-validate is not installed: a fake without them would merge lists wrong.
pub fn schemas() -> &'static Schemas {
    static S: OnceLock<Schemas> = OnceLock::new();
    S.get_or_init(|| {
        let file = super::schema::kubernetes_validate_file("v1.36.0-local").unwrap_or_else(|e| {
            panic!("the fake API server merges lists by the 1.36 OpenAPI: {e}")
        });
        let text = std::fs::read_to_string(&file).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        Schemas::new(doc["$defs"].as_object().cloned().unwrap_or_default())
    })
}

impl Schemas {
    pub fn new(defs: Map<String, Value>) -> Schemas {
        let mut roots = HashMap::new();
        for (name, d) in &defs {
            for gvk in d["x-kubernetes-group-version-kind"]
                .as_array()
                .into_iter()
                .flatten()
            {
                roots.insert(
                    (
                        gvk["group"].as_str().unwrap_or_default().to_string(),
                        gvk["version"].as_str().unwrap_or_default().to_string(),
                        gvk["kind"].as_str().unwrap_or_default().to_string(),
                    ),
                    name.clone(),
                );
            }
        }
        Schemas { defs, roots }
    }

    /// The type of a whole object of this kind; `Deduced` for kinds without a
    /// built-in schema (custom resources: their lists are atomic, their maps granular,
    /// as structured-merge-diff's deduced type has it).
    pub fn root(&self, group: &str, version: &str, kind: &str) -> Ty<'_> {
        self.roots
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
            .and_then(|n| self.defs.get(n))
            .map_or(Ty::Deduced, Ty::Node)
    }

    fn resolve<'a>(&'a self, mut node: &'a Value) -> &'a Value {
        for _ in 0..16 {
            match node["$ref"].as_str() {
                Some(r) => match self.defs.get(r.rsplit('/').next().unwrap_or_default()) {
                    Some(d) => node = d,
                    None => return node,
                },
                None => return node,
            }
        }
        node
    }

    fn node<'a>(&'a self, ty: Ty<'a>) -> Option<&'a Value> {
        match ty {
            Ty::Node(n) => Some(self.resolve(n)),
            Ty::Deduced => None,
        }
    }

    /// The type of field `name` of a map or struct.
    fn field<'a>(&'a self, ty: Ty<'a>, name: &str) -> Ty<'a> {
        let Some(n) = self.node(ty) else {
            return Ty::Deduced;
        };
        if let Some(p) = n["properties"].get(name) {
            return Ty::Node(p);
        }
        match n.get("additionalProperties") {
            Some(a) if a.is_object() => Ty::Node(a),
            _ => Ty::Deduced,
        }
    }

    /// Whether `name` is a declared field of a struct (not an entry of a map).
    fn declared(&self, ty: Ty<'_>, name: &str) -> bool {
        self.node(ty)
            .is_some_and(|n| n["properties"].get(name).is_some())
    }

    fn items<'a>(&'a self, ty: Ty<'a>) -> Ty<'a> {
        match self.node(ty).and_then(|n| n.get("items")) {
            Some(i) => Ty::Node(i),
            None => Ty::Deduced,
        }
    }

    /// How a list merges (`x-kubernetes-list-type`; no extension means atomic).
    fn list_kind(&self, ty: Ty<'_>) -> ListKind {
        let Some(n) = self.node(ty) else {
            return ListKind::Atomic;
        };
        match n["x-kubernetes-list-type"].as_str() {
            Some("map") => ListKind::Map(
                n["x-kubernetes-list-map-keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect(),
            ),
            Some("set") => ListKind::Set,
            _ => ListKind::Atomic,
        }
    }

    /// `x-kubernetes-map-type: atomic` (e.g. LabelSelector): replaced whole.
    fn atomic_map(&self, ty: Ty<'_>) -> bool {
        self.node(ty)
            .is_some_and(|n| n["x-kubernetes-map-type"] == "atomic")
    }

    /// A Go map (`additionalProperties`, no declared fields): `omitempty` drops it
    /// when empty. A struct (declared fields) is kept even when empty.
    fn go_map(&self, ty: Ty<'_>) -> bool {
        self.node(ty)
            .is_some_and(|n| n.get("properties").is_none() && n["additionalProperties"].is_object())
    }
}

#[derive(Clone, Copy)]
pub enum Ty<'a> {
    Node(&'a Value),
    Deduced,
}

#[derive(Debug, Clone, PartialEq)]
enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

// ---------------------------------------------------------------------------------------
// Paths and field sets
// ---------------------------------------------------------------------------------------

/// One step of a field path (structured-merge-diff `fieldpath.PathElement`); values
/// are kept as compact JSON so paths order and compare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pe {
    Field(String),
    /// A list-map item by its keys, sorted by key name.
    Key(Vec<(String, String)>),
    /// A set item by its value.
    Value(String),
    Index(usize),
}

pub type Path = Vec<Pe>;

impl Pe {
    /// FieldsV1 spelling (`fieldpath/serialize-pe.go`).
    fn fields_v1(&self) -> String {
        match self {
            Pe::Field(f) => format!("f:{f}"),
            Pe::Key(k) => {
                let inner: Vec<String> = k
                    .iter()
                    .map(|(n, v)| format!("{}:{v}", Value::String(n.clone())))
                    .collect();
                format!("k:{{{}}}", inner.join(","))
            }
            Pe::Value(v) => format!("v:{v}"),
            Pe::Index(i) => format!("i:{i}"),
        }
    }

    fn parse(s: &str) -> Option<Pe> {
        let (t, rest) = s.split_once(':')?;
        Some(match t {
            "f" => Pe::Field(rest.to_string()),
            "k" => {
                let m: Map<String, Value> = serde_json::from_str(rest).ok()?;
                let mut k: Vec<(String, String)> =
                    m.into_iter().map(|(n, v)| (n, v.to_string())).collect();
                k.sort();
                Pe::Key(k)
            }
            "v" => Pe::Value(serde_json::from_str::<Value>(rest).ok()?.to_string()),
            "i" => Pe::Index(rest.parse().ok()?),
            _ => return None,
        })
    }
}

/// A path as conflicts print it: `.spec.template.spec.containers[name="api"].image`
/// (`fieldpath/element.go` `PathElement.String`).
pub fn path_string(p: &[Pe]) -> String {
    p.iter()
        .map(|pe| match pe {
            Pe::Field(f) => format!(".{f}"),
            Pe::Key(k) => {
                let inner: Vec<String> = k.iter().map(|(n, v)| format!("{n}={v}")).collect();
                format!("[{}]", inner.join(","))
            }
            Pe::Value(v) => format!("[={v}]"),
            Pe::Index(i) => format!("[{i}]"),
        })
        .collect()
}

/// Members of a field set; leaves (scalars, atomic lists and maps) carry their value,
/// so two objects' sets can be compared for modified fields.
type Fields = BTreeMap<Path, Option<Value>>;

/// Key fields of a list-map item that the schema defaults when absent
/// (`typed/helpers.go` `getAssociativeKeyDefault`; the defaults come from
/// k8s.io/api core/v1 types.go `+default="TCP"` on ContainerPort and ServicePort).
fn key_default(key: &str) -> Option<Value> {
    (key == "protocol").then(|| json!("TCP"))
}

fn item_pe(kind: &ListKind, item: &Value, index: usize) -> Pe {
    match kind {
        ListKind::Map(keys) => {
            let mut k: Vec<(String, String)> = keys
                .iter()
                .filter_map(|name| {
                    item.get(name)
                        .filter(|v| !v.is_null())
                        .cloned()
                        .or_else(|| key_default(name))
                        .map(|v| (name.clone(), v.to_string()))
                })
                .collect();
            k.sort();
            Pe::Key(k)
        }
        ListKind::Set => Pe::Value(item.to_string()),
        ListKind::Atomic => Pe::Index(index),
    }
}

/// The field set of `v` (`typed/tofieldset.go`). Errors on duplicate list-map keys,
/// as the real server refuses such an applied configuration.
fn field_set(
    s: &Schemas,
    ty: Ty<'_>,
    v: &Value,
    path: &mut Path,
    out: &mut Fields,
) -> Result<(), String> {
    match v {
        Value::Object(m) => {
            if s.atomic_map(ty) {
                out.insert(path.clone(), Some(v.clone()));
                return Ok(());
            }
            for (k, child) in m {
                path.push(Pe::Field(k.clone()));
                let cty = s.field(ty, k);
                field_set(s, cty, child, path, out)?;
                let empty = child.is_null() || child.as_object().is_some_and(Map::is_empty);
                if empty || !s.declared(ty, k) {
                    out.entry(path.clone()).or_insert(None);
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            let kind = s.list_kind(ty);
            if kind == ListKind::Atomic {
                out.insert(path.clone(), Some(v.clone()));
                return Ok(());
            }
            let ity = s.items(ty);
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                let pe = item_pe(&kind, item, i);
                if !seen.insert(pe.clone()) {
                    let mut p = path.clone();
                    p.push(pe);
                    return Err(format!(
                        "{}: duplicate entries for key {}",
                        path_string(path),
                        path_string(&p[path.len()..])
                    ));
                }
                path.push(pe);
                if kind == ListKind::Set {
                    out.insert(path.clone(), Some(item.clone()));
                } else {
                    field_set(s, ity, item, path, out)?;
                    out.entry(path.clone()).or_insert(None);
                }
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone(), Some(v.clone()));
        }
    }
    Ok(())
}

/// Server-set metadata is never owned (`internal/stripmeta.go`); status is reset on
/// writes to the main resource and the main resource on writes to `status`
/// (the registries' `GetResetFields`).
fn owned(p: &Path, subresource: Option<&str>) -> bool {
    let f = |i: usize| match p.get(i) {
        Some(Pe::Field(f)) => f.as_str(),
        _ => "",
    };
    match subresource {
        Some("status") => return f(0) == "status",
        _ if f(0) == "status" => return false,
        _ => {}
    }
    match (f(0), p.len()) {
        ("apiVersion" | "kind", 1) | ("metadata", 1) => false,
        ("metadata", 2) => !matches!(
            f(1),
            "name"
                | "namespace"
                | "creationTimestamp"
                | "selfLink"
                | "uid"
                | "generation"
                | "managedFields"
                | "resourceVersion"
        ),
        _ => true,
    }
}

fn fields_of(
    s: &Schemas,
    ty: Ty<'_>,
    v: &Value,
    subresource: Option<&str>,
) -> Result<Fields, String> {
    let mut out = Fields::new();
    field_set(s, ty, v, &mut Vec::new(), &mut out)?;
    out.retain(|p, _| owned(p, subresource));
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// FieldsV1
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Tree {
    member: bool,
    children: BTreeMap<String, Tree>,
}

/// A set of paths in FieldsV1 (`{"f:spec": {"f:replicas": {}}}`; `.` marks a member
/// that also has members below it).
pub fn to_fields_v1(set: &BTreeSet<Path>) -> Value {
    let mut root = Tree::default();
    for p in set {
        let mut t = &mut root;
        for pe in p {
            t = t.children.entry(pe.fields_v1()).or_default();
        }
        t.member = true;
    }
    fn render(t: &Tree) -> Value {
        let mut m = Map::new();
        if t.member && !t.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &t.children {
            m.insert(k.clone(), render(c));
        }
        Value::Object(m)
    }
    render(&root)
}

pub fn from_fields_v1(v: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(m) = v.as_object() else { return };
        if (m.is_empty() || m.contains_key(".")) && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, c) in m {
            if k == "." {
                continue;
            }
            if let Some(pe) = Pe::parse(k) {
                path.push(pe);
                walk(c, path, out);
                path.pop();
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// One managedFields entry, decoded.
#[derive(Debug, Clone)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: Option<String>,
    pub set: BTreeSet<Path>,
}

impl Entry {
    fn id(&self) -> (&str, &str, Option<&str>) {
        (&self.manager, &self.operation, self.subresource.as_deref())
    }

    /// How a conflict names the manager (`internal/conflict.go` `printManager`):
    /// `"kubectl" using apps/v1` for an Update, `"other"` for an Apply.
    pub fn display(&self) -> String {
        if self.operation == "Update" {
            format!("\"{}\" using {}", self.manager, self.api_version)
        } else {
            format!("\"{}\"", self.manager)
        }
    }

    fn to_json(&self) -> Value {
        let mut e = json!({
            "manager": self.manager, "operation": self.operation, "apiVersion": self.api_version,
            "time": self.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&self.set),
        });
        if self.time.is_none() {
            e.as_object_mut().unwrap().remove("time");
        }
        if let Some(sub) = &self.subresource {
            e["subresource"] = json!(sub);
        }
        e
    }
}

pub fn entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or_default().to_string(),
            operation: e["operation"].as_str().unwrap_or_default().to_string(),
            api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
            time: e["time"].as_str().map(str::to_string),
            subresource: e["subresource"].as_str().map(str::to_string),
            set: from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

fn encode(list: &[Entry]) -> Value {
    Value::Array(list.iter().map(Entry::to_json).collect())
}

// ---------------------------------------------------------------------------------------
// Merge, removal, comparison
// ---------------------------------------------------------------------------------------

/// The live object merged with an applied configuration (`typed/merge.go`): maps and
/// structs key by key, list-maps item by item (by their keys), sets by value, atomic
/// lists and maps and scalars replaced by the applied value.
fn merge(s: &Schemas, ty: Ty<'_>, live: Option<&Value>, cfg: &Value) -> Value {
    match (live, cfg) {
        (Some(Value::Object(l)), Value::Object(c)) if !s.atomic_map(ty) => {
            let mut out = l.clone();
            for (k, v) in c {
                let merged = merge(s, s.field(ty, k), l.get(k), v);
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Some(Value::Array(l)), Value::Array(c)) => {
            let kind = s.list_kind(ty);
            if kind == ListKind::Atomic {
                return cfg.clone();
            }
            let ity = s.items(ty);
            let lpe: Vec<Pe> = l
                .iter()
                .enumerate()
                .map(|(i, x)| item_pe(&kind, x, i))
                .collect();
            let cpe: Vec<Pe> = c
                .iter()
                .enumerate()
                .map(|(i, x)| item_pe(&kind, x, i))
                .collect();
            let mut out = Vec::new();
            let mut ci = 0;
            let mut taken = BTreeSet::new();
            for (li, item) in l.iter().enumerate() {
                match cpe.iter().position(|p| *p == lpe[li]) {
                    None => out.push(item.clone()),
                    Some(at) => {
                        // Applied items up to this shared one come first, in applied order.
                        while ci <= at {
                            if taken.insert(ci) {
                                let live_item =
                                    lpe.iter().position(|p| *p == cpe[ci]).map(|i| &l[i]);
                                out.push(merge(s, ity, live_item, &c[ci]));
                            }
                            ci += 1;
                        }
                        if taken.insert(at) {
                            out.push(merge(s, ity, Some(item), &c[at]));
                        }
                    }
                }
            }
            for (i, item) in c.iter().enumerate() {
                if taken.insert(i) {
                    let live_item = lpe.iter().position(|p| *p == cpe[i]).map(|j| &l[j]);
                    out.push(merge(s, ity, live_item, item));
                }
            }
            Value::Array(out)
        }
        _ => cfg.clone(),
    }
}

/// Removes the member at `path` (a field, a list-map item, a set item).
fn remove(s: &Schemas, ty: Ty<'_>, v: &mut Value, path: &[Pe]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match v {
        Value::Object(m) => {
            let Pe::Field(f) = first else { return };
            if rest.is_empty() {
                m.shift_remove(f);
            } else if let Some(c) = m.get_mut(f) {
                remove(s, s.field(ty, f), c, rest);
            }
        }
        Value::Array(a) => {
            let kind = s.list_kind(ty);
            let Some(i) = (0..a.len()).find(|i| item_pe(&kind, &a[*i], *i) == *first) else {
                return;
            };
            if rest.is_empty() {
                a.remove(i);
            } else {
                remove(s, s.items(ty), &mut a[i], rest);
            }
        }
        _ => {}
    }
}

/// What changed between two versions of an object, as field paths
/// (`typed/compare.go`).
struct Comparison {
    added: BTreeSet<Path>,
    modified: BTreeSet<Path>,
    removed: BTreeSet<Path>,
}

fn compare(old: &Fields, new: &Fields) -> Comparison {
    let mut c = Comparison {
        added: BTreeSet::new(),
        modified: BTreeSet::new(),
        removed: BTreeSet::new(),
    };
    for (p, v) in new {
        match old.get(p) {
            None => {
                c.added.insert(p.clone());
            }
            Some(o) if o != v => {
                c.modified.insert(p.clone());
            }
            Some(_) => {}
        }
    }
    for p in old.keys() {
        if !new.contains_key(p) {
            c.removed.insert(p.clone());
        }
    }
    c
}

fn under(p: &Path, prefix: &Path) -> bool {
    p.len() >= prefix.len() && p[..prefix.len()] == prefix[..]
}

fn without_meta(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.shift_remove("managedFields");
    }
    o
}

// ---------------------------------------------------------------------------------------
// Apply and Update
// ---------------------------------------------------------------------------------------

/// Which object an apply or update is about, and when it happens.
pub struct Target<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    /// Whether the resource has a `status` subresource (then the main resource's
    /// writes never change status and nobody owns it through them).
    pub status_subresource: bool,
    pub now: &'a str,
}

impl Target<'_> {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// The outcome of an apply that the server accepted.
pub struct Applied {
    /// The merged object (managedFields set, not yet defaulted).
    pub object: Value,
    /// Whether the server writes: the merged object differs from the live one or the
    /// managers' field sets changed. When false the live object stays as it is,
    /// resourceVersion and every `time` included.
    pub write: bool,
}

/// Why an apply was refused: a 409 (`conflicts`) or a 500 (an applied configuration
/// the server cannot type, e.g. duplicate list-map keys).
pub enum Refused {
    Conflicts(Value),
    Invalid(String),
}

/// A server-side apply of `config` by `manager` onto `live` (`None`: create); see
/// `merge/update.go` `Updater.Apply`.
pub fn apply(
    s: &Schemas,
    t: &Target<'_>,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
) -> Result<Applied, Refused> {
    let ty = s.root(t.group, t.version, t.kind);
    let mut cfg = config.clone();
    if t.status_subresource
        && let Some(m) = cfg.as_object_mut()
    {
        m.shift_remove("status");
    }
    let live_obj = live.map_or_else(|| json!({}), without_meta);
    let mut entries = live.map(entries).unwrap_or_default();
    let before = encode_sets(&entries);
    let new_set: BTreeSet<Path> = fields_of(s, ty, &cfg, None)
        .map_err(Refused::Invalid)?
        .into_keys()
        .collect();
    let mine = entries
        .iter()
        .position(|e| e.manager == manager && e.operation == "Apply" && e.subresource.is_none());
    let last_set = mine.map(|i| entries[i].set.clone()).unwrap_or_default();
    let others: BTreeSet<Path> = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != mine)
        .flat_map(|(_, e)| e.set.iter().cloned())
        .collect();

    let mut merged = merge(s, ty, Some(&live_obj), &cfg);
    // What the manager applied last time and no longer applies is removed, unless
    // another manager owns it (or something under it) too (`Updater.prune`).
    for p in last_set.difference(&new_set) {
        let kept = others.iter().chain(new_set.iter()).any(|o| under(o, p));
        if !kept {
            remove(s, ty, &mut merged, p);
        }
    }

    let old_fields = fields_of(s, ty, &live_obj, None).map_err(Refused::Invalid)?;
    let new_fields = fields_of(s, ty, &merged, None).map_err(Refused::Invalid)?;
    let cmp = compare(&old_fields, &new_fields);
    let changed: BTreeSet<Path> = cmp.added.union(&cmp.modified).cloned().collect();
    let mut conflicts: Vec<(usize, Path)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) == mine {
            continue;
        }
        conflicts.extend(e.set.intersection(&changed).map(|p| (i, p.clone())));
    }
    if !conflicts.is_empty() && !force {
        return Err(Refused::Conflicts(conflict_status(&entries, &conflicts)));
    }
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) == mine {
            continue;
        }
        let lost: BTreeSet<Path> = conflicts
            .iter()
            .filter(|(j, _)| *j == i)
            .map(|(_, p)| p.clone())
            .collect();
        e.set = e
            .set
            .iter()
            .filter(|p| !lost.contains(*p) && !cmp.removed.contains(*p))
            .cloned()
            .collect();
    }
    let object_changed = merged != live_obj;
    let entry = Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version: t.api_version(),
        time: match mine {
            Some(i) if !object_changed => entries[i].time.clone(),
            _ => Some(t.now.to_string()),
        },
        subresource: None,
        set: new_set,
    };
    match mine {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }
    entries.retain(|e| !e.set.is_empty());
    let write = live.is_none() || object_changed || encode_sets(&entries) != before;
    merged["metadata"]["managedFields"] = encode(&entries);
    Ok(Applied {
        object: merged,
        write,
    })
}

/// The entries without their times, to tell whether ownership changed.
fn encode_sets(list: &[Entry]) -> Vec<(String, String, Option<String>, String, Value)> {
    list.iter()
        .map(|e| {
            let (m, o, sub) = e.id();
            (
                m.to_string(),
                o.to_string(),
                sub.map(str::to_string),
                e.api_version.clone(),
                to_fields_v1(&e.set),
            )
        })
        .collect()
}

/// The 409 the real server answers (`internal/conflict.go` `NewConflictError`):
/// `Apply failed with 1 conflict: conflict with "kubectl" using apps/v1: .spec.replicas`,
/// and per conflict a cause of type FieldManagerConflict naming the field.
fn conflict_status(entries: &[Entry], conflicts: &[(usize, Path)]) -> Value {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(i, p)| {
            json!({"type": "FieldManagerConflict",
                "message": format!("conflict with {}", entries[*i].display()),
                "field": path_string(p)})
        })
        .collect();
    let message = if let [(i, p)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            entries[*i].display(),
            path_string(p)
        )
    } else {
        let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, p) in conflicts {
            by.entry(entries[*i].display())
                .or_default()
                .push(path_string(p));
        }
        let mut lines = Vec::new();
        for (m, paths) in by {
            lines.push(format!("conflicts with {m}:"));
            lines.extend(paths.into_iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Conflict", "details": {"causes": causes}, "code": 409})
}

/// The managedFields after a non-apply write (create, update, patch, a controller's
/// write; `subresource` "status" for status writes) by `manager`: it owns what it
/// added or changed, and others lose what it changed or removed (`Updater.Update`,
/// which never conflicts).
pub fn update(
    s: &Schemas,
    t: &Target<'_>,
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    subresource: Option<&str>,
) -> Value {
    let ty = s.root(t.group, t.version, t.kind);
    let sub_filter = if t.status_subresource {
        subresource
    } else {
        None
    };
    let fields = |v: &Value| fields_of(s, ty, v, sub_filter).unwrap_or_default();
    let old_obj = old.map_or_else(|| json!({}), without_meta);
    let cmp = compare(&fields(&old_obj), &fields(&without_meta(new)));
    let mut entries = old.map(entries).unwrap_or_default();
    let me = (manager, "Update", subresource);
    let changed: BTreeSet<Path> = cmp.added.union(&cmp.modified).cloned().collect();
    for e in entries.iter_mut().filter(|e| e.id() != me) {
        e.set = e
            .set
            .iter()
            .filter(|p| !changed.contains(*p) && !cmp.removed.contains(*p))
            .cloned()
            .collect();
    }
    let something = !changed.is_empty() || !cmp.removed.is_empty();
    match entries.iter_mut().find(|e| e.id() == me) {
        Some(e) => {
            e.set = e
                .set
                .difference(&cmp.removed)
                .cloned()
                .chain(changed)
                .collect();
            if something {
                e.time = Some(t.now.to_string());
            }
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Update".into(),
            api_version: t.api_version(),
            time: Some(t.now.to_string()),
            subresource: subresource.map(str::to_string),
            set: changed,
        }),
    }
    entries.retain(|e| !e.set.is_empty());
    encode(&entries)
}

// ---------------------------------------------------------------------------------------
// The storage round trip and the known quirks
// ---------------------------------------------------------------------------------------

/// What a built-in object looks like after the server decoded it into its Go type and
/// stored it: `null`s, empty lists and empty Go maps are gone (`omitempty`), which is
/// why applying `ingress: []` or `annotations: {}` writes on every apply
/// (kubernetes/kubernetes#131175, #124050); a Secret's `stringData` is folded into
/// `data` and never stored (k8s.io/kubernetes pkg/apis/core/v1 conversion.go
/// `Convert_v1_Secret_To_core_Secret`; kubernetes#118519); a StatefulSet's
/// volumeClaimTemplates come back with `apiVersion: v1` and `kind:
/// PersistentVolumeClaim` (kubernetes PR #87706). Custom resources are stored as sent.
///
/// The third quirk needs no rule of its own: volumeClaimTemplates is an atomic list, so
/// the applied list replaces the stored one whole, and a template without what the
/// server adds to it (apiVersion/kind here, `volumeMode` and `status.phase` from
/// [`defaults`]) differs from the stored one on every apply, which therefore writes
/// (kubernetes/kubernetes#119304, whose templates had apiVersion/kind but not the rest).
pub fn round_trip(s: &Schemas, group: &str, version: &str, kind: &str, obj: &mut Value) {
    let ty = s.root(group, version, kind);
    if matches!(ty, Ty::Deduced) {
        return;
    }
    if (group, kind) == ("", "Secret")
        && let Some(sd) = obj
            .as_object_mut()
            .and_then(|m| m.shift_remove("stringData"))
    {
        for (k, v) in sd.as_object().into_iter().flatten() {
            let b64 =
                base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
            obj["data"][k] = json!(b64);
        }
    }
    if (group, kind) == ("apps", "StatefulSet")
        && let Some(list) = obj["spec"]["volumeClaimTemplates"].as_array_mut()
    {
        for t in list {
            t["apiVersion"] = json!("v1");
            t["kind"] = json!("PersistentVolumeClaim");
        }
    }
    drop_empty(s, ty, obj);
}

fn drop_empty(s: &Schemas, ty: Ty<'_>, v: &mut Value) {
    match v {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let cty = s.field(ty, &k);
                let c = m.get_mut(&k).unwrap();
                drop_empty(s, cty, c);
                let gone = match c {
                    Value::Null => true,
                    Value::Array(a) => a.is_empty() && matches!(cty, Ty::Node(_)),
                    Value::Object(o) => o.is_empty() && s.go_map(cty),
                    _ => false,
                };
                if gone {
                    m.shift_remove(&k);
                }
            }
        }
        Value::Array(a) => {
            let ity = s.items(ty);
            for x in a {
                drop_empty(s, ity, x);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Defaulting
// ---------------------------------------------------------------------------------------

fn set_default(v: &mut Value, field: &str, d: Value) {
    if let Some(m) = v.as_object_mut()
        && m.get(field).is_none_or(Value::is_null)
    {
        m.insert(field.to_string(), d);
    }
}

/// The object at `path` under `v`, if there is one (never creates anything, unlike
/// indexing a `Value` mutably).
fn at<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    let mut cur = v;
    for p in path {
        cur = cur.as_object_mut()?.get_mut(*p)?;
    }
    cur.is_object().then_some(cur)
}

fn each<'a>(v: &'a mut Value, path: &[&str]) -> impl Iterator<Item = &'a mut Value> {
    let (last, parent) = path.split_last().expect("a path");
    at(v, parent)
        .and_then(|p| p.get_mut(*last))
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter(|x| x.is_object())
}

/// Defaults a rolling-update strategy object at `path` (e.g. spec.strategy).
fn strategy(spec: &mut Value, field: &str, rolling: &[(&str, Value)]) {
    set_default(spec, field, json!({}));
    let Some(s) = at(spec, &[field]) else { return };
    set_default(s, "type", json!("RollingUpdate"));
    if s["type"] == "RollingUpdate" {
        set_default(s, "rollingUpdate", json!({}));
        if let Some(r) = at(s, &["rollingUpdate"]) {
            for (k, d) in rolling {
                set_default(r, k, d.clone());
            }
        }
    }
}

/// The defaults the real server fills in on every write (the `SetDefaults_*` functions
/// of k8s.io/kubernetes pkg/apis/apps/v1/defaults.go, pkg/apis/batch/v1/defaults.go,
/// pkg/apis/core/v1/defaults.go and pkg/apis/networking/v1/defaults.go), for the kinds
/// this stack uses. They run after the merge, so the applier does not own them.
pub fn defaults(group: &str, kind: &str, obj: &mut Value) {
    let Some(spec) = at(obj, &["spec"]) else {
        return;
    };
    match (group, kind) {
        ("apps", "Deployment") => {
            set_default(spec, "replicas", json!(1));
            strategy(
                spec,
                "strategy",
                &[("maxUnavailable", json!("25%")), ("maxSurge", json!("25%"))],
            );
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            pod_template(spec);
        }
        ("apps", "StatefulSet") => {
            set_default(spec, "replicas", json!(1));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            strategy(spec, "updateStrategy", &[("partition", json!(0))]);
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "persistentVolumeClaimRetentionPolicy", json!({}));
            if let Some(p) = at(spec, &["persistentVolumeClaimRetentionPolicy"]) {
                set_default(p, "whenDeleted", json!("Retain"));
                set_default(p, "whenScaled", json!("Retain"));
            }
            for t in each(spec, &["volumeClaimTemplates"]) {
                if let Some(s) = at(t, &["spec"]) {
                    set_default(s, "volumeMode", json!("Filesystem"));
                }
                set_default(t, "status", json!({"phase": "Pending"}));
            }
            pod_template(spec);
        }
        ("apps", "DaemonSet") => {
            strategy(
                spec,
                "updateStrategy",
                &[("maxUnavailable", json!(1)), ("maxSurge", json!(0))],
            );
            set_default(spec, "revisionHistoryLimit", json!(10));
            pod_template(spec);
        }
        ("batch", "Job") => {
            if spec["completions"].is_null() && spec["parallelism"].is_null() {
                spec["completions"] = json!(1);
            }
            set_default(spec, "parallelism", json!(1));
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            if spec.get("podFailurePolicy").is_none_or(Value::is_null) {
                set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            }
            pod_template(spec);
        }
        ("", "Pod") => pod_spec(spec),
        ("", "Service") => {
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            let ty = spec["type"].as_str().unwrap_or_default().to_string();
            if ty != "ExternalName" {
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
                set_default(spec, "ipFamilies", json!(["IPv4"]));
            }
            if ty == "NodePort" || ty == "LoadBalancer" {
                set_default(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            if ty == "LoadBalancer" {
                set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
            }
            for p in each(spec, &["ports"]) {
                set_default(p, "protocol", json!("TCP"));
                let port = p["port"].clone();
                set_default(p, "targetPort", port);
            }
        }
        ("", "PersistentVolumeClaim") => set_default(spec, "volumeMode", json!("Filesystem")),
        ("networking.k8s.io", "NetworkPolicy") => {
            if spec.get("policyTypes").is_none_or(Value::is_null) {
                let mut types = vec![json!("Ingress")];
                if spec["egress"].as_array().is_some_and(|e| !e.is_empty()) {
                    types.push(json!("Egress"));
                }
                spec["policyTypes"] = Value::Array(types);
            }
            for dir in ["ingress", "egress"] {
                for rule in each(spec, &[dir]) {
                    for p in each(rule, &["ports"]) {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
        _ => {}
    }
}

fn pod_template(spec: &mut Value) {
    if let Some(pod) = at(spec, &["template", "spec"]) {
        pod_spec(pod);
    }
}

fn pod_spec(spec: &mut Value) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    for list in ["initContainers", "containers"] {
        for c in each(spec, &[list]) {
            container(c);
        }
    }
    for v in each(spec, &["volumes"]) {
        for source in ["secret", "configMap", "projected", "downwardAPI"] {
            if let Some(src) = at(v, &[source]) {
                set_default(src, "defaultMode", json!(420));
            }
        }
    }
}

fn container(c: &mut Value) {
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    let image = c["image"].as_str().unwrap_or_default();
    // SetDefaults_Container: Always for `:latest` or no tag (a digest counts as a tag).
    let last = image.rsplit('/').next().unwrap_or_default();
    let latest = !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"));
    set_default(
        c,
        "imagePullPolicy",
        json!(if latest { "Always" } else { "IfNotPresent" }),
    );
    for p in each(c, &["ports"]) {
        set_default(p, "protocol", json!("TCP"));
    }
    for e in each(c, &["env"]) {
        if let Some(f) = at(e, &["valueFrom", "fieldRef"]) {
            set_default(f, "apiVersion", json!("v1"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(p) = at(c, &[probe]) else { continue };
        set_default(p, "timeoutSeconds", json!(1));
        set_default(p, "periodSeconds", json!(10));
        set_default(p, "successThreshold", json!(1));
        set_default(p, "failureThreshold", json!(3));
        if let Some(h) = at(p, &["httpGet"]) {
            set_default(h, "path", json!("/"));
            set_default(h, "scheme", json!("HTTP"));
        }
    }
}

#[cfg(test)]
mod tests {
    //! The fake's server-side apply over HTTP, as a client sees it.

    use std::io::{Read, Write};
    use std::net::TcpStream;

    use serde_json::{Value, json};

    use super::super::{FakeApiServer, Options};

    fn call(
        api: &FakeApiServer,
        method: &str,
        target: &str,
        ct: &str,
        body: &Value,
    ) -> (u16, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let mut c = TcpStream::connect(api.url().trim_start_matches("http://")).unwrap();
        write!(
            c,
            "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        let code = out[9..12].parse().unwrap();
        let text = out.split_once("\r\n\r\n").unwrap().1;
        (code, serde_json::from_str(text).unwrap_or(Value::Null))
    }

    /// A server-side apply by `manager` (JSON is YAML, so the body is sent as is).
    fn apply(
        api: &FakeApiServer,
        path: &str,
        manager: &str,
        force: bool,
        body: &Value,
    ) -> (u16, Value) {
        let force = if force { "&force=true" } else { "" };
        call(
            api,
            "PATCH",
            &format!("{path}?fieldManager={manager}{force}"),
            "application/apply-patch+yaml",
            body,
        )
    }

    fn get(api: &FakeApiServer, path: &str) -> Value {
        let (code, v) = call(api, "GET", path, "application/json", &Value::Null);
        assert_eq!(code, 200, "{v:#}");
        v
    }

    /// The FieldsV1 of `manager`'s entry with `operation`.
    fn fields(obj: &Value, manager: &str, operation: &str) -> Value {
        obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == manager && e["operation"] == operation)
            .map(|e| e["fieldsV1"].clone())
            .unwrap_or(Value::Null)
    }

    const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments/api";

    fn deployment(containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": containers}}}})
    }

    #[test]
    fn list_maps_merge_item_by_key_and_each_manager_owns_what_it_applied() {
        let api = FakeApiServer::start(Options::new("ssa"));
        let mine = deployment(json!([{"name": "api", "image": "r/api:1",
            "ports": [{"containerPort": 8080}],
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]));
        assert_eq!(apply(&api, DEPLOY, "pulsedev", true, &mine).0, 201);
        // Another manager adds a sidecar and one env var of the api container: containers
        // (by name) and env (by name) merge item by item, nothing of pulsedev's is lost.
        let theirs = deployment(json!([
            {"name": "api", "env": [{"name": "C", "value": "3"}]},
            {"name": "sidecar", "image": "r/proxy:2"}]));
        let (code, d) = apply(&api, DEPLOY, "mesh", false, &theirs);
        assert_eq!(code, 200, "{d:#}");
        let containers = &d["spec"]["template"]["spec"]["containers"];
        let names: Vec<&str> = containers
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["api", "sidecar"]);
        let env: Vec<&str> = containers[0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(env, ["A", "B", "C"]);
        assert_eq!(containers[0]["image"], "r/api:1");

        // FieldsV1: list-map items by their keys (the port's protocol is the schema
        // default TCP), `.` where an item also has fields below it.
        let f = fields(&d, "pulsedev", "Apply");
        let api_c = &f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"api\"}"];
        assert_eq!(api_c["."], json!({}));
        assert_eq!(api_c["f:image"], json!({}));
        assert_eq!(
            api_c["f:ports"]["k:{\"containerPort\":8080,\"protocol\":\"TCP\"}"],
            json!({".": {}, "f:containerPort": {}})
        );
        assert!(api_c["f:env"]["k:{\"name\":\"C\"}"].is_null(), "{f:#}");
        // `x-kubernetes-map-type: atomic` (LabelSelector): one leaf, not its keys.
        assert_eq!(f["f:spec"]["f:selector"], json!({}), "{f:#}");
        // Defaults are the server's, not the applier's.
        assert_eq!(containers[0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(containers[0]["ports"][0]["protocol"], "TCP");
        assert!(api_c["f:imagePullPolicy"].is_null(), "{f:#}");
        assert!(f["f:spec"]["f:strategy"].is_null(), "{f:#}");
        let m = fields(&d, "mesh", "Apply");
        let mesh_c = &m["f:spec"]["f:template"]["f:spec"]["f:containers"];
        assert_eq!(
            mesh_c["k:{\"name\":\"api\"}"]["f:env"]["k:{\"name\":\"C\"}"],
            json!({".": {}, "f:name": {}, "f:value": {}})
        );
        assert_eq!(mesh_c["k:{\"name\":\"sidecar\"}"]["f:image"], json!({}));
        // Each entry: manager, operation, apiVersion, time.
        let e = &d["metadata"]["managedFields"][0];
        assert_eq!(
            (&e["operation"], &e["apiVersion"], &e["fieldsType"]),
            (&json!("Apply"), &json!("apps/v1"), &json!("FieldsV1"))
        );
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    }

    #[test]
    fn what_a_manager_stops_applying_is_removed_unless_another_manager_owns_it() {
        let api = FakeApiServer::start(Options::new("ssa"));
        let cm = "/api/v1/namespaces/default/configmaps/c";
        let body = |data: Value, labels: Value| {
            let mut c = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "default"}, "data": data});
            if labels != json!({}) {
                c["metadata"]["labels"] = labels;
            }
            c
        };
        apply(
            &api,
            cm,
            "pulsedev",
            true,
            &body(json!({"a": "1", "b": "2"}), json!({"x": "1"})),
        );
        // Another manager co-owns b with the same value: not a conflict.
        let (code, _) = apply(
            &api,
            cm,
            "other",
            false,
            &body(json!({"b": "2"}), json!({})),
        );
        assert_eq!(code, 200);
        let (code, c) = apply(
            &api,
            cm,
            "pulsedev",
            true,
            &body(json!({"a": "1"}), json!({})),
        );
        assert_eq!(code, 200, "{c:#}");
        assert_eq!(
            c["data"],
            json!({"a": "1", "b": "2"}),
            "b is still owned by other"
        );
        assert!(c["metadata"]["labels"]["x"].is_null(), "{c:#}");
        // Once nobody applies b, it goes.
        let (_, c) = apply(&api, cm, "other", false, &body(json!({}), json!({})));
        assert_eq!(c["data"], json!({"a": "1"}), "{c:#}");

        // The same for a list-map item: an env var no longer applied is removed.
        let with = deployment(json!([{"name": "api", "image": "r/api:1",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]));
        let without = deployment(json!([{"name": "api", "image": "r/api:1",
            "env": [{"name": "A", "value": "1"}]}]));
        apply(&api, DEPLOY, "pulsedev", true, &with);
        let (_, d) = apply(&api, DEPLOY, "pulsedev", true, &without);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}])
        );
    }

    #[test]
    fn a_change_to_another_managers_field_is_a_409_unless_forced() {
        let api = FakeApiServer::start(Options::new("ssa"));
        let mut mine = deployment(json!([{"name": "api", "image": "r/api:1"}]));
        mine["spec"]["replicas"] = json!(2);
        apply(&api, DEPLOY, "pulsedev", true, &mine);
        // `kubectl scale` (an Update by manager kubectl) takes spec.replicas.
        let (code, _) = call(
            &api,
            "PATCH",
            &format!("{DEPLOY}?fieldManager=kubectl"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 5}}),
        );
        assert_eq!(code, 200);
        let (code, s) = apply(&api, DEPLOY, "pulsedev", false, &mine);
        assert_eq!(code, 409, "{s:#}");
        assert_eq!(
            s["message"],
            "Apply failed with 1 conflict: conflict with \"kubectl\" using apps/v1: .spec.replicas"
        );
        assert_eq!(
            (&s["reason"], &s["status"]),
            (&json!("Conflict"), &json!("Failure"))
        );
        assert_eq!(
            s["details"]["causes"],
            json!([{"type": "FieldManagerConflict",
                "message": "conflict with \"kubectl\" using apps/v1", "field": ".spec.replicas"}])
        );
        assert_eq!(get(&api, DEPLOY)["spec"]["replicas"], 5, "nothing written");
        // The same value is no conflict: co-ownership.
        let mut same = mine.clone();
        same["spec"]["replicas"] = json!(5);
        let (code, d) = apply(&api, DEPLOY, "helm", false, &same);
        assert_eq!(code, 200, "{d:#}");
        // Two managers' fields in one message, sorted by manager.
        let two = deployment(json!([{"name": "api", "image": "r/api:2"}]));
        apply(&api, DEPLOY, "other", true, &two);
        let (code, s) = apply(&api, DEPLOY, "pulsedev", false, &mine);
        assert_eq!(code, 409);
        assert_eq!(
            s["message"],
            "Apply failed with 3 conflicts: conflicts with \"helm\":\n- .spec.replicas\nconflicts with \"kubectl\" using apps/v1:\n- .spec.replicas\nconflicts with \"other\":\n- .spec.template.spec.containers[name=\"api\"].image",
            "{s:#}"
        );
        // force=true takes the fields over.
        let (code, d) = apply(&api, DEPLOY, "pulsedev", true, &mine);
        assert_eq!(code, 200, "{d:#}");
        assert_eq!(d["spec"]["replicas"], 2);
        assert!(
            fields(&d, "kubectl", "Update")["f:spec"]["f:replicas"].is_null(),
            "{d:#}"
        );
        assert_eq!(
            fields(&d, "pulsedev", "Apply")["f:spec"]["f:replicas"],
            json!({})
        );
    }

    #[test]
    fn the_server_defaults_what_the_real_one_does() {
        let api = FakeApiServer::start(Options::new("ssa"));
        let mut d = deployment(json!([{"name": "api", "image": "r/api:latest",
            "readinessProbe": {"httpGet": {"port": 8080}}}]));
        d["spec"]["template"]["spec"]["volumes"] =
            json!([{"name": "s", "secret": {"secretName": "s"}}]);
        let (_, d) = apply(&api, DEPLOY, "pulsedev", true, &d);
        let spec = &d["spec"];
        assert_eq!(
            (
                &spec["replicas"],
                &spec["revisionHistoryLimit"],
                &spec["progressDeadlineSeconds"]
            ),
            (&json!(1), &json!(10), &json!(600))
        );
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        let pod = &spec["template"]["spec"];
        for (k, v) in [
            ("restartPolicy", json!("Always")),
            ("dnsPolicy", json!("ClusterFirst")),
            ("schedulerName", json!("default-scheduler")),
            ("terminationGracePeriodSeconds", json!(30)),
            ("securityContext", json!({})),
        ] {
            assert_eq!(pod[k], v, "{k}");
        }
        let c = &pod["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always", ":latest");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(
            c["readinessProbe"],
            json!({"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(pod["volumes"][0]["secret"]["defaultMode"], 420);

        let svc = "/api/v1/namespaces/default/services/api";
        let (_, s) = apply(
            &api,
            svc,
            "pulsedev",
            true,
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "default"},
                "spec": {"selector": {"app": "api"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        );
        let spec = &s["spec"];
        assert_eq!(
            (
                &spec["type"],
                &spec["sessionAffinity"],
                &spec["internalTrafficPolicy"]
            ),
            (&json!("ClusterIP"), &json!("None"), &json!("Cluster"))
        );
        assert_eq!(
            (&spec["ipFamilies"], &spec["ipFamilyPolicy"]),
            (&json!(["IPv4"]), &json!("SingleStack"))
        );
        assert!(
            spec["clusterIP"].is_string() && spec["clusterIPs"][0] == spec["clusterIP"],
            "{spec:#}"
        );
        assert_eq!(spec["ports"][0]["protocol"], "TCP");

        let sts = "/apis/apps/v1/namespaces/default/statefulsets/db";
        let (_, s) = apply(
            &api,
            sts,
            "pulsedev",
            true,
            &json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"},
                "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "pg:17"}]}}}}),
        );
        let spec = &s["spec"];
        assert_eq!(spec["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            spec["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );

        let job = "/apis/batch/v1/namespaces/default/jobs/m";
        let (_, j) = apply(
            &api,
            job,
            "pulsedev",
            true,
            &json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "m", "namespace": "default"},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "f:1"}]}}}}),
        );
        for (k, v) in [
            ("completions", json!(1)),
            ("parallelism", json!(1)),
            ("backoffLimit", json!(6)),
            ("completionMode", json!("NonIndexed")),
            ("suspend", json!(false)),
            ("podReplacementPolicy", json!("TerminatingOrFailed")),
        ] {
            assert_eq!(j["spec"][k], v, "{k}");
        }
        assert_eq!(
            fields(&j, "pulsedev", "Apply")["f:spec"],
            json!({"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"m\"}": {".": {}, "f:image": {}, "f:name": {}}}, "f:restartPolicy": {}}}})
        );
    }

    #[test]
    fn a_no_op_apply_writes_nothing_and_generation_follows_the_spec_only() {
        let api = FakeApiServer::start(Options::new("ssa"));
        let mut d = deployment(
            json!([{"name": "api", "image": "r/api:1", "ports": [{"containerPort": 80}]}]),
        );
        apply(&api, DEPLOY, "pulsedev", true, &d);
        // The controllers write status until its pod is up (rollout.rs): settle first.
        let settled = |o: &Value| o["status"]["availableReplicas"] == 1;
        let before = (0..50)
            .map(|_| get(&api, DEPLOY))
            .find(settled)
            .expect("rolled out");
        let (code, again) = apply(&api, DEPLOY, "pulsedev", true, &d);
        assert_eq!(code, 200);
        assert_eq!(again, before, "same object, resourceVersion and times");
        assert!(!api.applies().last().unwrap().changed);

        // A label: a write, no new generation.
        d["metadata"]["labels"] = json!({"team": "a"});
        let (_, labelled) = apply(&api, DEPLOY, "pulsedev", true, &d);
        assert_ne!(
            labelled["metadata"]["resourceVersion"],
            before["metadata"]["resourceVersion"]
        );
        assert_eq!(
            labelled["metadata"]["generation"],
            before["metadata"]["generation"]
        );
        // The spec: a new generation.
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("r/api:2");
        let (_, changed) = apply(&api, DEPLOY, "pulsedev", true, &d);
        assert_eq!(changed["metadata"]["generation"], 2);

        // Status in an apply to the main resource is ignored, and not owned.
        let mut with_status = d.clone();
        with_status["status"] = json!({"replicas": 42});
        let (_, s) = apply(&api, DEPLOY, "pulsedev", true, &with_status);
        assert_ne!(s["status"]["replicas"], 42);
        assert!(fields(&s, "pulsedev", "Apply")["f:status"].is_null());
        // The controller owns status through the status subresource.
        let entry = s["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["subresource"] == "status")
            .cloned()
            .unwrap_or_else(|| panic!("{s:#}"));
        assert_eq!(entry["manager"], "kube-controller-manager");
        assert!(
            entry["fieldsV1"]["f:status"]["f:replicas"].is_object(),
            "{entry:#}"
        );
    }

    /// Applies `body` twice (the second one identical) and returns both answers.
    fn twice(api: &FakeApiServer, path: &str, body: &Value) -> (Value, Value) {
        let (code, first) = apply(api, path, "pulsedev", true, body);
        assert!(code == 200 || code == 201, "{first:#}");
        let settled = get(api, path);
        let (code, second) = apply(api, path, "pulsedev", true, body);
        assert_eq!(code, 200, "{second:#}");
        (settled, second)
    }

    fn rv(o: &Value) -> &Value {
        &o["metadata"]["resourceVersion"]
    }

    #[test]
    fn the_known_no_op_applies_that_still_write() {
        let api = FakeApiServer::start(Options::new("ssa"));
        // kubernetes#131175: an empty list is dropped on storage, so the applied `[]`
        // differs from the stored object every time.
        let np = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/deny";
        let policy = |egress: bool| {
            let mut p = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "deny", "namespace": "default"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}});
            if egress {
                p["spec"]["egress"] = json!([]);
            }
            p
        };
        let (first, second) = twice(&api, np, &policy(true));
        assert!(first["spec"].get("egress").is_none(), "{first:#}");
        assert_ne!(rv(&first), rv(&second));
        assert_eq!(
            first["metadata"]["generation"],
            second["metadata"]["generation"]
        );
        // Without the empty list: a true no-op.
        let (first, second) = twice(&api, np, &policy(false));
        assert_eq!(rv(&first), rv(&second));

        // kubernetes#118519: Secret stringData is folded into data and never stored.
        let secret = "/api/v1/namespaces/default/secrets/s";
        let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
            "stringData": {"password": "hunter2"}});
        let (first, second) = twice(&api, secret, &body);
        assert_eq!(first["data"], json!({"password": "aHVudGVyMg=="}));
        assert!(first.get("stringData").is_none() && second.get("stringData").is_none());
        assert_eq!(first["type"], "Opaque");
        assert_ne!(rv(&first), rv(&second));

        // kubernetes#119304: volumeClaimTemplates is atomic; a template without what the
        // server adds (apiVersion/kind, volumeMode, status.phase) is written again every time.
        let sts = "/apis/apps/v1/namespaces/default/statefulsets/db";
        let statefulset = |template: Value| {
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"},
                "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "pg:17"}]}},
                    "volumeClaimTemplates": [template]}})
        };
        let bare = json!({"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        let (first, second) = twice(&api, sts, &statefulset(bare));
        assert_ne!(rv(&first), rv(&second));
        assert_eq!(
            first["metadata"]["generation"],
            second["metadata"]["generation"]
        );
        let stored = &second["spec"]["volumeClaimTemplates"][0];
        assert_eq!(
            (&stored["apiVersion"], &stored["kind"]),
            (&json!("v1"), &json!("PersistentVolumeClaim"))
        );
        let complete = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "volumeMode": "Filesystem"},
            "status": {"phase": "Pending"}});
        let (first, second) = twice(&api, sts, &statefulset(complete));
        assert_eq!(rv(&first), rv(&second));
    }

    #[test]
    fn duplicate_list_map_keys_are_refused() {
        let api = FakeApiServer::start(Options::new("ssa"));
        let d = deployment(json!([{"name": "api", "image": "r/api:1",
            "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}]));
        let (code, s) = apply(&api, DEPLOY, "pulsedev", true, &d);
        assert_eq!(code, 500, "{s:#}");
        let message = s["message"].as_str().unwrap();
        assert!(
            message.contains("failed to create typed patch object")
                && message.contains(".spec.template.spec.containers[name=\"api\"].env: duplicate entries for key [name=\"A\"]"),
            "{message}"
        );
    }
}
