//! A scripted API server for tests: a scenario is an ordered list of expected requests
//! (method, path, query) with the realistic response each gets. The serving task checks
//! every request against the script, fails on one it did not expect, and fails within a
//! bounded (virtual) time when an expected request never comes.
//!
//! Owns: test plumbing only (cfg(test)). Must not be used by production code.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::kube::Client;
use ::kube::client::Body;
use http::{Method, Request, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long (tokio time) the server waits for the next expected request. Tests run with
/// paused time, so this elapses instantly once nothing else can happen; it only has to be
/// longer than any single sleep of the code under test.
const STEP_TIMEOUT: Duration = Duration::from_secs(3600);

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Value,
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if !self.query.is_empty() {
            let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, "?{}", q.join("&"))?;
        }
        Ok(())
    }
}

type Check = Box<dyn Fn(&Seen) + Send>;

/// One expected request and its response.
pub struct Exchange {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    status: u16,
    body: Vec<u8>,
    echo: bool,
    checks: Vec<Check>,
}

impl Exchange {
    pub fn new(method: Method, path: &str) -> Exchange {
        Exchange {
            method,
            path: path.to_string(),
            query: BTreeMap::new(),
            status: 200,
            body: b"{}".to_vec(),
            echo: false,
            checks: Vec::new(),
        }
    }
    pub fn get(path: &str) -> Exchange {
        Exchange::new(Method::GET, path)
    }
    pub fn patch(path: &str) -> Exchange {
        Exchange::new(Method::PATCH, path)
    }
    pub fn post(path: &str) -> Exchange {
        Exchange::new(Method::POST, path)
    }
    pub fn delete(path: &str) -> Exchange {
        Exchange::new(Method::DELETE, path)
    }
    /// The request must carry this query parameter with this value (others may be there).
    pub fn query(mut self, key: &str, value: &str) -> Exchange {
        self.query.insert(key.to_string(), value.to_string());
        self
    }
    /// Answer with `status` and a JSON body.
    pub fn reply(mut self, status: u16, body: impl serde::Serialize) -> Exchange {
        self.status = status;
        self.body = serde_json::to_vec(&body).expect("serializable body");
        self
    }
    /// Answer 200 with a JSON body.
    pub fn ok(self, body: impl serde::Serialize) -> Exchange {
        self.reply(200, body)
    }
    /// Answer 200 with plain text (pod logs).
    pub fn text(mut self, text: &str) -> Exchange {
        self.status = 200;
        self.body = text.as_bytes().to_vec();
        self
    }
    /// Answer with a Kubernetes `Status` failure, the shape the API server sends.
    pub fn fail(self, code: u16, reason: &str, message: &str) -> Exchange {
        self.reply(code, status_failure(code, reason, message))
    }
    /// Answer 200 with the request body as stored: `resourceVersion`, `uid` and
    /// `generation` added (what an apply returns).
    pub fn echo(mut self) -> Exchange {
        self.echo = true;
        self
    }
    /// An extra assertion on the request (body, headers).
    pub fn check(mut self, f: impl Fn(&Seen) + Send + 'static) -> Exchange {
        self.checks.push(Box::new(f));
        self
    }

    fn matches(&self, seen: &Seen) -> bool {
        self.method == seen.method
            && self.path == seen.path
            && self
                .query
                .iter()
                .all(|(k, v)| seen.query.get(k).is_some_and(|s| s == v))
    }

    fn describe(&self) -> String {
        let mut s = format!("{} {}", self.method, self.path);
        if !self.query.is_empty() {
            let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!(" (with {})", q.join("&")));
        }
        s
    }

    fn response(&self, seen: &Seen) -> Response<Body> {
        let body = if self.echo {
            let mut stored = seen.body.clone();
            stored["metadata"]["resourceVersion"] = json!("1001");
            stored["metadata"]["uid"] = json!("5f1c6a2e-0000-4000-8000-000000000001");
            stored["metadata"]["generation"] = json!(1);
            serde_json::to_vec(&stored).expect("serializable")
        } else {
            self.body.clone()
        };
        Response::builder()
            .status(self.status)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("valid response")
    }
}

enum Step {
    One(Exchange),
    /// Requests sent concurrently: each must come once, in any order, before the next step.
    AnyOrder(Vec<Exchange>),
}

/// The script of one test.
#[derive(Default)]
pub struct Scenario {
    steps: Vec<Step>,
}

impl Scenario {
    pub fn new() -> Scenario {
        Scenario::default()
    }

    pub fn then(mut self, exchange: Exchange) -> Scenario {
        self.steps.push(Step::One(exchange));
        self
    }

    pub fn any_order(mut self, exchanges: Vec<Exchange>) -> Scenario {
        self.steps.push(Step::AnyOrder(exchanges));
        self
    }

    /// Starts serving the script; the client talks only to it.
    pub fn start(self) -> (Client, MockServer) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut unexpected = Vec::new();
            for step in self.steps {
                let mut pending = match step {
                    Step::One(e) => vec![e],
                    Step::AnyOrder(v) => v,
                };
                while !pending.is_empty() {
                    let wanted: Vec<String> = pending.iter().map(|e| e.describe()).collect();
                    let next = tokio::time::timeout(STEP_TIMEOUT, handle.next_request()).await;
                    let (request, send) = match next {
                        Ok(Some(r)) => r,
                        Ok(None) => panic!("the client went away; still expected: {wanted:?}"),
                        Err(_) => panic!("expected request never came: {wanted:?}"),
                    };
                    let seen = read(request).await;
                    log.lock().unwrap().push(seen.clone());
                    let Some(pos) = pending.iter().position(|e| e.matches(&seen)) else {
                        panic!("unexpected request {seen}; expected one of {wanted:?}");
                    };
                    let exchange = pending.remove(pos);
                    for check in &exchange.checks {
                        check(&seen);
                    }
                    send.send_response(exchange.response(&seen));
                }
            }
            // The script is done: anything else is an error the test must see, even if
            // the code under test swallows the failed request.
            loop {
                tokio::select! {
                    biased;
                    r = handle.next_request() => match r {
                        Some((request, send)) => {
                            let seen = read(request).await;
                            unexpected.push(seen.to_string());
                            drop(send);
                        }
                        None => break,
                    },
                    _ = &mut stop_rx => break,
                }
            }
            unexpected
        });
        (
            Client::new(service, "default"),
            MockServer {
                task,
                stop: stop_tx,
                seen,
            },
        )
    }
}

/// The running script. Call `finish` after the code under test returned.
pub struct MockServer {
    task: JoinHandle<Vec<String>>,
    stop: oneshot::Sender<()>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockServer {
    /// Waits until every scripted request was served (failing if one never comes), then
    /// fails if any request came that the script did not expect. Returns what was seen.
    pub async fn finish(self) -> Vec<Seen> {
        let MockServer { task, stop, seen } = self;
        // The task reads this only once its script ran out (it panics first on a missing
        // request); requests already queued are checked before it.
        let _ = stop.send(());
        match task.await {
            Ok(unexpected) => assert!(
                unexpected.is_empty(),
                "unexpected requests after the script ended: {unexpected:?}"
            ),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("mock server task failed: {e}"),
        }
        std::mem::take(&mut *seen.lock().unwrap())
    }
}

async fn read(request: Request<Body>) -> Seen {
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.expect("request body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    let query = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    Seen {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query,
        content_type: parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
    }
}

/// Percent-decoding of a query component (`+` is a space in forms).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `Status` object the API server sends with a failure.
pub fn status_failure(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// A 404 for `resource` (plural, with group: `deployments.apps`) named `name`.
pub fn not_found(resource: &str, name: &str) -> Value {
    let mut v = status_failure(404, "NotFound", &format!("{resource} \"{name}\" not found"));
    let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
    v["details"] = json!({ "name": name, "group": group, "kind": kind });
    v
}

/// An `APIResourceList` for discovery: `(plural, kind, namespaced)`.
pub fn resource_list(group_version: &str, resources: &[(&str, &str, bool)]) -> Value {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIResource, APIResourceList};
    let list = APIResourceList {
        group_version: group_version.to_string(),
        resources: resources
            .iter()
            .map(|(plural, kind, namespaced)| APIResource {
                name: plural.to_string(),
                kind: kind.to_string(),
                namespaced: *namespaced,
                singular_name: kind.to_lowercase(),
                verbs: [
                    "create",
                    "delete",
                    "deletecollection",
                    "get",
                    "list",
                    "patch",
                    "update",
                    "watch",
                ]
                .map(String::from)
                .to_vec(),
                ..APIResource::default()
            })
            .collect(),
    };
    let mut v = serde_json::to_value(list).expect("serializable");
    v["kind"] = json!("APIResourceList");
    v["apiVersion"] = json!("v1");
    v
}

/// Discovery of the core group, as a kind cluster serves it (the part we use).
pub fn core_v1() -> Value {
    resource_list(
        "v1",
        &[
            ("configmaps", "ConfigMap", true),
            ("events", "Event", true),
            ("namespaces", "Namespace", false),
            ("persistentvolumeclaims", "PersistentVolumeClaim", true),
            ("pods", "Pod", true),
            ("secrets", "Secret", true),
            ("serviceaccounts", "ServiceAccount", true),
            ("services", "Service", true),
        ],
    )
}

pub fn apps_v1() -> Value {
    resource_list(
        "apps/v1",
        &[
            ("daemonsets", "DaemonSet", true),
            ("deployments", "Deployment", true),
            ("replicasets", "ReplicaSet", true),
            ("statefulsets", "StatefulSet", true),
        ],
    )
}

pub fn apiextensions_v1() -> Value {
    resource_list(
        "apiextensions.k8s.io/v1",
        &[(
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        )],
    )
}

/// Realistic objects as the API server returns them, built from k8s-openapi types.
pub mod fixtures {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::{
        Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, StatefulSet,
        StatefulSetSpec, StatefulSetStatus,
    };
    use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus};
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
        ContainerStateWaiting, ContainerStatus, Event, EventSource, ObjectReference, Pod,
        PodCondition, PodSpec, PodStatus, PodTemplateSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
    use serde_json::{Value, json};

    pub fn time(s: &str) -> Time {
        Time(s.parse().expect("RFC 3339 time"))
    }

    fn meta(ns: &str, name: &str, generation: i64) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            generation: Some(generation),
            resource_version: Some("4242".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_string(), name.to_string()),
                ("pulsedev.dev/stack".to_string(), "pulsewatch".to_string()),
            ])),
            ..ObjectMeta::default()
        }
    }

    fn selector(name: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                name.to_string(),
            )])),
            ..LabelSelector::default()
        }
    }

    fn template(name: &str, image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: selector(name).match_labels,
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: name.into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    /// A Deployment: (generation, observedGeneration), desired replicas and the status
    /// counts (replicas, updated, available).
    pub fn deployment(
        ns: &str,
        name: &str,
        (generation, observed): (i64, i64),
        desired: i32,
        (replicas, updated, available): (i32, i32, i32),
    ) -> Value {
        let d = Deployment {
            metadata: meta(ns, name, generation),
            spec: Some(DeploymentSpec {
                replicas: Some(desired),
                selector: selector(name),
                template: template(name, &format!("localhost:5001/pulsewatch/{name}:dev")),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(replicas),
                updated_replicas: Some(updated),
                ready_replicas: Some(available),
                available_replicas: Some(available),
                unavailable_replicas: Some((replicas - available).max(0)),
                conditions: Some(vec![DeploymentCondition {
                    type_: "Available".into(),
                    status: if available >= desired {
                        "True"
                    } else {
                        "False"
                    }
                    .into(),
                    reason: Some(if available >= desired {
                        "MinimumReplicasAvailable".into()
                    } else {
                        "MinimumReplicasUnavailable".into()
                    }),
                    message: Some("Deployment availability".into()),
                    ..DeploymentCondition::default()
                }]),
                ..DeploymentStatus::default()
            }),
        };
        serde_json::to_value(d).unwrap()
    }

    /// A StatefulSet with (ready, current revision, update revision).
    pub fn statefulset(
        ns: &str,
        name: &str,
        desired: i32,
        ready: i32,
        revisions: (&str, &str),
    ) -> Value {
        let s = StatefulSet {
            metadata: meta(ns, name, 1),
            spec: Some(StatefulSetSpec {
                replicas: Some(desired),
                selector: selector(name),
                service_name: Some(name.into()),
                template: template(name, "postgres:17"),
                ..StatefulSetSpec::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(1),
                replicas: desired,
                ready_replicas: Some(ready),
                available_replicas: Some(ready),
                current_replicas: Some(desired),
                updated_replicas: Some(if revisions.0 == revisions.1 {
                    desired
                } else {
                    0
                }),
                current_revision: Some(revisions.0.into()),
                update_revision: Some(revisions.1.into()),
                ..StatefulSetStatus::default()
            }),
        };
        serde_json::to_value(s).unwrap()
    }

    /// A Job; `finished` = Some(("Failed", reason, message)) or Some(("Complete", ..)).
    pub fn job(
        ns: &str,
        name: &str,
        active: i32,
        failed: i32,
        finished: Option<(&str, &str, &str)>,
    ) -> Value {
        let mut m = meta(ns, name, 1);
        m.labels
            .as_mut()
            .unwrap()
            .insert("app.kubernetes.io/component".into(), "migrations".into());
        let conditions = finished.map(|(t, reason, message)| {
            let c = |t: &str| JobCondition {
                type_: t.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_transition_time: Some(time("2026-11-26T05:21:10Z")),
                ..JobCondition::default()
            };
            if t == "Failed" {
                vec![c("FailureTarget"), c("Failed")]
            } else {
                vec![c("SuccessCriteriaMet"), c("Complete")]
            }
        });
        let j = Job {
            metadata: m,
            spec: Some(JobSpec {
                backoff_limit: Some(1),
                selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "batch.kubernetes.io/controller-uid".to_string(),
                        format!("uid-{name}"),
                    )])),
                    ..LabelSelector::default()
                }),
                template: template(name, "localhost:5001/pulsewatch/migrations:dev"),
                ..JobSpec::default()
            }),
            status: Some(JobStatus {
                active: Some(active),
                failed: Some(failed),
                conditions,
                ..JobStatus::default()
            }),
        };
        serde_json::to_value(j).unwrap()
    }

    /// How a container looks in a pod's status.
    pub enum Looks<'a> {
        Running,
        CrashLoop { restarts: i32, last_exit: i32 },
        Waiting { reason: &'a str, message: &'a str },
        Terminated { exit: i32, reason: &'a str },
    }

    pub fn pod(ns: &str, name: &str, app: &str, image: &str, looks: Looks<'_>) -> Pod {
        let (state, last, restarts, ready) = match looks {
            Looks::Running => (
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(time("2026-11-26T05:20:00Z")),
                    }),
                    ..ContainerState::default()
                },
                None,
                0,
                true,
            ),
            Looks::CrashLoop {
                restarts,
                last_exit,
            } => (
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("CrashLoopBackOff".into()),
                        message: Some(format!(
                            "back-off 2m40s restarting failed container={app} pod={name}_{ns}(uid-{name})"
                        )),
                    }),
                    ..ContainerState::default()
                },
                Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: last_exit,
                        reason: Some("Error".into()),
                        started_at: Some(time("2026-11-26T05:24:01Z")),
                        finished_at: Some(time("2026-11-26T05:24:02Z")),
                        container_id: Some("containerd://4f1e".into()),
                        ..ContainerStateTerminated::default()
                    }),
                    ..ContainerState::default()
                }),
                restarts,
                false,
            ),
            Looks::Waiting { reason, message } => (
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.into()),
                        message: Some(message.into()),
                    }),
                    ..ContainerState::default()
                },
                None,
                0,
                false,
            ),
            Looks::Terminated { exit, reason } => (
                ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: exit,
                        reason: Some(reason.into()),
                        ..ContainerStateTerminated::default()
                    }),
                    ..ContainerState::default()
                },
                None,
                0,
                false,
            ),
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: selector(app).match_labels,
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: app.into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                container_statuses: Some(vec![ContainerStatus {
                    name: app.into(),
                    image: image.into(),
                    image_id: String::new(),
                    ready,
                    restart_count: restarts,
                    state: Some(state),
                    last_state: last,
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    /// A pod that cannot be scheduled (e.g. its claim is unbound).
    pub fn pending_pod(ns: &str, name: &str, app: &str, claim: &str, message: &str) -> Pod {
        use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Volume};
        let mut p = pod(ns, name, app, "postgres:17", Looks::Running);
        p.spec.as_mut().unwrap().volumes = Some(vec![Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                read_only: None,
            }),
            ..Volume::default()
        }]);
        p.status = Some(PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some(message.into()),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        p
    }

    pub fn pod_list(pods: Vec<Pod>) -> Value {
        json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "5000"},
            "items": pods,
        })
    }

    /// A Warning event about `kind/name`.
    pub fn warning(
        ns: &str,
        kind: &str,
        name: &str,
        reason: &str,
        message: &str,
        count: i32,
        at: &str,
    ) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{}", at.len() * 1000 + count as usize)),
                namespace: Some(ns.into()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                kind: Some(kind.into()),
                name: Some(name.into()),
                namespace: Some(ns.into()),
                api_version: Some("v1".into()),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            count: Some(count),
            type_: Some("Warning".into()),
            first_timestamp: Some(time("2026-11-26T05:15:00Z")),
            last_timestamp: Some(time(at)),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some("pulsedev-control-plane".into()),
            }),
            ..Event::default()
        }
    }

    pub fn event_list(events: Vec<Event>) -> Value {
        json!({
            "kind": "EventList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "5001"},
            "items": events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::kube::Api;
    use k8s_openapi::api::core::v1::Namespace;

    #[tokio::test(start_paused = true)]
    async fn serves_the_script_and_records_requests() {
        let (client, mock) =
            Scenario::new()
                .then(Exchange::get("/api/v1/namespaces/a").ok(
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}),
                ))
                .start();
        let api: Api<Namespace> = Api::all(client);
        let ns = api.get("a").await.unwrap();
        assert_eq!(ns.metadata.name.as_deref(), Some("a"));
        let seen = mock.finish().await;
        assert_eq!(seen.len(), 1);
        assert_eq!(decode("a%3Db%2Cc+d"), "a=b,c d");
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "unexpected requests after the script ended")]
    async fn an_extra_request_fails_the_test() {
        let (client, mock) = Scenario::new().start();
        let api: Api<Namespace> = Api::all(client);
        assert!(
            api.get("a").await.is_err(),
            "the mock closes on extra requests"
        );
        mock.finish().await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "expected request never came")]
    async fn a_missing_request_fails_the_test_quickly() {
        let (_client, mock) = Scenario::new()
            .then(Exchange::get("/api/v1/namespaces/a"))
            .start();
        let started = std::time::Instant::now();
        let guard = scopeguard(started);
        mock.finish().await;
        drop(guard);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "unexpected request GET /api/v1/namespaces/b")]
    async fn a_wrong_request_fails_the_test() {
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/api/v1/namespaces/a"))
            .start();
        let api: Api<Namespace> = Api::all(client);
        let _ = api.get("b").await;
        mock.finish().await;
    }

    /// Asserts (when dropped during the panic) that failing took little real time.
    fn scopeguard(started: std::time::Instant) -> impl Drop {
        struct G(std::time::Instant);
        impl Drop for G {
            fn drop(&mut self) {
                assert!(self.0.elapsed() < Duration::from_secs(5));
            }
        }
        G(started)
    }
}
