//! Image benchmarks against the plain tools, in one run, on a real Docker engine:
//!
//!   1. no-op check of an unchanged 20k-file / 200 MB context: `pulsedev build` vs a
//!      warm-cache `docker build` (target: at least 10x faster);
//!   2. delivering a one-file change of a 100 MB image: registry push vs a full
//!      archive stream (target: bytes moved at most 1.1x the changed layer);
//!   3. streaming a 1 GiB image through the archive path (target: pulsedev's peak
//!      RSS under 64 MiB).
//!
//! Run: `scripts/bench-images` (or `cargo bench --bench images`) with a Docker engine that
//! DOCKER_HOST or the current docker context names.
//! (all three), or `… -- 1 3` for some. Fixtures are generated in a temp dir and the
//! images removed at the end. Peak RSS is the child's `ru_maxrss` from wait4(2).
//! `docker`, `/bin/busybox` and `/usr/bin/docker-registry` must be installed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulsedev::config::Service;
use pulsedev::docker::Engine;
use pulsedev::images::deliver::Deliver;
use pulsedev::images::registry::RegistryPush;
use pulsedev::images::{self, BuildOptions, LocalImage, Status, archive};
use tokio_util::sync::CancellationToken;

const MIB: u64 = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--child-stream") {
        child_stream(&args[1], &args[2]);
        return;
    }
    let which: Vec<u32> = if args.is_empty() {
        vec![1, 2, 3]
    } else {
        args.iter().filter_map(|a| a.parse().ok()).collect()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = match rt.block_on(images::connect_engine(Duration::from_secs(5))) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("no Docker engine answers ({}); set DOCKER_HOST", e.message);
            std::process::exit(if std::env::var_os("CI").is_some() {
                1
            } else {
                0
            });
        }
    };
    let work = tempfile::tempdir().unwrap();
    println!(
        "# pulsedev image benchmarks (engine {})",
        engine.endpoint.host
    );
    let mut ok = true;
    for n in which {
        let t = Instant::now();
        let met = match n {
            1 => bench_noop(&rt, &engine, work.path()),
            2 => bench_one_file_change(&rt, &engine, work.path()),
            3 => bench_stream_1gib(&rt, &engine, work.path()),
            _ => continue,
        };
        println!("  (bench {n} took {:.0}s)\n", t.elapsed().as_secs_f64());
        ok &= met;
    }
    println!(
        "{}",
        if ok {
            "all targets met"
        } else {
            "SOME TARGETS MISSED"
        }
    );
}

// ---------------------------------------------------------------- helpers

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write_noise_file(path: &Path, len: u64, seed: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let chunk = 8 * MIB;
    let mut left = len;
    let mut s = seed;
    while left > 0 {
        let n = left.min(chunk);
        f.write_all(&noise(n as usize, s)).unwrap();
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
        left -= n;
    }
}

struct Measured {
    code: i32,
    secs: f64,
    max_rss_kib: u64,
    stdout: String,
}

/// Runs `cmd` and reads its peak RSS with wait4(2), which also reaps it.
#[allow(clippy::zombie_processes)]
fn measured(cmd: &mut Command) -> Measured {
    let t = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid out-pointers.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(r, child.id() as i32, "wait4 failed");
    Measured {
        code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
        secs: t.elapsed().as_secs_f64(),
        max_rss_kib: usage.ru_maxrss as u64,
        stdout,
    }
}

fn docker(args: &[&str]) -> Measured {
    let m = measured(
        Command::new("docker")
            .args(args)
            .env("DOCKER_BUILDKIT", "0")
            .stderr(Stdio::null()),
    );
    assert_eq!(m.code, 0, "docker {args:?} failed");
    m
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn service(dir: &Path) -> Service {
    Service {
        context: dir.to_path_buf(),
        dockerfile: "Dockerfile".into(),
        chart: None,
        build_args: BTreeMap::new(),
        target: None,
        live_update: Default::default(),
    }
}

async fn build(engine: &Engine, name: &str, dir: &Path) -> LocalImage {
    let info = engine.info().await.unwrap();
    let opts = BuildOptions {
        prefix: "pdbench".into(),
        platform: pulsedev::docker::platform(&info),
        parallel: 1,
        cache_dir: None,
    };
    let services = BTreeMap::from([(name.to_string(), service(dir))]);
    let mut out = images::build(
        engine,
        &services,
        &opts,
        &CancellationToken::new(),
        Arc::new(|_| {}),
    )
    .await;
    let o = out.remove(0);
    match o.status {
        Status::Built | Status::Skipped { .. } => o.image,
        Status::Failed(e) => panic!("build of {name} failed: {} {:?}", e.message, e.details),
    }
}

/// A running container of a FROM-scratch busybox image, to stream into.
async fn busybox_container(engine: &Engine, work: &Path, name: &str) -> (String, LocalImage) {
    let dir = work.join(format!("{name}-ctx"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"sleep\", \"3600\"]\n",
    )
    .unwrap();
    let image = build(engine, "sink", &dir).await;
    let container = format!("pdbench-{name}-{}", std::process::id());
    let _ = engine
        .docker
        .remove_container(
            &container,
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    engine
        .docker
        .create_container(
            Some(bollard::query_parameters::CreateContainerOptions {
                name: Some(container.clone()),
                ..Default::default()
            }),
            bollard::models::ContainerCreateBody {
                image: Some(image.reference()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    engine
        .docker
        .start_container(&container, None)
        .await
        .unwrap();
    (container, image)
}

fn rm(container: &str) {
    let _ = Command::new("docker")
        .args(["rm", "-f", container])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn rmi(images: &[String]) {
    for i in images {
        let _ = Command::new("docker")
            .args(["rmi", "-f", i])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "target met" } else { "TARGET MISSED" }
}

// ---------------------------------------------------------------- 1

fn bench_noop(rt: &tokio::runtime::Runtime, _engine: &Engine, work: &Path) -> bool {
    println!("## 1. no-op check of an unchanged 20k-file / 200 MB context");
    let root = work.join("noop");
    let ctx = root.join("big");
    let t = Instant::now();
    for d in 0..200 {
        let dir = ctx.join(format!("pkg{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            std::fs::write(
                dir.join(format!("f{f:03}.bin")),
                noise(10 * 1024, (d * 100 + f) as u64 + 1),
            )
            .unwrap();
        }
    }
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /app/\n").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "**/*.tmp\n").unwrap();
    std::fs::write(
        root.join("pulsedev.toml"),
        "[services.big]\ncontext = \"big\"\n",
    )
    .unwrap();
    println!(
        "  fixture: 20000 files x 10 KiB = 200 MiB in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let _ = rt;
    let pulsedev = || {
        measured(
            Command::new(env!("CARGO_BIN_EXE_pulsedev"))
                .args(["build", "--output", "json"])
                .current_dir(&root)
                .env("XDG_CACHE_HOME", work.join("cache"))
                .stderr(Stdio::null()),
        )
    };
    let first = pulsedev();
    assert_eq!(first.code, 0, "{}", first.stdout);
    let tag = serde_json::from_str::<serde_json::Value>(&first.stdout).unwrap()["images"][0]["tag"]
        .as_str()
        .unwrap()
        .to_string();
    println!(
        "  pulsedev build, cold (hash 200 MiB + build): {:.2}s, peak RSS {:.1} MiB",
        first.secs,
        first.max_rss_kib as f64 / 1024.0
    );
    // A warm-up run stores the stat cache for files that were "racily clean" before.
    let warm = pulsedev();
    assert!(warm.stdout.contains("\"skipped\""), "{}", warm.stdout);
    let mut ours = Vec::new();
    let mut rss = 0;
    for _ in 0..5 {
        let m = pulsedev();
        assert!(m.stdout.contains("\"skipped\""), "{}", m.stdout);
        ours.push(m.secs);
        rss = rss.max(m.max_rss_kib);
    }
    let ours = median(ours);

    let ctx_s = ctx.to_str().unwrap();
    let warmup = docker(&["build", "-q", "-t", "pdbench-docker-big:warm", ctx_s]);
    let mut theirs = Vec::new();
    for _ in 0..3 {
        theirs.push(docker(&["build", "-q", "-t", "pdbench-docker-big:warm", ctx_s]).secs);
    }
    let theirs = median(theirs);
    let ratio = theirs / ours;
    println!(
        "  docker build (warm cache, legacy builder): {theirs:.3}s median of 3 (first: {:.2}s)",
        warmup.secs
    );
    println!(
        "  pulsedev build (no-op, stat cache):         {ours:.3}s median of 5, peak RSS {:.1} MiB",
        rss as f64 / 1024.0
    );
    let met = ratio >= 10.0;
    println!(
        "  ratio: {ratio:.1}x faster (target >= 10x): {}",
        verdict(met)
    );
    rmi(&[tag, "pdbench-docker-big:warm".into()]);
    met
}

// ---------------------------------------------------------------- 2

struct Registry {
    child: std::process::Child,
    port: u16,
    root: PathBuf,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let root = dir.join("storage");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                root.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, port, root }
    }

    fn blobs(&self) -> BTreeSet<(String, u64)> {
        let mut out = BTreeSet::new();
        let base = self.root.join("docker/registry/v2/blobs/sha256");
        for p in std::fs::read_dir(base).into_iter().flatten().flatten() {
            for b in std::fs::read_dir(p.path()).unwrap().flatten() {
                if let Ok(m) = std::fs::metadata(b.path().join("data")) {
                    out.insert((b.file_name().to_string_lossy().into_owned(), m.len()));
                }
            }
        }
        out
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bench_one_file_change(rt: &tokio::runtime::Runtime, engine: &Engine, work: &Path) -> bool {
    println!("## 2. deliver a one-file change of a 100 MB image");
    let root = work.join("change");
    let ctx = root.join("app");
    std::fs::create_dir_all(ctx.join("lib")).unwrap();
    std::fs::create_dir_all(ctx.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    write_noise_file(&ctx.join("lib/deps.bin"), 99 * MIB, 11);
    write_noise_file(&ctx.join("bin/app"), MIB, 1200);
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY lib/ /opt/lib/\nCOPY bin/ /opt/bin/\n",
    )
    .unwrap();
    let registry = Registry::start(&root);
    let push = RegistryPush::new(engine, registry.port);
    let (container, sink) = rt.block_on(busybox_container(engine, work, "change"));

    let v1 = rt.block_on(build(engine, "change", &ctx));
    let t = Instant::now();
    let d1 = rt.block_on(push.deliver(&v1)).unwrap();
    println!(
        "  first push of the whole image: {:.2}s, {} layers",
        t.elapsed().as_secs_f64(),
        d1.transfer.as_ref().map_or(0, |t| t.layers_sent)
    );
    let before = registry.blobs();

    // The one-file change: a new 1 MiB application binary.
    write_noise_file(&ctx.join("bin/app"), MIB, 1300);
    let t = Instant::now();
    let v2 = rt.block_on(build(engine, "change", &ctx));
    let build_secs = t.elapsed().as_secs_f64();
    assert_ne!(v2.tag, v1.tag, "the change must give a new content hash");

    let t = Instant::now();
    let d2 = rt.block_on(push.deliver(&v2)).unwrap();
    let push_secs = t.elapsed().as_secs_f64();
    let new: Vec<(String, u64)> = registry.blobs().difference(&before).cloned().collect();
    let moved: u64 = new.iter().map(|(_, s)| s).sum();
    // The changed layer is the large new blob; config and manifest are the others.
    let layer = new.iter().map(|(_, s)| *s).max().unwrap_or(0);
    let t2 = d2.transfer.clone().unwrap_or_default();

    // The archive path moves the whole image every time.
    let t = Instant::now();
    let r = rt
        .block_on(archive::exec_with_stdin(
            &engine.docker,
            &container,
            &["/bin/busybox", "sh", "-c", "/bin/busybox cat > /dev/null"].map(String::from),
            engine.docker.export_image(&v2.reference()),
        ))
        .unwrap();
    let archive_secs = t.elapsed().as_secs_f64();
    assert_eq!(r.exit_code, 0);

    // The plain tools: docker save | docker exec -i (what `kind load` does per node).
    let t = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker save {} | docker exec -i {container} /bin/busybox sh -c '/bin/busybox cat > /dev/null'",
            v2.reference()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let plain_secs = t.elapsed().as_secs_f64();

    println!("  rebuild after the change: {build_secs:.2}s");
    println!(
        "  registry push: {push_secs:.2}s, {} layer(s) sent, {} already there; the registry received {} new blobs, {moved} bytes (changed layer {layer} bytes)",
        t2.layers_sent,
        t2.layers_present,
        new.len()
    );
    println!(
        "  archive stream (pulsedev): {archive_secs:.2}s, {} bytes",
        r.sent
    );
    println!("  docker save | docker exec -i (plain tools): {plain_secs:.2}s");
    let ratio = moved as f64 / layer.max(1) as f64;
    println!(
        "  bytes moved / changed layer: {ratio:.3} (target <= 1.1): {}; archive moves {:.0}x more bytes, push is {:.1}x faster than the archive stream",
        verdict(ratio <= 1.1),
        r.sent as f64 / moved.max(1) as f64,
        archive_secs / push_secs
    );
    rm(&container);
    let host = push.host();
    rmi(&[
        v1.reference(),
        v2.reference(),
        format!("{host}/{}", v1.reference()),
        format!("{host}/{}", v2.reference()),
        sink.reference(),
    ]);
    ratio <= 1.1
}

// ---------------------------------------------------------------- 3

/// Child mode: stream `image`'s export into `container` and exit; the parent reads
/// this process's peak RSS.
fn child_stream(image: &str, container: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = images::connect_engine(Duration::from_secs(5))
            .await
            .unwrap();
        // As ArchiveImport does: a 1 GiB export outlasts the connect timeout.
        let docker = images::long_calls(&engine);
        let r = archive::exec_with_stdin(
            &docker,
            container,
            // The same sink as the plain-tools run; the integration tests check that
            // the bytes arrive intact.
            &["/bin/busybox", "sh", "-c", "/bin/busybox cat > /dev/null"].map(String::from),
            docker.export_image(image),
        )
        .await
        .unwrap();
        assert_eq!(r.exit_code, 0);
        assert!(r.stdin_complete);
        println!("{}", r.sent);
    });
}

fn bench_stream_1gib(rt: &tokio::runtime::Runtime, engine: &Engine, work: &Path) -> bool {
    println!("## 3. stream a 1 GiB image through the archive path");
    let root = work.join("huge");
    let ctx = root.join("huge");
    std::fs::create_dir_all(&ctx).unwrap();
    write_noise_file(&ctx.join("blob.bin"), 1024 * MIB, 21);
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY blob.bin /blob.bin\n",
    )
    .unwrap();
    std::fs::write(
        root.join("pulsedev.toml"),
        "[services.huge]\ncontext = \"huge\"\n",
    )
    .unwrap();
    // Building it through pulsedev streams a 1 GiB context: measure that too.
    let b = measured(
        Command::new(env!("CARGO_BIN_EXE_pulsedev"))
            .args(["build", "--output", "json"])
            .current_dir(&root)
            .env("XDG_CACHE_HOME", work.join("cache"))
            .stderr(Stdio::null()),
    );
    assert_eq!(b.code, 0, "{}", b.stdout);
    let tag = serde_json::from_str::<serde_json::Value>(&b.stdout).unwrap()["images"][0]["tag"]
        .as_str()
        .unwrap()
        .to_string();
    println!(
        "  pulsedev build of the 1 GiB context: {:.1}s, peak RSS {:.1} MiB",
        b.secs,
        b.max_rss_kib as f64 / 1024.0
    );
    let (container, sink) = rt.block_on(busybox_container(engine, work, "huge"));
    let m = measured(
        Command::new(std::env::current_exe().unwrap())
            .args(["--child-stream", &tag, &container])
            .stderr(Stdio::inherit()),
    );
    assert_eq!(m.code, 0);
    let sent: u64 = m.stdout.trim().parse().unwrap();
    let rss_mib = m.max_rss_kib as f64 / 1024.0;

    let plain = measured(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save {tag} | docker exec -i {container} /bin/busybox sh -c '/bin/busybox cat > /dev/null'"
            ))
            .stderr(Stdio::null()),
    );
    println!(
        "  pulsedev archive stream: {:.1}s, {sent} bytes ({:.0} MiB/s), peak RSS {rss_mib:.1} MiB",
        m.secs,
        sent as f64 / MIB as f64 / m.secs
    );
    println!(
        "  docker save | docker exec -i (plain tools): {:.1}s",
        plain.secs
    );
    let met = rss_mib < 64.0;
    println!(
        "  peak RSS {rss_mib:.1} MiB (target < 64 MiB): {}",
        verdict(met)
    );
    rm(&container);
    rmi(&[tag, sink.reference()]);
    met
}
