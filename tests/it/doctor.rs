//! `pulsedev doctor` run as a user would: the real binary, a real Docker engine where
//! one is needed, fake kind/helm on PATH, real sockets and ports.

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use crate::harness::{Pd, docker_host};

fn check<'a>(doc: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {doc:#}"))
}

/// Machine-dependent bits (inotify limits, free ports, temp paths) made stable.
fn stable(text: &str, pd: &Pd) -> String {
    let home = pd.home.path().display().to_string();
    let mut out = text
        .replace(&home, "[HOME]")
        .replace(&pd.work.path().display().to_string(), "[WORK]");
    out = regex_replace(&out, r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    out = regex_replace(
        &out,
        r"(?m)^(ok  |warn) inotify +.*\n( +fix: .*\n)?",
        "[inotify]\n",
    );
    // The host's memory and disk (shown when Docker does not answer) vary by machine.
    out = regex_replace(
        &out,
        r"(?m)^(ok  |warn) (memory|disk) +.*\n( +fix: .*\n)?",
        "[$2]\n",
    );
    out = regex_replace(
        &out,
        r"(?m)^\d+ passed, \d+ warnings?, ",
        "[N] passed, [M] warnings, ",
    );
    out
}

fn regex_replace(text: &str, pattern: &str, with: &str) -> String {
    regex::Regex::new(pattern)
        .unwrap()
        .replace_all(text, with)
        .into_owned()
}

#[test]
fn doctor_passes_on_a_real_engine_with_the_tools_present() {
    let Some(host) = docker_host() else { return };
    // The images `up` would pull are here (local stand-ins), so no download check
    // depends on this machine's network.
    let pd = crate::fakes::with_node_image(Pd::new(), &host)
        .good_tools()
        .free_ports()
        .env("DOCKER_HOST", &host)
        .env("PULSEDEV_REGISTRY_IMAGE", crate::fakes::NODE_IMAGE)
        .args(&["doctor", "--output", "json"]);
    let run = pd.run();
    let doc = run.json();
    assert_eq!(run.code, 0, "{doc:#}\n{}", run.stderr);
    assert_eq!(doc["ok"], true);
    let docker = check(&doc, "docker");
    assert_eq!(docker["status"], "ok");
    let msg = docker["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("at {host} (from DOCKER_HOST)")),
        "{msg}"
    );
    for fact in ["CPUs", "GiB", "cgroup v", "storage ", "linux/"] {
        assert!(msg.contains(fact), "{fact} missing from {msg}");
    }
    assert_eq!(
        check(&doc, "kind")["message"]
            .as_str()
            .unwrap()
            .split(" at ")
            .next(),
        Some("kind v0.32.0")
    );
    assert!(
        check(&doc, "helm")["message"]
            .as_str()
            .unwrap()
            .starts_with("helm v4.2.1")
    );
    for id in [
        "memory",
        "disk",
        "port-http",
        "port-https",
        "port-registry",
        "inotify",
        "download-kind",
        "download-helm",
        "download-node-image",
        "download-charts",
        "download-images",
        "offline",
    ] {
        assert_ne!(check(&doc, id)["status"], "fail", "{id}: {doc:#}");
    }
    assert_eq!(
        check(&doc, "download-node-image")["message"],
        format!(
            "node image {} (in the Docker engine)",
            crate::fakes::NODE_IMAGE
        )
    );
}

#[test]
fn a_socket_nobody_listens_on_is_docker_unreachable() {
    let pd = Pd::new().good_tools().free_ports();
    let sock = pd.home.path().join("nobody.sock");
    let pd = pd
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .args(&["doctor"]);
    let run = pd.run();
    assert_eq!(run.code, 3, "{run:?}");
    // Without the engine, the host's own memory and disk are still reported.
    assert!(
        regex::Regex::new(r"(?m)^(ok  |warn) memory +this host has \d+\.\d GiB")
            .unwrap()
            .is_match(&run.stdout),
        "{}",
        run.stdout
    );
    assert!(
        regex::Regex::new(r"(?m)^(ok  |warn) disk +\d+\.\d GiB free on the filesystem of /")
            .unwrap()
            .is_match(&run.stdout),
        "{}",
        run.stdout
    );
    insta::assert_snapshot!("doctor_socket_missing_stdout", stable(&run.stdout, &pd));
    insta::assert_snapshot!("doctor_socket_missing_stderr", stable(&run.stderr, &pd));

    // A socket file with nothing behind it: connection refused.
    drop(UnixListener::bind(&sock).unwrap());
    let run = pd.run();
    assert_eq!(run.code, 3);
    assert!(
        run.stdout.contains("(connection refused)"),
        "{}",
        run.stdout
    );
}

#[test]
fn json_failure_document_for_an_unreachable_engine() {
    let pd = Pd::new().good_tools().free_ports();
    let sock = pd.home.path().join("nobody.sock");
    let run = pd
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .args(&["doctor", "--output", "json"])
        .run();
    assert_eq!(run.code, 3);
    assert_eq!(run.stderr, "", "JSON mode keeps stderr for progress only");
    let mut doc = run.json();
    // Without the engine, the host's memory and disk are reported (their figures and
    // so their status depend on the machine, like inotify's); everything else is fixed.
    for (id, says) in [
        ("memory", "this host has "),
        ("disk", " free on the filesystem of "),
    ] {
        let c = doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no {id} check: {doc:#}"));
        assert!(c["message"].as_str().unwrap().contains(says), "{c}");
        assert_ne!(c["status"], "fail", "{c}");
    }
    doc["checks"]
        .as_array_mut()
        .unwrap()
        .retain(|c| !["inotify", "memory", "disk"].contains(&c["id"].as_str().unwrap()));
    insta::assert_json_snapshot!("doctor_socket_missing_json", doc, {
        ".checks[].message" => insta::dynamic_redaction(|v, _| {
            let s = v.as_str().unwrap().to_string();
            let s = regex_replace(&s, r"/tmp/[^ ]+/nobody\.sock", "[SOCK]");
            let s = regex_replace(&s, r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
            let s = regex_replace(&s, r" at /.*", " at [PATH]");
            regex_replace(&s, r"/tmp/\.tmp[^/ ]+/", "[TMP]/")
        }),

        ".error.message" => "[MESSAGE]",
    });
}

#[test]
fn a_socket_that_accepts_and_never_answers_fails_within_the_timeout() {
    let pd = Pd::new().good_tools().free_ports();
    let sock = pd.home.path().join("hang.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // Accept and hold every connection without a byte of answer.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let started = Instant::now();
    let run = pd
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .args(&["doctor", "--timeout", "1", "--output", "json"])
        .run();
    let took = started.elapsed();
    assert_eq!(run.code, 3, "{run:?}");
    let doc = run.json();
    let docker = check(&doc, "docker");
    assert_eq!(docker["problem"], "docker-unreachable");
    assert!(
        docker["message"]
            .as_str()
            .unwrap()
            .contains("did not answer within 1s"),
        "{docker:#}"
    );
    assert!(docker["hint"].as_str().unwrap().contains("restart"));
    // A generous bound: the point is that a hung daemon does not hang doctor.
    assert!(took < Duration::from_secs(15), "doctor took {took:?}");
}

#[test]
fn a_docker_context_in_home_is_followed_to_its_endpoint() {
    let Some(host) = docker_host() else { return };
    let pd = Pd::new().good_tools().free_ports();
    let docker_dir = pd.home.path().join(".docker");
    let meta = docker_dir
        .join("contexts/meta")
        .join(sha256_hex("pd-test-ctx"));
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join("meta.json"),
        format!(r#"{{"Name":"pd-test-ctx","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{host}","SkipTLSVerify":false}}}}}}"#),
    )
    .unwrap();
    std::fs::write(
        docker_dir.join("config.json"),
        r#"{"currentContext":"pd-test-ctx"}"#,
    )
    .unwrap();
    let run = pd.args(&["doctor", "--output", "json"]).run();
    let doc = run.json();
    let docker = check(&doc, "docker");
    assert_eq!(docker["status"], "ok", "{doc:#}");
    let msg = docker["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "at {host} (from docker context \"pd-test-ctx\" selected by "
        )),
        "{msg}"
    );
}

#[test]
fn a_context_whose_engine_is_down_names_the_context() {
    let pd = Pd::new().good_tools().free_ports();
    let meta = pd
        .home
        .path()
        .join(".docker/contexts/meta")
        .join(sha256_hex("colima"));
    std::fs::create_dir_all(&meta).unwrap();
    let sock = pd.home.path().join("colima.sock");
    std::fs::write(
        meta.join("meta.json"),
        format!(
            r#"{{"Name":"colima","Endpoints":{{"docker":{{"Host":"unix://{}"}}}}}}"#,
            sock.display()
        ),
    )
    .unwrap();
    let run = pd
        .env("DOCKER_CONTEXT", "colima")
        .args(&["doctor", "--output", "json"])
        .run();
    assert_eq!(run.code, 3);
    let docker = check(&run.json(), "docker").clone();
    assert!(
        docker["message"]
            .as_str()
            .unwrap()
            .contains("docker context \"colima\" selected by DOCKER_CONTEXT")
    );
    assert!(docker["hint"].as_str().unwrap().contains("colima"));
}

#[test]
fn a_port_held_by_this_test_is_reported_with_our_pid() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let pd = Pd::new().good_tools().free_ports();
    let sock = pd.home.path().join("nobody.sock");
    let run = pd
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        // Later flags win: this replaces the free HTTPS port.
        .args(&[
            "--https-port",
            &port.to_string(),
            "doctor",
            "--output",
            "json",
        ])
        .run();
    assert_eq!(run.code, 3);
    let https = check(&run.json(), "port-https").clone();
    assert_eq!(https["status"], "fail");
    assert_eq!(https["problem"], "port-in-use");
    let msg = https["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "127.0.0.1:{port} is in use by pid {} (",
            std::process::id()
        )),
        "{msg}"
    );
    assert!(https["hint"].as_str().unwrap().contains("--https-port"));
    drop(held);
}

#[test]
fn missing_tools_are_tool_missing_with_where_to_get_them() {
    let pd = Pd::new().free_ports();
    let sock = pd.home.path().join("nobody.sock");
    let run = pd
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .args(&["doctor", "--output", "json"])
        .run();
    assert_eq!(run.code, 3);
    let doc = run.json();
    for (tool, url, version) in [
        ("kind", "https://kind.sigs.k8s.io/", "v0.32.0"),
        ("helm", "https://helm.sh/", "v4.2.2"),
    ] {
        let c = check(&doc, tool);
        // A pinned, checksummed release exists for this platform: `up` fetches it, so
        // a missing tool warns instead of failing.
        assert_eq!(c["status"], "warn", "{c:#}");
        assert_eq!(c["problem"], "tool-missing", "{c:#}");
        assert_eq!(c["message"], format!("{tool} is not on PATH"));
        let hint = c["hint"].as_str().unwrap();
        assert!(hint.contains(url), "{c:#}");
        assert!(
            hint.contains(&format!(
                "will download the pinned {tool} {version} (SHA-256 verified)"
            )),
            "{c:#}"
        );
    }
}

#[test]
fn a_missing_tool_without_a_pinned_release_fails() {
    let pd = Pd::new().free_ports();
    let pins = pd.write(
        "pins.toml",
        "[kind]\nversion = \"v0.32.0\"\n[helm]\nversion = \"v4.2.2\"\n",
    );
    let sock = pd.home.path().join("nobody.sock");
    let run = pd
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("PULSEDEV_TOOLS_PINS", pins.display().to_string())
        .args(&["doctor", "--output", "json"])
        .run();
    assert_eq!(run.code, 3);
    let doc = run.json();
    let kind = check(&doc, "kind");
    assert_eq!(kind["status"], "fail", "{kind:#}");
    assert!(
        kind["hint"]
            .as_str()
            .unwrap()
            .starts_with("install kind v0.32.0")
    );
}

/// A cached release is ok once it matches its pin. The compiled-in pins name the real
/// kind, so this test brings its own pins (and doctor says those are overridden).
#[test]
fn a_cached_pinned_tool_is_ok() {
    let pd = Pd::new().free_ports();
    let script = "#!/bin/sh\necho kind v0.32.0\n";
    let sha = sha256_hex(script);
    let platform = pulsedev::tools::fetch::this_platform();
    let pins = pd.write(
        "pins.toml",
        &format!(
            "[kind]\nversion = \"v0.32.0\"\n[kind.{platform}]\nurl = \"https://example.invalid/kind\"\nsha256 = \"{sha}\"\n[helm]\nversion = \"v4.2.2\"\n"
        ),
    );
    let cached = pd
        .home
        .path()
        .join("cache/pulsedev/tools/kind/v0.32.0")
        .join(&sha)
        .join("kind");
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    std::fs::write(&cached, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cached, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = pd.home.path().join("nobody.sock");
    let pd = pd
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("PULSEDEV_TOOLS_PINS", pins.display().to_string())
        .args(&["doctor", "--output", "json"]);
    let run = pd.run();
    let kind = check(&run.json(), "kind").clone();
    assert_eq!(kind["status"], "warn", "{kind:#}");
    assert!(
        kind["message"]
            .as_str()
            .unwrap()
            .starts_with("kind v0.32.0 from pulsedev's cache at "),
        "{kind:#}"
    );
    assert!(
        kind["hint"]
            .as_str()
            .unwrap()
            .contains("PULSEDEV_TOOLS_PINS="),
        "{kind:#}"
    );
    // Changed after it was cached: refused (and deleted), not reported ok.
    std::fs::write(&cached, "#!/bin/sh\necho planted\n").unwrap();
    let run = pd.run();
    let kind = check(&run.json(), "kind").clone();
    assert_eq!(kind["status"], "fail", "{kind:#}");
    assert_eq!(kind["problem"], "tool-checksum-mismatch", "{kind:#}");
}

#[test]
fn an_old_tool_is_too_old_and_a_hanging_one_times_out() {
    let pd = Pd::new()
        .free_ports()
        .tool("kind", r#"echo "kind v0.20.0 go1.20.4 linux/amd64""#)
        .tool("helm", "sleep 30");
    let sock = pd.home.path().join("nobody.sock");
    let run = pd
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .args(&["doctor", "--output", "json"])
        .run();
    let doc = run.json();
    let kind = check(&doc, "kind");
    assert_eq!(kind["problem"], "tool-too-old");
    assert!(kind["message"].as_str().unwrap().contains("v0.20.0"));
    assert!(
        kind["message"]
            .as_str()
            .unwrap()
            .contains("minimum v0.24.0")
    );
    let helm = check(&doc, "helm");
    assert_eq!(
        helm["status"], "warn",
        "pulsedev can fetch a working helm: {helm:#}"
    );
    assert_eq!(helm["problem"], "tool-missing");
    assert!(
        helm["message"]
            .as_str()
            .unwrap()
            .contains("did not finish within 5s"),
        "{helm:#}"
    );
}

#[test]
fn ctrl_c_during_doctor_exits_130() {
    let pd = Pd::new().free_ports();
    // kind marks when doctor runs it, then hangs: the signal goes out once doctor is
    // observably busy (its Ctrl-C handler is in place before any check runs).
    let started = pd.home.path().join("kind-started");
    let pd = pd
        .tool("kind", &format!("touch '{}'\nsleep 30", started.display()))
        .tool("helm", r#"[ "$1" = version ] && echo "v4.2.1+g5cf6a4e""#);
    let sock = pd.home.path().join("nobody.sock");
    let pd = pd
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .args(&["doctor"]);
    let child = pd
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(Instant::now() < deadline, "doctor never ran kind");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "interrupt was not prompt"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error[interrupted]: interrupted"),
        "{stderr}"
    );
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// A normal user with no Docker engine answering: ports 80/443 cannot be probed (only
/// root may bind them), but whether Docker may is the engine's business, and the engine
/// did not answer. That is a warning beside the docker failure, not two more failures.
#[test]
fn low_ports_are_not_failures_when_docker_is_missing_for_a_normal_user() {
    use std::os::unix::fs::PermissionsExt;
    let pd = Pd::new().good_tools();
    // The binary where any user may run it (the checkout may be under /root).
    let bin = pd.home.path().join("pulsedev");
    std::fs::copy(crate::harness::BIN, &bin).unwrap();
    for p in [pd.home.path(), pd.work.path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let sock = pd.home.path().join("nobody.sock");
    let pd = pd
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .args(&[
            "--http-port",
            "80",
            "--https-port",
            "443",
            "doctor",
            "--output",
            "json",
        ]);
    let mut cmd = pd.command();
    if unsafe { libc::geteuid() } == 0 {
        // The same command as nobody.
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let envs: Vec<_> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .collect();
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .args(args)
            .env_clear()
            .envs(envs)
            .current_dir(pd.work.path());
        cmd = c;
    }
    let out = cmd.output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(check(&doc, "docker")["status"], "fail", "{doc:#}");
    for id in ["port-http", "port-https"] {
        let c = check(&doc, id);
        assert_ne!(c["status"], "fail", "{id}: {doc:#}");
    }
}

/// kind runs `docker` from PATH to make the nodes: doctor says when it is missing or
/// is not Docker's CLI (kind's own test: `docker -v` starts with "Docker version").
#[test]
fn doctor_checks_the_docker_cli_kind_runs() {
    let Some(host) = docker_host() else { return };
    let run = Pd::new()
        .good_tools()
        .free_ports()
        .env("DOCKER_HOST", &host)
        .args(&["doctor", "--output", "json"])
        .run();
    let doc = run.json();
    let cli = check(&doc, "docker-cli");
    assert_eq!(cli["status"], "ok", "{doc:#}");
    assert!(
        cli["message"]
            .as_str()
            .unwrap()
            .starts_with("Docker version 28.2.2, build e6534b4 at "),
        "{cli:#}"
    );

    // podman-docker's shim.
    let run = Pd::new()
        .good_tools()
        .tool("docker", r#"[ "$1" = -v ] && echo "podman version 4.3.1""#)
        .free_ports()
        .env("DOCKER_HOST", &host)
        .args(&["doctor", "--output", "json"])
        .run();
    assert_eq!(run.code, 3, "{run:?}");
    let doc = run.json();
    let cli = check(&doc, "docker-cli");
    assert_eq!(cli["status"], "fail");
    assert_eq!(cli["problem"], "tool-missing");
    let msg = cli["message"].as_str().unwrap();
    assert!(msg.contains("\"podman version 4.3.1\""), "{msg}");
    assert!(msg.contains("not Docker's CLI"), "{msg}");

    // None at all: a PATH holding only the fake tools (scripts of builtins).
    let pd = Pd::new().good_tools().free_ports();
    std::fs::remove_file(pd.bin.join("docker")).unwrap();
    let only = pd.bin.display().to_string();
    let run = pd
        .env("PATH", only)
        .env("DOCKER_HOST", &host)
        .args(&["doctor", "--output", "json"])
        .run();
    assert_eq!(run.code, 3, "{run:?}");
    let doc = run.json();
    let cli = check(&doc, "docker-cli");
    assert_eq!(cli["status"], "fail");
    assert!(
        cli["message"]
            .as_str()
            .unwrap()
            .contains("`docker` command is not on PATH"),
        "{cli:#}"
    );
}

/// A kind older than the node image's pairing is not "ok" just because it is newer
/// than the minimum: doctor names the node image it cannot run.
#[test]
fn a_kind_made_for_older_node_images_is_flagged() {
    let pd = Pd::new()
        .good_tools()
        .free_ports()
        .tool("kind", r#"echo "kind v0.31.0 go1.25.5 linux/amd64""#);
    let sock = pd.home.path().join("nobody.sock");
    let run = pd
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .args(&["doctor", "--output", "json"])
        .run();
    let doc = run.json();
    let kind = check(&doc, "kind");
    assert_eq!(kind["problem"], "tool-too-old", "{kind:#}");
    assert_ne!(kind["status"], "ok", "{kind:#}");
    let msg = kind["message"].as_str().unwrap();
    assert!(
        msg.contains("kind v0.31.0 supports node images up to Kubernetes 1.35, not kindest/node:v1.36.1 (made for kind v0.32.0)"),
        "{msg}"
    );
}
