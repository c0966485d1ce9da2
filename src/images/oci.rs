//! Images downloaded byte for byte from their registries over the OCI distribution API
//! into pulsedev's image cache, for one platform, and read back as an OCI-layout tar.
//!
//! Why not `docker pull` + `docker save`: Docker's classic image store (overlay2, e.g.
//! Debian's docker.io 20.10 and GitHub's runners) keeps neither the registry's manifest
//! bytes nor its index, so what it saves has other digests than the pin, and the kubelet
//! would pull the pinned ref anyway.
//!
//! The protocol (distribution spec, docs/spec/api.md and the token spec
//! docs/spec/auth/token.md): `GET /v2/<name>/manifests/<ref>` with the Accept types of
//! OCI and Docker indexes and manifests; a 401 with `WWW-Authenticate: Bearer
//! realm=…,service=…,scope=…` is answered by an anonymous `GET realm?service=…&scope=…`
//! whose JSON `token` (or `access_token`) goes into `Authorization: Bearer`; blobs by
//! `GET /v2/<name>/blobs/<digest>`, following redirects to the CDN (reqwest drops the
//! Authorization header when a redirect leaves the host). Every byte is checked against
//! its digest; the index against the pin.
//!
//! Cache: `<cache>/images/` is an OCI image layout (`oci-layout`, `blobs/sha256/…`
//! shared by all images), plus `refs/<ref>.json`, one record per image, written last:
//! a blob is written to a temporary file and renamed once verified, the record renamed
//! into place once all its blobs are, so an interrupted fetch leaves no half entry.
//!
//! Owns: the registry client, the cache, the layout tar. Must not talk to Docker.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::upstream::ImageName;
use crate::error::{Error, ErrorKind, Result};
use crate::offline::Proxies;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor (OCI image-spec descriptor.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// One cached image: what it was asked as, the index (or single manifest) its ref
/// names, and every blob of the platform's image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    #[serde(with = "name_serde")]
    pub name: ImageName,
    pub platform: String,
    /// What the ref points at: the index, or the manifest of a single-platform image.
    pub index: Descriptor,
    /// The platform's manifest, its config and its layers (the manifest equals `index`
    /// for a single-platform image).
    pub blobs: Vec<Descriptor>,
}

mod name_serde {
    use super::ImageName;
    pub fn serialize<S: serde::Serializer>(n: &ImageName, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&n.full())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ImageName, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        ImageName::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn hex_of(digest: &str) -> Option<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub fn cache_root(cache: &Path) -> PathBuf {
    cache.join("images")
}

fn blob_path(cache: &Path, digest: &str) -> Result<PathBuf> {
    let hex =
        hex_of(digest).ok_or_else(|| Error::internal(format!("not a sha256 digest: {digest}")))?;
    Ok(cache_root(cache).join("blobs/sha256").join(hex))
}

/// The record file of `name` (asked as given: tag and/or digest).
fn record_path(cache: &Path, name: &ImageName) -> PathBuf {
    let safe: String = name
        .full()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    cache_root(cache).join("refs").join(format!("{safe}.json"))
}

fn mismatch(what: String) -> Error {
    Error::new(ErrorKind::ToolChecksumMismatch, what).with_hint(
        "the entry was removed from pulsedev's image cache; run `pulsedev fetch` again where the registry can be reached",
    )
}

fn sha256_of_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// The cache's record for `name` on `platform`, read without checking any blob (what
/// the nodes would need is known before deciding whether to verify and send it).
pub fn record(cache: &Path, name: &ImageName, platform: &str) -> Option<Cached> {
    let text = std::fs::read_to_string(record_path(cache, name)).ok()?;
    serde_json::from_str::<Cached>(&text)
        .ok()
        .filter(|c| c.platform == platform)
}

/// The cached entry for `name` on `platform`, every blob checked against its digest
/// and size. A blob that does not match is deleted with the record, and reported
/// (`tool-checksum-mismatch`); an entry that is not there is `None`.
pub fn cached(cache: &Path, name: &ImageName, platform: &str) -> Result<Option<Cached>> {
    let record = record_path(cache, name);
    let text = match std::fs::read_to_string(&record) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::internal(format!(
                "failed to read {}: {e}",
                record.display()
            )));
        }
    };
    let entry: Cached = match serde_json::from_str(&text) {
        Ok(c) => c,
        Err(_) => {
            let _ = std::fs::remove_file(&record);
            return Ok(None);
        }
    };
    if entry.platform != platform {
        return Ok(None);
    }
    for d in std::iter::once(&entry.index).chain(&entry.blobs) {
        let path = blob_path(cache, &d.digest)?;
        let got = sha256_of_file(&path);
        let size = std::fs::metadata(&path).map(|m| m.len()).ok();
        match got {
            Ok(g) if g == d.digest && size == Some(d.size) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_file(&record);
                return Ok(None);
            }
            _ => {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(&record);
                return Err(mismatch(format!(
                    "the cached image {name} failed verification: blob {} of {} is not what its digest says",
                    d.digest,
                    path.display()
                )));
            }
        }
    }
    Ok(Some(entry))
}

/// Per-registry mirrors for the workload images pulsedev downloads:
/// `registry=URL[,registry=URL…]` (e.g. `docker.io=https://hub-cache.corp,quay.io=…`).
/// A mirror serves the same repository paths (`URL/v2/<path>/…`), is tried first, and
/// the registry itself after it, as containerd does with a hosts.toml mirror
/// (containerd docs/hosts.md: the hosts in order, then the `server`).
pub const MIRRORS_VAR: &str = "PULSEDEV_IMAGE_MIRRORS";

/// The mirrors of `registry` in a `MIRRORS_VAR` value.
pub fn mirrors_for(setting: Option<&str>, registry: &str) -> Vec<String> {
    setting
        .unwrap_or("")
        .split(',')
        .filter_map(|e| e.trim().split_once('='))
        .filter(|(r, _)| r.trim() == registry)
        .map(|(_, url)| url.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .collect()
}

/// The mirrors for `name`: pulsedev's own setting for its registry, then (Docker Hub
/// only) the engine's registry mirrors.
pub fn mirrors(name: &ImageName, setting: Option<&str>, engine: &[String]) -> Vec<String> {
    let mut out = mirrors_for(setting, &name.domain);
    if name.domain == "docker.io" {
        out.extend(engine.iter().cloned());
    }
    out
}

/// Whether a complete entry for `name` on `platform` is in the cache, by its record and
/// the sizes of its blobs (no hashing: for `doctor`, which must stay fast; `up`
/// verifies every byte with `cached` before it imports).
pub fn present(cache: &Path, name: &ImageName, platform: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(record_path(cache, name)) else {
        return false;
    };
    let Ok(entry) = serde_json::from_str::<Cached>(&text) else {
        return false;
    };
    entry.platform == platform
        && std::iter::once(&entry.index).chain(&entry.blobs).all(|d| {
            blob_path(cache, &d.digest)
                .ok()
                .and_then(|p| std::fs::metadata(p).ok())
                .is_some_and(|m| m.len() == d.size)
        })
}

/// The file where `fetch` records the workload images it found (the platform charts'
/// need helm to be known; `doctor` reads this list instead of rendering).
fn workloads_file(cache: &Path) -> PathBuf {
    cache_root(cache).join("workloads.json")
}

/// Records `names` as the workload images (`recorded_workloads` reads them).
pub fn record_workloads(cache: &Path, names: &[ImageName]) -> Result<()> {
    let dir = cache_root(cache);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::internal(format!("failed to create {}: {e}", dir.display())))?;
    let list: Vec<String> = names.iter().map(ImageName::full).collect();
    let mut tmp = tempfile::Builder::new()
        .prefix(".part.")
        .tempfile_in(&dir)
        .map_err(|e| Error::internal(format!("failed to write in {}: {e}", dir.display())))?;
    tmp.write_all(
        serde_json::to_string_pretty(&list)
            .expect("a list serializes")
            .as_bytes(),
    )
    .map_err(|e| Error::internal(format!("failed to write the image cache: {e}")))?;
    tmp.persist(workloads_file(cache))
        .map_err(|e| Error::internal(format!("failed to write the image cache: {e}")))?;
    Ok(())
}

/// The workload images `fetch` last recorded (none when it never ran).
pub fn recorded_workloads(cache: &Path) -> Vec<ImageName> {
    std::fs::read_to_string(workloads_file(cache))
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<String>>(&t).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| ImageName::parse(s).ok())
        .collect()
}

/// Where an image's registry API is: `mirrors` first (the engine's registry mirrors
/// apply to Docker Hub only, as the engine uses them: moby registry/service.go
/// `lookupV2Endpoints`; pulsedev's own `PULSEDEV_IMAGE_MIRRORS` to the registry it
/// names), then the registry itself over https, then http for a loopback registry (the
/// engine treats 127.0.0.0/8 as insecure: moby registry/config.go).
pub fn endpoints(name: &ImageName, mirrors: &[String]) -> Vec<String> {
    let mut out: Vec<String> = mirrors
        .iter()
        .map(|m| m.trim_end_matches('/').to_string())
        .collect();
    if name.domain == "docker.io" {
        out.push(format!("https://{}", crate::offline::DOCKER_HUB_API));
        return out;
    }
    out.push(format!("https://{}", name.domain));
    let host = name
        .domain
        .rsplit_once(':')
        .map_or(name.domain.as_str(), |(h, _)| h);
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        out.push(format!("http://{}", name.domain));
    }
    out
}

/// A registry client for one image's downloads.
pub struct Registry {
    http: reqwest::Client,
    tokens: Mutex<HashMap<String, String>>,
}

impl Registry {
    /// Through `proxies` (the process's HTTPS_PROXY/NO_PROXY: pulsedev downloads these
    /// itself), at most 10 redirects.
    pub fn new(proxies: &Proxies) -> Result<Registry> {
        let http = proxies
            .client_builder()
            .map_err(|e| Error::new(ErrorKind::ConfigInvalid, e))?
            .redirect(reqwest::redirect::Policy::limited(
                crate::offline::MAX_REDIRECTS,
            ))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::internal(e.to_string()))?;
        Ok(Registry {
            http,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    async fn get(
        &self,
        url: &str,
        accept: &[&str],
    ) -> std::result::Result<reqwest::Response, String> {
        let send = |token: Option<String>| {
            let mut r = self.http.get(url);
            if !accept.is_empty() {
                r = r.header(reqwest::header::ACCEPT, accept.join(", "));
            }
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send()
        };
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let known = self
            .tokens
            .lock()
            .expect("not poisoned")
            .get(&host)
            .cloned();
        let resp = send(known.clone())
            .await
            .map_err(|e| crate::error::error_chain(&e))?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let token = self.token(&challenge).await?;
        self.tokens
            .lock()
            .expect("not poisoned")
            .insert(host, token.clone());
        send(Some(token))
            .await
            .map_err(|e| crate::error::error_chain(&e))
    }

    /// An anonymous bearer token for a `WWW-Authenticate: Bearer …` challenge.
    async fn token(&self, challenge: &str) -> std::result::Result<String, String> {
        let params = parse_challenge(challenge)
            .ok_or_else(|| format!("the registry asks for credentials ({challenge:?}); pulsedev fetches public images only"))?;
        let realm = params
            .get("realm")
            .ok_or("the registry's challenge names no realm")?;
        let mut url = reqwest::Url::parse(realm).map_err(|e| format!("realm {realm}: {e}"))?;
        for k in ["service", "scope"] {
            if let Some(v) = params.get(k) {
                url.query_pairs_mut().append_pair(k, v);
            }
        }
        let resp = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| crate::error::error_chain(&e))?;
        if !resp.status().is_success() {
            return Err(format!(
                "the token service {realm} answered {}",
                resp.status()
            ));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| crate::error::error_chain(&e))?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("the token service {realm} sent no JSON: {e}"))?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("the token service {realm} gave no token"))
    }
}

/// `Bearer realm="…",service="…",scope="…"` → its parameters.
pub fn parse_challenge(h: &str) -> Option<HashMap<String, String>> {
    let rest = h
        .trim()
        .strip_prefix("Bearer ")
        .or_else(|| h.trim().strip_prefix("bearer "))?;
    let mut out = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(key, value);
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

fn unreachable(name: &ImageName, why: String) -> Error {
    Error::new(
        ErrorKind::ImagePullFailed,
        format!("failed to download {name}: {why}"),
    )
    .with_hint("check the network (HTTPS_PROXY and NO_PROXY are honoured; Docker Hub images also use the engine's registry mirrors), then run `pulsedev fetch` again")
}

/// Whether `p` (an index entry's `platform`) is `want` (`linux/amd64`, `linux/arm64`):
/// os and architecture; an arm64 variant other than v8 is not (containerd platforms'
/// normalisation treats arm64 and arm64/v8 alike).
fn platform_matches(p: &Value, want: &str) -> bool {
    let (os, arch) = want.split_once('/').unwrap_or(("linux", want));
    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
    s("os") == os
        && s("architecture") == arch
        && (arch != "arm64" || matches!(s("variant"), "" | "v8"))
}

/// Downloads `name` for `platform` into the cache unless a verified entry is there.
/// Returns the entry and whether it was downloaded now.
pub async fn fetch(
    reg: &Registry,
    cache: &Path,
    name: &ImageName,
    platform: &str,
    mirrors: &[String],
) -> Result<(Cached, bool)> {
    if let Some(c) = cached(cache, name, platform)? {
        return Ok((c, false));
    }
    let mut why = Vec::new();
    for base in endpoints(name, mirrors) {
        match fetch_from(reg, cache, name, platform, &base).await {
            Ok(c) => return Ok((c, true)),
            Err(Attempt::Refused(e)) => return Err(e),
            Err(Attempt::Unreachable(w)) => why.push(format!("{base}: {w}")),
        }
    }
    Err(unreachable(name, why.join("; ")))
}

enum Attempt {
    /// Try the next source.
    Unreachable(String),
    /// Content that does not match its digest: stop.
    Refused(Error),
}

async fn fetch_from(
    reg: &Registry,
    cache: &Path,
    name: &ImageName,
    platform: &str,
    base: &str,
) -> std::result::Result<Cached, Attempt> {
    let u = |e: String| Attempt::Unreachable(e);
    let reference = name
        .digest
        .clone()
        .or_else(|| name.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let url = format!("{base}/v2/{}/manifests/{reference}", name.path);
    let accept = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];
    let resp = reg.get(&url, &accept).await.map_err(u)?;
    if !resp.status().is_success() {
        return Err(u(format!("{url} answered {}", resp.status())));
    }
    let media = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let body = resp
        .bytes()
        .await
        .map_err(|e| u(crate::error::error_chain(&e)))?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
    if let Some(pin) = &name.digest
        && *pin != digest
    {
        return Err(Attempt::Refused(mismatch(format!(
            "{url} sent a manifest whose digest is {digest}, not the pinned {pin}"
        ))));
    }
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| u(format!("{url} sent a manifest that is not JSON: {e}")))?;
    let media = if media.is_empty() || media == "application/json" {
        doc.get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or(OCI_MANIFEST)
            .to_string()
    } else {
        media
    };
    let index = Descriptor {
        media_type: media.clone(),
        digest: digest.clone(),
        size: body.len() as u64,
    };
    put_blob(cache, &digest, &body).map_err(Attempt::Refused)?;
    let (manifest_desc, manifest) = if media == OCI_INDEX || media == DOCKER_LIST {
        let entry = doc
            .get("manifests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|m| {
                m.get("platform")
                    .is_some_and(|p| platform_matches(p, platform))
            })
            .ok_or_else(|| u(format!("{name} has no image for {platform}")))?;
        let d: Descriptor = serde_json::from_value(entry.clone())
            .map_err(|e| u(format!("a bad entry in the index of {name}: {e}")))?;
        let url = format!("{base}/v2/{}/manifests/{}", name.path, d.digest);
        let resp = reg.get(&url, &[d.media_type.as_str()]).await.map_err(u)?;
        if !resp.status().is_success() {
            return Err(u(format!("{url} answered {}", resp.status())));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| u(crate::error::error_chain(&e)))?;
        check(&url, &body, &d).map_err(Attempt::Refused)?;
        put_blob(cache, &d.digest, &body).map_err(Attempt::Refused)?;
        let doc: Value =
            serde_json::from_slice(&body).map_err(|e| u(format!("{url} is not JSON: {e}")))?;
        (d, doc)
    } else {
        (index.clone(), doc)
    };
    let mut blobs = vec![manifest_desc];
    let config = manifest
        .get("config")
        .cloned()
        .ok_or_else(|| u(format!("the manifest of {name} has no config")))?;
    let layers = manifest
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for d in std::iter::once(config).chain(layers) {
        let d: Descriptor = serde_json::from_value(d)
            .map_err(|e| u(format!("a bad descriptor in the manifest of {name}: {e}")))?;
        download_blob(reg, cache, base, name, &d).await?;
        blobs.push(d);
    }
    let entry = Cached {
        name: name.clone(),
        platform: platform.to_string(),
        index,
        blobs,
    };
    write_record(cache, &entry).map_err(Attempt::Refused)?;
    Ok(entry)
}

fn check(url: &str, body: &[u8], d: &Descriptor) -> Result<()> {
    let got = format!("sha256:{}", hex::encode(Sha256::digest(body)));
    if got != d.digest || body.len() as u64 != d.size {
        return Err(mismatch(format!(
            "{url} sent {} bytes with digest {got}, not the {} bytes of {} its manifest names",
            body.len(),
            d.size,
            d.digest
        )));
    }
    Ok(())
}

/// How old a `.part.*` file must be before `sweep` takes it for the leftover of a fetch
/// that was killed (a fetch running beside this one writes its own, younger ones).
const STALE_PART: Duration = Duration::from_secs(3600);

/// Removes what killed fetches left: `.part.*` files older than `STALE_PART` (nothing
/// reads them; a clean stop removes its own at once).
pub fn sweep(cache: &Path) {
    let root = cache_root(cache);
    for dir in [root.clone(), root.join("refs"), root.join("blobs/sha256")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_PART);
            if stale && e.file_name().to_string_lossy().starts_with(".part.") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn staging(cache: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = cache_root(cache).join("blobs/sha256");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::internal(format!("failed to create {}: {e}", dir.display())))?;
    std::fs::write(
        cache_root(cache).join("oci-layout"),
        "{\"imageLayoutVersion\":\"1.0.0\"}",
    )
    .map_err(|e| Error::internal(format!("failed to write the image cache: {e}")))?;
    tempfile::Builder::new()
        .prefix(".part.")
        .tempfile_in(&dir)
        .map_err(|e| Error::internal(format!("failed to write in {}: {e}", dir.display())))
}

fn put_blob(cache: &Path, digest: &str, body: &[u8]) -> Result<()> {
    let dest = blob_path(cache, digest)?;
    let mut tmp = staging(cache)?;
    tmp.write_all(body)
        .map_err(|e| Error::internal(format!("failed to write {}: {e}", dest.display())))?;
    tmp.persist(&dest)
        .map_err(|e| Error::internal(format!("failed to write {}: {e}", dest.display())))?;
    Ok(())
}

async fn download_blob(
    reg: &Registry,
    cache: &Path,
    base: &str,
    name: &ImageName,
    d: &Descriptor,
) -> std::result::Result<(), Attempt> {
    let dest = blob_path(cache, &d.digest).map_err(Attempt::Refused)?;
    if sha256_of_file(&dest).is_ok_and(|g| g == d.digest) {
        return Ok(());
    }
    let url = format!("{base}/v2/{}/blobs/{}", name.path, d.digest);
    let resp = reg.get(&url, &[]).await.map_err(Attempt::Unreachable)?;
    if !resp.status().is_success() {
        return Err(Attempt::Unreachable(format!(
            "{url} answered {}",
            resp.status()
        )));
    }
    let mut tmp = staging(cache).map_err(Attempt::Refused)?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut resp = resp;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Attempt::Unreachable(crate::error::error_chain(&e)))?
    {
        n += chunk.len() as u64;
        if n > d.size {
            break;
        }
        h.update(&chunk);
        tmp.write_all(&chunk).map_err(|e| {
            Attempt::Refused(Error::internal(format!(
                "failed to write the image cache: {e}"
            )))
        })?;
    }
    let got = format!("sha256:{}", hex::encode(h.finalize()));
    if got != d.digest || n != d.size {
        return Err(Attempt::Refused(mismatch(format!(
            "{url} sent {n} bytes with digest {got}, not the {} bytes of {} the manifest of {name} names",
            d.size, d.digest
        ))));
    }
    tmp.persist(&dest).map_err(|e| {
        Attempt::Refused(Error::internal(format!(
            "failed to write {}: {e}",
            dest.display()
        )))
    })?;
    Ok(())
}

fn write_record(cache: &Path, entry: &Cached) -> Result<()> {
    let path = record_path(cache, &entry.name);
    let dir = path.parent().expect("refs/ has a parent");
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::internal(format!("failed to create {}: {e}", dir.display())))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".part.")
        .tempfile_in(dir)
        .map_err(|e| Error::internal(format!("failed to write in {}: {e}", dir.display())))?;
    let text = serde_json::to_string_pretty(entry).expect("a record serializes");
    tmp.write_all(text.as_bytes())
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::internal(format!("failed to write {}: {e}", path.display())))?;
    tmp.persist(&path)
        .map_err(|e| Error::internal(format!("failed to write {}: {e}", path.display())))?;
    Ok(())
}

/// The bytes of an OCI-layout tar holding `entry` for its platform, named `names`
/// (each an `io.containerd.image.name` annotation on the index's descriptor in
/// index.json, which containerd's importer turns into an image record), blobs streamed
/// from the cache.
pub fn layout_tar(
    cache: &Path,
    entry: &Cached,
    names: &[String],
) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
    let manifests: Vec<Value> = names
        .iter()
        .map(|n| {
            let mut annotations = serde_json::json!({ "io.containerd.image.name": n });
            if let Some((_, tag)) = n.rsplit_once(':').filter(|_| !n.contains('@')) {
                annotations["org.opencontainers.image.ref.name"] = tag.into();
            }
            serde_json::json!({
                "mediaType": entry.index.media_type,
                "digest": entry.index.digest,
                "size": entry.index.size,
                "annotations": annotations,
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    enum Part {
        Mem(Bytes),
        File(PathBuf),
    }
    let header = |path: &str, size: u64| -> Result<Bytes> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)
            .map_err(|e| Error::internal(format!("tar path {path}: {e}")))?;
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        Ok(Bytes::copy_from_slice(h.as_bytes()))
    };
    let pad = |size: u64| Bytes::from(vec![0u8; ((512 - size % 512) % 512) as usize]);
    let mut parts = Vec::new();
    for (path, data) in [
        (
            "oci-layout",
            Bytes::from_static(b"{\"imageLayoutVersion\":\"1.0.0\"}"),
        ),
        ("index.json", Bytes::from(index.to_string())),
    ] {
        parts.push(Part::Mem(header(path, data.len() as u64)?));
        let n = data.len() as u64;
        parts.push(Part::Mem(data));
        parts.push(Part::Mem(pad(n)));
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in std::iter::once(&entry.index).chain(&entry.blobs) {
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        let hex = hex_of(&d.digest).ok_or_else(|| Error::internal("bad digest"))?;
        parts.push(Part::Mem(header(&format!("blobs/sha256/{hex}"), d.size)?));
        parts.push(Part::File(blob_path(cache, &d.digest)?));
        parts.push(Part::Mem(pad(d.size)));
    }
    parts.push(Part::Mem(Bytes::from(vec![0u8; 1024])));
    Ok(futures::stream::iter(parts)
        .map(|p| match p {
            Part::Mem(b) => futures::stream::once(async move { Ok(b) }).boxed(),
            Part::File(path) => futures::stream::once(async move {
                tokio::fs::File::open(path)
                    .await
                    .map(tokio_util::io::ReaderStream::new)
            })
            .try_flatten()
            .boxed(),
        })
        .flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny HTTP/1.1 server: each request's head goes to `answer`, whose reply is
    /// written back; every head is recorded.
    async fn serve(
        answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
    ) -> (std::net::SocketAddr, std::sync::Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let answer = std::sync::Arc::new(answer);
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let answer = answer.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    loop {
                        let mut head = Vec::new();
                        let mut b = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            if s.read(&mut b).await.unwrap_or(0) == 0 {
                                return;
                            }
                            head.push(b[0]);
                            // A TLS ClientHello to this plain server: a bad request, as
                            // Go's net/http (the registry's server) answers it.
                            if head == [0x16] {
                                let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").await;
                                return;
                            }
                        }
                        let head = String::from_utf8_lossy(&head).into_owned();
                        log.lock().unwrap().push(head.clone());
                        if s.write_all(&answer(&head)).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    fn reply(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        out
    }

    /// The distribution protocol as Docker Hub and quay.io speak it: a 401 with a Bearer
    /// challenge, an anonymous token from the realm (service and scope passed on), the
    /// token on the retried requests, and a blob answered by a redirect to another host
    /// (the CDN), which gets no Authorization header. A single-platform manifest is
    /// cached as it is.
    #[tokio::test]
    async fn anonymous_tokens_and_blob_redirects_to_a_cdn() {
        let layer = b"layer bytes".to_vec();
        let layer_d = format!("sha256:{}", hex::encode(Sha256::digest(&layer)));
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        let config_d = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_d, "size": layer.len()}],
        }))
        .unwrap();
        let blobs: HashMap<String, Vec<u8>> =
            HashMap::from([(config_d.clone(), config), (layer_d.clone(), layer)]);
        let (cdn, cdn_seen) = serve(move |head| {
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let d = path.trim_start_matches("/cdn/");
            match blobs.get(d) {
                Some(b) => reply("200 OK", &[], b),
                None => reply("404 Not Found", &[], b""),
            }
        })
        .await;
        let realm_port = std::sync::Arc::new(Mutex::new(0u16));
        let port = realm_port.clone();
        let (reg, reg_seen) = serve(move |head| {
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let p = *port.lock().unwrap();
            if path.starts_with("/token?") {
                return reply("200 OK", &[], br#"{"token":"t0k3n"}"#);
            }
            if !head.to_ascii_lowercase().contains("authorization: bearer t0k3n") {
                return reply(
                    "401 Unauthorized",
                    &[(
                        "WWW-Authenticate",
                        format!(r#"Bearer realm="http://127.0.0.1:{p}/token",service="reg.test",scope="repository:team/app:pull""#),
                    )],
                    b"",
                );
            }
            if path.starts_with("/v2/team/app/manifests/") {
                return reply("200 OK", &[("Content-Type", OCI_MANIFEST.to_string())], &manifest);
            }
            if let Some(d) = path.strip_prefix("/v2/team/app/blobs/") {
                return reply("307 Temporary Redirect", &[("Location", format!("http://{cdn}/cdn/{d}"))], b"");
            }
            reply("404 Not Found", &[], b"")
        })
        .await;
        *realm_port.lock().unwrap() = reg.port();
        let cache = tempfile::tempdir().unwrap();
        let name = ImageName::parse(&format!("127.0.0.1:{}/team/app:1", reg.port())).unwrap();
        let r = Registry::new(&Proxies::default()).unwrap();
        // https is tried first and fails against this plain server; then http.
        let (entry, fresh) = fetch(&r, cache.path(), &name, "linux/amd64", &[])
            .await
            .unwrap();
        assert!(fresh);
        assert_eq!(entry.index.media_type, OCI_MANIFEST);
        assert_eq!(entry.blobs.len(), 3, "{entry:?}");
        assert!(
            cached(cache.path(), &name, "linux/amd64")
                .unwrap()
                .is_some()
        );
        let seen = reg_seen.lock().unwrap().join("\n");
        assert!(
            seen.contains("GET /token?service=reg.test&scope=repository%3Ateam%2Fapp%3Apull"),
            "{seen}"
        );
        let cdn_seen = cdn_seen.lock().unwrap().clone();
        assert_eq!(cdn_seen.len(), 2, "{cdn_seen:?}");
        for h in &cdn_seen {
            assert!(!h.to_ascii_lowercase().contains("authorization"), "{h}");
        }
    }

    #[test]
    fn sweep_removes_only_stale_partial_files() {
        let cache = tempfile::tempdir().unwrap();
        let blobs = cache_root(cache.path()).join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let old = blobs.join(".part.old");
        let young = blobs.join(".part.young");
        let blob = blobs.join("a".repeat(64));
        for f in [&old, &young, &blob] {
            std::fs::write(f, b"x").unwrap();
        }
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        for f in [&old, &blob] {
            std::fs::File::options()
                .write(true)
                .open(f)
                .unwrap()
                .set_modified(two_hours_ago)
                .unwrap();
        }
        sweep(cache.path());
        assert!(!old.exists());
        assert!(young.exists(), "a running fetch's file stays");
        assert!(blob.exists(), "blobs stay");
    }

    #[test]
    fn bearer_challenges_parse() {
        let p = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/postgres:pull""#,
        )
        .unwrap();
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/postgres:pull");
        assert!(parse_challenge("Basic realm=\"x\"").is_none());
    }

    #[test]
    fn endpoints_put_mirrors_first_for_docker_hub_and_http_last_for_loopback() {
        let hub = ImageName::parse("redis:7").unwrap();
        assert_eq!(
            endpoints(&hub, &["https://mirror.example/".into()]),
            ["https://mirror.example", "https://registry-1.docker.io"]
        );
        let q = ImageName::parse("quay.io/jetstack/x:1").unwrap();
        assert_eq!(endpoints(&q, &[]), ["https://quay.io"]);
        let set = Some("docker.io=http://127.0.0.1:1/, quay.io=https://q.corp,bad");
        assert_eq!(mirrors_for(set, "quay.io"), ["https://q.corp"]);
        assert_eq!(mirrors_for(set, "docker.io"), ["http://127.0.0.1:1"]);
        assert!(mirrors_for(set, "ghcr.io").is_empty());
        let l = ImageName::parse("127.0.0.1:5000/x:1").unwrap();
        assert_eq!(
            endpoints(&l, &[]),
            ["https://127.0.0.1:5000", "http://127.0.0.1:5000"]
        );
    }

    #[test]
    fn platforms_match_on_os_and_architecture() {
        let p = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert!(platform_matches(
            &p(r#"{"os":"linux","architecture":"amd64"}"#),
            "linux/amd64"
        ));
        assert!(platform_matches(
            &p(r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#),
            "linux/arm64"
        ));
        assert!(!platform_matches(
            &p(r#"{"os":"linux","architecture":"arm","variant":"v7"}"#),
            "linux/arm64"
        ));
        assert!(!platform_matches(
            &p(r#"{"os":"windows","architecture":"amd64"}"#),
            "linux/amd64"
        ));
    }
}
