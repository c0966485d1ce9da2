//! pulsedev's log follower (`dev`, `logs -f`) against the fake API server: new pods are
//! found by a watch (apiserver/watch.rs serves it as kube-apiserver does), not by
//! listing again and again.
//!
//! Nothing waits for a fixed time: each step waits for the fake's state (which moves on
//! with `configure`, as with any request) or for a line, with a deadline.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use pulsedev::kube::logs::{LogLine, LogOptions, follow};
use tokio_util::sync::CancellationToken;

use crate::apiserver::{FakeApiServer, Options};

const NS: &str = "default";
const DEADLINE: Duration = Duration::from_secs(60);

/// Waits until `f` holds, letting the fake's controllers run meanwhile.
fn wait_for(api: &FakeApiServer, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "no {what} within {DEADLINE:?}");
        api.configure(|_| {});
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// The running pod of `app` that is not one of `old`.
fn new_running_pod(api: &FakeApiServer, app: &str, old: &[String]) -> String {
    let mut found = String::new();
    wait_for(api, &format!("new running pod of {app}"), || {
        for p in api.pods_of(NS, app) {
            let o = api.object("Pod", NS, &p).unwrap();
            let running = o["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|cs| {
                    !cs.is_empty() && cs.iter().all(|c| c["state"]["running"].is_object())
                });
            if running && !old.contains(&p) {
                found = p;
                return true;
            }
        }
        false
    });
    found
}

/// The follower's pod lists (not its watches, not the log requests).
fn lists(api: &FakeApiServer) -> usize {
    api.requests()
        .iter()
        .filter(|r| {
            r.starts_with(&format!("GET /api/v1/namespaces/{NS}/pods?")) && !r.contains("watch=")
        })
        .count()
}

#[test]
fn a_rollouts_new_pod_is_followed_through_the_watch_and_a_410_lists_again() {
    let api = FakeApiServer::start(Options::new("test"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap()
    });
    let deploy = |image: &str| {
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": NS},
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "api"}},
                "template": {"metadata": {"labels": {"app.kubernetes.io/name": "api",
                    "pulsedev.dev/stack": "pulsewatch"}},
                "spec": {"containers": [{"name": "api", "image": image}]}}}
        }))
        .unwrap();
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
        rt.block_on(deployments.patch(
            "api",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&d),
        ))
        .unwrap();
    };
    deploy("localhost:5001/pulsewatch/api:1");
    let first = new_running_pod(&api, "api", &[]);

    // `poll` longer than the test: only the watch can find the new pods in time (the
    // 1 s listing this replaced would list once and not again).
    let options = LogOptions {
        namespace: NS.into(),
        stack: "pulsewatch".into(),
        services: Vec::new(),
        follow: true,
        since: None,
        poll: Duration::from_secs(600),
    };
    let cancel = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<LogLine>();
    let (seen_tx, seen) = mpsc::channel::<LogLine>();
    let follower = rt.spawn(follow(client.clone(), options, tx, cancel.clone()));
    rt.spawn(async move {
        while let Some(l) = rx.recv().await {
            if seen_tx.send(l).is_err() {
                return;
            }
        }
    });
    let mut shown: Vec<LogLine> = Vec::new();
    let mut expect = |text: &str, pod: &str| {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = seen
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line {text:?}; shown: {shown:?}"));
            shown.push(l.clone());
            if l.text == text {
                assert_eq!(l.pod, pod, "{l:?}");
                return shown.clone();
            }
        }
    };

    wait_for(&api, "follower of the first pod", || {
        api.log_followers(NS, &first) == 1
    });
    api.log_line(NS, &first, "api", "one");
    expect("one", &first);

    // A rollout: the new pod is seen when it is created and followed once its
    // container runs (its change wakes the follower), without another list.
    deploy("localhost:5001/pulsewatch/api:2");
    let second = new_running_pod(&api, "api", std::slice::from_ref(&first));
    wait_for(&api, "follower of the new pod", || {
        api.log_followers(NS, &second) == 1
    });
    api.log_line(NS, &second, "api", "two");
    expect("two", &second);
    assert_eq!(lists(&api), 1, "{:#?}", api.requests());
    let watches = api.watches();
    assert!(!watches.is_empty(), "{:#?}", api.requests());
    assert!(
        watches
            .iter()
            .all(|w| w.contains("labelSelector=pulsedev.dev/stack=pulsewatch")),
        "{watches:?}"
    );

    // The watch falls out of the server's window (410): the follower lists again, and
    // goes on finding new pods.
    api.expire_watches();
    wait_for(&api, "new list after the 410", || lists(&api) == 2);
    deploy("localhost:5001/pulsewatch/api:3");
    let third = new_running_pod(&api, "api", &[first.clone(), second.clone()]);
    wait_for(&api, "follower of the third pod", || {
        api.log_followers(NS, &third) == 1
    });
    api.log_line(NS, &third, "api", "three");
    expect("three", &third);
    assert_eq!(lists(&api), 2, "{:#?}", api.requests());

    // The container restarts: the pod's change (restartCount) wakes its follower, which
    // asks for the new instance at once, not after `poll`.
    api.restart_container(NS, &third, "api");
    api.log_line(NS, &third, "api", "restarted");
    let shown = expect("restarted", &third);

    // Nothing twice (a relist does not follow a pod again).
    for text in ["one", "two", "three", "restarted"] {
        assert_eq!(
            shown.iter().filter(|l| l.text == text).count(),
            1,
            "{shown:?}"
        );
    }
    cancel.cancel();
    rt.block_on(follower).unwrap().unwrap();
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
}
