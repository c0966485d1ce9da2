//! Workload images (issue 14): downloaded byte for byte from a real registry (Debian's
//! docker-registry, holding a hand-built two-platform OCI index) into pulsedev's image
//! cache for the node's platform only, every digest verified, then imported into a
//! kind node stand-in whose `ctr` behaves as containerd's (support::oci::FAKE_CTR).

use std::collections::BTreeSet;

use bytes::Bytes;
use pulsedev::images::oci::{self, Registry};
use pulsedev::images::upstream::{ImageName, NodeImport};
use pulsedev::offline::Proxies;

use crate::support::registry::LocalRegistry;
use crate::support::{build, docker, oci as fixture};

fn cached_blobs(cache: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(oci::cache_root(cache).join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn sh(script: &str) -> Vec<String> {
    ["/bin/busybox", "sh", "-c", script]
        .map(String::from)
        .to_vec()
}

#[tokio::test]
async fn fetch_caches_the_node_platform_verified_and_up_imports_it_into_the_node() {
    let Some(engine) =
        docker::engine("fetch_caches_the_node_platform_verified_and_up_imports_it_into_the_node")
            .await
    else {
        return;
    };
    let registry = LocalRegistry::start();
    let base = format!("http://127.0.0.1:{}", registry.port);
    let nonce = build::nonce();
    let pushed = fixture::push_index(&base, "library/postgres", "17-alpine", &nonce).await;
    let platform = pulsedev::docker::platform(&engine.info().await.unwrap());
    let arch = platform.trim_start_matches("linux/").to_string();
    let other = if arch == "amd64" { "arm64" } else { "amd64" };
    let reg = Registry::new(&Proxies::default()).unwrap();
    // The refs name Docker Hub, as manifests/dev does; the registry is their mirror.
    let setting = format!("docker.io={base}");
    let pinned = ImageName::parse(&format!("postgres:17-alpine@{}", pushed.index)).unwrap();
    let mirrors = oci::mirrors(&pinned, Some(&setting), &[]);
    let cache = tempfile::tempdir().unwrap();

    let (entry, fresh) = oci::fetch(&reg, cache.path(), &pinned, &platform, &mirrors)
        .await
        .unwrap();
    assert!(fresh);
    assert_eq!(entry.index.digest, pushed.index);
    // The index and the node platform's manifest, config and layer; nothing of the other.
    let want: BTreeSet<String> = std::iter::once(&pushed.index)
        .chain(pushed.platforms[&arch].iter())
        .map(|d| d.trim_start_matches("sha256:").to_string())
        .collect();
    assert_eq!(cached_blobs(cache.path()), want);
    for d in &pushed.platforms[other] {
        assert!(!want.contains(d.trim_start_matches("sha256:")));
    }
    // Again: from the cache, verified, nothing downloaded.
    let (_, fresh) = oci::fetch(&reg, cache.path(), &pinned, &platform, &mirrors)
        .await
        .unwrap();
    assert!(!fresh);
    // A tag-only ref resolves to the digest, recorded.
    let tagged = ImageName::parse("postgres:17-alpine").unwrap();
    let (t, _) = oci::fetch(&reg, cache.path(), &tagged, &platform, &mirrors)
        .await
        .unwrap();
    assert_eq!(t.index.digest, pushed.index);

    // A pin the registry's index does not have: refused, nothing recorded.
    let wrong = ImageName::parse(&format!("postgres:17-alpine@sha256:{}", "0".repeat(64))).unwrap();
    let fresh_cache = tempfile::tempdir().unwrap();
    let e = oci::fetch(&reg, fresh_cache.path(), &wrong, &platform, &mirrors)
        .await
        .unwrap_err();
    assert!(e.message.contains("answered 404"), "{e:?}");
    assert!(
        oci::cached(fresh_cache.path(), &wrong, &platform)
            .unwrap()
            .is_none()
    );

    // A blob the registry serves tampered with: refused with tool-checksum-mismatch,
    // and the cache holds no entry for the image.
    let layer = &pushed.platforms[&arch][2];
    let file = fixture::registry_blob_file(&registry.root, layer);
    let mut bytes = std::fs::read(&file).unwrap();
    let original = bytes.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let e = oci::fetch(&reg, fresh_cache.path(), &pinned, &platform, &mirrors)
        .await
        .unwrap_err();
    assert_eq!(e.id(), "tool-checksum-mismatch", "{e:?}");
    assert!(e.message.contains(layer), "{}", e.message);
    assert!(
        oci::cached(fresh_cache.path(), &pinned, &platform)
            .unwrap()
            .is_none()
    );
    let left: Vec<_> = std::fs::read_dir(oci::cache_root(fresh_cache.path()).join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !left.iter().any(|n| n.starts_with('.')),
        "partial files: {left:?}"
    );
    assert!(!left.contains(&layer.trim_start_matches("sha256:").to_string()));
    std::fs::write(&file, &original).unwrap();

    // A cached blob that no longer matches: removed with its record, and reported.
    let cached_layer = oci::cache_root(cache.path())
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    std::fs::write(&cached_layer, b"tampered").unwrap();
    let e = oci::cached(cache.path(), &pinned, &platform).unwrap_err();
    assert_eq!(e.id(), "tool-checksum-mismatch");
    assert!(!cached_layer.exists());
    assert!(
        oci::cached(cache.path(), &pinned, &platform)
            .unwrap()
            .is_none()
    );
    let (entry, fresh) = oci::fetch(&reg, cache.path(), &pinned, &platform, &mirrors)
        .await
        .unwrap();
    assert!(fresh, "downloaded again");

    // Into a node stand-in: the names CRI resolves the pod's ref by.
    let ctx = tempfile::tempdir().unwrap();
    fixture::node_context(ctx.path(), &nonce);
    let image = build::build(&engine, "ctrnode", ctx.path()).await;
    let node = format!("pdtest-ctrnode-{nonce}");
    crate::fakes::run_container_of(&engine.docker, &image.reference(), &node, &[]).await;
    let import = NodeImport::detect(&engine, vec![node.clone()], &platform)
        .await
        .unwrap();
    let sent = import.import(cache.path(), &entry).await;
    let read = |script: &'static str| {
        let engine = &engine;
        let node = &node;
        async move {
            pulsedev::images::archive::exec_with_stdin(
                &engine.docker,
                node,
                &sh(script),
                futures::stream::empty::<Result<Bytes, std::io::Error>>(),
            )
            .await
            .unwrap()
            .stdout
        }
    };
    let log = read("/bin/busybox cat /data/ctr.log").await;
    let sent = sent.unwrap_or_else(|e| panic!("{e:?}\n{log}"));
    assert!(sent > 0);
    let images = read("/bin/busybox cat /data/images").await;
    assert_eq!(
        images.lines().collect::<Vec<_>>(),
        [
            format!("docker.io/library/postgres@{}", pushed.index),
            "docker.io/library/postgres:17-alpine".to_string()
        ],
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "--namespace=k8s.io images import --platform {platform} --digests --snapshotter=overlayfs -"
        )),
        "{log}"
    );
    // A second `up`: the node lists it, nothing is sent.
    assert_eq!(import.import(cache.path(), &entry).await.unwrap(), 0);
    assert_eq!(
        read("/bin/busybox cat /data/ctr.log")
            .await
            .matches("images import")
            .count(),
        1
    );

    // A node without it and a cached blob that no longer matches: the import checks
    // every byte first, refuses with tool-checksum-mismatch and drops the entry.
    let _ = pulsedev::images::archive::exec_with_stdin(
        &engine.docker,
        &node,
        &sh("/bin/busybox rm -f /data/images"),
        futures::stream::empty::<Result<Bytes, std::io::Error>>(),
    )
    .await
    .unwrap();
    let record = oci::record(cache.path(), &pinned, &platform).unwrap();
    std::fs::write(&cached_layer, b"tampered again").unwrap();
    let e = import.import(cache.path(), &record).await.unwrap_err();
    assert_eq!(e.id(), "tool-checksum-mismatch", "{e:?}");
    assert!(oci::record(cache.path(), &pinned, &platform).is_none());
    assert_eq!(
        read("/bin/busybox cat /data/ctr.log")
            .await
            .matches("images import")
            .count(),
        1,
        "nothing tampered reached the node"
    );

    // The stand-in is no accomplice: an archive whose index is there but not the
    // node platform's manifest is refused, as containerd's import refuses it.
    let index_bytes = std::fs::read(
        oci::cache_root(cache.path())
            .join("blobs/sha256")
            .join(pushed.index.trim_start_matches("sha256:")),
    )
    .unwrap();
    let index_json = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": fixture::OCI_INDEX,
            "digest": pushed.index,
            "size": index_bytes.len(),
            "annotations": {"io.containerd.image.name": "docker.io/library/broken:1"},
        }],
    })
    .to_string();
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in [
        (
            "oci-layout".to_string(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_string(), index_json.into_bytes()),
        (
            format!(
                "blobs/sha256/{}",
                pushed.index.trim_start_matches("sha256:")
            ),
            index_bytes,
        ),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    let tar = Bytes::from(tar.into_inner().unwrap());
    let r = pulsedev::images::archive::exec_with_stdin(
        &engine.docker,
        &node,
        &[
            "ctr",
            "--namespace=k8s.io",
            "images",
            "import",
            "--platform",
            &platform,
            "--digests",
            "--snapshotter=overlayfs",
            "-",
        ]
        .map(String::from),
        futures::stream::once(async move { Ok::<_, std::io::Error>(tar) }),
    )
    .await
    .unwrap();
    assert_eq!(r.exit_code, 1, "{r:?}");
    assert!(r.stderr.contains("not found"), "{r:?}");
    assert!(
        !read("/bin/busybox cat /data/images")
            .await
            .contains("broken")
    );

    let _ = engine
        .docker
        .remove_container(
            &node,
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
}
