//! The PulseWatch stack as files: which manifests, charts and values make up an env,
//! in which order they are rendered, and the platform pins. `render` prints the result;
//! `up` hands it to the apply engine.
//!
//! Owns: the layout of `manifests/` and the render stream. Must not apply anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::Digest;

use crate::config::{Config, Env};
use crate::error::{Error, ErrorKind, Result};
use crate::helm::{Helm, Template};
pub use crate::images::deliver::ImageRef;

/// One rendered source: a file of ours, or one chart's `helm template` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// What it came from, relative to the config root (for `# Source:` and errors).
    pub source: String,
    pub yaml: String,
}

#[derive(Debug, Default)]
pub struct Rendered {
    pub pieces: Vec<Piece>,
    /// Things that were not rendered, each with why (e.g. a platform chart not cached).
    pub skipped: Vec<String>,
}

impl Rendered {
    /// The whole stream: documents separated by `---`, each of our files headed by a
    /// `# Source:` line as helm does for chart templates.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            if p.yaml.trim_start().starts_with("---") {
                out.push_str(p.yaml.trim_end());
                out.push('\n');
            } else {
                out.push_str(&format!(
                    "---\n# Source: {}\n{}\n",
                    p.source,
                    p.yaml.trim_end()
                ));
            }
        }
        out
    }
}

/// A third-party platform chart, pinned in manifests/platform/pins.toml.
#[derive(Debug, Clone, Deserialize)]
pub struct PlatformChart {
    pub description: String,
    pub repo_url: String,
    pub chart: String,
    pub version: String,
    #[serde(default)]
    pub sha256: String,
    pub namespace: String,
    pub release: String,
    pub values: String,
    /// Files applied after cert-manager's webhook answers (the local CA chain).
    #[serde(default)]
    pub local_ca: Vec<String>,
    /// Installed only when this add-on is asked for (`observability`).
    #[serde(default)]
    pub optional: Option<String>,
    /// Files applied before the chart (its namespace, network policies).
    #[serde(default)]
    pub before: Vec<String>,
    /// Files applied after the chart (objects of its CRDs).
    #[serde(default)]
    pub extra: Vec<String>,
    /// `Kind/name` workloads in `namespace` to wait for that the chart does not render
    /// (an operator makes them).
    #[serde(default)]
    pub wait: Vec<String>,
    /// Whether the CRDs of the chart's `crds/` folder are installed (`--include-crds`);
    /// `false` for a chart whose custom resources we switch off.
    #[serde(default = "default_true")]
    pub include_crds: bool,
}

fn default_true() -> bool {
    true
}

impl PlatformChart {
    /// Whether `config` asks for this chart: always, unless it is an optional add-on
    /// that is switched off.
    pub fn enabled(&self, config: &Config) -> bool {
        match self.optional.as_deref() {
            None => true,
            Some("observability") => config.observability,
            Some(_) => false,
        }
    }
}

/// The dev overlay that switches the charts' metrics and OTLP export on.
pub fn observability_values(root: &Path, env: Env) -> PathBuf {
    root.join("manifests/envs")
        .join(env.as_str())
        .join("observability.yaml")
}

/// The release GitOps deploys to a staging/prod env: manifests/gitops/<env>/images.yaml,
/// committed by the release workflow and passed after the env's values file, as the Argo CD
/// Applications of manifests/gitops/applicationsets.yaml pass it. None in dev.
pub fn release_images_values(root: &Path, env: Env) -> Option<PathBuf> {
    (env != Env::Dev).then(|| {
        root.join("manifests/gitops")
            .join(env.as_str())
            .join("images.yaml")
    })
}

/// The dev hosts (manifests/envs/dev/values.yaml, the local CA's certificates).
pub const WEB_HOST: &str = "pulsewatch.localhost";
pub const API_HOST: &str = "api.pulsewatch.localhost";

pub fn namespace(env: Env) -> String {
    format!("pulsewatch-{}", env.as_str())
}

pub fn load_pins(root: &Path) -> Result<BTreeMap<String, PlatformChart>> {
    let path = root.join("manifests/platform/pins.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::new(
            ErrorKind::ConfigInvalid,
            format!("failed to read {}: {e}", path.display()),
        )
        .with_hint(
            "run pulsedev from the PulseWatch repository, or pass `--config` pointing into it",
        )
    })?;
    toml::from_str(&text)
        .map_err(|e| Error::new(ErrorKind::ConfigInvalid, format!("{}: {e}", path.display())))
}

/// Where fetched platform charts are kept: `<cache>/charts/<chart>-<version>.tgz`, with
/// `cache` pulsedev's cache directory (`state::Dirs::cache`).
pub fn chart_archive(cache: &Path, c: &PlatformChart) -> PathBuf {
    cache
        .join("charts")
        .join(format!("{}-{}.tgz", c.chart, c.version))
}

/// The digest pulsedev records beside an archive it downloaded itself, for a pin
/// without `sha256` (trust on first download).
pub fn recorded_digest(archive: &Path) -> PathBuf {
    archive.with_extension("tgz.sha256")
}

/// What the check of a cached chart archive found.
#[derive(Debug, PartialEq, Eq)]
pub enum ChartTrust {
    /// Its SHA-256 is the pin's, or the one recorded when pulsedev downloaded it.
    Verified,
    /// No pin and no record: pulsedev did not download it (planted, copied in, or its
    /// record deleted), so nothing may read it; `up` downloads it again.
    Unrecorded,
}

/// Checks a cached platform chart archive before anything reads it: its SHA-256 is the
/// pin's (manifests/platform/pins.toml) or, for an entry without one, the digest recorded
/// when pulsedev downloaded it; and its Chart.yaml names the pinned chart and version.
/// A mismatch removes the archive (so the next `up` downloads it again) and fails with
/// `tool-checksum-mismatch`.
pub fn verify_chart(archive: &Path, c: &PlatformChart) -> Result<ChartTrust> {
    let bytes = std::fs::read(archive)
        .map_err(|e| Error::internal(format!("failed to read {}: {e}", archive.display())))?;
    let got = hex::encode(sha2::Sha256::digest(&bytes));
    let (want, source) = if !c.sha256.is_empty() {
        (
            c.sha256.to_ascii_lowercase(),
            "pinned in manifests/platform/pins.toml",
        )
    } else {
        match crate::state::read_optional(&recorded_digest(archive))? {
            Some(first) => (first.trim().to_string(), "recorded at its download"),
            None => return Ok(ChartTrust::Unrecorded),
        }
    };
    let refuse = |message: String| {
        let _ = std::fs::remove_file(archive);
        let _ = std::fs::remove_file(recorded_digest(archive));
        Error::new(ErrorKind::ToolChecksumMismatch, message).with_hint(
            "the archive was removed; run again, and if it repeats check manifests/platform/pins.toml",
        )
    };
    if got != want {
        return Err(refuse(format!(
            "the {} chart {} has SHA-256 {got}, not {want} ({source})",
            c.chart, c.version
        )));
    }
    match chart_identity(&bytes, &c.chart) {
        // Helm's SemVer reads `v1.21.1` and `1.21.1` alike (Masterminds/semver).
        Some((name, version))
            if name == c.chart
                && version.trim_start_matches('v') == c.version.trim_start_matches('v') =>
        {
            Ok(ChartTrust::Verified)
        }
        found => Err(refuse(format!(
            "the archive cached as the {} chart {} holds {}",
            c.chart,
            c.version,
            match found {
                Some((name, version)) => format!("the chart {name} {version}"),
                None => format!("no {}/Chart.yaml", c.chart),
            }
        ))),
    }
}

/// `name` and `version` of the chart at the top of an archive (`<dir>/Chart.yaml`, the
/// layout `helm package` writes), read from the bytes already verified.
fn chart_identity(bytes: &[u8], dir: &str) -> Option<(String, String)> {
    #[derive(Deserialize)]
    struct ChartYaml {
        name: String,
        version: String,
    }
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    for entry in tar.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.path().ok()? != Path::new(dir).join("Chart.yaml") {
            continue;
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).ok()?;
        // Chart.yaml is YAML 1.2 to Helm (sigs.k8s.io/yaml), and `version` a string.
        let c: ChartYaml = serde_saphyr::from_str(&text).ok()?;
        return Some((c.name, c.version));
    }
    None
}

/// Files of a directory with a .yaml/.yml extension, sorted by name, minus `except`.
fn yaml_files(dir: &Path, except: &[&str]) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "yaml" || x == "yml")
                    && !except
                        .iter()
                        .any(|n| p.file_name().is_some_and(|f| f == *n))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(Error::internal(format!(
                "failed to list {}: {e}",
                dir.display()
            )));
        }
    };
    files.sort();
    Ok(files)
}

fn read_piece(root: &Path, path: &Path) -> Result<Piece> {
    let yaml = std::fs::read_to_string(path)
        .map_err(|e| Error::internal(format!("failed to read {}: {e}", path.display())))?;
    Ok(Piece {
        source: rel(root, path),
        yaml,
    })
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// What to render.
pub struct Request<'a> {
    pub env: Env,
    /// Only this service's chart (and none of the shared manifests).
    pub service: Option<&'a str>,
    /// Image per service; services without one keep the values file's placeholder.
    pub images: &'a BTreeMap<String, ImageRef>,
    /// pulsedev's cache directory (`state::Dirs::cache`), for platform charts.
    pub cache: Option<&'a Path>,
}

/// The files applied before the charts: `manifests/dev/*.yaml` in dev, else
/// `manifests/envs/<env>/*.yaml` (namespace, external secrets), sorted by name.
pub fn shared_files(root: &Path, env: Env) -> Result<Vec<PathBuf>> {
    let dir = match env {
        Env::Dev => root.join("manifests/dev"),
        _ => root.join("manifests/envs").join(env.as_str()),
    };
    yaml_files(&dir, &["values.yaml"])
}

/// One of our files as a piece of the stream.
pub fn file_piece(root: &Path, path: &Path) -> Result<Piece> {
    read_piece(root, path)
}

/// Renders one service's chart with the env's values and, when given, its image.
/// `None` when the service has no chart.
pub async fn render_service(
    config: &Config,
    helm: &Helm,
    env: Env,
    name: &str,
    image: Option<&ImageRef>,
    https_port: Option<u16>,
) -> Result<Option<Piece>> {
    let root = &config.root;
    let Some(svc) = config.services.get(name) else {
        let known: Vec<&str> = config.services.keys().map(String::as_str).collect();
        return Err(
            Error::new(ErrorKind::Usage, format!("unknown service {name:?}"))
                .with_hint(format!("the configured services are: {}", known.join(", "))),
        );
    };
    let Some(chart) = &svc.chart else {
        return Ok(None);
    };
    let values = root
        .join("manifests/envs")
        .join(env.as_str())
        .join("values.yaml");
    let mut set_string = Vec::new();
    if let Some(img) = image {
        set_string.push((format!("{name}.image.repository"), img.repository.clone()));
        set_string.push((format!("{name}.image.tag"), img.tag.clone()));
        if let Some(d) = &img.digest {
            set_string.push((format!("{name}.image.digest"), d.clone()));
        }
    }
    // The browser's origin carries the HTTPS port: on any port but 443 the web's API
    // URL and the api's CORS origin must carry it too.
    if env == Env::Dev
        && let Some(port) = https_port.filter(|p| *p != 443)
    {
        match name {
            "api" => set_string.push((
                "api.corsOrigin".into(),
                format!("https://{WEB_HOST}:{port}"),
            )),
            "web" => set_string.push((
                "web.apiBaseUrl".into(),
                format!("https://{API_HOST}:{port}"),
            )),
            _ => {}
        }
    }
    let ns = namespace(env);
    let mut files: Vec<PathBuf> = vec![values];
    if config.observability {
        files.push(observability_values(root, env));
    }
    files.extend(release_images_values(root, env));
    files.retain(|f| f.is_file());
    let t = Template {
        release: name,
        chart,
        namespace: &ns,
        values: files,
        set_string,
        version: None,
        include_crds: false,
        skip_schema_validation: false,
    };
    Ok(Some(Piece {
        source: rel(root, chart),
        yaml: helm.template(&t).await?,
    }))
}

/// The `$ref`s to schemas on the web (`http://`, `https://`) in a chart archive's
/// values.schema.json files (the chart's and its subcharts'), sorted and deduplicated.
/// Helm resolves them by downloading on every render (nginx-ingress refers to
/// kubernetes-json-schema on raw.githubusercontent.com some 60 times), so a render would
/// need that host.
pub fn remote_schema_refs(archive: &Path) -> Result<Vec<String>> {
    fn walk(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match v {
                        serde_json::Value::String(r)
                            if k == "$ref"
                                && (r.starts_with("http://") || r.starts_with("https://")) =>
                        {
                            out.insert(r.split('#').next().unwrap_or(r).to_string());
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let unreadable = |e: &dyn std::fmt::Display| {
        Error::new(
            ErrorKind::RenderFailed,
            format!(
                "failed to read the chart archive {}: {e}",
                archive.display()
            ),
        )
        .with_hint("delete it so that `pulsedev up` fetches it again")
    };
    let file = std::fs::File::open(archive).map_err(|e| unreadable(&e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = std::collections::BTreeSet::new();
    for entry in tar.entries().map_err(|e| unreadable(&e))? {
        let mut entry = entry.map_err(|e| unreadable(&e))?;
        let is_schema = entry
            .path()
            .map_err(|e| unreadable(&e))?
            .file_name()
            .is_some_and(|n| n == "values.schema.json");
        if !is_schema {
            continue;
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).map_err(|e| unreadable(&e))?;
        // A schema helm cannot parse fails the render with helm's own message.
        if let Ok(schema) = serde_json::from_str::<serde_json::Value>(&text) {
            walk(&schema, &mut out);
        }
    }
    Ok(out.into_iter().collect())
}

/// Renders a pinned platform chart from the cache, verified (`verify_chart`); `None`
/// when it is not cached, or cached without a pin or a record of its download.
///
/// A chart whose values schema refers to schemas on the web is rendered with
/// `--skip-schema-validation`, so `up` and `render` never depend on that host (helm
/// would download them on every render and fail offline or when rate-limited:
/// nginx/kubernetes-ingress issues #5374, #7193, #10667). Its values are checked in
/// the tests against the chart's schema with the references resolved from a local copy
/// (tests/manifests/upstream_charts.py), and the rendered objects by the API server.
pub async fn render_platform_chart(
    root: &Path,
    helm: &Helm,
    cache: &Path,
    c: &PlatformChart,
) -> Result<Option<Piece>> {
    let archive = chart_archive(cache, c);
    if !archive.is_file() || verify_chart(&archive, c)? == ChartTrust::Unrecorded {
        return Ok(None);
    }
    let t = Template {
        release: &c.release,
        chart: &archive,
        namespace: &c.namespace,
        values: vec![root.join(&c.values)],
        set_string: vec![],
        version: None,
        // Platform charts bring CRDs (e.g. the Prometheus operator's) that `up` applies,
        // unless the pin says they are unused.
        include_crds: c.include_crds,
        skip_schema_validation: !remote_schema_refs(&archive)?.is_empty(),
    };
    Ok(Some(Piece {
        source: format!("{}-{}", c.chart, c.version),
        yaml: helm.template(&t).await?,
    }))
}

/// The services in the order `up` deploys them: the migrations Job first.
pub fn apply_order(config: &Config) -> Vec<&String> {
    let mut names: Vec<&String> = config.services.keys().collect();
    names.sort_by_key(|n| n.as_str() != "migrations");
    names
}

/// Renders the stack for an env, in apply order: shared manifests first, platform,
/// then each service chart. Deterministic for the same inputs.
pub async fn render(config: &Config, helm: &Helm, req: &Request<'_>) -> Result<Rendered> {
    let root = &config.root;
    let mut out = Rendered::default();
    match req.service {
        Some(s) => {
            if let Some(p) = render_service(
                config,
                helm,
                req.env,
                s,
                req.images.get(s),
                Some(config.ports.https),
            )
            .await?
            {
                out.pieces.push(p);
            }
            return Ok(out);
        }
        None => {
            for f in shared_files(root, req.env)? {
                out.pieces.push(read_piece(root, &f)?);
            }
            if req.env == Env::Dev {
                render_platform(config, helm, req.cache, &mut out).await?;
            }
        }
    }
    for name in apply_order(config) {
        if let Some(p) = render_service(
            config,
            helm,
            req.env,
            name,
            req.images.get(name),
            Some(config.ports.https),
        )
        .await?
        {
            out.pieces.push(p);
        }
    }
    Ok(out)
}

async fn render_platform(
    config: &Config,
    helm: &Helm,
    cache: Option<&Path>,
    out: &mut Rendered,
) -> Result<()> {
    let root = &config.root;
    let pins = load_pins(root)?;
    for (key, c) in pins.iter().filter(|(_, c)| c.enabled(config)) {
        for f in &c.before {
            out.pieces.push(read_piece(root, &root.join(f))?);
        }
        let piece = match cache {
            Some(cache) => render_platform_chart(root, helm, cache, c).await?,
            None => None,
        };
        match piece {
            Some(p) => out.pieces.push(p),
            None => out.skipped.push(format!(
                "platform chart {key} ({} {} from {}) is not in the cache (or was not \
                 downloaded by pulsedev), so it is not rendered; `pulsedev up` fetches it",
                c.chart, c.version, c.repo_url
            )),
        }
        for f in c.local_ca.iter().chain(&c.extra) {
            out.pieces.push(read_piece(root, &root.join(f))?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_headers_our_files_and_passes_helm_output_through() {
        let r = Rendered {
            pieces: vec![
                Piece {
                    source: "manifests/dev/namespaces.yaml".into(),
                    yaml: "apiVersion: v1\nkind: Namespace\n".into(),
                },
                Piece {
                    source: "manifests/charts/api".into(),
                    yaml: "---\n# Source: api/templates/service.yaml\nkind: Service\n\n".into(),
                },
            ],
            skipped: vec![],
        };
        assert_eq!(
            r.to_yaml(),
            "---\n# Source: manifests/dev/namespaces.yaml\napiVersion: v1\nkind: Namespace\n\
             ---\n# Source: api/templates/service.yaml\nkind: Service\n"
        );
    }

    #[test]
    fn the_dev_values_use_the_hosts_render_adjusts() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let values = std::fs::read_to_string(root.join("manifests/envs/dev/values.yaml")).unwrap();
        assert!(values.contains(&format!("corsOrigin: https://{WEB_HOST}\n")));
        assert!(values.contains(&format!("apiBaseUrl: https://{API_HOST}\n")));
    }

    #[test]
    fn staging_and_prod_render_with_the_release_gitops_deploys() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(release_images_values(root, Env::Dev), None);
        for env in [Env::Staging, Env::Prod] {
            let f = release_images_values(root, env).unwrap();
            assert!(f.is_file(), "{}", f.display());
        }
    }

    #[test]
    fn namespaces_per_env() {
        assert_eq!(namespace(Env::Dev), "pulsewatch-dev");
        assert_eq!(namespace(Env::Prod), "pulsewatch-prod");
    }

    fn archive(entries: &[(&str, &str)]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let gz = flate2::write::GzEncoder::new(file.reopen().unwrap(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (path, text) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, text.as_bytes()).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
        file
    }

    #[test]
    fn a_cached_chart_is_used_only_when_pinned_or_recorded_and_of_the_pinned_release() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut c = load_pins(root).unwrap()["cert-manager"].clone();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert-manager-v1.21.1.tgz");
        let write = |version: &str| {
            let a = archive(&[(
                "cert-manager/Chart.yaml",
                &format!("apiVersion: v2\nname: cert-manager\nversion: {version}\n"),
            )]);
            std::fs::copy(a.path(), &path).unwrap();
            hex::encode(sha2::Sha256::digest(std::fs::read(&path).unwrap()))
        };
        // The committed pin names the real release: this stand-in is not it.
        write("v1.21.1");
        let e = verify_chart(&path, &c).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ToolChecksumMismatch);
        assert!(e.message.contains("pinned in manifests/platform/pins.toml"));
        assert!(!path.exists(), "removed");
        // Without a pin: trusted only with the record of pulsedev's own download.
        c.sha256.clear();
        let digest = write("v1.21.1");
        assert_eq!(verify_chart(&path, &c).unwrap(), ChartTrust::Unrecorded);
        std::fs::write(recorded_digest(&path), format!("{digest}\n")).unwrap();
        assert_eq!(verify_chart(&path, &c).unwrap(), ChartTrust::Verified);
        // Helm reads `v1.21.1` and `1.21.1` as one version.
        let digest = write("1.21.1");
        std::fs::write(recorded_digest(&path), &digest).unwrap();
        assert_eq!(verify_chart(&path, &c).unwrap(), ChartTrust::Verified);
        // Another version under the pinned name: refused, archive and record removed.
        let digest = write("v1.20.0");
        std::fs::write(recorded_digest(&path), &digest).unwrap();
        let e = verify_chart(&path, &c).unwrap_err();
        assert!(
            e.message.contains("holds the chart cert-manager v1.20.0"),
            "{}",
            e.message
        );
        assert!(!path.exists() && !recorded_digest(&path).exists());
    }

    #[test]
    fn remote_schema_refs_are_found_in_the_chart_and_its_subcharts() {
        let remote = r##"{"properties": {"a": {"$ref": "https://h.example/defs.json#/definitions/A"},
            "b": {"items": [{"$ref": "http://h.example/other.json"}]},
            "c": {"$ref": "#/definitions/local"}}}"##;
        let a = archive(&[
            (
                "c/Chart.yaml",
                "name: c
",
            ),
            ("c/values.schema.json", r##"{"$ref": "#/x"}"##),
            ("c/charts/sub/values.schema.json", remote),
        ]);
        assert_eq!(
            remote_schema_refs(a.path()).unwrap(),
            ["http://h.example/other.json", "https://h.example/defs.json"]
        );
        let local = archive(&[("c/values.schema.json", r##"{"$ref": "#/x"}"##)]);
        assert!(remote_schema_refs(local.path()).unwrap().is_empty());
        let broken = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(broken.path(), b"not a tgz").unwrap();
        let e = remote_schema_refs(broken.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::RenderFailed);
    }

    #[test]
    fn the_committed_pins_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let pins = load_pins(root).unwrap();
        let ingress = &pins["ingress"];
        assert_eq!(ingress.chart, "nginx-ingress");
        assert!(!ingress.version.is_empty());
        assert_eq!(pins["cert-manager"].version, "v1.21.1");
        for c in pins.values() {
            assert!(
                c.sha256.is_empty()
                    || (c.sha256.len() == 64 && c.sha256.bytes().all(|b| b.is_ascii_hexdigit())),
                "{}: sha256 is 64 hex digits or empty",
                c.chart
            );
        }
        assert!(!ingress.include_crds, "NGINX custom resources are off");
        assert!(pins["cert-manager"].include_crds);
        assert!(root.join(&ingress.values).is_file());
        for f in &pins["cert-manager"].local_ca {
            assert!(root.join(f).is_file(), "{f}");
        }
        // Every file a pin names exists; optional add-ons follow the config.
        for (key, c) in &pins {
            for f in c.before.iter().chain(&c.extra).chain([&c.values]) {
                assert!(root.join(f).is_file(), "{key}: {f}");
            }
        }
        let mut config = Config::defaults(root);
        let kps = &pins["kube-prometheus-stack"];
        assert_eq!(kps.optional.as_deref(), Some("observability"));
        assert!(!kps.enabled(&config));
        assert!(ingress.enabled(&config));
        config.observability = true;
        assert!(kps.enabled(&config));
        assert!(observability_values(root, Env::Dev).is_file());
    }
}
