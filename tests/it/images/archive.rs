//! Archive delivery against a real engine: an exported image streamed over an
//! attached exec into a running busybox container (built FROM scratch), checking the
//! bytes that arrived, that EOF reaches the process, and that its exit code is read.

use crate::support::{build, docker};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use pulsedev::docker::Engine;
use pulsedev::images::LocalImage;
use pulsedev::images::archive::{self, ArchiveImport};
use pulsedev::images::deliver::Deliver;
use sha2::{Digest, Sha256};

fn sh(script: &str) -> Vec<String> {
    ["/bin/busybox", "sh", "-c", script]
        .map(String::from)
        .to_vec()
}

/// An image with busybox and `extra` bytes of noise, and a running container of it.
async fn node(engine: &Engine, extra: usize) -> (LocalImage, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let nonce = build::nonce();
    std::fs::copy("/bin/busybox", dir.path().join("busybox")).unwrap();
    std::fs::write(dir.path().join("noise"), build::noise(extra, 99)).unwrap();
    std::fs::write(dir.path().join("nonce"), &nonce).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY noise nonce /data/\nCMD [\"/bin/busybox\", \"sleep\", \"3600\"]\n",
    )
    .unwrap();
    let image = build::build(engine, "node", dir.path()).await;
    let name = format!("pdtest-node-{nonce}");
    crate::fakes::run_container_of(&engine.docker, &image.reference(), &name, &[]).await;
    (image, name, dir)
}

async fn cleanup(engine: &Engine, container: &str, image: &LocalImage) {
    let _ = engine
        .docker
        .remove_container(
            container,
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    build::remove_image(engine, &image.reference()).await;
}

#[tokio::test]
async fn an_exported_image_arrives_intact_with_eof_and_exit_code() {
    let Some(engine) =
        docker::engine("an_exported_image_arrives_intact_with_eof_and_exit_code").await
    else {
        return;
    };
    let (image, container, _dir) = node(&engine, 8 << 20).await;

    // Hash the export as it streams past, on its way into the container.
    let seen = Arc::new(Mutex::new((Sha256::new(), 0u64)));
    let tap = seen.clone();
    let export = engine
        .docker
        .export_image(&image.reference())
        .map(move |chunk| {
            if let Ok(c) = &chunk {
                let mut t = tap.lock().unwrap();
                t.0.update(c);
                t.1 += c.len() as u64;
            }
            chunk
        });
    // sha256sum prints only after EOF; the exit code 7 must come back.
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        archive::exec_with_stdin(
            &engine.docker,
            &container,
            &sh("/bin/busybox sha256sum; /bin/busybox echo done >&2; exit 7"),
            export,
        ),
    )
    .await
    .expect("no hang")
    .unwrap();
    let (hasher, bytes) = std::mem::take(&mut *seen.lock().unwrap());
    let want = hex::encode(hasher.finalize());
    assert_eq!(r.exit_code, 7, "{r:?}");
    assert!(r.stdin_complete);
    assert_eq!(r.sent, bytes);
    assert!(bytes > 8 << 20, "the whole image went through: {bytes}");
    assert_eq!(
        r.stdout.split_whitespace().next(),
        Some(want.as_str()),
        "{r:?}"
    );
    assert_eq!(r.stderr.trim(), "done");

    cleanup(&engine, &container, &image).await;
}

#[tokio::test]
async fn a_process_that_stops_reading_does_not_hang_the_writer() {
    let Some(engine) =
        docker::engine("a_process_that_stops_reading_does_not_hang_the_writer").await
    else {
        return;
    };
    let (image, container, _dir) = node(&engine, 0).await;
    // 64 MiB offered, 10 bytes read.
    let big = futures::stream::iter(
        (0..1024).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 64 * 1024]))),
    );
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        archive::exec_with_stdin(
            &engine.docker,
            &container,
            &sh("/bin/busybox head -c 10 >/dev/null; exit 4"),
            big,
        ),
    )
    .await
    .expect("the writer must not block once the process is gone")
    .unwrap();
    assert_eq!(r.exit_code, 4);
    assert!(!r.stdin_complete);
    assert!(r.sent < 64 << 20);
    cleanup(&engine, &container, &image).await;
}

#[tokio::test]
async fn archive_delivery_imports_once_and_reports_failures() {
    let Some(engine) = docker::engine("archive_delivery_imports_once_and_reports_failures").await
    else {
        return;
    };
    let (image, container, _dir) = node(&engine, 1 << 20).await;
    let import =
        sh("/bin/busybox cat > /data/image.tar && /bin/busybox echo '{ref}' >> /data/imported");
    let present = sh("/bin/busybox grep -qxF '{ref}' /data/imported && /bin/busybox echo yes");
    let a = ArchiveImport::new(
        &engine,
        vec![(container.clone(), "overlayfs".into())],
        "linux/amd64",
    )
    .with_commands(import, present.clone());
    assert_eq!(a.mode(), "archive");
    assert_eq!(a.present(&image).await.unwrap(), None);

    let d = a.deliver(&image).await.unwrap();
    let sent = d.transfer.clone().expect("sent").bytes.unwrap();
    assert!(sent > 1 << 20);
    assert_eq!(
        d.image.to_string(),
        image.reference(),
        "tag + hash, no digest"
    );
    // What arrived is exactly what was sent.
    let size = archive::exec_with_stdin(
        &engine.docker,
        &container,
        &sh("/bin/busybox stat -c %s /data/image.tar"),
        futures::stream::empty::<Result<Bytes, std::io::Error>>(),
    )
    .await
    .unwrap();
    assert_eq!(size.stdout.trim(), sent.to_string());

    // Already there: nothing moves.
    assert!(a.present(&image).await.unwrap().is_some());
    let again = a.deliver(&image).await.unwrap();
    assert_eq!(again.transfer, None);

    // An importer that fails: image-push-failed with its exit code and stderr.
    let failing = ArchiveImport::new(
        &engine,
        vec![(container.clone(), "overlayfs".into())],
        "linux/amd64",
    )
    .with_commands(
        sh("/bin/busybox cat >/dev/null; /bin/busybox echo 'ctr: no space left' >&2; exit 3"),
        sh("exit 1"),
    );
    let e = failing.deliver(&image).await.unwrap_err();
    assert_eq!(e.id(), "image-push-failed");
    assert!(e.message.contains("exited with code 3"), "{}", e.message);
    assert!(
        e.details.iter().any(|d| d.contains("no space left")),
        "{:?}",
        e.details
    );

    cleanup(&engine, &container, &image).await;
}

/// A node whose `containerd config dump` prints `dump` and whose `ctr` records its
/// arguments in /data/ctr.log (an import reads the whole archive; `images ls` lists
/// nothing), like a kind node whose entrypoint switched the snapshotter.
async fn kind_like_node(engine: &Engine, dump: &str) -> (LocalImage, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let nonce = build::nonce();
    std::fs::copy("/bin/busybox", dir.path().join("busybox")).unwrap();
    std::fs::write(dir.path().join("nonce"), &nonce).unwrap();
    std::fs::write(dir.path().join("dump.toml"), dump).unwrap();
    std::fs::write(
        dir.path().join("containerd"),
        "#!/bin/busybox sh\n[ \"$1 $2\" = \"config dump\" ] || exit 2\nexec /bin/busybox cat /data/dump.toml\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ctr"),
        "#!/bin/busybox sh\necho \"$*\" >> /data/ctr.log\ncase \"$*\" in *' images import '*) /bin/busybox cat > /dev/null ;; esac\nexit 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in ["containerd", "ctr"] {
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY containerd ctr /usr/local/bin/\nCOPY dump.toml nonce /data/\nCMD [\"/bin/busybox\", \"sleep\", \"3600\"]\n",
    )
    .unwrap();
    let image = build::build(engine, "kindnode", dir.path()).await;
    let name = format!("pdtest-kindnode-{nonce}");
    crate::fakes::run_container_of(&engine.docker, &image.reference(), &name, &[]).await;
    (image, name, dir)
}

/// The import goes into the snapshotter the node's containerd uses, read from the
/// node as kind reads it (kind v0.32.0: pkg/cluster/nodeutils/util.go), not an
/// assumed `overlayfs`: here `native`, as kind's entrypoint sets it on zfs.
#[tokio::test]
async fn archive_import_uses_the_snapshotter_the_node_reports() {
    let Some(engine) = docker::engine("archive_import_uses_the_snapshotter_the_node_reports").await
    else {
        return;
    };
    let dump = "version = 3\nroot = \"/var/lib/containerd\"\n[plugins]\n  [plugins.'io.containerd.cri.v1.images']\n    snapshotter = 'native'\n";
    let (image, container, _dir) = kind_like_node(&engine, dump).await;
    assert_eq!(
        archive::node_snapshotter(&engine.docker, &container)
            .await
            .unwrap(),
        "native"
    );
    let platform = pulsedev::docker::platform(&engine.info().await.unwrap());
    let a = ArchiveImport::detect(&engine, vec![container.clone()], &platform)
        .await
        .unwrap();
    let d = a.deliver(&image).await.unwrap();
    assert!(d.transfer.is_some());
    let log = archive::exec_with_stdin(
        &engine.docker,
        &container,
        &sh("/bin/busybox cat /data/ctr.log"),
        futures::stream::empty::<Result<Bytes, std::io::Error>>(),
    )
    .await
    .unwrap()
    .stdout;
    let import = log
        .lines()
        .find(|l| l.contains("images import"))
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(
        import,
        format!(
            "--namespace=k8s.io images import --platform {platform} --digests --snapshotter=native -"
        )
    );

    // A node whose containerd cannot say: image-push-failed naming the node.
    let broken = "version = 3\n";
    let (image2, container2, _dir2) = kind_like_node(&engine, broken).await;
    let e = match ArchiveImport::detect(&engine, vec![container2.clone()], &platform).await {
        Ok(_) => panic!("detected a snapshotter in {broken:?}"),
        Err(e) => e,
    };
    assert_eq!(e.id(), "image-push-failed");
    assert!(e.message.contains(&container2), "{}", e.message);
    cleanup(&engine, &container, &image).await;
    cleanup(&engine, &container2, &image2).await;
}
