//! Fetching pinned tool releases: the pins (`pins.toml`, compiled in), the download
//! (HTTPS, or a mirror; plain http only to this machine), bounded in size and time, the
//! SHA-256 check made while the bytes arrive, and the cache
//! (`<cache>/tools/<tool>/<version>/<pinned sha256>/<tool>`), whose content is checked
//! against the pin again before every use. A file whose checksum does not match is
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
    /// The exact size in bytes, when the pins give it (`size = N`): the download is
    /// cut off beyond it. Otherwise [`DEFAULT_MAX_BYTES`] bounds it.
    pub size: Option<u64>,
}

/// The most a download may be when its pin gives no size: kind's binaries are ~10 MB
/// and helm's archives ~20 MB, so 128 MiB leaves room for growth and stops a mirror
/// streaming without end.
pub const DEFAULT_MAX_BYTES: u64 = 128 << 20;

/// How long a whole download may take (connect to last byte). A per-read timeout
/// alone lets a server trickle one byte a minute forever. 20 MB in 10 minutes is
/// ~35 kB/s, slower than any network `up` could otherwise use.
pub const DEADLINE: Duration = Duration::from_secs(600);

/// Bounds of one download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub deadline: Duration,
}

impl Limits {
    pub fn for_asset(asset: &Asset) -> Limits {
        Limits {
            max_bytes: asset.size.unwrap_or(DEFAULT_MAX_BYTES),
            deadline: DEADLINE,
        }
    }
}

/// Whether `url` may be downloaded from: https, or plain http to this machine only
/// (a local mirror, tests). The checksum protects the content either way, but a
/// plaintext fetch across the network tells everyone on the path what is installed
/// and invites tampering; refusing it keeps the rule simple.
pub fn allowed_url(url: &reqwest::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => url.host_str().is_some_and(|h| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
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
            size: a
                .get("size")
                .and_then(|v| v.as_integer())
                .and_then(|n| u64::try_from(n).ok()),
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

/// Where a fetched tool lives: keyed by the pinned checksum, so a binary brought by
/// other pins (PULSEDEV_TOOLS_PINS) is never taken for the compiled-in release.
pub fn cached_path(tools_dir: &Path, asset: &Asset) -> Option<PathBuf> {
    let sha = asset.sha256.as_ref()?;
    Some(
        tools_dir
            .join(&asset.tool)
            .join(&asset.version)
            .join(sha)
            .join(&asset.tool),
    )
}

/// Where the verified archive of an archive asset is kept beside its binary, so the
/// binary can be checked against the pin on every use.
fn cached_archive(bin: &Path, asset: &Asset) -> PathBuf {
    let file = asset.url.rsplit('/').next().unwrap_or("archive");
    bin.with_file_name(format!("{file}.verified"))
}

/// The cached binary of `asset`, checked against the pin now: a regular executable
/// file whose SHA-256 is the pinned one (for an archive: the kept archive matches the
/// pin and the binary is byte for byte its member). `Ok(None)` when nothing is cached;
/// a mismatch deletes the files and is `tool-checksum-mismatch`.
///
/// Cost (release build, this 2-core machine under load): one SHA-256 pass over the
/// binary, 5-25 ms for a 10 MB kind; for helm the 18 MB archive, its gunzipped 60 MB
/// member and the 60 MB binary, ~0.75 s. See docs/DECISIONS.md "Tools re-verified on
/// every use".
pub fn cached(tools_dir: &Path, asset: &Asset) -> Result<Option<PathBuf>> {
    let Some(bin) = cached_path(tools_dir, asset) else {
        return Ok(None);
    };
    let Ok(meta) = std::fs::symlink_metadata(&bin) else {
        return Ok(None);
    };
    let want = asset.sha256.as_deref().unwrap_or_default();
    let verdict: std::result::Result<(), String> = (|| {
        if !meta.is_file() {
            return Err("it is not a regular file".to_string());
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err("it is not executable".to_string());
        }
        let hash = |p: &Path| -> std::result::Result<String, String> {
            let f = std::fs::File::open(p).map_err(|e| e.to_string())?;
            sha256_of(f).map_err(|e| e.to_string())
        };
        match &asset.member {
            None => {
                let got = hash(&bin)?;
                if got != want {
                    return Err(format!("its sha256 is {got}, the pin says {want}"));
                }
            }
            Some(member) => {
                let archive = cached_archive(&bin, asset);
                let got = hash(&archive).map_err(|e| format!("its verified archive: {e}"))?;
                if got != want {
                    return Err(format!(
                        "its archive's sha256 is {got}, the pin says {want}"
                    ));
                }
                let inner = member_sha256(&archive, member)?;
                if hash(&bin)? != inner {
                    return Err(format!("it is not the {member} of the pinned archive"));
                }
            }
        }
        Ok(())
    })();
    match verdict {
        Ok(()) => Ok(Some(bin)),
        Err(why) => {
            let _ = std::fs::remove_file(&bin);
            let _ = std::fs::remove_file(cached_archive(&bin, asset));
            Err(Error::new(
                ErrorKind::ToolChecksumMismatch,
                format!(
                    "the cached {} {} at {} does not match its pinned checksum ({why}); it was deleted",
                    asset.tool,
                    asset.version,
                    bin.display()
                ),
            )
            .with_hint(format!(
                "run the command again to download {} {} afresh; if this happens again, something on this machine changes files in {}",
                asset.tool,
                asset.version,
                tools_dir.display()
            )))
        }
    }
}

/// The SHA-256 of everything `r` yields, in lower-case hex.
fn sha256_of(mut r: impl std::io::Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(hex::encode(h.finalize())),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The SHA-256 of `member` inside the .tar.gz at `archive`.
fn member_sha256(archive: &Path, member: &str) -> std::result::Result<String, String> {
    let f = std::fs::File::open(archive).map_err(|e| e.to_string())?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for entry in tar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?;
        if path.to_string_lossy().trim_start_matches("./") == member {
            return sha256_of(&mut entry).map_err(|e| e.to_string());
        }
    }
    Err(format!("its archive has no {member}"))
}

/// Removes partial downloads (`.download.*`, `.unpacked.*`) older than `age` from
/// `dir`: a run killed mid-download (SIGKILL, power loss) leaves them, and no live
/// download is older than the deadline.
pub fn clean_stale(dir: &Path, age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(".download.") || name.starts_with(".unpacked.")) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|d| d > age);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Downloads `asset` from `url` within `limits`, verifies it, and installs the
/// binary into the cache. Returns the binary's path.
pub async fn fetch(asset: &Asset, url: &str, tools_dir: &Path, limits: Limits) -> Result<PathBuf> {
    let (Some(want), Some(dest)) = (&asset.sha256, cached_path(tools_dir, asset)) else {
        return Err(Error::new(
            ErrorKind::ToolMissing,
            format!(
                "no pinned checksum for {} {} on {}; pulsedev does not run unverified downloads",
                asset.tool, asset.version, asset.platform
            ),
        )
        .with_hint(format!("install it yourself: {}", asset.url)));
    };
    let dir = dest.parent().expect("cached path has a parent");
    state::private_dir(dir)?;
    clean_stale(dir, limits.deadline + Duration::from_secs(60));
    let failed = |at: &str, why: String| {
        Error::new(
            ErrorKind::ToolMissing,
            format!(
                "failed to download {} {} from {at}: {why}",
                asset.tool, asset.version
            ),
        )
        .with_hint(format!(
            "check the network (or set {MIRROR_VAR} to a mirror), or install {} {} yourself: {}",
            asset.tool, asset.version, asset.url
        ))
    };
    let unreachable = |why: String| failed(url, why);
    let parsed = reqwest::Url::parse(url).map_err(|e| unreachable(e.to_string()))?;
    if !allowed_url(&parsed) {
        return Err(unreachable(
            "plain http is refused for downloads (only https, or http to this machine)".into(),
        ));
    }
    // Redirects (GitHub sends release downloads to its object store) must stay on
    // https too; at most 10, as reqwest's default.
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else if !allowed_url(attempt.url()) {
            let to = attempt.url().to_string();
            attempt.error(format!("redirected to {to}: plain http is refused"))
        } else {
            attempt.follow()
        }
    });
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(60))
        .redirect(policy)
        .user_agent(concat!("pulsedev/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let download = async {
        let mut resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| unreachable(crate::error::error_chain(&e)))?;
        // After a redirect, name both ends: the one asked and the one that answered.
        let at = if resp.url().as_str() == url {
            url.to_string()
        } else {
            format!("{url} (redirected to {})", resp.url())
        };
        if !resp.status().is_success() {
            return Err(failed(
                &at,
                format!("the server answered {}", resp.status()),
            ));
        }
        let too_big = |n: u64| {
            failed(
                &at,
                format!(
                    "it is larger than {} bytes ({n} bytes or more), more than the release can be",
                    limits.max_bytes
                ),
            )
        };
        if let Some(n) = resp.content_length()
            && n > limits.max_bytes
        {
            return Err(too_big(n));
        }
        // Stream into a private temp file next to the destination, hashing as we go.
        let mut tmp = tempfile::Builder::new()
            .prefix(".download.")
            .tempfile_in(dir)
            .map_err(|e| state::io_error("create a temporary file in", dir, e))?;
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| failed(&at, crate::error::error_chain(&e)))?
        {
            received += chunk.len() as u64;
            if received > limits.max_bytes {
                return Err(too_big(received));
            }
            hasher.update(&chunk);
            tmp.write_all(&chunk)
                .map_err(|e| state::io_error("write", tmp.path(), e))?;
        }
        Ok((tmp, hex::encode(hasher.finalize()), at))
    };
    let (mut tmp, got, at) = match tokio::time::timeout(limits.deadline, download).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(unreachable(format!(
                "it did not finish within {}s; the partial file was deleted",
                limits.deadline.as_secs()
            )));
        }
    };
    if &got != want {
        // Dropping `tmp` deletes it: the bad file is never kept, never run.
        drop(tmp);
        return Err(Error::new(
            ErrorKind::ToolChecksumMismatch,
            format!(
                "the download of {} {} from {at} does not match its pinned checksum; it was deleted",
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
        Some(member) => {
            let binary = extract(tmp.path(), member, dir)?;
            // Keep the verified archive: the binary is checked against it on each use.
            let archive = cached_archive(&dest, asset);
            tmp.persist(&archive)
                .map_err(|e| state::io_error("install", &archive, e.error))?;
            binary
        }
    };
    std::fs::set_permissions(binary.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| state::io_error("make executable", binary.path(), e))?;
    binary
        .persist(&dest)
        .map_err(|e| state::io_error("install", &dest, e.error))?;
    Ok(dest)
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
        serve_with(move |s| {
            use std::io::Write;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        })
    }

    /// A server on 127.0.0.1 answering each request (after reading it) with `answer`.
    fn serve_with(
        answer: impl Fn(&mut std::net::TcpStream) + Send + 'static,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::Read;
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
                answer(&mut s);
            }
        });
        (base, hits)
    }

    fn limits() -> Limits {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            deadline: DEADLINE,
        }
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
            size: None,
        }
    }

    fn kind_asset(body: &[u8]) -> Asset {
        Asset {
            tool: "kind".into(),
            version: "v0.32.0".into(),
            platform: "linux-amd64".into(),
            url:
                "https://github.com/kubernetes-sigs/kind/releases/download/v0.32.0/kind-linux-amd64"
                    .into(),
            sha256: Some(hex::encode(Sha256::digest(body))),
            member: None,
            size: None,
        }
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_good_archive_is_verified_unpacked_and_cached() {
        let body = helm_archive();
        let sha = hex::encode(Sha256::digest(&body));
        let (base, hits) = serve(body);
        let cache = tempfile::tempdir().unwrap();
        let a = asset(&sha);
        let url = source_url(&a, Some(&base));
        let bin = fetch(&a, &url, cache.path(), limits()).await.unwrap();
        assert_eq!(
            bin,
            cache.path().join("helm/v4.2.2").join(&sha).join("helm"),
            "keyed by the pinned checksum"
        );
        let mode = std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        let out = std::process::Command::new(&bin).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "v4.2.2+gfixture\n");
        assert_eq!(cached(cache.path(), &a).unwrap(), Some(bin.clone()));
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The binary and its verified archive are left in the cache: no temp files.
        assert_eq!(
            files_in(bin.parent().unwrap()),
            ["helm", "helm-v4.2.2-linux-amd64.tar.gz.verified"]
        );
        // A binary swapped after the fact is caught on the next use and deleted.
        std::fs::write(&bin, "#!/bin/sh\necho planted\n").unwrap();
        let e = cached(cache.path(), &a).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ToolChecksumMismatch);
        assert!(
            e.message.contains("not the linux-amd64/helm"),
            "{}",
            e.message
        );
        assert!(!bin.exists());
    }

    #[tokio::test]
    async fn a_bad_checksum_is_refused_and_nothing_is_kept() {
        let (base, _) = serve(helm_archive());
        let cache = tempfile::tempdir().unwrap();
        let a = asset(&"0".repeat(64));
        let e = fetch(&a, &source_url(&a, Some(&base)), cache.path(), limits())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::ToolChecksumMismatch);
        assert_eq!(e.id(), "tool-checksum-mismatch");
        assert!(e.details[0].ends_with(&"0".repeat(64)));
        let dir = cached_path(cache.path(), &a).unwrap();
        assert!(files_in(dir.parent().unwrap()).is_empty());
        assert_eq!(cached(cache.path(), &a).unwrap(), None);
    }

    #[tokio::test]
    async fn no_checksum_or_no_server_says_how_to_install_by_hand() {
        let cache = tempfile::tempdir().unwrap();
        let mut a = asset(&"0".repeat(64));
        a.sha256 = None;
        let e = fetch(&a, &a.url, cache.path(), limits()).await.unwrap_err();
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
        let e = fetch(
            &a,
            &format!("http://127.0.0.1:{dead}/x"),
            cache.path(),
            limits(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::ToolMissing);
        assert!(e.hint.as_deref().unwrap().contains(MIRROR_VAR), "{e:?}");
    }

    /// Issue 13: a script planted where the cached kind lives was run as kind. The
    /// cached binary is checked against the pin on every use.
    #[test]
    fn a_planted_cached_binary_is_refused_and_deleted() {
        let cache = tempfile::tempdir().unwrap();
        let real = b"\x7fELF the real kind".to_vec();
        let a = kind_asset(&real);
        let bin = cached_path(cache.path(), &a).unwrap();
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(&bin, "#!/bin/sh\necho kind v0.32.0\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = cached(cache.path(), &a).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ToolChecksumMismatch);
        assert!(e.message.contains("the pin says"), "{}", e.message);
        assert!(!bin.exists(), "the planted file is deleted");
        // The genuine file passes, and a symlink to it does not (it could be swapped).
        std::fs::write(&bin, &real).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(cached(cache.path(), &a).unwrap(), Some(bin.clone()));
        let elsewhere = cache.path().join("elsewhere");
        std::fs::rename(&bin, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &bin).unwrap();
        assert!(cached(cache.path(), &a).is_err());
        // Other pins (another checksum) live elsewhere: what they brought is never
        // taken for the compiled-in release.
        let mut other = a.clone();
        other.sha256 = Some("1".repeat(64));
        assert_ne!(
            cached_path(cache.path(), &other),
            cached_path(cache.path(), &a)
        );
    }

    #[tokio::test]
    async fn plain_http_is_refused_except_to_this_machine() {
        let ok = |u: &str| allowed_url(&reqwest::Url::parse(u).unwrap());
        assert!(ok("https://github.com/x"));
        assert!(ok("http://127.0.0.1:8080/x"));
        assert!(ok("http://localhost/x"));
        assert!(ok("http://[::1]:9/x"));
        assert!(!ok("http://mirror.example.com/x"));
        assert!(!ok("http://10.0.0.1/x"));
        assert!(!ok("ftp://127.0.0.1/x"));
        let cache = tempfile::tempdir().unwrap();
        let a = kind_asset(b"x");
        let e = fetch(&a, "http://mirror.invalid/kind", cache.path(), limits())
            .await
            .unwrap_err();
        assert!(e.message.contains("plain http is refused"), "{}", e.message);
        // A redirect from a loopback mirror to plain http elsewhere is refused too,
        // and the error names both URLs.
        let (base, _) = serve_with(|s| {
            use std::io::Write;
            let _ = write!(
                s,
                "HTTP/1.1 302 Found\r\nLocation: http://mirror.invalid/kind\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        });
        let e = fetch(&a, &format!("{base}/kind"), cache.path(), limits())
            .await
            .unwrap_err();
        assert!(
            e.message.contains("http://mirror.invalid/kind"),
            "{}",
            e.message
        );
    }

    /// Issue 13: a mirror streaming far more than the release is cut off, with or
    /// without a Content-Length, and nothing is left behind.
    #[tokio::test]
    async fn an_oversized_download_is_cut_off() {
        let cache = tempfile::tempdir().unwrap();
        let a = kind_asset(b"small");
        let small = Limits {
            max_bytes: 1 << 20,
            deadline: DEADLINE,
        };
        let (base, _) = serve(vec![b'x'; 3 << 20]);
        let e = fetch(&a, &format!("{base}/kind"), cache.path(), small)
            .await
            .unwrap_err();
        assert!(
            e.message.contains("larger than 1048576 bytes"),
            "{}",
            e.message
        );
        // No Content-Length: counted while streaming.
        let (base, _) = serve_with(|s| {
            use std::io::Write;
            let _ = write!(s, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![b'y'; 64 << 10];
            for _ in 0..64 {
                if s.write_all(&chunk).is_err() {
                    return;
                }
            }
        });
        let e = fetch(&a, &format!("{base}/kind"), cache.path(), small)
            .await
            .unwrap_err();
        assert!(e.message.contains("larger than"), "{}", e.message);
        let dir = cached_path(cache.path(), &a).unwrap();
        assert!(files_in(dir.parent().unwrap()).is_empty());
    }

    /// Issue 13: one byte now and then kept a download alive for ever; the overall
    /// deadline ends it, and the partial file goes.
    #[tokio::test]
    async fn a_trickling_download_hits_the_deadline() {
        let cache = tempfile::tempdir().unwrap();
        let a = kind_asset(b"whatever");
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let stop_rx = std::sync::Mutex::new(stop_rx);
        let (base, _) = serve_with(move |s| {
            use std::io::Write;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n"
            );
            // One byte per 200 ms until the test is over: far below any read timeout.
            let rx = stop_rx.lock().unwrap();
            while rx
                .recv_timeout(std::time::Duration::from_millis(200))
                .is_err()
            {
                if s.write_all(b"z").is_err() {
                    return;
                }
            }
        });
        let started = std::time::Instant::now();
        let e = fetch(
            &a,
            &format!("{base}/kind"),
            cache.path(),
            Limits {
                max_bytes: DEFAULT_MAX_BYTES,
                deadline: Duration::from_secs(2),
            },
        )
        .await
        .unwrap_err();
        let _ = stop_tx.send(());
        assert!(
            e.message.contains("did not finish within 2s"),
            "{}",
            e.message
        );
        assert!(started.elapsed() < Duration::from_secs(30));
        let dir = cached_path(cache.path(), &a).unwrap();
        assert!(files_in(dir.parent().unwrap()).is_empty());
    }

    /// Partial downloads a killed run left behind are removed by the next fetch once
    /// they are older than any live download could be; fresh ones are left alone.
    #[tokio::test]
    async fn stale_partial_downloads_are_cleaned() {
        let cache = tempfile::tempdir().unwrap();
        let body = b"#!/bin/sh\necho kind v0.32.0\n".to_vec();
        let a = kind_asset(&body);
        let dir = cached_path(cache.path(), &a).unwrap();
        let dir = dir.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let old = dir.join(".download.abc123");
        std::fs::write(&old, vec![0u8; 1024]).unwrap();
        let f = std::fs::File::options().write(true).open(&old).unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(86_400))
            .unwrap();
        let live = dir.join(".download.live01");
        std::fs::write(&live, b"in progress").unwrap();
        let (base, _) = serve(body);
        fetch(&a, &format!("{base}/kind"), cache.path(), limits())
            .await
            .unwrap();
        assert_eq!(files_in(dir), [".download.live01", "kind"]);
    }
}
