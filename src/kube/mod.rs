//! Everything pulsedev says to the Kubernetes API server: the client from pulsedev's own
//! kubeconfig, manifests as dynamic objects, server-side apply in an order that works the
//! first time, waits until things are really ready, webhook gates, prune, diagnosis of
//! what is not ready, and the `status` picture.
//!
//! Owns: every use of the `kube` and `k8s_openapi` crates (no other module imports them).
//! Must not: render output (it hands `ui` data and progress lines), run processes, talk
//! to Docker, or decide the order of `up`'s steps (that is `plan`).

pub mod client;
pub mod manifest;

pub use client::{connect, context_name, state_kubeconfig_path};
pub use manifest::{Manifest, parse};
