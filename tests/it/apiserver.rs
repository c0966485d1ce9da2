//! A stateful fake Kubernetes API server for integration tests of the real `pulsedev`
//! binary and library: plain HTTP on 127.0.0.1 (kube-rs accepts `http://` servers; no
//! TLS needed), an in-memory object store with server-side apply, discovery that learns
//! the kinds of applied CRDs, and "controllers" that make workloads, Jobs and
//! cert-manager objects ready (or fail them on purpose), so apply, waits, webhook
//! gates, prune, diagnosis and `status` run end to end.
//!
//! ```ignore
//! let api = FakeApiServer::start(Options::new("demo").fail_jobs("migrations"));
//! // The fake kind of fakes.rs writes `server: $FAKE_API` into the kubeconfig it makes:
//! let pd = Pd::new().env("FAKE_API", api.url())...;
//! // or write one where pulsedev keeps it:
//! api.write_kubeconfig(&home.join("state/pulsedev/demo/kubeconfig"), "kind-demo");
//! // ... run pulsedev ...
//! assert!(api.unexpected().is_empty(), "{:#?}", api.unexpected());
//! ```
//!
//! Served: `/version`, `/api`, `/apis`, `/apis/<g>`, `/api/v1`, `/apis/<g>/<v>` (also
//! the aggregated apidiscovery v2 documents when asked for by Accept), GET / LIST
//! (labelSelector, fieldSelector, across namespaces) / POST / PUT / PATCH (apply,
//! merge, strategic merge) / DELETE (with garbage collection of owned objects, of a
//! namespace's contents and of a CRD's objects) / deletecollection, `dryRun=All`,
//! pod logs (apiserver/logs.rs: `container`, `tailLines`, `timestamps`, `since*`, `previous`,
//! `follow` streamed chunked over restarts and pod replacement), `status` subresource GET and PATCH.
//! Seeded: namespaces default, kube-system, kube-public, kube-node-lease; StorageClass
//! `standard`; node `<cluster>-control-plane`.
//!
//! Server-side apply is the real one's (see apiserver/ssa.rs): field ownership per
//! manager in managedFields, removal of what a manager stopped applying, 409 conflicts
//! unless `force=true`, list merging by the Kubernetes 1.36 OpenAPI list extensions,
//! defaulting, and the storage round trip behind the "no-op apply still writes"
//! quirks (kubernetes#131175, #118519, #119304).
//!
//! Real-server validation, each behaviour cited in its module: unknown fields checked
//! against the Kubernetes 1.36 schemas kubernetes-validate ships (apiserver/schema.rs,
//! apiserver/fields.rs: server-side apply fails with the typed-patch 500, create/update
//! follow `fieldValidation` Warn/Ignore/Strict with `Warning` headers); immutable fields
//! and file-mode ranges as 422 Invalid (apiserver/immutable.rs); admission webhooks with a
//! start-up (no endpoints, connection refused, serving) and their EndpointSlices
//! (apiserver/webhooks.rs). Transport: canned `Warning` headers (`Options::warn`), slow
//! (`latency`) and hung (`Options::hang`) requests; plain HTTP by default, HTTPS as kind
//! serves it with `Options::tls` (a cluster CA, a serving certificate for 127.0.0.1, the
//! admin's client certificate in the kubeconfig, 403 for the anonymous user;
//! apiserver/tls.rs).
//!
//! Controllers and admission that make waits hard (Pod Security admission of controller
//! pods, failing pulls, crash loops, a StatefulSet stuck on a bad revision, scale-down,
//! OnDelete, lagging observedGeneration and Certificates) live in apiserver/controllers.rs;
//! Deployment rollouts over many passes (surge, maxUnavailable, starting and Terminating
//! pods) in apiserver/rollout.rs.
//!
//! Watches (apiserver/watch.rs): every write of the store is an event; `watch=true` on a
//! collection streams them with the real server's start points, selectors, bookmarks,
//! timeouts, streaming lists and 410s, and a list's resourceVersion is where a watch
//! from it starts.
//!
//! Not modelled: resourceVersion preconditions, RBAC, admission beyond the options.
//! Deletion (finalizers, Terminating namespaces and CRDs, PVC protection, propagation,
//! refused writes) is in apiserver/deletion.rs.

// The `up` tests use the parts these tests do not.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{Map, Value, json};

mod controllers;
mod deletion;
mod exec;
#[cfg(test)]
mod fidelity;
mod fields;
mod immutable;
mod logs;
mod rollout;
mod schema;
mod ssa;
mod tls;
mod watch;
mod webhooks;
pub use controllers::Sim;

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

/// How the fake cluster behaves. Change them at run time with [`FakeApiServer::configure`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The kind cluster's name: the one node is `<name>-control-plane`.
    pub cluster_name: String,
    /// `gitVersion` of `/version`.
    pub server_version: String,
    /// Whether the node's Ready condition is True.
    pub node_ready: bool,
    /// A new CRD reads as Established only from its Nth read on (0: at once).
    pub crd_established_after_reads: u32,
    /// After a CRD makes a group/version appear, discovery of it answers 404 this many
    /// more times ("discovery catches up").
    pub crd_discovery_lag: u32,
    /// Workloads and Jobs become ready (or fail) only this long after their spec
    /// changed; until then their pods are ContainerCreating.
    pub ready_after: Duration,
    /// Jobs whose name starts with one of these fail: BackoffLimitExceeded, Error pods
    /// whose log is `job_failure_log`.
    pub failing_jobs: Vec<String>,
    pub job_failure_log: String,
    /// Deployments / StatefulSets / DaemonSets by name whose first container crash-loops
    /// (CrashLoopBackOff, 5 restarts, last exit code 1) with `crash_log` as its log.
    pub crash_looping: Vec<String>,
    pub crash_log: String,
    /// The first N writes (dry-run or not) of cert-manager.io / acme.cert-manager.io
    /// objects fail with cert-manager's "failed calling webhook ... connection refused"
    /// 500, like right after cert-manager's install.
    pub webhook_refusals: u32,
    /// Every request waits this long before it is handled (outside any lock, so
    /// concurrent requests overlap measurably).
    pub latency: Duration,
    /// Serve HTTPS as kind's API server does: a cluster CA, a serving certificate for
    /// 127.0.0.1, the admin's client certificate in the kubeconfig (apiserver/tls.rs).
    pub tls: bool,
    /// Answers to give instead of the real one (see [`Fault`]).
    pub faults: Vec<Fault>,
    /// (kinds, n): a server-side apply of one of these kinds is held, before it is
    /// handled, until `n` such applies have arrived (or 10 s passed), so applies a client
    /// sends concurrently are in flight together however busy the machine is.
    pub hold_applies: Option<(Vec<String>, usize)>,
    /// Webhook configurations' servers: how long they have no endpoints, then refuse
    /// connections, after the configuration is stored (see apiserver/webhooks.rs).
    pub webhook_startup: webhooks::Startup,
    /// Requests whose path contains one of these are read and never answered (a paused
    /// node): the connection stays open until the server stops.
    pub hang: Vec<String>,
    /// (path contains, text): answers to matching requests carry `Warning: 299 - "text"`,
    /// as the API server's deprecation and validation warnings do.
    pub warnings: Vec<(String, String)>,
    /// Reconcile passes each deletion controller step waits (namespace contents, CRD
    /// instances, garbage collection); see apiserver/deletion.rs.
    pub deletion_lag: u32,
    /// Controllers and admission that make waiting hard (tests/it/apiserver/controllers.rs).
    pub sim: Sim,
    /// (pod name prefix, Docker container): exec into such a pod runs the command in
    /// that container on the test engine (apiserver/exec.rs).
    pub exec_into: Vec<(String, String)>,
    /// Bookmarks and the WatchList gate of watches (apiserver/watch.rs).
    pub watch: watch::Settings,
}

/// A canned failure: the next `times` requests whose method is `method` (or any, when
/// empty) and whose path contains `path_contains` are answered with a Status of `code`,
/// `reason` and `message`.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: String,
    pub path_contains: String,
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub times: u32,
    /// The request body is appended to `message`, as servers that quote what they got
    /// do: a 422 Invalid names the rejected value (apimachinery
    /// pkg/util/validation/field/errors.go, `Invalid value: %#v`), and an admission
    /// webhook's denial message is whatever the webhook writes, often the object.
    pub echo_body: bool,
    /// The bodies echoed so far (for tests that look for them in pulsedev's output).
    pub echoed: Vec<String>,
}

impl Options {
    pub fn new(cluster_name: &str) -> Options {
        Options {
            cluster_name: cluster_name.to_string(),
            server_version: "v1.36.1".into(),
            node_ready: true,
            crd_established_after_reads: 0,
            crd_discovery_lag: 0,
            ready_after: Duration::ZERO,
            failing_jobs: Vec::new(),
            job_failure_log: [
                "Flyway OSS Edition 11.14.1 by Redgate",
                "Database: jdbc:postgresql://postgres:5432/pulsewatch (PostgreSQL 17.6)",
                "Successfully validated 2 migrations (execution time 00:00.021s)",
                "Migrating schema \"public\" to version \"2 - check results\"",
                "ERROR: Migration V2__check_results.sql failed",
                "SQL State  : 42P01",
                "Message    : ERROR: relation \"checks\" does not exist",
            ]
            .join("\n"),
            crash_looping: Vec::new(),
            crash_log: [
                "{\"level\":\"info\",\"msg\":\"starting\"}",
                "{\"level\":\"error\",\"msg\":\"cannot connect to postgres: connection refused\"}",
                "Error: database unavailable",
            ]
            .join("\n"),
            webhook_refusals: 0,
            latency: Duration::ZERO,
            tls: false,
            faults: Vec::new(),
            hold_applies: None,
            webhook_startup: (0, 0),
            hang: Vec::new(),
            warnings: Vec::new(),
            deletion_lag: 1,
            sim: Sim::default(),
            exec_into: Vec::new(),
            watch: watch::Settings::default(),
        }
    }

    pub fn fail_jobs(mut self, name_prefix: &str) -> Options {
        self.failing_jobs.push(name_prefix.to_string());
        self
    }

    pub fn crash_loop(mut self, workload: &str) -> Options {
        self.crash_looping.push(workload.to_string());
        self
    }

    pub fn ready_after(mut self, d: Duration) -> Options {
        self.ready_after = d;
        self
    }

    /// CRDs Established from their `reads`th read on; discovery of new groups lags by
    /// `lag` answers.
    pub fn crd_lag(mut self, reads: u32, lag: u32) -> Options {
        self.crd_established_after_reads = reads;
        self.crd_discovery_lag = lag;
        self
    }

    pub fn webhook_refusals(mut self, n: u32) -> Options {
        self.webhook_refusals = n;
        self
    }

    pub fn node_not_ready(mut self) -> Options {
        self.node_ready = false;
        self
    }

    /// Answers the next `times` matching requests with `code` (see [`Fault`]); e.g.
    /// `.fault("PATCH", "/deployments/api", 500, "InternalError", "etcdserver: request timed out", 1)`.
    pub fn fault(
        mut self,
        method: &str,
        path_contains: &str,
        code: u16,
        reason: &str,
        message: &str,
        times: u32,
    ) -> Options {
        self.faults.push(Fault {
            method: method.into(),
            path_contains: path_contains.into(),
            code,
            reason: reason.into(),
            message: message.into(),
            times,
            echo_body: false,
            echoed: Vec::new(),
        });
        self
    }

    /// As [`Options::fault`], with the request body appended to the message.
    pub fn fault_echoing(
        mut self,
        method: &str,
        path_contains: &str,
        code: u16,
        reason: &str,
        message: &str,
        times: u32,
    ) -> Options {
        self = self.fault(method, path_contains, code, reason, message, times);
        self.faults.last_mut().expect("just pushed").echo_body = true;
        self
    }

    /// See [`Options::hold_applies`](Options#structfield.hold_applies).
    pub fn hold_applies(mut self, kinds: &[&str], n: usize) -> Options {
        self.hold_applies = Some((kinds.iter().map(|k| k.to_string()).collect(), n));
        self
    }

    pub fn latency(mut self, d: Duration) -> Options {
        self.latency = d;
        self
    }

    /// HTTPS with client certificates, as kind serves it (see [`Options::tls`]).
    pub fn tls(mut self) -> Options {
        self.tls = true;
        self
    }

    /// Webhook servers without endpoints for `no_endpoints` reconcile passes, then
    /// refusing connections for `refused` passes (apiserver/webhooks.rs).
    pub fn webhook_startup(mut self, no_endpoints: u32, refused: u32) -> Options {
        self.webhook_startup = (no_endpoints, refused);
        self
    }

    pub fn hang(mut self, path_contains: &str) -> Options {
        self.hang.push(path_contains.to_string());
        self
    }

    /// Exec into pods whose name starts with `pod_prefix` runs in Docker container
    /// `container` (see apiserver/exec.rs).
    pub fn exec_into(mut self, pod_prefix: &str, container: &str) -> Options {
        self.exec_into.push((pod_prefix.into(), container.into()));
        self
    }

    pub fn warn(mut self, path_contains: &str, text: &str) -> Options {
        self.warnings.push((path_contains.into(), text.into()));
        self
    }
}

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

/// One write of an object through server-side apply (not dry-run), with when the
/// request arrived and when its answer was ready, since the server started.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyRecord {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Whether the stored object changed (a no-op apply keeps its resourceVersion).
    pub changed: bool,
    pub started: Duration,
    pub finished: Duration,
}

impl ApplyRecord {
    /// Whether the two requests were in flight at the same time.
    pub fn overlaps(&self, other: &ApplyRecord) -> bool {
        self.started < other.finished && other.started < self.finished
    }
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    pub content_type: Option<String>,
    pub body: String,
    pub status: u16,
    pub at: Duration,
}

impl Call {
    /// See [`FakeApiServer::requests`].
    pub fn line(&self) -> String {
        let (path, query) = self.target.split_once('?').unwrap_or((&self.target, ""));
        let mut q = parse_query(query);
        q.sort();
        let q: Vec<String> = q.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        if q.is_empty() {
            format!("{} {path}", self.method)
        } else {
            format!("{} {path}?{}", self.method, q.join("&"))
        }
    }
}

pub struct FakeApiServer {
    url: String,
    port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    /// With `Options::tls`: the CA and the admin's client certificate.
    pki: Option<Arc<tls::Pki>>,
}

struct Shared {
    state: Mutex<State>,
    started: Instant,
    /// Held applies that have arrived (see `Options::hold_applies`).
    held: Mutex<usize>,
    arrived: std::sync::Condvar,
}

impl FakeApiServer {
    /// Listens on a free port of 127.0.0.1 and serves until dropped.
    pub fn start(opts: Options) -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pki = opts.tls.then(|| Arc::new(tls::Pki::new()));
        let server_tls = pki.as_ref().map(|p| p.server.clone());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(opts)),
            started: Instant::now(),
            held: Mutex::new(0),
            arrived: std::sync::Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let (sh, st, tls) = (sh.clone(), st.clone(), server_tls.clone());
                    std::thread::spawn(move || serve(conn, &sh, &st, tls));
                }
            })
            .unwrap();
        let scheme = if pki.is_some() { "https" } else { "http" };
        FakeApiServer {
            url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            shared,
            stop,
            pki,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig with one cluster, user (a token) and context, all named `context`
    /// (kind's `kind-<name>`), which is also the current context.
    pub fn kubeconfig(&self, context: &str) -> String {
        if let Some(pki) = &self.pki {
            return pki.kubeconfig(&self.url, context);
        }
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {context}\n  cluster:\n    server: {url}\ncontexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {context}\ncurrent-context: {context}\npreferences: {{}}\nusers:\n- name: {context}\n  user:\n    token: fake-token\n",
            url = self.url
        )
    }

    /// Writes [`FakeApiServer::kubeconfig`] to `path` (parents created).
    pub fn write_kubeconfig(&self, path: &Path, context: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, self.kubeconfig(context)).unwrap();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    /// Changes the options while serving (e.g. heal a crash loop, take the node down).
    pub fn configure(&self, f: impl FnOnce(&mut Options)) {
        let mut st = self.state();
        f(&mut st.opts);
        st.reconcile();
    }

    /// Every request as method, path and query with the parameters sorted by name and
    /// decoded, e.g.
    /// `PATCH /apis/apps/v1/namespaces/x/deployments/api?fieldManager=pulsedev&fieldValidation=Strict&force=true`
    /// or `GET /api/v1/namespaces/x/pods?labelSelector=app=api`.
    pub fn requests(&self) -> Vec<String> {
        self.state().calls.iter().map(Call::line).collect()
    }

    /// Every request with its body, content type and answer code.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Requests the fake does not understand (unknown route, resource or verb): a test
    /// of a real command should assert there were none.
    pub fn unexpected(&self) -> Vec<String> {
        self.state().unexpected.clone()
    }

    /// Every exec the server served or refused, in order.
    pub fn execs(&self) -> Vec<exec::Record> {
        self.state().execs.clone()
    }

    /// Every stored object (controllers' pods, ReplicaSets, Secrets and events included).
    pub fn objects(&self) -> Vec<Value> {
        self.state().objects.values().cloned().collect()
    }

    /// The stored object of `kind` (e.g. `Deployment`), namespace (`""` for cluster
    /// scope) and name.
    pub fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state()
            .objects
            .iter()
            .find(|((_, _, ns, n), o)| {
                ns == namespace && n == name && o["kind"].as_str() == Some(kind)
            })
            .map(|(_, o)| o.clone())
    }

    /// Every stored object of `kind`.
    pub fn objects_of(&self, kind: &str) -> Vec<Value> {
        self.state()
            .objects
            .values()
            .filter(|o| o["kind"].as_str() == Some(kind))
            .cloned()
            .collect()
    }

    /// (kind, namespace, name) of every server-side apply that was stored, in the order
    /// the server handled them.
    pub fn applied_in_order(&self) -> Vec<(String, String, String)> {
        self.state()
            .applies
            .iter()
            .map(|a| (a.kind.clone(), a.namespace.clone(), a.name.clone()))
            .collect()
    }

    /// Every stored server-side apply with its timing.
    pub fn applies(&self) -> Vec<ApplyRecord> {
        self.state().applies.clone()
    }

    /// Stops answering: new connections are refused, open ones are closed after their
    /// current request.
    pub fn stop(&self) {
        if !self.stop.swap(true, Ordering::SeqCst) {
            let _ = TcpStream::connect(("127.0.0.1", self.port));
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1 (keep-alive, Content-Length or chunked bodies)
// ---------------------------------------------------------------------------------------

struct Request {
    method: String,
    target: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn dry_run(&self) -> bool {
        self.q("dryRun").is_some_and(|v| v == "All")
    }
}

struct Response {
    code: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Texts of `Warning` headers (RFC 7234 code 299, agent `-`, as
    /// k8s.io/apiserver pkg/endpoints/filters/warning.go writes them).
    warnings: Vec<String>,
}

impl Response {
    fn json(code: u16, v: &Value) -> Response {
        Response {
            code,
            content_type: "application/json",
            body: serde_json::to_vec(v).unwrap(),
            warnings: Vec::new(),
        }
    }

    fn text(code: u16, t: &str) -> Response {
        Response {
            code,
            content_type: "text/plain",
            body: t.as_bytes().to_vec(),
            warnings: Vec::new(),
        }
    }
}

fn serve(
    mut conn: TcpStream,
    shared: &Shared,
    stop: &AtomicBool,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let _ = conn.set_nodelay(true);
    let Some(config) = tls else {
        return serve_stream(conn, false, shared, stop);
    };
    let Ok(mut server) = rustls::ServerConnection::new(config) else {
        return;
    };
    // The handshake first: whether the client showed a certificate decides who it is.
    while server.is_handshaking() {
        if server.complete_io(&mut conn).is_err() {
            return;
        }
    }
    let anonymous = server.peer_certificates().is_none_or(|c| c.is_empty());
    serve_stream(
        rustls::StreamOwned::new(server, conn),
        anonymous,
        shared,
        stop,
    );
}

fn serve_stream<S: exec::Split>(conn: S, anonymous: bool, shared: &Shared, stop: &AtomicBool) {
    let mut reader = BufReader::new(conn);
    loop {
        let Some(req) = read_request(&mut reader) else {
            return;
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let hung = {
            let st = shared.state.lock().unwrap();
            st.opts.hang.iter().any(|h| req.path.contains(h.as_str()))
        };
        if hung {
            // Accepted and read, never answered, until the server stops.
            while !stop.load(Ordering::SeqCst) {
                std::thread::park_timeout(Duration::from_millis(20));
            }
            return;
        }
        let resp = if anonymous && !tls::public(&req.path) {
            let (code, status) = tls::forbidden(&req.method, &req.path);
            Response::json(code, &status)
        } else if logs::is_follow(&req) {
            match logs::follow(shared, &req, reader.get_mut(), stop) {
                Some(r) => r,
                // Streamed (with `Connection: close`): the connection is done.
                None => return,
            }
        } else if watch::wants(&req) {
            match watch::serve(shared, &req, reader.get_mut(), stop) {
                watch::Served::Answer(r) => r,
                watch::Served::Ended if !close => continue,
                _ => return,
            }
        } else if exec::wants(&req) {
            // An upgraded connection is the exec's until it ends.
            match exec::serve(shared, &req, &mut reader) {
                Some(resp) => resp,
                None => return,
            }
        } else {
            handle(shared, req)
        };
        let writer = reader.get_mut();
        let warnings: String = resp
            .warnings
            .iter()
            .map(|w| format!("Warning: 299 - {}\r\n", serde_json::to_string(w).unwrap()))
            .collect();
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nAudit-Id: fake\r\n{warnings}\r\n",
            resp.code,
            reason_phrase(resp.code),
            resp.content_type,
            resp.body.len()
        );
        if writer.write_all(head.as_bytes()).is_err()
            || writer.write_all(&resp.body).is_err()
            || writer.flush().is_err()
            || close
        {
            return;
        }
    }
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

fn read_request<S: Read>(r: &mut BufReader<S>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0; len];
        r.read_exact(&mut body).ok()?;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), parse_query(q)),
        None => (target.clone(), Vec::new()),
    };
    Some(Request {
        method,
        target,
        path,
        query,
        headers,
        body,
    })
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (unescape(k), unescape(v)),
            None => (unescape(p), String::new()),
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = if b[i] == b'%' {
            s.get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        } else {
            None
        };
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn handle(shared: &Shared, req: Request) -> Response {
    let started = shared.started.elapsed();
    let (latency, hold) = {
        let st = shared.state.lock().unwrap();
        (st.opts.latency, st.opts.hold_applies.clone())
    };
    if !latency.is_zero() {
        std::thread::sleep(latency);
    }
    if let Some((kinds, n)) = hold
        && req.method == "PATCH"
        && req.header("content-type") == Some("application/apply-patch+yaml")
        && !req.target.contains("dryRun")
        && serde_json::from_slice::<Value>(&req.body)
            .is_ok_and(|b| kinds.iter().any(|k| b["kind"] == k.as_str()))
    {
        let mut held = shared.held.lock().unwrap();
        *held += 1;
        shared.arrived.notify_all();
        let _ = shared
            .arrived
            .wait_timeout_while(held, Duration::from_secs(10), |h| *h < n)
            .unwrap();
    }
    let mut st = shared.state.lock().unwrap();
    st.reconcile();
    st.last_apply = None;
    let mut resp = st.route(&req);
    for (path, text) in &st.opts.warnings {
        if req.path.contains(path.as_str()) && !resp.warnings.contains(text) {
            resp.warnings.push(text.clone());
        }
    }
    st.reconcile();
    let finished = shared.started.elapsed();
    if let Some((kind, namespace, name, changed)) = st.last_apply.take() {
        st.applies.push(ApplyRecord {
            kind,
            namespace,
            name,
            changed,
            started,
            finished,
        });
    }
    st.calls.push(Call {
        method: req.method.clone(),
        target: req.target.clone(),
        content_type: req.header("content-type").map(str::to_string),
        body: String::from_utf8_lossy(&req.body).into_owned(),
        status: resp.code,
        at: started,
    });
    resp
}

// ---------------------------------------------------------------------------------------
// Resources and discovery
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Res {
    group: String,
    version: String,
    plural: String,
    singular: String,
    kind: String,
    namespaced: bool,
    subresources: Vec<String>,
    short_names: Vec<String>,
    /// The CRD that defines it.
    crd: Option<String>,
}

impl Res {
    fn gv(&self) -> String {
        gv(&self.group, &self.version)
    }

    /// `deployments.apps`, `secrets`: how the server names the resource in messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Job.batch`, `Namespace`: how validation messages name the kind.
    fn kind_qualified(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

fn gv(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// (groupVersion, plural, kind, namespaced, subresources)
const BUILTIN: &[(&str, &str, &str, bool, &str)] = &[
    ("v1", "bindings", "Binding", true, ""),
    ("v1", "componentstatuses", "ComponentStatus", false, ""),
    ("v1", "configmaps", "ConfigMap", true, ""),
    ("v1", "endpoints", "Endpoints", true, ""),
    ("v1", "events", "Event", true, ""),
    ("v1", "limitranges", "LimitRange", true, ""),
    ("v1", "namespaces", "Namespace", false, "finalize,status"),
    ("v1", "nodes", "Node", false, "proxy,status"),
    (
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
        "status",
    ),
    (
        "v1",
        "persistentvolumes",
        "PersistentVolume",
        false,
        "status",
    ),
    (
        "v1",
        "pods",
        "Pod",
        true,
        "attach,binding,ephemeralcontainers,eviction,exec,log,portforward,proxy,resize,status",
    ),
    ("v1", "podtemplates", "PodTemplate", true, ""),
    (
        "v1",
        "replicationcontrollers",
        "ReplicationController",
        true,
        "scale,status",
    ),
    ("v1", "resourcequotas", "ResourceQuota", true, "status"),
    ("v1", "secrets", "Secret", true, ""),
    ("v1", "serviceaccounts", "ServiceAccount", true, "token"),
    ("v1", "services", "Service", true, "proxy,status"),
    (
        "apps/v1",
        "controllerrevisions",
        "ControllerRevision",
        true,
        "",
    ),
    ("apps/v1", "daemonsets", "DaemonSet", true, "status"),
    ("apps/v1", "deployments", "Deployment", true, "scale,status"),
    ("apps/v1", "replicasets", "ReplicaSet", true, "scale,status"),
    (
        "apps/v1",
        "statefulsets",
        "StatefulSet",
        true,
        "scale,status",
    ),
    ("batch/v1", "cronjobs", "CronJob", true, "status"),
    ("batch/v1", "jobs", "Job", true, "status"),
    (
        "autoscaling/v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        true,
        "status",
    ),
    (
        "autoscaling/v1",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        true,
        "status",
    ),
    (
        "policy/v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        "status",
    ),
    (
        "networking.k8s.io/v1",
        "ingressclasses",
        "IngressClass",
        false,
        "",
    ),
    (
        "networking.k8s.io/v1",
        "ingresses",
        "Ingress",
        true,
        "status",
    ),
    (
        "networking.k8s.io/v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        "",
    ),
    (
        "networking.k8s.io/v1",
        "ipaddresses",
        "IPAddress",
        false,
        "",
    ),
    (
        "networking.k8s.io/v1",
        "servicecidrs",
        "ServiceCIDR",
        false,
        "status",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        "",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "clusterroles",
        "ClusterRole",
        false,
        "",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "rolebindings",
        "RoleBinding",
        true,
        "",
    ),
    ("rbac.authorization.k8s.io/v1", "roles", "Role", true, ""),
    (
        "admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
        "",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        false,
        "",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        false,
        "status",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        false,
        "",
    ),
    (
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        "status",
    ),
    (
        "apiregistration.k8s.io/v1",
        "apiservices",
        "APIService",
        false,
        "status",
    ),
    ("coordination.k8s.io/v1", "leases", "Lease", true, ""),
    (
        "scheduling.k8s.io/v1",
        "priorityclasses",
        "PriorityClass",
        false,
        "",
    ),
    ("storage.k8s.io/v1", "csidrivers", "CSIDriver", false, ""),
    ("storage.k8s.io/v1", "csinodes", "CSINode", false, ""),
    (
        "storage.k8s.io/v1",
        "csistoragecapacities",
        "CSIStorageCapacity",
        true,
        "",
    ),
    (
        "storage.k8s.io/v1",
        "storageclasses",
        "StorageClass",
        false,
        "",
    ),
    (
        "storage.k8s.io/v1",
        "volumeattachments",
        "VolumeAttachment",
        false,
        "status",
    ),
    (
        "discovery.k8s.io/v1",
        "endpointslices",
        "EndpointSlice",
        true,
        "",
    ),
    (
        "node.k8s.io/v1",
        "runtimeclasses",
        "RuntimeClass",
        false,
        "",
    ),
    (
        "certificates.k8s.io/v1",
        "certificatesigningrequests",
        "CertificateSigningRequest",
        false,
        "approval,status",
    ),
    ("events.k8s.io/v1", "events", "Event", true, ""),
    (
        "flowcontrol.apiserver.k8s.io/v1",
        "flowschemas",
        "FlowSchema",
        false,
        "status",
    ),
    (
        "flowcontrol.apiserver.k8s.io/v1",
        "prioritylevelconfigurations",
        "PriorityLevelConfiguration",
        false,
        "status",
    ),
];

fn builtin_resources() -> Vec<Res> {
    BUILTIN
        .iter()
        .map(|(gvs, plural, kind, namespaced, subs)| {
            let (group, version) = gvs.split_once('/').unwrap_or(("", gvs));
            Res {
                group: group.into(),
                version: version.into(),
                plural: plural.to_string(),
                singular: kind.to_lowercase(),
                kind: kind.to_string(),
                namespaced: *namespaced,
                subresources: subs
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                short_names: Vec::new(),
                crd: None,
            }
        })
        .collect()
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn sub_verbs(sub: &str) -> Vec<&'static str> {
    match sub {
        "log" | "proxy" => vec!["get"],
        "exec" | "attach" | "portforward" => vec!["create", "get"],
        "eviction" | "binding" | "token" => vec!["create"],
        _ => vec!["get", "patch", "update"],
    }
}

// ---------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------

/// (group, plural, namespace or "", name)
type Key = (String, String, String, String);

fn key(group: &str, plural: &str, ns: &str, name: &str) -> Key {
    (group.into(), plural.into(), ns.into(), name.into())
}

struct State {
    opts: Options,
    resources: Vec<Res>,
    /// The objects, the resourceVersion counter and the changes watches are served
    /// from (apiserver/watch.rs).
    objects: watch::Objects,
    uids: u64,
    /// groupVersion → discovery answers that still say 404.
    lag: HashMap<String, u32>,
    /// CRD name → reads left before it is Established.
    establishing: HashMap<String, u32>,
    refusals: u32,
    /// (namespace, pod, container) → log text.
    logs: HashMap<(String, String, String), String>,
    /// Timestamped lines per container instance, restarts, follow streams (logs.rs).
    pod_logs: logs::Store,
    /// uid → when the object may become ready.
    ready_at: HashMap<String, Instant>,
    calls: Vec<Call>,
    unexpected: Vec<String>,
    applies: Vec<ApplyRecord>,
    last_apply: Option<(String, String, String, bool)>,
    /// Webhook configuration name → when it was first stored (apiserver/webhooks.rs).
    webhook_seen: HashMap<String, u64>,
    /// Object → passes left before its deletion controller's next step.
    countdown: HashMap<Key, u32>,
    /// The uid of the object the last immediate delete removed.
    gone_uid: String,
    ext: controllers::Extra,
    /// Every exec served or refused (apiserver/exec.rs).
    execs: Vec<exec::Record>,
}

fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A stable short hash of JSON, in the alphabet Kubernetes uses for generated names.
fn short_hash(v: &impl std::fmt::Display, len: usize) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(v.to_string().as_bytes());
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    digest
        .iter()
        .take(len)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn status_obj(code: u16, reason: &str, message: &str, details: Value) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if !details.is_null() {
        s["details"] = details;
    }
    s
}

fn fail(code: u16, reason: &str, message: &str, details: Value) -> Response {
    Response::json(code, &status_obj(code, reason, message, details))
}

fn not_found_res(r: &Res, name: &str) -> Response {
    fail(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", r.qualified()),
        json!({"name": name, "group": r.group, "kind": r.plural}),
    )
}

fn not_found_path() -> Response {
    fail(
        404,
        "NotFound",
        "the server could not find the requested resource",
        json!({}),
    )
}

fn bad_request(message: &str) -> Response {
    fail(400, "BadRequest", message, Value::Null)
}

fn labels_of(o: &Value) -> Map<String, Value> {
    o["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

fn owner_ref(o: &Value) -> Value {
    json!({
        "apiVersion": o["apiVersion"],
        "kind": o["kind"],
        "name": o["metadata"]["name"],
        "uid": o["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn owned_by(o: &Value, uid: &str) -> bool {
    o["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(uid)))
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or_default()
}

/// JSON merge patch (RFC 7386).
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Conditions with the transition times of `old` kept where nothing changed, so a
/// status computed again is equal to the stored one.
fn keep_times(new: &mut Value, old: &Value) {
    let (Some(new), Some(old)) = (new.as_array_mut(), old.as_array()) else {
        return;
    };
    for c in new {
        if let Some(o) = old.iter().find(|o| {
            o["type"] == c["type"] && o["status"] == c["status"] && o["reason"] == c["reason"]
        }) {
            for f in ["lastTransitionTime", "lastUpdateTime", "lastProbeTime"] {
                if !o[f].is_null() {
                    c[f] = o[f].clone();
                }
            }
        }
    }
}

fn cond(t: &str, s: bool, reason: &str, message: &str) -> Value {
    let now = now_rfc3339();
    json!({
        "type": t,
        "status": if s { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
        "lastUpdateTime": now,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodMode {
    Running,
    Pending,
    Crash,
    Succeeded,
    Failed,
}

// ---- label and field selectors ----

fn split_terms(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn label_match(selector: &str, labels: &Map<String, Value>) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    split_terms(selector).iter().all(|t| {
        let set = |rest: &str| -> Vec<String> {
            rest.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(|v| v.trim().to_string())
                .collect()
        };
        if let Some((k, rest)) = t.split_once(" notin ") {
            return get(k.trim()).is_none_or(|v| !set(rest).iter().any(|x| x == v));
        }
        if let Some((k, rest)) = t.split_once(" in ") {
            return get(k.trim()).is_some_and(|v| set(rest).iter().any(|x| x == v));
        }
        if let Some((k, v)) = t.split_once("!=") {
            return get(k.trim()) != Some(v.trim());
        }
        if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            return get(k.trim()) == Some(v.trim());
        }
        if let Some(k) = t.strip_prefix('!') {
            return get(k.trim()).is_none();
        }
        get(t).is_some()
    })
}

fn field_match(selector: &str, o: &Value) -> bool {
    split_terms(selector).iter().all(|t| {
        let (path, want, eq) = if let Some((k, v)) = t.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            (k, v, true)
        } else {
            return false;
        };
        let mut cur = o;
        for p in path.trim().split('.') {
            cur = &cur[p];
        }
        let have = match cur {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        (have == want.trim()) == eq
    })
}

impl State {
    fn new(opts: Options) -> State {
        let mut st = State {
            refusals: opts.webhook_refusals,
            opts,
            resources: builtin_resources(),
            objects: watch::Objects::new(100),
            uids: 0,
            lag: HashMap::new(),
            establishing: HashMap::new(),
            logs: HashMap::new(),
            pod_logs: logs::Store::default(),
            ready_at: HashMap::new(),
            calls: Vec::new(),
            unexpected: Vec::new(),
            applies: Vec::new(),
            last_apply: None,
            webhook_seen: HashMap::new(),
            countdown: HashMap::new(),
            gone_uid: String::new(),
            ext: controllers::Extra::default(),
            execs: Vec::new(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            st.upsert(
                "",
                "namespaces",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
                    "labels": {"kubernetes.io/metadata.name": ns}},
                    "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
                "kube-apiserver",
            );
        }
        st.upsert(
            "storage.k8s.io",
            "storageclasses",
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete",
                "volumeBindingMode": "WaitForFirstConsumer"}),
            "kubectl",
        );
        st.upsert(
            "",
            "configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-root-ca.crt", "namespace": "default"},
                "data": {"ca.crt": fake_pem("CERTIFICATE", "kubernetes")}}),
            "kube-controller-manager",
        );
        st.reconcile();
        st
    }

    fn next_rv(&mut self) -> String {
        self.objects.next_rv()
    }

    fn new_uid(&mut self) -> String {
        self.uids += 1;
        let h = short_hash(&format!("uid-{}", self.uids), 1);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            0x5eed_0000u32 + self.uids as u32,
            (h.as_bytes()[0] as u32) << 4,
            self.uids % 4096,
            (self.uids * 7) % 4096,
            self.uids * 2654435761 % 0xffff_ffff_ffff
        )
    }

    fn res(&self, group: &str, version: &str, plural: &str) -> Option<Res> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    fn res_by_kind(&self, group: &str, kind: &str) -> Option<Res> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.kind == kind)
            .cloned()
    }

    fn served(&self, gv: &str) -> bool {
        self.lag.get(gv).copied().unwrap_or(0) == 0 && self.resources.iter().any(|r| r.gv() == gv)
    }

    /// Stores a controller-made object (or updates it when it changed), keeping its
    /// uid, creation time and resourceVersion when nothing changed.
    fn upsert(&mut self, group: &str, plural: &str, mut obj: Value, manager: &str) -> Value {
        let ns = str_of(&obj, &["metadata", "namespace"]).to_string();
        let name = str_of(&obj, &["metadata", "name"]).to_string();
        let k = key(group, plural, &ns, &name);
        let old = self.objects.get(&k).cloned();
        match old {
            Some(old) => {
                for f in [
                    "uid",
                    "creationTimestamp",
                    "resourceVersion",
                    "managedFields",
                    "generation",
                ] {
                    if !old["metadata"][f].is_null() {
                        obj["metadata"][f] = old["metadata"][f].clone();
                    }
                }
                if obj != old {
                    obj["metadata"]["managedFields"] =
                        self.managed_after(&old, &obj, manager, None);
                    obj["metadata"]["resourceVersion"] = json!(self.next_rv());
                    self.objects.insert(k, obj.clone());
                }
                obj
            }
            None => {
                obj["metadata"]["uid"] = json!(self.new_uid());
                obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
                obj["metadata"]["resourceVersion"] = json!(self.next_rv());
                obj["metadata"]["managedFields"] =
                    self.managed_after(&Value::Null, &obj, manager, None);
                self.objects.insert(k, obj.clone());
                obj
            }
        }
    }

    /// Writes an object's status through the `status` subresource, as its controller
    /// (the kubelet for pods, cert-manager for its kinds, kube-controller-manager
    /// otherwise) does: an Update entry with `subresource: status` owns it.
    fn set_status(&mut self, k: &Key, mut status: Value) {
        let Some(o) = self.objects.get(k) else { return };
        if let Some(old) = o.get("status")
            && status.get("conditions").is_some()
        {
            keep_times(&mut status["conditions"], &old["conditions"]);
        }
        if o.get("status") == Some(&status) {
            return;
        }
        let old = o.clone();
        let mut new = old.clone();
        new["status"] = status;
        let manager = match (k.0.as_str(), k.1.as_str()) {
            ("", "pods") => "kubelet",
            (g, _) if g.ends_with("cert-manager.io") => "cert-manager-controller",
            _ => "kube-controller-manager",
        };
        new["metadata"]["managedFields"] = self.managed_after(&old, &new, manager, Some("status"));
        new["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.objects.insert(k.clone(), new);
    }

    /// Where an object's kind is served: (group, version, kind, has a status subresource).
    fn target_of(&self, obj: &Value) -> (String, String, String, bool) {
        let av = str_of(obj, &["apiVersion"]);
        let (group, version) = av.rsplit_once('/').unwrap_or(("", av));
        let kind = str_of(obj, &["kind"]);
        let status = self
            .res_by_kind(group, kind)
            .is_some_and(|r| r.subresources.iter().any(|s| s == "status"));
        (group.into(), version.into(), kind.into(), status)
    }

    /// managedFields after `manager` wrote `new` over `old` (`Null`: created) without
    /// server-side apply (ssa.rs `update`).
    fn managed_after(&self, old: &Value, new: &Value, manager: &str, sub: Option<&str>) -> Value {
        let (group, version, kind, status_subresource) = self.target_of(new);
        let now = now_rfc3339();
        let t = ssa::Target {
            group: &group,
            version: &version,
            kind: &kind,
            status_subresource,
            now: &now,
        };
        let old = (!old.is_null()).then_some(old);
        ssa::update(ssa::schemas(), &t, old, new, manager, sub)
    }

    fn delete_key(&mut self, k: &Key) -> Option<Value> {
        let o = self.objects.remove(k)?;
        let uid = str_of(&o, &["metadata", "uid"]).to_string();
        // A controller removing what it made (pods): their dependents go with them.
        let doomed: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, d)| owned_by(d, &uid))
            .map(|(k, _)| k.clone())
            .collect();
        for d in doomed {
            self.delete_key(&d);
        }
        self.logs
            .retain(|(ns, pod, _), _| !(k.1 == "pods" && *ns == k.2 && *pod == k.3));
        self.ready_at.remove(&uid);
        Some(o)
    }

    // ---- routing ----

    fn route(&mut self, req: &Request) -> Response {
        if let Some(f) = self.opts.faults.iter_mut().find(|f| {
            f.times > 0
                && (f.method.is_empty() || f.method == req.method)
                && req.path.contains(&f.path_contains)
        }) {
            f.times -= 1;
            let mut message = f.message.clone();
            if f.echo_body {
                let body = String::from_utf8_lossy(&req.body).into_owned();
                message.push_str(&body);
                f.echoed.push(body);
            }
            return fail(f.code, &f.reason.clone(), &message, json!({}));
        }
        let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
        let aggregated = req
            .header("accept")
            .is_some_and(|a| a.contains("as=APIGroupDiscoveryList"));
        if req.method == "GET" {
            match segs.as_slice() {
                ["version"] => return Response::json(200, &self.version()),
                ["healthz" | "readyz" | "livez"] => return Response::text(200, "ok"),
                ["api"] if aggregated => return Response::json(200, &self.aggregated(true)),
                ["apis"] if aggregated => return Response::json(200, &self.aggregated(false)),
                ["api"] => {
                    return Response::json(
                        200,
                        &json!({"kind": "APIVersions", "versions": ["v1"],
                            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "172.18.0.2:6443"}]}),
                    );
                }
                ["apis"] => return Response::json(200, &self.group_list()),
                ["apis", group] => {
                    return match self.group_list()["groups"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|g| g["name"] == *group)
                    {
                        Some(g) => {
                            let mut g = g.clone();
                            g["kind"] = json!("APIGroup");
                            g["apiVersion"] = json!("v1");
                            Response::json(200, &g)
                        }
                        None => not_found_path(),
                    };
                }
                ["api", version] => return self.resource_list("", version),
                ["apis", group, version] => return self.resource_list(group, version),
                _ => {}
            }
        }
        let (group, version, rest) = match segs.as_slice() {
            ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
            ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
            _ => return self.unexpected(req),
        };
        if !self.served(&gv(group, version)) {
            return not_found_path();
        }
        // namespaces/<ns>/<plural>[/<name>[/<sub>]] or <plural>[/<name>[/<sub>]]
        let namespaced = rest.len() >= 3
            && rest[0] == "namespaces"
            && self
                .res(group, version, rest[2])
                .is_some_and(|r| r.namespaced);
        let (ns, rest) = if namespaced {
            (Some(rest[1]), &rest[2..])
        } else {
            (None, rest)
        };
        let Some(r) = self.res(group, version, rest[0]) else {
            return self.unexpected(req);
        };
        let name = rest.get(1).copied();
        let sub = rest.get(2).copied();
        if rest.len() > 3 || (ns.is_some() && !r.namespaced) {
            return self.unexpected(req);
        }
        match (req.method.as_str(), name, sub) {
            ("GET", None, _) => self.list(&r, ns, req),
            ("GET", Some(n), None | Some("status")) => self.get(&r, ns, n),
            ("GET", Some(n), Some("log")) if r.kind == "Pod" => self.pod_log(ns, n, req),
            ("POST", None, _) => self.create(&r, ns, req),
            ("PATCH", Some(n), None) => self.patch(&r, ns, n, req),
            ("PATCH", Some(n), Some("status")) => self.patch_status(&r, ns, n, req),
            ("PUT", Some(n), None) => self.put(&r, ns, n, req),
            ("DELETE", Some(n), None) => self.delete_api(&r, ns, n, req),
            ("DELETE", None, _) => self.delete_collection(&r, ns, req),
            _ => self.unexpected(req),
        }
    }

    fn unexpected(&mut self, req: &Request) -> Response {
        self.unexpected
            .push(format!("{} {}", req.method, req.target));
        not_found_path()
    }

    fn version(&self) -> Value {
        let v = self.opts.server_version.trim_start_matches('v');
        let mut parts = v.split('.');
        json!({
            "major": parts.next().unwrap_or("1"),
            "minor": parts.next().unwrap_or("36"),
            "emulationMajor": "1",
            "emulationMinor": "36",
            "minCompatibilityMajor": "1",
            "minCompatibilityMinor": "35",
            "gitVersion": self.opts.server_version,
            "gitCommit": "5f7a2ce2c1bc4a1a4e1d2ac3b1e2f9ad0c1c2f3a",
            "gitTreeState": "clean",
            "buildDate": "2026-10-14T12:00:00Z",
            "goVersion": "go1.25.3",
            "compiler": "gc",
            "platform": "linux/amd64",
        })
    }

    /// Served groups and their versions, in first-seen order.
    fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.resources {
            if r.group.is_empty() || !self.served(&r.gv()) {
                continue;
            }
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, vs)) => {
                    if !vs.contains(&r.version) {
                        vs.push(r.version.clone());
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        // Preferred (newest) version first: v2 before v1, v1 before v1beta1.
        for (_, vs) in &mut out {
            vs.sort_by(|a, b| b.cmp(a));
        }
        out
    }

    fn group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .into_iter()
            .map(|(g, vs)| {
                let versions: Vec<Value> = vs
                    .iter()
                    .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                    .collect();
                json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    fn api_resources(&self, group: &str, version: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for r in self
            .resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
        {
            let mut main = json!({
                "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                "kind": r.kind, "verbs": VERBS,
            });
            if !r.short_names.is_empty() {
                main["shortNames"] = json!(r.short_names);
            }
            out.push(main);
            for s in &r.subresources {
                let kind = match s.as_str() {
                    "scale" => "Scale",
                    "eviction" => "Eviction",
                    "token" => "TokenRequest",
                    "binding" => "Binding",
                    "exec" | "attach" | "portforward" | "proxy" => "PodExecOptions",
                    "log" => "Pod",
                    _ => &r.kind,
                };
                let (g, v) = match s.as_str() {
                    "scale" => ("autoscaling", "v1"),
                    "eviction" => ("policy", "v1"),
                    "token" => ("authentication.k8s.io", "v1"),
                    _ => ("", ""),
                };
                let mut e = json!({
                    "name": format!("{}/{s}", r.plural), "singularName": "",
                    "namespaced": r.namespaced, "kind": kind, "verbs": sub_verbs(s),
                });
                if !g.is_empty() {
                    e["group"] = json!(g);
                    e["version"] = json!(v);
                }
                out.push(e);
            }
        }
        out
    }

    fn resource_list(&mut self, group: &str, version: &str) -> Response {
        let gvs = gv(group, version);
        if let Some(n) = self.lag.get_mut(&gvs)
            && *n > 0
        {
            *n -= 1;
            return not_found_path();
        }
        if !self.served(&gvs) {
            return not_found_path();
        }
        Response::json(
            200,
            &json!({
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gvs,
                "resources": self.api_resources(group, version),
            }),
        )
    }

    /// apidiscovery.k8s.io/v2 APIGroupDiscoveryList of the core group (`/api`) or of
    /// every other group (`/apis`).
    fn aggregated(&self, core: bool) -> Value {
        let groups: Vec<(String, Vec<String>)> = if core {
            vec![(String::new(), vec!["v1".into()])]
        } else {
            self.groups()
        };
        let items: Vec<Value> = groups
            .iter()
            .map(|(g, vs)| {
                let versions: Vec<Value> = vs
                    .iter()
                    .map(|v| {
                        let resources: Vec<Value> = self
                            .resources
                            .iter()
                            .filter(|r| r.group == *g && r.version == *v)
                            .map(|r| {
                                let subs: Vec<Value> = r
                                    .subresources
                                    .iter()
                                    .map(|s| json!({"subresource": s, "responseKind": {"group": g, "version": v, "kind": r.kind}, "verbs": sub_verbs(s)}))
                                    .collect();
                                json!({
                                    "resource": r.plural, "singularResource": r.singular,
                                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                    "responseKind": {"group": g, "version": v, "kind": r.kind},
                                    "verbs": VERBS, "subresources": subs,
                                })
                            })
                            .collect();
                        json!({"version": v, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                json!({"metadata": {"name": g}, "versions": versions})
            })
            .collect();
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {}, "items": items})
    }

    // ---- reads ----

    fn list(&mut self, r: &Res, ns: Option<&str>, req: &Request) -> Response {
        let labels = req.q("labelSelector").unwrap_or_default().to_string();
        let fields = req.q("fieldSelector").unwrap_or_default().to_string();
        if r.kind == "CustomResourceDefinition" {
            let names: Vec<String> = self.establishing.keys().cloned().collect();
            for n in names {
                self.tick_crd(&n);
            }
        }
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((g, p, ons, _), _)| {
                *g == r.group && *p == r.plural && ns.is_none_or(|ns| ns == ons)
            })
            .map(|(_, o)| o)
            .filter(|o| labels.is_empty() || label_match(&labels, &labels_of(o)))
            .filter(|o| fields.is_empty() || field_match(&fields, o))
            .map(|o| {
                let mut o = o.clone();
                o["apiVersion"] = json!(r.gv());
                o
            })
            .collect();
        Response::json(
            200,
            &json!({
                "kind": format!("{}List", r.kind), "apiVersion": r.gv(),
                "metadata": {"resourceVersion": self.objects.rv.to_string()},
                "items": items,
            }),
        )
    }

    fn get(&mut self, r: &Res, ns: Option<&str>, name: &str) -> Response {
        if r.kind == "CustomResourceDefinition" {
            self.tick_crd(name);
        }
        let k = key(&r.group, &r.plural, ns.unwrap_or_default(), name);
        match self.objects.get(&k) {
            Some(o) => {
                let mut o = o.clone();
                o["apiVersion"] = json!(r.gv());
                Response::json(200, &o)
            }
            None => not_found_res(r, name),
        }
    }

    // ---- writes ----

    /// Parses a write's body (JSON, or YAML for apply patches) and checks it against
    /// the URL: kind, apiVersion, name and namespace.
    fn body(
        &self,
        r: &Res,
        ns: Option<&str>,
        name: Option<&str>,
        req: &Request,
    ) -> Result<Value, Response> {
        let text = String::from_utf8_lossy(&req.body);
        let mut obj: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => serde_saphyr::from_str(&text)
                .map_err(|e| bad_request(&format!("error decoding YAML: {e}")))?,
        };
        if !obj.is_object() {
            return Err(bad_request("the body of the request is not an object"));
        }
        let (av, kind) = (
            obj["apiVersion"].as_str().unwrap_or_default().to_string(),
            obj["kind"].as_str().unwrap_or_default().to_string(),
        );
        if kind.is_empty() || av.is_empty() {
            return Err(bad_request(&format!(
                "Object '{}' is missing in '{text}'",
                if kind.is_empty() {
                    "Kind"
                } else {
                    "apiVersion"
                }
            )));
        }
        let group = av.rsplit_once('/').map_or("", |(g, _)| g);
        if group != r.group {
            return Err(bad_request(&format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                r.gv()
            )));
        }
        if kind != r.kind {
            return Err(bad_request(&format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                r.kind
            )));
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        if let Some(name) = name {
            match obj["metadata"]["name"].as_str() {
                Some(n) if n != name => {
                    return Err(bad_request(&format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )));
                }
                Some(_) => {}
                None => obj["metadata"]["name"] = json!(name),
            }
        }
        match (ns, obj["metadata"]["namespace"].as_str()) {
            (Some(ns), Some(o)) if o != ns => {
                return Err(bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (Some(ns), None) => obj["metadata"]["namespace"] = json!(ns),
            (None, Some(_)) => {
                obj["metadata"].as_object_mut().unwrap().remove("namespace");
            }
            _ => {}
        }
        obj["apiVersion"] = json!(r.gv());
        Ok(obj)
    }

    /// What every write must pass: the namespace exists, and no webhook refuses.
    fn admit(&mut self, r: &Res, ns: Option<&str>) -> Result<(), Response> {
        if let Some(ns) = ns
            && !self.objects.contains_key(&key("", "namespaces", "", ns))
        {
            return Err(fail(
                404,
                "NotFound",
                &format!("namespaces \"{ns}\" not found"),
                json!({"name": ns, "kind": "namespaces"}),
            ));
        }
        if (r.group == "cert-manager.io" || r.group == "acme.cert-manager.io") && self.refusals > 0
        {
            self.refusals -= 1;
            let message = "Internal error occurred: failed calling webhook \"webhook.cert-manager.io\": failed to call webhook: Post \"https://cert-manager-webhook.cert-manager.svc:443/validate?timeout=30s\": dial tcp 10.96.143.12:443: connect: connection refused";
            return Err(fail(
                500,
                "InternalError",
                message,
                json!({"causes": [{"message": message}]}),
            ));
        }
        Ok(())
    }

    /// Server-side defaults and checks of a new version of an object; `old` is the
    /// stored one. Errors are the API server's Invalid answers.
    fn finish(&mut self, r: &Res, obj: &mut Value, old: Option<&Value>) -> Result<(), Response> {
        let name = str_of(obj, &["metadata", "name"]).to_string();
        if name.is_empty() {
            return Err(fail(
                422,
                "Invalid",
                &format!(
                    "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                    r.kind_qualified()
                ),
                json!({"kind": r.kind, "group": r.group, "causes": [{"reason": "FieldValueRequired", "message": "Required value: name or generateName is required", "field": "metadata.name"}]}),
            ));
        }
        // What the real server's decoding, defaulting and storage do to every write.
        ssa::defaults(&r.group, &r.kind, obj);
        ssa::round_trip(ssa::schemas(), &r.group, &r.version, &r.kind, obj);
        let uid = old
            .map(|o| str_of(o, &["metadata", "uid"]).to_string())
            .unwrap_or_else(|| self.new_uid());
        match (r.group.as_str(), r.kind.as_str()) {
            ("", "Namespace") => {
                obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
                obj["status"] = json!({"phase": "Active"});
            }
            ("", "Service") => {
                let ip = old
                    .and_then(|o| o["spec"]["clusterIP"].as_str().map(str::to_string))
                    .unwrap_or_else(|| {
                        format!("10.96.{}.{}", self.objects.rv % 250, self.uids % 250 + 2)
                    });
                if obj["spec"]["clusterIP"].is_null() {
                    obj["spec"]["clusterIP"] = json!(ip);
                    obj["spec"]["clusterIPs"] = json!([ip]);
                }
                if obj["spec"]["type"].is_null() {
                    obj["spec"]["type"] = json!("ClusterIP");
                }
            }
            ("", "Secret") => {
                if obj["type"].is_null() {
                    obj["type"] = json!("Opaque");
                }
                if let Some(data) = obj["data"].as_object() {
                    for (k, v) in data {
                        let ok = v.as_str().is_some_and(|s| {
                            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
                        });
                        if !ok {
                            return Err(bad_request(&format!(
                                "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in key {k}"
                            )));
                        }
                    }
                }
            }
            ("apps", "Deployment" | "StatefulSet" | "ReplicaSet")
                if obj["spec"]["replicas"].is_null() =>
            {
                obj["spec"]["replicas"] = json!(1);
            }
            ("batch", "Job") => {
                if obj["spec"]["selector"].is_null() {
                    obj["spec"]["selector"] =
                        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
                }
                for (k, v) in [
                    ("batch.kubernetes.io/controller-uid", uid.as_str()),
                    ("batch.kubernetes.io/job-name", name.as_str()),
                    ("controller-uid", uid.as_str()),
                    ("job-name", name.as_str()),
                ] {
                    obj["spec"]["template"]["metadata"]["labels"][k] = json!(v);
                }
                if obj["spec"]["backoffLimit"].is_null() {
                    obj["spec"]["backoffLimit"] = json!(6);
                }
                if let Some(old) = old
                    && old["spec"]["template"] != obj["spec"]["template"]
                {
                    let message = format!(
                        "Job.batch \"{name}\" is invalid: spec.template: Invalid value: {}: field is immutable",
                        obj["spec"]["template"]
                    );
                    return Err(fail(
                        422,
                        "Invalid",
                        &message,
                        json!({"name": name, "group": "batch", "kind": "Job", "causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: field is immutable", "field": "spec.template"}]}),
                    ));
                }
            }
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                let group = str_of(obj, &["spec", "group"]);
                let plural = str_of(obj, &["spec", "names", "plural"]);
                if name != format!("{plural}.{group}") {
                    return Err(fail(
                        422,
                        "Invalid",
                        &format!(
                            "CustomResourceDefinition.apiextensions.k8s.io \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
                        ),
                        json!({"name": name, "group": "apiextensions.k8s.io", "kind": "CustomResourceDefinition"}),
                    ));
                }
            }
            _ => {}
        }
        immutable::check_ranges(r, obj)?;
        if let Some(old) = old {
            immutable::check_update(r, old, obj)?;
        }
        if let Some(old) = old {
            obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
            obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            if !old["metadata"]["managedFields"].is_null() {
                obj["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
            }
            if !old["metadata"]["generation"].is_null() {
                obj["metadata"]["generation"] = old["metadata"]["generation"].clone();
            }
            // The main resource's writes never change the status.
            match old.get("status") {
                Some(s) if r.kind != "Namespace" => obj["status"] = s.clone(),
                _ => {}
            }
            let spec_changed = old.get("spec") != obj.get("spec");
            if spec_changed && old["metadata"]["generation"].is_i64() {
                obj["metadata"]["generation"] =
                    json!(old["metadata"]["generation"].as_i64().unwrap() + 1);
                self.ready_at
                    .insert(uid.clone(), Instant::now() + self.opts.ready_after);
            }
        } else {
            obj["metadata"]["uid"] = json!(uid);
            obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
            if obj.get("spec").is_some() {
                obj["metadata"]["generation"] = json!(1);
            }
            self.ready_at
                .insert(uid, Instant::now() + self.opts.ready_after);
            self.on_create(r, obj);
        }
        Ok(())
    }

    /// Stores `obj` (a finished new version) unless it equals `old`; returns what is
    /// stored. Nothing changes on a no-op write, like the real server.
    fn store(
        &mut self,
        r: &Res,
        mut obj: Value,
        old: Option<&Value>,
        manager: &str,
        dry_run: bool,
    ) -> Value {
        let unchanged = old.is_some_and(|o| {
            let mut a = o.clone();
            let mut b = obj.clone();
            a["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("managedFields");
            b["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("managedFields");
            a == b
        });
        if unchanged {
            return old.unwrap().clone();
        }
        obj["metadata"]["managedFields"] =
            self.managed_after(old.unwrap_or(&Value::Null), &obj, manager, None);
        self.commit(r, obj, old.is_none(), dry_run)
    }

    /// Gives `obj` its new resourceVersion and stores it (not when `dry_run`).
    fn commit(&mut self, r: &Res, mut obj: Value, new: bool, dry_run: bool) -> Value {
        obj["metadata"]["resourceVersion"] = if dry_run {
            json!((self.objects.rv + 1).to_string())
        } else {
            json!(self.next_rv())
        };
        if dry_run {
            return obj;
        }
        let k = key(
            &r.group,
            &r.plural,
            str_of(&obj, &["metadata", "namespace"]),
            str_of(&obj, &["metadata", "name"]),
        );
        if r.kind == "CustomResourceDefinition" && r.group == "apiextensions.k8s.io" {
            self.register_crd(&mut obj, new);
        }
        self.objects.insert(k, obj.clone());
        obj
    }

    fn patch(&mut self, r: &Res, ns: Option<&str>, name: &str, req: &Request) -> Response {
        let ct = req.header("content-type").unwrap_or_default().to_string();
        let k = key(&r.group, &r.plural, ns.unwrap_or_default(), name);
        let old = self.objects.get(&k).cloned();
        if ct.starts_with("application/apply-patch") {
            let Some(manager) = req.q("fieldManager").filter(|m| !m.is_empty()) else {
                return bad_request(
                    "PATCH requests with apply-patch content must specify a fieldManager",
                );
            };
            let manager = manager.to_string();
            let config = match self.body(r, ns, Some(name), req) {
                Ok(o) => o,
                Err(e) => return e,
            };
            if let Err(e) = fields::check_apply(r, &config) {
                return e;
            }
            if let Err(e) = self.admit(r, ns) {
                return e;
            }
            if old.is_none()
                && let Some(refused) = self.refuse_create(r, ns, name, false)
            {
                return refused;
            }
            if let Err(e) = webhooks::admit(self, r, &config) {
                return e;
            }
            let now = now_rfc3339();
            let target = ssa::Target {
                group: &r.group,
                version: &r.version,
                kind: &r.kind,
                status_subresource: r.subresources.iter().any(|s| s == "status"),
                now: &now,
            };
            let force = req.q("force") == Some("true");
            let applied = match ssa::apply(
                ssa::schemas(),
                &target,
                old.as_ref(),
                &config,
                &manager,
                force,
            ) {
                Ok(a) => a,
                Err(ssa::Refused::Conflicts(status)) => return Response::json(409, &status),
                // An applied configuration the field manager cannot type (e.g. duplicate
                // list-map keys): k8s.io/apimachinery pkg/util/managedfields/internal
                // structuredmerge.go "failed to create typed patch object", a 500.
                Err(ssa::Refused::Invalid(why)) => {
                    let message = format!(
                        "failed to create typed patch object ({}/{name}; {}, Kind={}): {why}",
                        ns.unwrap_or_default(),
                        r.gv(),
                        r.kind
                    );
                    return fail(500, "InternalError", &message, json!({}));
                }
            };
            let dry = req.dry_run();
            let stored = match (&old, applied.write) {
                // The real server skips the write: same object, same resourceVersion.
                (Some(o), false) => o.clone(),
                _ => {
                    let mut obj = applied.object;
                    let managed = obj["metadata"]["managedFields"].clone();
                    if let Err(e) = self.finish(r, &mut obj, old.as_ref()) {
                        return e;
                    }
                    obj["metadata"]["managedFields"] = managed;
                    self.commit(r, obj, old.is_none(), dry)
                }
            };
            if !dry {
                let changed = old.as_ref().is_none_or(|o| {
                    o["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"]
                });
                self.last_apply = Some((
                    r.kind.clone(),
                    ns.unwrap_or_default().into(),
                    name.into(),
                    changed,
                ));
            }
            return Response::json(if old.is_none() { 201 } else { 200 }, &stored);
        }
        if !(ct.starts_with("application/merge-patch+json")
            || ct.starts_with("application/strategic-merge-patch+json"))
        {
            return self.unexpected(req);
        }
        let Some(old) = old else {
            return not_found_res(r, name);
        };
        let Ok(patch) = serde_json::from_slice::<Value>(&req.body) else {
            return bad_request("the patch is not JSON");
        };
        if let Err(e) = self.admit(r, ns) {
            return e;
        }
        let mut obj = old.clone();
        merge_patch(&mut obj, &patch);
        if let Err(e) = self.finish(r, &mut obj, Some(&old)) {
            return e;
        }
        let manager = req.q("fieldManager").unwrap_or("kube-rs").to_string();
        let stored = self.store(r, obj, Some(&old), &manager, req.dry_run());
        Response::json(200, &stored)
    }

    fn patch_status(&mut self, r: &Res, ns: Option<&str>, name: &str, req: &Request) -> Response {
        let k = key(&r.group, &r.plural, ns.unwrap_or_default(), name);
        let Some(old) = self.objects.get(&k).cloned() else {
            return not_found_res(r, name);
        };
        let Ok(patch) = serde_json::from_slice::<Value>(&req.body) else {
            return bad_request("the patch is not JSON");
        };
        let mut status = old.get("status").cloned().unwrap_or(json!({}));
        merge_patch(&mut status, &patch["status"]);
        self.set_status(&k, status);
        Response::json(200, &self.objects[&k])
    }

    fn create(&mut self, r: &Res, ns: Option<&str>, req: &Request) -> Response {
        let mut obj = match self.body(r, ns, None, req) {
            Ok(o) => o,
            Err(e) => return e,
        };
        if obj["metadata"]["name"].is_null()
            && let Some(prefix) = obj["metadata"]["generateName"].as_str()
        {
            let n = format!("{prefix}{}", short_hash(&self.objects.rv, 5));
            obj["metadata"]["name"] = json!(n);
        }
        let warnings = match fields::check_write(r, &mut obj, req) {
            Ok(w) => w,
            Err(e) => return e,
        };
        if let Err(e) = self.admit(r, ns) {
            return e;
        }
        if let Err(e) = webhooks::admit(self, r, &obj) {
            return e;
        }
        let name = str_of(&obj, &["metadata", "name"]).to_string();
        if let Some(refused) = self.refuse_create(r, ns, &name, true) {
            return refused;
        }
        if self
            .objects
            .contains_key(&key(&r.group, &r.plural, ns.unwrap_or_default(), &name))
        {
            return fail(
                409,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", r.qualified()),
                json!({"name": name, "group": r.group, "kind": r.plural}),
            );
        }
        if let Err(e) = self.finish(r, &mut obj, None) {
            return e;
        }
        let manager = req.q("fieldManager").unwrap_or("kube-rs").to_string();
        let stored = self.store(r, obj, None, &manager, req.dry_run());
        let mut resp = Response::json(201, &stored);
        resp.warnings = warnings;
        resp
    }

    fn put(&mut self, r: &Res, ns: Option<&str>, name: &str, req: &Request) -> Response {
        let k = key(&r.group, &r.plural, ns.unwrap_or_default(), name);
        let Some(old) = self.objects.get(&k).cloned() else {
            return not_found_res(r, name);
        };
        let mut obj = match self.body(r, ns, Some(name), req) {
            Ok(o) => o,
            Err(e) => return e,
        };
        let warnings = match fields::check_write(r, &mut obj, req) {
            Ok(w) => w,
            Err(e) => return e,
        };
        if let Err(e) = self.admit(r, ns) {
            return e;
        }
        if let Err(e) = webhooks::admit(self, r, &obj) {
            return e;
        }
        if let Err(e) = self.finish(r, &mut obj, Some(&old)) {
            return e;
        }
        let manager = req.q("fieldManager").unwrap_or("kube-rs").to_string();
        let stored = self.store(r, obj, Some(&old), &manager, req.dry_run());
        let mut resp = Response::json(200, &stored);
        resp.warnings = warnings;
        resp
    }

    fn delete_collection(&mut self, r: &Res, ns: Option<&str>, req: &Request) -> Response {
        let labels = req.q("labelSelector").unwrap_or_default().to_string();
        let doomed: Vec<Key> = self
            .objects
            .iter()
            .filter(|((g, p, ons, _), o)| {
                *g == r.group
                    && *p == r.plural
                    && ns.is_none_or(|ns| ns == ons)
                    && (labels.is_empty() || label_match(&labels, &labels_of(o)))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut items = Vec::new();
        for k in doomed {
            if let Some(o) = self.objects.get(&k).cloned() {
                self.mark_deleted(&k, deletion::Propagation::Background);
                items.push(o);
            }
        }
        Response::json(
            200,
            &json!({"kind": format!("{}List", r.kind), "apiVersion": r.gv(),
                "metadata": {"resourceVersion": self.objects.rv.to_string()}, "items": items}),
        )
    }

    // ---- CRDs ----

    fn register_crd(&mut self, crd: &mut Value, new: bool) {
        let name = str_of(crd, &["metadata", "name"]).to_string();
        let group = str_of(crd, &["spec", "group"]).to_string();
        let names = crd["spec"]["names"].clone();
        let namespaced = str_of(crd, &["spec", "scope"]) != "Cluster";
        self.resources.retain(|r| r.crd.as_deref() != Some(&name));
        for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
            if v["served"] == json!(false) {
                continue;
            }
            let version = v["name"].as_str().unwrap_or_default().to_string();
            let gvs = gv(&group, &version);
            if !self.resources.iter().any(|r| r.gv() == gvs) && self.opts.crd_discovery_lag > 0 {
                self.lag.insert(gvs, self.opts.crd_discovery_lag);
            }
            let mut subresources = Vec::new();
            if let Some(s) = v["subresources"].as_object() {
                subresources.extend(s.keys().cloned());
            }
            let kind = names["kind"].as_str().unwrap_or_default().to_string();
            self.resources.push(Res {
                group: group.clone(),
                version,
                plural: names["plural"].as_str().unwrap_or_default().into(),
                singular: names["singular"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| kind.to_lowercase()),
                kind,
                namespaced,
                subresources,
                short_names: names["shortNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect(),
                crd: Some(name.clone()),
            });
        }
        let pending = if new {
            self.opts.crd_established_after_reads
        } else {
            self.establishing.get(&name).copied().unwrap_or(0)
        };
        let mut accepted = names.clone();
        if accepted["listKind"].is_null() {
            accepted["listKind"] = json!(format!("{}List", str_of(&names, &["kind"])));
        }
        if accepted["singular"].is_null() {
            accepted["singular"] = json!(str_of(&names, &["kind"]).to_lowercase());
        }
        let stored: Vec<Value> = crd["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["storage"] == json!(true))
            .map(|v| v["name"].clone())
            .collect();
        let established = pending == 0;
        crd["status"] = json!({
            "acceptedNames": accepted,
            "storedVersions": stored,
            "conditions": [
                cond("NamesAccepted", true, "NoConflicts", "no conflicts found"),
                cond("Established", established,
                    if established { "InitialNamesAccepted" } else { "Installing" },
                    if established { "the initial names have been accepted" } else { "the initial names are being accepted" }),
            ],
        });
        if established {
            self.establishing.remove(&name);
        } else {
            self.establishing.insert(name, pending);
        }
    }

    /// One read of CRD `name`: it becomes Established when its reads are used up.
    fn tick_crd(&mut self, name: &str) {
        let Some(n) = self.establishing.get_mut(name) else {
            return;
        };
        *n = n.saturating_sub(1);
        if *n > 0 {
            return;
        }
        self.establishing.remove(name);
        let k = key(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "",
            name,
        );
        if let Some(o) = self.objects.get(&k) {
            let mut status = o["status"].clone();
            status["conditions"][1] = cond(
                "Established",
                true,
                "InitialNamesAccepted",
                "the initial names have been accepted",
            );
            self.set_status(&k, status);
        }
    }

    // ---- controllers ----

    fn reconcile(&mut self) {
        self.tick();
        let node = format!("{}-control-plane", self.opts.cluster_name);
        let ready = self.opts.node_ready;
        self.ensure_node(&node, ready);
        webhooks::reconcile(self);
        self.tick_deletion();
        let keys: Vec<Key> = self.objects.keys().cloned().collect();
        for k in keys {
            // Controllers leave objects being deleted alone.
            if self
                .objects
                .get(&k)
                .is_none_or(|o| !o["metadata"]["deletionTimestamp"].is_null())
            {
                continue;
            }
            if k.0 == "apps" && self.not_observed_yet(&k) {
                continue;
            }
            match (k.0.as_str(), k.1.as_str()) {
                ("apps", "deployments") => self.deployment(&k),
                ("apps", "statefulsets") => self.statefulset(&k),
                ("apps", "daemonsets") => self.daemonset(&k),
                ("batch", "jobs") => self.job(&k),
                ("", "persistentvolumeclaims") => self.pvc(&k),
                ("cert-manager.io", "certificates") => self.certificate(&k),
                ("cert-manager.io", "issuers" | "clusterissuers") => {
                    let generation = self.objects[&k]["metadata"]["generation"].clone();
                    self.set_status(
                        &k,
                        json!({"conditions": [{"type": "Ready", "status": "True", "reason": "KeyPairVerified",
                            "message": "Signing CA verified", "observedGeneration": generation,
                            "lastTransitionTime": now_rfc3339()}]}),
                    );
                }
                ("networking.k8s.io", "ingresses") => self.set_status(
                    &k,
                    json!({"loadBalancer": {"ingress": [{"hostname": "localhost"}]}}),
                ),
                _ => {}
            }
        }
    }

    fn ensure_node(&mut self, node: &str, ready: bool) {
        let k = key("", "nodes", "", node);
        if !self.objects.contains_key(&k) {
            self.upsert(
                "",
                "nodes",
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {
                    "kubernetes.io/hostname": node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                    "node-role.kubernetes.io/control-plane": "", "ingress-ready": "true"}},
                    "spec": {"podCIDR": "10.244.0.0/24", "providerID": format!("kind://docker/{}/{node}", self.opts.cluster_name)},
                    "status": {}}),
                "kubelet",
            );
        }
        let status = json!({
            "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}, {"type": "Hostname", "address": node}],
            "conditions": [
                cond("MemoryPressure", false, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", false, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", false, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                if ready { cond("Ready", true, "KubeletReady", "kubelet is posting ready status") }
                else { cond("Ready", false, "KubeletNotReady", "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized") },
            ],
            "nodeInfo": {"kubeletVersion": self.opts.server_version, "containerRuntimeVersion": "containerd://2.1.4",
                "osImage": "Debian GNU/Linux 12 (bookworm)", "architecture": "amd64", "operatingSystem": "linux"},
            "allocatable": {"cpu": "2", "memory": "8010180Ki", "pods": "110"},
            "capacity": {"cpu": "2", "memory": "8112580Ki", "pods": "110"},
        });
        self.set_status(&k, status);
    }

    /// Crash, Pending (not ready yet) or Running for workload `name` with `uid`.
    fn mode_for(&self, name: &str, uid: &str, template: &Value) -> PodMode {
        let trouble = self.image_trouble(template);
        if self.opts.crash_looping.iter().any(|n| n == name)
            || trouble == Some(controllers::Trouble::Crash)
        {
            PodMode::Crash
        } else if trouble == Some(controllers::Trouble::Pull) {
            // Pending while the kubelet fails to pull (controllers.rs sets the reasons).
            PodMode::Pending
        } else if self.ready_at.get(uid).is_some_and(|t| Instant::now() < *t) {
            PodMode::Pending
        } else {
            PodMode::Running
        }
    }

    /// Creates or updates pod `name` from a pod template, in `mode`.
    fn pod(
        &mut self,
        ns: &str,
        name: &str,
        template: &Value,
        extra_labels: &[(&str, String)],
        owner: &Value,
        mode: PodMode,
    ) {
        let k = key("", "pods", ns, name);
        // Pod Security admission judges every pod a controller creates.
        if !self.objects.contains_key(&k)
            && let Err(e) = self.admit_pod(ns, name, &template["spec"])
        {
            self.reject(str_of(owner, &["uid"]), name, e);
            return;
        }
        let created = self
            .objects
            .get(&k)
            .map(|p| p["metadata"]["creationTimestamp"].clone());
        let at = created
            .and_then(|c| c.as_str().map(str::to_string))
            .unwrap_or_else(now_rfc3339);
        let mut labels = template["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (k, v) in extra_labels {
            labels.insert(k.to_string(), json!(v));
        }
        let mut spec = template["spec"].clone();
        spec["nodeName"] = json!(format!("{}-control-plane", self.opts.cluster_name));
        let containers: Vec<(String, String)> = spec["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    str_of(c, &["name"]).to_string(),
                    str_of(c, &["image"]).to_string(),
                )
            })
            .collect();
        let inits: Vec<(String, String)> = spec["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    str_of(c, &["name"]).to_string(),
                    str_of(c, &["image"]).to_string(),
                )
            })
            .collect();
        let image_id = |image: &str| {
            if image.contains('@') {
                return image.to_string();
            }
            let repo = image
                .rsplit_once(':')
                .filter(|(_, tag)| !tag.contains('/'))
                .map_or(image, |(repo, _)| repo);
            format!("{repo}@sha256:{}", hex_of(&short_hash(&image, 32)))
        };
        let cid = |c: &str| {
            format!(
                "containerd://{}",
                short_hash(&format!("{name}/{c}"), 32)
                    .bytes()
                    .map(|b| format!("{:02x}", b))
                    .collect::<String>()
            )
        };
        let terminated = |code: i32, reason: &str| json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": at, "finishedAt": at, "containerID": "containerd://0"}});
        let init_statuses: Vec<Value> = inits
            .iter()
            .map(|(c, image)| {
                let state = if mode == PodMode::Pending {
                    json!({"waiting": {"reason": "PodInitializing"}})
                } else {
                    terminated(0, "Completed")
                };
                json!({"name": c, "image": image, "imageID": image_id(image), "containerID": cid(c),
                    "ready": mode != PodMode::Pending, "restartCount": 0, "started": false, "state": state})
            })
            .collect();
        let statuses: Vec<Value> = containers
            .iter()
            .enumerate()
            .map(|(i, (c, image))| {
                let (state, ready, restarts, last) = match mode {
                    PodMode::Running => (json!({"running": {"startedAt": at}}), true, 0, json!({})),
                    PodMode::Pending => (json!({"waiting": {"reason": "ContainerCreating"}}), false, 0, json!({})),
                    PodMode::Crash if i == 0 => (
                        json!({"waiting": {"reason": "CrashLoopBackOff",
                            "message": format!("back-off 2m40s restarting failed container={c} pod={name}_{ns}(uid)")}}),
                        false,
                        5,
                        terminated(1, "Error"),
                    ),
                    PodMode::Crash => (json!({"running": {"startedAt": at}}), true, 0, json!({})),
                    PodMode::Succeeded => (terminated(0, "Completed"), false, 0, json!({})),
                    PodMode::Failed => (terminated(1, "Error"), false, 0, json!({})),
                };
                json!({"name": c, "image": image, "imageID": image_id(image), "containerID": cid(c),
                    "ready": ready, "started": state.get("running").is_some(), "restartCount": restarts,
                    "state": state, "lastState": last})
            })
            .collect();
        let (phase, ready) = match mode {
            PodMode::Running => ("Running", true),
            PodMode::Pending => ("Pending", false),
            PodMode::Crash => ("Running", false),
            PodMode::Succeeded => ("Succeeded", false),
            PodMode::Failed => ("Failed", false),
        };
        let not_ready = if mode == PodMode::Crash {
            format!("containers with unready status: [{}]", containers[0].0)
        } else {
            String::new()
        };
        let c = |t: &str, s: bool, reason: &str| {
            let mut v = json!({"type": t, "status": if s { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": at});
            if !s {
                v["reason"] = json!(reason);
                if !not_ready.is_empty() {
                    v["message"] = json!(not_ready);
                }
            }
            v
        };
        let done = matches!(mode, PodMode::Succeeded | PodMode::Failed);
        let mut status = json!({
            "phase": phase,
            "conditions": [
                c("PodReadyToStartContainers", mode != PodMode::Pending, "ContainerCreating"),
                c("Initialized", mode != PodMode::Pending, "ContainersNotInitialized"),
                c("Ready", ready, if done { "PodCompleted" } else { "ContainersNotReady" }),
                c("ContainersReady", ready, if done { "PodCompleted" } else { "ContainersNotReady" }),
                c("PodScheduled", true, ""),
            ],
            "hostIP": "172.18.0.2",
            "hostIPs": [{"ip": "172.18.0.2"}],
            "podIP": format!("10.244.0.{}", 10 + name.len() % 200),
            "startTime": at,
            "qosClass": "Burstable",
            "containerStatuses": statuses,
        });
        if !init_statuses.is_empty() {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                "annotations": template["metadata"]["annotations"].clone(),
                "ownerReferences": [owner.clone()]},
            "spec": spec,
            "status": status,
        });
        let mut pod = pod;
        if mode == PodMode::Pending && self.image_trouble(template).is_some() {
            pod["metadata"]["uid"] = self
                .objects
                .get(&k)
                .map_or(Value::Null, |p| p["metadata"]["uid"].clone());
            self.pull_failure(&k, &mut pod);
            pod.as_object_mut().unwrap()["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("uid");
        }
        self.upsert("", "pods", pod, "kubelet");
        self.overlay_restarts(ns, name);
        let first = containers.first().map(|c| c.0.clone()).unwrap_or_default();
        match mode {
            PodMode::Crash => {
                self.logs.insert(
                    (ns.into(), name.into(), first.clone()),
                    self.opts.crash_log.clone(),
                );
                let uid = str_of(&self.objects[&k], &["metadata", "uid"]).to_string();
                self.event(
                    ns,
                    json!({"kind": "Pod", "namespace": ns, "name": name, "uid": uid, "apiVersion": "v1",
                        "fieldPath": format!("spec.containers{{{first}}}")}),
                    "BackOff",
                    &format!("Back-off restarting failed container {first} in pod {name}_{ns}({uid})"),
                    "kubelet",
                );
            }
            PodMode::Failed => {
                for (c, _) in &containers {
                    self.logs.insert(
                        (ns.into(), name.into(), c.clone()),
                        self.opts.job_failure_log.clone(),
                    );
                }
            }
            _ => {
                self.logs.retain(|(lns, p, _), _| !(lns == ns && p == name));
            }
        }
    }

    fn event(&mut self, ns: &str, involved: Value, reason: &str, message: &str, component: &str) {
        let name = format!(
            "{}.{}",
            str_of(&involved, &["name"]),
            short_hash(&format!("{involved}{reason}"), 8)
        );
        let k = key("", "events", ns, &name);
        let first = self
            .objects
            .get(&k)
            .map(|e| e["firstTimestamp"].clone())
            .unwrap_or_else(|| json!(now_rfc3339()));
        self.upsert(
            "",
            "events",
            json!({"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": involved, "reason": reason, "message": message, "type": "Warning",
                "count": 5, "firstTimestamp": first, "lastTimestamp": first,
                "source": {"component": component}, "reportingComponent": component,
                "reportingInstance": ""}),
            component,
        );
    }

    /// Keeps exactly `names` as the pods owned by `owner_uid` in `ns`.
    fn prune_pods(&mut self, ns: &str, owner_uid: &str, names: &[String]) {
        let extra: Vec<Key> = self
            .objects
            .iter()
            .filter(|((g, p, pns, n), o)| {
                g.is_empty()
                    && p == "pods"
                    && pns == ns
                    && owned_by(o, owner_uid)
                    && !names.contains(n)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in extra {
            self.delete_key(&k);
        }
    }

    /// The StatefulSet controller as far as a wait sees it (kubernetes
    /// pkg/controller/statefulset/stateful_set_control.go `updateStatefulSet`): pods in
    /// ordinal order, each from the update revision when created; under `OrderedReady`
    /// nothing proceeds past a pod that is not Running and Ready, so a pod not Ready on an
    /// old revision is never replaced until someone deletes it (kubernetes#67250); a Ready
    /// old pod is replaced; `OnDelete` replaces none. Scale-down removes the highest
    /// ordinal first, one per pass. Status counts come from the pods.
    fn statefulset(&mut self, k: &Key) {
        let s = self.objects[k].clone();
        let (ns, name) = (k.2.clone(), k.3.clone());
        let uid = str_of(&s, &["metadata", "uid"]).to_string();
        let replicas = s["spec"]["replicas"].as_i64().unwrap_or(1);
        let template = s["spec"]["template"].clone();
        let revision = format!("{name}-{}", short_hash(&template, 10));
        let mode = self.mode_for(&name, &uid, &template);
        let ordered = s["spec"]["podManagementPolicy"]
            .as_str()
            .unwrap_or("OrderedReady")
            == "OrderedReady";
        let on_delete = s["spec"]["updateStrategy"]["type"] == "OnDelete";
        let owned = |st: &State| -> Vec<(i64, Value)> {
            st.objects
                .iter()
                .filter(|((g, p, pns, _), o)| {
                    g.is_empty() && p == "pods" && *pns == ns && owned_by(o, &uid)
                })
                .filter_map(|((_, _, _, n), o)| {
                    let i = n.strip_prefix(&format!("{name}-"))?.parse().ok()?;
                    Some((i, o.clone()))
                })
                .collect()
        };
        let pod_ready = |p: &Value| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        };
        let pod_revision =
            |p: &Value| str_of(p, &["metadata", "labels", "controller-revision-hash"]).to_string();
        // Scale-down: the highest ordinal goes first, gracefully, and the next only once
        // it is gone (OrderedReady).
        if let Some((i, _)) = owned(self)
            .into_iter()
            .filter(|(i, _)| *i >= replicas)
            .max_by_key(|(i, _)| *i)
        {
            self.terminate(&key("", "pods", &ns, &format!("{name}-{i}")));
        }
        let mut failure = None;
        for i in 0..replicas {
            let n = format!("{name}-{i}");
            let pk = key("", "pods", &ns, &n);
            if let Some(p) = self.objects.get(&pk).cloned()
                && pod_revision(&p) != revision
            {
                if on_delete || (ordered && !pod_ready(&p)) {
                    if ordered && !pod_ready(&p) {
                        break;
                    }
                    continue;
                }
                self.delete_key(&pk);
            }
            let mut t = template.clone();
            let mut volumes = t["spec"]["volumes"].as_array().cloned().unwrap_or_default();
            for claim in s["spec"]["volumeClaimTemplates"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let cname = str_of(claim, &["metadata", "name"]);
                let pvc = format!("{cname}-{n}");
                let mut labels = labels_of(claim);
                for (lk, lv) in s["spec"]["selector"]["matchLabels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                {
                    labels.insert(lk.clone(), lv.clone());
                }
                if !self
                    .objects
                    .contains_key(&key("", "persistentvolumeclaims", &ns, &pvc))
                {
                    let mut spec = claim["spec"].clone();
                    if spec["storageClassName"].is_null() {
                        spec["storageClassName"] = json!("standard");
                    }
                    self.upsert(
                        "",
                        "persistentvolumeclaims",
                        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                            "metadata": {"name": pvc, "namespace": ns, "labels": labels},
                            "spec": spec}),
                        "kube-controller-manager",
                    );
                }
                volumes.push(json!({"name": cname, "persistentVolumeClaim": {"claimName": pvc}}));
            }
            t["spec"]["volumes"] = json!(volumes);
            self.pod(
                &ns,
                &n,
                &t,
                &[
                    ("controller-revision-hash", revision.clone()),
                    ("statefulset.kubernetes.io/pod-name", n.clone()),
                    ("apps.kubernetes.io/pod-index", i.to_string()),
                ],
                &owner_ref(&s),
                mode,
            );
            if let Some((pod, e)) = self.rejected(&uid) {
                failure = Some((pod, e));
                break;
            }
            let made = &self.objects[&pk];
            if ordered && !pod_ready(made) {
                break;
            }
        }
        if let Some((pod, e)) = &failure {
            self.failed_create(&s, pod, e, "statefulset-controller");
        }
        let pods = owned(self);
        let count = |f: &dyn Fn(&Value) -> bool| pods.iter().filter(|(_, p)| f(p)).count() as i64;
        let ready = count(&|p| pod_ready(p));
        let updated = count(&|p| pod_revision(p) == revision);
        let current = pods
            .iter()
            .map(|(_, p)| pod_revision(p))
            .find(|r| *r != revision)
            .unwrap_or_else(|| revision.clone());
        let mut status = json!({
            "observedGeneration": s["metadata"]["generation"],
            "replicas": pods.len(),
            "currentReplicas": count(&|p| pod_revision(p) == current),
            "updatedReplicas": updated,
            "currentRevision": current,
            "updateRevision": revision,
            "collisionCount": 0,
            "availableReplicas": ready,
        });
        if ready > 0 {
            status["readyReplicas"] = json!(ready);
        }
        self.set_status(k, status);
    }

    /// The DaemonSet controller on one node (kubernetes pkg/controller/daemon): the pod
    /// follows the template under RollingUpdate; under `OnDelete` an old pod stays until
    /// deleted (pkg/controller/daemon/update.go acts only for RollingUpdate), so
    /// updatedNumberScheduled stays 0 after a template change.
    fn daemonset(&mut self, k: &Key) {
        let d = self.objects[k].clone();
        let (ns, name) = (k.2.clone(), k.3.clone());
        let uid = str_of(&d, &["metadata", "uid"]).to_string();
        let template = d["spec"]["template"].clone();
        let mode = self.mode_for(&name, &uid, &template);
        let hash = short_hash(&template, 10);
        let pod = format!("{name}-{}", short_hash(&format!("{uid}/0"), 5));
        let pk = key("", "pods", &ns, &pod);
        self.prune_pods(&ns, &uid, std::slice::from_ref(&pod));
        let old = self.objects.get(&pk).is_some_and(|p| {
            str_of(p, &["metadata", "labels", "controller-revision-hash"]) != hash
        });
        let keep = old && d["spec"]["updateStrategy"]["type"] == "OnDelete";
        if !keep {
            self.pod(
                &ns,
                &pod,
                &template,
                &[
                    ("controller-revision-hash", hash.clone()),
                    (
                        "pod-template-generation",
                        d["metadata"]["generation"].to_string(),
                    ),
                ],
                &owner_ref(&d),
                mode,
            );
        }
        if let Some((p, e)) = self.rejected(&uid) {
            self.failed_create(&d, &p, &e, "daemonset-controller");
        }
        let stored = self.objects.get(&pk);
        let scheduled = i64::from(stored.is_some());
        let ready = i64::from(stored.is_some_and(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        }));
        let updated = i64::from(stored.is_some_and(|p| {
            str_of(p, &["metadata", "labels", "controller-revision-hash"]) == hash
        }));
        let mut status = json!({
            "observedGeneration": d["metadata"]["generation"],
            "desiredNumberScheduled": 1,
            "currentNumberScheduled": scheduled,
            "updatedNumberScheduled": updated,
            "numberMisscheduled": 0,
            "numberReady": ready,
        });
        if ready > 0 {
            status["numberAvailable"] = json!(1);
        } else {
            status["numberUnavailable"] = json!(1);
        }
        self.set_status(k, status);
    }

    fn job(&mut self, k: &Key) {
        let j = self.objects[k].clone();
        let (ns, name) = (k.2.clone(), k.3.clone());
        let uid = str_of(&j, &["metadata", "uid"]).to_string();
        let terminal = j["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
            })
        });
        if terminal {
            return;
        }
        let template = j["spec"]["template"].clone();
        let owner = owner_ref(&j);
        let start = j["metadata"]["creationTimestamp"].clone();
        let pending = self.ready_at.get(&uid).is_some_and(|t| Instant::now() < *t);
        let failing = self
            .opts
            .failing_jobs
            .iter()
            .any(|p| name.starts_with(p.as_str()));
        let pod_name = |i: i64| format!("{name}-{}", short_hash(&format!("{uid}/{i}"), 5));
        let first = pod_name(0);
        if !self.objects.contains_key(&key("", "pods", &ns, &first))
            && let Err(e) = self.admit_pod(&ns, &first, &template["spec"])
        {
            // The job controller records the refusal and retries (controller_utils.go).
            self.failed_create(&j, &first, &e, "job-controller");
            self.set_status(
                k,
                json!({"active": 0, "ready": 0, "terminating": 0, "startTime": start,
                    "uncountedTerminatedPods": {}}),
            );
            return;
        }
        if pending {
            self.pod(&ns, &pod_name(0), &template, &[], &owner, PodMode::Pending);
            self.set_status(
                k,
                json!({"active": 1, "ready": 0, "terminating": 0, "startTime": start,
                    "uncountedTerminatedPods": {}}),
            );
        } else if failing {
            let attempts = j["spec"]["backoffLimit"].as_i64().unwrap_or(6) + 1;
            for i in 0..attempts {
                self.pod(&ns, &pod_name(i), &template, &[], &owner, PodMode::Failed);
            }
            self.event(
                &ns,
                json!({"kind": "Job", "namespace": ns, "name": name, "uid": uid, "apiVersion": "batch/v1"}),
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                "job-controller",
            );
            let msg = "Job has reached the specified backoff limit";
            self.set_status(
                k,
                json!({"failed": attempts, "ready": 0, "terminating": 0, "startTime": start,
                "uncountedTerminatedPods": {},
                "conditions": [
                    cond("FailureTarget", true, "BackoffLimitExceeded", msg),
                    cond("Failed", true, "BackoffLimitExceeded", msg),
                ]}),
            );
        } else {
            self.pod(
                &ns,
                &pod_name(0),
                &template,
                &[],
                &owner,
                PodMode::Succeeded,
            );
            self.set_status(
                k,
                json!({"succeeded": 1, "ready": 0, "terminating": 0, "startTime": start,
                    "completionTime": now_rfc3339(), "uncountedTerminatedPods": {},
                    "conditions": [
                        cond("SuccessCriteriaMet", true, "CompletionsReached", "Reached expected number of succeeded pods"),
                        cond("Complete", true, "CompletionsReached", "Reached expected number of succeeded pods"),
                    ]}),
            );
        }
    }

    fn pvc(&mut self, k: &Key) {
        let p = &self.objects[k];
        if p["status"]["phase"] == "Bound" {
            return;
        }
        let mut p = p.clone();
        let uid = str_of(&p, &["metadata", "uid"]).to_string();
        if p["spec"]["volumeName"].is_null() {
            p["spec"]["volumeName"] = json!(format!("pvc-{uid}"));
        }
        if p["spec"]["storageClassName"].is_null() {
            p["spec"]["storageClassName"] = json!("standard");
        }
        let storage = p["spec"]["resources"]["requests"]["storage"].clone();
        p["status"] = json!({"phase": "Bound", "accessModes": p["spec"]["accessModes"],
            "capacity": {"storage": storage}});
        p["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.objects.insert(k.clone(), p);
    }

    fn certificate(&mut self, k: &Key) {
        if self.certificate_waits(k) {
            return;
        }
        let c = self.objects[k].clone();
        let ns = k.2.clone();
        let secret = str_of(&c, &["spec", "secretName"]).to_string();
        // Each generation gets its own certificate, so an old Secret is told apart.
        let issued_for = match c["metadata"]["generation"].as_i64() {
            Some(g) if g > 1 => format!("{ns}/{}#{g}", k.3),
            _ => format!("{ns}/{}", k.3),
        };
        if !secret.is_empty() {
            let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
            let issuer = &c["spec"]["issuerRef"];
            let dns = c["spec"]["dnsNames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",");
            self.upsert(
                "",
                "secrets",
                json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": {"name": secret, "namespace": ns,
                        "labels": {"controller.cert-manager.io/fao": "true"},
                        "annotations": {
                            "cert-manager.io/certificate-name": k.3,
                            "cert-manager.io/common-name": c["spec"]["commonName"].as_str().unwrap_or(""),
                            "cert-manager.io/alt-names": dns,
                            "cert-manager.io/issuer-name": issuer["name"],
                            "cert-manager.io/issuer-kind": issuer["kind"].as_str().unwrap_or("Issuer"),
                            "cert-manager.io/issuer-group": issuer["group"].as_str().unwrap_or("cert-manager.io"),
                        }},
                    "data": {
                        "tls.crt": b64(fake_pem("CERTIFICATE", &issued_for)),
                        "tls.key": b64(fake_pem("EC PRIVATE KEY", &format!("{ns}/{}", k.3))),
                        "ca.crt": b64(fake_pem("CERTIFICATE", "pulsewatch-local-ca")),
                    }}),
                "cert-manager-certificates-issuing",
            );
        }
        let generation = c["metadata"]["generation"].clone();
        let mut ready = cond(
            "Ready",
            true,
            "Ready",
            "Certificate is up to date and has not expired",
        );
        ready["observedGeneration"] = generation;
        ready.as_object_mut().unwrap().remove("lastUpdateTime");
        self.set_status(
            k,
            json!({"conditions": [ready], "notBefore": "2026-11-26T00:00:00Z",
                "notAfter": "2027-02-24T00:00:00Z", "renewalTime": "2027-02-09T00:00:00Z",
                "revision": 1}),
        );
    }
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A PEM block that looks like one (base64 of a fixed, recognisable payload).
pub fn fake_pem(label: &str, seed: &str) -> String {
    let body = base64::engine::general_purpose::STANDARD
        .encode(format!("fake {label} for {seed} {}", "0".repeat(64)));
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Namespace cert-manager and the CRDs of cert-manager's Certificate, ClusterIssuer and
/// Issuer (schemas left open): what the cert-manager chart installs, for tests that
/// do not render the real chart.
pub const CERT_MANAGER_CRDS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: cert-manager}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: certificates.cert-manager.io}
spec:
  group: cert-manager.io
  scope: Namespaced
  names: {kind: Certificate, plural: certificates, singular: certificate, listKind: CertificateList, shortNames: [cert, certs]}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: clusterissuers.cert-manager.io}
spec:
  group: cert-manager.io
  scope: Cluster
  names: {kind: ClusterIssuer, plural: clusterissuers, singular: clusterissuer, listKind: ClusterIssuerList}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: issuers.cert-manager.io}
spec:
  group: cert-manager.io
  scope: Namespaced
  names: {kind: Issuer, plural: issuers, singular: issuer, listKind: IssuerList}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;

/// Stand-ins for the platform charts `up` fetches (nginx-ingress, cert-manager): the
/// workloads `status` checks, with the names and labels those charts give them.
pub const PLATFORM: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: platform}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ingress-nginx-ingress-controller
  namespace: platform
  labels: {app.kubernetes.io/name: nginx-ingress}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: nginx-ingress}}
  template:
    metadata: {labels: {app.kubernetes.io/name: nginx-ingress}}
    spec:
      containers: [{name: nginx-ingress, image: "nginx/nginx-ingress:5.2.1"}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cert-manager, namespace: cert-manager}
spec:
  selector: {matchLabels: {app: cert-manager}}
  template:
    metadata: {labels: {app: cert-manager}}
    spec:
      containers: [{name: cert-manager-controller, image: "quay.io/jetstack/cert-manager-controller:v1.21.1"}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cert-manager-cainjector, namespace: cert-manager}
spec:
  selector: {matchLabels: {app: cainjector}}
  template:
    metadata: {labels: {app: cainjector}}
    spec:
      containers: [{name: cert-manager-cainjector, image: "quay.io/jetstack/cert-manager-cainjector:v1.21.1"}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cert-manager-webhook, namespace: cert-manager}
spec:
  selector: {matchLabels: {app: webhook}}
  template:
    metadata: {labels: {app: webhook}}
    spec:
      containers: [{name: cert-manager-webhook, image: "quay.io/jetstack/cert-manager-webhook:v1.21.1"}]
"#;

// ---------------------------------------------------------------------------------------
// Tests: the fake driven through pulsedev's library and binary
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{Pd, repo_root};
    use pulsedev::kube::{ApplyOptions, Backoff, Engine, Timing, WebhookGate, connect, parse};
    use tokio_util::sync::CancellationToken;

    pub(super) fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// An engine talking to `api` through a kubeconfig file, with short timings, and
    /// the progress lines it said.
    pub(super) async fn engine(
        api: &FakeApiServer,
        dir: &Path,
    ) -> (Engine, Arc<Mutex<Vec<String>>>) {
        let path = dir.join("kubeconfig");
        api.write_kubeconfig(&path, "kind-test");
        let client = connect(&path, "kind-test").await.unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let engine = Engine::new(client)
            .with_timing(Timing {
                poll: Duration::from_millis(50),
                crd_established: Duration::from_secs(10),
                discovery_catch_up: Duration::from_secs(10),
                concurrency: 8,
                log_lines: 5,
                recreate: Duration::from_secs(10),
                deletion: Duration::from_secs(10),
                probe_after: Duration::from_millis(200),
                settle: Duration::from_secs(1),
            })
            .with_progress(move |l| sink.lock().unwrap().push(l.to_string()));
        (engine, lines)
    }

    pub(super) const STACK: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata: {name: w1, namespace: demo}
spec: {size: 3}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: "localhost:5001/pulsewatch/api:dev"}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: demo}
spec:
  selector: {app: api}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: api-config, namespace: demo}
data: {LOG_LEVEL: debug}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: migrations-1a2b
  namespace: demo
  labels: {app.kubernetes.io/component: migrations}
spec:
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: flyway, image: "localhost:5001/pulsewatch/migrations:dev"}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: postgres, namespace: demo}
spec:
  serviceName: postgres
  selector: {matchLabels: {app: postgres}}
  template:
    metadata: {labels: {app: postgres}}
    spec:
      containers: [{name: postgres, image: "postgres:17-alpine"}]
  # Complete as the server stores it (the list is atomic: see ssa.rs `round_trip`).
  volumeClaimTemplates:
    - apiVersion: v1
      kind: PersistentVolumeClaim
      metadata: {name: data}
      spec:
        accessModes: [ReadWriteOnce]
        resources: {requests: {storage: 1Gi}}
        volumeMode: Filesystem
      status: {phase: Pending}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: v1
kind: Namespace
metadata: {name: demo}
"#;

    #[test]
    fn the_engine_applies_a_stack_with_a_crd_and_everything_becomes_ready() {
        // The CRD is Established on its 3rd read; discovery serves its group 2 answers
        // later; the four workload-group applies are held until all have arrived, so
        // those the engine sends together overlap however busy the machine is (one sent
        // after another would wait 10 s for the rest and not overlap).
        let api = FakeApiServer::start(
            Options::new("test")
                .crd_lag(3, 2)
                .hold_applies(&["Deployment", "Service", "Job", "StatefulSet"], 4),
        );
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (engine, lines) = engine(&api, dir.path()).await;
            let cancel = CancellationToken::new();
            let ms = parse("stack.yaml", STACK).unwrap();
            let options = ApplyOptions::new("demo-stack", "demo");
            let report = engine.apply(&ms, &options, &cancel).await.unwrap();
            engine
                .wait_ready(&report.targets(), Duration::from_secs(10), &cancel)
                .await
                .unwrap();
            let said = lines.lock().unwrap().join("\n");
            assert!(said.contains("not Established yet"), "{said}");
            assert!(
                said.contains("waiting for discovery to serve Widget"),
                "{said}"
            );
            assert!(said.contains("deployment demo/api: ready"), "{said}");
            assert!(said.contains("job demo/migrations-1a2b: ready"), "{said}");
            assert!(said.contains("statefulset demo/postgres: ready"), "{said}");

            // A second apply of the same set changes nothing on the server: every
            // object, resourceVersion included, is as it was.
            let before = api.objects();
            let again = engine.apply(&ms, &options, &cancel).await.unwrap();
            assert_eq!(before, api.objects());
            let records = api.applies();
            assert!(records[..8].iter().all(|a| a.changed), "{records:#?}");
            assert!(records[8..].iter().all(|a| !a.changed), "{records:#?}");
            for a in &again.applied {
                let stored = api
                    .object(&a.kind, a.namespace.as_deref().unwrap_or_default(), &a.name)
                    .unwrap();
                assert_eq!(
                    a.resource_version.as_deref(),
                    stored["metadata"]["resourceVersion"].as_str()
                );
            }
        });

        let order = api.applied_in_order();
        let first: Vec<String> = order[..3]
            .iter()
            .map(|(k, _, n)| format!("{k} {n}"))
            .collect();
        assert_eq!(
            first,
            [
                "Namespace demo",
                "CustomResourceDefinition widgets.example.com",
                "ConfigMap api-config"
            ]
        );
        assert_eq!(order[7].0, "Widget", "custom resources last: {order:?}");
        // Workloads and the Service (one group) went out together; groups did not.
        let applies = api.applies();
        let workloads = &applies[3..7];
        for a in workloads {
            assert!(workloads.iter().all(|b| a.overlaps(b)), "{workloads:#?}");
            assert!(
                !a.overlaps(&applies[2]) && !a.overlaps(&applies[7]),
                "{applies:#?}"
            );
        }
        let requests = api.requests();
        assert!(
            requests.iter().any(|r| r
                == "PATCH /apis/apps/v1/namespaces/demo/deployments/api?fieldManager=pulsedev&fieldValidation=Strict&force=true"),
            "{requests:#?}"
        );
        assert!(api.unexpected().is_empty(), "{:#?}", api.unexpected());

        // What the controllers made.
        let d = api.object("Deployment", "demo", "api").unwrap();
        assert_eq!(d["status"]["availableReplicas"], 2);
        assert_eq!(d["metadata"]["managedFields"][0]["manager"], "pulsedev");
        assert_eq!(d["metadata"]["labels"]["pulsedev.dev/stack"], "demo-stack");
        let pods: Vec<Value> = api
            .objects_of("Pod")
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "api")
            .collect();
        assert_eq!(pods.len(), 2);
        assert_eq!(
            pods[0]["status"]["containerStatuses"][0]["image"],
            "localhost:5001/pulsewatch/api:dev"
        );
        let pvc = api
            .object("PersistentVolumeClaim", "demo", "data-postgres-0")
            .unwrap();
        assert_eq!(pvc["status"]["phase"], "Bound");
        let w = api.object("Widget", "demo", "w1").unwrap();
        assert_eq!(w["spec"]["size"], 3);
        let crd = api
            .object("CustomResourceDefinition", "", "widgets.example.com")
            .unwrap();
        assert_eq!(crd["status"]["conditions"][1]["status"], "True");
    }

    #[test]
    fn a_failing_migrations_job_is_migrations_failed_with_its_log() {
        let api = FakeApiServer::start(Options::new("test").fail_jobs("migrations"));
        let dir = tempfile::tempdir().unwrap();
        let e = rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let cancel = CancellationToken::new();
            let text = STACK
                .split("---")
                .filter(|d| d.contains("kind: Job") || d.contains("kind: Namespace"))
                .collect::<Vec<_>>()
                .join("---");
            let ms = parse("stack.yaml", &text).unwrap();
            let report = engine
                .apply(&ms, &ApplyOptions::new("demo-stack", "demo"), &cancel)
                .await
                .unwrap();
            assert!(report.targets()[0].migrations);
            engine
                .wait_ready(&report.targets(), Duration::from_secs(10), &cancel)
                .await
                .unwrap_err()
        });
        assert_eq!(e.id(), "migrations-failed", "{e:?}");
        assert_eq!(e.message, "the migrations Job demo/migrations-1a2b failed");
        let details = e.details.join("\n");
        assert!(details.contains("BackoffLimitExceeded"), "{details}");
        assert!(
            details.contains("container flyway: Error: exit 1"),
            "{details}"
        );
        assert!(
            details.contains("| ERROR: Migration V2__check_results.sql failed"),
            "{details}"
        );
        let job = api.object("Job", "demo", "migrations-1a2b").unwrap();
        assert_eq!(job["status"]["failed"], 3);
        assert!(api.unexpected().is_empty(), "{:#?}", api.unexpected());
    }

    #[test]
    fn a_crash_looping_deployment_is_diagnosed_with_restarts_and_log_tail() {
        let api = FakeApiServer::start(Options::new("test").crash_loop("api"));
        let dir = tempfile::tempdir().unwrap();
        let e = rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let cancel = CancellationToken::new();
            let text = STACK
                .split("---")
                .filter(|d| d.contains("kind: Deployment") || d.contains("kind: Namespace"))
                .collect::<Vec<_>>()
                .join("---");
            let ms = parse("stack.yaml", &text).unwrap();
            let report = engine
                .apply(&ms, &ApplyOptions::new("demo-stack", "demo"), &cancel)
                .await
                .unwrap();
            engine
                .wait_ready(&report.targets(), Duration::from_millis(300), &cancel)
                .await
                .unwrap_err()
        });
        assert_eq!(e.id(), "pod-crash-looping", "{e:?}");
        let details = e.details.join("\n");
        assert!(
            details.contains("CrashLoopBackOff (restarts 5): last exit 1"),
            "{details}"
        );
        assert!(
            details.contains("| Error: database unavailable"),
            "{details}"
        );
        assert!(
            details.contains("BackOff: Back-off restarting failed container api"),
            "{details}"
        );
        assert!(api.unexpected().is_empty(), "{:#?}", api.unexpected());
    }

    #[test]
    fn prune_deletes_a_labelled_leftover_and_nothing_else() {
        let api = FakeApiServer::start(Options::new("test"));
        let dir = tempfile::tempdir().unwrap();
        let pruned = rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let cancel = CancellationToken::new();
            let options = ApplyOptions::new("demo-stack", "demo");
            let old = format!("{STACK}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: leftover, namespace: demo}}\ndata: {{a: b}}\n");
            engine
                .apply(&parse("old.yaml", &old).unwrap(), &options, &cancel)
                .await
                .unwrap();
            let desired = engine
                .apply(&parse("new.yaml", STACK).unwrap(), &options, &cancel)
                .await
                .unwrap();
            engine.prune("demo-stack", &desired, &cancel).await.unwrap()
        });
        assert_eq!(pruned.deleted, ["ConfigMap demo/leftover"]);
        assert!(api.object("ConfigMap", "demo", "leftover").is_none());
        assert!(api.object("ConfigMap", "demo", "api-config").is_some());
        assert!(api.unexpected().is_empty(), "{:#?}", api.unexpected());
    }

    #[test]
    fn the_cert_manager_gate_waits_out_webhook_refusals_then_certificates_issue() {
        let api = FakeApiServer::start(Options::new("test").webhook_refusals(3));
        let dir = tempfile::tempdir().unwrap();
        let ca = r#"
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: selfsigned}
spec: {selfSigned: {}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: local-ca, namespace: cert-manager}
spec:
  isCA: true
  secretName: local-ca
  issuerRef: {kind: ClusterIssuer, name: selfsigned}
"#;
        rt().block_on(async {
            let (engine, lines) = engine(&api, dir.path()).await;
            let cancel = CancellationToken::new();
            let options = ApplyOptions::new("demo-stack", "demo");
            engine
                .apply(
                    &parse("crds.yaml", CERT_MANAGER_CRDS).unwrap(),
                    &options,
                    &cancel,
                )
                .await
                .unwrap();
            let gate = WebhookGate::cert_manager("cert-manager").with_backoff(Backoff {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(50),
                cap: Duration::from_secs(10),
                jitter: 0.0,
            });
            let gated = options.clone().with_gate(gate);
            engine
                .apply(&parse("ca.yaml", ca).unwrap(), &gated, &cancel)
                .await
                .unwrap();
            let said = lines.lock().unwrap().join("\n");
            assert!(said.contains("cert-manager webhook: ready"), "{said}");
        });
        let dry_runs: Vec<(String, u16)> = api
            .calls()
            .into_iter()
            .filter(|c| c.method == "POST" && c.target.contains("dryRun=All"))
            .map(|c| (c.target, c.status))
            .collect();
        let codes: Vec<u16> = dry_runs.iter().map(|(_, s)| *s).collect();
        assert_eq!(codes, [500, 500, 500, 201], "{dry_runs:#?}");
        assert!(
            dry_runs[0]
                .0
                .starts_with("/apis/cert-manager.io/v1/namespaces/cert-manager/certificates?"),
            "{dry_runs:#?}"
        );
        // Dry runs stored nothing; the real Certificate issued its Secret.
        assert!(
            api.object("Certificate", "cert-manager", "pulsedev-webhook-probe")
                .is_none()
        );
        let secret = api.object("Secret", "cert-manager", "local-ca").unwrap();
        assert_eq!(secret["type"], "kubernetes.io/tls");
        let ca_crt = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["ca.crt"].as_str().unwrap())
            .unwrap();
        assert!(
            String::from_utf8(ca_crt)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        let cert = api
            .object("Certificate", "cert-manager", "local-ca")
            .unwrap();
        assert_eq!(cert["status"]["conditions"][0]["type"], "Ready");
        assert!(api.unexpected().is_empty(), "{:#?}", api.unexpected());
    }

    #[test]
    fn status_through_the_binary_reports_the_applied_pulsewatch_stack_ready() {
        // What `up` would apply: the dev render of the real charts and manifests.
        let render = Pd::new()
            .with_helm()
            .cwd(repo_root())
            .args(&["render", "--env", "dev"])
            .run();
        assert_eq!(render.code, 0, "{}", render.stderr);

        let api = FakeApiServer::start(Options::new("demo"));
        let pd = Pd::new().args(&["status", "--name", "demo"]);
        let kubeconfig = pd.home.path().join("state/pulsedev/demo/kubeconfig");
        api.write_kubeconfig(&kubeconfig, "kind-demo");

        // Before anything is applied: reachable, nothing there.
        let empty = pd.run();
        assert_eq!(empty.code, 1, "{}{}", empty.stdout, empty.stderr);
        assert!(empty.stdout.contains("missing"), "{}", empty.stdout);

        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let cancel = CancellationToken::new();
            let mut stream = format!("{CERT_MANAGER_CRDS}\n---\n{PLATFORM}");
            stream.push_str("\n---\n");
            stream.push_str(&render.stdout);
            let ms = parse("render", &stream).unwrap();
            let options = ApplyOptions::new("pulsewatch", "pulsewatch-dev")
                .with_gate(WebhookGate::cert_manager("cert-manager"));
            let report = engine.apply(&ms, &options, &cancel).await.unwrap();
            engine
                .wait_ready(&report.targets(), Duration::from_secs(10), &cancel)
                .await
                .unwrap();
            // The whole desired set applied: prune has nothing to do.
            let pruned = engine.prune("pulsewatch", &report, &cancel).await.unwrap();
            assert_eq!(pruned, pulsedev::kube::PruneReport::default());
        });
        assert!(api.unexpected().is_empty(), "{:#?}", api.unexpected());

        let run = pd.run();
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        for row in [
            "demo (kind-demo)",
            "platform/ingress-nginx-ingress-controller",
            "cert-manager/cert-manager-webhook",
            "pulsewatch-dev/postgres",
            "pulsewatch-dev/redis",
            "pulsewatch-dev/api",
            "pulsewatch-dev/worker",
            "pulsewatch-dev/web",
        ] {
            let line = run
                .stdout
                .lines()
                .find(|l| l.contains(row))
                .unwrap_or_else(|| panic!("no row {row}:\n{}", run.stdout));
            assert!(line.contains(" ready "), "{line}\n{}", run.stdout);
        }
        assert!(
            run.stdout.contains("https://pulsewatch.localhost"),
            "{}",
            run.stdout
        );
        let json = pd.run_with(&["--output", "json"]).json();
        assert_eq!(json["ok"], true, "{json:#}");
        assert!(api.unexpected().is_empty(), "{:#?}", api.unexpected());
    }

    #[test]
    fn readiness_can_lag_behind_the_apply() {
        let api =
            FakeApiServer::start(Options::new("test").ready_after(Duration::from_millis(400)));
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (engine, lines) = engine(&api, dir.path()).await;
            let cancel = CancellationToken::new();
            let text = STACK
                .split("---")
                .filter(|d| d.contains("kind: Deployment") || d.contains("kind: Namespace"))
                .collect::<Vec<_>>()
                .join("---");
            let ms = parse("stack.yaml", &text).unwrap();
            let report = engine
                .apply(&ms, &ApplyOptions::new("demo-stack", "demo"), &cancel)
                .await
                .unwrap();
            let started = Instant::now();
            engine
                .wait_ready(&report.targets(), Duration::from_secs(10), &cancel)
                .await
                .unwrap();
            assert!(started.elapsed() >= Duration::from_millis(250));
            let said = lines.lock().unwrap().join("\n");
            assert!(
                said.contains("deployment demo/api: 0/2 replicas available"),
                "{said}"
            );
        });
        let pod = &api.objects_of("Pod")[0];
        assert_eq!(pod["status"]["phase"], "Running");
    }

    #[test]
    fn objects_in_a_missing_namespace_are_refused_like_the_real_server() {
        let api = FakeApiServer::start(Options::new("test"));
        let dir = tempfile::tempdir().unwrap();
        let e = rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let ms = parse(
                "cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: nowhere}\n",
            )
            .unwrap();
            engine
                .apply(
                    &ms,
                    &ApplyOptions::new("s", "nowhere"),
                    &CancellationToken::new(),
                )
                .await
                .unwrap_err()
        });
        assert_eq!(e.id(), "apply-failed");
        assert_eq!(
            e.details,
            [
                "ConfigMap nowhere/a (cm.yaml document 1): namespaces \"nowhere\" not found (404 NotFound)"
            ]
        );
        assert!(
            api.objects_of("ConfigMap")
                .iter()
                .all(|c| c["metadata"]["name"] != "a")
        );
    }

    #[test]
    fn discovery_documents_parse_with_kube_rs_classic_and_aggregated() {
        let api = FakeApiServer::start(Options::new("test"));
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let ms = parse("crds.yaml", CERT_MANAGER_CRDS).unwrap();
            engine
                .apply(
                    &ms,
                    &ApplyOptions::new("s", "default"),
                    &CancellationToken::new(),
                )
                .await
                .unwrap();
            let client = engine.client().clone();
            for d in [
                kube::Discovery::new(client.clone()).run().await.unwrap(),
                kube::Discovery::new(client.clone())
                    .run_aggregated()
                    .await
                    .unwrap(),
            ] {
                for (group, kind, namespaced) in [
                    ("apps", "Deployment", true),
                    ("", "Namespace", false),
                    ("networking.k8s.io", "IngressClass", false),
                    ("cert-manager.io", "ClusterIssuer", false),
                    ("cert-manager.io", "Certificate", true),
                ] {
                    let gvk = kube::api::GroupVersionKind::gvk(group, "v1", kind);
                    let (ar, caps) = d
                        .resolve_gvk(&gvk)
                        .unwrap_or_else(|| panic!("{group}/{kind} not discovered"));
                    assert_eq!(ar.kind, kind);
                    assert_eq!(
                        caps.scope == kube::discovery::Scope::Namespaced,
                        namespaced,
                        "{kind}"
                    );
                }
            }
            let v = client.apiserver_version().await.unwrap();
            assert_eq!(v.git_version, "v1.36.1");
        });
        assert!(api.unexpected().is_empty(), "{:#?}", api.unexpected());
    }

    #[test]
    fn a_changed_template_rolls_out_and_a_changed_job_template_is_recreated() {
        let api = FakeApiServer::start(Options::new("test"));
        let dir = tempfile::tempdir().unwrap();
        let pick = |image: &str| {
            STACK
                .split("---")
                .filter(|d| {
                    d.contains("kind: Deployment")
                        || d.contains("kind: Namespace")
                        || d.contains("kind: Job")
                })
                .collect::<Vec<_>>()
                .join("---")
                .replace(":dev", image)
        };
        let e = rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let cancel = CancellationToken::new();
            let options = ApplyOptions::new("demo-stack", "demo");
            let first = engine
                .apply(&parse("v1", &pick(":v1")).unwrap(), &options, &cancel)
                .await
                .unwrap();
            engine
                .wait_ready(&first.targets(), Duration::from_secs(10), &cancel)
                .await
                .unwrap();
            let v1_pods: Vec<String> = api
                .objects_of("Pod")
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                .collect();
            // Only the Deployment changes: generation 2, new pods.
            let deploy_v2 = pick(":v2").replace("migrations:v2", "migrations:v1");
            let second = engine
                .apply(&parse("v2", &deploy_v2).unwrap(), &options, &cancel)
                .await
                .unwrap();
            engine
                .wait_ready(&second.targets(), Duration::from_secs(10), &cancel)
                .await
                .unwrap();
            let d = api.object("Deployment", "demo", "api").unwrap();
            assert_eq!(d["metadata"]["generation"], 2);
            assert_eq!(d["status"]["observedGeneration"], 2);
            let pods = api.objects_of("Pod");
            // Old pods may still be in their grace period (rollout.rs): done is when no
            // old replica is counted, as kubectl's rollout status has it.
            let api_pods: Vec<&Value> = pods
                .iter()
                .filter(|p| p["metadata"]["labels"]["app"] == "api")
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            assert_eq!(api_pods.len(), 2);
            for p in &api_pods {
                assert!(!v1_pods.contains(&p["metadata"]["name"].as_str().unwrap().to_string()));
                assert_eq!(
                    p["spec"]["containers"][0]["image"],
                    "localhost:5001/pulsewatch/api:v2"
                );
            }
            let replica_sets = api.objects_of("ReplicaSet");
            assert_eq!(replica_sets.len(), 2);
            assert!(replica_sets.iter().any(|r| r["spec"]["replicas"] == 0));
            // A Job's pod template cannot change (422 Invalid, "field is immutable"): the
            // engine deletes the Job with its pods and applies it again.
            let old_uid =
                api.object("Job", "demo", "migrations-1a2b").unwrap()["metadata"]["uid"].clone();
            engine
                .apply(&parse("v3", &pick(":v2")).unwrap(), &options, &cancel)
                .await
                .unwrap();
            old_uid
        });
        let job = api.object("Job", "demo", "migrations-1a2b").unwrap();
        assert_ne!(job["metadata"]["uid"], e, "a new Job");
        assert_eq!(
            job["spec"]["template"]["spec"]["containers"][0]["image"],
            "localhost:5001/pulsewatch/migrations:v2"
        );
        let calls = api.calls();
        let refused = calls
            .iter()
            .position(|c| {
                c.method == "PATCH" && c.target.contains("/jobs/migrations-1a2b") && c.status == 422
            })
            .expect("the changed template was refused first");
        let deleted = calls
            .iter()
            .position(|c| c.method == "DELETE" && c.target.contains("/jobs/migrations-1a2b"))
            .expect("then the Job was deleted");
        assert!(refused < deleted);
        assert!(
            calls[deleted]
                .body
                .contains("\"propagationPolicy\":\"Background\""),
            "{}",
            calls[deleted].body
        );
        assert!(calls[deleted + 1..].iter().any(|c| c.method == "PATCH"
            && c.target.contains("/jobs/migrations-1a2b")
            && c.status == 201));
    }

    #[test]
    fn the_cluster_step_reads_nodes_and_applies_the_registry_config_map() {
        use pulsedev::cluster::api::{ClusterApi, KubeApi};
        let api = FakeApiServer::start(Options::new("demo").node_not_ready());
        let dir = tempfile::tempdir().unwrap();
        let kube = KubeApi {
            kubeconfig: dir.path().join("kubeconfig"),
            context: "kind-demo".into(),
        };
        api.write_kubeconfig(&kube.kubeconfig, "kind-demo");
        rt().block_on(async {
            let nodes = kube.nodes().await.unwrap();
            assert_eq!(
                nodes.not_ready,
                [(
                    "demo-control-plane".to_string(),
                    "KubeletNotReady".to_string()
                )]
            );
            api.configure(|o| o.node_ready = true);
            assert_eq!(kube.nodes().await.unwrap().ready, ["demo-control-plane"]);
            let data = [(
                "localRegistryHosting.v1".to_string(),
                "host: \"localhost:5001\"\n".to_string(),
            )];
            kube.apply_config_map(
                "kube-public",
                "local-registry-hosting",
                data.into_iter().collect(),
            )
            .await
            .unwrap();
        });
        let cm = api
            .object("ConfigMap", "kube-public", "local-registry-hosting")
            .unwrap();
        assert_eq!(
            cm["data"]["localRegistryHosting.v1"],
            "host: \"localhost:5001\"\n"
        );
        assert!(api.unexpected().is_empty(), "{:#?}", api.unexpected());
    }

    #[test]
    fn faults_answer_instead_of_the_store() {
        let api = FakeApiServer::start(Options::new("test").fault(
            "PATCH",
            "/configmaps/a",
            500,
            "InternalError",
            "etcdserver: request timed out",
            1,
        ));
        let dir = tempfile::tempdir().unwrap();
        let ms = parse(
            "cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: default}\n",
        )
        .unwrap();
        rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let options = ApplyOptions::new("s", "default");
            let e = engine
                .apply(&ms, &options, &CancellationToken::new())
                .await
                .unwrap_err();
            assert_eq!(
                e.details,
                ["ConfigMap default/a (cm.yaml document 1): etcdserver: request timed out (500 InternalError)"]
            );
            // Used up: the next apply goes through.
            engine
                .apply(&ms, &options, &CancellationToken::new())
                .await
                .unwrap();
        });
        assert!(api.object("ConfigMap", "default", "a").is_some());
    }

    /// One request over a fresh connection: (status code, body).
    pub(super) fn raw(
        api: &FakeApiServer,
        method: &str,
        target: &str,
        ct: &str,
        body: &str,
    ) -> (u16, String) {
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
        (code, out.split_once("\r\n\r\n").unwrap().1.to_string())
    }

    #[test]
    fn yaml_apply_conflicts_not_found_selectors_and_unknown_routes_over_plain_http() {
        let api = FakeApiServer::start(Options::new("test"));
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels: {tier: web, stack: s}\ndata: {k: v}\n";
        let apply = "/api/v1/namespaces/default/configmaps/a?fieldManager=pulsedev&fieldValidation=Strict&force=true";
        let (code, body) = raw(&api, "PATCH", apply, "application/apply-patch+yaml", yaml);
        assert_eq!(code, 201, "{body}");
        let stored: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(stored["metadata"]["namespace"], "default");
        assert_eq!(stored["metadata"]["managedFields"][0]["operation"], "Apply");
        assert!(stored["metadata"]["uid"].is_string());

        let json_cm =
            serde_json::to_string(&serde_saphyr::from_str::<Value>(yaml).unwrap()).unwrap();
        let (code, body) = raw(
            &api,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            &json_cm,
        );
        assert_eq!(code, 409);
        let status: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["reason"], "AlreadyExists");
        assert_eq!(status["message"], "configmaps \"a\" already exists");

        let (code, body) = raw(
            &api,
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/nope",
            "",
            "",
        );
        assert_eq!(code, 404);
        let status: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            status,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "deployments.apps \"nope\" not found", "reason": "NotFound", "code": 404,
                "details": {"name": "nope", "group": "apps", "kind": "deployments"}})
        );

        for (selector, hits) in [
            ("tier%3Dweb", 1),
            ("tier", 1),
            ("tier%3Dapi", 0),
            ("tier%20in%20(api%2Cweb)%2Cstack", 1),
            ("!tier", 0),
            ("tier!%3Dweb", 0),
        ] {
            let (code, body) = raw(
                &api,
                "GET",
                &format!("/api/v1/configmaps?labelSelector={selector}"),
                "",
                "",
            );
            assert_eq!(code, 200);
            let list: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(list["kind"], "ConfigMapList");
            let names: Vec<&Value> = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["metadata"]["name"] == "a")
                .collect();
            assert_eq!(names.len(), hits, "{selector}");
        }

        // A dry-run apply stores nothing.
        let (code, _) = raw(
            &api,
            "PATCH",
            "/api/v1/namespaces/default/configmaps/b?fieldManager=pulsedev&dryRun=All",
            "application/apply-patch+yaml",
            &yaml.replace("name: a", "name: b"),
        );
        assert_eq!(code, 201);
        assert!(api.object("ConfigMap", "default", "b").is_none());

        let (code, _) = raw(&api, "GET", "/metrics", "", "");
        assert_eq!(code, 404);
        assert_eq!(api.unexpected(), ["GET /metrics"]);
        assert!(
            api.applied_in_order()
                == [(
                    "ConfigMap".to_string(),
                    "default".to_string(),
                    "a".to_string()
                )]
        );
    }
}
