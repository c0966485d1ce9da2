//! Pod logs as the real API server and kubelet serve them: `GET pods/<name>/log` with
//! `container`, `tailLines`, `timestamps`, `sinceSeconds`, `sinceTime`, `previous` and
//! `follow`, over container restarts and pod replacement.
//!
//! What is imitated, and from where:
//! - The API server validates the options first and answers 422 Invalid for both
//!   `sinceSeconds` and `sinceTime` (kubernetes pkg/registry/core/pod/rest/log.go
//!   `LogREST.Get` → `validation.ValidatePodLogOptions` → `errors.NewInvalid`), then
//!   streams the kubelet's answer as `text/plain`, flushing as bytes arrive when
//!   `follow=true` (`LocationStreamer{Flush: logOpts.Follow}`): on HTTP/1.1 a chunked
//!   body, one chunk per write.
//! - Which container: `container` is required when the pod has several ("a container
//!   name must be specified for pod …, choose one of: […]", pkg/registry/core/pod/
//!   strategy.go `LogLocation`); an unknown one is refused.
//! - Which instance (pkg/kubelet/kubelet_pods.go `validateContainerLogStatus`):
//!   `previous=true` wants `lastState.terminated` ("previous terminated container %q in
//!   pod %q not found" otherwise); else the running container, else the last terminated
//!   one; a container waiting to start with no earlier run has no log ("container %q in
//!   pod %q is waiting to start: %s").
//! - The lines (pkg/kubelet/kuberuntime/logs/logs.go): `since` is `now - sinceSeconds`,
//!   or `sinceTime` when that is later; lines before it are skipped (`msg.timestamp.
//!   Before(since)`), so a line *at* `sinceTime` is sent again. `timestamps=true`
//!   prefixes `RFC3339NanoFixed` (nine digits) and a space. With follow the reader waits
//!   for new lines while the container runs and returns once it is not running
//!   (`waitLogs` → `isContainerRunning`): a restart ends the stream, and the client
//!   must ask again for the new instance. A deleted pod ends it too.
//!
//! Test controls: [`FakeApiServer::log_line`] writes a line to a container's current
//! instance, [`FakeApiServer::restart_container`] ends that instance and starts a new
//! one (restartCount and lastState as the kubelet reports them), and
//! [`FakeApiServer::log_followers`] counts the open follow streams of a pod, so a test
//! can wait until a client is connected instead of sleeping.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{
    Call, FakeApiServer, Request, Response, Shared, State, bad_request, fail, key, rfc3339, str_of,
};

/// One run of a container: its lines with the time the kubelet stamped them.
#[derive(Debug, Default, Clone)]
struct Instance {
    lines: Vec<(SystemTime, String)>,
}

/// One container of one pod (by uid: a pod made again under the same name is new).
#[derive(Debug, Default, Clone)]
struct Container {
    uid: String,
    /// Every instance so far; the last is the current one.
    runs: Vec<Instance>,
}

#[derive(Debug, Default)]
pub(super) struct Store {
    containers: HashMap<(String, String, String), Container>,
    /// (namespace, pod) → open follow streams.
    followers: HashMap<(String, String), usize>,
    /// (namespace, pod) → how often its follow streams were cut.
    cuts: HashMap<(String, String), u64>,
}

/// RFC3339NanoFixed, as kubelet writes `timestamps=true` (logs.go `timeFormatOut`).
fn nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap();
    let secs = rfc3339(t);
    format!("{}.{:09}Z", secs.trim_end_matches('Z'), d.subsec_nanos())
}

/// RFC 3339 (seconds or fractions, `Z` only: what metav1.Time serialises) to a time.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    // Days from civil (Howard Hinnant), the inverse of `rfc3339`.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}")[..9].parse().ok()?
    };
    Some(UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
}

/// What one log request asks for, validated.
struct Ask {
    ns: String,
    pod: String,
    uid: String,
    container: String,
    since: Option<SystemTime>,
    timestamps: bool,
    tail: Option<usize>,
    /// The instance served (index into `runs`).
    run: usize,
    follow: bool,
}

fn container_state(pod: &Value, container: &str) -> Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == container)
        .cloned()
        .unwrap_or(Value::Null)
}

fn running(pod: &Value, container: &str) -> bool {
    !container_state(pod, container)["state"]["running"].is_null()
}

/// Checks a request the way the API server and kubelet do; the instance it reads.
fn ask(st: &mut State, ns: &str, pod: &str, req: &Request) -> Result<Ask, Response> {
    if req.q("sinceSeconds").is_some() && req.q("sinceTime").is_some() {
        return Err(fail(
            422,
            "Invalid",
            &format!(
                "PodLogOptions \"{pod}\" is invalid: []: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
            ),
            json!({"name": pod, "kind": "PodLogOptions", "causes": [{"reason": "FieldValueForbidden",
                "message": "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified", "field": ""}]}),
        ));
    }
    let Some(p) = st.objects.get(&key("", "pods", ns, pod)).cloned() else {
        return Err(fail(
            404,
            "NotFound",
            &format!("pods \"{pod}\" not found"),
            json!({"name": pod, "kind": "pods"}),
        ));
    };
    let containers: Vec<String> = p["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(p["spec"]["initContainers"].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let container = match req.q("container") {
        Some(c) if containers.iter().any(|x| x == c) => c.to_string(),
        Some(c) => {
            return Err(bad_request(&format!(
                "container {c} is not valid for pod {pod}"
            )));
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(bad_request(&format!(
                "a container name must be specified for pod {pod}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let uid = str_of(&p, &["metadata", "uid"]).to_string();
    let c = st.entry(ns, pod, &uid, &container);
    let runs = c.runs.len();
    let status = container_state(&p, &container);
    let previous = req.q("previous").is_some_and(|v| v == "true");
    let waiting = &status["state"]["waiting"];
    let last_terminated = !status["lastState"]["terminated"].is_null();
    let run = if previous {
        // A container waiting to restart (CrashLoopBackOff): its latest instance is the
        // terminated one; a running one's previous instance is the one before.
        match (last_terminated, waiting.is_null(), runs) {
            (true, false, _) => runs - 1,
            (true, true, 2..) => runs - 2,
            _ => {
                return Err(bad_request(&format!(
                    "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                )));
            }
        }
    } else {
        if !waiting.is_null() && !last_terminated {
            return Err(bad_request(&format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: {}",
                waiting["reason"].as_str().unwrap_or("ContainerCreating")
            )));
        }
        runs - 1
    };
    let now = SystemTime::now();
    let mut since = req
        .q("sinceSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| now - Duration::from_secs(s));
    if let Some(t) = req.q("sinceTime") {
        let t = parse_rfc3339(t).ok_or_else(|| bad_request(&format!("invalid sinceTime {t}")))?;
        if since.is_none_or(|s| t > s) {
            since = Some(t);
        }
    }
    Ok(Ask {
        ns: ns.to_string(),
        pod: pod.to_string(),
        uid,
        container,
        since,
        timestamps: req.q("timestamps").is_some_and(|v| v == "true"),
        tail: req.q("tailLines").and_then(|n| n.parse::<usize>().ok()),
        run,
        follow: req.q("follow").is_some_and(|v| v == "true") && !previous,
    })
}

impl State {
    fn entry(&mut self, ns: &str, pod: &str, uid: &str, container: &str) -> &mut Container {
        // Lines the controllers keep as plain text (crash and Job failure logs) belong
        // to the instance that ran: stamped with the pod's start.
        let legacy = self
            .logs
            .get(&(ns.to_string(), pod.to_string(), container.to_string()))
            .cloned();
        let started = self
            .objects
            .get(&key("", "pods", ns, pod))
            .and_then(|p| p["status"]["startTime"].as_str().and_then(parse_rfc3339))
            .unwrap_or(UNIX_EPOCH);
        let c = self
            .pod_logs
            .containers
            .entry((ns.to_string(), pod.to_string(), container.to_string()))
            .or_default();
        if c.uid != uid {
            *c = Container {
                uid: uid.to_string(),
                runs: vec![Instance::default()],
            };
        }
        if let Some(text) = legacy {
            let run = c.runs.last_mut().expect("one run at least");
            if run.lines.is_empty() {
                run.lines = text.lines().map(|l| (started, l.to_string())).collect();
            }
        }
        c
    }

    /// `GET pods/<name>/log` without `follow` (or for a container that is not running,
    /// which the kubelet answers at once).
    pub(super) fn pod_log(&mut self, ns: Option<&str>, pod: &str, req: &Request) -> Response {
        match ask(self, ns.unwrap_or_default(), pod, req) {
            Ok(a) => {
                let (text, _) = self.lines_of(&a, 0);
                Response::text(200, &text)
            }
            Err(r) => r,
        }
    }

    /// The lines of `a`'s instance from index `from` on, rendered, and the next index.
    fn lines_of(&self, a: &Ask, from: usize) -> (String, usize) {
        let Some(c) =
            self.pod_logs
                .containers
                .get(&(a.ns.clone(), a.pod.clone(), a.container.clone()))
        else {
            return (String::new(), from);
        };
        let lines = &c.runs[a.run].lines;
        let mut picked: Vec<&(SystemTime, String)> = lines[from.min(lines.len())..]
            .iter()
            .filter(|(t, _)| a.since.is_none_or(|s| *t >= s))
            .collect();
        if let Some(n) = a.tail.filter(|_| from == 0) {
            picked = picked.split_off(picked.len().saturating_sub(n));
        }
        let mut out = String::new();
        for (t, l) in picked {
            if a.timestamps {
                out.push_str(&nano(*t));
                out.push(' ');
            }
            out.push_str(l);
            out.push('\n');
        }
        (out, lines.len())
    }

    /// After a controller wrote a pod's status: the restarts made by
    /// `restart_container`, as the kubelet reports them (restartCount, lastState).
    pub(super) fn overlay_restarts(&mut self, ns: &str, pod: &str) {
        let k = key("", "pods", ns, pod);
        let Some(p) = self.objects.get(&k) else {
            return;
        };
        let uid = str_of(p, &["metadata", "uid"]).to_string();
        let mut p = p.clone();
        let mut changed = false;
        if let Some(statuses) = p["status"]["containerStatuses"].as_array_mut() {
            for s in statuses {
                let name = s["name"].as_str().unwrap_or_default().to_string();
                let Some(c) =
                    self.pod_logs
                        .containers
                        .get(&(ns.to_string(), pod.to_string(), name.clone()))
                else {
                    continue;
                };
                let restarts = c.runs.len().saturating_sub(1);
                if c.uid != uid || restarts == 0 || s["state"]["running"].is_null() {
                    continue;
                }
                s["restartCount"] = json!(restarts);
                s["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error",
                    "containerID": format!("containerd://{name}-{}", restarts - 1)}});
                changed = true;
            }
        }
        if changed {
            self.objects.insert(k, p);
        }
    }
}

impl FakeApiServer {
    /// Writes `line` to the current instance of `container` in pod `ns/pod`, stamped now.
    pub fn log_line(&self, ns: &str, pod: &str, container: &str, line: &str) {
        let mut st = self.state();
        let uid = st
            .objects
            .get(&key("", "pods", ns, pod))
            .map(|p| str_of(p, &["metadata", "uid"]).to_string())
            .unwrap_or_else(|| panic!("no pod {ns}/{pod}"));
        let c = st.entry(ns, pod, &uid, container);
        c.runs
            .last_mut()
            .expect("one run at least")
            .lines
            .push((SystemTime::now(), line.to_string()));
    }

    /// The container exits and the kubelet starts it again: open follow streams of the
    /// old instance end; restartCount goes up and lastState says it terminated.
    pub fn restart_container(&self, ns: &str, pod: &str, container: &str) {
        let mut st = self.state();
        let uid = st
            .objects
            .get(&key("", "pods", ns, pod))
            .map(|p| str_of(p, &["metadata", "uid"]).to_string())
            .unwrap_or_else(|| panic!("no pod {ns}/{pod}"));
        st.entry(ns, pod, &uid, container)
            .runs
            .push(Instance::default());
        st.overlay_restarts(ns, pod);
    }

    /// Closes the open follow streams of pod `ns/pod` mid-stream, while the container
    /// keeps running: what a client sees when the API server restarts or the kubelet's
    /// streaming connection times out (`--streaming-connection-idle-timeout`, kubelet
    /// pkg/kubelet/apis/config/types.go `StreamingConnectionIdleTimeout`). A client that
    /// resumes asks again, and gets the lines of `sinceTime`'s second again.
    pub fn cut_log_streams(&self, ns: &str, pod: &str) {
        *self
            .state()
            .pod_logs
            .cuts
            .entry((ns.to_string(), pod.to_string()))
            .or_default() += 1;
    }

    /// Open `follow=true` streams of pod `ns/pod`.
    pub fn log_followers(&self, ns: &str, pod: &str) -> usize {
        self.state()
            .pod_logs
            .followers
            .get(&(ns.to_string(), pod.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Names of the pods of `ns` whose `app.kubernetes.io/name` is `app`, oldest first.
    pub fn pods_of(&self, ns: &str, app: &str) -> Vec<String> {
        let mut pods: Vec<(String, String)> = self
            .objects_of("Pod")
            .into_iter()
            .filter(|p| {
                p["metadata"]["namespace"] == ns
                    && p["metadata"]["labels"]["app.kubernetes.io/name"] == app
                    && p["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|p| {
                (
                    str_of(&p, &["metadata", "creationTimestamp"]).to_string(),
                    str_of(&p, &["metadata", "name"]).to_string(),
                )
            })
            .collect();
        pods.sort();
        pods.into_iter().map(|(_, n)| n).collect()
    }
}

/// Whether `req` is a pod log request with `follow=true` (served by [`follow`]).
pub(super) fn is_follow(req: &Request) -> bool {
    req.method == "GET"
        && req.path.ends_with("/log")
        && req.path.contains("/pods/")
        && req.q("follow").is_some_and(|v| v == "true")
}

/// Serves a follow request on `w`: the status line and headers, then one chunk per
/// batch of new lines until the instance stops running, the pod goes, the client
/// leaves or the server stops. `Some(response)` when it is answered like any other
/// request (an error, or a container that is not running).
pub(super) fn follow<W: Write>(
    shared: &Shared,
    req: &Request,
    w: &mut W,
    stop: &AtomicBool,
) -> Option<Response> {
    let started = shared.started.elapsed();
    let parts: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    // /api/v1/namespaces/<ns>/pods/<pod>/log
    let (ns, pod) = match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", pod, "log"] => (ns.to_string(), pod.to_string()),
        _ => return None,
    };
    let record = |code: u16| {
        shared.state.lock().unwrap().calls.push(Call {
            method: req.method.clone(),
            target: req.target.clone(),
            content_type: None,
            body: String::new(),
            status: code,
            at: started,
        });
    };
    let (a, first, mut next, cuts) = {
        let mut st = shared.state.lock().unwrap();
        st.reconcile();
        let a = match ask(&mut st, &ns, &pod, req) {
            Ok(a) => a,
            Err(r) => {
                drop(st);
                record(r.code);
                return Some(r);
            }
        };
        let p = st.objects.get(&key("", "pods", &ns, &pod)).cloned();
        let current = a.run + 1
            == st
                .pod_logs
                .containers
                .get(&(ns.clone(), pod.clone(), a.container.clone()))
                .map_or(1, |c| c.runs.len());
        if !a.follow || !current || p.is_none_or(|p| !running(&p, &a.container)) {
            let (text, _) = st.lines_of(&a, 0);
            drop(st);
            record(200);
            return Some(Response::text(200, &text));
        }
        let (first, next) = st.lines_of(&a, 0);
        let cuts = st
            .pod_logs
            .cuts
            .get(&(ns.clone(), pod.clone()))
            .copied()
            .unwrap_or(0);
        *st.pod_logs
            .followers
            .entry((ns.clone(), pod.clone()))
            .or_default() += 1;
        (a, first, next, cuts)
    };
    record(200);
    let chunk = |w: &mut W, text: &str| -> bool {
        text.is_empty()
            || (write!(w, "{:x}\r\n{text}\r\n", text.len()).is_ok() && w.flush().is_ok())
    };
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nAudit-Id: fake\r\n\r\n";
    let mut ok = w.write_all(head.as_bytes()).is_ok() && w.flush().is_ok() && chunk(w, &first);
    while ok && !stop.load(Ordering::SeqCst) {
        let (text, end, cut) = {
            let mut st = shared.state.lock().unwrap();
            st.reconcile();
            let cut = st
                .pod_logs
                .cuts
                .get(&(ns.clone(), pod.clone()))
                .is_some_and(|c| *c != cuts);
            let pod_now = st.objects.get(&key("", "pods", &ns, &pod)).cloned();
            let alive = pod_now.as_ref().is_some_and(|p| {
                str_of(p, &["metadata", "uid"]) == a.uid
                    && p["metadata"]["deletionTimestamp"].is_null()
            });
            let runs = st
                .pod_logs
                .containers
                .get(&(ns.clone(), pod.clone(), a.container.clone()))
                .map_or(0, |c| c.runs.len());
            let (text, n) = st.lines_of(&a, next);
            next = n;
            // Not running any more (restarted, or the pod went): what is left, then end.
            (text, !alive || runs != a.run + 1, cut)
        };
        if cut {
            // Dropped mid-stream: no terminating chunk, the connection just closes.
            ok = false;
            break;
        }
        ok = chunk(w, &text);
        if end {
            break;
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
    if let Some(n) = shared
        .state
        .lock()
        .unwrap()
        .pod_logs
        .followers
        .get_mut(&(ns.clone(), pod.clone()))
    {
        *n = n.saturating_sub(1);
    }
    if ok && !stop.load(Ordering::SeqCst) {
        let _ = w.write_all(b"0\r\n\r\n").and_then(|()| w.flush());
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpStream;

    use super::super::Options;
    use super::super::tests::raw;
    use super::*;

    /// A Deployment `app` in `default` whose pod runs `containers`; the pod's name.
    fn pod(api: &FakeApiServer, app: &str, containers: &[&str]) -> String {
        let cs: Vec<String> = containers
            .iter()
            .map(|c| format!("{{name: {c}, image: \"x:1\"}}"))
            .collect();
        let yaml = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {app}}}\nspec:\n  selector: {{matchLabels: {{app.kubernetes.io/name: {app}}}}}\n  template:\n    metadata: {{labels: {{app.kubernetes.io/name: {app}}}}}\n    spec:\n      containers: [{}]\n",
            cs.join(", ")
        );
        let (code, body) = raw(
            api,
            "PATCH",
            &format!(
                "/apis/apps/v1/namespaces/default/deployments/{app}?fieldManager=t&force=true"
            ),
            "application/apply-patch+yaml",
            &yaml,
        );
        assert_eq!(code, 201, "{body}");
        // Any request lets the controllers run; a new pod is ContainerCreating for a few
        // passes (rollout.rs), so look until its containers run.
        for _ in 0..100 {
            let _ = raw(api, "GET", "/api/v1/namespaces/default/pods", "", "");
            if let Some(p) = api.pods_of("default", app).pop() {
                let o = api.object("Pod", "default", &p).expect("listed");
                let running = o["status"]["containerStatuses"]
                    .as_array()
                    .is_some_and(|cs| {
                        !cs.is_empty() && cs.iter().all(|c| c["state"]["running"].is_object())
                    });
                if running {
                    return p;
                }
            }
        }
        panic!("the pod of {app} never ran")
    }

    fn log_path(pod: &str, query: &str) -> String {
        format!("/api/v1/namespaces/default/pods/{pod}/log?{query}")
    }

    #[test]
    fn options_containers_instances_and_since_as_the_api_server_and_kubelet_check_them() {
        let api = FakeApiServer::start(Options::new("test"));
        let two = pod(&api, "two", &["app", "sidecar"]);
        let (code, body) = raw(&api, "GET", &log_path(&two, ""), "", "");
        assert_eq!(code, 400, "{body}");
        assert!(
            body.contains(&format!(
                "a container name must be specified for pod {two}, choose one of: [app sidecar]"
            )),
            "{body}"
        );
        let (code, body) = raw(
            &api,
            "GET",
            &log_path(
                &two,
                "container=app&sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z",
            ),
            "",
            "",
        );
        assert_eq!(code, 422, "{body}");
        assert!(
            body.contains("at most one of `sinceTime` or `sinceSeconds`"),
            "{body}"
        );
        let (code, body) = raw(
            &api,
            "GET",
            &log_path(&two, "container=app&previous=true"),
            "",
            "",
        );
        assert_eq!(code, 400, "{body}");
        assert!(
            body.contains(&format!(
                "previous terminated container \\\"app\\\" in pod \\\"{two}\\\" not found"
            )),
            "{body}"
        );

        let one = pod(&api, "one", &["app"]);
        api.log_line("default", &one, "app", "first");
        api.log_line("default", &one, "app", "second");
        let (code, body) = raw(&api, "GET", &log_path(&one, "timestamps=true"), "", "");
        assert_eq!(code, 200);
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 2, "{body}");
        // RFC3339NanoFixed: nine digits, always.
        let (ts, text) = lines[0].split_once(' ').unwrap();
        assert_eq!(
            (ts.len(), text),
            ("2026-01-01T00:00:00.000000000Z".len(), "first")
        );
        // sinceTime is whole seconds and not-before: the line's own second is sent again.
        let second = format!("{}Z", &ts[..19]);
        let (_, again) = raw(
            &api,
            "GET",
            &log_path(&one, &format!("sinceTime={second}")),
            "",
            "",
        );
        assert!(again.starts_with("first\n"), "{again}");
        let (_, none) = raw(
            &api,
            "GET",
            &log_path(&one, "sinceTime=2999-01-01T00:00:00Z"),
            "",
            "",
        );
        assert_eq!(none, "");

        // A restart: the current instance is new, the old one is `previous`.
        api.restart_container("default", &one, "app");
        api.log_line("default", &one, "app", "after the restart");
        let (_, now) = raw(&api, "GET", &log_path(&one, ""), "", "");
        assert_eq!(now, "after the restart\n");
        let (code, prev) = raw(&api, "GET", &log_path(&one, "previous=true"), "", "");
        assert_eq!((code, prev.as_str()), (200, "first\nsecond\n"));
        let p = api.object("Pod", "default", &one).unwrap();
        assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 1);
        assert_eq!(
            p["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"],
            "Error"
        );
    }

    /// Reads one chunk of a chunked body (its text; "" for the last chunk).
    fn chunk(r: &mut BufReader<TcpStream>) -> Option<String> {
        let mut size = String::new();
        if r.read_line(&mut size).ok()? == 0 {
            return None;
        }
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        let mut buf = vec![0; n + 2];
        r.read_exact(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[test]
    fn follow_streams_chunks_until_the_container_restarts_or_the_pod_is_deleted() {
        let api = FakeApiServer::start(Options::new("test"));
        let one = pod(&api, "one", &["app"]);
        api.log_line("default", &one, "app", "before");
        let open = || {
            let mut c = TcpStream::connect(api.url().trim_start_matches("http://")).unwrap();
            write!(
                c,
                "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
                log_path(&one, "follow=true")
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
            (r, head)
        };
        let (mut r, head) = open();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
        assert!(head.contains("Content-Type: text/plain"), "{head}");
        assert_eq!(chunk(&mut r).as_deref(), Some("before\n"));
        assert_eq!(api.log_followers("default", &one), 1);
        api.log_line("default", &one, "app", "while following");
        assert_eq!(chunk(&mut r).as_deref(), Some("while following\n"));
        // The container stops: the stream ends with the last chunk.
        api.restart_container("default", &one, "app");
        assert_eq!(chunk(&mut r).as_deref(), Some(""));
        assert_eq!(api.log_followers("default", &one), 0);

        // Following the new instance; deleting the pod ends it too.
        let (mut r, _) = open();
        api.log_line("default", &one, "app", "new instance");
        assert_eq!(chunk(&mut r).as_deref(), Some("new instance\n"));
        let (code, body) = raw(
            &api,
            "DELETE",
            &format!("/api/v1/namespaces/default/pods/{one}"),
            "",
            "",
        );
        assert_eq!(code, 200, "{body}");
        let mut rest = String::new();
        while let Some(c) = chunk(&mut r) {
            if c.is_empty() {
                break;
            }
            rest.push_str(&c);
        }
        assert_eq!(rest, "");

        // Cut mid-stream: no last chunk, the connection closes.
        let two = pod(&api, "two", &["app"]);
        let mut c = TcpStream::connect(api.url().trim_start_matches("http://")).unwrap();
        write!(
            c,
            "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
            log_path(&two, "follow=true")
        )
        .unwrap();
        let mut r = BufReader::new(c);
        let mut l = String::new();
        while l != "\r\n" {
            l.clear();
            r.read_line(&mut l).unwrap();
        }
        while api.log_followers("default", &two) == 0 {
            std::thread::park_timeout(Duration::from_millis(10));
        }
        api.cut_log_streams("default", &two);
        let mut tail = Vec::new();
        r.read_to_end(&mut tail).unwrap();
        assert!(!String::from_utf8_lossy(&tail).contains("0\r\n\r\n"));
    }

    #[test]
    fn rfc3339_round_trips_to_the_nanosecond() {
        let t = UNIX_EPOCH + Duration::new(1_796_000_000, 123_456_789);
        assert_eq!(parse_rfc3339(&nano(t)), Some(t));
        assert_eq!(
            parse_rfc3339(&rfc3339(t)),
            Some(UNIX_EPOCH + Duration::from_secs(1_796_000_000))
        );
    }
}
