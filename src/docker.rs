//! The Docker engine connection: which endpoint (resolved like the docker CLI, so
//! pulsedev and kind talk to the same daemon), connecting with a short timeout, and
//! telling "nothing listening" from "permission denied" from "hangs".
//!
//! Owns: endpoint resolution and the `bollard::Docker` handle. Only this module,
//! `images` and `cluster::nodes` (node containers) import bollard. Must not build,
//! push or run anything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Where the endpoint came from, reported so a user knows what to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// The DOCKER_HOST environment variable.
    DockerHost,
    /// A docker context, selected by DOCKER_CONTEXT or by `currentContext` of config.json.
    Context { name: String, selected_by: String },
    /// Nothing configured: the default socket.
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::DockerHost => write!(f, "from DOCKER_HOST"),
            Source::Context { name, selected_by } => {
                write!(f, "from docker context {name:?} selected by {selected_by}")
            }
            Source::Default => write!(f, "the default"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub host: String,
    pub source: Source,
}

/// Resolves the endpoint like the docker CLI: DOCKER_HOST, then DOCKER_CONTEXT, then
/// `currentContext` of `$DOCKER_CONFIG/config.json` (default `~/.docker`), whose
/// `contexts/meta/<sha256(name)>/meta.json` names the host.
///
/// DOCKER_TLS_VERIFY (any non-empty value, as the docker CLI reads it: docker/cli
/// cli/flags/options.go
/// `dockerTLSVerify = os.Getenv("DOCKER_TLS_VERIFY") != ""`) asks for TLS to a tcp://
/// engine. pulsedev speaks no TLS to the engine, so such an endpoint is refused rather
/// than spoken to in plaintext.
pub fn resolve(env: &dyn Fn(&str) -> Option<String>, home: Option<&Path>) -> Result<Endpoint> {
    let endpoint = resolve_host(env, home)?;
    let tls_asked = env("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty());
    let plain = endpoint.host.starts_with("tcp://") || endpoint.host.starts_with("http://");
    if tls_asked && plain {
        return Err(Error::new(
            ErrorKind::DockerUnreachable,
            format!(
                "DOCKER_TLS_VERIFY is set, but pulsedev cannot speak TLS to the Docker engine at {} ({}); refusing to talk to it in plaintext",
                endpoint.host, endpoint.source
            ),
        )
        .with_hint(
            "forward the engine's socket over ssh (`ssh -L /tmp/docker.sock:/var/run/docker.sock HOST`) and set DOCKER_HOST=unix:///tmp/docker.sock, or unset DOCKER_TLS_VERIFY if that engine really listens without TLS",
        ));
    }
    Ok(endpoint)
}

fn resolve_host(env: &dyn Fn(&str) -> Option<String>, home: Option<&Path>) -> Result<Endpoint> {
    if let Some(host) = env("DOCKER_HOST").filter(|h| !h.is_empty()) {
        return Ok(Endpoint {
            host,
            source: Source::DockerHost,
        });
    }
    let config_dir = env("DOCKER_CONFIG")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".docker")));
    let selected = match env("DOCKER_CONTEXT").filter(|c| !c.is_empty()) {
        Some(name) => Some((name, "DOCKER_CONTEXT".to_string())),
        None => config_dir.as_deref().and_then(|dir| {
            let path = dir.join("config.json");
            let text = std::fs::read_to_string(&path).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            let name = v.get("currentContext")?.as_str()?.to_string();
            Some((name, path.display().to_string()))
        }),
    };
    let Some((name, selected_by)) = selected.filter(|(n, _)| n != "default") else {
        return Ok(Endpoint {
            host: DEFAULT_HOST.to_string(),
            source: Source::Default,
        });
    };
    let meta = config_dir.map(|dir| {
        dir.join("contexts/meta")
            .join(hex::encode(Sha256::digest(name.as_bytes())))
            .join("meta.json")
    });
    let host = meta.as_ref().and_then(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(v.pointer("/Endpoints/docker/Host")?.as_str()?.to_string())
    });
    match host {
        Some(host) => Ok(Endpoint {
            host,
            source: Source::Context { name, selected_by },
        }),
        None => Err(Error::new(
            ErrorKind::DockerUnreachable,
            format!(
                "docker context {name:?} (selected by {selected_by}) has no docker endpoint{}",
                meta.map(|m| format!(" in {}", m.display()))
                    .unwrap_or_default()
            ),
        )
        .with_hint(
            "list contexts with `docker context ls` and select one with `docker context use NAME`",
        )),
    }
}

/// What the engine says about itself, the parts a kind cluster cares about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineInfo {
    pub version: String,
    pub api_version: String,
    pub architecture: String,
    pub cpus: i64,
    pub memory_bytes: i64,
    pub cgroup_version: String,
    pub rootless: bool,
    pub storage_driver: String,
    pub root_dir: String,
}

/// A connected, version-negotiated engine.
#[derive(Debug, Clone)]
pub struct Engine {
    pub docker: Docker,
    pub endpoint: Endpoint,
}

/// Connects and pings within `timeout`, classifying what goes wrong.
pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Engine> {
    let host = endpoint.host.as_str();
    let unreachable = |why: String| {
        Error::new(
            ErrorKind::DockerUnreachable,
            format!(
                "cannot reach the Docker engine at {host} ({}): {why}",
                endpoint.source
            ),
        )
        .with_hint(start_hint(endpoint))
    };
    let docker = if let Some(path) = host.strip_prefix("unix://") {
        probe_socket(path, timeout).await.map_err(|e| match e {
            Probe::Denied => Error::new(
                ErrorKind::DockerPermissionDenied,
                format!("permission denied connecting to the Docker socket {path}"),
            )
            .with_hint(
                "add yourself to the `docker` group (`sudo usermod -aG docker $USER`, then log in again), \
                 or point DOCKER_HOST at a socket you may use",
            ),
            Probe::Failed(why) => unreachable(why),
        })?;
        Docker::connect_with_unix(path, timeout.as_secs().max(1), bollard::API_DEFAULT_VERSION)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, timeout.as_secs().max(1), bollard::API_DEFAULT_VERSION)
    } else {
        return Err(Error::new(
            ErrorKind::DockerUnreachable,
            format!(
                "the Docker endpoint {host} ({}) uses a scheme pulsedev does not support",
                endpoint.source
            ),
        )
        .with_hint("use a unix:// socket or a tcp:// address (for ssh hosts, forward the socket: `ssh -L /tmp/docker.sock:/var/run/docker.sock HOST`)"));
    }
    .map_err(|e| unreachable(e.to_string()))?;

    let hangs = || {
        unreachable(format!(
            "it accepted the connection but did not answer within {}s (the daemon hangs)",
            timeout.as_secs_f32()
        ))
        .with_hint("restart the Docker engine (`sudo systemctl restart docker`, or restart Docker Desktop)")
    };
    let docker = match tokio::time::timeout(timeout, docker.negotiate_version()).await {
        Ok(Ok(d)) => d,
        Ok(Err(bollard::errors::Error::RequestTimeoutError)) | Err(_) => return Err(hangs()),
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
    };
    Ok(Engine {
        docker,
        endpoint: endpoint.clone(),
    })
}

enum Probe {
    Denied,
    Failed(String),
}

/// A raw connect first: bollard folds every socket error into one message, and the
/// fix for "permission denied" differs from the one for "nothing listening".
async fn probe_socket(path: &str, timeout: Duration) -> Result<(), Probe> {
    use std::io::ErrorKind as K;
    match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(match e.kind() {
            K::PermissionDenied => Probe::Denied,
            K::NotFound => Probe::Failed(format!(
                "the socket {path} does not exist (nothing is listening)"
            )),
            K::ConnectionRefused => Probe::Failed(format!(
                "nothing is listening on {path} (connection refused)"
            )),
            _ => Probe::Failed(e.to_string()),
        }),
        Err(_) => Err(Probe::Failed(format!(
            "connecting to {path} did not finish within {}s",
            timeout.as_secs_f32()
        ))),
    }
}

fn start_hint(endpoint: &Endpoint) -> String {
    match &endpoint.source {
        Source::DockerHost => "start the Docker engine DOCKER_HOST points at, or unset DOCKER_HOST to use the default socket".into(),
        Source::Context { name, .. } => format!(
            "start the engine of docker context {name:?} (Docker Desktop, colima, …), or switch with `docker context use default`"
        ),
        Source::Default => "start Docker (`sudo systemctl start docker`, or open Docker Desktop), or set DOCKER_HOST".into(),
    }
}

impl Engine {
    pub async fn info(&self) -> Result<EngineInfo> {
        let i = self.docker.info().await.map_err(|e| {
            Error::new(
                ErrorKind::DockerUnreachable,
                format!(
                    "failed to read engine info from {}: {e}",
                    self.endpoint.host
                ),
            )
        })?;
        let rootless = i
            .security_options
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|o| o.contains("name=rootless"));
        Ok(EngineInfo {
            version: i.server_version.unwrap_or_default(),
            api_version: self.docker.client_version().to_string(),
            architecture: i.architecture.unwrap_or_default(),
            cpus: i.ncpu.unwrap_or_default(),
            memory_bytes: i.mem_total.unwrap_or_default(),
            cgroup_version: i.cgroup_version.map(|v| v.to_string()).unwrap_or_default(),
            rootless,
            storage_driver: i.driver.unwrap_or_default(),
            root_dir: i.docker_root_dir.unwrap_or_default(),
        })
    }

    /// Host ports published by containers carrying `label` (e.g. a kind cluster's
    /// nodes), with the container name: a port held by our own cluster is not a conflict.
    pub async fn published_ports(&self, label: &str) -> Result<Vec<(u16, String)>> {
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .all(false)
            .filters(&std::collections::HashMap::from([("label", vec![label])]))
            .build();
        let list = self.docker.list_containers(Some(opts)).await.map_err(|e| {
            Error::internal(format!(
                "failed to list containers on {}: {e}",
                self.endpoint.host
            ))
        })?;
        let mut out = Vec::new();
        for c in list {
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string();
            for p in c.ports.unwrap_or_default() {
                if let Some(public) = p.public_port {
                    out.push((public, name.clone()));
                }
            }
        }
        Ok(out)
    }
}

/// How the engine pulls: its proxies, Docker Hub mirrors and insecure registries
/// (`docker info`: HTTPProxy, HTTPSProxy, NoProxy, RegistryConfig).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullSettings {
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
    pub mirrors: Vec<String>,
    pub insecure_cidrs: Vec<String>,
    /// Registries configured as insecure by name (`insecure-registries`).
    pub insecure_hosts: Vec<String>,
}

impl Engine {
    /// The engine's pull settings, from /info.
    pub async fn pull_settings(&self) -> Result<PullSettings> {
        let i = self.docker.info().await.map_err(|e| {
            Error::new(
                ErrorKind::DockerUnreachable,
                format!(
                    "failed to read engine info from {}: {e}",
                    self.endpoint.host
                ),
            )
        })?;
        let some = |v: Option<String>| v.filter(|s| !s.is_empty());
        let reg = i.registry_config.unwrap_or_default();
        Ok(PullSettings {
            http_proxy: some(i.http_proxy),
            https_proxy: some(i.https_proxy),
            no_proxy: some(i.no_proxy),
            mirrors: reg.mirrors.unwrap_or_default(),
            insecure_cidrs: reg.insecure_registry_cidrs.unwrap_or_default(),
            insecure_hosts: reg
                .index_configs
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, c)| c.secure == Some(false))
                .map(|(name, _)| name)
                .collect(),
        })
    }

    /// Whether the engine has `image` (a name, name:tag or name@digest).
    pub async fn has_image(&self, image: &str) -> Result<bool> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(Error::new(
                ErrorKind::DockerUnreachable,
                format!(
                    "failed to inspect the image {image} on {}: {e}",
                    self.endpoint.host
                ),
            )),
        }
    }
}

/// The linux/<arch> platform string of the engine, for builds and imports.
pub fn platform(info: &EngineInfo) -> String {
    let arch = match info.architecture.as_str() {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("linux/{arch}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn write_context(home: &Path, name: &str, host: &str) {
        let dir = home
            .join(".docker/contexts/meta")
            .join(hex::encode(Sha256::digest(name.as_bytes())));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("meta.json"),
            format!(r#"{{"Name":"{name}","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{host}","SkipTLSVerify":false}}}}}}"#),
        )
        .unwrap();
    }

    #[test]
    fn docker_host_wins() {
        let home = tempfile::tempdir().unwrap();
        write_context(home.path(), "colima", "unix:///colima.sock");
        let env = env_of(&[
            ("DOCKER_HOST", "tcp://1.2.3.4:2375"),
            ("DOCKER_CONTEXT", "colima"),
        ]);
        let e = resolve(&env, Some(home.path())).unwrap();
        assert_eq!(e.host, "tcp://1.2.3.4:2375");
        assert_eq!(e.source, Source::DockerHost);
    }

    #[test]
    fn docker_context_env_then_current_context() {
        let home = tempfile::tempdir().unwrap();
        write_context(home.path(), "colima", "unix:///colima.sock");
        write_context(home.path(), "desktop-linux", "unix:///desktop.sock");
        std::fs::write(
            home.path().join(".docker/config.json"),
            r#"{"auths":{},"currentContext":"desktop-linux"}"#,
        )
        .unwrap();

        let e = resolve(&env_of(&[("DOCKER_CONTEXT", "colima")]), Some(home.path())).unwrap();
        assert_eq!(e.host, "unix:///colima.sock");
        assert_eq!(
            e.source,
            Source::Context {
                name: "colima".into(),
                selected_by: "DOCKER_CONTEXT".into()
            }
        );

        let e = resolve(&env_of(&[]), Some(home.path())).unwrap();
        assert_eq!(e.host, "unix:///desktop.sock");
        assert!(matches!(e.source, Source::Context { ref name, .. } if name == "desktop-linux"));
    }

    #[test]
    fn docker_config_dir_is_honoured() {
        let cfg = tempfile::tempdir().unwrap();
        // DOCKER_CONFIG points at the directory that holds config.json and contexts/.
        let dir = cfg
            .path()
            .join("contexts/meta")
            .join(hex::encode(Sha256::digest(b"remote")));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("meta.json"),
            r#"{"Name":"remote","Endpoints":{"docker":{"Host":"tcp://10.0.0.1:2375"}}}"#,
        )
        .unwrap();
        std::fs::write(
            cfg.path().join("config.json"),
            r#"{"currentContext":"remote"}"#,
        )
        .unwrap();
        let env = env_of(&[("DOCKER_CONFIG", cfg.path().to_str().unwrap())]);
        assert_eq!(resolve(&env, None).unwrap().host, "tcp://10.0.0.1:2375");
    }

    #[test]
    fn default_context_and_nothing_configured_use_the_default_socket() {
        let home = tempfile::tempdir().unwrap();
        let e = resolve(&env_of(&[]), Some(home.path())).unwrap();
        assert_eq!(
            e,
            Endpoint {
                host: DEFAULT_HOST.into(),
                source: Source::Default
            }
        );
        let e = resolve(&env_of(&[("DOCKER_CONTEXT", "default")]), Some(home.path())).unwrap();
        assert_eq!(e.host, DEFAULT_HOST);
    }

    #[test]
    fn a_missing_context_is_an_error_naming_it() {
        let home = tempfile::tempdir().unwrap();
        let err = resolve(&env_of(&[("DOCKER_CONTEXT", "gone")]), Some(home.path())).unwrap_err();
        assert_eq!(err.kind, ErrorKind::DockerUnreachable);
        assert!(err.message.contains("\"gone\""), "{}", err.message);
        assert!(err.hint.clone().unwrap().contains("docker context ls"));
    }

    #[test]
    fn platform_names() {
        let mut i = EngineInfo {
            version: String::new(),
            api_version: String::new(),
            architecture: "x86_64".into(),
            cpus: 1,
            memory_bytes: 0,
            cgroup_version: String::new(),
            rootless: false,
            storage_driver: String::new(),
            root_dir: String::new(),
        };
        assert_eq!(platform(&i), "linux/amd64");
        i.architecture = "aarch64".into();
        assert_eq!(platform(&i), "linux/arm64");
    }

    /// Issue 13: with DOCKER_TLS_VERIFY set, a tcp:// engine must not be spoken to in
    /// plaintext.
    #[test]
    fn tls_asked_for_a_tcp_engine_is_refused_not_downgraded() {
        let env = crate::test_env;
        let e = resolve(
            &env(&[
                ("DOCKER_HOST", "tcp://10.0.0.5:2376"),
                ("DOCKER_TLS_VERIFY", "1"),
            ]),
            None,
        )
        .unwrap_err();
        assert_eq!(e.id(), "docker-unreachable");
        assert!(e.message.contains("refusing to talk to it in plaintext"));
        assert!(
            resolve(
                &env(&[
                    ("DOCKER_HOST", "tcp://10.0.0.5:2375"),
                    ("DOCKER_TLS_VERIFY", "")
                ]),
                None
            )
            .is_ok()
        );
        assert!(
            resolve(
                &env(&[
                    ("DOCKER_HOST", "unix:///run/docker.sock"),
                    ("DOCKER_TLS_VERIFY", "1")
                ]),
                None
            )
            .is_ok()
        );
    }
}
