//! `pulsedev dev` benchmarks, on a real Docker engine and a real registry:
//!
//!   1. the rebuild path: a one-file change of an api-like context (2,000 files, ~20 MB,
//!      a layer per directory) to the new image in a local registry, through the code
//!      `dev` runs (`images::build`: hash, context, build; `RegistryPush`: the changed
//!      layer), against `docker build` of the same change (the Dockerfile's own build
//!      time). Target: pulsedev's time at most 5 s beyond docker's.
//!   2. the watcher's idle cost: `dev::watch::Watch` over a 20,000-file context (and an
//!      ignored node_modules of 1,051 directories) with
//!      nothing changing, sampling this process's CPU time (getrusage) and resident
//!      memory (/proc/self/statm). Target: CPU ≈ 0 and memory that does not grow.
//!
//! Run: `scripts/bench-dev` (or `cargo bench --bench dev`) with DOCKER_HOST set;
//! `… -- 2 600` runs only the watcher for 600 s (default 60 s). `/bin/busybox`,
//! `/usr/bin/docker-registry` and the `docker` CLI must be installed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulsedev::config::Service;
use pulsedev::dev::watch::{Layout, Watch};
use pulsedev::docker::Engine;
use pulsedev::images::deliver::Deliver;
use pulsedev::images::registry::RegistryPush;
use pulsedev::images::{self, BuildOptions, Event, Status};
use tokio_util::sync::CancellationToken;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let which: Vec<u32> = match args.first().and_then(|a| a.parse().ok()) {
        Some(n) => vec![n],
        None => vec![1, 2],
    };
    let idle_secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(60);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut ok = true;
    if which.contains(&1) {
        match rt.block_on(images::connect_engine(Duration::from_secs(5))) {
            Ok(engine) => ok &= bench_rebuild(&rt, &engine, work.path()),
            Err(e) => {
                eprintln!("no Docker engine answers ({}); set DOCKER_HOST", e.message);
                ok &= std::env::var_os("CI").is_none();
            }
        }
    }
    if which.contains(&2) {
        ok &= bench_idle(&rt, work.path(), Duration::from_secs(idle_secs));
    }
    std::process::exit(if ok { 0 } else { 1 });
}

fn verdict(met: bool) -> &'static str {
    if met { "target met" } else { "TARGET MISSED" }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A small local registry (Debian's docker-registry), removed on drop.
struct Registry {
    child: std::process::Child,
    port: u16,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        std::fs::create_dir_all(dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("storage").display()
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
        Registry { child, port }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An api-like context: busybox, `deps/` (what `npm ci` would bring: 1,900 files, the
/// big layer) and `src/` (100 files: what one edits).
fn api_context(dir: &Path) {
    std::fs::create_dir_all(dir.join("deps")).unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    for i in 0..1900 {
        let body: String = (0..10_000)
            .map(|j| char::from(b'a' + ((i * 7 + j) % 26) as u8))
            .collect();
        std::fs::write(dir.join(format!("deps/m{i}.js")), body).unwrap();
    }
    for i in 0..100 {
        std::fs::write(
            dir.join(format!("src/f{i}.js")),
            format!("export const v{i} = {i};\n"),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY deps /app/deps\nCOPY src /app/src\nUSER 10001:10001\nCMD [\"/bin/busybox\", \"sleep\", \"3600\"]\n",
    )
    .unwrap();
}

fn bench_rebuild(rt: &tokio::runtime::Runtime, engine: &Engine, work: &Path) -> bool {
    println!("## 1. rebuild path: one-file change of the api to a new image in the registry");
    let ctx = work.join("api");
    api_context(&ctx);
    let registry = Registry::start(&work.join("registry"));
    let info = rt.block_on(engine.info()).unwrap();
    let opts = BuildOptions {
        prefix: "pdbench-dev".into(),
        platform: pulsedev::docker::platform(&info),
        parallel: 1,
        cache_dir: Some(work.join("cache")),
    };
    let services = BTreeMap::from([(
        "api".to_string(),
        Service {
            context: ctx.clone(),
            dockerfile: "Dockerfile".into(),
            chart: None,
            build_args: BTreeMap::new(),
            target: None,
            live_update: Default::default(),
        },
    )]);
    let push = RegistryPush::new(engine, registry.port);
    let mut made: BTreeSet<String> = BTreeSet::new();
    // Every run's edits differ from earlier runs' (whose images and, with `rmi
    // --no-prune`, their parent layers stay in the engine): otherwise the changed COPY
    // and everything after it would come from the builder's cache.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // Each round's phases (name → seconds), from the build's own events: scan+hash is
    // Checking → Started, sending the context Started → the engine's first step line
    // (the classic builder reads the whole context before it parses the Dockerfile),
    // then each step up to the next, the last one up to Built (its commit, the tag and
    // pulsedev's inspect), then the push.
    let layout = Layout {
        contexts: BTreeMap::from([("api".to_string(), (ctx.clone(), "Dockerfile".into()))]),
        charts: Vec::<PathBuf>::new(),
        root: work.to_path_buf(),
    };
    let mut round = |n: usize| -> Vec<(String, f64)> {
        // `dev`'s watcher sees the write and waits out its debounce first (a fresh
        // watch each round: the other rounds' writes are not in its queue).
        let mut watch = Watch::start(&layout, pulsedev::dev::DEBOUNCE).unwrap();
        let t = Instant::now();
        std::fs::write(
            ctx.join("src/f7.js"),
            format!("export const v7 = {n}; // edit {n} of run {run}\n"),
        )
        .unwrap();
        let batch = rt.block_on(watch.next()).unwrap().unwrap();
        assert!(!layout.classify(&batch).is_empty(), "{batch:?}");
        drop(watch);
        let watched = t.elapsed().as_secs_f64();
        let marks: Arc<std::sync::Mutex<Vec<(Instant, String)>>> = Arc::default();
        let m = marks.clone();
        let t0 = t;
        let t = Instant::now();
        let mut out = rt.block_on(images::build(
            engine,
            &services,
            &opts,
            &CancellationToken::new(),
            Arc::new(move |e| {
                let label = match e {
                    Event::Started { .. } => "send context".to_string(),
                    Event::Step { step, .. } => step_name(&step),
                    Event::Built { .. } => "end".to_string(),
                    _ => return,
                };
                m.lock().unwrap().push((Instant::now(), label));
            }),
        ));
        let o = out.remove(0);
        let image = match o.status {
            Status::Built => o.image,
            other => panic!("not built: {other:?}"),
        };
        let build_end = Instant::now();
        let mut phases = vec![("watch+debounce".to_string(), watched)];
        phases.extend(phases_of(t, "scan+hash", &marks.lock().unwrap()));
        phases.push(("build total".into(), (build_end - t).as_secs_f64()));
        let p = Instant::now();
        let d = rt.block_on(push.deliver(&image)).unwrap();
        let pushed = p.elapsed().as_secs_f64();
        let sent = d.transfer.map_or(0, |t| t.layers_sent);
        phases.push((format!("push ({sent} layer(s) sent)"), pushed));
        phases.push(("TOTAL".into(), t0.elapsed().as_secs_f64()));
        made.insert(image.reference());
        made.insert(format!("localhost:{}/{}", registry.port, image.reference()));
        phases
    };
    // Warm: the first build and push of everything.
    round(0);
    let docker_tag = "pdbench-dev-docker";
    let remote = format!("127.0.0.1:{}/{docker_tag}", registry.port);
    // The plain tools doing the same: `docker build` (classic builder, as pulsedev
    // talks to it), `docker tag`, `docker push` to the same registry.
    let docker_round = |n: usize| -> Vec<(String, f64)> {
        std::fs::write(
            ctx.join("src/f7.js"),
            format!("export const v7 = {n}; // docker edit {n} of run {run}\n"),
        )
        .unwrap();
        let t = Instant::now();
        let mut child = Command::new("docker")
            .args(["build", "-t", &format!("{docker_tag}:{n}")])
            .arg(&ctx)
            .env("DOCKER_BUILDKIT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut marks = vec![(t, "send context".to_string())];
        use std::io::BufRead;
        for line in std::io::BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(|l| l.ok())
        {
            if line.starts_with("Step ") {
                marks.push((Instant::now(), step_name(&line)));
            }
        }
        assert!(child.wait().unwrap().success(), "docker build failed");
        marks.push((Instant::now(), "end".into()));
        let mut phases = phases_of(t, "", &marks);
        phases.retain(|(k, _)| !k.is_empty());
        phases.push(("build total".into(), t.elapsed().as_secs_f64()));
        let p = Instant::now();
        let tagged = format!("{remote}:{n}");
        let ok = Command::new("docker")
            .args(["tag", &format!("{docker_tag}:{n}"), &tagged])
            .status()
            .unwrap()
            .success()
            && Command::new("docker")
                .args(["push", "-q", &tagged])
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success();
        assert!(ok, "docker push failed");
        phases.push(("push".into(), p.elapsed().as_secs_f64()));
        phases.push(("TOTAL".into(), t.elapsed().as_secs_f64()));
        phases
    };
    docker_round(0);
    let (mut ours, mut theirs) = (vec![], vec![]);
    for n in 1..=5 {
        ours.push(round(n));
        theirs.push(docker_round(100 + n));
    }
    println!(
        "  context: 2,001 files, {:.1} MB; 5 rounds, medians [min–max]; load average {}",
        dir_mb(&ctx),
        load_average()
    );
    println!("  pulsedev (images::build + RegistryPush):");
    let t = print_phases(&ours);
    println!("  docker build + docker push (the plain tools):");
    let k = print_phases(&theirs);
    let kb = median(theirs.iter().map(|r| get(r, "build total")).collect());
    let over = t - kb;
    println!(
        "  pulsedev total beyond docker build's {kb:.2} s: {over:.2} s (target ≤ 5 s: {}); ratio to docker build + push: {:.2}",
        verdict(over <= 5.0),
        t / k
    );
    println!("  peak RSS of this process: {:.1} MiB", peak_rss_mib());
    let mut rm: Vec<String> = made.into_iter().collect();
    for n in [0, 101, 102, 103, 104, 105] {
        rm.push(format!("{docker_tag}:{n}"));
        rm.push(format!("{remote}:{n}"));
    }
    // --no-prune: the parent layers are other builds' cache (a concurrent build whose
    // cached parent disappears fails with "unable to find image").
    let _ = Command::new("docker")
        .args(["rmi", "--no-prune"])
        .args(&rm)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    over <= 5.0
}

/// `Step 3/6 : COPY deps /app/deps` → `3/6 COPY deps /app/deps`.
fn step_name(line: &str) -> String {
    line.trim_start_matches("Step ").replacen(" : ", " ", 1)
}

/// Durations between successive marks, each named by the mark that starts it; the
/// time from `t0` to the first mark is named `first`.
fn phases_of(t0: Instant, first: &str, marks: &[(Instant, String)]) -> Vec<(String, f64)> {
    let mut out = vec![];
    let mut prev = (t0, first.to_string());
    for (at, label) in marks {
        out.push((prev.1.clone(), (*at - prev.0).as_secs_f64()));
        prev = (*at, label.clone());
    }
    out
}

fn get(round: &[(String, f64)], key: &str) -> f64 {
    round
        .iter()
        .find(|(k, _)| k == key)
        .map_or(0.0, |(_, v)| *v)
}

/// Prints each phase's median and spread over the rounds; returns the median total.
fn print_phases(rounds: &[Vec<(String, f64)>]) -> f64 {
    for (key, _) in &rounds[0] {
        let v: Vec<f64> = rounds.iter().map(|r| get(r, key)).collect();
        let (lo, hi) = (
            v.iter().copied().fold(f64::MAX, f64::min),
            v.iter().copied().fold(0.0, f64::max),
        );
        println!("    {key:<44} {:6.2} s  [{lo:.2}–{hi:.2}]", median(v));
    }
    median(rounds.iter().map(|r| get(r, "TOTAL")).collect())
}

/// Peak resident memory of this process (getrusage's ru_maxrss, KiB on Linux).
fn peak_rss_mib() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_maxrss as f64 / 1024.0
}

fn dir_mb(dir: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let m = e.metadata().unwrap();
                if m.is_dir() { walk(&e.path()) } else { m.len() }
            })
            .sum()
    }
    walk(dir) as f64 / 1e6
}

/// The 1-, 5- and 15-minute load averages (/proc/loadavg).
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Resident memory of this process in MiB (/proc/self/statm, pages).
fn rss_mib() -> f64 {
    let text = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    pages * page / (1 << 20) as f64
}

fn bench_idle(rt: &tokio::runtime::Runtime, work: &Path, span: Duration) -> bool {
    println!(
        "## 2. watcher idle cost: 20,000-file context, nothing changing, {} s",
        span.as_secs()
    );
    let ctx = work.join("big");
    for d in 0..200 {
        let dir = ctx.join(format!("pkg{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            std::fs::write(dir.join(format!("f{f}.js")), "x").unwrap();
        }
    }
    // What an `npm install` on the host leaves: 840 directories the build ignores.
    for d in 0..840 {
        let dir = ctx.join(format!("node_modules/m{}/lib{}", d / 4, d % 4));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.js"), "x").unwrap();
    }
    std::fs::write(ctx.join(".dockerignore"), "node_modules\n").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\n").unwrap();
    let layout = Layout {
        contexts: BTreeMap::from([("api".to_string(), (ctx.clone(), "Dockerfile".into()))]),
        charts: Vec::<PathBuf>::new(),
        root: work.to_path_buf(),
    };
    let _guard = rt.enter();
    let t = Instant::now();
    let watch = Watch::start(&layout, pulsedev::dev::DEBOUNCE).expect("watching");
    let setup = t.elapsed().as_secs_f64();
    let (cpu0, rss0) = (cpu_seconds(), rss_mib());
    println!(
        "  watch set up in {setup:.2} s: {} inotify watches (201 directories sent, node_modules' 1,051 ignored); RSS {rss0:.1} MiB",
        watch.watched()
    );
    // A sample a minute (at least 6).
    let samples = (span.as_secs() / 60).max(6) as u32;
    let mut rss_max = rss0;
    for i in 1..=samples {
        std::thread::sleep(span / samples);
        let rss = rss_mib();
        rss_max = rss_max.max(rss);
        println!(
            "  after {:>4.0} s: CPU {:.3} s used, RSS {rss:.1} MiB, load average {}",
            (span / samples * i).as_secs_f64(),
            cpu_seconds() - cpu0,
            load_average()
        );
    }
    let cpu = cpu_seconds() - cpu0;
    let share = cpu / span.as_secs_f64() * 100.0;
    let growth = rss_mib() - rss0;
    drop(watch);
    println!(
        "  idle CPU {share:.3} % of one core, RSS growth {growth:+.2} MiB (peak {rss_max:.1}) (target CPU < 0.1 %, no growth: {})",
        verdict(share < 0.1 && growth < 1.0)
    );
    share < 0.1 && growth < 1.0
}
