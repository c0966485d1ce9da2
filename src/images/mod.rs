//! Service images: build contexts (`.dockerignore`, streamed tar, content hash), builds
//! through the Docker Engine API, and delivery to the cluster (registry push or
//! archive import).
//!
//! Owns: everything between a service's source directory and an image reference a
//! manifest can use. With `docker`, the only module that imports bollard. Must not
//! render output (it reports events; `cli`/`ui` draw them) or talk to Kubernetes.

pub mod context;
pub mod dockerignore;
