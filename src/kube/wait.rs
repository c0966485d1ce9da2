//! Waiting until applied objects are really ready, not merely created: Deployment
//! rollout (like `kubectl rollout status`), StatefulSet, DaemonSet, Job (Complete or
//! Failed, whichever comes first), CRD Established, cert-manager Certificate (Ready for
//! the current generation). Every wait has a deadline, reports progress when it changes,
//! stops at once on cancellation, and ends early when a failure has settled (fail fast,
//! see docs/DECISIONS.md "Waits").
//!
//! Owns: the readiness rules (pure functions over the API objects) and the polling loop.
//! Must not change anything on the server, with one bounded exception: a StatefulSet pod
//! left not Ready on a superseded revision, which the StatefulSet controller never
//! replaces by itself (kubernetes/kubernetes#67250), is deleted once per pod and
//! revision. What is wrong when a wait fails is `diagnose`'s business.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ::kube::Api;
use ::kube::api::{DeleteParams, DynamicObject, ListParams};
use ::kube::core::ApiResource;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
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
    /// cert-manager's Certificate (cert-manager.io/v1).
    Certificate,
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
            ("cert-manager.io/v1", "Certificate") => Some(TargetKind::Certificate),
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
            TargetKind::Certificate => "certificate",
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
    /// Not failed for good by its own status, but its pods (or their creation) have
    /// failed the same way for `settled`: reported now instead of at the deadline.
    Stuck {
        target: Target,
        reason: String,
        message: String,
        selector: Option<String>,
        settled: Duration,
    },
    TimedOut {
        target: Target,
        last: String,
        selector: Option<String>,
    },
}

/// What one read of a target tells the wait, beyond its state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// The label selector of its pods.
    pub selector: Option<String>,
    /// How many pods it should have now; fewer plus a FailedCreate event is a failure.
    pub desired_pods: Option<i32>,
    /// A Deployment's `ReplicaFailure=True` message (its ReplicaSet could not create pods).
    pub replica_failure: Option<String>,
    /// A StatefulSet rolling out whose old pods the controller may never replace.
    pub rollout: Option<Rollout>,
}

/// A StatefulSet rolling update under `OrderedReady` (see [`stuck_pods`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rollout {
    pub update_revision: String,
    /// Pods with a lower ordinal stay on their revision (rollingUpdate.partition).
    pub partition: i32,
}

/// The label the StatefulSet controller puts on each pod: the revision it was made from
/// (kubernetes pkg/controller/statefulset/stateful_set_utils.go, `StatefulSetRevisionLabel`).
const REVISION_LABEL: &str = "controller-revision-hash";

impl Engine {
    /// Waits until every target is ready, all at once, for at most `timeout`.
    ///
    /// Ends early when a target fails for good (a Failed Job: `migrations-failed` for the
    /// migrations Job, else `job-failed`) or when its pods have failed the same way for
    /// `timing.settle` (image pulls, crash loops, container config errors, pods the
    /// controller cannot create). On failure or timeout the error carries a diagnosis of
    /// each target that is not ready (pods, containers, Warning events, the log tail of
    /// crashing containers). Ctrl-C (`cancel`) ends it at once with `interrupted`.
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
                    failed @ (Outcome::Failed { .. } | Outcome::Stuck { .. }) => {
                        return vec![failed];
                    }
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
        let started = Instant::now();
        let mut last = String::new();
        // When the current failure signal was first seen (reset when a look finds none).
        let mut failing_since: Option<Instant> = None;
        // (pod, revision) pairs already deleted: each at most once.
        let mut unstuck: BTreeSet<(String, String)> = BTreeSet::new();
        loop {
            let (poll, facts) = self.look(target).await;
            let selector = facts.selector.clone();
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
            if let Some(rollout) = &facts.rollout {
                self.unstick(target, &facts, rollout, &mut unstuck).await;
            }
            // Only kinds with pods have a selector (and a Deployment a ReplicaFailure):
            // for the others the signal is always none.
            if now - started >= self.timing.probe_after {
                match self.failure_signal(target, &facts).await {
                    Some((reason, message)) => {
                        let since = *failing_since.get_or_insert(now);
                        if now - since >= self.timing.settle {
                            return Outcome::Stuck {
                                target: target.clone(),
                                reason,
                                message,
                                selector,
                                settled: now - since,
                            };
                        }
                    }
                    None => failing_since = None,
                }
            }
            tokio::time::sleep(self.timing.poll.min(deadline - now)).await;
        }
    }

    /// Deletes the pods of a StatefulSet that the controller will never replace: under
    /// the default `OrderedReady` policy it waits for every pod to be Running and Ready
    /// before it replaces any pod on an old revision, so a pod that is not Ready on a
    /// superseded template blocks the rollout for ever (kubernetes/kubernetes#67250;
    /// stateful_set_control.go: "If we have a Pod that has been created but is not running
    /// and ready we can not make progress"). The documented way out is to delete it
    /// (kubernetes.io "StatefulSets", Forced rollback). Tilt avoids the trap by rewriting
    /// every StatefulSet to `podManagementPolicy: Parallel` (tilt-dev/tilt
    /// internal/k8s/statefulset.go, tilt#1962); pulsedev applies the charts as rendered
    /// and deletes the stuck pod instead, once per pod and revision, and says so.
    async fn unstick(
        &self,
        target: &Target,
        facts: &Facts,
        rollout: &Rollout,
        done: &mut BTreeSet<(String, String)>,
    ) {
        let Some(selector) = &facts.selector else {
            return;
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &target.namespace);
        let pods = match api.list(&ListParams::default().labels(selector)).await {
            Ok(list) => list.items,
            Err(_) => return,
        };
        for pod in stuck_pods(&target.name, &pods, rollout) {
            if !done.insert((pod.clone(), rollout.update_revision.clone())) {
                continue;
            }
            let line = match api.delete(&pod, &DeleteParams::default()).await {
                Ok(_) => format!(
                    "{}: deleted pod {pod}: not ready on an old revision, which the StatefulSet \
                     controller does not replace (kubernetes#67250); it comes back as {}",
                    target.label(),
                    rollout.update_revision
                ),
                Err(e) => format!(
                    "{}: could not delete pod {pod}, stuck on an old revision: {}",
                    target.label(),
                    describe(&e)
                ),
            };
            self.say(&line);
        }
    }

    /// Reads the target once: its state and what the wait needs to know besides.
    async fn look(&self, t: &Target) -> (Poll, Facts) {
        let client = self.client.clone();
        let ns = t.namespace.as_str();
        let got = match t.kind {
            TargetKind::Deployment => Api::<Deployment>::namespaced(client, ns)
                .get_opt(&t.name)
                .await
                .map(|o| o.map(|d| (deployment_state(&d), deployment_facts(&d)))),
            TargetKind::StatefulSet => Api::<StatefulSet>::namespaced(client, ns)
                .get_opt(&t.name)
                .await
                .map(|o| o.map(|s| (statefulset_state(&s), statefulset_facts(&s)))),
            TargetKind::DaemonSet => Api::<DaemonSet>::namespaced(client, ns)
                .get_opt(&t.name)
                .await
                .map(|o| {
                    o.map(|d| {
                        let facts = Facts {
                            selector: d.spec.as_ref().map(|s| selector(&s.selector)),
                            desired_pods: d.status.as_ref().map(|s| s.desired_number_scheduled),
                            ..Facts::default()
                        };
                        (daemonset_state(&d), facts)
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
                        let facts = Facts {
                            selector: sel,
                            // While it runs, a Job has at least one pod.
                            desired_pods: Some(1),
                            ..Facts::default()
                        };
                        (job_state(&j), facts)
                    })
                }),
            TargetKind::CustomResourceDefinition => Api::<CustomResourceDefinition>::all(client)
                .get_opt(&t.name)
                .await
                .map(|o| o.map(|c| (crd_state(&c), Facts::default()))),
            TargetKind::Certificate => {
                let ar = ApiResource {
                    group: "cert-manager.io".into(),
                    version: "v1".into(),
                    api_version: "cert-manager.io/v1".into(),
                    kind: "Certificate".into(),
                    plural: "certificates".into(),
                };
                Api::<DynamicObject>::namespaced_with(client, ns, &ar)
                    .get_opt(&t.name)
                    .await
                    .map(|o| o.map(|c| (certificate_state(&c), Facts::default())))
            }
        };
        match got {
            Ok(Some((poll, mut facts))) => {
                facts.selector = facts.selector.filter(|s| !s.is_empty());
                (poll, facts)
            }
            Ok(None) => (Poll::Waiting("does not exist yet".into()), Facts::default()),
            // Transient API trouble: keep polling, and say what was seen.
            Err(e) => (
                Poll::Waiting(format!("cannot read it: {}", describe(&e))),
                Facts::default(),
            ),
        }
    }
}

fn deployment_facts(d: &Deployment) -> Facts {
    let replica_failure = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
        })
        .map(|c| c.message.clone().unwrap_or_default());
    Facts {
        selector: d.spec.as_ref().map(|s| selector(&s.selector)),
        desired_pods: d.spec.as_ref().map(|s| s.replicas.unwrap_or(1)),
        replica_failure,
        rollout: None,
    }
}

/// A StatefulSet is worth unsticking when the controller saw the latest spec, its update
/// revision moved away from the current one, it updates pods itself (RollingUpdate) and
/// one at a time in order (OrderedReady): with `Parallel` the controller replaces an
/// unhealthy old pod by itself (stateful_set_control.go `updateStatefulSet`), and with
/// `OnDelete` replacing pods is the user's call.
fn statefulset_facts(s: &StatefulSet) -> Facts {
    let spec = s.spec.clone().unwrap_or_default();
    let status = s.status.clone().unwrap_or_default();
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0);
    let ordered = spec
        .pod_management_policy
        .as_deref()
        .unwrap_or("OrderedReady")
        == "OrderedReady";
    let rolling = strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate";
    let rollout = match &status.update_revision {
        Some(update)
            if observed
                && ordered
                && rolling
                && status.current_revision.as_ref() != Some(update) =>
        {
            Some(Rollout {
                update_revision: update.clone(),
                partition: strategy
                    .rolling_update
                    .and_then(|r| r.partition)
                    .unwrap_or(0),
            })
        }
        _ => None,
    };
    Facts {
        selector: Some(selector(&spec.selector)),
        desired_pods: Some(spec.replicas.unwrap_or(1)),
        replica_failure: None,
        rollout,
    }
}

/// The pods of StatefulSet `name` the controller will not replace by itself: on a
/// revision other than the update revision, at or above the partition, not Ready, and
/// not already terminating. A pod without the revision label has no revision to judge.
pub(crate) fn stuck_pods(name: &str, pods: &[Pod], rollout: &Rollout) -> Vec<String> {
    let prefix = format!("{name}-");
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let pod = p.metadata.name.clone()?;
            let ordinal: i32 = pod.strip_prefix(&prefix)?.parse().ok()?;
            let revision = p.metadata.labels.as_ref()?.get(REVISION_LABEL)?;
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            (ordinal >= rollout.partition && *revision != rollout.update_revision && !ready)
                .then_some(pod)
        })
        .collect()
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

/// Observed the latest spec, every replica ready (and available), no extra replica left
/// from a scale-down, and the rollout done: current revision == update revision (or the
/// partition reached). As kubectl's StatefulSetStatusViewer (kubectl
/// pkg/polymorphichelpers/rollout_status.go) and kstatus' `stsConditions` (cli-utils
/// pkg/kstatus/status/core.go: `status.replicas > spec.replicas` is "Pending
/// termination"); `OnDelete` replaces pods only when someone deletes them, so it is done
/// once its pods are ready (both tools treat it so).
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
    if status.replicas > desired {
        return Poll::Waiting(format!(
            "scaling down: {} extra replicas pending termination",
            status.replicas - desired
        ));
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

/// Observed the latest spec; every node that should run a pod runs one, updated and
/// available (kstatus `daemonsetConditions`, kubectl's DaemonSetStatusViewer). With
/// `updateStrategy: OnDelete` the controller makes new pods only where old ones were
/// deleted, so `updatedNumberScheduled` stays behind after a template change until
/// someone deletes them: kubectl refuses to wait on it ("rollout status is only available
/// for RollingUpdate"); pulsedev counts it ready once every pod is available, whatever
/// its template, instead of waiting for ever.
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
    let current = status.current_number_scheduled;
    if current < desired {
        return Poll::Waiting(format!("{current}/{desired} pods scheduled"));
    }
    let on_delete = d
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        == Some("OnDelete");
    let updated = status.updated_number_scheduled.unwrap_or(0);
    if updated < desired && !on_delete {
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

/// cert-manager's own test of an issued Certificate: `Ready=True` whose
/// `observedGeneration` is at least the Certificate's generation, and not `Issuing`
/// (cert-manager test/e2e/framework/helper/certificates.go
/// `WaitForCertificateReadyAndDoneIssuing`, with pkg/api/util/conditions.go
/// `CertificateHasConditionWithObservedGeneration`). A Secret that already holds a
/// certificate proves nothing after a spec change: it is the old one until re-issued.
pub(crate) fn certificate_state(c: &DynamicObject) -> Poll {
    let generation = c.metadata.generation.unwrap_or(0);
    let conditions = c.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let find = |t: &str| conditions.iter().find(|c| c["type"] == t);
    let Some(ready) = find("Ready") else {
        return Poll::Waiting("not issued yet".into());
    };
    let observed = ready["observedGeneration"].as_i64().unwrap_or(0);
    if ready["status"] != "True" {
        let reason = ready["reason"].as_str().unwrap_or("NotReady");
        return match ready["message"].as_str() {
            Some(m) if !m.is_empty() => Poll::Waiting(format!("{reason}: {m}")),
            _ => Poll::Waiting(reason.to_string()),
        };
    }
    if observed < generation {
        return Poll::Waiting(format!(
            "waiting for cert-manager to issue generation {generation}"
        ));
    }
    if find("Issuing").is_some_and(|i| i["status"] == "True") {
        return Poll::Waiting("issuing".into());
    }
    Poll::Ready
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

    /// The conditions kube-controller-manager writes on a Deployment that finished its
    /// rollout (kubernetes pkg/controller/deployment/sync.go `calculateStatus`:
    /// Available/MinimumReplicasAvailable "Deployment has minimum availability.";
    /// progress.go `syncRolloutStatus`: Progressing/NewReplicaSetAvailable
    /// `ReplicaSet "<name>" has successfully progressed.`).
    fn rolled_out(replicas: i32) -> Deployment {
        let mut d: Deployment = serde_json::from_value(fixtures::deployment(
            "pulsewatch-dev",
            "api",
            (3, 3),
            replicas,
            (replicas, replicas, replicas),
        ))
        .unwrap();
        d.status.as_mut().unwrap().conditions = Some(vec![
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            ),
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                "ReplicaSet \"api-7c9f5d8b6\" has successfully progressed.",
            ),
        ]);
        d
    }

    fn condition(
        t: &str,
        status: &str,
        reason: &str,
        message: &str,
    ) -> k8s_openapi::api::apps::v1::DeploymentCondition {
        k8s_openapi::api::apps::v1::DeploymentCondition {
            type_: t.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: Some(fixtures::time("2026-11-26T05:20:00Z")),
            last_update_time: Some(fixtures::time("2026-11-26T05:20:00Z")),
        }
    }

    #[test]
    fn a_rolled_out_deployment_with_the_controllers_conditions_is_ready() {
        assert_eq!(deployment_state(&rolled_out(2)), Poll::Ready);
        // progress.go sets Progressing=False/ProgressDeadlineExceeded once
        // progressDeadlineSeconds pass without progress: final, whatever the counts say.
        let mut d = rolled_out(2);
        d.status.as_mut().unwrap().conditions.as_mut().unwrap()[1] = condition(
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            "ReplicaSet \"api-7c9f5d8b6\" has timed out progressing.",
        );
        assert_eq!(
            deployment_state(&d),
            Poll::Failed {
                reason: "ProgressDeadlineExceeded".into(),
                message: "ReplicaSet \"api-7c9f5d8b6\" has timed out progressing.".into()
            }
        );
        // kubectl looks at the condition only once the generation is observed.
        d.status.as_mut().unwrap().observed_generation = Some(2);
        assert!(matches!(deployment_state(&d), Poll::Waiting(w) if w.contains("generation 3")));
    }

    #[test]
    fn every_waitable_kind_is_known_by_its_api_version() {
        for (av, kind, want) in [
            ("apps/v1", "Deployment", TargetKind::Deployment),
            ("apps/v1", "StatefulSet", TargetKind::StatefulSet),
            ("apps/v1", "DaemonSet", TargetKind::DaemonSet),
            ("batch/v1", "Job", TargetKind::Job),
            (
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                TargetKind::CustomResourceDefinition,
            ),
            ("cert-manager.io/v1", "Certificate", TargetKind::Certificate),
        ] {
            assert_eq!(TargetKind::from_kind(av, kind), Some(want), "{av} {kind}");
        }
        assert_eq!(TargetKind::from_kind("apps/v1beta1", "Deployment"), None);
        assert_eq!(TargetKind::from_kind("v1", "Service"), None);
        let words: Vec<&str> = [
            TargetKind::Deployment,
            TargetKind::StatefulSet,
            TargetKind::DaemonSet,
            TargetKind::Job,
            TargetKind::CustomResourceDefinition,
            TargetKind::Certificate,
        ]
        .iter()
        .map(|k| k.word())
        .collect();
        assert_eq!(
            words,
            [
                "deployment",
                "statefulset",
                "daemonset",
                "job",
                "crd",
                "certificate"
            ]
        );
    }

    #[test]
    fn a_certificate_is_a_target_of_the_normal_wait() {
        let text = "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: pulsewatch-tls}\nspec: {secretName: pulsewatch-tls, dnsNames: [app.pulsewatch.localhost], issuerRef: {name: pulsewatch-local-ca, kind: ClusterIssuer}}\n";
        let ms = crate::kube::parse("x", text).unwrap();
        let t = Target::from_manifests(&ms, "pulsewatch-dev");
        assert_eq!(
            t,
            [Target::new(
                TargetKind::Certificate,
                "pulsewatch-dev",
                "pulsewatch-tls"
            )]
        );
    }

    /// A Certificate as cert-manager's controllers write it: the readiness controller
    /// sets Ready with the generation it judged (cert-manager
    /// pkg/controller/certificates/readiness), the trigger controller sets Issuing.
    fn certificate(generation: i64, conditions: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "pulsewatch-tls", "namespace": "pulsewatch-dev", "generation": generation},
            "spec": {"secretName": "pulsewatch-tls"},
            "status": {"conditions": conditions, "notAfter": "2027-02-24T00:00:00Z", "revision": 1},
        }))
        .unwrap()
    }

    #[test]
    fn a_certificate_is_ready_only_for_its_current_generation_and_not_while_issuing() {
        let ready = |observed: i64| {
            serde_json::json!({"type": "Ready", "status": "True", "reason": "Ready",
                "message": "Certificate is up to date and has not expired",
                "observedGeneration": observed, "lastTransitionTime": "2026-11-26T05:20:00Z"})
        };
        // The spec changed (generation 2) but Ready still speaks of generation 1: the
        // Secret holds the old certificate.
        assert_eq!(
            certificate_state(&certificate(2, serde_json::json!([ready(1)]))),
            Poll::Waiting("waiting for cert-manager to issue generation 2".into())
        );
        assert_eq!(
            certificate_state(&certificate(2, serde_json::json!([ready(2)]))),
            Poll::Ready
        );
        let issuing = serde_json::json!({"type": "Issuing", "status": "True", "reason": "Reissuing",
            "message": "Re-issuance forced by unit test case", "observedGeneration": 2});
        assert_eq!(
            certificate_state(&certificate(2, serde_json::json!([ready(2), issuing]))),
            Poll::Waiting("issuing".into())
        );
        let not_ready = serde_json::json!({"type": "Ready", "status": "False", "reason": "DoesNotExist",
            "message": "Issuing certificate as Secret does not exist", "observedGeneration": 1});
        assert_eq!(
            certificate_state(&certificate(1, serde_json::json!([not_ready]))),
            Poll::Waiting("DoesNotExist: Issuing certificate as Secret does not exist".into())
        );
        assert_eq!(
            certificate_state(&certificate(1, serde_json::json!([]))),
            Poll::Waiting("not issued yet".into())
        );
        // A condition without a message says its reason alone.
        let bare = serde_json::json!({"type": "Ready", "status": "Unknown", "reason": "Pending", "message": ""});
        assert_eq!(
            certificate_state(&certificate(1, serde_json::json!([bare]))),
            Poll::Waiting("Pending".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_certificate_wait_ends_when_ready_speaks_of_its_generation() {
        const CERT: &str =
            "/apis/cert-manager.io/v1/namespaces/pulsewatch-dev/certificates/pulsewatch-tls";
        let ready = |observed: i64| {
            serde_json::json!([{"type": "Ready", "status": "True", "reason": "Ready",
                "message": "Certificate is up to date and has not expired", "observedGeneration": observed}])
        };
        let (client, mock) = Scenario::new()
            .then(Exchange::get(CERT).ok(certificate(2, ready(1))))
            .then(Exchange::get(CERT).ok(certificate(2, ready(2))))
            .start();
        let (engine, lines) = engine(client);
        engine
            .wait_ready(
                &[Target::new(
                    TargetKind::Certificate,
                    "pulsewatch-dev",
                    "pulsewatch-tls",
                )],
                Duration::from_secs(300),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        mock.finish().await;
        assert_eq!(
            *lines.lock().unwrap(),
            [
                "certificate pulsewatch-dev/pulsewatch-tls: waiting for cert-manager to issue generation 2",
                "certificate pulsewatch-dev/pulsewatch-tls: ready",
            ]
        );
    }

    /// A partitioned rolling update of 4 replicas with `partition: 1`, as the StatefulSet
    /// controller reports it (kubernetes pkg/controller/statefulset/stateful_set_control.go:
    /// pods with an ordinal below the partition keep the current revision, so
    /// `currentRevision` never becomes the update revision, `completeRollingUpdate` needing
    /// `updatedReplicas == replicas`). Done once every pod at or above the partition is
    /// updated, as kubectl's StatefulSetStatusViewer ("partitioned roll out complete") and
    /// kstatus (`updatedReplicas < replicas - partition` is in progress) have it.
    #[test]
    fn a_partitioned_statefulset_is_ready_once_the_pods_above_the_partition_are_updated() {
        let rollout = |updated: i32| {
            let mut s = sts(fixtures::statefulset(
                "pulsewatch-dev",
                "postgres",
                4,
                4,
                ("postgres-5d8f7c9b4", "postgres-6b9d4f8c7"),
            ));
            s.spec.as_mut().unwrap().update_strategy =
                Some(k8s_openapi::api::apps::v1::StatefulSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(
                        k8s_openapi::api::apps::v1::RollingUpdateStatefulSetStrategy {
                            partition: Some(1),
                            max_unavailable: None,
                        },
                    ),
                });
            let status = s.status.as_mut().unwrap();
            status.updated_replicas = Some(updated);
            status.current_replicas = Some(4 - updated);
            s
        };
        assert_eq!(
            statefulset_state(&rollout(2)),
            Poll::Waiting("2/3 replicas updated (partitioned)".into())
        );
        assert_eq!(statefulset_state(&rollout(3)), Poll::Ready);
    }

    /// With `minReadySeconds` a pod is Ready before it counts as available: the controller
    /// writes readyReplicas 1, availableReplicas 0 until the time has passed
    /// (stateful_set_control.go `computeReplicaStatus`, podutil.IsPodAvailable).
    #[test]
    fn a_statefulset_is_not_ready_until_its_ready_pods_are_available() {
        let mut s = sts(fixtures::statefulset(
            "pulsewatch-dev",
            "postgres",
            1,
            1,
            ("postgres-5d8f7c9b4", "postgres-5d8f7c9b4"),
        ));
        s.spec.as_mut().unwrap().min_ready_seconds = Some(30);
        s.status.as_mut().unwrap().available_replicas = Some(0);
        assert_eq!(
            statefulset_state(&s),
            Poll::Waiting("0/1 replicas available".into())
        );
        s.status.as_mut().unwrap().available_replicas = Some(1);
        assert_eq!(statefulset_state(&s), Poll::Ready);
    }

    #[test]
    fn a_statefulset_scaling_down_is_not_ready_until_the_extra_pods_are_gone() {
        // kube-controller-manager's statefulset status while 3 → 1: status.replicas
        // counts the pods still there (kubernetes pkg/controller/statefulset
        // stateful_set_control.go `computeReplicaStatus`).
        let mut s = sts(fixtures::statefulset(
            "pulsewatch-dev",
            "postgres",
            1,
            3,
            ("postgres-5d8f7c9b4", "postgres-5d8f7c9b4"),
        ));
        s.status.as_mut().unwrap().replicas = 3;
        s.status.as_mut().unwrap().current_replicas = Some(3);
        assert_eq!(
            statefulset_state(&s),
            Poll::Waiting("scaling down: 2 extra replicas pending termination".into())
        );
        s.status.as_mut().unwrap().replicas = 1;
        assert_eq!(statefulset_state(&s), Poll::Ready);
    }

    #[test]
    fn an_on_delete_statefulset_is_ready_once_its_pods_are() {
        let mut s = sts(fixtures::statefulset(
            "pulsewatch-dev",
            "postgres",
            1,
            1,
            ("postgres-1", "postgres-2"),
        ));
        s.spec.as_mut().unwrap().update_strategy =
            Some(k8s_openapi::api::apps::v1::StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                rolling_update: None,
            });
        assert_eq!(statefulset_state(&s), Poll::Ready);
        s.status.as_mut().unwrap().ready_replicas = Some(0);
        assert_eq!(
            statefulset_state(&s),
            Poll::Waiting("0/1 replicas ready".into())
        );
    }

    /// The status the daemonset controller writes after a template change (kubernetes
    /// pkg/controller/daemon/daemon_controller.go `updateDaemonSetStatus`): with OnDelete
    /// the old pod keeps running, so updatedNumberScheduled stays 0.
    fn daemonset(strategy: &str, updated: i32, available: i32) -> DaemonSet {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "nginx-ingress", "namespace": "platform", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "nginx-ingress"}},
                "updateStrategy": {"type": strategy},
                "template": {"metadata": {"labels": {"app": "nginx-ingress"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx/nginx-ingress:5.2.1"}]}}},
            "status": {"observedGeneration": 2, "desiredNumberScheduled": 1,
                "currentNumberScheduled": 1, "numberMisscheduled": 0, "numberReady": available,
                "updatedNumberScheduled": updated, "numberAvailable": available}
        }))
        .unwrap()
    }

    #[test]
    fn an_on_delete_daemonset_is_ready_with_its_old_pods_available() {
        assert_eq!(daemonset_state(&daemonset("OnDelete", 0, 1)), Poll::Ready);
        assert_eq!(
            daemonset_state(&daemonset("OnDelete", 0, 0)),
            Poll::Waiting("0/1 pods available".into())
        );
        assert_eq!(
            daemonset_state(&daemonset("RollingUpdate", 0, 1)),
            Poll::Waiting("0/1 pods updated".into())
        );
        let mut unscheduled = daemonset("RollingUpdate", 1, 1);
        unscheduled
            .status
            .as_mut()
            .unwrap()
            .current_number_scheduled = 0;
        assert_eq!(
            daemonset_state(&unscheduled),
            Poll::Waiting("0/1 pods scheduled".into())
        );
    }

    const STS: &str = "/apis/apps/v1/namespaces/pulsewatch-dev/statefulsets/postgres";
    const PODS: &str = "/api/v1/namespaces/pulsewatch-dev/pods";
    const EVENTS: &str = "/api/v1/namespaces/pulsewatch-dev/events";

    /// A pod of StatefulSet postgres made from `revision`.
    fn sts_pod(name: &str, revision: &str, looks: Looks<'_>) -> k8s_openapi::api::core::v1::Pod {
        let mut p = pod("pulsewatch-dev", name, "postgres", "postgres:17", looks);
        p.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(REVISION_LABEL.into(), revision.into());
        p
    }

    #[tokio::test(start_paused = true)]
    async fn a_statefulset_pod_stuck_on_a_bad_revision_is_deleted_once() {
        // Revision 6b9 was bad (crash loop); the template is fixed (update revision 5d8),
        // but under OrderedReady the controller waits for postgres-0 to become Ready
        // before it replaces it: it never will (kubernetes#67250).
        let rolling = || {
            let mut s = fixtures::statefulset(
                "pulsewatch-dev",
                "postgres",
                1,
                0,
                ("postgres-6b9c7d8f5", "postgres-5d8f7c9b4"),
            );
            s["metadata"]["generation"] = serde_json::json!(3);
            s["status"]["observedGeneration"] = serde_json::json!(3);
            Exchange::get(STS).ok(s)
        };
        let stuck = || {
            Exchange::get(PODS)
                .query("labelSelector", "app.kubernetes.io/name=postgres")
                .ok(pod_list(vec![sts_pod(
                    "postgres-0",
                    "postgres-6b9c7d8f5",
                    Looks::CrashLoop {
                        restarts: 4,
                        last_exit: 1,
                    },
                )]))
        };
        let (client, mock) = Scenario::new()
            .then(rolling())
            .then(stuck())
            .then(
                Exchange::delete(&format!("{PODS}/postgres-0")).ok(serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Success"})),
            )
            // The same pod still shows (graceful termination): not deleted twice.
            .then(rolling())
            .then(stuck())
            .then(Exchange::get(STS).ok(fixtures::statefulset(
                "pulsewatch-dev",
                "postgres",
                1,
                1,
                ("postgres-5d8f7c9b4", "postgres-5d8f7c9b4"),
            )))
            .start();
        let (engine, lines) = engine(client);
        engine
            .wait_ready(
                &[Target::new(
                    TargetKind::StatefulSet,
                    "pulsewatch-dev",
                    "postgres",
                )],
                Duration::from_secs(300),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        mock.finish().await;
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(
            lines[1],
            "statefulset pulsewatch-dev/postgres: deleted pod postgres-0: not ready on an old revision, which the StatefulSet controller does not replace (kubernetes#67250); it comes back as postgres-5d8f7c9b4"
        );
    }

    #[test]
    fn only_unready_pods_on_an_old_revision_at_or_above_the_partition_are_stuck() {
        let rollout = Rollout {
            update_revision: "postgres-new".into(),
            partition: 1,
        };
        let crash = || Looks::CrashLoop {
            restarts: 2,
            last_exit: 1,
        };
        let mut terminating = sts_pod("postgres-3", "postgres-old", crash());
        terminating.metadata.deletion_timestamp = Some(fixtures::time("2026-11-26T05:20:00Z"));
        let mut unlabelled = sts_pod("postgres-4", "postgres-old", crash());
        unlabelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(REVISION_LABEL);
        let pods = vec![
            sts_pod("postgres-0", "postgres-old", crash()),
            sts_pod("postgres-1", "postgres-old", crash()),
            sts_pod("postgres-2", "postgres-old", Looks::Running),
            terminating,
            unlabelled,
            sts_pod("postgres-5", "postgres-new", crash()),
            sts_pod("postgres-6", "postgres-old", crash()),
        ];
        assert_eq!(
            stuck_pods("postgres", &pods, &rollout),
            ["postgres-1", "postgres-6"]
        );
    }

    #[test]
    fn only_an_ordered_rolling_statefulset_with_a_new_revision_is_watched_for_stuck_pods() {
        let base = || {
            sts(fixtures::statefulset(
                "pulsewatch-dev",
                "postgres",
                1,
                0,
                ("postgres-old", "postgres-new"),
            ))
        };
        assert_eq!(
            statefulset_facts(&base()).rollout,
            Some(Rollout {
                update_revision: "postgres-new".into(),
                partition: 0
            })
        );
        let mut parallel = base();
        parallel.spec.as_mut().unwrap().pod_management_policy = Some("Parallel".into());
        assert_eq!(statefulset_facts(&parallel).rollout, None);
        let mut on_delete = base();
        on_delete.spec.as_mut().unwrap().update_strategy =
            Some(k8s_openapi::api::apps::v1::StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                rolling_update: None,
            });
        assert_eq!(statefulset_facts(&on_delete).rollout, None);
        let mut unobserved = base();
        unobserved.metadata.generation = Some(2);
        assert_eq!(statefulset_facts(&unobserved).rollout, None);
        let done = sts(fixtures::statefulset(
            "pulsewatch-dev",
            "postgres",
            1,
            1,
            ("postgres-new", "postgres-new"),
        ));
        assert_eq!(statefulset_facts(&done).rollout, None);
        assert_eq!(statefulset_facts(&done).desired_pods, Some(1));
    }

    fn pulling() -> Looks<'static> {
        Looks::Waiting {
            reason: "ImagePullBackOff",
            message: "Back-off pulling image \"localhost:5001/pulsewatch/api:0000dead\"",
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_image_pull_back_off_that_persists_fails_the_wait_after_the_settle_time() {
        let waiting = || {
            Exchange::get(DEPLOY).ok(fixtures::deployment(
                "pulsewatch-dev",
                "api",
                (1, 1),
                1,
                (1, 1, 0),
            ))
        };
        let pods = || {
            Exchange::get(PODS)
                .query("labelSelector", "app.kubernetes.io/name=api")
                .ok(pod_list(vec![pod(
                    "pulsewatch-dev",
                    "api-7c9f5d8b6-x2kqp",
                    "api",
                    "localhost:5001/pulsewatch/api:0000dead",
                    pulling(),
                )]))
        };
        let mut scenario = Scenario::new();
        // 0..8 s: the Deployment alone; from 10 s (probe_after) its pods too, until the
        // failure has lasted 30 s (settle): 10, 12, … 40.
        for _ in 0..5 {
            scenario = scenario.then(waiting());
        }
        for _ in 0..16 {
            scenario = scenario.then(waiting()).then(pods());
        }
        let (client, mock) = scenario
            .then(pods())
            .then(Exchange::get(EVENTS).ok(event_list(vec![warning(
                "pulsewatch-dev",
                "Pod",
                "api-7c9f5d8b6-x2kqp",
                "Failed",
                "Failed to pull image \"localhost:5001/pulsewatch/api:0000dead\": rpc error: code = NotFound desc = failed to pull and unpack image \"localhost:5001/pulsewatch/api:0000dead\": not found",
                3,
                "2026-11-26T05:21:00Z",
            )])))
            .start();
        let (engine, _) = engine(client);
        let started = Instant::now();
        let e = engine
            .wait_ready(
                &[Target::new(TargetKind::Deployment, "pulsewatch-dev", "api")],
                Duration::from_secs(300),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(started.elapsed(), Duration::from_secs(40));
        assert_eq!(e.id(), "image-pull-failed");
        assert_eq!(
            e.details[0],
            "deployment pulsewatch-dev/api: failing for 30s: ImagePullBackOff: pod api-7c9f5d8b6-x2kqp container api: Back-off pulling image \"localhost:5001/pulsewatch/api:0000dead\""
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_that_recovers_within_the_settle_time_is_waited_out() {
        let deploy = |available| {
            Exchange::get(DEPLOY).ok(fixtures::deployment(
                "pulsewatch-dev",
                "api",
                (1, 1),
                2,
                (2, 2, available),
            ))
        };
        let pods = |crashing: bool| {
            let looks = if crashing {
                Looks::CrashLoop {
                    restarts: 1,
                    last_exit: 1,
                }
            } else {
                Looks::Running
            };
            Exchange::get(PODS).ok(pod_list(vec![
                pod(
                    "pulsewatch-dev",
                    "api-7c9f5d8b6-m4n7r",
                    "api",
                    "localhost:5001/pulsewatch/api:dev",
                    Looks::Running,
                ),
                pod(
                    "pulsewatch-dev",
                    "api-7c9f5d8b6-x2kqp",
                    "api",
                    "localhost:5001/pulsewatch/api:dev",
                    looks,
                ),
            ]))
        };
        let mut scenario = Scenario::new();
        for _ in 0..5 {
            scenario = scenario.then(deploy(1));
        }
        // Crashing from 10 s to 28 s (postgres not up yet), healthy at 30 s, crashing
        // again from 32 s: the 30 s count starts again there, so nothing fails before
        // 62 s, and at 60 s the Deployment is available.
        for t in (10..=58).step_by(2) {
            scenario = scenario.then(deploy(1)).then(pods(t != 30));
        }
        let (client, mock) = scenario.then(deploy(2)).start();
        let (engine, _) = engine(client);
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
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    /// What the StatefulSet controller records when admission refuses its pod
    /// (kubernetes pkg/controller/statefulset/stateful_pod_control.go
    /// `recordPodEvent`: "create Pod %s in StatefulSet %s failed error: %s"), with Pod
    /// Security admission's message (k8s.io/pod-security-admission policy checks; the
    /// shape as seen on real clusters, e.g. rancher/k3k#578).
    const PSA_STS: &str = "create Pod postgres-0 in StatefulSet postgres failed error: pods \"postgres-0\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"postgres\" must set securityContext.allowPrivilegeEscalation=false), runAsNonRoot != true (pod or container \"postgres\" must set securityContext.runAsNonRoot=true)";

    #[tokio::test(start_paused = true)]
    async fn pods_that_admission_refuses_fail_the_wait_as_pod_create_failed() {
        let waiting = || {
            Exchange::get(STS).ok(fixtures::statefulset(
                "pulsewatch-dev",
                "postgres",
                1,
                0,
                ("postgres-1", "postgres-1"),
            ))
        };
        let no_pods = || Exchange::get(PODS).ok(pod_list(vec![]));
        let events = || {
            Exchange::get(EVENTS)
                .query("fieldSelector", "type=Warning")
                .ok(event_list(vec![warning(
                    "pulsewatch-dev",
                    "StatefulSet",
                    "postgres",
                    "FailedCreate",
                    PSA_STS,
                    9,
                    "2026-11-26T05:21:00Z",
                )]))
        };
        let mut scenario = Scenario::new();
        for _ in 0..5 {
            scenario = scenario.then(waiting());
        }
        for _ in 0..16 {
            scenario = scenario.then(waiting()).then(no_pods()).then(events());
        }
        let (client, mock) = scenario.then(no_pods()).then(events()).start();
        let (engine, _) = engine(client);
        let started = Instant::now();
        let e = engine
            .wait_ready(
                &[Target::new(
                    TargetKind::StatefulSet,
                    "pulsewatch-dev",
                    "postgres",
                )],
                Duration::from_secs(300),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(started.elapsed(), Duration::from_secs(40));
        assert_eq!(e.id(), "pod-create-failed");
        assert!(
            e.message
                .starts_with("statefulset pulsewatch-dev/postgres: its pods cannot be created: failing for 30s: FailedCreate: create Pod postgres-0"),
            "{}",
            e.message
        );
        assert!(
            e.details.iter().any(|d| d
                .starts_with("event StatefulSet/postgres FailedCreate: create Pod postgres-0")
                && d.ends_with("(x9)")),
            "{:?}",
            e.details
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deployment_replica_failure_condition_fails_without_reading_pods() {
        // The ReplicaSet controller sets ReplicaFailure=True/FailedCreate with the
        // create error (kubernetes pkg/controller/replicaset/replica_set_utils.go
        // `calculateStatus`); the deployment controller copies it onto the Deployment
        // (pkg/controller/deployment/progress.go `syncRolloutStatus`).
        let message = "pods \"api-7c9f5d8b6-x2kqp\" is forbidden: violates PodSecurity \"restricted:latest\": seccompProfile (pod or container \"api\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")";
        let mut d = fixtures::deployment("pulsewatch-dev", "api", (1, 1), 1, (0, 0, 0));
        d["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "ReplicaFailure", "status": "True",
                "reason": "FailedCreate", "message": message,
                "lastUpdateTime": "2026-11-26T05:20:00Z", "lastTransitionTime": "2026-11-26T05:20:00Z"}));
        let mut scenario = Scenario::new();
        for _ in 0..21 {
            scenario = scenario.then(Exchange::get(DEPLOY).ok(d.clone()));
        }
        let (client, mock) = scenario
            .then(Exchange::get(PODS).ok(pod_list(vec![])))
            .then(Exchange::get(EVENTS).ok(event_list(vec![warning(
                "pulsewatch-dev",
                "ReplicaSet",
                "api-7c9f5d8b6",
                "FailedCreate",
                &format!("Error creating: {message}"),
                14,
                "2026-11-26T05:21:00Z",
            )])))
            .start();
        let (engine, _) = engine(client);
        let e = engine
            .wait_ready(
                &[Target::new(TargetKind::Deployment, "pulsewatch-dev", "api")],
                Duration::from_secs(300),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "pod-create-failed");
        assert_eq!(
            e.details[0],
            format!("deployment pulsewatch-dev/api: failing for 30s: FailedCreate: {message}")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_whose_pod_is_refused_and_a_daemonset_that_cannot_pull_fail_fast() {
        const DS: &str = "/apis/apps/v1/namespaces/pulsewatch-dev/daemonsets/agent";
        // The job controller's FailedCreate (kubernetes pkg/controller/job uses
        // controller_utils.go `CreatePodsWithGenerateName`: "Error creating: …").
        let refused = "Error creating: pods \"migrations-3f2a9c-7xk2p\" is forbidden: violates PodSecurity \"baseline:latest\": hostPath volumes (volume \"data\")";
        let running =
            || Exchange::get(JOB).ok(job("pulsewatch-dev", "migrations-3f2a9c", 0, 0, None));
        let job_pods = || {
            Exchange::get(PODS)
                .query(
                    "labelSelector",
                    "batch.kubernetes.io/controller-uid=uid-migrations-3f2a9c",
                )
                .ok(pod_list(vec![]))
        };
        let job_events = || {
            Exchange::get(EVENTS).ok(event_list(vec![warning(
                "pulsewatch-dev",
                "Job",
                "migrations-3f2a9c",
                "FailedCreate",
                refused,
                4,
                "2026-11-26T05:21:00Z",
            )]))
        };
        let mut scenario = Scenario::new();
        for _ in 0..5 {
            scenario = scenario.then(running());
        }
        for _ in 0..16 {
            scenario = scenario.then(running()).then(job_pods()).then(job_events());
        }
        let (client, mock) = scenario.then(job_pods()).then(job_events()).start();
        let (waiter, _) = engine(client);
        let e = waiter
            .wait_ready(
                &[Target::new(
                    TargetKind::Job,
                    "pulsewatch-dev",
                    "migrations-3f2a9c",
                )],
                Duration::from_secs(300),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "pod-create-failed");

        let mut ds = serde_json::to_value(daemonset("RollingUpdate", 1, 0)).unwrap();
        ds["metadata"]["name"] = serde_json::json!("agent");
        ds["metadata"]["namespace"] = serde_json::json!("pulsewatch-dev");
        ds["spec"]["selector"]["matchLabels"] =
            serde_json::json!({"app.kubernetes.io/name": "agent"});
        let ds_pods = || {
            Exchange::get(PODS)
                .query("labelSelector", "app.kubernetes.io/name=agent")
                .ok(pod_list(vec![pod(
                    "pulsewatch-dev",
                    "agent-x2kqp",
                    "agent",
                    "localhost:5001/pulsewatch/api:0000dead",
                    pulling(),
                )]))
        };
        let mut scenario = Scenario::new();
        for _ in 0..5 {
            scenario = scenario.then(Exchange::get(DS).ok(ds.clone()));
        }
        for _ in 0..16 {
            scenario = scenario
                .then(Exchange::get(DS).ok(ds.clone()))
                .then(ds_pods());
        }
        let (client, mock) = scenario
            .then(ds_pods())
            .then(Exchange::get(EVENTS).ok(event_list(vec![])))
            .start();
        let (waiter, _) = engine(client);
        let e = waiter
            .wait_ready(
                &[Target::new(
                    TargetKind::DaemonSet,
                    "pulsewatch-dev",
                    "agent",
                )],
                Duration::from_secs(300),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "image-pull-failed");
    }

    #[test]
    fn only_a_true_replica_failure_condition_is_a_failed_create() {
        // Mid-rollout, as progress.go writes it: Progressing=True/ReplicaSetUpdated.
        let mut d = rolled_out(2);
        d.status.as_mut().unwrap().conditions.as_mut().unwrap()[1] = condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            "ReplicaSet \"api-7c9f5d8b6\" is progressing.",
        );
        let facts = deployment_facts(&d);
        assert_eq!(facts.replica_failure, None);
        assert_eq!(facts.desired_pods, Some(2));
        assert_eq!(
            facts.selector.as_deref(),
            Some("app.kubernetes.io/name=api")
        );
        let conditions = d.status.as_mut().unwrap().conditions.as_mut().unwrap();
        conditions.push(condition("ReplicaFailure", "False", "FailedCreate", "old"));
        assert_eq!(deployment_facts(&d).replica_failure, None);
        let conditions = d.status.as_mut().unwrap().conditions.as_mut().unwrap();
        conditions.push(condition(
            "ReplicaFailure",
            "True",
            "FailedCreate",
            "pods \"api-7c9f5d8b6-x2kqp\" is forbidden: exceeded quota: compute",
        ));
        assert_eq!(
            deployment_facts(&d).replica_failure.as_deref(),
            Some("pods \"api-7c9f5d8b6-x2kqp\" is forbidden: exceeded quota: compute")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_daemonset_whose_pods_are_refused_fails_fast() {
        const DS: &str = "/apis/apps/v1/namespaces/pulsewatch-dev/daemonsets/agent";
        let mut ds = serde_json::to_value(daemonset("RollingUpdate", 0, 0)).unwrap();
        ds["metadata"]["name"] = serde_json::json!("agent");
        ds["metadata"]["namespace"] = serde_json::json!("pulsewatch-dev");
        ds["status"]["currentNumberScheduled"] = serde_json::json!(0);
        // The daemonset controller's FailedCreate (controller_utils.go `createPods`).
        let events = || {
            Exchange::get(EVENTS).ok(event_list(vec![warning(
                "pulsewatch-dev",
                "DaemonSet",
                "agent",
                "FailedCreate",
                "Error creating: pods \"agent-x2kqp\" is forbidden: violates PodSecurity \"baseline:latest\": hostPort (container \"agent\" uses hostPort 9100)",
                6,
                "2026-11-26T05:21:00Z",
            )]))
        };
        let no_pods = || Exchange::get(PODS).ok(pod_list(vec![]));
        let mut scenario = Scenario::new();
        for _ in 0..5 {
            scenario = scenario.then(Exchange::get(DS).ok(ds.clone()));
        }
        for _ in 0..16 {
            scenario = scenario
                .then(Exchange::get(DS).ok(ds.clone()))
                .then(no_pods())
                .then(events());
        }
        let (client, mock) = scenario.then(no_pods()).then(events()).start();
        let (waiter, _) = engine(client);
        let e = waiter
            .wait_ready(
                &[Target::new(
                    TargetKind::DaemonSet,
                    "pulsewatch-dev",
                    "agent",
                )],
                Duration::from_secs(300),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "pod-create-failed");
    }

    #[test]
    fn a_job_that_met_its_success_criteria_is_ready_only_once_complete() {
        // Kubernetes 1.31+: the job controller first adds SuccessCriteriaMet and adds
        // Complete only once the Job's pods are gone (kubernetes
        // pkg/controller/job/job_controller.go, KEP-4368 "Job terminal conditions").
        let mut j: Job = serde_json::from_value(job(
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
        let status = j.status.as_mut().unwrap();
        status.conditions.as_mut().unwrap().truncate(1);
        status.terminating = Some(1);
        status.succeeded = Some(1);
        assert_eq!(
            status.conditions.as_ref().unwrap()[0].type_,
            "SuccessCriteriaMet"
        );
        assert_eq!(
            job_state(&j),
            Poll::Waiting("0 active, 1 succeeded, 0 failed".into())
        );
    }
}
