//! Waiting until applied objects are really ready, not merely created: Deployment
//! rollout (like `kubectl rollout status`), StatefulSet, DaemonSet, Job (Complete or
//! Failed, whichever comes first), CRD Established. Every wait has a deadline, reports
//! progress when it changes, and stops at once on cancellation.
//!
//! Owns: the readiness rules (pure functions over the API objects) and the polling loop.
//! Must not change anything on the server; what is wrong when a wait fails is
//! `diagnose`'s business.

use std::collections::BTreeMap;
use std::time::Duration;

use ::kube::Api;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::manifest::Manifest;
use super::{Engine, cancellable, describe, diagnose};
use crate::error::Result;

/// The kinds pulsedev knows how to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum TargetKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    CustomResourceDefinition,
}

impl TargetKind {
    pub fn from_kind(api_version: &str, kind: &str) -> Option<TargetKind> {
        match (api_version, kind) {
            ("apps/v1", "Deployment") => Some(TargetKind::Deployment),
            ("apps/v1", "StatefulSet") => Some(TargetKind::StatefulSet),
            ("apps/v1", "DaemonSet") => Some(TargetKind::DaemonSet),
            ("batch/v1", "Job") => Some(TargetKind::Job),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                Some(TargetKind::CustomResourceDefinition)
            }
            _ => None,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            TargetKind::Deployment => "deployment",
            TargetKind::StatefulSet => "statefulset",
            TargetKind::DaemonSet => "daemonset",
            TargetKind::Job => "job",
            TargetKind::CustomResourceDefinition => "crd",
        }
    }
}

/// Something to wait for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub kind: TargetKind,
    /// Empty for cluster-scoped objects (CRDs).
    pub namespace: String,
    pub name: String,
    /// The migrations Job: its failure is `migrations-failed`.
    pub migrations: bool,
}

impl Target {
    pub fn new(kind: TargetKind, namespace: &str, name: &str) -> Target {
        Target {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            migrations: false,
        }
    }

    /// The waitable objects among `manifests`. A Job labelled
    /// `app.kubernetes.io/component=migrations` is the migrations Job.
    pub fn from_manifests(manifests: &[Manifest], default_namespace: &str) -> Vec<Target> {
        manifests
            .iter()
            .filter_map(|m| {
                let kind = TargetKind::from_kind(m.api_version(), m.kind())?;
                let namespace = match kind {
                    TargetKind::CustomResourceDefinition => "",
                    _ => m.namespace().unwrap_or(default_namespace),
                };
                let mut t = Target::new(kind, namespace, m.name());
                t.migrations = kind == TargetKind::Job
                    && m.object
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("app.kubernetes.io/component"))
                        .is_some_and(|c| c == "migrations");
                Some(t)
            })
            .collect()
    }

    /// `deployment pulsewatch-dev/api`, `crd certificates.cert-manager.io`.
    pub fn label(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind.word(), self.name)
        } else {
            format!("{} {}/{}", self.kind.word(), self.namespace, self.name)
        }
    }
}

/// One look at an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Poll {
    Ready,
    /// Not yet; the words say what it waits for.
    Waiting(String),
    /// It will not become ready by waiting (a Failed Job, an exceeded progress deadline).
    Failed {
        reason: String,
        message: String,
    },
}

/// How a wait for one target ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Ready,
    Failed {
        target: Target,
        reason: String,
        message: String,
        selector: Option<String>,
    },
    TimedOut {
        target: Target,
        last: String,
        selector: Option<String>,
    },
}

impl Engine {
    /// Waits until every target is ready, all at once, for at most `timeout`.
    ///
    /// Ends early when a target fails for good (a Failed Job: `migrations-failed` for the
    /// migrations Job, else `job-failed`). On failure or timeout the error carries a
    /// diagnosis of each target that is not ready (pods, containers, Warning events, the
    /// log tail of crashing containers): `pod-crash-looping`, `image-pull-failed` or
    /// `rollout-timeout`. Ctrl-C (`cancel`) ends it at once with `interrupted`.
    pub async fn wait_ready(
        &self,
        targets: &[Target],
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let run = async {
            let mut waits: FuturesUnordered<_> = targets
                .iter()
                .enumerate()
                .map(|(i, t)| async move { (i, self.wait_one(t, deadline).await) })
                .collect();
            let mut stuck = Vec::new();
            while let Some((i, outcome)) = waits.next().await {
                match outcome {
                    Outcome::Ready => {}
                    failed @ Outcome::Failed { .. } => return vec![failed],
                    timed_out @ Outcome::TimedOut { .. } => stuck.push((i, timed_out)),
                }
            }
            // Report in the order the targets were given, whatever order they ended in.
            stuck.sort_by_key(|(i, _)| *i);
            stuck.into_iter().map(|(_, o)| o).collect()
        };
        let stuck = cancellable(cancel, run).await?;
        if stuck.is_empty() {
            return Ok(());
        }
        let diagnoses = cancellable(cancel, async {
            let mut out = Vec::new();
            for outcome in &stuck {
                out.push(self.diagnose(outcome, timeout).await);
            }
            out
        })
        .await?;
        Err(diagnose::to_error(&diagnoses))
    }

    async fn wait_one(&self, target: &Target, deadline: Instant) -> Outcome {
        let mut last = String::new();
        loop {
            let (poll, selector) = self.look(target).await;
            match poll {
                Poll::Ready => {
                    self.say(&format!("{}: ready", target.label()));
                    return Outcome::Ready;
                }
                Poll::Failed { reason, message } => {
                    return Outcome::Failed {
                        target: target.clone(),
                        reason,
                        message,
                        selector,
                    };
                }
                Poll::Waiting(words) => {
                    if words != last {
                        self.say(&format!("{}: {words}", target.label()));
                        last = words;
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Outcome::TimedOut {
                    target: target.clone(),
                    last,
                    selector,
                };
            }
            tokio::time::sleep(self.timing.poll.min(deadline - now)).await;
        }
    }

    /// Reads the target once: its state and the label selector of its pods.
    async fn look(&self, t: &Target) -> (Poll, Option<String>) {
        let client = self.client.clone();
        let ns = t.namespace.as_str();
        let got = match t.kind {
            TargetKind::Deployment => Api::<Deployment>::namespaced(client, ns)
                .get_opt(&t.name)
                .await
                .map(|o| {
                    o.map(|d| {
                        let sel = d.spec.as_ref().map(|s| selector(&s.selector));
                        (deployment_state(&d), sel)
                    })
                }),
            TargetKind::StatefulSet => Api::<StatefulSet>::namespaced(client, ns)
                .get_opt(&t.name)
                .await
                .map(|o| {
                    o.map(|s| {
                        let sel = s.spec.as_ref().map(|sp| selector(&sp.selector));
                        (statefulset_state(&s), sel)
                    })
                }),
            TargetKind::DaemonSet => Api::<DaemonSet>::namespaced(client, ns)
                .get_opt(&t.name)
                .await
                .map(|o| {
                    o.map(|d| {
                        let sel = d.spec.as_ref().map(|s| selector(&s.selector));
                        (daemonset_state(&d), sel)
                    })
                }),
            TargetKind::Job => Api::<Job>::namespaced(client, ns)
                .get_opt(&t.name)
                .await
                .map(|o| {
                    o.map(|j| {
                        let sel = j
                            .spec
                            .as_ref()
                            .and_then(|s| s.selector.as_ref())
                            .map(selector)
                            .or_else(|| Some(format!("batch.kubernetes.io/job-name={}", t.name)));
                        (job_state(&j), sel)
                    })
                }),
            TargetKind::CustomResourceDefinition => Api::<CustomResourceDefinition>::all(client)
                .get_opt(&t.name)
                .await
                .map(|o| o.map(|c| (crd_state(&c), None))),
        };
        match got {
            Ok(Some((poll, sel))) => (poll, sel.filter(|s| !s.is_empty())),
            Ok(None) => (Poll::Waiting("does not exist yet".into()), None),
            // Transient API trouble: keep polling, and say what was seen.
            Err(e) => (
                Poll::Waiting(format!("cannot read it: {}", describe(&e))),
                None,
            ),
        }
    }
}

/// `matchLabels` as a label selector string (`a=b,c=d`); expressions are not needed by
/// the charts and are left out.
fn selector(s: &LabelSelector) -> String {
    s.match_labels
        .as_ref()
        .map(|m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Like `kubectl rollout status`: the controller saw the latest spec, and every desired
/// replica is updated and available, with no old replica left.
pub(crate) fn deployment_state(d: &Deployment) -> Poll {
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Poll::Waiting(format!(
            "waiting for the controller to observe generation {generation}"
        ));
    }
    if let Some(c) = status.conditions.as_ref().and_then(|cs| {
        cs.iter().find(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
    }) {
        return Poll::Failed {
            reason: "ProgressDeadlineExceeded".into(),
            message: c.message.clone().unwrap_or_default(),
        };
    }
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        return Poll::Waiting(format!("{updated}/{desired} replicas updated"));
    }
    if replicas > updated {
        return Poll::Waiting(format!(
            "{} old replicas pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return Poll::Waiting(format!("{available}/{desired} replicas available"));
    }
    Poll::Ready
}

/// Observed the latest spec, every replica ready (and available), and the rollout done:
/// current revision == update revision (or the partition reached).
pub(crate) fn statefulset_state(s: &StatefulSet) -> Poll {
    let generation = s.metadata.generation.unwrap_or(0);
    let status = s.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Poll::Waiting(format!(
            "waiting for the controller to observe generation {generation}"
        ));
    }
    let spec = s.spec.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    if ready < desired {
        return Poll::Waiting(format!("{ready}/{desired} replicas ready"));
    }
    if let Some(available) = status.available_replicas
        && available < desired
    {
        return Poll::Waiting(format!("{available}/{desired} replicas available"));
    }
    let strategy = spec.update_strategy.unwrap_or_default();
    if strategy.type_.as_deref() == Some("OnDelete") {
        return Poll::Ready;
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let partition = strategy
        .rolling_update
        .and_then(|r| r.partition)
        .unwrap_or(0);
    if partition > 0 {
        let want = (desired - partition).max(0);
        if updated < want {
            return Poll::Waiting(format!("{updated}/{want} replicas updated (partitioned)"));
        }
        return Poll::Ready;
    }
    if status.update_revision.is_some() && status.current_revision != status.update_revision {
        return Poll::Waiting(format!(
            "rolling out revision {}: {updated}/{desired} replicas updated",
            status.update_revision.unwrap_or_default()
        ));
    }
    Poll::Ready
}

/// Observed the latest spec; every scheduled pod updated and available.
pub(crate) fn daemonset_state(d: &DaemonSet) -> Poll {
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = d.status.clone() else {
        return Poll::Waiting("no status yet".into());
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return Poll::Waiting(format!(
            "waiting for the controller to observe generation {generation}"
        ));
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    if updated < desired {
        return Poll::Waiting(format!("{updated}/{desired} pods updated"));
    }
    let available = status.number_available.unwrap_or(0);
    if available < desired {
        return Poll::Waiting(format!("{available}/{desired} pods available"));
    }
    Poll::Ready
}

/// Complete, or Failed (also `FailureTarget`, set before the last pods are gone).
pub(crate) fn job_state(j: &Job) -> Poll {
    let status = j.status.clone().unwrap_or_default();
    let conditions = status.conditions.as_ref();
    for failed in ["Failed", "FailureTarget"] {
        if let Some(c) =
            conditions.and_then(|cs| cs.iter().find(|c| c.type_ == failed && c.status == "True"))
        {
            return Poll::Failed {
                reason: c.reason.clone().unwrap_or_else(|| failed.to_string()),
                message: c.message.clone().unwrap_or_default(),
            };
        }
    }
    if conditions.is_some_and(|cs| {
        cs.iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
    }) {
        return Poll::Ready;
    }
    Poll::Waiting(format!(
        "{} active, {} succeeded, {} failed",
        status.active.unwrap_or(0),
        status.succeeded.unwrap_or(0),
        status.failed.unwrap_or(0)
    ))
}

/// Established; names that were not accepted will never be.
pub(crate) fn crd_state(c: &CustomResourceDefinition) -> Poll {
    let conditions = c.status.as_ref().and_then(|s| s.conditions.as_ref());
    let find = |t: &str, s: &str| {
        conditions.and_then(|cs| cs.iter().find(|c| c.type_ == t && c.status == s))
    };
    if find("Established", "True").is_some() {
        return Poll::Ready;
    }
    if let Some(c) = find("NamesAccepted", "False") {
        return Poll::Failed {
            reason: c
                .reason
                .clone()
                .unwrap_or_else(|| "NamesNotAccepted".into()),
            message: c.message.clone().unwrap_or_default(),
        };
    }
    Poll::Waiting("not Established yet".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::Timing;
    use crate::kube::testing::fixtures::{self, Looks, event_list, job, pod, pod_list, warning};
    use crate::kube::testing::{Exchange, Scenario};
    use std::sync::{Arc, Mutex};

    const DEPLOY: &str = "/apis/apps/v1/namespaces/pulsewatch-dev/deployments/api";
    const JOB: &str = "/apis/batch/v1/namespaces/pulsewatch-dev/jobs/migrations-3f2a9c";

    fn engine(client: ::kube::Client) -> (Engine, Arc<Mutex<Vec<String>>>) {
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let e = Engine::new(client)
            .with_timing(Timing {
                poll: Duration::from_secs(2),
                log_lines: 3,
                ..Timing::default()
            })
            .with_progress(move |l| sink.lock().unwrap().push(l.to_string()));
        (e, lines)
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollout_is_done_only_after_observed_generation_catches_up() {
        let d = |gens, counts| {
            Exchange::get(DEPLOY).ok(fixtures::deployment(
                "pulsewatch-dev",
                "api",
                gens,
                2,
                counts,
            ))
        };
        let (client, mock) = Scenario::new()
            // The old ReplicaSet's numbers look perfect, but the controller has not seen
            // generation 2 yet: not done.
            .then(d((2, 1), (2, 2, 2)))
            .then(d((2, 2), (3, 1, 2)))
            .then(d((2, 2), (3, 2, 2)))
            .then(d((2, 2), (2, 2, 1)))
            .then(d((2, 2), (2, 2, 2)))
            .start();
        let (engine, lines) = engine(client);
        let started = Instant::now();
        engine
            .wait_ready(
                &[Target::new(TargetKind::Deployment, "pulsewatch-dev", "api")],
                Duration::from_secs(300),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        mock.finish().await;
        assert_eq!(started.elapsed(), Duration::from_secs(8));
        assert_eq!(
            *lines.lock().unwrap(),
            [
                "deployment pulsewatch-dev/api: waiting for the controller to observe generation 2",
                "deployment pulsewatch-dev/api: 1/2 replicas updated",
                "deployment pulsewatch-dev/api: 1 old replicas pending termination",
                "deployment pulsewatch-dev/api: 1/2 replicas available",
                "deployment pulsewatch-dev/api: ready",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_migrations_job_ends_the_wait_at_once_with_its_reason() {
        let labels = "batch.kubernetes.io/controller-uid=uid-migrations-3f2a9c";
        let (client, mock) = Scenario::new()
            .then(Exchange::get(JOB).ok(job("pulsewatch-dev", "migrations-3f2a9c", 1, 0, None)))
            .then(Exchange::get(JOB).ok(job(
                "pulsewatch-dev",
                "migrations-3f2a9c",
                0,
                2,
                Some(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")),
            )))
            .then(
                Exchange::get("/api/v1/namespaces/pulsewatch-dev/pods")
                    .query("labelSelector", labels)
                    .ok(pod_list(vec![pod(
                        "pulsewatch-dev",
                        "migrations-3f2a9c-7xk2p",
                        "flyway",
                        "localhost:5001/pulsewatch/migrations:dev",
                        Looks::Terminated { exit: 1, reason: "Error" },
                    )])),
            )
            .then(
                Exchange::get("/api/v1/namespaces/pulsewatch-dev/events")
                    .query("fieldSelector", "type=Warning")
                    .ok(event_list(vec![warning(
                        "pulsewatch-dev",
                        "Job",
                        "migrations-3f2a9c",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                        1,
                        "2026-11-26T05:21:10Z",
                    )])),
            )
            .then(
                Exchange::get("/api/v1/namespaces/pulsewatch-dev/pods/migrations-3f2a9c-7xk2p/log")
                    .query("container", "flyway")
                    .query("tailLines", "3")
                    .check(|seen| assert!(!seen.query.contains_key("previous"), "{seen}"))
                    .text("Migrating schema \"public\" to version \"7 - add alerts\"\nERROR: Migration V7__add_alerts.sql failed\nSQL State  : 42P07 relation \"alerts\" already exists\n"),
            )
            .start();
        let (engine, _) = engine(client);
        let mut target = Target::new(TargetKind::Job, "pulsewatch-dev", "migrations-3f2a9c");
        target.migrations = true;
        let started = Instant::now();
        let e = engine
            .wait_ready(
                &[target],
                Duration::from_secs(600),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(2),
            "no waiting for the deadline"
        );
        assert_eq!(e.id(), "migrations-failed");
        insta::assert_snapshot!(crate::ui::render_error(&e, false), @r#"
        error[migrations-failed]: the migrations Job pulsewatch-dev/migrations-3f2a9c failed
          job pulsewatch-dev/migrations-3f2a9c: failed: BackoffLimitExceeded: Job has reached the specified backoff limit
          pod migrations-3f2a9c-7xk2p container flyway: Error: exit 1
            | Migrating schema "public" to version "7 - add alerts"
            | ERROR: Migration V7__add_alerts.sql failed
            | SQL State  : 42P07 relation "alerts" already exists
          event Job/migrations-3f2a9c BackoffLimitExceeded: Job has reached the specified backoff limit

        hint: the log lines above are the migration's output; fix it and run `pulsedev up` again
        "#);
    }

    #[tokio::test(start_paused = true)]
    async fn any_other_failed_job_is_job_failed() {
        let (client, mock) = Scenario::new()
            .then(Exchange::get(JOB).ok(job(
                "pulsewatch-dev",
                "migrations-3f2a9c",
                0,
                1,
                Some((
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                )),
            )))
            .then(Exchange::get("/api/v1/namespaces/pulsewatch-dev/pods").ok(pod_list(vec![])))
            .then(Exchange::get("/api/v1/namespaces/pulsewatch-dev/events").ok(event_list(vec![])))
            .start();
        let (engine, _) = engine(client);
        let e = engine
            .wait_ready(
                &[Target::new(
                    TargetKind::Job,
                    "pulsewatch-dev",
                    "migrations-3f2a9c",
                )],
                Duration::from_secs(600),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "job-failed");
        assert_eq!(
            e.details[0],
            "job pulsewatch-dev/migrations-3f2a9c: failed: DeadlineExceeded: Job was active longer than specified deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ctrl_c_stops_a_wait_promptly() {
        let pending = || {
            Exchange::get(DEPLOY).ok(fixtures::deployment(
                "pulsewatch-dev",
                "api",
                (1, 1),
                1,
                (1, 1, 0),
            ))
        };
        let (client, mock) = Scenario::new().then(pending()).then(pending()).start();
        let (engine, _) = engine(client);
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            trigger.cancel();
        });
        let started = Instant::now();
        let e = engine
            .wait_ready(
                &[Target::new(TargetKind::Deployment, "pulsewatch-dev", "api")],
                Duration::from_secs(300),
                &cancel,
            )
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "interrupted");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    fn sts(status: serde_json::Value) -> StatefulSet {
        serde_json::from_value(status).unwrap()
    }

    #[test]
    fn statefulset_needs_ready_replicas_and_the_update_revision() {
        let s = |ready, revs| {
            sts(fixtures::statefulset(
                "pulsewatch-dev",
                "postgres",
                1,
                ready,
                revs,
            ))
        };
        assert_eq!(
            statefulset_state(&s(0, ("postgres-1", "postgres-1"))),
            Poll::Waiting("0/1 replicas ready".into())
        );
        assert_eq!(
            statefulset_state(&s(1, ("postgres-1", "postgres-2"))),
            Poll::Waiting("rolling out revision postgres-2: 0/1 replicas updated".into())
        );
        assert_eq!(
            statefulset_state(&s(1, ("postgres-2", "postgres-2"))),
            Poll::Ready
        );
        let mut behind = s(1, ("postgres-2", "postgres-2"));
        behind.metadata.generation = Some(2);
        assert!(
            matches!(statefulset_state(&behind), Poll::Waiting(w) if w.contains("generation 2"))
        );
    }

    #[test]
    fn daemonset_needs_every_scheduled_pod_updated_and_available() {
        let ds = |observed: i64, desired: i32, updated: i32, available: i32| -> DaemonSet {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "nginx-ingress", "namespace": "platform", "generation": 3},
                "status": {"observedGeneration": observed, "desiredNumberScheduled": desired,
                    "currentNumberScheduled": desired, "numberMisscheduled": 0, "numberReady": available,
                    "updatedNumberScheduled": updated, "numberAvailable": available}
            }))
            .unwrap()
        };
        assert!(matches!(daemonset_state(&ds(2, 1, 1, 1)), Poll::Waiting(_)));
        assert_eq!(
            daemonset_state(&ds(3, 2, 1, 1)),
            Poll::Waiting("1/2 pods updated".into())
        );
        assert_eq!(
            daemonset_state(&ds(3, 2, 2, 1)),
            Poll::Waiting("1/2 pods available".into())
        );
        assert_eq!(daemonset_state(&ds(3, 2, 2, 2)), Poll::Ready);
    }

    #[test]
    fn a_complete_job_is_ready_and_a_progress_deadline_is_final() {
        let j: Job = serde_json::from_value(job(
            "ns",
            "m",
            0,
            0,
            Some((
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            )),
        ))
        .unwrap();
        assert_eq!(job_state(&j), Poll::Ready);
        let mut d: Deployment =
            serde_json::from_value(fixtures::deployment("ns", "api", (1, 1), 1, (1, 1, 0)))
                .unwrap();
        d.status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()
            .push(k8s_openapi::api::apps::v1::DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some("ProgressDeadlineExceeded".into()),
                message: Some("ReplicaSet \"api-7c9f5d8b6\" has timed out progressing.".into()),
                ..Default::default()
            });
        assert!(
            matches!(deployment_state(&d), Poll::Failed { reason, .. } if reason == "ProgressDeadlineExceeded")
        );
    }

    #[test]
    fn targets_come_from_manifests_and_the_migrations_job_is_marked() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\n---\napiVersion: batch/v1\nkind: Job\nmetadata: {name: migrations-1, namespace: pulsewatch-dev, labels: {app.kubernetes.io/component: migrations}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: api}\n";
        let ms = crate::kube::parse("x", text).unwrap();
        let t = Target::from_manifests(&ms, "pulsewatch-dev");
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].label(), "deployment pulsewatch-dev/api");
        assert!(t[1].migrations);
    }
}
