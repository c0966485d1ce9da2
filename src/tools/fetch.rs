//! Fetching pinned tool releases: the pins (`pins.toml`, compiled in), the download
//! (HTTPS, or a mirror), the SHA-256 check made while the bytes arrive, and the cache
//! (`<cache>/tools/<tool>/<version>/<tool>`). A file whose checksum does not match is
//! deleted before anything could run it (`tool-checksum-mismatch`).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use toml_edit::DocumentMut;

use crate::error::{Error, ErrorKind, Result};
use crate::state;

pub const PINS: &str = include_str!("pins.toml");

/// Environment variable: base URL serving `<tool>/<version>/<file name>`.
pub const MIRROR_VAR: &str = "PULSEDEV_TOOLS_MIRROR";
/// Environment variable: a pins file to use instead of the compiled-in one (mirrors
/// that host their own builds).
pub const PINS_VAR: &str = "PULSEDEV_TOOLS_PINS";

/// One downloadable file of a pinned release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    pub tool: String,
    pub version: String,
    pub platform: String,
    pub url: String,
    /// Lower-case hex; `None` when the pins list the URL but no checksum.
    pub sha256: Option<String>,
    /// For archives: the path of the binary inside the .tar.gz.
    pub member: Option<String>,
}

/// `<os>-<arch>` in release naming: linux-amd64, darwin-arm64, …
pub fn this_platform() -> String {
    let os = std::env::consts::OS.replace("macos", "darwin");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{os}-{arch}")
}

fn pins_error(why: String) -> Error {
    Error::new(
        ErrorKind::ConfigInvalid,
        format!("the tool pins are invalid: {why}"),
    )
}

/// The pinned version of `tool`, and its asset for `platform` (if pinned).
pub fn lookup(pins: &str, tool: &str, platform: &str) -> Result<(String, Option<Asset>)> {
    let doc: DocumentMut = pins.parse().map_err(|e| pins_error(format!("{e}")))?;
    let t = doc
        .get(tool)
        .and_then(|i| i.as_table_like())
        .ok_or_else(|| pins_error(format!("no [{tool}] table")))?;
    let version = t
        .get("version")
        .and_then(|v| v.as_str())
        .ok_or_else(|| pins_error(format!("[{tool}] has no version")))?
        .to_string();
    let Some(a) = t.get(platform).and_then(|i| i.as_table_like()) else {
        return Ok((version, None));
    };
    let s = |k: &str| a.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let url = s("url").ok_or_else(|| pins_error(format!("[{tool}.{platform}] has no url")))?;
    let sha256 = s("sha256").filter(|h| !h.is_empty());
    if let Some(h) = &sha256
        && (h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(pins_error(format!(
            "[{tool}.{platform}] sha256 is not 64 hex digits"
        )));
    }
    Ok((
        version.clone(),
        Some(Asset {
            tool: tool.to_string(),
            version,
            platform: platform.to_string(),
            url,
            sha256: sha256.map(|h| h.to_ascii_lowercase()),
            member: s("member"),
        }),
    ))
}

/// The URL to download from: the pinned one, or the same file on a mirror.
pub fn source_url(asset: &Asset, mirror: Option<&str>) -> String {
    match mirror.filter(|m| !m.is_empty()) {
        None => asset.url.clone(),
        Some(base) => {
            let file = asset.url.rsplit('/').next().unwrap_or_default();
            format!(
                "{}/{}/{}/{file}",
                base.trim_end_matches('/'),
                asset.tool,
                asset.version
            )
        }
    }
}

/// Where a fetched tool lives.
pub fn cached_path(tools_dir: &Path, tool: &str, version: &str) -> PathBuf {
    tools_dir.join(tool).join(version).join(tool)
}

/// The cached binary, when a previous fetch left one.
pub fn cached(tools_dir: &Path, tool: &str, version: &str) -> Option<PathBuf> {
    let p = cached_path(tools_dir, tool, version);
    let meta = std::fs::metadata(&p).ok()?;
    (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(p)
}

/// Downloads `asset` from `url`, verifies it, and installs the binary into the cache.
/// Returns the binary's path.
pub async fn fetch(asset: &Asset, url: &str, tools_dir: &Path) -> Result<PathBuf> {
    let Some(want) = &asset.sha256 else {
        return Err(Error::new(
            ErrorKind::ToolMissing,
            format!(
                "no pinned checksum for {} {} on {}; pulsedev does not run unverified downloads",
                asset.tool, asset.version, asset.platform
            ),
        )
        .with_hint(format!("install it yourself: {}", asset.url)));
    };
    let dest = cached_path(tools_dir, &asset.tool, &asset.version);
    let dir = dest.parent().expect("cached path has a parent");
    state::private_dir(dir)?;
    let unreachable = |why: String| {
        Error::new(
            ErrorKind::ToolMissing,
            format!(
                "failed to download {} {} from {url}: {why}",
                asset.tool, asset.version
            ),
        )
        .with_hint(format!(
            "check the network (or set {MIRROR_VAR} to a mirror), or install {} {} yourself: {}",
            asset.tool, asset.version, asset.url
        ))
    };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("pulsedev/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| unreachable(error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(unreachable(format!(
            "the server answered {}",
            resp.status()
        )));
    }
    // Stream into a private temp file next to the destination, hashing as we go.
    let mut tmp = tempfile::Builder::new()
        .prefix(".download.")
        .tempfile_in(dir)
        .map_err(|e| state::io_error("create a temporary file in", dir, e))?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| unreachable(error_chain(&e)))?
    {
        hasher.update(&chunk);
        tmp.write_all(&chunk)
            .map_err(|e| state::io_error("write", tmp.path(), e))?;
    }
    let got = hex::encode(hasher.finalize());
    if &got != want {
        // Dropping `tmp` deletes it: the bad file is never kept, never run.
        drop(tmp);
        return Err(Error::new(
            ErrorKind::ToolChecksumMismatch,
            format!(
                "the download of {} {} from {url} does not match its pinned checksum; it was deleted",
                asset.tool, asset.version
            ),
        )
        .with_details(vec![format!("expected sha256 {want}"), format!("got      sha256 {got}")])
        .with_hint(format!(
            "a proxy or mirror may have altered it, or the release changed: try again later, or install {} {} yourself from {} and verify it",
            asset.tool, asset.version, asset.url
        )));
    }
    tmp.flush()
        .map_err(|e| state::io_error("write", tmp.path(), e))?;
    let binary = match &asset.member {
        None => tmp,
        Some(member) => extract(tmp.path(), member, dir)?,
    };
    std::fs::set_permissions(binary.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| state::io_error("make executable", binary.path(), e))?;
    binary
        .persist(&dest)
        .map_err(|e| state::io_error("install", &dest, e.error))?;
    Ok(dest)
}

/// reqwest hides the cause (connection refused, DNS) in the source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

/// Copies `member` out of the .tar.gz at `archive` into a temp file in `dir`.
fn extract(archive: &Path, member: &str, dir: &Path) -> Result<tempfile::NamedTempFile> {
    let bad = |why: String| {
        Error::new(
            ErrorKind::ToolMissing,
            format!(
                "failed to unpack {member} from {}: {why}",
                archive.display()
            ),
        )
    };
    let f = std::fs::File::open(archive).map_err(|e| bad(e.to_string()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?;
        if path.to_string_lossy().trim_start_matches("./") == member {
            let mut out = tempfile::Builder::new()
                .prefix(".unpacked.")
                .tempfile_in(dir)
                .map_err(|e| bad(e.to_string()))?;
            std::io::copy(&mut entry, &mut out).map_err(|e| bad(e.to_string()))?;
            return Ok(out);
        }
    }
    Err(bad("the archive has no such file".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_pins_cover_the_supported_platforms() {
        for tool in ["kind", "helm"] {
            for platform in ["linux-amd64", "linux-arm64", "darwin-amd64", "darwin-arm64"] {
                let (version, asset) = lookup(PINS, tool, platform).unwrap();
                let a = asset.unwrap_or_else(|| panic!("{tool} {platform} not pinned"));
                assert!(a.url.starts_with("https://"), "{}", a.url);
                assert!(a.url.contains(&version), "{}", a.url);
                assert!(a.url.contains(platform), "{}", a.url);
                assert_eq!(
                    a.sha256.as_ref().map(String::len),
                    Some(64),
                    "{tool} {platform}"
                );
                assert_eq!(a.member.is_some(), tool == "helm");
            }
        }
        assert_eq!(lookup(PINS, "kind", "plan9-mips").unwrap().1, None);
        // The versions pulsedev asks for are the ones pinned here.
        let (k, _) = lookup(PINS, "kind", "linux-amd64").unwrap();
        let (h, _) = lookup(PINS, "helm", "linux-amd64").unwrap();
        assert_eq!(k, crate::tools::KIND.pinned.to_string());
        assert_eq!(h, crate::tools::HELM.pinned.to_string());
    }

    #[test]
    fn mirror_urls() {
        let (_, a) = lookup(PINS, "helm", "linux-amd64").unwrap();
        let a = a.unwrap();
        assert_eq!(source_url(&a, None), a.url);
        assert_eq!(
            source_url(&a, Some("http://127.0.0.1:9/m/")),
            "http://127.0.0.1:9/m/helm/v4.2.2/helm-v4.2.2-linux-amd64.tar.gz"
        );
    }

    /// Serves `body` for every request on 127.0.0.1 and counts the requests.
    fn serve(body: Vec<u8>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            }
        });
        (base, hits)
    }

    fn helm_archive() -> Vec<u8> {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let script = b"#!/bin/sh\necho v4.2.2+gfixture\n";
        for (path, data) in [
            ("linux-amd64/README.md", &b"readme"[..]),
            ("linux-amd64/helm", &script[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    fn asset(sha: &str) -> Asset {
        Asset {
            tool: "helm".into(),
            version: "v4.2.2".into(),
            platform: "linux-amd64".into(),
            url: "https://get.helm.sh/helm-v4.2.2-linux-amd64.tar.gz".into(),
            sha256: Some(sha.into()),
            member: Some("linux-amd64/helm".into()),
        }
    }

    #[tokio::test]
    async fn a_good_archive_is_verified_unpacked_and_cached() {
        let body = helm_archive();
        let sha = hex::encode(Sha256::digest(&body));
        let (base, hits) = serve(body);
        let cache = tempfile::tempdir().unwrap();
        let a = asset(&sha);
        let url = source_url(&a, Some(&base));
        let bin = fetch(&a, &url, cache.path()).await.unwrap();
        assert_eq!(bin, cached_path(cache.path(), "helm", "v4.2.2"));
        let mode = std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        let out = std::process::Command::new(&bin).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "v4.2.2+gfixture\n");
        assert_eq!(cached(cache.path(), "helm", "v4.2.2"), Some(bin));
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Only the binary is left in the cache directory: no temp files.
        let names: Vec<_> = std::fs::read_dir(cache.path().join("helm/v4.2.2"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["helm"]);
    }

    #[tokio::test]
    async fn a_bad_checksum_is_refused_and_nothing_is_kept() {
        let (base, _) = serve(helm_archive());
        let cache = tempfile::tempdir().unwrap();
        let a = asset(&"0".repeat(64));
        let e = fetch(&a, &source_url(&a, Some(&base)), cache.path())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::ToolChecksumMismatch);
        assert_eq!(e.id(), "tool-checksum-mismatch");
        assert!(e.details[0].ends_with(&"0".repeat(64)));
        let left: Vec<_> = std::fs::read_dir(cache.path().join("helm/v4.2.2"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(cached(cache.path(), "helm", "v4.2.2"), None);
    }

    #[tokio::test]
    async fn no_checksum_or_no_server_says_how_to_install_by_hand() {
        let cache = tempfile::tempdir().unwrap();
        let mut a = asset(&"0".repeat(64));
        a.sha256 = None;
        let e = fetch(&a, &a.url, cache.path()).await.unwrap_err();
        assert!(
            e.message
                .starts_with("no pinned checksum for helm v4.2.2 on linux-amd64")
        );
        assert!(e.hint.as_deref().unwrap().contains(&a.url));
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let a = asset(&"0".repeat(64));
        let e = fetch(&a, &format!("http://127.0.0.1:{dead}/x"), cache.path())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::ToolMissing);
        assert!(e.hint.as_deref().unwrap().contains(MIRROR_VAR), "{e:?}");
    }
}
