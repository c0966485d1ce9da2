//! Building fixture images through the library, and fixture contents.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use pulsedev::config::Service;
use pulsedev::docker::Engine;
use pulsedev::images::{self, BuildOptions, LocalImage, Status};
use tokio_util::sync::CancellationToken;

pub fn nonce() -> String {
    format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// `len` bytes that do not compress (xorshift), so layer sizes are predictable.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
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

/// Builds the context at `dir` as service `name` and returns the image.
pub async fn build(engine: &Engine, name: &str, dir: &Path) -> LocalImage {
    let info = engine.info().await.unwrap();
    let opts = BuildOptions {
        prefix: "pdtest".into(),
        platform: pulsedev::docker::platform(&info),
        parallel: 1,
        cache_dir: None,
    };
    let services = BTreeMap::from([(
        name.to_string(),
        Service {
            context: dir.to_path_buf(),
            dockerfile: "Dockerfile".into(),
            chart: None,
            build_args: BTreeMap::new(),
            target: None,
            live_update: Default::default(),
        },
    )]);
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
        Status::Failed(e) => panic!("building {name} failed: {} {:?}", e.message, e.details),
    }
}

/// Removes a test image's tag. `noprune`: its untagged parent layers stay, because
/// builds of other tests running at the same time use them as their build cache (pruning
/// them made a concurrent build fail with "unable to find image sha256:…").
pub async fn remove_image(engine: &Engine, reference: &str) {
    let _ = engine
        .docker
        .remove_image(
            reference,
            Some(bollard::query_parameters::RemoveImageOptions {
                force: true,
                noprune: true,
                ..Default::default()
            }),
            None,
        )
        .await;
}
