//! `up` as a graph of named steps, and the runner that executes it: independent steps
//! run concurrently, a step starts when all its dependencies are done or skipped, a
//! failure stops what depends on it (running steps are let finish, nothing new starts),
//! and Ctrl-C stops the start of new steps while running ones wind down.
//!
//! Owns: scheduling, timing and the per-step report. Must not know what a step does:
//! steps are opaque futures; data flows between them through slots their closures share.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};

/// What a step reports when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Work was done; `detail` says what changed (e.g. "built api:3f2a…").
    Done(Option<String>),
    /// Already satisfied; the reason says why nothing was done.
    Skipped(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Done,
    Skipped,
    Failed,
    /// Not started: a dependency failed, or the run was interrupted first.
    #[serde(rename = "not-run")]
    NotRun,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub name: String,
    pub status: Status,
    /// Seconds the step ran (0 when it did not run).
    pub seconds: f64,
    /// When the step started and ended, from the start of the run (`start`/`end` in
    /// seconds in JSON): shows which steps overlapped.
    #[serde(rename = "start", serialize_with = "secs")]
    pub started_at: Option<Duration>,
    #[serde(rename = "end", serialize_with = "secs")]
    pub finished_at: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The steps this one waited for.
    pub needs: Vec<String>,
    /// Why a failed step failed: the whole error, not only the run's first one, so that
    /// steps failing side by side (cluster, images, charts) each keep their reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
}

/// A failed step's error as it is reported (human summary and JSON `steps[].error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepError {
    pub id: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Supporting lines, e.g. the tail of a tool's output.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl StepError {
    pub fn of(e: &Error) -> StepError {
        StepError {
            id: e.id().to_string(),
            message: e.message.clone(),
            hint: e.hint.clone(),
            details: e.details.clone(),
        }
    }
}

fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0),
        None => s.serialize_none(),
    }
}

/// Progress events, in the order they happen.
pub trait Observer: Send + Sync {
    fn started(&self, name: &str);
    fn finished(&self, report: &StepReport);
}

/// An observer that shows nothing (tests, benchmarks).
pub struct Quiet;

impl Observer for Quiet {
    fn started(&self, _: &str) {}
    fn finished(&self, _: &StepReport) {}
}

type Work = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, Result<Outcome>> + Send>;

struct Step {
    name: String,
    deps: Vec<String>,
    work: Work,
}

#[derive(Default)]
pub struct Plan {
    steps: Vec<Step>,
    keep_going: bool,
}

/// The result of a run: every step's report in plan order, and the first failure.
#[derive(Debug)]
pub struct Run {
    pub steps: Vec<StepReport>,
    pub error: Option<Error>,
    pub wall: Duration,
}

impl Run {
    pub fn step(&self, name: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.name == name)
    }
}

impl Plan {
    pub fn new() -> Plan {
        Plan::default()
    }

    /// Adds a step that runs after every step named in `deps`.
    pub fn add<F, Fut>(&mut self, name: &str, deps: &[&str], work: F)
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Outcome>> + Send + 'static,
    {
        self.steps.push(Step {
            name: name.to_string(),
            deps: deps.iter().map(|d| d.to_string()).collect(),
            work: Box::new(move |c| Box::pin(work(c))),
        });
    }

    /// After a failure, still start the steps whose dependencies all succeeded (as
    /// `make -k` does), instead of starting nothing new. For `fetch`, whose steps are
    /// downloads worth having each on its own; `up` stops at the first failure.
    pub fn keep_going(&mut self) {
        self.keep_going = true;
    }

    pub fn names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.name.as_str()).collect()
    }

    /// Rejects duplicate names, unknown dependencies and cycles: bugs of the caller.
    pub fn validate(&self) -> Result<()> {
        let mut index = HashMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            if index.insert(s.name.as_str(), i).is_some() {
                return Err(Error::internal(format!(
                    "step {:?} is defined twice",
                    s.name
                )));
            }
        }
        for s in &self.steps {
            for d in &s.deps {
                if !index.contains_key(d.as_str()) {
                    return Err(Error::internal(format!(
                        "step {:?} depends on unknown step {d:?}",
                        s.name
                    )));
                }
            }
        }
        // Kahn: if not every step can be ordered, there is a cycle.
        let mut indegree: Vec<usize> = self.steps.iter().map(|s| s.deps.len()).collect();
        let mut ready: Vec<usize> = (0..self.steps.len())
            .filter(|i| indegree[*i] == 0)
            .collect();
        let mut ordered = 0;
        while let Some(i) = ready.pop() {
            ordered += 1;
            for (j, s) in self.steps.iter().enumerate() {
                if s.deps.iter().any(|d| d == &self.steps[i].name) {
                    indegree[j] -= 1;
                    if indegree[j] == 0 {
                        ready.push(j);
                    }
                }
            }
        }
        if ordered != self.steps.len() {
            return Err(Error::internal("the step graph has a cycle"));
        }
        Ok(())
    }

    /// Runs the plan to the end (or to the first failure / interruption).
    pub async fn run(self, observer: &dyn Observer, cancel: &CancellationToken) -> Run {
        if let Err(e) = self.validate() {
            return Run {
                steps: Vec::new(),
                error: Some(e),
                wall: Duration::ZERO,
            };
        }
        let t0 = Instant::now();
        let order: Vec<String> = self.steps.iter().map(|s| s.name.clone()).collect();
        let deps: HashMap<String, Vec<String>> = self
            .steps
            .iter()
            .map(|s| (s.name.clone(), s.deps.clone()))
            .collect();
        let mut pending: BTreeMap<usize, Step> = self.steps.into_iter().enumerate().collect();
        let mut reports: HashMap<String, StepReport> = HashMap::new();
        let mut running = FuturesUnordered::new();
        let mut error: Option<Error> = None;
        let mut first_failed: Option<String> = None;
        let keep_going = self.keep_going;

        loop {
            // Start every pending step whose dependencies all succeeded, unless the run
            // is interrupted or already failing (and not told to keep going).
            if (error.is_none() || keep_going) && !cancel.is_cancelled() {
                let startable: Vec<usize> = pending
                    .iter()
                    .filter(|(_, s)| {
                        s.deps.iter().all(|d| {
                            reports
                                .get(d)
                                .is_some_and(|r| matches!(r.status, Status::Done | Status::Skipped))
                        })
                    })
                    .map(|(i, _)| *i)
                    .collect();
                // Steps that become ready together start together.
                let started = t0.elapsed();
                for i in startable {
                    let step = pending.remove(&i).expect("startable steps are pending");
                    observer.started(&step.name);
                    let token = cancel.child_token();
                    let name = step.name;
                    let fut = (step.work)(token);
                    running.push(async move {
                        let result = fut.await;
                        (name, started, result)
                    });
                }
            }
            let Some((name, started, result)) = running.next().await else {
                break;
            };
            let finished = t0.elapsed();
            let (status, detail, step_error) = match result {
                Ok(Outcome::Done(d)) => (Status::Done, d, None),
                Ok(Outcome::Skipped(reason)) => (Status::Skipped, Some(reason), None),
                Err(e) => {
                    let detail = Some(if e.kind == ErrorKind::Interrupted {
                        "stopped: the run was interrupted".to_string()
                    } else {
                        format!("{}: {}", e.id(), e.message)
                    });
                    let step_error = Some(StepError::of(&e));
                    // The first failure is the run's error; a real failure replaces an
                    // interruption, since it is what the user must fix.
                    let replace = match &error {
                        None => true,
                        Some(x) => {
                            x.kind == ErrorKind::Interrupted && e.kind != ErrorKind::Interrupted
                        }
                    };
                    if replace {
                        error = Some(e);
                    }
                    first_failed.get_or_insert_with(|| name.clone());
                    (Status::Failed, detail, step_error)
                }
            };
            let report = StepReport {
                name: name.clone(),
                status,
                seconds: (finished - started).as_secs_f64(),
                started_at: Some(started),
                finished_at: Some(finished),
                detail,
                needs: deps[&name].clone(),
                error: step_error,
            };
            observer.finished(&report);
            reports.insert(name, report);
        }

        if error.is_none() && cancel.is_cancelled() && !pending.is_empty() {
            error = Some(Error::interrupted());
        }
        let succeeded = |d: &String| {
            reports
                .get(d)
                .is_some_and(|r| matches!(r.status, Status::Done | Status::Skipped))
        };
        let stopped = match &first_failed {
            Some(f) if !cancel.is_cancelled() => {
                format!("not started: the run stopped when {f} failed")
            }
            _ => "not started: the run was interrupted".to_string(),
        };
        let not_run: HashMap<String, StepReport> = pending
            .into_values()
            .map(|step| {
                // What it waits for is what did not succeed; with every dependency
                // done, the run stopped before it could start.
                let unmet: Vec<&str> = step
                    .deps
                    .iter()
                    .filter(|d| !succeeded(d))
                    .map(String::as_str)
                    .collect();
                let detail = if unmet.is_empty() {
                    stopped.clone()
                } else {
                    format!("waits for {}", unmet.join(", "))
                };
                let report = StepReport {
                    name: step.name.clone(),
                    status: Status::NotRun,
                    seconds: 0.0,
                    started_at: None,
                    finished_at: None,
                    detail: Some(detail),
                    needs: step.deps,
                    error: None,
                };
                (step.name, report)
            })
            .collect();
        reports.extend(not_run);
        let steps = order
            .into_iter()
            .map(|name| reports.remove(&name).expect("every step has a report"))
            .collect();
        Run {
            steps,
            error,
            wall: t0.elapsed(),
        }
    }
}

/// Adds to `plan` a step whose work shares `shared` (one clone of the `Arc` moves into
/// the step): how `up` and `fetch` write their steps.
pub fn step<S, F, Fut>(plan: &mut Plan, shared: &Arc<S>, name: &str, deps: &[&str], f: F)
where
    S: Send + Sync + 'static,
    F: FnOnce(Arc<S>, CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Outcome>> + Send + 'static,
{
    let s = shared.clone();
    plan.add(name, deps, move |cancel| f(s, cancel));
}

/// `fut`, or `interrupted` as soon as `cancel` fires (the future is dropped).
pub async fn interruptible<T>(
    cancel: &CancellationToken,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        r = fut => r,
        _ = cancel.cancelled() => Err(Error::interrupted()),
    }
}

/// The critical path of a plan whose step durations are known: the wall time an ideal
/// runner needs. Used by the benchmark and tests.
pub fn critical_path(steps: &[(&str, &[&str], Duration)]) -> Duration {
    let mut finish: HashMap<&str, Duration> = HashMap::new();
    // Steps are given in a valid order (dependencies first).
    for (name, deps, d) in steps {
        let start = deps.iter().map(|x| finish[x]).max().unwrap_or_default();
        finish.insert(name, start + *d);
    }
    finish.values().copied().max().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn sleepy(plan: &mut Plan, name: &str, deps: &[&str], ms: u64) {
        plan.add(name, deps, move |_| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Outcome::Done(None))
        });
    }

    #[tokio::test(start_paused = true)]
    async fn independent_steps_overlap_and_dependants_wait() {
        let mut plan = Plan::new();
        sleepy(&mut plan, "preflight", &[], 100);
        sleepy(&mut plan, "cluster", &["preflight"], 3000);
        sleepy(&mut plan, "build", &["preflight"], 2000);
        sleepy(&mut plan, "deliver", &["cluster", "build"], 500);
        let run = plan.run(&Quiet, &CancellationToken::new()).await;
        assert!(run.error.is_none());
        let s = |n| run.step(n).unwrap();
        // build and cluster started together, right after preflight.
        assert_eq!(s("cluster").started_at, s("build").started_at);
        assert_eq!(s("cluster").started_at, s("preflight").finished_at);
        // deliver waited for the slower of the two.
        assert_eq!(s("deliver").started_at, s("cluster").finished_at);
        assert_eq!(run.wall, Duration::from_millis(3600));
        assert_eq!(
            critical_path(&[
                ("preflight", &[], Duration::from_millis(100)),
                ("cluster", &["preflight"], Duration::from_millis(3000)),
                ("build", &["preflight"], Duration::from_millis(2000)),
                ("deliver", &["cluster", "build"], Duration::from_millis(500)),
            ]),
            run.wall
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_stops_dependants_and_lets_running_steps_finish() {
        let mut plan = Plan::new();
        plan.add("build", &[], |_| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(Error::new(
                ErrorKind::ImageBuildFailed,
                "api failed at step 3/5",
            ))
        });
        sleepy(&mut plan, "cluster", &[], 1000);
        sleepy(&mut plan, "deliver", &["build", "cluster"], 10);
        sleepy(&mut plan, "platform", &["cluster"], 10);
        let run = plan.run(&Quiet, &CancellationToken::new()).await;
        let e = run.error.as_ref().unwrap();
        assert_eq!(e.kind, ErrorKind::ImageBuildFailed);
        assert_eq!(run.step("build").unwrap().status, Status::Failed);
        assert_eq!(
            run.step("cluster").unwrap().status,
            Status::Done,
            "running step finished"
        );
        assert_eq!(run.step("deliver").unwrap().status, Status::NotRun);
        // Nothing new starts after a failure, related or not.
        assert_eq!(run.step("platform").unwrap().status, Status::NotRun);
        // What a step waits for is what did not succeed; a step whose dependencies
        // all succeeded says the run stopped.
        assert_eq!(
            run.step("deliver").unwrap().detail.as_deref(),
            Some("waits for build")
        );
        assert_eq!(
            run.step("platform").unwrap().detail.as_deref(),
            Some("not started: the run stopped when build failed")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn keep_going_starts_what_does_not_depend_on_a_failure() {
        let mut plan = Plan::new();
        plan.keep_going();
        plan.add("tools", &[], |_| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err(Error::new(ErrorKind::ToolMissing, "kind: no network"))
        });
        sleepy(&mut plan, "docker", &[], 100);
        sleepy(&mut plan, "node-image", &["tools", "docker"], 10);
        sleepy(&mut plan, "base-images", &["docker"], 10);
        plan.add("images", &["base-images"], |_| async {
            Err(Error::new(ErrorKind::ImageBuildFailed, "api failed"))
        });
        let run = plan.run(&Quiet, &CancellationToken::new()).await;
        assert_eq!(run.error.as_ref().unwrap().kind, ErrorKind::ToolMissing);
        assert_eq!(run.step("base-images").unwrap().status, Status::Done);
        assert_eq!(run.step("images").unwrap().status, Status::Failed);
        assert_eq!(run.step("node-image").unwrap().status, Status::NotRun);
        assert_eq!(
            run.step("node-image").unwrap().detail.as_deref(),
            Some("waits for tools")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn skipped_steps_count_as_satisfied() {
        let mut plan = Plan::new();
        plan.add("build", &[], |_| async {
            Ok(Outcome::Skipped("image present".into()))
        });
        sleepy(&mut plan, "deliver", &["build"], 10);
        let run = plan.run(&Quiet, &CancellationToken::new()).await;
        assert!(run.error.is_none());
        assert_eq!(run.step("build").unwrap().status, Status::Skipped);
        assert_eq!(
            run.step("build").unwrap().detail.as_deref(),
            Some("image present")
        );
        assert_eq!(run.step("deliver").unwrap().status, Status::Done);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_new_steps_and_reaches_running_ones() {
        let cancel = CancellationToken::new();
        let seen = Arc::new(Mutex::new(false));
        let mut plan = Plan::new();
        let s2 = seen.clone();
        plan.add("cluster", &[], move |token: CancellationToken| async move {
            token.cancelled().await;
            *s2.lock().unwrap() = true;
            Err(Error::interrupted())
        });
        sleepy(&mut plan, "platform", &["cluster"], 10);
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c2.cancel();
        });
        let run = plan.run(&Quiet, &cancel).await;
        assert!(
            *seen.lock().unwrap(),
            "the running step saw the cancellation"
        );
        assert_eq!(run.error.as_ref().unwrap().kind, ErrorKind::Interrupted);
        assert_eq!(run.step("platform").unwrap().status, Status::NotRun);
        // Said once, in words: not "interrupted: interrupted".
        let cluster = run.step("cluster").unwrap();
        assert_eq!(
            cluster.detail.as_deref(),
            Some("stopped: the run was interrupted")
        );
        assert_eq!(cluster.error.as_ref().unwrap().id, "interrupted");
    }

    #[test]
    fn bad_graphs_are_rejected() {
        let mut plan = Plan::new();
        sleepy(&mut plan, "a", &["b"], 1);
        sleepy(&mut plan, "b", &["a"], 1);
        assert!(plan.validate().unwrap_err().message.contains("cycle"));
        let mut plan = Plan::new();
        sleepy(&mut plan, "a", &["nope"], 1);
        assert!(
            plan.validate()
                .unwrap_err()
                .message
                .contains("unknown step \"nope\"")
        );
        let mut plan = Plan::new();
        sleepy(&mut plan, "a", &[], 1);
        sleepy(&mut plan, "a", &[], 1);
        assert!(plan.validate().unwrap_err().message.contains("twice"));
    }

    #[tokio::test(start_paused = true)]
    async fn observer_sees_every_start_and_finish() {
        #[derive(Default)]
        struct Log(Mutex<Vec<String>>);
        impl Observer for Log {
            fn started(&self, n: &str) {
                self.0.lock().unwrap().push(format!("start {n}"));
            }
            fn finished(&self, r: &StepReport) {
                self.0
                    .lock()
                    .unwrap()
                    .push(format!("end {} {:?}", r.name, r.status));
            }
        }
        let mut plan = Plan::new();
        sleepy(&mut plan, "a", &[], 10);
        sleepy(&mut plan, "b", &["a"], 10);
        let log = Log::default();
        plan.run(&log, &CancellationToken::new()).await;
        assert_eq!(
            *log.0.lock().unwrap(),
            vec!["start a", "end a Done", "start b", "end b Done"]
        );
    }
}
