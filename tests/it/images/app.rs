//! The real PulseWatch api and worker Dockerfiles, built by pulsedev from their one
//! shared context `app/` with a real engine and the real npm (issue 12).
//!
//! Nothing can be pulled here, so the pinned Node base image is replaced by a stand-in
//! `FROM scratch` holding this machine's own `node` and `npm` (and the libraries `node`
//! links), plus an npm cache filled beforehand by `npm ci` on the host: the build's
//! `npm ci` then runs for real, offline (`npm_config_offline`). Everything else is the
//! repository's: Dockerfiles (only their `FROM` lines rewritten), the Dockerfile-specific
//! ignore files, package.json, package-lock.json, .npmrc, the sources and app/shared.
//! Needs Docker (fails under CI, skips otherwise) and node + npm on PATH (the same).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use pulsedev::config::Config;
use pulsedev::images::{self, BuildOptions, Status};
use tokio_util::sync::CancellationToken;

use crate::support::{build, docker};

/// What the test appends to a source file. The same text every run, so the layers the
/// changed builds make are the engine's build cache next time, not new ones each run.
const CHANGE: &str = "// changed by the app images test";

/// The base both stages of the api and worker Dockerfiles name.
const NODE_BASE: &str = "docker.io/library/node:22-alpine@sha256:";

fn which(cmd: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !p.is_empty()).then(|| PathBuf::from(p))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() == "node_modules" {
            continue;
        }
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&src, &dst);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Puts `file` (absolute) at the same path under `root`.
fn place(root: &Path, file: &Path) {
    let dst = root.join(file.strip_prefix("/").unwrap());
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(file, &dst).unwrap_or_else(|e| panic!("copying {}: {e}", file.display()));
}

/// The stand-in for the Node base image: busybox (for `RUN`'s /bin/sh), this machine's
/// node with the shared libraries `ldd` lists, its npm, and the filled npm cache.
fn stand_in_context(dir: &Path, node: &Path, npm_cli: &Path, cache: &Path) {
    let root = dir.join("root");
    place(&root, node);
    let ldd = run(Command::new("ldd").arg(node));
    for word in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let lib = Path::new(word);
        if lib.is_file() {
            place(&root, lib);
        }
    }
    // npm-cli.js is <npm>/bin/npm-cli.js; npm brings its own node_modules.
    let npm = npm_cli.parent().unwrap().parent().unwrap();
    copy_all(npm, &root.join("usr/local/lib/node_modules/npm"));
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::os::unix::fs::symlink(
        "../lib/node_modules/npm/bin/npm-cli.js",
        root.join("usr/local/bin/npm"),
    )
    .unwrap();
    let node_at = node.to_str().unwrap();
    if node_at != "/usr/local/bin/node" {
        std::os::unix::fs::symlink(node_at, root.join("usr/local/bin/node")).unwrap();
    }
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", root.join("usr/bin/env")).unwrap();
    copy_all(cache, &dir.join("npm-cache"));
    std::fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        // node and npm first, the cache apart: the big layer is the same from run to run
        // and comes from the engine's build cache after the first.
        "FROM scratch\n\
         COPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         COPY root/ /\n\
         COPY npm-cache/ /npm-cache/\n\
         ENV HOME=/root npm_config_cache=/npm-cache npm_config_offline=true npm_config_update_notifier=false\n",
    )
    .unwrap();
}

fn copy_all(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_all(&src, &dst);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The images the test made, removed however it ends (their untagged layers stay: other
/// tests' builds may be using them as cache).
struct Made(Vec<String>);

impl Drop for Made {
    fn drop(&mut self) {
        for reference in &self.0 {
            let _ = Command::new("docker")
                .args(["rmi", "--no-prune", "-f", reference])
                .output();
        }
    }
}

/// Runs `args` in a new container of `image` (no network) and returns its output.
fn in_container(image: &str, args: &[&str]) -> String {
    run(Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--entrypoint", ""])
        .arg(image)
        .args(args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_images_build_from_one_context_and_rebuild_only_what_changed() {
    let test = "the_app_images_build_from_one_context_and_rebuild_only_what_changed";
    let Some(engine) = docker::engine(test).await else {
        return;
    };
    let (Some(node), Some(npm)) = (which("node"), which("npm")) else {
        assert!(
            !docker::required(),
            "{test}: node and npm are needed on PATH (e.g. apt-get install nodejs npm)"
        );
        eprintln!("SKIPPED {test}: node and npm are not on PATH");
        return;
    };
    let node = std::fs::canonicalize(node).unwrap();
    let npm_cli = std::fs::canonicalize(npm).unwrap();
    let nonce = build::nonce();

    // The repository's app/, without node_modules.
    let work = tempfile::tempdir().unwrap();
    let app = work.path().join("app");
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("app"), &app);

    // An npm cache with what the lockfiles name: filled online by `npm ci` the first
    // time, kept under the target directory, and filled again only when a lockfile
    // changed (the marker names their hash).
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("app-images-npm-cache");
    let mut locks = Vec::new();
    for svc in ["api", "worker"] {
        locks.extend(std::fs::read(app.join(svc).join("package-lock.json")).unwrap());
    }
    let marker = cache.join(format!(
        "filled-for-{:016x}",
        locks
            .iter()
            .fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b))
                .wrapping_mul(0x100000001b3))
    ));
    if !marker.exists() {
        for svc in ["api", "worker"] {
            run(Command::new("npm")
                .args([
                    "ci",
                    "--ignore-scripts",
                    "--prefer-offline",
                    "--no-audit",
                    "--no-fund",
                ])
                .arg("--cache")
                .arg(&cache)
                .current_dir(app.join(svc)));
            std::fs::remove_dir_all(app.join(svc).join("node_modules")).unwrap();
        }
        std::fs::write(&marker, "").unwrap();
    }

    let stand_in_dir = tempfile::tempdir().unwrap();
    stand_in_context(stand_in_dir.path(), &node, &npm_cli, &cache);
    let stand_in = build::build(&engine, &format!("node-{nonce}"), stand_in_dir.path()).await;
    let stand_in_ref = stand_in.reference();
    let mut made = Made(vec![stand_in_ref.clone()]);

    for svc in ["api", "worker"] {
        let df = app.join(svc).join("Dockerfile");
        let text = std::fs::read_to_string(&df).unwrap();
        let mut froms = 0;
        let rewritten: Vec<String> = text
            .lines()
            .map(|l| match l.strip_prefix("FROM ") {
                Some(rest) if rest.starts_with(NODE_BASE) => {
                    froms += 1;
                    let stage = rest.split_once(' ').map_or("", |(_, s)| s);
                    format!("FROM {stand_in_ref} {stage}")
                        .trim_end()
                        .to_string()
                }
                _ => l.to_string(),
            })
            .collect();
        assert_eq!(
            froms, 2,
            "{svc}/Dockerfile: both stages on the pinned Node base"
        );
        std::fs::write(&df, rewritten.join("\n") + "\n").unwrap();
    }

    // The services as pulsedev defines them: context app/, Dockerfile api/… or worker/….
    let config = Config::defaults(work.path());
    let services: BTreeMap<_, _> = config
        .services
        .iter()
        .filter(|(name, _)| ["api", "worker"].contains(&name.as_str()))
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect();
    let info = engine.info().await.unwrap();
    let opts = BuildOptions {
        prefix: format!("pdtest-app-{nonce}"),
        platform: pulsedev::docker::platform(&info),
        parallel: 2,
        cache_dir: Some(work.path().join("cache")),
    };
    let build_both = || async {
        images::build(
            &engine,
            &services,
            &opts,
            &CancellationToken::new(),
            Arc::new(|_| {}),
        )
        .await
        .into_iter()
        .map(|o| (o.image.service.clone(), o))
        .collect::<BTreeMap<_, _>>()
    };

    let first = build_both().await;
    made.0.extend(
        first
            .values()
            .filter(|o| !o.image.tag.is_empty())
            .map(|o| o.image.reference()),
    );
    for (svc, o) in &first {
        if let Status::Failed(e) = &o.status {
            panic!(
                "building {svc} failed: {}\n{}",
                e.message,
                e.details.join("\n")
            );
        }
        assert!(matches!(o.status, Status::Built), "{svc}: {:?}", o.status);
    }
    let api = first["api"].image.reference();
    let worker = first["worker"].image.reference();

    // What each image holds: its own sources, the shared package as npm installed it
    // (a copy of its "files", not a link), and nothing of the other service or of tests.
    let listing = |image: &str| {
        in_container(
            image,
            &[
                "/bin/busybox",
                "find",
                "/app",
                "-path",
                "/app/node_modules/*/*/*",
                "-prune",
                "-o",
                "-print",
            ],
        )
    };
    let api_files = listing(&api);
    for want in [
        "/app/src/server.js",
        "/app/src/config.js",
        "/app/node_modules/@pulsewatch/shared",
        "/app/node_modules/express",
        "/app/node_modules/@opentelemetry/sdk-trace",
    ] {
        assert!(
            api_files.lines().any(|l| l == want),
            "api lacks {want}:\n{api_files}"
        );
    }
    for unwanted in ["/app/test", "/app/src/runner.js", "/app/src/tracing.js"] {
        assert!(
            !api_files.lines().any(|l| l == unwanted),
            "api holds {unwanted}"
        );
    }
    let shared = in_container(
        &api,
        &[
            "/bin/busybox",
            "find",
            "/app/node_modules/@pulsewatch/shared",
        ],
    );
    assert!(
        shared.contains("/app/node_modules/@pulsewatch/shared/src/tracing.js"),
        "{shared}"
    );
    assert!(
        !shared.contains("/test"),
        "the shared package's tests are not installed: {shared}"
    );
    let kind = in_container(
        &api,
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "if [ -L /app/node_modules/@pulsewatch/shared ]; then echo link; else echo copy; fi",
        ],
    );
    assert_eq!(kind.trim(), "copy", "installed as a copy, not a symlink");
    let worker_files = listing(&worker);
    assert!(
        worker_files.lines().any(|l| l == "/app/src/runner.js"),
        "{worker_files}"
    );
    assert!(
        !worker_files.lines().any(|l| l == "/app/src/app.js"),
        "{worker_files}"
    );

    // Each image's modules load as its CMD would load them (as the image's user, from
    // its WORKDIR): every import resolves, the shared ones through node_modules.
    let api_loads = in_container(
        &api,
        &[
            "node",
            "--input-type=module",
            "-e",
            "const { createApp } = await import('/app/src/app.js'); \
             const { loadConfig } = await import('/app/src/config.js'); \
             const { createTracing } = await import('@pulsewatch/shared/tracing'); \
             const { metricsServer } = await import('/app/src/metrics.js'); \
             console.log(typeof createApp, typeof loadConfig, typeof createTracing, typeof metricsServer);",
        ],
    );
    assert_eq!(
        api_loads.trim(),
        "function function function function",
        "{api_loads}"
    );
    let worker_loads = in_container(
        &worker,
        &[
            "node",
            "--input-type=module",
            "-e",
            "const { runCycle } = await import('/app/src/runner.js'); \
             const { loadConfig } = await import('/app/src/config.js'); \
             const { aggregateHealth } = await import('@pulsewatch/shared/health'); \
             console.log(typeof runCycle, typeof loadConfig, typeof aggregateHealth);",
        ],
    );
    assert_eq!(
        worker_loads.trim(),
        "function function function",
        "{worker_loads}"
    );

    // A change to the worker alone: the api is not rebuilt (same tag, skipped).
    let runner = app.join("worker/src/runner.js");
    let text = std::fs::read_to_string(&runner).unwrap();
    std::fs::write(&runner, format!("{text}{CHANGE}\n")).unwrap();
    let second = build_both().await;
    made.0.push(second["worker"].image.reference());
    assert!(
        matches!(second["api"].status, Status::Skipped { .. }),
        "api: {:?}",
        second["api"].status
    );
    assert_eq!(second["api"].image.reference(), api);
    assert!(
        matches!(second["worker"].status, Status::Built),
        "{:?}",
        second["worker"].status
    );
    assert_ne!(second["worker"].image.reference(), worker);

    // A change to the shared package: both are rebuilt.
    let health = app.join("shared/src/health.js");
    let text = std::fs::read_to_string(&health).unwrap();
    std::fs::write(&health, format!("{text}{CHANGE}\n")).unwrap();
    let third = build_both().await;
    for svc in ["api", "worker"] {
        made.0.push(third[svc].image.reference());
        assert!(
            matches!(third[svc].status, Status::Built),
            "{svc}: {:?}",
            third[svc].status
        );
    }
    assert_ne!(third["api"].image.reference(), api);
    let installed = in_container(
        &third["api"].image.reference(),
        &[
            "/bin/busybox",
            "tail",
            "-n",
            "1",
            "/app/node_modules/@pulsewatch/shared/src/health.js",
        ],
    );
    assert_eq!(
        installed.trim(),
        CHANGE,
        "the rebuilt api has the new shared code"
    );
}
