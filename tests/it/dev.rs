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

/// The World with its own copy of manifests/ (the tests edit values), not a symlink
/// into the repository.
fn world() -> Option<World> {
    let w = World::new(|o| o)?;
    let link = w.pd.work.path().join("manifests");
    std::fs::remove_file(&link).unwrap();
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(crate::harness::repo_root().join("manifests"))
        .arg(&link)
        .status()
        .unwrap()
        .success();
    assert!(ok, "copying manifests/");
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
