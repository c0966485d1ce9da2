//! What `up` downloads, and whether each piece is already on this machine or can be
//! reached from it: kind and helm (pinned releases, unless usable ones are on PATH or
//! verified in the cache), the kind node image and the registry image (in the engine),
//! the platform charts (in pulsedev's chart cache) and the base images of the service
//! Dockerfiles (in the engine). `doctor` turns this into checks; `fetch` uses the same
//! inventory to say what it brought.
//!
//! Reachability is one request per source, all at once, each bounded by a short
//! timeout: any HTTP answer (also 401, 404) means the host can be reached, once the
//! redirects are followed (kind and helm releases answer with a redirect to a CDN,
//! objects.githubusercontent.com or get.helm.sh's, which may be the blocked part). Tools and
//! charts are downloaded by pulsedev and helm, so their probes use this process's
//! proxy variables; images are pulled by the Docker engine, so theirs use the
//! engine's proxy settings and registry mirrors (`docker info`).
//!
//! Owns: the inventory and the probes. Must not download or change anything.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, LoadMode};
use crate::error::{Error, Result};
use crate::stack::{self, PlatformChart};
use crate::tools::{self, Tool, fetch as tool_fetch};

/// How long one probe may take (connect, TLS, first response line). Probes run side by
/// side, so a machine where nothing answers learns it in about this long.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(2000);

/// Redirects a probe follows: as many as a download does (reqwest's default, which
/// `tools::fetch` keeps).
pub const MAX_REDIRECTS: usize = 10;

/// Docker Hub's registry API host: images without a registry domain come from
/// `docker.io`, whose API lives here (moby registry/config.go, `DefaultRegistryHost`
/// and `IndexHostname`).
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Proxy settings, read as reqwest (through hyper-util) and curl read them: the
/// upper-case name first, then the lower-case one (hyper-util 0.1
/// src/client/proxy/matcher.rs `Builder::from_env`); `HTTPS_PROXY` for https URLs,
/// `HTTP_PROXY` for http ones, `ALL_PROXY` for both when those are unset; `NO_PROXY`
/// lists hosts, domains and CIDRs reached directly (reqwest `NoProxy::from_string`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    pub http: Option<String>,
    pub https: Option<String>,
    pub all: Option<String>,
    pub no: Option<String>,
}

impl Proxies {
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Proxies {
        let first = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| env(n).filter(|v| !v.trim().is_empty()))
        };
        Proxies {
            http: first(["HTTP_PROXY", "http_proxy"]),
            https: first(["HTTPS_PROXY", "https_proxy"]),
            all: first(["ALL_PROXY", "all_proxy"]),
            no: first(["NO_PROXY", "no_proxy"]),
        }
    }

    /// The proxy a request to `url` goes through (`None`: direct), as the client built
    /// by `client` decides it. For messages.
    pub fn for_url(&self, url: &str) -> Option<String> {
        let parsed = reqwest::Url::parse(url).ok()?;
        let host = parsed.host_str()?.trim_matches(['[', ']']);
        if let Some(no) = &self.no
            && no_proxy_matches(no, host)
        {
            return None;
        }
        match parsed.scheme() {
            "https" => self.https.clone().or_else(|| self.all.clone()),
            _ => self.http.clone().or_else(|| self.all.clone()),
        }
    }

    /// A client that sends requests through these proxies only (not the process's),
    /// follows redirects as `redirect` says and gives up after `timeout`, counted over
    /// the whole chain (reqwest's `timeout` covers every hop of one `send`).
    pub fn client(
        &self,
        timeout: Duration,
        redirect: reqwest::redirect::Policy,
    ) -> std::result::Result<reqwest::Client, String> {
        self.client_builder()?
            .redirect(redirect)
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())
    }

    /// A client builder that sends requests through these proxies only (not the
    /// process's), with pulsedev's user agent.
    pub fn client_builder(&self) -> std::result::Result<reqwest::ClientBuilder, String> {
        let no = || self.no.as_deref().and_then(reqwest::NoProxy::from_string);
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .user_agent(concat!("pulsedev/", env!("CARGO_PKG_VERSION")));
        let bad = |var: &str, e: reqwest::Error| format!("the proxy {var} is not a URL: {e}");
        if let Some(p) = &self.https {
            b = b.proxy(
                reqwest::Proxy::https(p)
                    .map_err(|e| bad("HTTPS_PROXY", e))?
                    .no_proxy(no()),
            );
        }
        if let Some(p) = &self.http {
            b = b.proxy(
                reqwest::Proxy::http(p)
                    .map_err(|e| bad("HTTP_PROXY", e))?
                    .no_proxy(no()),
            );
        }
        if let Some(p) = &self.all {
            b = b.proxy(
                reqwest::Proxy::all(p)
                    .map_err(|e| bad("ALL_PROXY", e))?
                    .no_proxy(no()),
            );
        }
        Ok(b)
    }
}

/// Whether `host` is in a NO_PROXY list, by the rules reqwest applies (`*` matches
/// all; an entry matches the host itself and, as a domain, its subdomains; a leading
/// dot is a domain; IP addresses and CIDRs match addresses). For messages only: the
/// client applies reqwest's own matcher.
fn no_proxy_matches(list: &str, host: &str) -> bool {
    let ip: Option<std::net::IpAddr> = host.parse().ok();
    list.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        if let Some(ip) = ip {
            if let Ok(net) = entry.parse::<ipnet::IpNet>() {
                return net.contains(&ip);
            }
            return entry.parse::<std::net::IpAddr>().is_ok_and(|e| e == ip);
        }
        let domain = entry.trim_start_matches('.');
        !domain.is_empty() && (host == domain || host.ends_with(&format!(".{domain}")))
    })
}

/// One source to ask: a URL and the proxies that apply to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub url: String,
    pub proxies: Proxies,
}

/// Where a piece stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// On this machine (where).
    Here(String),
    /// `up` would download it: from any of these (mirrors first).
    Missing(Vec<Probe>),
    /// Could not be told (the engine did not answer, a Dockerfile is unreadable).
    Unknown(String),
    /// Nothing to download it from (no pin for this platform): installed by hand.
    Manual(String),
}

/// One thing `up` needs that may have to be downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub what: String,
    pub state: State,
}

/// The groups doctor reports, each one check (ids stable, listed in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Kind,
    Helm,
    NodeImage,
    Charts,
    Images,
}

impl Group {
    pub const ALL: [Group; 5] = [
        Group::Kind,
        Group::Helm,
        Group::NodeImage,
        Group::Charts,
        Group::Images,
    ];

    pub fn check_id(self) -> &'static str {
        match self {
            Group::Kind => "download-kind",
            Group::Helm => "download-helm",
            Group::NodeImage => "download-node-image",
            Group::Charts => "download-charts",
            Group::Images => "download-images",
        }
    }
}

/// What was found, by group.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub groups: BTreeMap<Group, Vec<Piece>>,
}

impl Inventory {
    /// True when nothing needs a download.
    pub fn all_here(&self) -> bool {
        self.groups
            .values()
            .flatten()
            .all(|p| matches!(p.state, State::Here(_)))
    }

    /// What `up` would still download, by name.
    pub fn missing(&self) -> Vec<String> {
        self.groups
            .values()
            .flatten()
            .filter(|p| !matches!(p.state, State::Here(_)))
            .map(|p| p.what.clone())
            .collect()
    }
}

/// What the inventory reads from the machine (doctor's `Machine` fills it).
pub struct Inputs<'a> {
    pub env: &'a (dyn Fn(&str) -> Option<String> + Sync),
    pub home: Option<&'a Path>,
    pub path_var: Option<&'a std::ffi::OsStr>,
    pub cwd: &'a Path,
    pub tool_timeout: Duration,
    pub docker_timeout: Duration,
}

/// A usable tool on PATH, or the pinned release's state in the cache.
pub async fn tool_state(tool: &Tool, i: &Inputs<'_>) -> Piece {
    let what = format!("{} {}", tool.name, tool.pinned);
    if let Some(found) = tools::locate(tool, i.path_var, i.cwd)
        && let Ok(v) = tools::version(tool, &found, i.tool_timeout).await
        && tool.unusable(v).is_none()
    {
        return Piece {
            what: format!("{} {v}", tool.name),
            state: State::Here(format!("on PATH at {}", found.display())),
        };
    }
    let pins = match pins_text(i.env) {
        Ok(p) => p,
        Err(e) => {
            return Piece {
                what,
                state: State::Unknown(e.message.clone()),
            };
        }
    };
    let asset = tool_fetch::lookup(&pins, tool.name, &tool_fetch::this_platform());
    let Ok((version, Some(asset))) = asset else {
        return Piece {
            what,
            state: State::Manual(format!(
                "no pinned release for {}: install it ({})",
                tool_fetch::this_platform(),
                tool.install_url
            )),
        };
    };
    let what = format!("{} {version}", tool.name);
    let dirs = crate::state::Dirs::resolve(i.env, i.home);
    if let Ok(dirs) = &dirs
        && let Ok(Some(path)) = tool_fetch::cached(&dirs.tools(), &asset)
    {
        return Piece {
            what,
            state: State::Here(format!(
                "in pulsedev's cache at {}, checked against its pin",
                path.display()
            )),
        };
    }
    let mirror = (i.env)(tool_fetch::MIRROR_VAR);
    let url = tool_fetch::source_url(&asset, mirror.as_deref());
    Piece {
        what,
        state: State::Missing(vec![Probe {
            url,
            proxies: Proxies::from_env(i.env),
        }]),
    }
}

fn pins_text(env: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    match env(tool_fetch::PINS_VAR).filter(|p| !p.is_empty()) {
        Some(path) => std::fs::read_to_string(&path).map_err(|e| {
            Error::new(
                crate::error::ErrorKind::ConfigInvalid,
                format!("failed to read {}={path}: {e}", tool_fetch::PINS_VAR),
            )
        }),
        None => Ok(tool_fetch::PINS.to_string()),
    }
}

/// The platform charts `config` asks for, each in the cache or not.
pub fn chart_states(
    config: &Config,
    cache: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<Piece> {
    let pins = match stack::load_pins(&config.root) {
        Ok(p) => p,
        Err(e) => {
            return vec![Piece {
                what: "platform charts".into(),
                state: State::Unknown(e.message.clone()),
            }];
        }
    };
    pins.values()
        .filter(|c| c.enabled(config))
        .map(|c| chart_state(c, cache, env))
        .collect()
}

fn chart_state(c: &PlatformChart, cache: &Path, env: &dyn Fn(&str) -> Option<String>) -> Piece {
    let archive = stack::chart_archive(cache, c);
    let what = format!("chart {} {}", c.chart, c.version);
    if chart_is_trusted(&archive, c) {
        return Piece {
            what,
            state: State::Here(format!("in pulsedev's chart cache ({})", archive.display())),
        };
    }
    // `helm pull --repo` reads the repository's index first (helm pkg/repo/chartrepo.go,
    // `FindChartInRepoURL`): that is the first request `up` makes.
    Piece {
        what,
        state: State::Missing(vec![Probe {
            url: format!("{}/index.yaml", c.repo_url.trim_end_matches('/')),
            proxies: Proxies::from_env(env),
        }]),
    }
}

/// An image the engine must have: what it is for, and its reference (or why the
/// reference could not be read).
pub type NeededImage = (String, std::result::Result<String, String>);

/// Whether `up` would use the cached archive as it is: its SHA-256 is the pin's or the
/// one recorded at pulsedev's download (`stack::verify_chart`, which `up` runs and which
/// deletes a mismatch; this only reads, as doctor changes nothing). Anything else is
/// downloaded again by `up`.
fn chart_is_trusted(archive: &Path, c: &PlatformChart) -> bool {
    use sha2::Digest;
    let Ok(bytes) = std::fs::read(archive) else {
        return false;
    };
    let got = hex::encode(sha2::Sha256::digest(&bytes));
    let want = if c.sha256.is_empty() {
        match std::fs::read_to_string(stack::recorded_digest(archive)) {
            Ok(text) => text.trim().to_string(),
            Err(_) => return false,
        }
    } else {
        c.sha256.to_ascii_lowercase()
    };
    got == want
}

/// The images the engine must have: the node image, the registry image (when images
/// go through the registry), and every service's base images.
pub fn image_refs(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> (String, Vec<NeededImage>) {
    let node = crate::cluster::node_image(env);
    let mut images: Vec<NeededImage> = Vec::new();
    if config.images.load == LoadMode::Registry {
        let registry = env("PULSEDEV_REGISTRY_IMAGE")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| crate::images::registry::DEFAULT_IMAGE.to_string());
        images.push(("the registry image".into(), Ok(registry)));
    }
    for (name, service) in &config.services {
        match crate::images::dockerfile::base_images(service) {
            Ok(list) => {
                for image in list {
                    if !images.iter().any(|(_, r)| r.as_ref() == Ok(&image)) {
                        images.push((format!("base image of {name}"), Ok(image)));
                    }
                }
            }
            Err(e) => images.push((format!("base images of {name}"), Err(e.message.clone()))),
        }
    }
    (node, images)
}

/// The registry API host of an image reference, and whether it is Docker Hub. The
/// first path component is a registry when it has a '.' or a ':' or is `localhost`
/// (distribution/reference normalize.go, `splitDockerDomain`); otherwise docker.io.
pub fn registry_of(image: &str) -> (String, bool) {
    let name = image.split('@').next().unwrap_or(image);
    match name.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            if first == "docker.io" || first == "index.docker.io" {
                (DOCKER_HUB_API.to_string(), true)
            } else {
                (first.to_string(), false)
            }
        }
        _ => (DOCKER_HUB_API.to_string(), true),
    }
}

/// What the engine says about pulling: its proxies, its Docker Hub mirrors, and the
/// registries it talks to over plain http.
#[derive(Debug, Clone, Default)]
pub struct EnginePull {
    pub proxies: Proxies,
    pub mirrors: Vec<String>,
    pub insecure_cidrs: Vec<String>,
    pub insecure_hosts: Vec<String>,
}

impl EnginePull {
    /// The sources the engine tries for `image`, in its order. Mirrors apply to Docker
    /// Hub only, and the engine falls back to Docker Hub itself when they fail (moby
    /// registry/service.go `LookupPullEndpoints` → `lookupV2Endpoints`: mirrors, then
    /// the official endpoint). A registry the engine treats as insecure (its CIDRs,
    /// 127.0.0.0/8 by default, or `insecure-registries`) is tried over https, then
    /// http (same file: an insecure index adds an http endpoint after the https one).
    pub fn probes(&self, image: &str) -> Vec<Probe> {
        let (host, hub) = registry_of(image);
        let mut urls: Vec<String> = Vec::new();
        if hub {
            for m in &self.mirrors {
                urls.push(format!("{}/v2/", m.trim_end_matches('/')));
            }
        }
        urls.push(format!("https://{host}/v2/"));
        if self.insecure(&host) {
            urls.push(format!("http://{host}/v2/"));
        }
        urls.into_iter()
            .map(|url| Probe {
                url,
                proxies: self.proxies.clone(),
            })
            .collect()
    }

    fn insecure(&self, host: &str) -> bool {
        if self.insecure_hosts.iter().any(|h| h == host) {
            return true;
        }
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let name = name.trim_matches(['[', ']']);
        let Ok(ip) = name.parse::<std::net::IpAddr>() else {
            return false;
        };
        // 127.0.0.0/8 is insecure by default (moby registry/config.go `newServiceConfig`).
        ip.is_loopback()
            || self
                .insecure_cidrs
                .iter()
                .filter_map(|c| c.parse::<ipnet::IpNet>().ok())
                .any(|n| n.contains(&ip))
    }
}

/// The platform the kind nodes run, as doctor guesses it without asking the engine:
/// this machine's (the engine's VM on Docker Desktop runs the same architecture).
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    format!("linux/{arch}")
}

/// The images the cluster's own workloads run (Postgres and Redis from manifests/dev,
/// the platform charts' as `fetch` last recorded them), each in pulsedev's image
/// cache or not. pulsedev downloads them itself (`fetch`), through this process's
/// proxies, PULSEDEV_IMAGE_MIRRORS and, for Docker Hub, the engine's mirrors.
pub fn workload_states(
    config: &Config,
    cache: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    engine_mirrors: &[String],
) -> Vec<Piece> {
    use crate::images::{oci, upstream};
    let mut names: Vec<upstream::ImageName> = Vec::new();
    if config.env == crate::config::Env::Dev
        && let Ok(files) = stack::shared_files(&config.root, config.env)
    {
        let pieces: Vec<stack::Piece> = files
            .iter()
            .filter_map(|f| stack::file_piece(&config.root, f).ok())
            .collect();
        names.extend(upstream::workload_images(config, &pieces).unwrap_or_default());
    }
    for n in oci::recorded_workloads(cache) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let platform = host_platform();
    let setting = env(oci::MIRRORS_VAR);
    names
        .into_iter()
        .map(|n| {
            let what = format!("workload image {n}");
            if oci::present(cache, &n, &platform) {
                return Piece {
                    what,
                    state: State::Here("in pulsedev's image cache".into()),
                };
            }
            let mirrors = oci::mirrors(&n, setting.as_deref(), engine_mirrors);
            Piece {
                what,
                state: State::Missing(
                    oci::endpoints(&n, &mirrors)
                        .into_iter()
                        .map(|base| Probe {
                            url: format!("{base}/v2/"),
                            proxies: Proxies::from_env(env),
                        })
                        .collect(),
                ),
            }
        })
        .collect()
}

/// The answer to one piece's probes: the first source that answered, or why none did.
pub async fn reach(probes: &[Probe]) -> std::result::Result<String, String> {
    let attempts = probes.iter().map(|p| async move {
        // Up to MAX_REDIRECTS hops, the last one remembered: the last answer is the
        // proof (the host a download ends at must answer too), and a failure is
        // about the host the chain had reached.
        let last = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let seen = last.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            *seen.lock().expect("not poisoned") = Some(attempt.url().to_string());
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        });
        let client = p.proxies.client(PROBE_TIMEOUT, policy)?;
        let via = p
            .proxies
            .for_url(&p.url)
            .map(|proxy| format!(" through the proxy {}", without_credentials(&proxy)))
            .unwrap_or_default();
        match client.get(&p.url).send().await {
            Ok(r) if r.url().as_str() == p.url => Ok(format!(
                "{} answers (HTTP {}){via}",
                p.url,
                r.status().as_u16()
            )),
            Ok(r) => Ok(format!(
                "{} answers (HTTP {} from {}, where it redirects){via}",
                p.url,
                r.status().as_u16(),
                r.url()
            )),
            Err(e) => {
                // After a redirect the error is about where it led: name that host.
                let at = match last.lock().expect("not poisoned").clone() {
                    Some(u) => format!("{} (redirected to {u})", p.url),
                    None => p.url.clone(),
                };
                Err(if e.is_timeout() {
                    format!(
                        "{at}{via}: no answer within {:.1}s",
                        PROBE_TIMEOUT.as_secs_f32()
                    )
                } else {
                    // reqwest's own message repeats the URL: its causes say what went wrong.
                    format!(
                        "{at}{via}: {}",
                        e.source()
                            .map_or_else(|| e.to_string(), crate::error::error_chain)
                    )
                })
            }
        }
    });
    let results = futures::future::join_all(attempts).await;
    let mut why = Vec::new();
    for r in results {
        match r {
            Ok(ok) => return Ok(ok),
            Err(e) => why.push(e),
        }
    }
    Err(why.join("; "))
}

/// A proxy URL as it may be shown: user and password removed.
fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => "(a proxy URL that does not parse)".to_string(),
    }
}

/// Where the cache of platform charts is, for `i`.
pub fn cache_dir(i: &Inputs<'_>) -> Option<PathBuf> {
    crate::state::Dirs::resolve(i.env, i.home)
        .ok()
        .map(|d| d.cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cached chart counts as here only when `up` would use it (pinned or recorded
    /// digest); doctor reads it and never deletes anything.
    #[test]
    fn a_cached_chart_is_here_only_when_up_would_trust_it() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let pins = stack::load_pins(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        let mut c = pins["ingress"].clone();
        c.sha256 = String::new();
        let archive = stack::chart_archive(dir.path(), &c);
        std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
        std::fs::write(&archive, b"planted").unwrap();
        assert!(
            !chart_is_trusted(&archive, &c),
            "no record: up downloads it again"
        );
        let digest = hex::encode(sha2::Sha256::digest(b"planted"));
        std::fs::write(stack::recorded_digest(&archive), format!("{digest}\n")).unwrap();
        assert!(chart_is_trusted(&archive, &c));
        c.sha256 = "0".repeat(64);
        assert!(
            !chart_is_trusted(&archive, &c),
            "the pin wins over the record"
        );
        assert!(archive.exists(), "doctor deletes nothing");
        let state = chart_state(&c, dir.path(), &|_| None);
        assert!(matches!(state.state, State::Missing(_)), "{state:?}");
    }

    #[test]
    fn registries_of_references() {
        assert_eq!(
            registry_of("docker.io/library/node:22@sha256:ab"),
            (DOCKER_HUB_API.into(), true)
        );
        assert_eq!(registry_of("node:22"), (DOCKER_HUB_API.into(), true));
        assert_eq!(
            registry_of("kindest/node:v1.36.1"),
            (DOCKER_HUB_API.into(), true)
        );
        assert_eq!(
            registry_of("quay.io/jetstack/x:1"),
            ("quay.io".into(), false)
        );
        assert_eq!(
            registry_of("127.0.0.1:5000/base@sha256:00"),
            ("127.0.0.1:5000".into(), false)
        );
        assert_eq!(registry_of("localhost/x"), ("localhost".into(), false));
    }

    #[test]
    fn engine_mirrors_apply_to_docker_hub_and_loopback_is_insecure() {
        let e = EnginePull {
            mirrors: vec!["https://mirror.example/".into()],
            ..Default::default()
        };
        let urls =
            |image: &str| -> Vec<String> { e.probes(image).into_iter().map(|p| p.url).collect() };
        assert_eq!(
            urls("node:22"),
            [
                "https://mirror.example/v2/",
                "https://registry-1.docker.io/v2/"
            ]
        );
        assert_eq!(urls("quay.io/a/b:1"), ["https://quay.io/v2/"]);
        assert_eq!(
            urls("127.0.0.1:5000/a@sha256:00"),
            ["https://127.0.0.1:5000/v2/", "http://127.0.0.1:5000/v2/"]
        );
        let e = EnginePull {
            insecure_cidrs: vec!["10.0.0.0/8".into()],
            insecure_hosts: vec!["reg.lan:5000".into()],
            ..Default::default()
        };
        assert_eq!(e.probes("10.1.2.3:5000/a:1").len(), 2);
        assert_eq!(e.probes("reg.lan:5000/a:1").len(), 2);
        assert_eq!(e.probes("reg.other:5000/a:1").len(), 1);
    }

    #[test]
    fn proxies_are_read_as_reqwest_and_curl_read_them() {
        let env = crate::test_env(&[
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:1"),
            ("http_proxy", "http://plain:2"),
            ("NO_PROXY", "127.0.0.1,.internal, 10.0.0.0/8"),
        ]);
        let p = Proxies::from_env(&env);
        assert_eq!(p.https.as_deref(), Some("http://upper:1"));
        assert_eq!(p.http.as_deref(), Some("http://plain:2"));
        assert_eq!(
            p.for_url("https://github.com/x").as_deref(),
            Some("http://upper:1")
        );
        assert_eq!(
            p.for_url("http://example.com/x").as_deref(),
            Some("http://plain:2")
        );
        assert_eq!(p.for_url("http://127.0.0.1:9/x"), None);
        assert_eq!(p.for_url("https://charts.internal/x"), None);
        assert_eq!(p.for_url("https://internal/x"), None);
        assert_eq!(p.for_url("https://10.2.3.4/x"), None);
        assert_eq!(
            p.for_url("https://notinternal/x").as_deref(),
            Some("http://upper:1")
        );
        let all = Proxies::from_env(&crate::test_env(&[("ALL_PROXY", "http://all:3")]));
        assert_eq!(all.for_url("https://a/").as_deref(), Some("http://all:3"));
    }

    /// A redirect is followed and the host it leads to is judged: kind and helm
    /// releases redirect to CDNs that may be what is blocked. One server redirects to a
    /// port nothing listens on (unreachable), another to a live server (reachable).
    #[tokio::test]
    async fn reach_follows_redirects_and_judges_the_last_host() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        async fn serve(answer: String) -> std::net::SocketAddr {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let (mut s, _) = l.accept().await.unwrap();
                    let answer = answer.clone();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf).await;
                        let _ = s.write_all(answer.as_bytes()).await;
                    });
                }
            });
            addr
        }
        let redirect = |to: String| {
            format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n")
        };
        let live = serve("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".into()).await;
        // A port that was bound and released: nothing listens there.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let to_live = serve(redirect(format!("http://{live}/asset"))).await;
        let to_dead = serve(redirect(format!("http://{dead}/asset"))).await;
        let direct = Proxies::default();
        let ok = reach(&[Probe {
            url: format!("http://{to_live}/release"),
            proxies: direct.clone(),
        }])
        .await
        .unwrap();
        assert!(ok.contains("HTTP 200"), "{ok}");
        assert!(ok.contains(&live.to_string()), "names the last host: {ok}");
        let started = std::time::Instant::now();
        let e = reach(&[Probe {
            url: format!("http://{to_dead}/release"),
            proxies: direct,
        }])
        .await
        .unwrap_err();
        assert!(
            e.contains(&format!("redirected to http://{dead}/asset")),
            "{e}"
        );
        assert!(started.elapsed() < PROBE_TIMEOUT + Duration::from_secs(2));
    }

    /// Any HTTP answer is "reachable"; a server that accepts and never answers is not,
    /// within the probe timeout; a proxy is used when set and skipped for NO_PROXY.
    #[tokio::test]
    async fn reach_counts_any_answer_and_times_out_on_silence() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let answering = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let answering_addr = answering.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = answering.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (s, _) = silent.accept().await.unwrap();
                held.push(s);
            }
        });
        let direct = Proxies::default();
        let ok = reach(&[Probe {
            url: format!("http://{answering_addr}/v2/"),
            proxies: direct.clone(),
        }])
        .await
        .unwrap();
        assert!(ok.contains("HTTP 401"), "{ok}");
        let started = std::time::Instant::now();
        let e = reach(&[Probe {
            url: format!("http://{silent_addr}/v2/"),
            proxies: direct.clone(),
        }])
        .await
        .unwrap_err();
        assert!(e.contains("no answer within"), "{e}");
        assert!(started.elapsed() < PROBE_TIMEOUT + Duration::from_secs(2));
        // Through a silent proxy: the proxy is used, so no answer.
        let via_silent = Proxies {
            http: Some(format!("http://{silent_addr}")),
            ..Default::default()
        };
        let e = reach(&[Probe {
            url: format!("http://{answering_addr}/v2/"),
            proxies: via_silent.clone(),
        }])
        .await
        .unwrap_err();
        assert!(e.contains("through the proxy"), "{e}");
        // ...unless NO_PROXY names the host.
        let bypass = Proxies {
            no: Some("127.0.0.1".into()),
            ..via_silent
        };
        assert!(
            reach(&[Probe {
                url: format!("http://{answering_addr}/v2/"),
                proxies: bypass,
            }])
            .await
            .is_ok()
        );
    }
}
