//! The cluster half of `up` (hidden `pulsedev cluster create`), `down` and
//! `kubeconfig`, run as the real binary with a recording fake `kind` on PATH, a fake
//! API server for node readiness, and the real Docker engine.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fakes::{self, FAKE_KIND, FakeApi, kind_calls, kind_clusters, mode, state_dir};
use crate::harness::{Pd, Run, docker_host, free_ports};

struct Sandbox {
    pd: Pd,
    kind: PathBuf,
    api: FakeApi,
    name: String,
}

/// A sandbox whose PATH holds the fake kind, pointed at the real engine, with the
/// cluster name given by `--name`. `None` when no engine answers (laptop skip).
fn sandbox(name: &str, mode: &str) -> Option<Sandbox> {
    let host = docker_host()?;
    let pd = fakes::with_node_image(Pd::new().tool("kind", FAKE_KIND), &host);
    let kind = pd.home.path().join("fake-kind");
    std::fs::create_dir_all(&kind).unwrap();
    let api = FakeApi::start(&format!("{name}-control-plane"));
    let [http, https, registry] = free_ports();
    let pd = pd
        .env("DOCKER_HOST", host)
        .env("FAKE_KIND_DIR", kind.display().to_string())
        .env("FAKE_KIND_MODE", mode)
        .env("FAKE_API", api.url.clone())
        .args(&[
            "--name",
            name,
            "--http-port",
            &http.to_string(),
            "--https-port",
            &https.to_string(),
            "--registry-port",
            &registry.to_string(),
        ]);
    Some(Sandbox {
        pd,
        kind,
        api,
        name: name.to_string(),
    })
}

impl Sandbox {
    fn state(&self) -> PathBuf {
        state_dir(self.pd.home.path(), &self.name)
    }

    fn create(&self, extra: &[&str]) -> Run {
        let mut args = vec!["cluster", "create", "--wait", "5"];
        args.extend_from_slice(extra);
        self.pd.run_with(&args)
    }

    fn calls(&self) -> Vec<String> {
        kind_calls(&self.kind)
    }

    /// The kind calls with this sandbox's paths and temp names made stable.
    fn stable_calls(&self) -> Vec<String> {
        let state = self.state().display().to_string();
        let re = regex::Regex::new(r"\.kind-config\.[A-Za-z0-9]+\.yaml").unwrap();
        self.calls()
            .iter()
            .map(|c| {
                re.replace_all(&c.replace(&state, "[STATE]"), ".kind-config.[TMP].yaml")
                    .into_owned()
            })
            .collect()
    }

    fn with_env(self, k: &str, v: &str) -> Sandbox {
        Sandbox {
            pd: self.pd.env(k, v),
            ..self
        }
    }
}

fn ok(run: &Run) {
    assert_eq!(run.code, 0, "{run:#?}");
}

#[test]
fn create_runs_kind_with_exact_arguments_and_the_rendered_config() {
    let Some(sb) = sandbox("dev", "ok") else {
        return;
    };
    let run = sb.create(&[]);
    ok(&run);
    assert_eq!(
        sb.stable_calls(),
        vec![
            "version".to_string(),
            "get clusters".to_string(),
            "create cluster --name dev --config [STATE]/.kind-config.[TMP].yaml --kubeconfig [STATE]/kubeconfig --wait 60s".to_string(),
        ]
    );
    assert!(
        run.stdout
            .starts_with("cluster dev created (context kind-dev)\n"),
        "{}",
        run.stdout
    );
    // The config kind received, with this run's ports made stable.
    let config = std::fs::read_to_string(sb.kind.join("config-dev.yaml")).unwrap();
    let config = regex::Regex::new(r"hostPort: \d+")
        .unwrap()
        .replace_all(&config, "hostPort: [PORT]")
        .into_owned();
    let config = regex::Regex::new(r#"config-hash: "[0-9a-f]{32}""#)
        .unwrap()
        .replace_all(&config, r#"config-hash: "[HASH]""#)
        .into_owned();
    insta::assert_snapshot!(config);
    // The temp config is gone; what pulsedev keeps is private.
    let state = sb.state();
    let mut names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "cluster.json",
            "journal.json",
            "kind-config.yaml",
            "kubeconfig"
        ]
    );
    for f in &names {
        assert_eq!(mode(&state.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&state), 0o700);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("cluster.json")).unwrap())
            .unwrap();
    assert_eq!(record["name"], "dev");
    assert_eq!(record["context"], "kind-dev");
    // The node image named by PULSEDEV_NODE_IMAGE (the sandbox's local stand-in).
    assert_eq!(record["node_image"], fakes::NODE_IMAGE);
    // The node readiness was confirmed through the API, with our kubeconfig.
    assert!(
        sb.api
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/nodes")),
        "{:?}",
        sb.api.requests()
    );
    // The user's kubeconfig is never touched.
    assert!(!sb.pd.home.path().join(".kube").exists());
}

#[test]
fn a_second_run_reuses_the_cluster_without_creating() {
    let Some(sb) = sandbox("dev", "ok") else {
        return;
    };
    // The user's own kubeconfig, also named by KUBECONFIG: never read nor written.
    let user = sb.pd.home.path().join(".kube/config");
    std::fs::create_dir_all(user.parent().unwrap()).unwrap();
    std::fs::write(
        &user,
        "apiVersion: v1\nkind: Config\ncurrent-context: prod\n",
    )
    .unwrap();
    let before = std::fs::metadata(&user).unwrap().modified().unwrap();
    let sb = sb.with_env("KUBECONFIG", &user.display().to_string());
    ok(&sb.create(&[]));
    let run = sb.create(&["--output", "json"]);
    ok(&run);
    let doc = run.json();
    assert_eq!(doc["cluster"]["created"], false, "{doc:#}");
    assert_eq!(doc["cluster"]["name"], "dev");
    assert_eq!(doc["cluster"]["context"], "kind-dev");
    let creates = sb
        .calls()
        .iter()
        .filter(|c| c.starts_with("create"))
        .count();
    assert_eq!(creates, 1, "{:?}", sb.calls());
    assert!(!sb.calls().iter().any(|c| c.starts_with("delete")));
    ok(&sb.pd.run_with(&["down"]));
    assert_eq!(
        std::fs::read_to_string(&user).unwrap(),
        "apiVersion: v1\nkind: Config\ncurrent-context: prod\n"
    );
    assert_eq!(
        std::fs::metadata(&user).unwrap().modified().unwrap(),
        before
    );
    let names: Vec<_> = std::fs::read_dir(user.parent().unwrap()).unwrap().collect();
    assert_eq!(names.len(), 1, "no backup or temp files next to it");
}

#[test]
fn a_changed_definition_is_drift_naming_what_differs() {
    let Some(sb) = sandbox("dev", "ok") else {
        return;
    };
    ok(&sb.create(&[]));
    let [other, _, _] = free_ports();
    let run = sb.create(&["--http-port", &other.to_string()]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.starts_with(
            "error[cluster-drift]: the cluster dev was made from a different definition"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("+         hostPort: {other}")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("pulsedev reset"), "{}", run.stderr);
    assert_eq!(
        sb.calls()
            .iter()
            .filter(|c| c.starts_with("create"))
            .count(),
        1,
        "drift must not create"
    );
    // With consent, it is made again.
    let run = sb.create(&["--http-port", &other.to_string(), "--recreate"]);
    ok(&run);
    assert!(run.stdout.contains("made again"), "{}", run.stdout);
    let verbs: Vec<String> = sb
        .calls()
        .iter()
        .filter(|c| !c.starts_with("version") && !c.starts_with("get"))
        .map(|c| c.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        verbs,
        ["create cluster", "delete cluster", "create cluster"]
    );
}

#[test]
fn down_removes_everything_and_twice_is_fine() {
    let Some(sb) = sandbox("dev", "ok") else {
        return;
    };
    ok(&sb.create(&[]));
    let run = sb.pd.run_with(&["down"]);
    ok(&run);
    assert_eq!(
        run.stdout,
        "deleted the kind cluster dev\nremoved pulsedev's state for dev\n"
    );
    assert!(!sb.state().exists());
    assert!(kind_clusters(&sb.kind).is_empty());
    let state = sb.state().display().to_string();
    assert!(
        sb.calls().contains(&format!(
            "delete cluster --name dev --kubeconfig {state}/kubeconfig"
        )),
        "{:?}",
        sb.calls()
    );
    let again = sb.pd.run_with(&["down", "--output", "json"]);
    ok(&again);
    let doc = again.json();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["down"]["cluster_deleted"], false);
    assert_eq!(doc["down"]["state_removed"], false);
    assert_eq!(
        sb.calls()
            .iter()
            .filter(|c| c.starts_with("delete"))
            .count(),
        1
    );
    assert!(!sb.state().exists());
}

/// Issue 13: a corrupted journal.json or cluster.json (a crash mid-write on a
/// filesystem without ordered writes, a hand edit) must never leave the user deleting
/// files by hand: the journal is set aside with a warning and the run goes on, and
/// `down` removes the cluster an unreadable record describes.
#[test]
fn corrupt_state_files_never_dead_end() {
    let Some(sb) = sandbox("dev", "ok") else {
        return;
    };
    ok(&sb.create(&[]));
    std::fs::write(sb.state().join("journal.json"), "{\"pid\": 12, \"entr").unwrap();
    let run = sb.create(&[]);
    ok(&run);
    assert!(
        run.stderr
            .contains("warning: the journal of an earlier run was unreadable"),
        "{}",
        run.stderr
    );
    let aside: Vec<String> = std::fs::read_dir(sb.state())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("journal.json.unreadable-"))
        .collect();
    assert_eq!(aside.len(), 1, "set aside, not deleted");

    // Now the ownership record: `down` still removes the cluster.
    std::fs::write(sb.state().join("cluster.json"), "\u{0}\u{0}garbage").unwrap();
    std::fs::write(sb.state().join("journal.json"), "not json").unwrap();
    let run = sb.pd.run_with(&["down"]);
    ok(&run);
    assert!(
        run.stderr.contains("cluster.json is unreadable"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("deleted the kind cluster dev"),
        "{}",
        run.stdout
    );
    assert!(kind_clusters(&sb.kind).is_empty());
    assert!(!sb.state().exists());
}

/// Issue 13: a kind config that binds the API server or a host port on 0.0.0.0 is
/// refused before kind runs, unless `--allow-external-binds` asks for it (then said).
#[test]
fn binds_beyond_loopback_need_an_explicit_flag() {
    let Some(sb) = sandbox("dev", "ok") else {
        return;
    };
    let open = pulsedev::cluster::kindconfig::TEMPLATE.replace(
        "apiServerAddress: \"127.0.0.1\"",
        "apiServerAddress: \"0.0.0.0\"",
    );
    sb.pd.write("kind-config/dev.yaml", &open);
    let run = sb.create(&["--output", "json"]);
    assert_eq!(run.code, 4, "{run:#?}");
    let doc = run.json();
    assert_eq!(doc["error"]["id"], "config-invalid");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the API server listens on 0.0.0.0"),
        "{doc:#}"
    );
    assert!(
        !sb.calls().iter().any(|c| c.starts_with("create")),
        "kind never ran: {:?}",
        sb.calls()
    );
    let run = sb.create(&["--allow-external-binds"]);
    ok(&run);
    assert!(
        run.stderr
            .contains("warning: --allow-external-binds: the cluster is reachable from the network"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_kind_cluster_pulsedev_did_not_make_is_never_touched() {
    let Some(sb) = sandbox("theirs", "ok") else {
        return;
    };
    std::fs::write(sb.kind.join("clusters"), "theirs\n").unwrap();
    let run = sb.create(&[]);
    assert_eq!(run.code, 4, "{run:#?}");
    assert!(
        run.stderr.starts_with("error[not-a-kind-context]: a kind cluster named theirs exists, but pulsedev did not make it"),
        "{}",
        run.stderr
    );
    // down removes what pulsedev made (its own state), and leaves theirs alone, saying so.
    let run = sb.pd.run_with(&["down"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stderr.contains(
            "a kind cluster named theirs exists, but pulsedev did not make it: left alone"
        ),
        "{}",
        run.stderr
    );
    assert!(
        !sb.calls()
            .iter()
            .any(|c| c.starts_with("delete") || c.starts_with("create"))
    );
    assert_eq!(kind_clusters(&sb.kind), ["theirs"]);
    // Nor can its kubeconfig be asked for: pulsedev has no such cluster.
    let run = sb.pd.run_with(&["kubeconfig"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .starts_with("error[not-ready]: pulsedev has no cluster `theirs` on this machine"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_tampered_kubeconfig_is_refused_before_any_change() {
    let Some(sb) = sandbox("dev", "ok") else {
        return;
    };
    ok(&sb.create(&[]));
    let kc = sb.state().join("kubeconfig");
    let text = std::fs::read_to_string(&kc).unwrap();
    let prod = regex::Regex::new(r"server: .*")
        .unwrap()
        .replace(&text, "server: https://prod.example.com:6443")
        .into_owned();
    std::fs::write(&kc, prod).unwrap();
    let run = sb.create(&["--reset"]);
    assert_eq!(run.code, 4, "{run:#?}");
    assert!(
        run.stderr
            .contains("points at \"https://prod.example.com:6443\""),
        "{}",
        run.stderr
    );
    assert!(!sb.calls().iter().any(|c| c.starts_with("delete")));
}

#[test]
fn kinds_failure_texts_become_cluster_create_failed_and_nothing_is_left() {
    let Some(sb) = sandbox("dev", "fail") else {
        return;
    };
    let run = sb.create(&[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.contains(
            "error[cluster-create-failed]: failed to create the kind cluster dev: `kind create cluster` exited with code 1\n"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("ERROR: failed to create cluster: failed to init node with kubeadm"),
        "{}",
        run.stderr
    );
    assert!(!sb.state().join("kubeconfig").exists());
    assert!(!sb.state().join("cluster.json").exists());

    let sb = sb.with_env("FAKE_KIND_MODE", "exists");
    let run = sb.create(&["--output", "json"]);
    assert_eq!(run.code, 1);
    let doc = run.json();
    assert_eq!(doc["error"]["id"], "cluster-create-failed");
    assert!(
        doc["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("kind delete cluster --name dev"),
        "{doc:#}"
    );
}

#[test]
fn nodes_that_never_become_ready_fail_after_the_wait() {
    let Some(sb) = sandbox("dev", "ok") else {
        return;
    };
    sb.api
        .ready
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let run = sb.pd.run_with(&["cluster", "create", "--wait", "2"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.contains(
            "error[cluster-create-failed]: the nodes of the cluster dev were not Ready within 2s"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("dev-control-plane: KubeletNotReady"),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // The cluster was made by pulsedev: `down` can remove it.
    ok(&sb.pd.run_with(&["down"]));
    assert!(kind_clusters(&sb.kind).is_empty());
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 13: SIGTERM (a CI job cancelled, `timeout`, `kill`) and SIGHUP (the terminal
/// closed) during `cluster create` are handled like Ctrl-C: this run's cluster is
/// deleted, no temporary file is left, the journal says `undone`, and the exit code
/// is 128 + the signal.
#[test]
fn sigterm_and_sighup_during_create_undo_like_ctrl_c() {
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGHUP, 129)] {
        let Some(sb) = sandbox("dev", "hang") else {
            return;
        };
        let child = sb
            .pd
            .command_with(&["cluster", "create", "--wait", "5"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("kind create", Duration::from_secs(20), || {
            sb.calls().iter().any(|c| c.starts_with("create cluster"))
        });
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "signal {signal}: {stderr}");
        assert!(stderr.contains("error[interrupted]"), "{stderr}");
        assert!(
            sb.calls()
                .last()
                .unwrap()
                .starts_with("delete cluster --name dev"),
            "{:?}",
            sb.calls()
        );
        assert!(kind_clusters(&sb.kind).is_empty());
        let j: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(sb.state().join("journal.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(j["status"], "undone", "{j:#}");
        let left: Vec<String> = std::fs::read_dir(sb.state())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}

#[test]
fn ctrl_c_undoes_what_this_run_created_and_the_next_run_starts_clean() {
    let Some(sb) = sandbox("dev", "hang") else {
        return;
    };
    let child = sb
        .pd
        .command_with(&["cluster", "create", "--wait", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("kind create", Duration::from_secs(20), || {
        sb.calls().iter().any(|c| c.starts_with("create cluster"))
    });
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        stderr.contains("error[interrupted]: interrupted"),
        "{stderr}"
    );
    let state = sb.state().display().to_string();
    assert_eq!(
        sb.calls().last().unwrap(),
        &format!("delete cluster --name dev --kubeconfig {state}/kubeconfig"),
        "the cleanup call"
    );
    assert!(kind_clusters(&sb.kind).is_empty());
    // The journal says what happened, and stays private.
    let journal = sb.state().join("journal.json");
    assert_eq!(mode(&journal), 0o600);
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&journal).unwrap()).unwrap();
    assert_eq!(j["status"], "undone", "{j:#}");
    let entries = j["entries"].as_array().unwrap();
    assert!(entries.iter().all(|e| e["status"] == "undone"), "{j:#}");
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "kind-cluster" && e["name"] == "dev")
    );
    assert!(!sb.state().join("kubeconfig").exists());

    // The next run proceeds from there.
    let sb = sb.with_env("FAKE_KIND_MODE", "ok");
    let run = sb.create(&[]);
    ok(&run);
    assert!(
        run.stdout.starts_with("cluster dev created"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_run_killed_mid_create_is_cleaned_up_by_the_next_one() {
    let Some(sb) = sandbox("dev", "hang") else {
        return;
    };
    let mut child = sb
        .pd
        .command_with(&["cluster", "create", "--wait", "5"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("kind create", Duration::from_secs(20), || {
        kind_clusters(&sb.kind) == ["dev"]
    });
    // A kill (or a second Ctrl-C) leaves no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    // The orphaned fake kind (pulsedev could not stop it) is this test's to end.
    let hung: i32 = std::fs::read_to_string(sb.kind.join("hang.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: the fake kind this test started (through pulsedev).
    unsafe { libc::kill(hung, libc::SIGKILL) };
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.state().join("journal.json")).unwrap())
            .unwrap();
    assert_eq!(j["status"], "running");
    let sb = sb.with_env("FAKE_KIND_MODE", "ok");
    let run = sb.create(&[]);
    ok(&run);
    assert!(
        run.stderr
            .contains("removing the half-made cluster dev an interrupted run"),
        "{}",
        run.stderr
    );
    let verbs: Vec<String> = sb
        .calls()
        .iter()
        .filter(|c| c.starts_with("create") || c.starts_with("delete"))
        .map(|c| c.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        verbs,
        ["create cluster", "delete cluster", "create cluster"]
    );
}

#[test]
fn two_ci_runs_at_once_get_their_own_names_kubeconfigs_and_ports() {
    let Some(host) = docker_host() else { return };
    let pd = fakes::with_node_image(Pd::new().tool("kind", FAKE_KIND), &host);
    let kind = pd.home.path().join("fake-kind");
    std::fs::create_dir_all(&kind).unwrap();
    let api = FakeApi::start("node");
    let pd = pd
        .env("DOCKER_HOST", host)
        .env("FAKE_KIND_DIR", kind.display().to_string())
        .env("FAKE_KIND_MODE", "slow")
        .env("FAKE_API", api.url.clone())
        .env("CI", "true");
    let spawn = || {
        pd.command_with(&["cluster", "create", "--wait", "5", "--output", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let docs: Vec<serde_json::Value> = [a, b]
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    let (x, y) = (&docs[0]["cluster"], &docs[1]["cluster"]);
    let name = |v: &serde_json::Value| v["name"].as_str().unwrap().to_string();
    assert_ne!(name(x), name(y));
    for v in [x, y] {
        assert!(name(v).starts_with("ci-") && name(v).len() <= 50, "{v:#}");
    }
    assert_ne!(x["kubeconfig"], y["kubeconfig"]);
    let ports = |v: &serde_json::Value| {
        vec![
            v["ports"]["http"].as_u64().unwrap(),
            v["ports"]["https"].as_u64().unwrap(),
            v["registry_port"].as_u64().unwrap(),
        ]
    };
    let mut all = ports(x);
    all.extend(ports(y));
    let mut uniq = all.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 6, "ports collide: {all:?}");
    assert!(!all.contains(&80) && !all.contains(&443));
    // Each kind call got its own kubeconfig.
    let creates: Vec<String> = kind_calls(&kind)
        .into_iter()
        .filter(|c| c.starts_with("create"))
        .collect();
    assert_eq!(creates.len(), 2);
    assert!(
        creates[0].contains(&format!("--name {}", name(x)))
            || creates[1].contains(&format!("--name {}", name(x)))
    );
}

#[test]
fn kubeconfig_prints_the_path_and_merge_is_an_explicit_opt_in() {
    let Some(sb) = sandbox("dev", "ok") else {
        return;
    };
    ok(&sb.create(&[]));
    let run = sb.pd.run_with(&["kubeconfig"]);
    ok(&run);
    let ours = sb.state().join("kubeconfig");
    assert_eq!(run.stdout, format!("{}\n", ours.display()));
    assert!(!sb.pd.home.path().join(".kube").exists());

    let user = sb.pd.home.path().join(".kube/config");
    std::fs::create_dir_all(user.parent().unwrap()).unwrap();
    let theirs = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://prod.example.com\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: admin\ncurrent-context: prod\nusers:\n- name: admin\n  user:\n    token: secret\n";
    std::fs::write(&user, theirs).unwrap();
    let run = sb.pd.run_with(&["kubeconfig", "--merge"]);
    ok(&run);
    assert!(
        run.stdout.contains("added the context kind-dev to"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("current context: prod (unchanged"),
        "{}",
        run.stdout
    );
    let merged = std::fs::read_to_string(&user).unwrap();
    assert!(merged.contains("kind-dev"), "{merged}");
    assert!(merged.contains("current-context: prod"), "{merged}");
    assert_eq!(
        std::fs::read_to_string(user.with_file_name("config.pulsedev-backup")).unwrap(),
        theirs
    );
    assert_eq!(mode(&user), 0o600);
}

// ---- against the real Docker engine ----

#[test]
fn stopped_node_containers_are_started_on_reuse_real_docker() {
    let name = fakes::unique("pdt-stopped");
    let Some(sb) = sandbox(&name, "ok") else {
        return;
    };
    let host = docker_host().unwrap();
    let rt = fakes::rt();
    let node = format!("{name}-control-plane");
    rt.block_on(async {
        let d = fakes::docker(&host).await;
        fakes::run_container(
            &d,
            &node,
            &[
                ("io.x-k8s.kind.cluster", &name),
                ("io.x-k8s.kind.role", "control-plane"),
            ],
        )
        .await;
    });
    ok(&sb.create(&[]));
    rt.block_on(async {
        let d = fakes::docker(&host).await;
        d.kill_container(
            &node,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .unwrap();
        assert_eq!(
            fakes::container_state(&d, &node).await.as_deref(),
            Some("exited")
        );
    });
    let run = sb.create(&["--output", "json"]);
    let state = rt.block_on(async {
        let d = fakes::docker(&host).await;
        let s = fakes::container_state(&d, &node).await;
        fakes::remove_container(&d, &node).await;
        s
    });
    ok(&run);
    assert_eq!(run.json()["cluster"]["started_nodes"][0], node.as_str());
    assert!(
        run.stderr
            .contains(&format!("starting the stopped node container(s) {node}")),
        "{}",
        run.stderr
    );
    assert_eq!(state.as_deref(), Some("running"));
}

#[test]
fn down_removes_the_registry_container_real_docker() {
    let name = fakes::unique("pdt-down");
    let Some(sb) = sandbox(&name, "ok") else {
        return;
    };
    let host = docker_host().unwrap();
    let rt = fakes::rt();
    ok(&sb.create(&[]));
    let registry = format!("pulsedev-{name}-registry");
    rt.block_on(async {
        let d = fakes::docker(&host).await;
        fakes::run_container(&d, &registry, &[]).await;
    });
    let run = sb.pd.run_with(&["down", "--output", "json"]);
    ok(&run);
    assert_eq!(run.json()["down"]["registry_removed"], true);
    let gone = rt.block_on(async {
        let d = fakes::docker(&host).await;
        fakes::container_state(&d, &registry).await.is_none()
    });
    assert!(gone);
}

/// The registry wiring through the library against real containers: the hosts file
/// inside the node, the registry on the cluster network, the KEP-1755 ConfigMap.
#[test]
fn registry_wiring_against_real_containers() {
    use pulsedev::cluster::{self, RegistryRef, Target};
    let Some(host) = docker_host() else { return };
    let name = fakes::unique("pdt-wire");
    let node = format!("{name}-control-plane");
    let lb = format!("{name}-external-load-balancer");
    let registry = cluster::registry_container(&name);
    let network = fakes::unique("pdt-net");
    let rt = fakes::rt();
    let api = FakeApi::start(&node);
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        kubeconfig.path(),
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: kind-{name}\n  cluster:\n    server: {}\ncontexts:\n- name: kind-{name}\n  context:\n    cluster: kind-{name}\n    user: u\ncurrent-context: kind-{name}\nusers:\n- name: u\n  user:\n    token: t\n", api.url),
    )
    .unwrap();
    rt.block_on(async {
        let d = fakes::docker(&host).await;
        fakes::run_container(
            &d,
            &node,
            &[
                ("io.x-k8s.kind.cluster", &name),
                ("io.x-k8s.kind.role", "control-plane"),
            ],
        )
        .await;
        // kind's envoy in front of several control planes carries the cluster label
        // too, with its own role (kind v0.32.0: pkg/cluster/internal/providers/docker/
        // provision.go labels it; pkg/cluster/constants/constants.go names the role).
        fakes::run_container(
            &d,
            &lb,
            &[
                ("io.x-k8s.kind.cluster", &name),
                ("io.x-k8s.kind.role", "external-load-balancer"),
            ],
        )
        .await;
        fakes::run_container(&d, &registry, &[]).await;
        d.create_network(bollard::models::NetworkCreateRequest {
            name: network.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

        let nodes = cluster::nodes::DockerNodes {
            docker: d.clone(),
            host: host.clone(),
        };
        let dirs = pulsedev::state::Dirs {
            state: PathBuf::from("/nonexistent"),
            cache: PathBuf::from("/nonexistent"),
        };
        let ui = pulsedev::ui::Ui::new(pulsedev::ui::decide(pulsedev::ui::Inputs {
            format: pulsedev::ui::Format::Human,
            color: pulsedev::ui::ColorChoice::Never,
            quiet: true,
            verbose: false,
            no_color: true,
            dumb_term: true,
            stdout_tty: false,
            stderr_tty: false,
            ci: true,
        }));
        let cancel = tokio_util::sync::CancellationToken::new();
        let runner = cluster::process::ProcessRunner;
        let api_factory = |k: &Path, c: &str| -> Box<dyn cluster::api::ClusterApi> {
            Box::new(cluster::api::KubeApi {
                kubeconfig: k.to_path_buf(),
                context: c.to_string(),
            })
        };
        let deps = cluster::Deps {
            runner: &runner,
            nodes: &nodes,
            api: &api_factory,
            dirs: &dirs,
            kind: PathBuf::from("kind"),
            ui: &ui,
            cancel: &cancel,
        };
        let target = Target {
            name: name.clone(),
            kubeconfig: kubeconfig.path().to_path_buf(),
            context: format!("kind-{name}"),
        };
        let reg = RegistryRef {
            container: registry.clone(),
            container_port: 5000,
            host_port: 5001,
        };
        let first = cluster::wire_registry(&deps, &target, &network, &reg).await;
        let second = cluster::wire_registry(&deps, &target, &network, &reg).await;
        let hosts = fakes::cat(
            &d,
            &node,
            "/etc/containerd/certs.d/localhost:5001/hosts.toml",
        )
        .await;
        let on_network = d
            .inspect_container(&registry, None)
            .await
            .unwrap()
            .network_settings
            .and_then(|n| n.networks)
            .is_some_and(|n| n.contains_key(&network));
        let lb_hosts =
            fakes::cat(&d, &lb, "/etc/containerd/certs.d/localhost:5001/hosts.toml").await;
        fakes::remove_container(&d, &node).await;
        fakes::remove_container(&d, &lb).await;
        fakes::remove_container(&d, &registry).await;
        let _ = d.remove_network(&network).await;

        let first = first.unwrap();
        // The load balancer is no node: nothing is written there.
        assert_eq!(first.nodes, std::slice::from_ref(&node));
        assert!(lb_hosts.contains("No such file"), "{lb_hosts}");
        assert!(first.connected);
        assert!(
            !second.unwrap().connected,
            "the second wiring changes nothing"
        );
        assert!(on_network);
        assert_eq!(hosts, cluster::hosts_toml(&reg).1);
        let cm = api
            .requests()
            .into_iter()
            .find(|r| {
                r.starts_with(
                    "PATCH /api/v1/namespaces/kube-public/configmaps/local-registry-hosting?",
                )
            })
            .unwrap_or_else(|| panic!("{:?}", api.requests()));
        assert!(cm.contains("fieldManager=pulsedev"), "{cm}");
        assert!(cm.contains("localRegistryHosting.v1"), "{cm}");
        assert!(cm.contains("localhost:5001"), "{cm}");
    });
}

// ---- tools: fetched when missing, verified, cached ----

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// No kind on PATH: the pinned release comes from a mirror on 127.0.0.1 (here: the
/// fake kind itself, with a pins file naming its checksum), is cached, and is used
/// from the cache once the mirror is gone.
#[test]
fn a_missing_kind_is_fetched_verified_cached_and_used_offline() {
    let Some(host) = docker_host() else { return };
    let script = format!("#!/bin/sh\n{FAKE_KIND}\n").into_bytes();
    let platform = {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        format!("linux-{arch}")
    };
    let mirror = fakes::Mirror::start(vec![(
        format!("/kind/v0.32.0/kind-{platform}"),
        script.clone(),
    )]);
    let pd = fakes::with_node_image(Pd::new(), &host);
    let pins = pd.home.path().join("pins.toml");
    std::fs::write(
        &pins,
        format!(
            "[kind]\nversion = \"v0.32.0\"\n[kind.{platform}]\nurl = \"https://github.com/kubernetes-sigs/kind/releases/download/v0.32.0/kind-{platform}\"\nsha256 = \"{}\"\n",
            sha256_hex(&script)
        ),
    )
    .unwrap();
    let kind = pd.home.path().join("fake-kind");
    std::fs::create_dir_all(&kind).unwrap();
    let api = FakeApi::start("dev-control-plane");
    let [http, https, registry] = free_ports();
    let pd = pd
        .env("DOCKER_HOST", host)
        .env("FAKE_KIND_DIR", kind.display().to_string())
        .env("FAKE_API", api.url.clone())
        .env("PULSEDEV_TOOLS_MIRROR", mirror.url.clone())
        .env("PULSEDEV_TOOLS_PINS", pins.display().to_string())
        .args(&[
            "--name",
            "dev",
            "--http-port",
            &http.to_string(),
            "--https-port",
            &https.to_string(),
            "--registry-port",
            &registry.to_string(),
        ]);
    let run = pd.run_with(&["cluster", "create", "--wait", "5"]);
    ok(&run);
    assert!(
        run.stderr.contains("downloading kind v0.32.0 from"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("warning: PULSEDEV_TOOLS_PINS=")
            && run.stderr.contains("warning: PULSEDEV_TOOLS_MIRROR="),
        "overridden pins and mirror are said loudly: {}",
        run.stderr
    );
    let cached = pd
        .home
        .path()
        .join("cache/pulsedev/tools/kind/v0.32.0")
        .join(sha256_hex(&script))
        .join("kind");
    assert_eq!(std::fs::read(&cached).unwrap(), script);
    assert_eq!(mode(&cached), 0o755);
    assert_eq!(mirror.hits.lock().unwrap().len(), 1);

    // Offline now: the cached copy is used.
    mirror.stop();
    ok(&pd.run_with(&["down"]));
    let run = pd.run_with(&["cluster", "create", "--wait", "5"]);
    ok(&run);
    assert!(!run.stderr.contains("downloading"), "{}", run.stderr);
    assert_eq!(mirror.hits.lock().unwrap().len(), 1);

    // Issue 13: what those pins brought is not "kind v0.32.0" for the compiled-in pins.
    let plain = pd
        .without("PULSEDEV_TOOLS_PINS")
        .without("PULSEDEV_TOOLS_MIRROR");
    let doctor = plain.run_with(&["doctor", "--output", "json"]);
    let kind_check = doctor.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "kind")
        .cloned()
        .unwrap();
    assert!(
        !kind_check["message"]
            .as_str()
            .unwrap()
            .contains("from pulsedev's cache"),
        "{kind_check:#}"
    );
}

/// Issue 13: a script planted where the cached kind lives is not run: `doctor` fails
/// the check, `down` refuses it (and deletes it) instead of running it.
#[test]
fn a_planted_cached_kind_is_refused_not_run() {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let (_, asset) = pulsedev::tools::fetch::lookup(
        pulsedev::tools::fetch::PINS,
        "kind",
        &format!("linux-{arch}"),
    )
    .unwrap();
    let pd = Pd::new().args(&["--name", "dev"]);
    let witness = pd.home.path().join("planted-ran");
    let bin = pulsedev::tools::fetch::cached_path(
        &pd.home.path().join("cache/pulsedev/tools"),
        &asset.unwrap(),
    )
    .unwrap();
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\ntouch {}\necho kind v0.32.0 go1.24 linux/amd64\n",
            witness.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let doctor = pd.run_with(&["doctor", "--output", "json"]);
    let doc = doctor.json();
    let kind_check = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "kind")
        .cloned()
        .unwrap();
    assert_eq!(kind_check["status"], "fail", "{kind_check:#}");
    assert_eq!(kind_check["problem"], "tool-checksum-mismatch");
    assert!(!bin.exists(), "the planted file was deleted");
    assert!(!witness.exists(), "the planted file never ran");
}

#[test]
fn a_download_that_does_not_match_the_pins_is_refused_and_deleted() {
    let Some(host) = docker_host() else { return };
    // The committed pins, a mirror serving something else.
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let mirror = fakes::Mirror::start(vec![(
        format!("/kind/v0.32.0/kind-linux-{arch}"),
        b"#!/bin/sh\necho tampered\n".to_vec(),
    )]);
    let pd = Pd::new()
        .env("DOCKER_HOST", host)
        .env("PULSEDEV_TOOLS_MIRROR", mirror.url.clone())
        .args(&["--name", "dev"]);
    let run = pd.run_with(&["cluster", "create", "--output", "json"]);
    assert_eq!(run.code, 3, "{run:#?}");
    let doc = run.json();
    assert_eq!(doc["error"]["id"], "tool-checksum-mismatch");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not match its pinned checksum; it was deleted")
    );
    let dir = pd.home.path().join("cache/pulsedev/tools/kind/v0.32.0");
    let dir = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .expect("the pin's directory")
        .unwrap()
        .path();
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn ctrl_c_while_waiting_for_readiness_deletes_the_new_cluster() {
    let Some(sb) = sandbox("dev", "ok") else {
        return;
    };
    sb.api
        .ready
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let child = sb
        .pd
        .command_with(&["cluster", "create", "--wait", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("a readiness request", Duration::from_secs(20), || {
        sb.api
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/nodes"))
    });
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        sb.calls()
            .last()
            .unwrap()
            .starts_with("delete cluster --name dev")
    );
    for f in ["cluster.json", "kind-config.yaml", "kubeconfig"] {
        assert!(!sb.state().join(f).exists(), "{f} left behind");
    }
    assert!(kind_clusters(&sb.kind).is_empty());
}

#[test]
fn ctrl_c_never_undoes_what_an_earlier_run_made() {
    let Some(sb) = sandbox("dev", "ok") else {
        return;
    };
    ok(&sb.create(&[]));
    // The reused cluster's nodes are slow to come back; the user gives up.
    sb.api
        .ready
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let child = sb
        .pd
        .command_with(&["cluster", "create", "--wait", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let before = sb.api.requests().len();
    wait_for("a readiness request", Duration::from_secs(20), || {
        sb.api.requests().len() > before
    });
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        !sb.calls().iter().any(|c| c.starts_with("delete")),
        "{:?}",
        sb.calls()
    );
    assert_eq!(kind_clusters(&sb.kind), ["dev"]);
    assert!(sb.state().join("cluster.json").exists());
}

#[test]
fn a_cluster_an_interrupted_run_finished_is_resumed_from_the_journal() {
    let Some(sb) = sandbox("dev", "ok") else {
        return;
    };
    ok(&sb.create(&[]));
    // As if the run died right after `kind create` returned, before its record.
    let state = sb.state();
    std::fs::remove_file(state.join("cluster.json")).unwrap();
    std::fs::write(
        state.join("journal.json"),
        r#"{"pid": 1, "started_at": 0, "command": "pulsedev up", "status": "running",
            "entries": [{"action": "kind-cluster", "name": "dev", "status": "done"}]}"#,
    )
    .unwrap();
    let run = sb.create(&[]);
    ok(&run);
    assert!(
        run.stdout.starts_with("cluster dev resumed"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("resuming: the cluster dev was created by an interrupted run (pid 1)"),
        "{}",
        run.stderr
    );
    assert_eq!(
        sb.calls()
            .iter()
            .filter(|c| c.starts_with("create"))
            .count(),
        1
    );
    assert!(state.join("cluster.json").exists());
}

#[test]
fn a_second_pulsedev_on_the_same_cluster_is_told_to_wait() {
    let Some(sb) = sandbox("dev", "hang") else {
        return;
    };
    let mut first = sb
        .pd
        .command_with(&["cluster", "create"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("kind create", Duration::from_secs(20), || {
        sb.calls().iter().any(|c| c.starts_with("create"))
    });
    let run = sb.create(&[]);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(first.id() as i32, libc::SIGINT) };
    first.wait().unwrap();
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("error[cluster-busy]"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "another pulsedev (pid {}) is working on the cluster dev",
            first.id()
        )),
        "{}",
        run.stderr
    );
}

// ---- kind as it really behaves: provider choice, kubeconfig lock ----

/// With podman's `docker` shim first on PATH (podman-docker), kind left to itself
/// makes podman nodes the Docker API never sees. pulsedev pins the docker provider
/// for every call, as kind's KIND_EXPERIMENTAL_PROVIDER allows.
#[test]
fn kind_always_runs_with_the_docker_provider() {
    let Some(sb) = sandbox("dev", "ok") else {
        return;
    };
    let pd = sb
        .pd
        .tool("docker", r#"[ "$1" = -v ] && echo "podman version 4.3.1""#)
        .tool("podman", r#"[ "$1" = -v ] && echo "podman version 4.3.1""#);
    let sb = Sandbox { pd, ..sb };
    ok(&sb.create(&[]));
    ok(&sb.pd.run_with(&["down"]));
    let providers = fakes::kind_providers(&sb.kind);
    assert!(!providers.is_empty());
    assert!(
        providers.iter().all(|p| p == "docker"),
        "{providers:?} for {:?}",
        sb.calls()
    );
    assert!(kind_clusters(&sb.kind).is_empty(), "down deleted it");
}

/// Ctrl-C while kind holds `<kubeconfig>.lock` (pulsedev kills kind's process group):
/// the lock stays behind. The clean-up delete, `down` and the next `up` must not be
/// wedged by it ("failed to lock config file").
#[test]
fn a_kubeconfig_lock_left_by_a_killed_kind_wedges_nothing() {
    let Some(sb) = sandbox("dev", "hang-in-lock") else {
        return;
    };
    let lock = sb.state().join("kubeconfig.lock");
    let child = sb
        .pd
        .command_with(&["cluster", "create", "--wait", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("kind to take its lock", Duration::from_secs(20), || {
        sb.kind.join("hang.pid").exists()
    });
    assert!(lock.exists());
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("kubeconfig.lock, left by a kind that was stopped"),
        "{stderr}"
    );
    assert!(!stderr.contains("failed to lock config file"), "{stderr}");
    assert!(kind_clusters(&sb.kind).is_empty(), "the undo deleted it");

    // A stale lock in front of a create, then in front of a delete.
    let sb = sb.with_env("FAKE_KIND_MODE", "ok");
    std::fs::create_dir_all(sb.state()).unwrap();
    std::fs::write(&lock, "").unwrap();
    ok(&sb.create(&[]));
    assert!(!lock.exists());
    std::fs::write(&lock, "").unwrap();
    let run = sb.pd.run_with(&["down"]);
    ok(&run);
    assert!(kind_clusters(&sb.kind).is_empty());
    assert!(!sb.state().exists(), "{}", run.stderr);
}

/// kind fails `delete` after deleting the nodes when it cannot update the kubeconfig
/// (kind v0.32.0: pkg/cluster/internal/delete/delete.go): `down` finishes anyway.
#[test]
fn down_finishes_when_kind_deleted_the_nodes_but_failed_after() {
    let Some(sb) = sandbox("dev", "ok") else {
        return;
    };
    ok(&sb.create(&[]));
    // A kind that fails its kubeconfig update once the nodes are gone, whatever the
    // lock: a directory where the lock file would go cannot be removed by pulsedev's
    // stale-lock clean-up as a file, so kind's O_EXCL open fails.
    let lock = sb.state().join("kubeconfig.lock");
    std::fs::create_dir_all(lock.join("held")).unwrap();
    let run = sb.pd.run_with(&["down"]);
    assert!(kind_clusters(&sb.kind).is_empty());
    let _ = std::fs::remove_dir_all(&lock);
    ok(&run);
    assert!(
        run.stderr
            .contains("kind reported an error but the cluster dev is gone"),
        "{}",
        run.stderr
    );
}

/// A kind on PATH made for older node images (v0.31: up to Kubernetes 1.35) is not used
/// with kind v0.32's node image (v1.36.1); the pinned release is fetched instead, and
/// the run says why.
#[test]
fn a_kind_that_does_not_support_the_node_image_is_replaced_by_the_pinned_one() {
    let Some(host) = docker_host() else { return };
    let script = format!("#!/bin/sh\n{FAKE_KIND}\n").into_bytes();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let platform = format!("linux-{arch}");
    let mirror = fakes::Mirror::start(vec![(
        format!("/kind/v0.32.0/kind-{platform}"),
        script.clone(),
    )]);
    // The kind on PATH answers `version` only; anything else run with it fails.
    let pd = fakes::with_node_image(Pd::new(), &host).tool(
        "kind",
        r#"[ "$1" = version ] && { echo "kind v0.31.0 go1.25.5 linux/amd64"; exit 0; }
echo "ERROR: the kind on PATH ran: $*" >&2; exit 1"#,
    );
    let pins = pd.home.path().join("pins.toml");
    std::fs::write(
        &pins,
        format!(
            "[kind]\nversion = \"v0.32.0\"\n[kind.{platform}]\nurl = \"https://github.com/kubernetes-sigs/kind/releases/download/v0.32.0/kind-{platform}\"\nsha256 = \"{}\"\n",
            sha256_hex(&script)
        ),
    )
    .unwrap();
    let kind = pd.home.path().join("fake-kind");
    std::fs::create_dir_all(&kind).unwrap();
    let api = FakeApi::start("dev-control-plane");
    let [http, https, registry] = free_ports();
    let pd = pd
        .env("DOCKER_HOST", host)
        .env("FAKE_KIND_DIR", kind.display().to_string())
        .env("FAKE_API", api.url.clone())
        .env("PULSEDEV_TOOLS_MIRROR", mirror.url.clone())
        .env("PULSEDEV_TOOLS_PINS", pins.display().to_string())
        .args(&[
            "--name",
            "dev",
            "--http-port",
            &http.to_string(),
            "--https-port",
            &https.to_string(),
            "--registry-port",
            &registry.to_string(),
        ]);
    let run = pd.run_with(&["cluster", "create", "--wait", "5"]);
    ok(&run);
    assert!(
        run.stderr.contains(
            "kind v0.31.0 supports node images up to Kubernetes 1.35, not kindest/node:v1.36.1 (made for kind v0.32.0)): using pulsedev's pinned kind v0.32.0"
        ),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("the kind on PATH ran"),
        "{}",
        run.stderr
    );
    assert!(
        kind_calls(&kind)
            .iter()
            .any(|c| c.starts_with("create cluster --name dev")),
        "{:?}",
        kind_calls(&kind)
    );
    ok(&pd.run_with(&["down"]));
}

/// The node image is pulled through the engine before `kind create` (so kind's time
/// limit never covers a download), with progress, and only when it is missing. Here
/// the "node image" lives only in a real registry on loopback, named by digest.
#[test]
fn the_node_image_is_pulled_before_kind_create_and_only_once() {
    use futures::StreamExt;
    let Some(sb) = sandbox("dev", "ok") else {
        return;
    };
    let host = docker_host().unwrap();
    let registry = crate::support::registry::LocalRegistry::start();
    let repo = format!("127.0.0.1:{}/kindest-node", registry.port);
    let tag = crate::support::build::nonce();
    let rt = fakes::rt();
    let image = rt.block_on(async {
        // An image of its own (a 4 MiB layer no other image has), pushed, then removed
        // from the engine with its layers: the pull has something to download.
        let engine = crate::support::docker::engine("node image pull")
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nonce"), &tag).unwrap();
        std::fs::write(
            dir.path().join("noise"),
            crate::support::build::noise(4 << 20, 7),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY nonce noise /\n",
        )
        .unwrap();
        let built = crate::support::build::build(&engine, "kindnode", dir.path()).await;
        let d = &engine.docker;
        d.tag_image(
            &built.reference(),
            Some(bollard::query_parameters::TagImageOptions {
                repo: Some(repo.clone()),
                tag: Some(tag.clone()),
            }),
        )
        .await
        .unwrap();
        let mut push = d.push_image(
            &repo,
            Some(bollard::query_parameters::PushImageOptions {
                tag: Some(tag.clone()),
                ..Default::default()
            }),
            None,
        );
        while let Some(item) = push.next().await {
            item.unwrap();
        }
        let digest =
            pulsedev::images::registry::manifest_digest(registry.port, "kindest-node", &tag)
                .await
                .unwrap()
                .expect("pushed");
        for r in [format!("{repo}:{tag}"), built.reference()] {
            let _ = d
                .remove_image(
                    &r,
                    Some(bollard::query_parameters::RemoveImageOptions {
                        force: true,
                        // Its untagged parents stay: concurrent builds use them as
                        // cache (support::build::remove_image says why).
                        noprune: true,
                        ..Default::default()
                    }),
                    None,
                )
                .await;
        }
        let image = format!("{repo}:{tag}@{digest}");
        assert!(d.inspect_image(&image).await.is_err());
        image
    });
    let sb = sb.with_env("PULSEDEV_NODE_IMAGE", &image);
    let run = sb.create(&[]);
    let present = rt.block_on(async {
        fakes::docker(&host)
            .await
            .inspect_image(&image)
            .await
            .is_ok()
    });
    ok(&run);
    assert!(present, "the node image was pulled");
    let pulled = run
        .stderr
        .find(&format!("pulled the kind node image {image} in "))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    let creating = run
        .stderr
        .find("creating the kind cluster dev")
        .unwrap_or_else(|| panic!("{}", run.stderr));
    assert!(pulled < creating, "{}", run.stderr);
    assert!(
        run.stderr.contains("pulling the kind node image: "),
        "progress is shown: {}",
        run.stderr
    );
    assert!(
        registry.log_text().contains(&format!(
            "/v2/kindest-node/manifests/{}",
            &image[image.find('@').unwrap() + 1..]
        )),
        "{}",
        registry.log_text()
    );
    // Present now: the next create pulls nothing.
    ok(&sb.pd.run_with(&["down"]));
    let again = sb.create(&[]);
    ok(&again);
    assert!(!again.stderr.contains("pulling"), "{}", again.stderr);
    ok(&sb.pd.run_with(&["down"]));
    rt.block_on(async {
        let d = fakes::docker(&host).await;
        let _ = d
            .remove_image(
                &image,
                Some(bollard::query_parameters::RemoveImageOptions {
                    force: true,
                    noprune: true,
                    ..Default::default()
                }),
                None,
            )
            .await;
    });
}
