//! Finding the Docker engine for tests that need a real one.
//!
//! With `CI` set (to anything but "", "0", "false") a missing engine is a failure:
//! CI must not go green by skipping. Without it, tests print a notice and skip.
//! The engine is the one `DOCKER_HOST` (or the docker CLI's context) names.

use std::time::Duration;

use pulsedev::docker::{self, Engine};

/// Docker is required (a missing engine fails the test) under CI and under
/// scripts/test (PULSEDEV_TEST_REQUIRE_DOCKER).
pub fn required() -> bool {
    let set = |k: &str| {
        std::env::var(k)
            .is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
    };
    set("CI") || set("PULSEDEV_TEST_REQUIRE_DOCKER")
}

fn unavailable(test: &str, why: &str) {
    if required() {
        panic!(
            "{test}: no Docker engine answers ({why}), and CI is set: start dockerd and export \
             DOCKER_HOST (e.g. unix:///tmp/pd-docker.sock) before running the tests"
        );
    }
    eprintln!("SKIPPED {test}: no Docker engine answers ({why}); set DOCKER_HOST to run it");
}

/// A connected engine, or None (after a printed notice) when none answers outside CI.
pub async fn engine(test: &str) -> Option<Engine> {
    let endpoint = match docker::resolve(&|k| std::env::var(k).ok(), dirs::home_dir().as_deref()) {
        Ok(e) => e,
        Err(e) => {
            unavailable(test, &e.message);
            return None;
        }
    };
    // The request timeout of every call the tests make through this engine: generous,
    // because the suite must hold on a busy machine (issue 11), where the shared dockerd
    // took over 5 s to answer `/info`. A daemon that is not there fails at once.
    match docker::connect(&endpoint, Duration::from_secs(60)).await {
        Ok(engine) => Some(engine),
        Err(e) => {
            unavailable(test, &e.message);
            None
        }
    }
}

/// For synchronous tests (those that run the binary): whether an engine answers.
pub fn available(test: &str) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(engine(test)).is_some()
}
