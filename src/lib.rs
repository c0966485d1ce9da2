//! pulsedev: one command from a bare laptop (or a CI runner) to the PulseWatch stack on
//! a local kind cluster. Modules and what they own are listed in docs/ARCHITECTURE.md;
//! dependencies point one way: cli → (doctor, images, cluster, kube, helm) → error/ui/config.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod db;
pub mod dev;
pub mod docker;
pub mod doctor;
pub mod error;
pub mod fetch;
pub mod helm;
pub mod images;
pub mod kube;
pub mod offline;
pub mod plan;
pub mod redact;
pub mod secrets;
pub mod stack;
pub mod state;
pub mod sync;
pub mod tools;
pub mod trust;
pub mod ui;
pub mod up;

/// An environment for tests: `env(&[("K", "v")])` looks `K` up in the pairs, as the
/// `&dyn Fn(&str) -> Option<String>` parameters of config, docker, state and ui expect.
#[cfg(test)]
pub(crate) fn test_env(
    pairs: &'static [(&'static str, &'static str)],
) -> impl Fn(&str) -> Option<String> {
    move |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}
