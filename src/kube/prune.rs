//! Prune (placeholder, filled in below).
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub deleted: Vec<String>,
}
