//! Benchmark: the `up` step graph with fake steps of fixed durations. An ideal runner
//! finishes in the critical path's time; a sequential one in the sum. Reports both
//! ratios and the peak memory. Target: wall time within 10% of the critical path.
//!
//!     cargo bench --bench runner

use std::time::Duration;

use pulsedev::plan::{Outcome, Plan, Quiet, critical_path};
use tokio_util::sync::CancellationToken;

/// The shape of `up` (docs/ARCHITECTURE.md), durations in ms, dependencies first.
const STEPS: &[(&str, &[&str], u64)] = &[
    ("preflight", &[], 60),
    ("cluster", &["preflight"], 1500),
    ("build-api", &["preflight"], 700),
    ("build-worker", &["preflight"], 650),
    ("build-web", &["preflight"], 500),
    ("build-migrations", &["preflight"], 300),
    ("registry", &["preflight"], 250),
    ("registry-wiring", &["cluster", "registry"], 150),
    (
        "deliver-images",
        &[
            "registry-wiring",
            "build-api",
            "build-worker",
            "build-web",
            "build-migrations",
        ],
        300,
    ),
    ("ingress-controller", &["cluster"], 900),
    ("cert-manager", &["cluster"], 1000),
    ("secrets", &["cluster"], 50),
    ("data-stores", &["cluster", "secrets"], 800),
    ("webhook-gate", &["cert-manager"], 200),
    ("local-ca", &["webhook-gate"], 150),
    ("migrations", &["data-stores", "deliver-images"], 400),
    ("apps", &["migrations"], 600),
    (
        "ingress-tls",
        &["apps", "local-ca", "ingress-controller"],
        100,
    ),
];

fn peak_rss_kib() -> i64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_maxrss
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut plan = Plan::new();
    for (name, deps, ms) in STEPS {
        let d = Duration::from_millis(*ms);
        plan.add(name, deps, move |_| async move {
            tokio::time::sleep(d).await;
            Ok(Outcome::Done(None))
        });
    }
    let run = rt.block_on(plan.run(&Quiet, &CancellationToken::new()));
    assert!(run.error.is_none(), "bench plan failed");

    let shaped: Vec<(&str, &[&str], Duration)> = STEPS
        .iter()
        .map(|(n, d, ms)| (*n, *d, Duration::from_millis(*ms)))
        .collect();
    let critical = critical_path(&shaped);
    let sum: Duration = shaped.iter().map(|s| s.2).sum();
    let wall = run.wall;
    let over = wall.as_secs_f64() / critical.as_secs_f64();
    println!("step graph runner: {} steps", STEPS.len());
    println!(
        "  sum of steps     {:>8.3}s (a sequential runner)",
        sum.as_secs_f64()
    );
    println!(
        "  critical path    {:>8.3}s (an ideal runner)",
        critical.as_secs_f64()
    );
    println!("  pulsedev wall    {:>8.3}s", wall.as_secs_f64());
    println!(
        "  wall / critical  {over:>8.3}  (target <= 1.10: {})",
        if over <= 1.10 { "met" } else { "MISSED" }
    );
    println!(
        "  sum / wall       {:>8.2}x faster than sequential",
        sum.as_secs_f64() / wall.as_secs_f64()
    );
    println!("  peak RSS         {:>8} KiB", peak_rss_kib());
}
