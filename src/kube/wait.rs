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
            let mut waits: FuturesUnordered<_> =
                targets.iter().map(|t| self.wait_one(t, deadline)).collect();
            let mut stuck = Vec::new();
            while let Some(outcome) = waits.next().await {
                match outcome {
                    Outcome::Ready => {}
                    failed @ Outcome::Failed { .. } => return vec![failed],
                    timed_out @ Outcome::TimedOut { .. } => stuck.push(timed_out),
                }
            }
            stuck
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
