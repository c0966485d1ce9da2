//! Upstream images for tests: a multi-platform OCI index built by hand (one tiny image
//! per platform, a FROM-scratch layer each) pushed through the distribution HTTP API
//! into a real registry, so the registry's own validation holds (an image manifest is
//! accepted only when its blobs are there, an index only when its manifests are:
//! distribution registry/storage/manifestlisthandler.go and ocimanifesthandler.go);
//! and a kind node stand-in whose `ctr` imports OCI-layout archives as containerd's
//! does.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// What was pushed: the index digest, and per architecture the digests of its
/// manifest, config and layer.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub index: String,
    pub platforms: BTreeMap<String, [String; 3]>,
}

async fn upload(http: &reqwest::Client, base: &str, repo: &str, body: Vec<u8>) -> String {
    let d = digest(&body);
    let r = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "start an upload: {r:?}");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let location = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = http
        .put(format!("{location}{sep}digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "finish the upload of {d}: {r:?}");
    d
}

async fn put_manifest(
    http: &reqwest::Client,
    base: &str,
    repo: &str,
    reference: &str,
    media: &str,
    body: Vec<u8>,
) -> String {
    let d = digest(&body);
    let r = http
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("content-type", media)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    assert_eq!(status, 201, "put manifest {repo}:{reference}: {text}");
    d
}

/// One layer: a tar holding `/id` with `content`.
fn layer(content: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "id", content.as_bytes()).unwrap();
    b.into_inner().unwrap()
}

/// Pushes an index of linux/amd64 and linux/arm64 images to `repo:tag` at the registry
/// at `base` (http://127.0.0.1:port).
pub async fn push_index(base: &str, repo: &str, tag: &str, nonce: &str) -> Pushed {
    let http = reqwest::Client::new();
    let mut entries = Vec::new();
    let mut platforms = BTreeMap::new();
    for arch in ["amd64", "arm64"] {
        let l = layer(&format!("{repo} {arch} {nonce}\n"));
        let diff = digest(&l);
        let layer_size = l.len();
        let layer_digest = upload(&http, base, repo, l).await;
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/id"]},
            "rootfs": {"type": "layers", "diff_ids": [diff]},
        }))
        .unwrap();
        let config_size = config.len();
        let config_digest = upload(&http, base, repo, config).await;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
        }))
        .unwrap();
        let size = manifest.len();
        let md = digest(&manifest);
        put_manifest(&http, base, repo, &md, OCI_MANIFEST, manifest).await;
        entries.push(json!({
            "mediaType": OCI_MANIFEST,
            "digest": md,
            "size": size,
            "platform": {"architecture": arch, "os": "linux"},
        }));
        platforms.insert(arch.to_string(), [md, config_digest, layer_digest]);
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries,
    }))
    .unwrap();
    let index = put_manifest(&http, base, repo, tag, OCI_INDEX, index).await;
    Pushed { index, platforms }
}

/// The file a registry (distribution 2.8, filesystem driver) keeps a blob's bytes in
/// (registry/storage/paths.go, `blobDataPathSpec`).
pub fn registry_blob_file(root: &Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    root.join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// `containerd config dump` of a kind node (containerd 2.x, config version 3).
pub const CONFIG_DUMP: &str = "version = 3\nroot = \"/var/lib/containerd\"\n[plugins]\n  [plugins.'io.containerd.cri.v1.images']\n    snapshotter = 'overlayfs'\n";

/// A stand-in for containerd's `ctr` in a kind node, for the two commands pulsedev
/// runs there, each as the real one behaves (containerd v2, cmd/ctr/commands/images):
/// - `images ls -q name==REF` (list.go with the `name==` filter) prints the names of
///   the images that match, nothing when none does, exit 0.
/// - `images import [--platform P] [--digests] [--snapshotter=S] -` (import.go, through
///   the transfer service: core/transfer/local/import.go, core/transfer/image/imagestore.go,
///   core/images/archive/importer.go; `--local` through client/import.go): reads a tar
///   from stdin; an OCI layout without index.json is refused ("missing index.json");
///   every blob is stored under its digest and checked against it (a mismatch fails the
///   commit); the walk from index.json goes through the index to the entries of the
///   chosen platform only (`images.FilterPlatforms`), so other platforms' manifests may
///   be absent, but a missing blob of the chosen one fails ("content digest …: not
///   found"); each index.json entry's `io.containerd.image.name` annotation becomes an
///   image record (imagestore.go `imageName`; the `import-<date>@<digest>` names
///   `--digests` adds are not kept here: pulsedev never asks for them).
///
/// Every call is logged to /data/ctr.log; image names go to /data/images.
pub const FAKE_CTR: &str = r#"#!/bin/busybox sh
bb=/bin/busybox
echo "$*" >> /data/ctr.log
[ "$1" = "--namespace=k8s.io" ] || { echo "ctr: this stand-in serves the k8s.io namespace only" >&2; exit 2; }
shift
case "$1 $2" in
"images ls")
  [ "$3" = -q ] || exit 2
  want="${4#name==}"
  [ -f /data/images ] && $bb grep -Fx "$want" /data/images
  exit 0 ;;
"images import")
  shift 2
  platform=linux/amd64
  while [ $# -gt 1 ]; do
    case "$1" in
      --platform) platform="$2"; shift 2 ;;
      --digests|--snapshotter=*) shift ;;
      *) echo "ctr: flag provided but not defined: $1" >&2; exit 1 ;;
    esac
  done
  [ "$1" = - ] || exit 1
  arch="${platform#linux/}"
  d=$($bb mktemp -d -p /data)
  $bb tar -x -C "$d" || { echo "ctr: failed to read the archive" >&2; exit 1; }
  [ -f "$d/index.json" ] || { echo "ctr: missing index.json in OCI layout 1.0.0" >&2; exit 1; }
  blob() {
    f="$d/blobs/sha256/${1#sha256:}"
    [ -f "$f" ] || { echo "ctr: content digest $1: not found" >&2; return 1; }
    [ "$($bb sha256sum "$f" | $bb cut -d' ' -f1)" = "${1#sha256:}" ] || { echo "ctr: unexpected commit digest for $1" >&2; return 1; }
    echo "$f"
  }
  digests() { $bb grep -o '"digest":"sha256:[0-9a-f]*"' "$1" | $bb cut -d'"' -f4; }
  for top in $(digests "$d/index.json" | $bb sort -u); do
    f=$(blob "$top") || exit 1
    if $bb grep -q '"manifests"' "$f"; then
      manifests=$($bb sed 's/{"mediaType"/\n{"mediaType"/g' "$f" | $bb grep "\"architecture\":\"$arch\"" | $bb grep '"os":"linux"' | $bb grep -o '"digest":"sha256:[0-9a-f]*"' | $bb cut -d'"' -f4)
      [ -n "$manifests" ] || { echo "ctr: no match for platform in manifest: not found" >&2; exit 1; }
    else
      manifests="$top"
    fi
    for m in $manifests; do
      mf=$(blob "$m") || exit 1
      for x in $(digests "$mf"); do blob "$x" > /dev/null || exit 1; done
    done
  done
  $bb grep -o '"io.containerd.image.name":"[^"]*"' "$d/index.json" | $bb cut -d'"' -f4 >> /data/images
  $bb rm -rf "$d"
  exit 0 ;;
esac
echo "ctr: this stand-in does not know: $*" >&2
exit 2
"#;

/// A build context for a kind node stand-in: busybox, the fake `ctr` and a
/// `containerd` that answers `config dump`, sleeping as its main process.
pub fn node_context(dir: &Path, nonce: &str) {
    std::fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    std::fs::write(dir.join("nonce"), nonce).unwrap();
    std::fs::write(dir.join("dump.toml"), CONFIG_DUMP).unwrap();
    std::fs::write(
        dir.join("containerd"),
        "#!/bin/busybox sh\n[ \"$1 $2\" = \"config dump\" ] || exit 2\nexec /bin/busybox cat /data/dump.toml\n",
    )
    .unwrap();
    std::fs::write(dir.join("ctr"), FAKE_CTR).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in ["containerd", "ctr"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY containerd ctr /usr/local/bin/\nCOPY dump.toml nonce /data/\nCMD [\"/bin/busybox\", \"sleep\", \"3600\"]\n",
    )
    .unwrap();
}
