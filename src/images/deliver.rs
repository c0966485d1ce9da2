//! How built images reach the cluster: the `Deliver` trait `up` calls, and the
//! image reference handed to manifests.
//!
//! Owns: the contract between building and the cluster. The two implementations
//! live in `registry` (push to the local registry) and `archive` (stream into each
//! node's containerd). Must not build images or know about Kubernetes objects.

use std::fmt;

use futures::future::BoxFuture;

use super::build::LocalImage;
use crate::error::Result;

/// An image as a manifest names it: never `latest`; a digest when the target knows
/// one (registry mode), else the content-hash tag (archive mode).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageRef {
    /// `localhost:5001/pulsewatch-api`, or `pulsewatch-api` for archive imports.
    pub repository: String,
    /// The content-hash tag, e.g. `0123456789ab`.
    pub tag: String,
    /// `sha256:…` of the manifest, when known.
    pub digest: Option<String>,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)?;
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// What moved to deliver one image.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Transfer {
    /// Bytes sent, when the mode can count them (archive: exactly; registry: the
    /// sizes the engine reported for the layers it pushed).
    pub bytes: Option<u64>,
    /// Layers uploaded / already at the target (registry mode).
    pub layers_sent: usize,
    pub layers_present: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Delivered {
    pub image: ImageRef,
    /// None when the target already had the image and nothing was sent.
    pub transfer: Option<Transfer>,
    pub seconds: f64,
}

/// One way of getting images to the nodes. Object-safe, so `up` can hold a
/// `Box<dyn Deliver>` chosen by `--load`.
pub trait Deliver: Send + Sync {
    /// `registry` or `archive`, for messages.
    fn mode(&self) -> &'static str;

    /// The reference the target already holds for `image`, if it does.
    fn present<'a>(&'a self, image: &'a LocalImage) -> BoxFuture<'a, Result<Option<ImageRef>>>;

    /// Makes `image` available at the target; sends nothing when it is already there.
    fn deliver<'a>(&'a self, image: &'a LocalImage) -> BoxFuture<'a, Result<Delivered>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_render_with_and_without_digest() {
        let mut r = ImageRef {
            repository: "localhost:5001/pulsewatch-api".into(),
            tag: "0123456789ab".into(),
            digest: Some(format!("sha256:{}", "f".repeat(64))),
        };
        assert_eq!(
            r.to_string(),
            format!(
                "localhost:5001/pulsewatch-api:0123456789ab@sha256:{}",
                "f".repeat(64)
            )
        );
        r.digest = None;
        assert_eq!(r.to_string(), "localhost:5001/pulsewatch-api:0123456789ab");
    }
}
