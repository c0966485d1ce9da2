//! The stack's pod logs as one stream: every container of every pod carrying the stack
//! label, each line tagged with its service, following container restarts and the new
//! pods of a rollout.
//!
//! Owns: the pod list and watch, and the `pods/<name>/log` requests. Must not print
//! (lines go to a channel; `dev`/`logs` render them) or decide colours.
//!
//! How the API behaves, and what follows from it:
//! - A `follow=true` log request streams until the container stops (kubelet
//!   pkg/kubelet/kuberuntime/logs/logs.go `ReadLogs`: with follow it waits for new
//!   lines and returns once `isContainerRunning` says no) or the connection drops. A
//!   restarted container is a new log: the request is made again.
//! - `sinceTime` is a whole second (metav1.Time is RFC 3339 with second precision, and
//!   kube-core's `LogParams` rounds it so), and kubelet keeps lines whose timestamp is
//!   not before it: a resumed request repeats the lines of that second. Lines are asked
//!   with `timestamps=true` (RFC 3339 nanoseconds) and those at or before the last one
//!   shown are dropped, so nothing is shown twice.
//! - With several containers `container` is required (400 "a container name must be
//!   specified"), so every request names its container.
//! - The stack's pods come from a watch with the stack's label selector (kube-runtime's
//!   watcher: a list, then a watch from the list's resourceVersion; after a 410 Expired
//!   it lists again; with bookmarks, so a resumed watch rarely has to). A new pod is
//!   seen when it is created, not at the next list, and each change of a followed pod
//!   (a container started or restarted) wakes its followers; `poll` is only the
//!   longest wait between two log requests of a container.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ::kube::Client;
use ::kube::api::{Api, ListParams, LogParams};
use ::kube::runtime::{WatchStreamExt, watcher};
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::STACK_LABEL;
use crate::error::{Error, ErrorKind, Result};

/// The label whose value names a pod's service (the charts' `pw.selectorLabels`).
pub const SERVICE_LABEL: &str = "app.kubernetes.io/name";

/// One line of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub service: String,
    pub pod: String,
    pub container: String,
    /// The kubelet's timestamp of the line, RFC 3339 with nanoseconds.
    pub time: String,
    pub text: String,
}

/// What to read.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub namespace: String,
    /// The stack label's value (`pulsewatch`).
    pub stack: String,
    /// Only these services (all when empty).
    pub services: Vec<String>,
    /// Keep following (`-f`, `dev`); otherwise read what is there and stop.
    pub follow: bool,
    /// Only lines younger than this.
    pub since: Option<Duration>,
    /// The longest wait before a container's log is asked for again (a change of its
    /// pod, seen by the watch, asks at once).
    pub poll: Duration,
}

/// A line as kubelet sends it with `timestamps=true`: `<RFC 3339 nano> <text>`.
fn split_line(raw: &str) -> Option<(Timestamp, &str, &str)> {
    let (ts, text) = raw.split_once(' ').unwrap_or((raw, ""));
    let t: Timestamp = ts.parse().ok()?;
    Some((t, ts, text))
}

/// Where a follower is in one container's log: the last timestamp shown and how many
/// lines carried exactly that timestamp (two lines may share one), and, within the
/// response being read, how many lines at the current timestamp went by.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resume {
    last: Option<Timestamp>,
    at_last: usize,
    /// In the current response: the timestamp of the previous line and how many lines
    /// carried it so far.
    run: Option<(Timestamp, usize)>,
}

impl Resume {
    /// The `sinceTime` to resume with: the last shown line's second, rounded down.
    /// kube-core rounds `since_time` to the nearest second (jiff's half-expand), which
    /// for a line after the half second asks from the *next* second and loses the lines
    /// between; rounded down here, its rounding changes nothing and the server repeats
    /// a part of a second that `take` drops.
    pub fn since(&self) -> Option<Timestamp> {
        let last = self.last?;
        Timestamp::from_second(last.as_second()).ok()
    }

    /// A new response starts (the server repeats the lines of `sinceTime`'s second).
    pub fn begin(&mut self) {
        self.run = None;
    }

    /// One raw line of the current response: `(time, text)` when it has not been shown
    /// yet. A line without a timestamp (not kubelet's format) is passed through.
    pub fn take(&mut self, raw: &str) -> Option<(String, String)> {
        let Some((t, ts, text)) = split_line(raw) else {
            return Some((String::new(), raw.to_string()));
        };
        let seen_at = match self.run {
            Some((rt, n)) if rt == t => n,
            _ => 0,
        };
        self.run = Some((t, seen_at + 1));
        let fresh = match self.last {
            None => true,
            Some(last) if t > last => true,
            Some(last) if t == last => seen_at >= self.at_last,
            Some(_) => false,
        };
        if !fresh {
            return None;
        }
        if self.last == Some(t) {
            self.at_last += 1;
        } else {
            self.last = Some(t);
            self.at_last = 1;
        }
        Some((ts.to_string(), text.to_string()))
    }
}

/// The lines of `body` (one whole response) that `resume` has not shown yet, in order.
pub fn new_lines<'a>(
    resume: &mut Resume,
    body: impl Iterator<Item = &'a str>,
) -> Vec<(String, String)> {
    resume.begin();
    body.filter_map(|raw| resume.take(raw)).collect()
}

fn service_of(p: &Pod) -> String {
    let name = p.metadata.name.clone().unwrap_or_default();
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_LABEL).cloned())
        .unwrap_or(name)
}

fn containers_of(p: &Pod) -> Vec<String> {
    p.spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

async fn list(api: &Api<Pod>, opts: &LogOptions) -> Result<Vec<Pod>> {
    let lp = ListParams::default().labels(&format!("{STACK_LABEL}={}", opts.stack));
    let pods = api.list(&lp).await.map_err(|e| {
        Error::new(
            ErrorKind::NotReady,
            format!("failed to list the pods of {}: {e}", opts.namespace),
        )
        .with_hint("check that the cluster runs (`pulsedev status`)")
    })?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| opts.services.is_empty() || opts.services.contains(&service_of(p)))
        .collect())
}

/// Reads the logs once (no follow): every container's lines, merged by timestamp.
pub async fn read(client: &Client, opts: &LogOptions) -> Result<Vec<LogLine>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &opts.namespace);
    let mut all = Vec::new();
    for p in list(&api, opts).await? {
        let pod = p.metadata.name.clone().unwrap_or_default();
        let service = service_of(&p);
        for container in containers_of(&p) {
            let lp = LogParams {
                container: Some(container.clone()),
                timestamps: true,
                since_seconds: opts.since.map(|d| d.as_secs().max(1) as i64),
                ..LogParams::default()
            };
            // A container that has not started has no log yet (400): nothing to show.
            let Ok(text) = api.logs(&pod, &lp).await else {
                continue;
            };
            let mut resume = Resume::default();
            for (time, text) in new_lines(&mut resume, text.lines()) {
                all.push(LogLine {
                    service: service.clone(),
                    pod: pod.clone(),
                    container: container.clone(),
                    time,
                    text,
                });
            }
        }
    }
    // RFC 3339 strings of different precision do not sort as text: by parsed time.
    all.sort_by_key(|l| l.time.parse::<Timestamp>().ok());
    Ok(all)
}

/// The pods being followed, by uid: the sender that wakes their containers' followers
/// when the pod changes (a container started or restarted).
type Followed = BTreeMap<String, tokio::sync::watch::Sender<()>>;

/// Follows every container of the stack's pods until `cancel`, sending each new line
/// once. The pods come from a watch (kube-runtime's watcher: a list, then a watch from
/// the list's resourceVersion, a new list after a 410), so a new pod (a rollout, a
/// replaced pod) is followed as soon as it exists, and a pod's change wakes its
/// followers at once.
pub async fn follow(
    client: Client,
    opts: LogOptions,
    tx: UnboundedSender<LogLine>,
    cancel: CancellationToken,
) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &opts.namespace);
    let config = watcher::Config::default().labels(&format!("{STACK_LABEL}={}", opts.stack));
    let mut events = watcher(api.clone(), config).default_backoff().boxed();
    // (pod uid, container) being followed, and each followed pod's wake-up.
    let mut containers: BTreeSet<(String, String)> = BTreeSet::new();
    let mut pods: Followed = BTreeMap::new();
    // The uids of a list in progress (a first list, or a new one after a 410).
    let mut listing: BTreeSet<String> = BTreeSet::new();
    let mut listed_once = false;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            e = events.next() => e,
        };
        let Some(event) = event else { break };
        // `since` is for the pods there at the start; a pod that appears later (a
        // rollout) is new: all of its log is, also what it wrote before its follower
        // got there.
        let since = if listed_once { None } else { opts.since };
        let pod = match event {
            Ok(watcher::Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(p)) => {
                listing.insert(p.metadata.uid.clone().unwrap_or_default());
                p
            }
            Ok(watcher::Event::InitDone) => {
                listed_once = true;
                // Pods gone while the watch was broken are followed no longer.
                pods.retain(|uid, _| listing.contains(uid));
                containers.retain(|(uid, _)| listing.contains(uid));
                continue;
            }
            Ok(watcher::Event::Apply(p)) => p,
            Ok(watcher::Event::Delete(p)) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                // Dropping the sender ends the pod's followers once their stream ends.
                pods.remove(&uid);
                containers.retain(|(u, _)| *u != uid);
                continue;
            }
            // The first list decides whether the cluster is there at all; later a
            // blip (an API server restart) is ridden out, the watcher backing off.
            Err(e) if !listed_once => {
                return Err(Error::new(
                    ErrorKind::NotReady,
                    format!("failed to list the pods of {}: {e}", opts.namespace),
                )
                .with_hint("check that the cluster runs (`pulsedev status`)"));
            }
            Err(_) => continue,
        };
        if !(opts.services.is_empty() || opts.services.contains(&service_of(&pod))) {
            continue;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let wake = pods
            .entry(uid.clone())
            .or_insert_with(|| tokio::sync::watch::channel(()).0);
        wake.send_replace(());
        let mut o = opts.clone();
        o.since = since;
        for c in containers_of(&pod) {
            if containers.insert((uid.clone(), c.clone())) {
                tasks.spawn(follow_container(
                    api.clone(),
                    pod.metadata.name.clone().unwrap_or_default(),
                    uid.clone(),
                    service_of(&pod),
                    c,
                    o.clone(),
                    wake.subscribe(),
                    tx.clone(),
                    cancel.clone(),
                ));
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    tasks.shutdown().await;
    Ok(())
}

/// One container, across its restarts, until its pod is gone or `cancel`. Between two
/// requests it waits for its pod to change (`changed`), or `opts.poll` at most.
#[allow(clippy::too_many_arguments)]
async fn follow_container(
    api: Api<Pod>,
    pod: String,
    uid: String,
    service: String,
    container: String,
    opts: LogOptions,
    mut changed: tokio::sync::watch::Receiver<()>,
    tx: UnboundedSender<LogLine>,
    cancel: CancellationToken,
) {
    let mut resume = Resume::default();
    let mut first = true;
    loop {
        // A change from here on (the container started, restarted) asks again at once.
        changed.borrow_and_update();
        let lp = LogParams {
            container: Some(container.clone()),
            follow: true,
            timestamps: true,
            since_seconds: if first {
                opts.since.map(|d| d.as_secs().max(1) as i64)
            } else {
                None
            },
            since_time: if first { None } else { resume.since() },
            ..LogParams::default()
        };
        let read = async {
            let stream = api.log_stream(&pod, &lp).await.ok()?;
            let mut lines = stream.lines();
            resume.begin();
            while let Ok(Some(raw)) = lines.try_next().await {
                if let Some((time, text)) = resume.take(&raw) {
                    let _ = tx.send(LogLine {
                        service: service.clone(),
                        pod: pod.clone(),
                        container: container.clone(),
                        time,
                        text,
                    });
                }
            }
            Some(())
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = read => if r.is_some() { first = false; },
        }
        // The stream ended: the container stopped (it may restart), the pod went, or
        // the connection dropped. Gone (or replaced under the same name): done.
        match api.get_opt(&pod).await {
            Ok(Some(p)) if p.metadata.uid.as_deref() == Some(uid.as_str()) => {}
            Ok(_) => return,
            Err(_) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            // The watch saw the pod deleted: nothing more to read.
            r = changed.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(opts.poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_response_shows_only_lines_after_the_last_one_shown() {
        let mut r = Resume::default();
        let first = new_lines(
            &mut r,
            [
                "2026-11-30T10:00:00.100Z one",
                "2026-11-30T10:00:00.5Z two",
                "2026-11-30T10:00:00.5Z two again",
            ]
            .into_iter(),
        );
        assert_eq!(first.len(), 3);
        // sinceTime is whole seconds: the server repeats that second.
        let again = new_lines(
            &mut r,
            [
                "2026-11-30T10:00:00.100Z one",
                "2026-11-30T10:00:00.500000000Z two",
                "2026-11-30T10:00:00.500000000Z two again",
                "2026-11-30T10:00:00.500000000Z two a third time",
                "2026-11-30T10:00:01.000000001Z three",
            ]
            .into_iter(),
        );
        assert_eq!(
            again,
            vec![
                (
                    "2026-11-30T10:00:00.500000000Z".to_string(),
                    "two a third time".to_string()
                ),
                (
                    "2026-11-30T10:00:01.000000001Z".to_string(),
                    "three".to_string()
                ),
            ]
        );
    }

    #[test]
    fn resuming_asks_from_the_start_of_the_last_lines_second() {
        let mut r = Resume::default();
        assert_eq!(r.since(), None);
        new_lines(
            &mut r,
            ["2026-11-30T10:00:00.900000000Z late in the second"].into_iter(),
        );
        // Not 10:00:01 (what rounding to the nearest second gives): a line at .95 would be lost.
        assert_eq!(r.since().unwrap().to_string(), "2026-11-30T10:00:00Z");
    }

    #[test]
    fn a_line_without_a_timestamp_is_passed_through() {
        let mut r = Resume::default();
        assert_eq!(
            new_lines(&mut r, ["plain"].into_iter()),
            vec![(String::new(), "plain".to_string())]
        );
    }
}
