//! `pulsedev build` against a real Docker engine: fixture services built `FROM scratch`
//! with Debian's static busybox, so nothing is pulled. Needs a Docker engine (see
//! tests/support/docker.rs: a missing engine fails under CI, skips otherwise).

use crate::support::docker;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BUSYBOX: &str = "/bin/busybox";

/// A directory with a pulsedev.toml and one context per service.
struct Fixture {
    dir: tempfile::TempDir,
    nonce: String,
}

struct Run {
    code: i32,
    json: Value,
    stderr: String,
}

impl Fixture {
    /// `services`: (name, extra Dockerfile lines).
    fn new(services: &[(&str, &str)], parallel: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        // A nonce in every context: each test run builds images of its own.
        let nonce = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let mut toml = format!("[images]\nparallel = {parallel}\n");
        for (name, extra) in services {
            let ctx = dir.path().join(name);
            std::fs::create_dir_all(ctx.join("src")).unwrap();
            std::fs::copy(BUSYBOX, ctx.join("busybox")).unwrap();
            std::fs::write(
                ctx.join("Dockerfile"),
                format!(
                    "FROM scratch\nCOPY busybox /bin/busybox\nCOPY src/ /app/\n{extra}CMD [\"/bin/busybox\", \"cat\", \"/app/main.txt\"]\n"
                ),
            )
            .unwrap();
            std::fs::write(ctx.join("src/main.txt"), format!("{name} v1 {nonce}\n")).unwrap();
            std::fs::write(ctx.join(".dockerignore"), "**/*.log\nnotes/\n").unwrap();
            std::fs::create_dir_all(ctx.join("notes")).unwrap();
            std::fs::write(ctx.join("notes/todo.md"), "ignored\n").unwrap();
            std::fs::write(ctx.join("src/debug.log"), "ignored\n").unwrap();
            toml.push_str(&format!("[services.{name}]\ncontext = \"{name}\"\n"));
        }
        std::fs::write(dir.path().join("pulsedev.toml"), toml).unwrap();
        Fixture { dir, nonce }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn build(&self, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_pulsedev"))
            .arg("build")
            .args(args)
            .args(["--output", "json"])
            .current_dir(self.dir.path())
            .env("XDG_CACHE_HOME", self.path(".cache"))
            .env_remove("NO_COLOR")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{stdout}"));
        Run {
            code: out.status.code().unwrap_or(-1),
            json,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The images list of a run, success or failure.
fn images(run: &Run) -> Vec<Value> {
    let list = if run.json["ok"] == true {
        &run.json["images"]
    } else {
        &run.json["error"]["data"]["images"]
    };
    list.as_array().cloned().unwrap_or_default()
}

fn status_of(run: &Run, service: &str) -> (String, String) {
    let img = images(run)
        .into_iter()
        .find(|i| i["service"] == service)
        .unwrap_or_else(|| panic!("no {service} in {}", run.json));
    (
        img["status"].as_str().unwrap().to_string(),
        img["tag"].as_str().unwrap_or("").to_string(),
    )
}

fn remove_images(tags: &[String]) {
    for t in tags.iter().filter(|t| !t.is_empty()) {
        let _ = Command::new("docker")
            .args(["rmi", "--no-prune", "-f", t])
            .output();
    }
}

fn touch_later(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn build_skip_rebuild_and_ignored_changes_with_a_real_engine() {
    if !docker::available("build_skip_rebuild_and_ignored_changes_with_a_real_engine") {
        return;
    }
    // Each build sleeps, so a parallel run shows all three started before any ends.
    let slow = "RUN [\"/bin/busybox\", \"sleep\", \"1\"]\n";
    let f = Fixture::new(&[("api", slow), ("worker", slow), ("web", slow)], 3);
    let mut made = Vec::new();

    // 1. First build: all three built, concurrently.
    let t = std::time::Instant::now();
    let first = f.build(&[]);
    let took = t.elapsed();
    assert_eq!(first.code, 0, "{}\n{}", first.json, first.stderr);
    for s in ["api", "worker", "web"] {
        let (status, tag) = status_of(&first, s);
        assert_eq!(status, "built", "{s}: {}", first.json);
        assert!(
            tag.starts_with(&format!("pulsewatch-{s}:"))
                && tag.len() == format!("pulsewatch-{s}:").len() + 12,
            "{tag}"
        );
        made.push(tag);
    }
    let lines: Vec<&str> = first.stderr.lines().collect();
    let first_done = lines
        .iter()
        .position(|l| l.contains(": built in"))
        .expect("a built line");
    let started = lines[..first_done]
        .iter()
        .filter(|l| l.contains(": building pulsewatch-"))
        .count();
    assert_eq!(
        started, 3,
        "all three builds run at once:\n{}",
        first.stderr
    );

    // 2. Nothing changed: all skipped, quickly, with the reason.
    let t = std::time::Instant::now();
    let second = f.build(&[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    for s in ["api", "worker", "web"] {
        let img = images(&second)
            .into_iter()
            .find(|i| i["service"] == s)
            .unwrap();
        assert_eq!(img["status"], "skipped", "{s}");
        assert!(
            img["reason"].as_str().unwrap().contains("unchanged"),
            "{img}"
        );
    }
    assert!(
        t.elapsed() < took / 2,
        "the no-op run ({:?}) should be far quicker than the build ({took:?})",
        t.elapsed()
    );

    // 3. One file of api changes: api rebuilt under a new tag, the others skipped.
    touch_later(
        &f.path("api/src/main.txt"),
        &format!("api v2 {}\n", f.nonce),
    );
    let third = f.build(&[]);
    assert_eq!(third.code, 0, "{}", third.stderr);
    let (status, tag) = status_of(&third, "api");
    assert_eq!(status, "built");
    assert_ne!(tag, made[0], "a new content hash, a new tag");
    made.push(tag);
    assert_eq!(status_of(&third, "worker").0, "skipped");
    assert_eq!(status_of(&third, "web").0, "skipped");

    // 4. Files .dockerignore leaves out change: no rebuild.
    touch_later(&f.path("web/src/debug.log"), "changed\n");
    touch_later(&f.path("web/notes/todo.md"), "changed\n");
    let fourth = f.build(&["web"]);
    assert_eq!(fourth.code, 0, "{}", fourth.stderr);
    assert_eq!(images(&fourth).len(), 1, "only the named service");
    assert_eq!(status_of(&fourth, "web").0, "skipped", "{}", fourth.json);

    remove_images(&made);
}

#[test]
fn a_broken_dockerfile_fails_clearly_and_leaves_the_others_alone() {
    if !docker::available("a_broken_dockerfile_fails_clearly_and_leaves_the_others_alone") {
        return;
    }
    let broken = "RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo compiling; echo 'error: expected ;' >&2; exit 3\"]\n";
    let f = Fixture::new(&[("api", ""), ("broken", broken), ("web", "")], 2);
    let run = f.build(&[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.json["ok"], false);
    let err = &run.json["error"];
    assert_eq!(err["id"], "image-build-failed");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("returned a non-zero code: 3"),
        "{err}"
    );
    let details: Vec<&str> = err["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        details[0].starts_with("failing step: Step 4/"),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("error: expected ;")),
        "{details:?}"
    );
    assert_eq!(status_of(&run, "broken").0, "failed");
    let (api, api_tag) = status_of(&run, "api");
    let (web, web_tag) = status_of(&run, "web");
    assert_eq!((api.as_str(), web.as_str()), ("built", "built"));

    // Human mode: the error id on stderr, exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_pulsedev"))
        .args(["build", "broken"])
        .current_dir(f.dir.path())
        .env("XDG_CACHE_HOME", f.path(".cache"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error[image-build-failed]"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");

    remove_images(&[api_tag, web_tag]);
}

#[test]
fn unknown_services_are_a_usage_error() {
    let f = Fixture::new(&[("api", "")], 1);
    let run = f.build(&["apj"]);
    assert_eq!(run.code, 2);
    assert_eq!(run.json["error"]["id"], "usage");
    assert!(
        run.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean \"api\"")
    );
}

#[test]
fn ctrl_c_stops_running_builds_and_exits_130() {
    if !docker::available("ctrl_c_stops_running_builds_and_exits_130") {
        return;
    }
    let slow = "RUN [\"/bin/busybox\", \"sleep\", \"60\"]\n";
    let f = Fixture::new(&[("slow", slow)], 1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulsedev"))
        .args(["build", "--output", "json"])
        .current_dir(f.dir.path())
        .env("XDG_CACHE_HOME", f.path(".cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the build says it reached the sleeping step, however slow the machine.
    let lines = crate::harness::stderr_lines(&mut child);
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !seen.contains("\"sleep\", \"60\"") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push_str(&(line + "\n")),
            Err(_) => panic!("the build never reached its sleeping step:\n{seen}"),
        }
    }
    let t = std::time::Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "stopped promptly, not after the 60 s step"
    );
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["id"], "interrupted");
}

/// A context written under umask 077 (files 0600, directories and executables 0700,
/// owned by whoever wrote them) is built and run as uid 10001, as the charts run the
/// app: pulsedev sends normalised modes (0644, 0755), so the unprivileged user can
/// read the files and run the programs, as it can for a user whose umask is 022.
#[tokio::test]
async fn a_context_written_under_umask_077_runs_as_uid_10001() {
    use crate::support::{build as b, docker};
    use futures::StreamExt;
    let Some(engine) = docker::engine("a_context_written_under_umask_077_runs_as_uid_10001").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nonce = b::nonce();
    // The writing happens in a shell of its own: umask is per process, and this test
    // must not change the test runner's.
    let script = format!(
        "umask 077 && cd '{}' && cp /bin/busybox busybox && mkdir app && \
         printf 'hello %s\\n' {nonce} > app/greeting.txt && \
         printf '#!/bin/busybox sh\\n/bin/busybox cat /app/greeting.txt\\n/bin/busybox ls -ld /app /app/greeting.txt /app/run\\n' > app/run && \
         chmod u+x app/run && \
         printf 'FROM scratch\\nCOPY busybox /bin/busybox\\nCOPY app/ /app/\\nUSER 10001:10001\\nCMD [\"/app/run\"]\\n' > Dockerfile",
        dir.path().display()
    );
    let st = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(crate::fakes::mode(&dir.path().join("app")), 0o700);
    assert_eq!(
        crate::fakes::mode(&dir.path().join("app/greeting.txt")),
        0o600
    );
    assert_eq!(crate::fakes::mode(&dir.path().join("app/run")), 0o700);

    let image = b::build(&engine, "umask", dir.path()).await;
    let name = format!("pdtest-umask-{nonce}");
    let d = &engine.docker;
    crate::fakes::run_container_of(d, &image.reference(), &name, &[]).await;
    let mut wait = d.wait_container(
        &name,
        None::<bollard::query_parameters::WaitContainerOptions>,
    );
    // A non-zero exit arrives as an error item; the logs below say why.
    let code = match wait.next().await {
        Some(Ok(r)) => r.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        other => panic!("{other:?}"),
    };
    let mut logs = d.logs(
        &name,
        Some(bollard::query_parameters::LogsOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        }),
    );
    let mut out = String::new();
    while let Some(Ok(chunk)) = logs.next().await {
        out.push_str(&chunk.to_string());
    }
    let _ = d
        .remove_container(
            &name,
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    b::remove_image(&engine, &image.reference()).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("hello {nonce}")), "{out}");
    let modes: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("/app"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(modes, ["drwxr-xr-x", "-rw-r--r--", "-rwxr-xr-x"], "{out}");
}

/// Issue 13: the context changes between hashing and upload (here: as the build starts,
/// `src/main.txt` becomes a symlink to a file outside the context). With a real engine
/// the build fails with a message naming the file, and no image carries the tag that
/// was computed from the original content (later builds would skip it as unchanged).
#[tokio::test]
async fn a_context_swapped_during_upload_fails_clearly_and_tags_nothing() {
    use pulsedev::images::{self, Event, build::Status};
    let Some(engine) = docker::engine("a_context_swapped_during_upload").await else {
        return;
    };
    let f = Fixture::new(&[("api", "")], 1);
    let outside = f.path("outside.txt");
    std::fs::write(&outside, "OUTSIDE THE CONTEXT\n").unwrap();
    let ctx = f.path("api");
    let service = pulsedev::config::Service {
        context: ctx.clone(),
        dockerfile: PathBuf::from("Dockerfile"),
        chart: None,
        build_args: Default::default(),
        target: None,
        live_update: Default::default(),
    };
    let services = std::collections::BTreeMap::from([("api".to_string(), service)]);
    let mut opts = images::build_options(
        &pulsedev::config::Config::load(
            Some(&f.path("pulsedev.toml")),
            f.dir.path(),
            &|_| None,
            &Default::default(),
        )
        .unwrap(),
        &engine,
    )
    .await
    .unwrap();
    opts.cache_dir = None;
    opts.prefix = format!("w13-swap-{}", f.nonce);
    let main = ctx.join("src/main.txt");
    let events: images::Events = std::sync::Arc::new(move |e: Event| {
        if let Event::Started { .. } = e {
            std::fs::remove_file(&main).unwrap();
            std::os::unix::fs::symlink(&outside, &main).unwrap();
        }
    });
    let cancel = tokio_util::sync::CancellationToken::new();
    let outcomes = images::build(&engine, &services, &opts, &cancel, events).await;
    let o = &outcomes[0];
    let Status::Failed(e) = &o.status else {
        remove_images(&[o.image.reference()]);
        panic!("the build must fail: {:?}", o.status);
    };
    assert_eq!(e.id(), "image-build-failed");
    assert!(
        e.message.contains("changed while it was being sent")
            && e.message.contains("src/main.txt became a symbolic link"),
        "{}",
        e.message
    );
    assert!(e.message.contains("nothing was tagged"), "{}", e.message);
    assert!(!e.message.contains("Dockerfile"), "{}", e.message);
    assert!(
        engine
            .docker
            .inspect_image(&o.image.reference())
            .await
            .is_err(),
        "no image carries the tag {}",
        o.image.reference()
    );
}
