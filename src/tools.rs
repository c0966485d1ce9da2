//! External tools pulsedev drives (kind, helm): finding them on PATH, asking their
//! version with a timeout, the minimum versions we support, and (`fetch`) downloading
//! the pinned, checksum-verified release when a tool is missing or too old.
//!
//! Owns: tool discovery, version checks and the tool cache. Must not run a tool for
//! real work (that is `cluster` and `helm`).

pub mod fetch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// A tool we need, with the release we pin and the oldest we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub name: &'static str,
    pub version_args: &'static [&'static str],
    pub pinned: Version,
    pub minimum: Version,
    pub install_url: &'static str,
    /// kind only: the node image it must support (see `kind_supports`).
    pub node_image: Option<&'static str>,
}

/// kind v0.24 is the first whose default CNI enforces NetworkPolicy; beyond that, a
/// kind must support the pinned node image (`kind_supports`).
pub const KIND: Tool = Tool {
    name: "kind",
    version_args: &["version"],
    pinned: Version(0, 32, 0),
    minimum: Version(0, 24, 0),
    install_url: "https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
    node_image: Some(crate::cluster::kindconfig::NODE_IMAGE),
};

/// Helm 3.16 is the first with `helm template --skip-schema-validation` (helm/helm
/// commit acf715856, first tagged v3.16.0, cmd/helm/install.go addInstallFlags, which
/// `template` shares), which platform charts with remote schema references need (see
/// `stack::render_platform_chart`); 4.2 is the supported line we pin.
pub const HELM: Tool = Tool {
    name: "helm",
    version_args: &["version", "--short"],
    pinned: Version(4, 2, 2),
    minimum: Version(3, 16, 0),
    install_url: "https://helm.sh/docs/intro/install/",
    node_image: None,
};

/// The Kubernetes minor of each kind release's default node image (kind, at each tag:
/// pkg/apis/config/defaults/image.go), from the minimum kind on. A kind release is
/// made for the node images its release notes list, the default the newest of them;
/// an image newer than that is not supported (kind v0.31 writes a kubeadm v1beta3
/// config, deprecated in Kubernetes 1.36: pkg/cluster/internal/kubeadm/config.go).
const KIND_DEFAULT_KUBERNETES_MINOR: &[((u64, u64), u64)] = &[
    ((0, 24), 31),
    ((0, 25), 31),
    ((0, 26), 32),
    ((0, 27), 32),
    ((0, 28), 33),
    ((0, 29), 33),
    ((0, 30), 34),
    ((0, 31), 35),
    ((0, 32), 36),
];

/// The Kubernetes minor of a `kindest/node:v1.X.Y[@sha256:…]` reference.
fn node_image_minor(image: &str) -> Option<u64> {
    let tag = image.split('@').next()?.rsplit_once(':')?.1;
    Version::find(tag).map(|v| v.1)
}

/// Whether kind `v` supports `node_image`: a release of the pinned kind's minor does
/// (the pin's own image), as does a known release whose default image is at least as
/// new; a kind newer than any pulsedev knows is not trusted with it. `Err` says why.
pub fn kind_supports(v: Version, node_image: &str) -> std::result::Result<(), String> {
    if (v.0, v.1) == (KIND.pinned.0, KIND.pinned.1) {
        return Ok(());
    }
    let want = node_image_minor(node_image);
    let image = node_image.split('@').next().unwrap_or(node_image);
    match KIND_DEFAULT_KUBERNETES_MINOR
        .iter()
        .find(|(kv, _)| *kv == (v.0, v.1))
    {
        Some((_, newest)) if want.is_some_and(|w| w <= *newest) => Ok(()),
        Some((_, newest)) => Err(format!(
            "kind {v} supports node images up to Kubernetes 1.{newest}, not {image} (made for kind {})",
            KIND.pinned
        )),
        None => Err(format!(
            "pulsedev does not know whether kind {v} supports the node image {image} (made for kind {})",
            KIND.pinned
        )),
    }
}

impl Tool {
    /// Why version `v` of this tool cannot be used (`None`: it can), with the error id.
    pub fn unusable(&self, v: Version) -> Option<(ErrorKind, String)> {
        if v < self.minimum {
            return Some((
                ErrorKind::ToolTooOld,
                format!(
                    "{} {v} is older than the minimum {}",
                    self.name, self.minimum
                ),
            ));
        }
        let image = self.node_image?;
        kind_supports(v, image).err().map(|why| {
            let kind = if v < self.pinned {
                ErrorKind::ToolTooOld
            } else {
                ErrorKind::ToolMissing
            };
            (kind, why)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u64, pub u64, pub u64);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Version {
    /// The first `vX.Y.Z` (or `X.Y.Z`) in a tool's version output, e.g.
    /// `kind v0.32.0 go1.24.2 linux/amd64` or `v4.2.1+g1234abc`.
    pub fn find(text: &str) -> Option<Version> {
        text.split(|c: char| c.is_whitespace() || c == '+' || c == '-' || c == ',')
            .find_map(|word| {
                let w = word.strip_prefix('v').unwrap_or(word);
                let mut parts = w.split('.');
                let major = parts.next()?.parse().ok()?;
                let minor = parts.next()?.parse().ok()?;
                let patch = parts.next()?.parse().ok()?;
                Some(Version(major, minor, patch))
            })
    }
}

/// Finds `tool` on PATH.
pub fn locate(tool: &Tool, path_var: Option<&std::ffi::OsStr>, cwd: &Path) -> Option<PathBuf> {
    which::which_in(tool.name, path_var, cwd).ok()
}

/// Runs `<path> <version args>` and parses the version, within `timeout`.
pub async fn version(tool: &Tool, path: &Path, timeout: Duration) -> Result<Version> {
    let run = tokio::process::Command::new(path)
        .args(tool.version_args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let failed = |why: String| {
        Error::new(
            ErrorKind::ToolMissing,
            format!("failed to ask {} for its version: {why}", path.display()),
        )
        .with_hint(format!(
            "reinstall {} {}: {}",
            tool.name, tool.pinned, tool.install_url
        ))
    };
    let out = match tokio::time::timeout(timeout, run).await {
        Err(_) => {
            return Err(failed(format!(
                "`{} {}` did not finish within {}s",
                tool.name,
                tool.version_args.join(" "),
                timeout.as_secs_f32()
            )));
        }
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Ok(Ok(out)) => out,
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(failed(format!(
            "exited with {}: {}",
            out.status,
            stderr.trim()
        )));
    }
    Version::find(&text)
        .ok_or_else(|| failed(format!("no version in its output {:?}", text.trim())))
}

/// The pins in force: the file named by PULSEDEV_TOOLS_PINS, else the compiled-in ones.
pub fn pins_text() -> Result<String> {
    match std::env::var(fetch::PINS_VAR)
        .ok()
        .filter(|p| !p.is_empty())
    {
        Some(path) => std::fs::read_to_string(&path).map_err(|e| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!("failed to read {}={path}: {e}", fetch::PINS_VAR),
            )
        }),
        None => Ok(fetch::PINS.to_string()),
    }
}

/// Warnings for the user when the trust anchors of tool downloads are overridden
/// (a mirror, other pins): said loudly on every use, since whoever controls those
/// decides what pulsedev runs.
pub fn override_warnings(env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = env(fetch::PINS_VAR).filter(|v| !v.is_empty()) {
        out.push(format!(
            "{}={p}: tool checksums come from this file, not from pulsedev's compiled-in pins; pulsedev runs whatever it vouches for",
            fetch::PINS_VAR
        ));
    }
    if let Some(m) = env(fetch::MIRROR_VAR).filter(|v| !v.is_empty()) {
        out.push(format!(
            "{}={m}: tools are downloaded from this mirror (still checked against the pins)",
            fetch::MIRROR_VAR
        ));
    }
    out
}

/// What pulsedev can do when `tool` is not usable from PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// A copy of the pinned release is in the cache, verified against the pin now.
    Cached { path: PathBuf, version: String },
    /// The cache holds a file that does not match the pin (deleted now).
    Tampered { why: String },
    /// The pinned release for this platform has a checksum: `up` downloads it.
    Download { version: String },
    /// Nothing pinned for this platform: the user must install it.
    Unavailable,
}

pub fn fallback(tool: &Tool, tools_dir: &Path, pins: &str) -> Fallback {
    let Ok((version, asset)) = fetch::lookup(pins, tool.name, &fetch::this_platform()) else {
        return Fallback::Unavailable;
    };
    let Some(asset) = asset else {
        return Fallback::Unavailable;
    };
    match fetch::cached(tools_dir, &asset) {
        Ok(Some(path)) => return Fallback::Cached { path, version },
        Ok(None) => {}
        Err(e) => {
            return Fallback::Tampered {
                why: e.message.clone(),
            };
        }
    }
    if asset.sha256.is_some() {
        Fallback::Download { version }
    } else {
        Fallback::Unavailable
    }
}

/// A usable binary of `tool`: the one on PATH when it is recent enough, else the
/// cached pinned release, else the pinned release downloaded now (verified, cached).
/// A machine that is offline works as long as the cache holds the tool.
pub async fn ensure(tool: &Tool, dirs: &crate::state::Dirs, ui: &crate::ui::Ui) -> Result<PathBuf> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let path_var = std::env::var_os("PATH");
    if let Some(found) = locate(tool, path_var.as_deref(), &cwd) {
        match version(tool, &found, Duration::from_secs(10)).await {
            Ok(v) => match tool.unusable(v) {
                None => return Ok(found),
                Some((_, why)) => ui.info(&format!(
                    "not using {} ({why}): using pulsedev's pinned {} {}",
                    found.display(),
                    tool.name,
                    tool.pinned
                )),
            },
            Err(e) => ui.info(&format!(
                "{} at {} does not work ({}): using pulsedev's pinned {}",
                tool.name,
                found.display(),
                e.message,
                tool.pinned
            )),
        }
    }
    for w in override_warnings(&|k| std::env::var(k).ok()) {
        ui.warn(&w);
    }
    let pins = pins_text()?;
    let platform = fetch::this_platform();
    let (pinned, asset) = fetch::lookup(&pins, tool.name, &platform)?;
    let tools_dir = dirs.tools();
    if let Some(a) = &asset
        && let Some(p) = fetch::cached(&tools_dir, a)?
    {
        return Ok(p);
    }
    let Some(asset) = asset else {
        return Err(Error::new(
            ErrorKind::ToolMissing,
            format!(
                "{} is not on PATH and pulsedev has no pinned release of it for {platform}",
                tool.name
            ),
        )
        .with_hint(format!(
            "install {} {} yourself: {}",
            tool.name, tool.pinned, tool.install_url
        )));
    };
    let mirror = std::env::var(fetch::MIRROR_VAR).ok();
    let url = fetch::source_url(&asset, mirror.as_deref());
    ui.info(&format!(
        "{} is not on PATH (or too old): downloading {} {} from {url}",
        tool.name, tool.name, pinned
    ));
    let path = fetch::fetch(&asset, &url, &tools_dir, fetch::Limits::for_asset(&asset)).await?;
    ui.info(&format!(
        "verified its SHA-256 and cached it at {}",
        path.display()
    ));
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_found_in_real_outputs() {
        assert_eq!(
            Version::find("kind v0.32.0 go1.24.2 linux/amd64"),
            Some(Version(0, 32, 0))
        );
        assert_eq!(Version::find("v4.2.1+g5cf6a4e"), Some(Version(4, 2, 1)));
        assert_eq!(Version::find("v3.16.4+g7877b45"), Some(Version(3, 16, 4)));
        assert_eq!(
            Version::find("kind v0.20.0-alpha go1.20"),
            Some(Version(0, 20, 0))
        );
        assert_eq!(Version::find("no version here"), None);
    }

    /// kind v0.32's node image (v1.36.1) with each kind: only releases whose default
    /// image is at least 1.36 (kind's defaults/image.go at each tag) are accepted.
    #[test]
    fn kind_is_accepted_only_with_the_node_images_it_supports() {
        let image = crate::cluster::kindconfig::NODE_IMAGE;
        assert_eq!(node_image_minor(image), Some(36));
        assert_eq!(node_image_minor("kindest/node:v1.35.0"), Some(35));
        assert!(kind_supports(Version(0, 32, 0), image).is_ok());
        assert!(kind_supports(Version(0, 32, 3), image).is_ok());
        let e = kind_supports(Version(0, 31, 0), image).unwrap_err();
        assert_eq!(
            e,
            "kind v0.31.0 supports node images up to Kubernetes 1.35, not kindest/node:v1.36.1 (made for kind v0.32.0)"
        );
        assert!(kind_supports(Version(0, 24, 0), image).is_err());
        let e = kind_supports(Version(0, 40, 0), image).unwrap_err();
        assert!(
            e.starts_with("pulsedev does not know whether kind v0.40.0"),
            "{e}"
        );
        // An older image is fine with a kind made after it.
        assert!(kind_supports(Version(0, 31, 0), "kindest/node:v1.35.0@sha256:00").is_ok());
        assert!(kind_supports(Version(0, 30, 0), "kindest/node:v1.35.0@sha256:00").is_err());

        assert_eq!(KIND.unusable(Version(0, 32, 0)), None);
        assert_eq!(
            KIND.unusable(Version(0, 31, 0)).unwrap().0,
            ErrorKind::ToolTooOld
        );
        assert_eq!(
            KIND.unusable(Version(0, 23, 0)).unwrap().0,
            ErrorKind::ToolTooOld
        );
        assert_eq!(
            KIND.unusable(Version(0, 33, 0)).unwrap().0,
            ErrorKind::ToolMissing
        );
        // helm 3.16 brought --skip-schema-validation (the NGINX chart's remote schema).
        assert_eq!(HELM.unusable(Version(3, 16, 0)), None);
        assert!(HELM.unusable(Version(3, 15, 9)).is_some());
        // The table covers every release from the minimum to the pin.
        for minor in KIND.minimum.1..=KIND.pinned.1 {
            assert!(
                KIND_DEFAULT_KUBERNETES_MINOR
                    .iter()
                    .any(|(v, _)| *v == (0, minor)),
                "kind v0.{minor}"
            );
        }
    }

    #[test]
    fn ordering_and_minimums() {
        assert!(Version(0, 23, 9) < KIND.minimum);
        assert!(KIND.pinned >= KIND.minimum);
        assert!(HELM.pinned >= HELM.minimum);
        assert!(Version(3, 15, 9) < HELM.minimum);
        assert_eq!(Version(0, 32, 0).to_string(), "v0.32.0");
    }
}
