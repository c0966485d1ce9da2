//! Which resource serves a kind: a cache of the API server's discovery documents, one
//! `APIResourceList` per group/version, fetched on first use and forgotten on request
//! (after CRDs are installed, so new kinds become visible).
//!
//! Owns: mapping (apiVersion, kind) to an `ApiResource` and its scope. Never guesses a
//! plural from a kind. Must not change anything on the server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ::kube::Client;
use ::kube::core::{ApiResource, GroupVersionKind};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;

/// A kind as the server serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// A discovery cache shared by the engine's tasks.
#[derive(Clone)]
pub struct Discovery {
    client: Client,
    /// apiVersion → the list, or `None` when the server does not serve that group/version.
    cache: Arc<Mutex<HashMap<String, Option<Arc<APIResourceList>>>>>,
}

impl Discovery {
    pub fn new(client: Client) -> Discovery {
        Discovery {
            client,
            cache: Arc::default(),
        }
    }

    /// Resolves `kind` in `api_version`; `Ok(None)` when the server does not serve it.
    pub async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<Resolved>, ::kube::Error> {
        let Some(list) = self.list(api_version).await? else {
            return Ok(None);
        };
        let gvk = parse_gvk(api_version, kind);
        Ok(list
            .resources
            .iter()
            // Subresources (`deployments/scale`) share the kind; skip them.
            .find(|r| r.kind == kind && !r.name.contains('/'))
            .map(|r| Resolved {
                resource: ApiResource {
                    group: gvk.group.clone(),
                    version: gvk.version.clone(),
                    api_version: api_version.to_string(),
                    kind: kind.to_string(),
                    plural: r.name.clone(),
                },
                namespaced: r.namespaced,
            }))
    }

    /// Drops what is known about `api_version`, so the next `resolve` asks the server.
    pub fn forget(&self, api_version: &str) {
        self.cache
            .lock()
            .expect("discovery cache")
            .remove(api_version);
    }

    async fn list(&self, api_version: &str) -> Result<Option<Arc<APIResourceList>>, ::kube::Error> {
        if let Some(hit) = self.cache.lock().expect("discovery cache").get(api_version) {
            return Ok(hit.clone());
        }
        let fetched = if api_version.contains('/') {
            self.client.list_api_group_resources(api_version).await
        } else {
            self.client.list_core_api_resources(api_version).await
        };
        let entry = match fetched {
            Ok(list) => Some(Arc::new(list)),
            Err(::kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => return Err(e),
        };
        self.cache
            .lock()
            .expect("discovery cache")
            .insert(api_version.to_string(), entry.clone());
        Ok(entry)
    }
}

/// `apps/v1` + `Deployment` → group `apps`, version `v1`; `v1` → the core group.
pub fn parse_gvk(api_version: &str, kind: &str) -> GroupVersionKind {
    match api_version.split_once('/') {
        Some((group, version)) => GroupVersionKind::gvk(group, version, kind),
        None => GroupVersionKind::gvk("", api_version, kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{Exchange, Scenario, apps_v1, not_found};

    #[tokio::test(start_paused = true)]
    async fn resolves_through_discovery_and_caches_per_group_version() {
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/apis/apps/v1").ok(apps_v1()))
            .then(Exchange::get("/apis/cert-manager.io/v1").fail(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
            .then(Exchange::get("/apis/apps/v1").ok(apps_v1()))
            .start();
        let d = Discovery::new(client);
        let r = d.resolve("apps/v1", "StatefulSet").await.unwrap().unwrap();
        assert_eq!(r.resource.plural, "statefulsets");
        assert_eq!(r.resource.group, "apps");
        assert!(r.namespaced);
        // Same group/version: no second request.
        assert!(d.resolve("apps/v1", "Deployment").await.unwrap().is_some());
        assert!(d.resolve("apps/v1", "Nope").await.unwrap().is_none());
        assert!(
            d.resolve("cert-manager.io/v1", "Certificate")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            d.resolve("cert-manager.io/v1", "Issuer")
                .await
                .unwrap()
                .is_none()
        );
        d.forget("apps/v1");
        assert!(d.resolve("apps/v1", "Deployment").await.unwrap().is_some());
        mock.finish().await;
        let _ = not_found("x", "y");
    }
}
