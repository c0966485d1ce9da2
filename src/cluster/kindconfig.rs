//! The kind cluster definition: `kind-config/dev.yaml` rendered with this run's ports
//! and node image into the YAML passed to `kind create cluster --config`, and the
//! config hash that decides between reuse and drift.
//!
//! Owns: rendering, hashing and comparing definitions. Pure: no files are written here.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

/// The template shipped in the repository (and compiled in, so an installed pulsedev
/// works outside a checkout).
pub const TEMPLATE: &str = include_str!("../../kind-config/dev.yaml");

/// The relative path of the template in a checkout; a copy there wins over the
/// compiled-in one, so editing it shapes the cluster.
pub const TEMPLATE_PATH: &str = "kind-config/dev.yaml";

/// kindest/node for Kubernetes v1.36.1, as published with kind v0.32.0 (pinned by
/// digest: a tag can be moved, a digest cannot). Bump with kind (docs/DECISIONS.md).
pub const NODE_IMAGE: &str =
    "kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5";

/// Host ports published by the node on 127.0.0.1; `None` publishes nothing (CI jobs
/// that reach the cluster only through its API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPorts {
    pub http: u16,
    pub https: u16,
}

/// What the rendering depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs<'a> {
    pub template: &'a str,
    pub node_image: &'a str,
    pub ports: Option<HostPorts>,
}

/// A rendered definition and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub yaml: String,
    /// 32 hex characters (128 bits of SHA-256): short enough for a Kubernetes label.
    pub hash: String,
}

const HASH_SLOT: &str = "{{config_hash}}";

/// Renders the template. The hash covers the whole rendered text with the hash slot
/// left as is, so any change of template, ports or image changes it.
pub fn render(inputs: &Inputs) -> Result<Rendered> {
    let mappings = match inputs.ports {
        None => String::new(),
        Some(p) => {
            let mut s = String::from("    extraPortMappings:\n");
            for (container, host) in [(80, p.http), (443, p.https)] {
                s.push_str(&format!(
                    "      - containerPort: {container}\n        hostPort: {host}\n        listenAddress: \"127.0.0.1\"\n        protocol: TCP\n"
                ));
            }
            s
        }
    };
    let text = inputs
        .template
        .replace("{{node_image}}", inputs.node_image)
        .replace("{{port_mappings}}\n", &mappings)
        .replace("{{port_mappings}}", &mappings);
    let hash = hex::encode(&Sha256::digest(text.as_bytes())[..16]);
    let yaml = text.replace(HASH_SLOT, &hash);
    if let Some(at) = yaml.find("{{") {
        let rest: String = yaml[at..].chars().take(40).collect();
        return Err(invalid(format!("unknown placeholder at `{rest}`")));
    }
    check(&yaml)?;
    Ok(Rendered { yaml, hash })
}

fn invalid(why: String) -> Error {
    Error::new(
        ErrorKind::ConfigInvalid,
        format!("the kind cluster definition ({TEMPLATE_PATH}) is invalid: {why}"),
    )
    .with_hint(format!(
        "fix {TEMPLATE_PATH}; placeholders are {{{{node_image}}}}, {{{{config_hash}}}} and {{{{port_mappings}}}}"
    ))
}

/// The parts of a kind config pulsedev relies on.
#[derive(Debug, Deserialize)]
struct Shape {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: String,
    #[serde(default)]
    nodes: Vec<serde_json::Value>,
}

fn check(yaml: &str) -> Result<()> {
    let shape: Shape =
        serde_saphyr::from_str(yaml).map_err(|e| invalid(format!("not valid YAML: {e}")))?;
    if shape.kind != "Cluster" || shape.api_version != "kind.x-k8s.io/v1alpha4" {
        return Err(invalid(format!(
            "expected kind: Cluster and apiVersion: kind.x-k8s.io/v1alpha4, found {} {}",
            shape.kind, shape.api_version
        )));
    }
    if shape.nodes.is_empty() {
        return Err(invalid("no nodes".into()));
    }
    Ok(())
}

/// The binds of a rendered kind config that reach beyond this machine, described for
/// the user. kind's defaults: the API server on 127.0.0.1 when `apiServerAddress` is
/// empty (pkg/apis/config/v1alpha4/default.go); an extraPortMappings entry on 0.0.0.0
/// when its `listenAddress` is empty (pkg/cluster/internal/providers/docker/provision.go,
/// `generatePortMappings`), so an entry without one is external too.
pub fn external_binds(yaml: &str) -> Vec<String> {
    let Ok(v) = serde_saphyr::from_str::<serde_json::Value>(yaml) else {
        return Vec::new();
    };
    let loopback = |a: &str| {
        a == "localhost"
            || a.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    let mut out = Vec::new();
    if let Some(a) = v
        .pointer("/networking/apiServerAddress")
        .and_then(|a| a.as_str())
        && !a.is_empty()
        && !loopback(a)
    {
        out.push(format!("the API server listens on {a}"));
    }
    for node in v["nodes"].as_array().into_iter().flatten() {
        for m in node["extraPortMappings"].as_array().into_iter().flatten() {
            let addr = m["listenAddress"].as_str().unwrap_or("");
            let addr = if addr.is_empty() { "0.0.0.0" } else { addr };
            if !loopback(addr) {
                out.push(format!(
                    "host port {} listens on {addr}",
                    m["hostPort"].as_u64().map_or("?".into(), |p| p.to_string())
                ));
            }
        }
    }
    out
}

/// What differs between the definition a cluster was made from and the one rendered
/// now, as `-`/`+` lines (a small LCS line diff; the files are a few dozen lines).
pub fn diff(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    let ignore = |l: &str| l.contains("pulsedev.dev/config-hash");
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            if !ignore(a[i]) {
                out.push(format!("- {}", a[i].trim_end()));
            }
            i += 1;
        } else {
            if !ignore(b[j]) {
                out.push(format!("+ {}", b[j].trim_end()));
            }
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(ports: Option<HostPorts>) -> Rendered {
        render(&Inputs {
            template: TEMPLATE,
            node_image: NODE_IMAGE,
            ports,
        })
        .unwrap()
    }

    #[test]
    fn the_dev_cluster_renders_as_snapshot() {
        let r = dev(Some(HostPorts {
            http: 8080,
            https: 8443,
        }));
        insta::assert_snapshot!(r.yaml);
        assert_eq!(r.hash.len(), 32);
    }

    /// Issue 13: a definition that binds beyond loopback is found (the caller refuses
    /// it without `--allow-external-binds`); pulsedev's own is not.
    #[test]
    fn binds_beyond_loopback_are_found() {
        let ours = render(&Inputs {
            template: TEMPLATE,
            node_image: NODE_IMAGE,
            ports: Some(HostPorts {
                http: 80,
                https: 443,
            }),
        })
        .unwrap();
        assert!(external_binds(&ours.yaml).is_empty(), "{}", ours.yaml);
        let open = TEMPLATE.replace(
            "apiServerAddress: \"127.0.0.1\"",
            "apiServerAddress: \"0.0.0.0\"",
        ) + "    extraPortMappings:\n      - containerPort: 5432\n        hostPort: 5432\n      - containerPort: 6379\n        hostPort: 6379\n        listenAddress: \"::1\"\n";
        let open = render(&Inputs {
            template: &open,
            node_image: NODE_IMAGE,
            ports: None,
        })
        .unwrap();
        let found = external_binds(&open.yaml);
        assert_eq!(
            found,
            [
                "the API server listens on 0.0.0.0",
                "host port 5432 listens on 0.0.0.0"
            ]
        );
    }

    #[test]
    fn no_host_ports_renders_no_mappings() {
        let r = dev(None);
        assert!(!r.yaml.contains("extraPortMappings"), "{}", r.yaml);
        assert!(r.yaml.contains("ingress-ready: \"true\""));
    }

    #[test]
    fn the_hash_follows_every_input_and_nothing_else() {
        let p = Some(HostPorts {
            http: 80,
            https: 443,
        });
        let base = dev(p);
        assert_eq!(base, dev(p), "deterministic");
        assert_ne!(base.hash, dev(None).hash);
        assert_ne!(
            base.hash,
            dev(Some(HostPorts {
                http: 81,
                https: 443
            }))
            .hash
        );
        let other_image = render(&Inputs {
            template: TEMPLATE,
            node_image: "kindest/node:v1.35.0@sha256:00",
            ports: p,
        })
        .unwrap();
        assert_ne!(base.hash, other_image.hash);
        assert!(
            base.yaml
                .contains(&format!("config-hash: \"{}\"", base.hash))
        );
    }

    #[test]
    fn a_broken_template_is_config_invalid() {
        let e = render(&Inputs {
            template: "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes: [{{nope}}]\n",
            node_image: NODE_IMAGE,
            ports: None,
        })
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConfigInvalid);
        assert!(
            e.message.contains("unknown placeholder at `{{nope}}]"),
            "{}",
            e.message
        );
        let e = render(&Inputs {
            template: "kind: Pod\napiVersion: v1\n",
            node_image: NODE_IMAGE,
            ports: None,
        })
        .unwrap_err();
        assert!(
            e.message.contains("expected kind: Cluster"),
            "{}",
            e.message
        );
    }

    #[test]
    fn diff_names_what_changed() {
        let a = dev(Some(HostPorts {
            http: 80,
            https: 443,
        }));
        let b = dev(Some(HostPorts {
            http: 8080,
            https: 443,
        }));
        assert_eq!(
            diff(&a.yaml, &b.yaml),
            vec!["-         hostPort: 80", "+         hostPort: 8080"]
        );
        assert!(diff(&a.yaml, &a.yaml).is_empty());
    }
}
