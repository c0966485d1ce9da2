//! `pulsedev dev` and `pulsedev logs` end to end: the real binary, the real Docker
//! engine and a registry container, the real Helm engine over the real charts (a copy
//! of manifests/ the tests edit), a recording fake `kind` and the fake API server
//! (pod logs followed as the real one streams them: apiserver/logs.rs).
//!
//! Nothing waits for a fixed time: each step waits for a line `dev` prints or for the
//! fake server's state, with a generous deadline for a busy machine.

use std::io::BufRead as _;
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support;
use crate::up::World;

const NS: &str = "pulsewatch-dev";
/// How long one step (a build and rollout on a busy machine) may take.
const STEP: Duration = Duration::from_secs(180);

/// The running `dev`, killed on drop if a test failed before it stopped it.
struct Dev {
    child: Child,
    out: Receiver<String>,
    /// Every stdout line read so far.
    seen: Vec<String>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    fn start(w: &World, extra: &[&str]) -> Dev {
        let mut args = vec!["dev", "--timeout", "60"];
        args.extend_from_slice(extra);
        let mut child =
            w.pd.command_with(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        // stderr is drained so the child never blocks on a full pipe.
        let err = crate::harness::stderr_lines(&mut child);
        std::thread::spawn(move || {
            for l in err {
                eprintln!("[dev stderr] {l}");
            }
        });
        Dev {
            child,
            out: rx,
            seen: Vec::new(),
        }
    }

    /// Reads stdout until a line satisfies `f`; returns it.
    fn until(&mut self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if f(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no {what} within {STEP:?}; stdout so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Reads JSON events until one satisfies `f`.
    fn event(&mut self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let line = self.until(what, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| f(&v))
        });
        serde_json::from_str(&line).unwrap()
    }

    /// Ctrl-C, then the exit code.
    fn interrupt(&mut self) -> i32 {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        self.child.wait().unwrap().code().unwrap_or(-1)
    }
}

/// The World with its own copy of manifests/ (the tests edit values), not symlinks
/// into the repository.
fn world() -> Option<World> {
    let w = World::new(|o| o)?;
    let link = w.pd.work.path().join("manifests");
    std::fs::remove_dir_all(&link).unwrap();
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(crate::harness::repo_root().join("manifests"))
        .arg(&link)
        .status()
        .unwrap()
        .success();
    assert!(ok, "copying manifests/");
    // The platform charts are stand-ins, not the releases the committed pins name.
    crate::up::unpin_charts(&link.join("platform/pins.toml"));
    Some(w)
}

fn generation(w: &World, name: &str) -> i64 {
    w.api
        .object("Deployment", NS, name)
        .unwrap_or_else(|| panic!("no Deployment {name}"))["metadata"]["generation"]
        .as_i64()
        .unwrap()
}

fn image_of(w: &World, name: &str) -> String {
    w.api.object("Deployment", NS, name).unwrap()["spec"]["template"]["spec"]["containers"][0]
        ["image"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn dev_rolls_out_only_the_changed_service_reapplies_one_chart_and_recovers_from_a_build_error() {
    let Some(w) = world() else { return };
    let mut dev = Dev::start(&w, &["--output", "json", "--no-logs"]);
    let up = dev.event("the up summary", |v| v["event"] == "up");
    assert_eq!(up["ok"], true, "{up:#}");
    dev.event("watching", |v| v["event"] == "watching");
    let before: Vec<(String, i64)> = ["api", "web", "worker"]
        .iter()
        .map(|s| (s.to_string(), generation(&w, s)))
        .collect();
    let api_image = image_of(&w, "api");

    // A source change of the api: that image only, that Deployment only.
    w.change("api", &format!("api {}\n", support::build::nonce()));
    let built = dev.event("the api build", |v| v["event"] == "build");
    assert_eq!(built["service"], "api", "{built:#}");
    assert_eq!(built["status"], "built", "{built:#}");
    assert_eq!(built["changed"], serde_json::json!(["app.txt"]));
    let rolled = dev.event("the api rollout", |v| v["event"] == "rollout");
    assert_eq!(rolled["service"], "api", "{rolled:#}");
    assert_eq!(rolled["trigger"], "image");
    assert_eq!(rolled["workloads"], serde_json::json!(["Deployment/api"]));
    assert_ne!(image_of(&w, "api"), api_image);
    assert!(
        image_of(&w, "api").contains("@sha256:"),
        "{}",
        image_of(&w, "api")
    );
    for (s, g) in &before {
        if s != "api" {
            assert_eq!(generation(&w, s), *g, "{s} was rolled out too");
        }
    }
    assert_eq!(generation(&w, "api"), before[0].1 + 1);

    // A build error is shown, and dev goes on watching.
    let dockerfile = w.pd.work.path().join("svc/api/Dockerfile");
    let good = std::fs::read_to_string(&dockerfile).unwrap();
    std::fs::write(
        &dockerfile,
        good.replace("COPY app.txt", "COPY missing.txt"),
    )
    .unwrap();
    let error = dev.event("the build error", |v| v["event"] == "error");
    assert_eq!(error["id"], "image-build-failed", "{error:#}");
    assert!(
        error["message"].as_str().unwrap().contains("missing.txt"),
        "{error:#}"
    );
    assert!(dev.child.try_wait().unwrap().is_none(), "dev stopped");
    // The next good save recovers without restarting dev.
    std::fs::write(&dockerfile, &good).unwrap();
    w.change("api", &format!("api {}\n", support::build::nonce()));
    let rolled = dev.event("the api rollout after the fix", |v| {
        v["event"] == "rollout" && v["service"] == "api"
    });
    assert_eq!(rolled["workloads"], serde_json::json!(["Deployment/api"]));

    // A values change re-applies the one chart whose rendering changed.
    let gens: Vec<(String, i64)> = ["api", "web", "worker"]
        .iter()
        .map(|s| (s.to_string(), generation(&w, s)))
        .collect();
    let applies_before = w.api.applies().len();
    let values = w.pd.work.path().join("manifests/envs/dev/values.yaml");
    let text = std::fs::read_to_string(&values).unwrap();
    assert!(text.contains("checkIntervalSeconds: 30"));
    std::fs::write(
        &values,
        text.replace("checkIntervalSeconds: 30", "checkIntervalSeconds: 31"),
    )
    .unwrap();
    let rolled = dev.event("the worker chart", |v| v["event"] == "rollout");
    assert_eq!(rolled["service"], "worker", "{rolled:#}");
    assert_eq!(rolled["trigger"], "chart");
    assert_eq!(
        rolled["changed"],
        serde_json::json!(["manifests/envs/dev/values.yaml"])
    );
    for (s, g) in &gens {
        let now = generation(&w, s);
        if s == "worker" {
            assert_eq!(now, g + 1);
        } else {
            assert_eq!(now, *g, "{s} was rolled out too");
        }
    }
    let touched: Vec<String> = w.api.applies()[applies_before..]
        .iter()
        .filter(|a| a.namespace == NS)
        .map(|a| format!("{} {}", a.kind, a.name))
        .collect();
    assert!(
        touched.iter().all(|t| t.ends_with(" worker")),
        "only the worker chart's objects are applied: {touched:?}"
    );

    // Ctrl-C stops watching, leaves the stack running, exits 0.
    assert_eq!(dev.interrupt(), 0, "{}", dev.seen.join("\n"));
    let rest: Vec<String> = dev.out.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("\"event\":\"stopped\"")),
        "{rest:?}"
    );
    assert!(w.api.object("Deployment", NS, "api").is_some());
    assert!(w.api.unexpected().is_empty(), "{:?}", w.api.unexpected());
}

/// Waits until `f` holds for the fake server's state.
fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + STEP;
    while !f() {
        assert!(Instant::now() < deadline, "no {what} within {STEP:?}");
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

#[test]
fn dev_merges_the_logs_with_prefixes_across_restarts_and_a_rollout_without_duplicates() {
    let Some(w) = world() else { return };
    let mut dev = Dev::start(&w, &[]);
    dev.until("the watching line", |l| {
        l.starts_with("dev") && l.contains("watching")
    });
    let api_pod = w.api.pods_of(NS, "api").pop().expect("an api pod");
    let worker_pod = w.api.pods_of(NS, "worker").pop().expect("a worker pod");
    wait_for("followers of both pods", || {
        w.api.log_followers(NS, &api_pod) == 1 && w.api.log_followers(NS, &worker_pod) == 1
    });

    // Two services, interleaved, each with its prefix.
    w.api.log_line(NS, &api_pod, "api", "listening on :3001");
    dev.until("the api line", |l| l.contains("listening on :3001"));
    w.api.log_line(NS, &worker_pod, "worker", "cycle 1 done");
    dev.until("the worker line", |l| l.contains("cycle 1 done"));
    w.api.log_line(NS, &api_pod, "api", "GET /health 200");
    dev.until("the second api line", |l| l.contains("GET /health 200"));
    let lines: Vec<&String> = dev
        .seen
        .iter()
        .filter(|l| l.contains(" | ") && !l.starts_with("dev"))
        .collect();
    assert_eq!(
        lines,
        [
            // Padded to the widest configured service, `migrations`.
            "api        | listening on :3001",
            "worker     | cycle 1 done",
            "api        | GET /health 200"
        ],
        "{}",
        dev.seen.join("\n")
    );

    // The api's stream is cut while its container runs (an API server restart): dev
    // asks again from the last line's second, which the server sends again; nothing
    // shows twice and the next line comes through.
    let asked = |w: &World| {
        w.api
            .requests()
            .iter()
            .filter(|r| r.contains(&format!("/pods/{api_pod}/log")))
            .count()
    };
    let before = asked(&w);
    w.api.cut_log_streams(NS, &api_pod);
    wait_for("the resumed api request", || {
        asked(&w) > before && w.api.log_followers(NS, &api_pod) == 1
    });
    let resumed = w.api.requests();
    let resumed = resumed
        .iter()
        .rev()
        .find(|r| r.contains(&format!("/pods/{api_pod}/log")))
        .unwrap();
    assert!(resumed.contains("sinceTime="), "{resumed}");
    w.api.log_line(NS, &api_pod, "api", "after the cut");
    dev.until("the line after the cut", |l| l.contains("after the cut"));

    // The worker's container restarts: the new instance is followed, nothing repeats
    // (the resumed request's sinceTime second is sent again by the server).
    w.api.restart_container(NS, &worker_pod, "worker");
    w.api.log_line(NS, &worker_pod, "worker", "started again");
    dev.until("the restarted worker's line", |l| {
        l.contains("started again")
    });

    // A rollout replaces the api pod: its logs follow the new pod.
    w.change("api", &format!("api {}\n", support::build::nonce()));
    dev.until("the rollout line", |l| {
        l.starts_with("dev") && l.contains("rolled out Deployment/api")
    });
    let new_pod = w.api.pods_of(NS, "api").pop().unwrap();
    assert_ne!(new_pod, api_pod, "the rollout replaced the pod");
    wait_for("a follower of the new pod", || {
        w.api.log_followers(NS, &new_pod) == 1
    });
    w.api
        .log_line(NS, &new_pod, "api", "listening on :3001 (new image)");
    dev.until("the new pod's line", |l| l.contains("(new image)"));

    w.api.log_line(NS, &worker_pod, "worker", "cycle 2 done");
    dev.until("the last worker line", |l| l.contains("cycle 2 done"));
    for text in [
        "listening on :3001",
        "cycle 1 done",
        "GET /health 200",
        "started again",
    ] {
        let n = dev
            .seen
            .iter()
            .filter(|l| l.ends_with(&format!("| {text}")))
            .count();
        assert_eq!(n, 1, "{text:?} shown {n} times:\n{}", dev.seen.join("\n"));
    }
    assert_eq!(dev.interrupt(), 0);
}

#[test]
fn dev_without_logs_reads_none_and_logs_shows_the_same_merged_view() {
    let Some(w) = world() else { return };
    let mut dev = Dev::start(&w, &["--no-logs"]);
    dev.until("the watching line", |l| {
        l.starts_with("dev") && l.contains("watching")
    });
    let api_pod = w.api.pods_of(NS, "api").pop().unwrap();
    let worker_pod = w.api.pods_of(NS, "worker").pop().unwrap();
    w.api.log_line(NS, &api_pod, "api", "first api line");
    w.api
        .log_line(NS, &worker_pod, "worker", "first worker line");
    // A rollout takes longer than the log follower's poll: had it started, it would
    // have asked for logs by now.
    w.change("web", &format!("web {}\n", support::build::nonce()));
    dev.until("the web rollout", |l| {
        l.contains("rolled out Deployment/web")
    });
    assert!(
        !w.api.requests().iter().any(|r| r.contains("/log")),
        "--no-logs asked for logs"
    );
    assert!(
        !dev.seen.iter().any(|l| l.contains("first api line")),
        "{}",
        dev.seen.join("\n")
    );
    assert_eq!(dev.interrupt(), 0);

    // `pulsedev logs`: the same prefixes, merged in time order, and one service alone.
    let all = w.pd.run_with(&["logs"]);
    assert_eq!(all.code, 0, "{}", all.stderr);
    assert_eq!(
        all.stdout, "api        | first api line\nworker     | first worker line\n",
        "{}",
        all.stderr
    );
    let one = w.pd.run_with(&["logs", "worker", "--output", "json"]);
    assert_eq!(one.code, 0, "{}", one.stderr);
    let events: Vec<Value> = one
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{}", one.stdout);
    assert_eq!(events[0]["event"], "log");
    assert_eq!(events[0]["service"], "worker");
    assert_eq!(events[0]["pod"], worker_pod.as_str());
    assert_eq!(events[0]["line"], "first worker line");
    let bad = w.pd.run_with(&["logs", "wrker"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("did you mean \"worker\""),
        "{}",
        bad.stderr
    );
}

#[test]
fn dev_shows_a_crash_loop_with_its_diagnosis_and_a_fix_recovers() {
    let Some(w) = world() else { return };
    let mut dev = Dev::start(&w, &["--output", "json", "--no-logs"]);
    dev.event("watching", |v| v["event"] == "watching");
    // The next api build crashes on start.
    w.api.configure(|o| o.crash_looping.push("api".into()));
    w.change("api", &format!("api {}\n", support::build::nonce()));
    let error = dev.event("the crash loop", |v| v["event"] == "error");
    assert_eq!(error["id"], "pod-crash-looping", "{error:#}");
    let details = error["details"].to_string();
    assert!(details.contains("CrashLoopBackOff"), "{error:#}");
    assert!(
        details.contains("Error: database unavailable"),
        "the log tail: {error:#}"
    );
    assert!(dev.child.try_wait().unwrap().is_none(), "dev stopped");
    // Fixed: the next save rolls out and is ready.
    w.api.configure(|o| o.crash_looping.clear());
    w.change("api", &format!("api {}\n", support::build::nonce()));
    let rolled = dev.event("the api rollout after the fix", |v| v["event"] == "rollout");
    assert_eq!(rolled["service"], "api", "{rolled:#}");
    assert_eq!(dev.interrupt(), 0);
}

#[test]
fn dev_live_updates_a_synced_file_and_rebuilds_what_needs_an_image() {
    let rt = crate::fakes::rt();
    let Some(engine) = rt.block_on(support::docker::engine("dev_live_update")) else {
        return;
    };
    // The web pod's container: non-root, read-only root, writable where sync writes.
    let standin = rt.block_on(crate::support::standin::StandIn::start(
        &engine,
        crate::support::standin::Spec {
            read_only: true,
            writable: vec!["/www".into()],
            user: Some("10001:10001".into()),
            ..Default::default()
        },
    ));
    let Some(w) = World::new(|o| o.exec_into("web-", &standin.container)) else {
        return;
    };
    let web = w.pd.work.path().join("svc/web");
    std::fs::create_dir_all(web.join("static")).unwrap();
    std::fs::write(web.join("static/index.html"), "<h1>v1</h1>\n").unwrap();
    let toml = std::fs::read_to_string(w.pd.work.path().join("pulsedev.toml")).unwrap();
    w.pd.write(
        "pulsedev.toml",
        &format!(
            "{toml}[services.web.live_update]\nsync = [{{ from = \"static\", to = \"/www\" }}]\n"
        ),
    );
    let mut dev = Dev::start(&w, &["--output", "json", "--no-logs"]);
    dev.event("watching", |v| v["event"] == "watching");
    let generation_before = generation(&w, "web");

    std::fs::write(web.join("static/index.html"), "<h1>v2</h1>\n").unwrap();
    let synced = dev.event("the sync", |v| {
        v["event"] == "sync" || v["event"] == "build"
    });
    assert_eq!(synced["event"], "sync", "synced, not rebuilt: {synced:#}");
    assert_eq!(synced["service"], "web");
    assert_eq!(synced["copied"], serde_json::json!(["/www/index.html"]));
    assert_eq!(standin.sh("cat /www/index.html"), "<h1>v2</h1>\n");
    assert_eq!(generation(&w, "web"), generation_before, "no rollout");

    // Outside the synced paths: a new image.
    w.change("web", &format!("web {}\n", support::build::nonce()));
    let built = dev.event("the web build", |v| {
        v["event"] == "build" || v["event"] == "sync"
    });
    assert_eq!(built["event"], "build", "{built:#}");
    assert_eq!(built["service"], "web");
    dev.event("the web rollout", |v| {
        v["event"] == "rollout" && v["service"] == "web"
    });
    assert_eq!(dev.interrupt(), 0);
}

/// The kinds the stack's inventory records (`applyset.kubernetes.io/contains-group-kinds`).
fn inventory_kinds(w: &World) -> String {
    w.api
        .object("ConfigMap", "kube-system", "pulsedev-pulsewatch")
        .and_then(|i| {
            i["metadata"]["annotations"]["applyset.kubernetes.io/contains-group-kinds"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// The rollout events of `services`' charts, in any order.
fn chart_rollouts(dev: &mut Dev, services: &[&str]) -> Vec<Value> {
    let mut left: Vec<&str> = services.to_vec();
    let mut out = Vec::new();
    while !left.is_empty() {
        let e = dev.event("the chart rollouts", |v| {
            v["event"] == "rollout" || v["event"] == "error"
        });
        assert_eq!(e["event"], "rollout", "{e:#}");
        left.retain(|s| e["service"] != *s);
        out.push(e);
    }
    out
}

/// A template removed from a chart while `dev` runs is pruned as `up` prunes it: the
/// object is deleted and the inventory shrinks with it; the same kind of object of
/// another chart is left alone (the prune is narrowed to the re-applied chart's set).
#[test]
fn dev_prunes_what_a_chart_no_longer_renders_and_nothing_of_another_chart() {
    let Some(w) = world() else { return };
    let mut dev = Dev::start(&w, &["--output", "json", "--no-logs"]);
    let up = dev.event("the up summary", |v| v["event"] == "up");
    assert_eq!(up["ok"], true, "{up:#}");
    dev.event("watching", |v| v["event"] == "watching");
    let manifests = w.pd.work.path().join("manifests");
    assert!(!inventory_kinds(&w).contains("PodDisruptionBudget"));

    // Dev renders no PDB (one replica); turned on for the api and the worker.
    let values = manifests.join("envs/dev/values.yaml");
    let text = std::fs::read_to_string(&values).unwrap();
    let off = "  pdb:\n    enabled: false\n";
    assert_eq!(text.matches(off).count(), 3, "api, worker and web");
    std::fs::write(
        &values,
        text.replacen(off, "  pdb:\n    enabled: true\n", 2),
    )
    .unwrap();
    chart_rollouts(&mut dev, &["api", "worker"]);
    let worker_pdb = w
        .api
        .object("PodDisruptionBudget", NS, "worker")
        .expect("the worker's PDB");
    assert!(w.api.object("PodDisruptionBudget", NS, "api").is_some());
    assert!(
        inventory_kinds(&w).contains("PodDisruptionBudget.policy"),
        "{}",
        inventory_kinds(&w)
    );

    // The api chart loses its PDB template: its PDB goes, the worker's stays.
    let calls_before = w.api.calls().len();
    std::fs::remove_file(manifests.join("charts/api/templates/pdb.yaml")).unwrap();
    let rolled = chart_rollouts(&mut dev, &["api"]).pop().unwrap();
    assert!(
        w.api.object("PodDisruptionBudget", NS, "api").is_none(),
        "not pruned: {rolled:#}"
    );
    assert_eq!(
        rolled["pruned"],
        serde_json::json!([format!("PodDisruptionBudget {NS}/api")]),
        "{rolled:#}"
    );
    let still = w
        .api
        .object("PodDisruptionBudget", NS, "worker")
        .expect("the worker's PDB is left alone");
    assert_eq!(still["metadata"]["uid"], worker_pdb["metadata"]["uid"]);
    assert!(still["metadata"]["deletionTimestamp"].is_null());
    let deletes: Vec<String> = w.api.calls()[calls_before..]
        .iter()
        .filter(|c| c.method == "DELETE")
        .map(|c| c.target.split('?').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        deletes,
        [format!(
            "/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/api"
        )],
        "nothing else of the stack is deleted"
    );
    // Another object of the kind remains: the inventory still records it.
    assert!(inventory_kinds(&w).contains("PodDisruptionBudget.policy"));

    // The worker's goes too: no PDB is left, and the inventory no longer lists the kind.
    std::fs::remove_file(manifests.join("charts/worker/templates/pdb.yaml")).unwrap();
    let rolled = chart_rollouts(&mut dev, &["worker"]).pop().unwrap();
    assert_eq!(
        rolled["pruned"],
        serde_json::json!([format!("PodDisruptionBudget {NS}/worker")]),
        "{rolled:#}"
    );
    assert!(w.api.objects_of("PodDisruptionBudget").is_empty());
    let kinds = inventory_kinds(&w);
    assert!(!kinds.contains("PodDisruptionBudget"), "{kinds}");
    assert!(kinds.contains("Deployment.apps"), "{kinds}");

    assert_eq!(dev.interrupt(), 0, "{}", dev.seen.join("\n"));
    assert!(w.api.object("Deployment", NS, "api").is_some());
    assert!(w.api.unexpected().is_empty(), "{:?}", w.api.unexpected());
}
