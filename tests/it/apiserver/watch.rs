//! Watches as kube-apiserver serves them: `GET <collection>?watch=true` streams every
//! change of the fake's store (applies, controller passes that create or replace pods,
//! status writes, deletions) as ADDED / MODIFIED / DELETED events, with bookmarks,
//! timeouts and the 410 that sends a client back to a list.
//!
//! The store ([`Objects`]) records each write with its resourceVersion in a history,
//! and the list's `metadata.resourceVersion` is the store's: a watch from it sees
//! exactly the changes after the list.
//!
//! What is imitated, and from where (kubernetes/kubernetes, staging/src/k8s.io/…):
//! - Which requests are watches: `watch` is decoded as a Go bool by the parameter codec
//!   (apimachinery pkg/runtime/conversion.go `Convert_Slice_string_To_bool`): absent,
//!   `0` and `false` (any case) are false, anything else (`true`, `1`, even empty) true.
//!   A watch on a single object's path is a watch of the collection with
//!   `metadata.name=<name>` (apiserver pkg/endpoints/handlers/get.go `ListResource`).
//! - Options are validated first (apimachinery pkg/apis/meta/internalversion/validation
//!   `validateWatchOptions`): `resourceVersionMatch` only with `sendInitialEvents`, and
//!   only `NotOlderThan`; `sendInitialEvents` needs `resourceVersionMatch=NotOlderThan`
//!   and the WatchList feature gate; failures are 422 `ListOptions.meta.k8s.io "" is
//!   invalid`. WatchList is on by default from Kubernetes 1.34 (Beta; it was off again in
//!   1.33: carvel-dev/kapp-controller#1845), so 1.36 serves streaming lists;
//!   [`Options::watch_list_off`] is the gate turned off.
//! - `timeoutSeconds` ends the stream (get.go: `context.WithTimeout`; handlers/watch.go
//!   `HandleHTTP` returns on `timeoutCh`, closing the chunked body cleanly). Without it
//!   the server picks `minRequestTimeout` (1800 s) times a random factor in [1, 2); here
//!   1800 s.
//! - The stream (handlers/watch.go `HandleHTTP`): status 200, `Content-Type:
//!   application/json` (as-is for JSON; other media types get `;stream=watch`),
//!   `Transfer-Encoding: chunked`, flushed at once; then one JSON document per event,
//!   `{"type": …, "object": …}` followed by a newline (the JSON stream framer).
//! - Where a watch starts (storage/cacher cacher.go `Watch`, watch_cache.go
//!   `getAllEventsSinceLocked`, and the API concepts page, "Semantics for watch"):
//!   `resourceVersion` unset or `0` sends the current state as synthetic ADDED events
//!   first, then the changes; any other value starts exactly after it, no synthetic
//!   events. `sendInitialEvents=true` sends the state, then a BOOKMARK annotated
//!   `k8s.io/initial-events-end: "true"` carrying the state's resourceVersion (KEP-3157;
//!   the watcher of kube-runtime ends its initial phase on it).
//! - Too old (watch_cache_history.go `GetIntervalLocked`): a resourceVersion older than
//!   the oldest event kept is `too old resource version: <rv> (<oldest-1>)`, an Expired
//!   410 — sent, once the version parsed, as one ERROR event on a 200 stream that then
//!   ends ("errors must fail with a watch event of type ERROR, rather than a directly
//!   returned error", cacher.go `Watch` → `newErrWatcher`). A watch that falls out of the
//!   window while open (etcd compaction under a watch served from storage,
//!   storage/etcd3/watcher.go) gets ERROR 410 "The resourceVersion for the provided
//!   watch is too old." and ends: [`FakeApiServer::expire_watches`].
//! - Selectors apply to the object before and after each change (cacher
//!   cache_watcher.go `convertToWatchEvent`): an object that starts matching is ADDED,
//!   one that stops matching is DELETED (its previous state, with the event's
//!   resourceVersion), a deleted object is DELETED with its last state and the
//!   deletion's resourceVersion (watch_cache.go `processEvent`).
//! - Bookmarks, when `allowWatchBookmarks=true` (cache_watcher.go `nextBookmarkTime`):
//!   roughly every minute (cacher.go `defaultBookmarkFrequency`) and 2 s before the
//!   watch's deadline, carrying only `metadata.resourceVersion` in an object of the
//!   watched kind. [`Options::bookmark_every`] shortens the minute for tests.
//!
//! Not modelled (recorded as unexpected): a resourceVersion that is not a number or is
//! newer than the store's (the cacher waits up to 3 s for it, then 504s), the legacy
//! `/watch/` paths, websockets.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{
    Call, FakeApiServer, Key, Options, Request, Response, Shared, bad_request, fail, field_match,
    gv, label_match, labels_of, str_of,
};

/// How watches behave (part of [`Options`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Between two bookmarks of a watch that allows them (the cacher's minute).
    pub bookmark_every: Duration,
    /// The WatchList feature gate (`sendInitialEvents`).
    pub watch_list: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            bookmark_every: Duration::from_secs(60),
            watch_list: true,
        }
    }
}

impl Options {
    /// Bookmarks every `d` instead of every minute.
    pub fn bookmark_every(mut self, d: Duration) -> Options {
        self.watch.bookmark_every = d;
        self
    }

    /// The WatchList feature gate off (as its Alpha releases and 1.33 ship it):
    /// `sendInitialEvents` is refused with 422.
    pub fn watch_list_off(mut self) -> Options {
        self.watch.watch_list = false;
        self
    }
}

/// The events a watch can still be served from (the watch cache's capacity).
const HISTORY: usize = 20_000;

/// One write of the store: the object before (`None`: created) and after (`None`:
/// deleted), at resourceVersion `rv`.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    key: Key,
    prev: Option<Value>,
    cur: Option<Value>,
}

/// The fake's object store: the objects by key, the resourceVersion counter, and the
/// history of changes watches are served from. Reads go through `Deref`; every write
/// goes through [`Objects::insert`] and [`Objects::remove`], so no change can miss its
/// event.
#[derive(Debug, Default)]
pub(super) struct Objects {
    map: BTreeMap<Key, Value>,
    /// The last resourceVersion handed out.
    pub(super) rv: u64,
    history: VecDeque<Change>,
    /// The resourceVersion of the last change recorded.
    last: u64,
    /// A watch may start after this resourceVersion or later; before it, 410.
    floor: u64,
    /// Bumped by [`FakeApiServer::expire_watches`]: open watches end with a 410.
    epoch: u64,
}

impl std::ops::Deref for Objects {
    type Target = BTreeMap<Key, Value>;

    fn deref(&self) -> &BTreeMap<Key, Value> {
        &self.map
    }
}

fn rv_of(o: &Value) -> u64 {
    str_of(o, &["metadata", "resourceVersion"])
        .parse()
        .unwrap_or(0)
}

impl Objects {
    pub(super) fn new(rv: u64) -> Objects {
        Objects {
            rv,
            last: rv,
            floor: rv,
            ..Objects::default()
        }
    }

    /// The next resourceVersion (etcd's revision after one more write).
    pub(super) fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    /// Stores `v` under `k`. A write that changes nothing is no event; a changed object
    /// whose resourceVersion is not newer than the last change (a writer that did not
    /// take a new one) gets one, as every write to etcd does.
    pub(super) fn insert(&mut self, k: Key, mut v: Value) -> Option<Value> {
        let prev = self.map.get(&k).cloned();
        if prev.as_ref() == Some(&v) {
            return prev;
        }
        let mut rv = rv_of(&v);
        if rv <= self.last {
            rv = self.next_rv().parse().unwrap();
            v["metadata"]["resourceVersion"] = json!(rv.to_string());
        }
        self.rv = self.rv.max(rv);
        self.map.insert(k.clone(), v.clone());
        self.record(Change {
            rv,
            key: k,
            prev: prev.clone(),
            cur: Some(v),
        });
        prev
    }

    /// Removes `k`: a DELETED event at a new resourceVersion.
    pub(super) fn remove(&mut self, k: &Key) -> Option<Value> {
        let prev = self.map.remove(k)?;
        let rv = self.next_rv().parse().unwrap();
        self.record(Change {
            rv,
            key: k.clone(),
            prev: Some(prev.clone()),
            cur: None,
        });
        Some(prev)
    }

    fn record(&mut self, c: Change) {
        self.last = c.rv;
        self.history.push_back(c);
        if self.history.len() > HISTORY
            && let Some(gone) = self.history.pop_front()
        {
            self.floor = gone.rv;
        }
    }

    /// The changes after `rv`, oldest first.
    fn since(&self, rv: u64) -> impl Iterator<Item = &Change> {
        let from = self.history.partition_point(|c| c.rv <= rv);
        self.history.range(from..)
    }

    /// Forgets the history (etcd compacted it; the watch cache's window moved past it)
    /// and ends every open watch with a 410.
    fn expire(&mut self) {
        self.history.clear();
        self.floor = self.rv;
        self.epoch += 1;
    }
}

impl FakeApiServer {
    /// Every open watch gets an ERROR event with an Expired 410 and ends, and the
    /// history is gone: a client resuming from the resourceVersion it had gets 410 too
    /// and must list again (see the module's notes).
    pub fn expire_watches(&self) {
        self.state().objects.expire();
    }

    /// The watch requests made so far (method, path and sorted query as
    /// [`FakeApiServer::requests`] shows them).
    pub fn watches(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.split_once('?')
                    .is_some_and(|(_, q)| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
            })
            .collect()
    }
}

/// A Go bool query parameter (`Convert_Slice_string_To_bool`).
fn go_bool(v: Option<&str>) -> Option<bool> {
    v.map(|v| !(v == "0" || v.eq_ignore_ascii_case("false")))
}

/// Whether `req` is a watch (served by [`serve`]).
pub(super) fn wants(req: &Request) -> bool {
    req.method == "GET" && go_bool(req.q("watch")) == Some(true)
}

/// What the watch of one request selects.
struct Filter {
    group: String,
    plural: String,
    kind: String,
    api_version: String,
    namespace: Option<String>,
    name: Option<String>,
    labels: String,
    fields: String,
}

impl Filter {
    fn passes(&self, k: &Key, o: &Value) -> bool {
        k.0 == self.group
            && k.1 == self.plural
            && self.namespace.as_ref().is_none_or(|ns| *ns == k.2)
            && self.name.as_ref().is_none_or(|n| *n == k.3)
            && (self.labels.is_empty() || label_match(&self.labels, &labels_of(o)))
            && (self.fields.is_empty() || field_match(&self.fields, o))
    }

    fn shown(&self, o: &Value) -> Value {
        let mut o = o.clone();
        o["apiVersion"] = json!(self.api_version);
        o
    }

    /// The event `c` is for this watch, if any (cache_watcher.go `convertToWatchEvent`).
    fn event(&self, c: &Change) -> Option<Value> {
        let now = c.cur.as_ref().filter(|o| self.passes(&c.key, o));
        let before = c.prev.as_ref().filter(|o| self.passes(&c.key, o));
        match (now, before) {
            (Some(o), None) => Some(json!({"type": "ADDED", "object": self.shown(o)})),
            (Some(o), Some(_)) => Some(json!({"type": "MODIFIED", "object": self.shown(o)})),
            (None, Some(o)) => {
                let mut o = self.shown(o);
                o["metadata"]["resourceVersion"] = json!(c.rv.to_string());
                Some(json!({"type": "DELETED", "object": o}))
            }
            (None, None) => None,
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Value {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"type": "BOOKMARK", "object": {"kind": self.kind, "apiVersion": self.api_version, "metadata": meta}})
    }
}

/// How a watch request went, for the connection that carried it.
pub(super) enum Served {
    /// Answered like any request (an error before the stream started).
    Answer(Response),
    /// The stream ended cleanly (last chunk sent): the connection can carry another.
    Ended,
    /// The client left or the server stopped: the connection is done.
    Broken,
}

/// Where the stream starts, decided under the lock.
struct Start {
    filter: Filter,
    /// Synthetic ADDED events of the current state.
    initial: Vec<Value>,
    /// Send the initial-events-end bookmark after them.
    initial_end: bool,
    cursor: u64,
    epoch: u64,
    bookmarks: bool,
    timeout: Duration,
    bookmark_every: Duration,
    /// An ERROR event to send instead of a stream (410).
    error: Option<Value>,
}

fn invalid(causes: &[(&str, &str)]) -> Response {
    let text: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
    let message = format!(
        "ListOptions.meta.k8s.io \"\" is invalid: {}",
        if text.len() == 1 {
            text[0].clone()
        } else {
            format!("[{}]", text.join(", "))
        }
    );
    fail(
        422,
        "Invalid",
        &message,
        json!({"group": "meta.k8s.io", "kind": "ListOptions",
            "causes": causes.iter().map(|(f, m)| json!({"reason": if m.starts_with("Unsupported") {"FieldValueNotSupported"} else {"FieldValueForbidden"}, "message": m, "field": f})).collect::<Vec<_>>()}),
    )
}

/// Reads the request's path and options and decides where its stream starts.
fn start(st: &mut super::State, req: &Request) -> Result<Start, Response> {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Err(st.unexpected(req)),
    };
    if !st.served(&gv(group, version)) {
        return Err(super::not_found_path());
    }
    let namespaced = rest.len() >= 3
        && rest[0] == "namespaces"
        && st
            .res(group, version, rest[2])
            .is_some_and(|r| r.namespaced);
    let (ns, rest) = if namespaced {
        (Some(rest[1]), &rest[2..])
    } else {
        (None, rest)
    };
    let Some(r) = st.res(group, version, rest[0]) else {
        return Err(st.unexpected(req));
    };
    if rest.len() > 2 || (ns.is_some() && !r.namespaced) {
        return Err(st.unexpected(req));
    }
    let name = rest.get(1).map(|n| n.to_string());
    let fields = req.q("fieldSelector").unwrap_or_default().to_string();
    if name.is_some() && !fields.is_empty() {
        // get.go: only a selector of exactly this name is allowed with a name.
        let same = name
            .as_ref()
            .is_some_and(|n| fields == format!("metadata.name={n}"));
        if !same {
            return Err(bad_request(
                "fieldSelector metadata.name doesn't match requested name",
            ));
        }
    }
    let send_initial = go_bool(req.q("sendInitialEvents"));
    let matching = req.q("resourceVersionMatch").unwrap_or_default();
    let mut causes: Vec<(&str, &str)> = Vec::new();
    if send_initial.is_some() {
        if matching != "NotOlderThan" {
            causes.push((
                "resourceVersionMatch",
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !st.opts.watch.watch_list {
            causes.push((
                "sendInitialEvents",
                "Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
            ));
        }
    }
    if !matching.is_empty() {
        if send_initial.is_none() {
            causes.push((
                "resourceVersionMatch",
                "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if matching != "NotOlderThan" {
            causes.push((
                "resourceVersionMatch",
                "Unsupported value: supported values: \"NotOlderThan\"",
            ));
        }
    }
    if !causes.is_empty() {
        return Err(invalid(&causes));
    }
    let timeout = match req.q("timeoutSeconds") {
        None => None,
        Some(t) => match t.parse::<i64>() {
            Ok(t) => Some(t),
            Err(_) => {
                return Err(bad_request(&format!(
                    "strconv.ParseInt: parsing \"{t}\": invalid syntax"
                )));
            }
        },
    };
    let timeout = match timeout {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        _ => Duration::from_secs(1800),
    };
    let filter = Filter {
        group: r.group.clone(),
        plural: r.plural.clone(),
        kind: r.kind.clone(),
        api_version: r.gv(),
        namespace: ns.map(str::to_string),
        name,
        labels: req.q("labelSelector").unwrap_or_default().to_string(),
        fields,
    };
    let rv = req.q("resourceVersion").unwrap_or_default();
    let from_state = send_initial.unwrap_or(rv.is_empty() || rv == "0");
    let objects = &st.objects;
    let mut s = Start {
        initial: Vec::new(),
        initial_end: false,
        cursor: objects.rv,
        epoch: objects.epoch,
        bookmarks: go_bool(req.q("allowWatchBookmarks")) == Some(true),
        timeout,
        bookmark_every: st.opts.watch.bookmark_every,
        error: None,
        filter,
    };
    if from_state {
        s.initial = objects
            .iter()
            .filter(|(k, o)| s.filter.passes(k, o))
            .map(|(_, o)| json!({"type": "ADDED", "object": s.filter.shown(o)}))
            .collect();
        s.initial_end = send_initial == Some(true) && s.bookmarks;
        return Ok(s);
    }
    if rv.is_empty() || rv == "0" {
        return Ok(s);
    }
    let Ok(n) = rv.parse::<u64>() else {
        return Err(st.unexpected(req));
    };
    if n > st.objects.rv {
        return Err(st.unexpected(req));
    }
    if n < st.objects.floor {
        let message = format!("too old resource version: {n} ({})", st.objects.floor);
        s.error = Some(
            json!({"type": "ERROR", "object": super::status_obj(410, "Expired", &message, Value::Null)}),
        );
        return Ok(s);
    }
    s.cursor = n;
    Ok(s)
}

/// Serves a watch request on `w` until its timeout, the client leaving, an expiry or
/// the server stopping.
pub(super) fn serve<W: Write>(
    shared: &Shared,
    req: &Request,
    w: &mut W,
    stop: &AtomicBool,
) -> Served {
    let at = shared.started.elapsed();
    let record = |st: &mut super::State, code: u16| {
        st.calls.push(Call {
            method: req.method.clone(),
            target: req.target.clone(),
            content_type: None,
            body: String::new(),
            status: code,
            at,
        });
    };
    let begun = Instant::now();
    let s = {
        let mut st = shared.state.lock().unwrap();
        st.reconcile();
        match start(&mut st, req) {
            Ok(s) => {
                record(&mut st, 200);
                s
            }
            Err(resp) => {
                record(&mut st, resp.code);
                return Served::Answer(resp);
            }
        }
    };
    let send = |w: &mut W, event: &Value| -> bool {
        let line = format!("{event}\n");
        write!(w, "{:x}\r\n{line}\r\n", line.len()).is_ok() && w.flush().is_ok()
    };
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nAudit-Id: fake\r\n\r\n";
    if w.write_all(head.as_bytes()).is_err() || w.flush().is_err() {
        return Served::Broken;
    }
    let end = |w: &mut W| -> Served {
        if w.write_all(b"0\r\n\r\n").and_then(|()| w.flush()).is_ok() {
            Served::Ended
        } else {
            Served::Broken
        }
    };
    if let Some(error) = &s.error {
        if !send(w, error) {
            return Served::Broken;
        }
        return end(w);
    }
    for e in &s.initial {
        if !send(w, e) {
            return Served::Broken;
        }
    }
    if s.initial_end && !send(w, &s.filter.bookmark(s.cursor, true)) {
        return Served::Broken;
    }
    let deadline = begun + s.timeout;
    let next_bookmark = |now: Instant| -> Option<Instant> {
        let t = (now + s.bookmark_every).min(deadline.checked_sub(Duration::from_secs(2))?);
        (s.bookmarks && t >= now).then_some(t)
    };
    let mut bookmark_at = next_bookmark(Instant::now());
    let mut cursor = s.cursor;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Served::Broken;
        }
        let (events, rv_now, expired) = {
            let st = shared.state.lock().unwrap();
            let objects = &st.objects;
            if objects.epoch != s.epoch {
                (Vec::new(), objects.rv, true)
            } else {
                let mut events = Vec::new();
                for c in objects.since(cursor) {
                    cursor = c.rv;
                    if let Some(e) = s.filter.event(c) {
                        events.push(e);
                    }
                }
                (events, objects.rv, false)
            }
        };
        if expired {
            let status = super::status_obj(
                410,
                "Expired",
                "The resourceVersion for the provided watch is too old.",
                Value::Null,
            );
            if !send(w, &json!({"type": "ERROR", "object": status})) {
                return Served::Broken;
            }
            return end(w);
        }
        for e in &events {
            if !send(w, e) {
                return Served::Broken;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return end(w);
        }
        if let Some(t) = bookmark_at
            && now >= t
        {
            if !send(w, &s.filter.bookmark(rv_now, false)) {
                return Served::Broken;
            }
            bookmark_at = next_bookmark(now);
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpStream;
    use std::sync::mpsc;

    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher;

    use super::super::tests::{raw, rt};
    use super::*;

    fn apply(api: &FakeApiServer, kind: &str, name: &str, labels: &str, data: &str) {
        let (path, body) = match kind {
            "ConfigMap" => (
                format!("/api/v1/namespaces/default/configmaps/{name}"),
                format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: {{{labels}}}}}\ndata: {{k: {data}}}\n"
                ),
            ),
            _ => (
                format!("/api/v1/namespaces/default/pods/{name}"),
                format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec: {{containers: [{{name: c, image: \"x:{data}\"}}]}}\n"
                ),
            ),
        };
        let (code, out) = raw(
            api,
            "PATCH",
            &format!("{path}?fieldManager=t&force=true"),
            "application/apply-patch+yaml",
            &body,
        );
        assert!(code == 200 || code == 201, "{code} {out}");
    }

    fn delete(api: &FakeApiServer, what: &str) {
        let (code, out) = raw(
            api,
            "DELETE",
            &format!("/api/v1/namespaces/default/{what}"),
            "",
            "",
        );
        assert_eq!(code, 200, "{out}");
    }

    /// One request over a fresh connection whose answer is a chunked stream that the
    /// server ends: the status line and headers, and each JSON event.
    fn stream(api: &FakeApiServer, target: &str) -> (String, Vec<Value>) {
        let mut c = TcpStream::connect(api.url().trim_start_matches("http://")).unwrap();
        write!(
            c,
            "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut r = BufReader::new(c);
        let mut head = String::new();
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            if l == "\r\n" {
                break;
            }
            head.push_str(&l);
        }
        if !head.contains("chunked") {
            let mut body = String::new();
            r.read_to_string(&mut body).unwrap();
            return (head, vec![serde_json::from_str(&body).unwrap()]);
        }
        let mut text = String::new();
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            text.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
        }
        assert!(text.ends_with('\n'), "{text}");
        let events = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (head, events)
    }

    fn list_rv(api: &FakeApiServer, path: &str) -> String {
        let (code, body) = raw(api, "GET", path, "", "");
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn summary(events: &[Value]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["type"].as_str().unwrap(),
                    e["object"]["metadata"]["name"].as_str().unwrap_or("-")
                )
            })
            .collect()
    }

    #[test]
    fn a_watch_from_a_lists_version_streams_every_change_through_the_selector_then_times_out() {
        let api = FakeApiServer::start(Options::new("test"));
        let rv0 = list_rv(
            &api,
            "/api/v1/namespaces/default/configmaps?labelSelector=app%3Dweb",
        );
        apply(&api, "ConfigMap", "a", "app: web", "1");
        apply(&api, "ConfigMap", "a", "app: web", "2");
        // Leaves the selector: DELETED with its last matching state.
        apply(&api, "ConfigMap", "a", "app: db", "2");
        apply(&api, "ConfigMap", "b", "app: db", "1");
        // Enters it: ADDED.
        apply(&api, "ConfigMap", "b", "app: web", "1");
        delete(&api, "configmaps/b");
        let begun = Instant::now();
        let (head, events) = stream(
            &api,
            &format!(
                "/api/v1/namespaces/default/configmaps?watch=1&labelSelector=app%3Dweb&resourceVersion={rv0}&timeoutSeconds=1"
            ),
        );
        // timeoutSeconds: the server ends the stream (with its last chunk) by itself.
        assert!(begun.elapsed() >= Duration::from_secs(1));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.contains("Content-Type: application/json\r\n"),
            "{head}"
        );
        assert_eq!(
            summary(&events),
            ["ADDED a", "MODIFIED a", "DELETED a", "ADDED b", "DELETED b"]
        );
        let rvs: Vec<u64> = events.iter().map(|e| rv_of(&e["object"])).collect();
        assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
        assert!(rvs[0] > rv0.parse::<u64>().unwrap());
        // The DELETED of a selector exit is the state before, at the change's version.
        assert_eq!(events[2]["object"]["metadata"]["labels"]["app"], "web");
        let a = api.object("ConfigMap", "default", "a").unwrap();
        assert_eq!(rv_of(&a), rvs[2]);
        assert_eq!(events[0]["object"]["apiVersion"], "v1");

        // No resourceVersion: the current state as ADDED first.
        apply(&api, "ConfigMap", "c", "app: web", "1");
        let (_, events) = stream(
            &api,
            "/api/v1/namespaces/default/configmaps?watch=true&labelSelector=app%3Dweb&timeoutSeconds=1",
        );
        assert_eq!(summary(&events), ["ADDED c"]);
        // A single object's path watches that object only.
        let (_, events) = stream(
            &api,
            &format!(
                "/api/v1/namespaces/default/configmaps/a?watch=true&resourceVersion={rv0}&timeoutSeconds=1"
            ),
        );
        assert_eq!(summary(&events), ["ADDED a", "MODIFIED a", "MODIFIED a"]);
        assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
        assert!(
            api.watches()
                .iter()
                .any(|w| w.contains("resourceVersion=") && w.contains("watch=1"))
        );
    }

    #[test]
    fn too_old_versions_streaming_lists_bookmarks_and_refused_options_as_the_real_server_answers() {
        let api =
            FakeApiServer::start(Options::new("test").bookmark_every(Duration::from_millis(300)));
        let rv0 = list_rv(&api, "/api/v1/namespaces/default/configmaps");
        apply(&api, "ConfigMap", "a", "app: web", "1");
        api.expire_watches();
        // Too old: 200, one ERROR event with the Expired 410, and the end.
        let (head, events) = stream(
            &api,
            &format!(
                "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv0}&timeoutSeconds=5"
            ),
        );
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["type"], "ERROR");
        let status = &events[0]["object"];
        assert_eq!(status["code"], 410);
        assert_eq!(status["reason"], "Expired");
        let now = list_rv(&api, "/api/v1/namespaces/default/configmaps");
        assert_eq!(
            status["message"],
            format!("too old resource version: {rv0} ({now})")
        );

        // Streaming list: the state, then the bookmark that ends it, then bookmarks
        // carrying only the version, the last 2 s before the deadline.
        let (_, events) = stream(
            &api,
            "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=3",
        );
        let names = summary(&events);
        assert_eq!(names[..2], ["ADDED a", "ADDED kube-root-ca.crt"]);
        let end = &events[2];
        assert_eq!(end["type"], "BOOKMARK");
        assert_eq!(
            end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
        assert_eq!(end["object"]["metadata"]["resourceVersion"], now.as_str());
        let marks = &events[3..];
        assert!((2..=5).contains(&marks.len()), "{events:?}");
        for m in marks {
            assert_eq!(m["type"], "BOOKMARK");
            assert_eq!(m["object"]["kind"], "ConfigMap");
            assert_eq!(
                m["object"]["metadata"],
                json!({"resourceVersion": now.as_str()})
            );
        }

        // Refused before any stream, as ValidateListOptions refuses them.
        let (code, body) = raw(
            &api,
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true",
            "",
            "",
        );
        assert_eq!(code, 422, "{body}");
        assert!(body.contains("ListOptions.meta.k8s.io \\\"\\\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"), "{body}");
        let (code, body) = raw(
            &api,
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersionMatch=NotOlderThan",
            "",
            "",
        );
        assert_eq!(code, 422, "{body}");
        let off = FakeApiServer::start(Options::new("test").watch_list_off());
        let (code, body) = raw(
            &off,
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
            "",
            "",
        );
        assert_eq!(code, 422, "{body}");
        assert!(
            body.contains("unless the WatchList feature gate is enabled"),
            "{body}"
        );
        // watch=false is a list.
        let (code, body) = raw(
            &api,
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=false",
            "",
            "",
        );
        assert_eq!(code, 200);
        assert!(body.contains("\"ConfigMapList\""), "{body}");
    }

    /// Runs kube-runtime's watcher of `default`'s pods labelled `app=web` on `rt`, each
    /// event as a line on the returned channel (the task ends when the channel does).
    fn watch_pods(
        rt: &tokio::runtime::Runtime,
        api: &FakeApiServer,
        config: watcher::Config,
    ) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel::<String>();
        let url = api.url().to_string();
        rt.spawn(async move {
            let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
            let pods: kube::Api<Pod> = kube::Api::namespaced(client, "default");
            let mut events = watcher(pods, config.labels("app=web")).boxed();
            while let Some(e) = events.next().await {
                let name = |p: Pod| p.metadata.name.unwrap();
                let line = match e {
                    Ok(watcher::Event::Init) => "init".to_string(),
                    Ok(watcher::Event::InitApply(p)) => format!("init-apply {}", name(p)),
                    Ok(watcher::Event::InitDone) => "init-done".to_string(),
                    Ok(watcher::Event::Apply(p)) => format!("apply {}", name(p)),
                    Ok(watcher::Event::Delete(p)) => format!("delete {}", name(p)),
                    Err(e) => format!("error {e}"),
                };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// kube-runtime's StreamingList: served where the WatchList gate is on (1.34+), the
    /// state ending with the initial-events-end bookmark; refused with 422 where it is off.
    #[test]
    fn kube_runtimes_streaming_list_works_with_the_gate_on_and_is_refused_with_it_off() {
        let rt = rt();
        let api = FakeApiServer::start(Options::new("test"));
        apply(&api, "Pod", "a", "app: web", "1");
        let rx = watch_pods(&rt, &api, watcher::Config::default().streaming_lists());
        let next = || rx.recv_timeout(Duration::from_secs(20)).expect("an event");
        assert_eq!(next(), "init");
        assert_eq!(next(), "init-apply a");
        assert_eq!(next(), "init-done");
        apply(&api, "Pod", "b", "app: web", "1");
        assert_eq!(next(), "apply b");
        let lists = api
            .requests()
            .iter()
            .filter(|r| r.contains("/pods?") && !r.contains("watch="))
            .count();
        assert_eq!(lists, 0, "{:#?}", api.requests());
        assert!(api.watches()[0].contains("sendInitialEvents=true"));

        let off = FakeApiServer::start(Options::new("test").watch_list_off());
        let rx = watch_pods(&rt, &off, watcher::Config::default().streaming_lists());
        let e = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(
            e.starts_with("error") && e.contains("WatchList feature gate"),
            "{e}"
        );
    }

    /// kube-runtime's watcher (ListWatch, its default) against the fake: the initial
    /// list, a pod added, a pod deleted, and after a 410 a new list.
    #[test]
    fn kube_runtimes_watcher_lists_follows_and_relists_after_a_410() {
        let api = FakeApiServer::start(Options::new("test"));
        apply(&api, "Pod", "a", "app: web", "1");
        apply(&api, "Pod", "other", "app: db", "1");
        // Declared before the channel so that it is dropped after it: the watcher's task
        // ends when its receiver is gone, before the runtime shuts down.
        let rt = rt();
        let rx = watch_pods(&rt, &api, watcher::Config::default());
        let next = || rx.recv_timeout(Duration::from_secs(20)).expect("an event");
        assert_eq!(next(), "init");
        assert_eq!(next(), "init-apply a");
        assert_eq!(next(), "init-done");
        apply(&api, "Pod", "b", "app: web", "1");
        apply(&api, "Pod", "other", "app: db", "2");
        assert_eq!(next(), "apply b");
        delete(&api, "pods/a");
        assert_eq!(next(), "delete a");
        api.expire_watches();
        let e = next();
        assert!(e.starts_with("error") && e.contains("too old"), "{e}");
        assert_eq!(next(), "init");
        assert_eq!(next(), "init-apply b");
        assert_eq!(next(), "init-done");
        apply(&api, "Pod", "c", "app: web", "1");
        assert_eq!(next(), "apply c");
        let reqs = api.requests();
        let lists: Vec<&String> = reqs
            .iter()
            .filter(|r| {
                r.starts_with("GET /api/v1/namespaces/default/pods?") && !r.contains("watch=")
            })
            .collect();
        assert_eq!(lists.len(), 2, "{reqs:#?}");
        assert!(lists[0].contains("labelSelector=app=web"), "{lists:?}");
        assert_eq!(api.watches().len(), 2, "{reqs:#?}");
        assert!(api.watches()[0].contains("allowWatchBookmarks=true"));
        assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
    }
}
