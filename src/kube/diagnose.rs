//! Why something is not ready, in one screen: the pods of a workload, each container's
//! waiting or terminated reason and restart count, the scheduling problem of a Pending
//! pod, the recent Warning events of the objects involved, and the last log lines of
//! crashing containers. Rendered compactly for people and as data for JSON.
//!
//! Owns: collecting that picture (read-only requests), choosing the error id
//! (`migrations-failed`, `job-failed`, `image-pull-failed`, `pod-crash-looping`,
//! `container-config-error`, `pod-create-failed`, `rollout-timeout`), and the failure
//! signal a wait uses to fail fast. Must not change anything on the server.

use std::collections::BTreeSet;
use std::time::Duration;

use ::kube::Api;
use ::kube::api::{ListParams, LogParams};
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use serde::Serialize;

use super::wait::{Facts, Outcome, Target, TargetKind};
use super::{Engine, describe, human_duration};
use crate::error::{Error, ErrorKind};

/// At most this many pods are described per target (problem pods first).
const MAX_PODS: usize = 3;
/// At most this many Warning events per target (the most recent).
const MAX_EVENTS: usize = 5;
/// Long API messages are cut here.
const MAX_MESSAGE: usize = 240;

/// What is wrong with one target.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Diagnosis {
    /// `deployment pulsewatch-dev/api`.
    pub target: String,
    pub namespace: String,
    pub name: String,
    /// The error id this diagnosis amounts to.
    pub id: &'static str,
    /// What the wait saw last: `not ready after 5m: 0/1 replicas available`.
    pub summary: String,
    pub pods: Vec<PodReport>,
    pub events: Vec<EventReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PodReport {
    pub name: String,
    pub phase: String,
    /// Why the pod is not scheduled (PodScheduled=False), or the pod's own reason.
    pub problem: Option<String>,
    pub containers: Vec<ContainerReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ContainerReport {
    pub name: String,
    pub init: bool,
    pub image: String,
    pub ready: bool,
    pub restarts: i32,
    /// `waiting`, `running` or `terminated`.
    pub state: String,
    /// `CrashLoopBackOff`, `ImagePullBackOff`, `CreateContainerConfigError`, `Error`, …
    pub reason: Option<String>,
    pub message: Option<String>,
    pub exit_code: Option<i32>,
    /// The exit code of the previous run (crash loops).
    pub last_exit_code: Option<i32>,
    pub log_tail: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventReport {
    /// `Pod/api-7c9f-x2`.
    pub object: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
}

const IMAGE_PULL: [&str; 5] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
];

/// Container waiting reasons that do not go away by waiting alone, as the kubelet writes
/// them: kubernetes pkg/kubelet/images/types.go (`ErrImagePullBackOff`, `ErrImagePull`,
/// `ErrInvalidImageName`, `ErrImageNeverPull`), pkg/kubelet/container/sync_result.go
/// (`ErrCrashLoopBackOff`) and pkg/kubelet/kuberuntime/kuberuntime_container.go
/// (`ErrCreateContainerConfig`, `ErrCreateContainer`). A first ErrImagePull or crash can
/// still recover, which is why a wait reports them only once they persist.
const SETTLING: [&str; 7] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

const CONFIG_ERRORS: [&str; 2] = ["CreateContainerConfigError", "CreateContainerError"];

impl ContainerReport {
    fn image_pull_failed(&self) -> bool {
        self.reason
            .as_deref()
            .is_some_and(|r| IMAGE_PULL.contains(&r))
    }

    fn crash_looping(&self) -> bool {
        self.reason.as_deref() == Some("CrashLoopBackOff")
            || (self.restarts > 0 && self.last_exit_code.is_some_and(|c| c != 0))
    }

    fn config_error(&self) -> bool {
        self.reason
            .as_deref()
            .is_some_and(|r| CONFIG_ERRORS.contains(&r))
    }

    /// A failure a wait may report early: a waiting reason of [`SETTLING`], or a
    /// container between two crashes (running again, not ready, after a failed run).
    fn failure(&self) -> Option<&str> {
        if self.ready {
            return None;
        }
        match self.reason.as_deref() {
            Some(r) if self.state == "waiting" && SETTLING.contains(&r) => Some(r),
            _ if self.state == "running"
                && self.restarts > 0
                && self.last_exit_code.is_some_and(|c| c != 0) =>
            {
                Some("CrashLoopBackOff")
            }
            _ => None,
        }
    }

    fn failed_run(&self) -> bool {
        self.state == "terminated" && self.exit_code.is_some_and(|c| c != 0)
    }

    /// Worth a line: anything but a ready, running container that never restarted.
    fn has_problem(&self) -> bool {
        let healthy = self.ready && self.state == "running" && self.restarts == 0;
        let done = self.state == "terminated" && self.exit_code == Some(0);
        !(healthy || done)
    }

    fn wants_logs(&self) -> bool {
        self.crash_looping() || self.failed_run()
    }
}

impl PodReport {
    fn has_problem(&self) -> bool {
        self.problem.is_some() || self.containers.iter().any(|c| c.has_problem())
    }
}

impl Engine {
    /// Collects the picture behind a failed or timed-out wait. Read errors do not hide
    /// the rest: they become part of the summary.
    pub(crate) async fn diagnose(&self, outcome: &Outcome, timeout: Duration) -> Diagnosis {
        let (target, summary, selector, job_failed) = match outcome {
            Outcome::Failed {
                target,
                reason,
                message,
                selector,
            } => {
                let text = if message.is_empty() {
                    format!("failed: {reason}")
                } else {
                    format!("failed: {reason}: {message}")
                };
                (
                    target,
                    text,
                    selector.clone(),
                    target.kind == TargetKind::Job,
                )
            }
            Outcome::Stuck {
                target,
                reason,
                message,
                selector,
                settled,
            } => (
                target,
                format!(
                    "failing for {}: {reason}: {message}",
                    human_duration(*settled)
                ),
                selector.clone(),
                false,
            ),
            Outcome::TimedOut {
                target,
                last,
                selector,
            } => (
                target,
                format!("not ready after {}: {last}", human_duration(timeout)),
                selector.clone(),
                false,
            ),
            Outcome::Ready => unreachable!("ready targets need no diagnosis"),
        };
        let mut d = Diagnosis {
            target: target.label(),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            id: "",
            summary,
            pods: Vec::new(),
            events: Vec::new(),
        };
        if target.namespace.is_empty() {
            d.id = classify(&d, target, job_failed).id();
            return d;
        }
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &target.namespace);
        let mut pods = Vec::new();
        if let Some(sel) = &selector {
            match pods_api.list(&ListParams::default().labels(sel)).await {
                Ok(list) => pods = list.items,
                Err(e) => d
                    .summary
                    .push_str(&format!(" (pods unreadable: {})", describe(&e))),
            }
        }
        let mut reports: Vec<PodReport> = pods.iter().map(pod_report).collect();
        // Problem pods first, then by name; only a few.
        reports.sort_by(|a, b| {
            b.has_problem()
                .cmp(&a.has_problem())
                .then_with(|| a.name.cmp(&b.name))
        });
        reports.truncate(MAX_PODS);
        let events_api: Api<Event> = Api::namespaced(self.client.clone(), &target.namespace);
        match events_api
            .list(&ListParams::default().fields("type=Warning"))
            .await
        {
            Ok(list) => d.events = relevant_events(list.items, target, &pods),
            Err(e) => d
                .summary
                .push_str(&format!(" (events unreadable: {})", describe(&e))),
        }
        for pod in &mut reports {
            for c in &mut pod.containers {
                if !c.wants_logs() {
                    continue;
                }
                let params = LogParams {
                    container: Some(c.name.clone()),
                    // A crash loop's useful lines are in the run that died.
                    previous: c.restarts > 0 && c.state != "terminated",
                    tail_lines: Some(self.timing.log_lines),
                    ..LogParams::default()
                };
                match pods_api.logs(&pod.name, &params).await {
                    Ok(text) => c.log_tail = text.lines().map(str::to_string).collect(),
                    Err(e) => c.log_tail = vec![format!("(logs unavailable: {})", describe(&e))],
                }
            }
        }
        d.pods = reports;
        d.id = classify(&d, target, job_failed).id();
        d
    }
}

fn classify(d: &Diagnosis, target: &Target, job_failed: bool) -> ErrorKind {
    let create_failed =
        d.summary.contains("FailedCreate") || d.events.iter().any(|e| e.reason == "FailedCreate");
    let containers = || d.pods.iter().flat_map(|p| p.containers.iter());
    if job_failed {
        return if target.migrations {
            ErrorKind::MigrationsFailed
        } else {
            ErrorKind::JobFailed
        };
    }
    if containers().any(|c| c.image_pull_failed()) {
        ErrorKind::ImagePullFailed
    } else if containers().any(|c| c.crash_looping()) {
        ErrorKind::PodCrashLooping
    } else if containers().any(|c| c.config_error()) {
        ErrorKind::ContainerConfigError
    } else if create_failed {
        ErrorKind::PodCreateFailed
    } else {
        ErrorKind::RolloutTimeout
    }
}

impl Engine {
    /// What makes `target` fail in a way waiting does not cure, if anything: a container
    /// failure of [`SETTLING`], or pods its controller cannot create (a Deployment's
    /// `ReplicaFailure=True`, copied from its ReplicaSet by the deployment controller,
    /// kubernetes pkg/controller/deployment/sync.go; or a `FailedCreate` Warning event on
    /// the workload or its ReplicaSet while fewer pods exist than it wants, the event
    /// kubernetes pkg/controller/controller_utils.go `CreatePods`/`FailedCreatePodReason`
    /// and the StatefulSet controller record). Returns (reason, words). Read errors count
    /// as no signal: the wait goes on.
    pub(crate) async fn failure_signal(
        &self,
        target: &Target,
        facts: &Facts,
    ) -> Option<(String, String)> {
        if let Some(message) = &facts.replica_failure {
            return Some(("FailedCreate".into(), cut(message)));
        }
        let selector = facts.selector.as_ref()?;
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &target.namespace);
        let pods = pods_api
            .list(&ListParams::default().labels(selector))
            .await
            .ok()?
            .items;
        let live: Vec<&Pod> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        for p in &live {
            let report = pod_report(p);
            if let Some((c, reason)) = report
                .containers
                .iter()
                .find_map(|c| c.failure().map(|r| (c, r)))
            {
                let mut words = format!("pod {} container {}", report.name, c.name);
                if let Some(m) = c
                    .message
                    .as_deref()
                    .filter(|_| reason != "CrashLoopBackOff")
                {
                    words.push_str(&format!(": {m}"));
                }
                return Some((reason.to_string(), words));
            }
        }
        let running = live
            .iter()
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
            })
            .count();
        if facts
            .desired_pods
            .is_none_or(|want| i32::try_from(running).unwrap_or(i32::MAX) >= want)
        {
            return None;
        }
        let events_api: Api<Event> = Api::namespaced(self.client.clone(), &target.namespace);
        let events = events_api
            .list(&ListParams::default().fields("type=Warning"))
            .await
            .ok()?
            .items;
        let prefix = format!("{}-", target.name);
        let kind = kind_name(target.kind);
        events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
            .find(|e| {
                let o = &e.involved_object;
                let name = o.name.as_deref().unwrap_or_default();
                match o.kind.as_deref().unwrap_or_default() {
                    "ReplicaSet" => {
                        target.kind == TargetKind::Deployment && name.starts_with(&prefix)
                    }
                    k => k == kind && name == target.name,
                }
            })
            .map(|e| {
                (
                    "FailedCreate".to_string(),
                    cut(e.message.as_deref().unwrap_or_default()),
                )
            })
    }
}

fn kind_name(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Deployment => "Deployment",
        TargetKind::StatefulSet => "StatefulSet",
        TargetKind::DaemonSet => "DaemonSet",
        TargetKind::Job => "Job",
        TargetKind::CustomResourceDefinition => "CustomResourceDefinition",
        TargetKind::Certificate => "Certificate",
    }
}

fn cut(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= MAX_MESSAGE {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX_MESSAGE).collect();
        t.push('…');
        t
    }
}

fn pod_report(p: &Pod) -> PodReport {
    let status = p.status.clone().unwrap_or_default();
    let unscheduled = status.conditions.as_ref().and_then(|cs| {
        cs.iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            .map(|c| {
                let reason = c.reason.clone().unwrap_or_else(|| "Unschedulable".into());
                match &c.message {
                    Some(m) => format!("{reason}: {}", cut(m)),
                    None => reason,
                }
            })
    });
    let own = status.reason.as_ref().map(|r| match &status.message {
        Some(m) => format!("{r}: {}", cut(m)),
        None => r.clone(),
    });
    let mut containers = Vec::new();
    for (init, list) in [
        (true, status.init_container_statuses.as_ref()),
        (false, status.container_statuses.as_ref()),
    ] {
        for cs in list.into_iter().flatten() {
            containers.push(container_report(cs, init));
        }
    }
    // Init containers that succeeded are no news.
    containers.retain(|c| !(c.init && c.state == "terminated" && c.exit_code == Some(0)));
    PodReport {
        name: p.metadata.name.clone().unwrap_or_default(),
        phase: status.phase.unwrap_or_else(|| "Unknown".into()),
        problem: unscheduled.or(own),
        containers,
    }
}

fn container_report(cs: &ContainerStatus, init: bool) -> ContainerReport {
    let mut r = ContainerReport {
        name: cs.name.clone(),
        init,
        image: cs.image.clone(),
        ready: cs.ready,
        restarts: cs.restart_count,
        state: "waiting".into(),
        reason: None,
        message: None,
        exit_code: None,
        last_exit_code: cs
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code),
        log_tail: Vec::new(),
    };
    if let Some(state) = &cs.state {
        if let Some(w) = &state.waiting {
            r.state = "waiting".into();
            r.reason = w.reason.clone();
            r.message = w.message.as_deref().map(cut);
        } else if let Some(t) = &state.terminated {
            r.state = "terminated".into();
            r.reason = t.reason.clone();
            r.message = t.message.as_deref().map(cut);
            r.exit_code = Some(t.exit_code);
        } else if state.running.is_some() {
            r.state = "running".into();
        }
    }
    r
}

/// Warning events about the target, its pods, its ReplicaSets and the claims its pods
/// use; the most recent few, newest last.
fn relevant_events(events: Vec<Event>, target: &Target, pods: &[Pod]) -> Vec<EventReport> {
    let pod_names: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let claims: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref())
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
        })
        .collect();
    let prefix = format!("{}-", target.name);
    let mut picked: Vec<(String, EventReport)> = events
        .into_iter()
        .filter(|e| {
            let o = &e.involved_object;
            let name = o.name.as_deref().unwrap_or_default();
            match o.kind.as_deref().unwrap_or_default() {
                "Pod" => pod_names.contains(name),
                "ReplicaSet" => name.starts_with(&prefix),
                "PersistentVolumeClaim" => claims.contains(name),
                _ => name == target.name,
            }
        })
        .map(|e| {
            let when = e
                .last_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
                .unwrap_or_default();
            let o = &e.involved_object;
            (
                when,
                EventReport {
                    object: format!(
                        "{}/{}",
                        o.kind.as_deref().unwrap_or("Object"),
                        o.name.as_deref().unwrap_or_default()
                    ),
                    reason: e.reason.clone().unwrap_or_default(),
                    message: cut(e.message.as_deref().unwrap_or_default()),
                    count: e.count.unwrap_or(1),
                },
            )
        })
        .collect();
    picked.sort_by(|a, b| a.0.cmp(&b.0));
    let skip = picked.len().saturating_sub(MAX_EVENTS);
    picked.into_iter().skip(skip).map(|(_, e)| e).collect()
}

/// The compact human lines of one diagnosis.
pub fn render(d: &Diagnosis) -> Vec<String> {
    let mut lines = vec![format!("{}: {}", d.target, d.summary)];
    for p in &d.pods {
        if let Some(problem) = &p.problem {
            lines.push(format!("pod {}: {}: {problem}", p.name, p.phase));
        }
        for c in p.containers.iter().filter(|c| c.has_problem()) {
            let mut line = format!(
                "pod {} {}container {}: ",
                p.name,
                if c.init { "init " } else { "" },
                c.name
            );
            let reason = c.reason.clone().unwrap_or_else(|| {
                if c.state == "running" {
                    "running, not ready".into()
                } else {
                    c.state.clone()
                }
            });
            line.push_str(&reason);
            if c.restarts > 0 {
                line.push_str(&format!(" (restarts {})", c.restarts));
            }
            if c.state == "terminated"
                && let Some(code) = c.exit_code
            {
                line.push_str(&format!(": exit {code}"));
            } else if let Some(code) = c.last_exit_code {
                line.push_str(&format!(": last exit {code}"));
            }
            // A crash loop's message only repeats the back-off; others say what is wrong.
            if let Some(m) = &c.message
                && c.reason.as_deref() != Some("CrashLoopBackOff")
            {
                line.push_str(&format!(": {m}"));
            }
            lines.push(line);
            for l in &c.log_tail {
                lines.push(format!("  | {l}"));
            }
        }
    }
    for e in &d.events {
        let mut line = format!("event {} {}: {}", e.object, e.reason, e.message);
        if e.count > 1 {
            line.push_str(&format!(" (x{})", e.count));
        }
        lines.push(line);
    }
    lines
}

/// The most specific kind first.
fn rank(id: &str) -> usize {
    [
        "migrations-failed",
        "job-failed",
        "image-pull-failed",
        "pod-crash-looping",
        "container-config-error",
        "pod-create-failed",
        "rollout-timeout",
    ]
    .iter()
    .position(|x| *x == id)
    .unwrap_or(usize::MAX)
}

/// One error for all the targets that are not ready: the most specific id wins, every
/// diagnosis is in the details (human) and in `data.diagnoses` (JSON).
pub(crate) fn to_error(diagnoses: &[Diagnosis]) -> Error {
    let mut sorted: Vec<&Diagnosis> = diagnoses.iter().collect();
    sorted.sort_by_key(|d| rank(d.id));
    let top = sorted[0];
    let kind = ErrorKind::from_id(top.id).unwrap_or(ErrorKind::RolloutTimeout);
    let first_container = |pred: &dyn Fn(&ContainerReport) -> bool| {
        top.pods.iter().find_map(|p| {
            p.containers
                .iter()
                .find(|c| pred(c))
                .map(|c| (p.name.clone(), c.clone()))
        })
    };
    let (mut message, hint) = match kind {
        ErrorKind::MigrationsFailed => (
            format!("the migrations Job {}/{} failed", top.namespace, top.name),
            "the log lines above are the migration's output; fix it and run `pulsedev up` again",
        ),
        ErrorKind::JobFailed => (
            format!("Job {}/{} failed", top.namespace, top.name),
            "the log lines above are the Job's output; fix it and run `pulsedev up` again",
        ),
        ErrorKind::ImagePullFailed => {
            let what = first_container(&|c| c.image_pull_failed())
                .map(|(pod, c)| format!(" {} for container {} of pod {pod}", c.image, c.name))
                .unwrap_or_default();
            (
                format!("{}: failed to pull image{what}", top.target),
                "check the image name and that it reached the cluster (`pulsedev build`, then `pulsedev up`)",
            )
        }
        ErrorKind::PodCrashLooping => {
            let what = first_container(&|c| c.crash_looping())
                .map(|(pod, c)| format!("container {} of pod {pod} is crash-looping", c.name))
                .unwrap_or_else(|| "a container is crash-looping".into());
            (
                format!("{}: {what}", top.target),
                "the log lines above are from the container's last run; fix the cause and run `pulsedev up` again",
            )
        }
        ErrorKind::ContainerConfigError => {
            let what = first_container(&|c| c.config_error())
                .map(|(pod, c)| {
                    let why = c.message.map(|m| format!(": {m}")).unwrap_or_default();
                    format!("container {} of pod {pod} cannot be created{why}", c.name)
                })
                .unwrap_or_else(|| "a container cannot be created".into());
            (
                format!("{}: {what}", top.target),
                "a Secret, ConfigMap or key the pod refers to is missing (the message names it); create it or fix the reference, then run `pulsedev up` again",
            )
        }
        ErrorKind::PodCreateFailed => (
            format!(
                "{}: its pods cannot be created: {}",
                top.target, top.summary
            ),
            "the API server refused the pods (the event above names the rule: Pod Security admission, a quota or a webhook); fix the pod's securityContext or the namespace's `pod-security.kubernetes.io/enforce` label, then run `pulsedev up` again",
        ),
        _ => (
            format!("{} is not ready: {}", top.target, top.summary),
            "the pods and events above say what it waits for; `pulsedev status` shows the whole stack",
        ),
    };
    if sorted.len() > 1 {
        message.push_str(&format!(" (and {} more not ready)", sorted.len() - 1));
    }
    let details = sorted
        .iter()
        .flat_map(|d| render(d))
        .collect::<Vec<String>>();
    Error::new(kind, message)
        .with_hint(hint)
        .with_details(details)
        .with_data(serde_json::json!({ "diagnoses": sorted }))
}

#[cfg(test)]
mod tests {
    use crate::kube::testing::fixtures::{
        self, Looks, event_list, pending_pod, pod, pod_list, warning,
    };
    use crate::kube::testing::{Exchange, Scenario};
    use crate::kube::{Engine, Target, TargetKind, Timing};
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    const NS: &str = "pulsewatch-dev";

    fn engine(client: ::kube::Client) -> Engine {
        Engine::new(client).with_timing(Timing {
            poll: Duration::from_secs(2),
            log_lines: 4,
            ..Timing::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_looping_pod_is_named_with_container_reason_restarts_and_log_tail() {
        let stuck = || {
            Exchange::get("/apis/apps/v1/namespaces/pulsewatch-dev/deployments/api")
                .ok(fixtures::deployment(NS, "api", (1, 1), 1, (1, 1, 0)))
        };
        let mut scenario = Scenario::new();
        // Polled at 0, 2, 4, 6, 8 and 10 s; the deadline is 10 s.
        for _ in 0..6 {
            scenario = scenario.then(stuck());
        }
        let (client, mock) = scenario
            .then(
                Exchange::get("/api/v1/namespaces/pulsewatch-dev/pods")
                    .query("labelSelector", "app.kubernetes.io/name=api")
                    .ok(pod_list(vec![pod(
                        NS,
                        "api-7c9f5d8b6-x2kqp",
                        "api",
                        "localhost:5001/pulsewatch/api:dev",
                        Looks::CrashLoop { restarts: 5, last_exit: 1 },
                    )])),
            )
            .then(
                Exchange::get("/api/v1/namespaces/pulsewatch-dev/events")
                    .query("fieldSelector", "type=Warning")
                    .ok(event_list(vec![
                        warning(NS, "Pod", "api-7c9f5d8b6-x2kqp", "BackOff", "Back-off restarting failed container api in pod api-7c9f5d8b6-x2kqp_pulsewatch-dev(uid-api)", 12, "2026-11-26T05:24:30Z"),
                        // Someone else's trouble: not shown.
                        warning(NS, "Pod", "redis-5d4c7b9f8-abcde", "Unhealthy", "Readiness probe failed", 3, "2026-11-26T05:24:00Z"),
                        warning(NS, "Pod", "api-7c9f5d8b6-x2kqp", "Unhealthy", "Readiness probe failed: Get \"http://10.244.0.12:8080/healthz\": dial tcp 10.244.0.12:8080: connect: connection refused", 4, "2026-11-26T05:23:10Z"),
                    ])),
            )
            .then(
                Exchange::get("/api/v1/namespaces/pulsewatch-dev/pods/api-7c9f5d8b6-x2kqp/log")
                    .query("container", "api")
                    .query("previous", "true")
                    .query("tailLines", "4")
                    .text("pulsewatch-api 0.4.2 starting\nconnecting to postgres.pulsewatch-dev.svc:5432\nerror: password authentication failed for user \"pulsewatch\"\nexiting with status 1\n"),
            )
            .start();
        let e = engine(client)
            .wait_ready(
                &[Target::new(TargetKind::Deployment, NS, "api")],
                Duration::from_secs(10),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "pod-crash-looping");
        insta::assert_snapshot!("crash_loop_human", crate::ui::render_error(&e, false));
        insta::assert_json_snapshot!("crash_loop_json", crate::ui::failure_document(&e));
    }

    /// A FailedCreate counts for the workload it is about: the replicaset-controller
    /// records it on the Deployment's ReplicaSet (`<deployment>-<hash>`), the
    /// statefulset-controller on the StatefulSet itself (kubernetes
    /// pkg/controller/controller_utils.go `CreatePods`, statefulset/stateful_pod_control.go
    /// `recordPodEvent`). Another workload's refusal in the same namespace is not its
    /// failure.
    #[tokio::test(start_paused = true)]
    async fn a_failed_create_counts_only_for_the_workload_it_names() {
        let refused = "Error creating: pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false)";
        let signal = |target: Target, event: (&'static str, &'static str)| async move {
            let (client, mock) = Scenario::new()
                .then(
                    Exchange::get("/api/v1/namespaces/pulsewatch-dev/pods")
                        .query("labelSelector", "app.kubernetes.io/name=x")
                        .ok(pod_list(vec![])),
                )
                .then(
                    Exchange::get("/api/v1/namespaces/pulsewatch-dev/events")
                        .query("fieldSelector", "type=Warning")
                        .ok(event_list(vec![warning(
                            NS,
                            event.0,
                            event.1,
                            "FailedCreate",
                            refused,
                            6,
                            "2026-11-30T10:00:31Z",
                        )])),
                )
                .start();
            let facts = crate::kube::wait::Facts {
                selector: Some("app.kubernetes.io/name=x".into()),
                desired_pods: Some(1),
                ..Default::default()
            };
            let got = engine(client).failure_signal(&target, &facts).await;
            mock.finish().await;
            got.map(|(reason, _)| reason)
        };
        let api = || Target::new(TargetKind::Deployment, NS, "api");
        let postgres = || Target::new(TargetKind::StatefulSet, NS, "postgres");
        let failed = Some("FailedCreate".to_string());
        assert_eq!(signal(api(), ("ReplicaSet", "api-7c9f6d8b5")).await, failed);
        assert_eq!(
            signal(api(), ("ReplicaSet", "worker-5d8f7c9b4")).await,
            None
        );
        assert_eq!(
            signal(postgres(), ("StatefulSet", "postgres")).await,
            failed
        );
        assert_eq!(signal(postgres(), ("StatefulSet", "redis")).await, None);
        assert_eq!(
            signal(postgres(), ("ReplicaSet", "postgres-5d8f7c9b4")).await,
            None
        );
    }

    /// The logs of a container that ended (a Job's, failed after restarts under
    /// `restartPolicy: OnFailure`) are its current instance's: `previous` is only for a
    /// container that is running or waiting again after a crash.
    #[tokio::test(start_paused = true)]
    async fn the_logs_of_an_ended_container_are_not_the_previous_run() {
        let mut failed = pod(
            NS,
            "migrations-3f2a9c-7xk2p",
            "migrations",
            "localhost:5001/pulsewatch/migrations:dev",
            fixtures::Looks::Terminated {
                exit: 1,
                reason: "Error",
            },
        );
        failed
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0]
            .restart_count = 3;
        let (client, mock) = Scenario::new()
            .then(
                Exchange::get("/api/v1/namespaces/pulsewatch-dev/pods")
                    .query("labelSelector", "job-name=migrations-3f2a9c")
                    .ok(pod_list(vec![failed])),
            )
            .then(
                Exchange::get("/api/v1/namespaces/pulsewatch-dev/events")
                    .query("fieldSelector", "type=Warning")
                    .ok(event_list(vec![])),
            )
            .then(
                Exchange::get("/api/v1/namespaces/pulsewatch-dev/pods/migrations-3f2a9c-7xk2p/log")
                    .query("container", "migrations")
                    .check(|seen| assert!(!seen.query.contains_key("previous"), "{seen}"))
                    .text("ERROR: relation \"checks\" does not exist\n"),
            )
            .start();
        let d = engine(client)
            .diagnose(
                &crate::kube::wait::Outcome::Failed {
                    target: Target::new(TargetKind::Job, NS, "migrations-3f2a9c"),
                    reason: "BackoffLimitExceeded".into(),
                    message: "Job has reached the specified backoff limit".into(),
                    selector: Some("job-name=migrations-3f2a9c".into()),
                },
                Duration::from_secs(300),
            )
            .await;
        mock.finish().await;
        assert_eq!(
            d.pods[0].containers[0].log_tail,
            ["ERROR: relation \"checks\" does not exist"]
        );
    }

    /// Only three pods are described: the one in trouble is among them even when its
    /// name sorts last (a StatefulSet's highest ordinal, left Pending by the scheduler as
    /// kube-scheduler reports it: PodScheduled=False/Unschedulable).
    #[tokio::test(start_paused = true)]
    async fn the_pod_in_trouble_is_described_before_healthy_ones() {
        let running = |n: &str| pod(NS, n, "postgres", "postgres:17", fixtures::Looks::Running);
        let (client, mock) = Scenario::new()
            .then(
                Exchange::get("/api/v1/namespaces/pulsewatch-dev/pods")
                    .query("labelSelector", "app.kubernetes.io/name=postgres")
                    .ok(pod_list(vec![
                        running("postgres-0"),
                        running("postgres-1"),
                        running("postgres-2"),
                        pending_pod(
                            NS,
                            "postgres-3",
                            "postgres",
                            "data-postgres-3",
                            "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
                        ),
                    ])),
            )
            .then(
                Exchange::get("/api/v1/namespaces/pulsewatch-dev/events")
                    .query("fieldSelector", "type=Warning")
                    .ok(event_list(vec![])),
            )
            .start();
        let target = Target::new(TargetKind::StatefulSet, NS, "postgres");
        let d = engine(client)
            .diagnose(
                &crate::kube::wait::Outcome::TimedOut {
                    target,
                    last: "3/4 replicas ready".into(),
                    selector: Some("app.kubernetes.io/name=postgres".into()),
                },
                Duration::from_secs(300),
            )
            .await;
        mock.finish().await;
        let names: Vec<&str> = d.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["postgres-3", "postgres-0", "postgres-1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn image_pull_config_error_and_unbound_claim_in_one_screen() {
        let web = "/apis/apps/v1/namespaces/pulsewatch-dev/deployments/web";
        let worker = "/apis/apps/v1/namespaces/pulsewatch-dev/deployments/worker";
        let pg = "/apis/apps/v1/namespaces/pulsewatch-dev/statefulsets/postgres";
        let tick = || {
            vec![
                Exchange::get(web).ok(fixtures::deployment(NS, "web", (1, 1), 1, (1, 1, 0))),
                Exchange::get(worker).ok(fixtures::deployment(NS, "worker", (1, 1), 1, (1, 1, 0))),
                Exchange::get(pg).ok(fixtures::statefulset(
                    NS,
                    "postgres",
                    1,
                    0,
                    ("postgres-1", "postgres-1"),
                )),
            ]
        };
        let pods = |sel: &str, p| {
            Exchange::get("/api/v1/namespaces/pulsewatch-dev/pods")
                .query("labelSelector", sel)
                .ok(pod_list(vec![p]))
        };
        let events = event_list(vec![
            warning(
                NS,
                "Pod",
                "web-6b8d9c7f5-q8wzt",
                "Failed",
                "Failed to pull image \"localhost:5001/pulsewatch/web:dev\": rpc error: code = NotFound desc = failed to pull and unpack image \"localhost:5001/pulsewatch/web:dev\": not found",
                4,
                "2026-11-26T05:22:00Z",
            ),
            warning(
                NS,
                "Pod",
                "worker-59f7d8c6b4-m4n7r",
                "Failed",
                "Error: secret \"pulsewatch-db\" not found",
                7,
                "2026-11-26T05:22:30Z",
            ),
            warning(
                NS,
                "Pod",
                "postgres-0",
                "FailedScheduling",
                "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
                3,
                "2026-11-26T05:21:00Z",
            ),
            warning(
                NS,
                "PersistentVolumeClaim",
                "data-postgres-0",
                "ProvisioningFailed",
                "storageclass.storage.k8s.io \"fast\" not found",
                9,
                "2026-11-26T05:21:30Z",
            ),
        ]);
        let events_req =
            || Exchange::get("/api/v1/namespaces/pulsewatch-dev/events").ok(events.clone());
        let (client, mock) = Scenario::new()
            .any_order(tick())
            .any_order(tick())
            .any_order(tick())
            .then(pods("app.kubernetes.io/name=web", pod(NS, "web-6b8d9c7f5-q8wzt", "web", "localhost:5001/pulsewatch/web:dev", Looks::Waiting { reason: "ImagePullBackOff", message: "Back-off pulling image \"localhost:5001/pulsewatch/web:dev\"" })))
            .then(events_req())
            .then(pods("app.kubernetes.io/name=worker", pod(NS, "worker-59f7d8c6b4-m4n7r", "worker", "localhost:5001/pulsewatch/worker:dev", Looks::Waiting { reason: "CreateContainerConfigError", message: "secret \"pulsewatch-db\" not found" })))
            .then(events_req())
            .then(pods("app.kubernetes.io/name=postgres", pending_pod(NS, "postgres-0", "postgres", "data-postgres-0", "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.")))
            .then(events_req())
            .start();
        let e = engine(client)
            .wait_ready(
                &[
                    Target::new(TargetKind::Deployment, NS, "web"),
                    Target::new(TargetKind::Deployment, NS, "worker"),
                    Target::new(TargetKind::StatefulSet, NS, "postgres"),
                ],
                Duration::from_secs(4),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "image-pull-failed");
        insta::assert_snapshot!("three_not_ready_human", crate::ui::render_error(&e, false));
        let ids: Vec<&str> = e.data.as_ref().unwrap()["diagnoses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "image-pull-failed",
                "container-config-error",
                "rollout-timeout"
            ]
        );
    }

    fn container(
        state: &str,
        reason: Option<&str>,
        ready: bool,
        restarts: i32,
        last: Option<i32>,
    ) -> super::ContainerReport {
        super::ContainerReport {
            name: "api".into(),
            init: false,
            image: "localhost:5001/pulsewatch/api:dev".into(),
            ready,
            restarts,
            state: state.into(),
            reason: reason.map(str::to_string),
            message: None,
            exit_code: None,
            last_exit_code: last,
            log_tail: Vec::new(),
        }
    }

    /// A scheduled pod whose containers are not ready yet (the conditions the kubelet
    /// writes, pkg/kubelet/status/generate.go: Ready and ContainersReady False with
    /// ContainersNotReady, PodScheduled True) has no scheduling problem; an unschedulable
    /// one (kube-scheduler: PodScheduled=False/Unschedulable) says why.
    #[test]
    fn only_a_pod_the_scheduler_could_not_place_is_unscheduled() {
        let pod = |conditions: serde_json::Value| -> k8s_openapi::api::core::v1::Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "api-7d9f-x2", "namespace": NS},
                "status": {"phase": "Pending", "conditions": conditions}
            }))
            .unwrap()
        };
        let not_ready = "containers with unready status: [api]";
        let scheduled = pod(serde_json::json!([
            {"type": "PodReadyToStartContainers", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": not_ready},
            {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "message": not_ready},
            {"type": "PodScheduled", "status": "True"}
        ]));
        assert_eq!(super::pod_report(&scheduled).problem, None);
        let unschedulable = pod(serde_json::json!([
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/1 nodes are available: 1 Insufficient memory."}
        ]));
        assert_eq!(
            super::pod_report(&unschedulable).problem.as_deref(),
            Some("Unschedulable: 0/1 nodes are available: 1 Insufficient memory.")
        );
    }

    /// Only init containers that ran to success are left out of a pod's report (the
    /// container statuses the kubelet writes: terminated/Completed exit 0); a failed
    /// or running init container, and a main container that exited 0, are news.
    #[test]
    fn succeeded_init_containers_are_the_only_ones_left_out() {
        let status = |name: &str, state: serde_json::Value| {
            serde_json::json!({"name": name, "image": "x:1", "imageID": "", "ready": false,
                "restartCount": 0, "state": state})
        };
        let done = |code: i32| {
            serde_json::json!({"terminated": {"exitCode": code,
                "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": "2026-11-30T12:00:00Z", "finishedAt": "2026-11-30T12:00:01Z"}})
        };
        let running = serde_json::json!({"running": {"startedAt": "2026-11-30T12:00:02Z"}});
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-5c4b-x2", "namespace": NS},
            "status": {"phase": "Running",
                "initContainerStatuses": [
                    status("seed", done(0)),
                    status("migrate", done(1)),
                    status("wait", running.clone())
                ],
                "containerStatuses": [status("once", done(0)), status("web", running)]}
        }))
        .unwrap();
        let names: Vec<String> = super::pod_report(&pod)
            .containers
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(names, ["migrate", "wait", "once", "web"]);
    }

    /// The events of a Deployment's ReplicaSets (`<name>-<hash>`, FailedCreate lives
    /// there) are picked; another workload's ReplicaSets are not.
    #[test]
    fn a_deployments_replicaset_events_are_picked() {
        let event = |kind: &str, name: &str| -> k8s_openapi::api::core::v1::Event {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{name}.1"), "namespace": NS},
                "involvedObject": {"kind": kind, "name": name, "namespace": NS},
                "reason": "FailedCreate", "message": "forbidden", "count": 3,
                "lastTimestamp": "2026-11-30T12:00:00Z"
            }))
            .unwrap()
        };
        let picked = super::relevant_events(
            vec![
                event("ReplicaSet", "api-7d9f"),
                event("ReplicaSet", "apiserver-5c4b"),
                event("ReplicaSet", "web-6b8c"),
            ],
            &Target::new(TargetKind::Deployment, NS, "api"),
            &[],
        );
        let objects: Vec<&str> = picked.iter().map(|e| e.object.as_str()).collect();
        assert_eq!(objects, ["ReplicaSet/api-7d9f"]);
    }

    #[test]
    fn only_failures_waiting_does_not_cure_are_signals() {
        let f = |c: super::ContainerReport| c.failure().map(str::to_string);
        // The kubelet's reasons of a failure that persists.
        for r in super::SETTLING {
            assert_eq!(
                f(container("waiting", Some(r), false, 0, None)),
                Some(r.to_string())
            );
        }
        // Starting up is not a failure.
        assert_eq!(
            f(container(
                "waiting",
                Some("ContainerCreating"),
                false,
                0,
                None
            )),
            None
        );
        assert_eq!(
            f(container(
                "waiting",
                Some("PodInitializing"),
                false,
                0,
                None
            )),
            None
        );
        // Between two crashes: running again, not ready, after a failed run.
        assert_eq!(
            f(container("running", None, false, 3, Some(137))),
            Some("CrashLoopBackOff".to_string())
        );
        // Restarted after a clean exit, or ready again: not crashing.
        assert_eq!(f(container("running", None, false, 3, Some(0))), None);
        assert_eq!(f(container("running", None, true, 3, Some(1))), None);
        assert_eq!(f(container("running", None, false, 0, None)), None);
        // A ready container is never a signal, whatever its last state said.
        assert_eq!(
            f(container(
                "waiting",
                Some("CrashLoopBackOff"),
                true,
                3,
                Some(1)
            )),
            None
        );
        assert!(
            container(
                "waiting",
                Some("CreateContainerConfigError"),
                false,
                0,
                None
            )
            .config_error()
        );
        assert!(container("waiting", Some("CreateContainerError"), false, 0, None).config_error());
        assert!(!container("waiting", Some("ErrImagePull"), false, 0, None).config_error());
    }

    /// A container status as the kubelet writes it (kubernetes pkg/kubelet/kubelet_pods.go
    /// `convertToAPIContainerStatuses`: `lastState` is the previous instance, so it exists
    /// only once `restartCount` is above 0).
    fn kubelet_status(restarts: i32, last_exit: i32, last_reason: &str) -> super::ContainerReport {
        let cs: k8s_openapi::api::core::v1::ContainerStatus =
            serde_json::from_value(serde_json::json!({
                "name": "api", "image": "localhost:5001/pulsewatch/api:dev",
                "imageID": "localhost:5001/pulsewatch/api@sha256:7d3f0c1e",
                "containerID": "containerd://4b1e9f2a", "ready": false, "started": true,
                "restartCount": restarts,
                "state": {"running": {"startedAt": "2026-11-30T10:00:40Z"}},
                "lastState": {"terminated": {"exitCode": last_exit, "reason": last_reason,
                    "startedAt": "2026-11-30T10:00:10Z", "finishedAt": "2026-11-30T10:00:31Z",
                    "containerID": "containerd://9c2d7e11"}}
            }))
            .unwrap();
        super::container_report(&cs, false)
    }

    /// Between two crashes the kubelet shows the container running again, not ready,
    /// its last run ended with an error: that is a crash loop (its logs are the previous
    /// run's) even though no CrashLoopBackOff is showing. A container restarted after a
    /// clean exit is not.
    #[test]
    fn a_container_running_again_after_a_failed_run_is_crash_looping() {
        use super::{Diagnosis, PodReport, classify};
        use crate::error::ErrorKind;
        let crashed = kubelet_status(3, 1, "Error");
        assert!(crashed.crash_looping());
        assert!(crashed.wants_logs());
        let clean = kubelet_status(1, 0, "Completed");
        assert!(!clean.crash_looping());
        assert!(!clean.wants_logs());
        let target = Target::new(TargetKind::Deployment, NS, "api");
        let d = |c: super::ContainerReport| Diagnosis {
            target: target.label(),
            namespace: NS.into(),
            name: "api".into(),
            id: "",
            summary: "not ready after 5m: 0/1 replicas available".into(),
            pods: vec![PodReport {
                name: "api-7c9f6d-x2x4q".into(),
                phase: "Running".into(),
                problem: None,
                containers: vec![c],
            }],
            events: vec![],
        };
        assert_eq!(
            classify(&d(crashed), &target, false),
            ErrorKind::PodCrashLooping
        );
        assert_eq!(
            classify(&d(clean), &target, false),
            ErrorKind::RolloutTimeout
        );
    }

    /// One pod of a Job's or a workload's, with container statuses as the kubelet writes
    /// them: a healthy one, one running but failing its readiness probe, one that
    /// completed, one that failed. Only the second and the last are worth a line, and only
    /// the failed run's logs are fetched.
    #[test]
    fn only_containers_with_a_problem_are_shown_and_only_failed_runs_want_logs() {
        use super::{Diagnosis, PodReport, render};
        let status = |name: &str, ready: bool, state: serde_json::Value| {
            let cs: k8s_openapi::api::core::v1::ContainerStatus =
                serde_json::from_value(serde_json::json!({
                    "name": name, "image": format!("localhost:5001/pulsewatch/{name}:dev"),
                    "imageID": "", "containerID": "containerd://4b1e9f2a", "ready": ready,
                    "started": state.get("running").is_some(), "restartCount": 0,
                    "state": state
                }))
                .unwrap();
            super::container_report(&cs, false)
        };
        let running = serde_json::json!({"running": {"startedAt": "2026-11-30T10:00:40Z"}});
        let ended = |code: i32, reason: &str| {
            serde_json::json!({"terminated": {"exitCode": code, "reason": reason,
                "startedAt": "2026-11-30T10:00:10Z", "finishedAt": "2026-11-30T10:00:31Z",
                "containerID": "containerd://9c2d7e11"}})
        };
        let healthy = status("api", true, running.clone());
        let probing = status("sidecar", false, running);
        let completed = status("setup", false, ended(0, "Completed"));
        let failed = status("check", false, ended(1, "Error"));
        assert!(!healthy.has_problem() && !completed.has_problem());
        assert!(probing.has_problem() && failed.has_problem());
        assert!(!completed.wants_logs() && !healthy.wants_logs() && !probing.wants_logs());
        assert!(failed.wants_logs());
        let d = Diagnosis {
            target: "deployment pulsewatch-dev/api".into(),
            namespace: NS.into(),
            name: "api".into(),
            id: "rollout-timeout",
            summary: "not ready after 5m: 0/1 replicas available".into(),
            pods: vec![PodReport {
                name: "api-7c9f6d-x2x4q".into(),
                phase: "Running".into(),
                problem: None,
                containers: vec![healthy, probing, completed, failed],
            }],
            events: vec![],
        };
        assert_eq!(
            render(&d),
            [
                "deployment pulsewatch-dev/api: not ready after 5m: 0/1 replicas available",
                "pod api-7c9f6d-x2x4q container sidecar: running, not ready",
                "pod api-7c9f6d-x2x4q container check: Error: exit 1",
            ]
        );
    }

    #[test]
    fn the_most_specific_id_wins_and_failed_create_is_pod_create_failed() {
        use super::{Diagnosis, EventReport, PodReport, classify};
        use crate::error::ErrorKind;
        let target = Target::new(TargetKind::StatefulSet, NS, "postgres");
        let d =
            |summary: &str, containers: Vec<super::ContainerReport>, events: Vec<&str>| Diagnosis {
                target: target.label(),
                namespace: NS.into(),
                name: "postgres".into(),
                id: "",
                summary: summary.into(),
                pods: vec![PodReport {
                    name: "postgres-0".into(),
                    phase: "Pending".into(),
                    problem: None,
                    containers,
                }],
                events: events
                    .into_iter()
                    .map(|r| EventReport {
                        object: "StatefulSet/postgres".into(),
                        reason: r.into(),
                        message: String::new(),
                        count: 1,
                    })
                    .collect(),
            };
        let config = || {
            container(
                "waiting",
                Some("CreateContainerConfigError"),
                false,
                0,
                None,
            )
        };
        let pull = || container("waiting", Some("ImagePullBackOff"), false, 0, None);
        assert_eq!(
            classify(&d("", vec![config()], vec![]), &target, false),
            ErrorKind::ContainerConfigError
        );
        assert_eq!(
            classify(&d("", vec![config(), pull()], vec![]), &target, false),
            ErrorKind::ImagePullFailed
        );
        assert_eq!(
            classify(&d("", vec![], vec!["FailedCreate"]), &target, false),
            ErrorKind::PodCreateFailed
        );
        assert_eq!(
            classify(
                &d("failing for 30s: FailedCreate: x", vec![], vec![]),
                &target,
                false
            ),
            ErrorKind::PodCreateFailed
        );
        assert_eq!(
            classify(&d("", vec![], vec!["FailedScheduling"]), &target, false),
            ErrorKind::RolloutTimeout
        );
        let ranks: Vec<usize> = [
            "pod-crash-looping",
            "container-config-error",
            "pod-create-failed",
            "rollout-timeout",
        ]
        .iter()
        .map(|id| super::rank(id))
        .collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
    }
}
