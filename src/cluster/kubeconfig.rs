//! `pulsedev kubeconfig --merge`: the explicit opt-in that copies a cluster's context
//! from pulsedev's own kubeconfig into the user's, with a backup first. The user's
//! current context changes only with `--use`.

use std::path::{Path, PathBuf};

use kube::config::Kubeconfig;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::state;

/// The kubeconfig kubectl would write to: the first entry of `KUBECONFIG`, else
/// `~/.kube/config`.
pub fn user_kubeconfig(
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> Result<PathBuf> {
    if let Some(first) =
        env("KUBECONFIG").and_then(|v| v.split(':').find(|p| !p.is_empty()).map(PathBuf::from))
    {
        return Ok(first);
    }
    home.map(|h| h.join(".kube/config")).ok_or_else(|| {
        Error::internal("cannot find your kubeconfig: neither KUBECONFIG nor HOME is set")
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Merged {
    pub path: PathBuf,
    pub context: String,
    /// The previous file, copied before the change (none when there was no file).
    pub backup: Option<PathBuf>,
    /// Entries of the same name were replaced (a re-created cluster has new certificates).
    pub replaced: bool,
    pub current_context: Option<String>,
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::ConfigInvalid,
        format!("failed to read the kubeconfig {}: {e}", path.display()),
    )
    .with_hint("fix or move that file, then run the command again; pulsedev did not change it")
}

/// Where `path` really is: its symlinks followed (relative targets against the link's
/// directory), for a target that may not exist yet. More than 40 hops is a loop
/// (Linux's own limit, MAXSYMLINKS).
fn link_target(path: &Path) -> Result<std::path::PathBuf> {
    let mut cur = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&cur)
                    .map_err(|e| state::io_error("read the link", &cur, e))?;
                cur = match cur.parent() {
                    Some(dir) if to.is_relative() => dir.join(to),
                    _ => to,
                };
            }
            _ => return Ok(cur),
        }
    }
    Err(Error::new(
        ErrorKind::ConfigInvalid,
        format!("{} is a loop of symbolic links", path.display()),
    )
    .with_hint("point it at a real file, then run the command again"))
}

/// Copies `context` (with its cluster and user) from `ours` into `user`.
pub fn merge(ours: &Path, user: &Path, context: &str, make_current: bool) -> Result<Merged> {
    let src = Kubeconfig::read_from(ours).map_err(|e| unreadable(ours, e))?;
    let existing = state::read_optional(user)?;
    let mut dst = match &existing {
        Some(text) if !text.trim().is_empty() => {
            Kubeconfig::from_yaml(text).map_err(|e| unreadable(user, e))?
        }
        _ => Kubeconfig {
            api_version: Some("v1".into()),
            kind: Some("Config".into()),
            ..Kubeconfig::default()
        },
    };
    let ctx = src
        .contexts
        .iter()
        .find(|c| c.name == context)
        .cloned()
        .ok_or_else(|| unreadable(ours, format!("it has no context {context}")))?;
    let inner = ctx.context.clone().unwrap_or_default();
    let cluster = src
        .clusters
        .iter()
        .find(|c| c.name == inner.cluster)
        .cloned();
    let user_entry = inner
        .user
        .as_ref()
        .and_then(|u| src.auth_infos.iter().find(|a| &a.name == u).cloned());

    let mut replaced = false;
    dst.contexts.retain(|c| {
        let keep = c.name != ctx.name;
        replaced |= !keep;
        keep
    });
    dst.contexts.push(ctx);
    if let Some(c) = cluster {
        dst.clusters.retain(|x| x.name != c.name);
        dst.clusters.push(c);
    }
    if let Some(u) = user_entry {
        dst.auth_infos.retain(|x| x.name != u.name);
        dst.auth_infos.push(u);
    }
    if make_current {
        dst.current_context = Some(context.to_string());
    }
    let text = serde_saphyr::to_string(&dst)
        .map_err(|e| Error::internal(format!("failed to write a kubeconfig: {e}")))?;

    let backup = match &existing {
        Some(old) => {
            let b = user.with_file_name(format!(
                "{}.pulsedev-backup",
                user.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("config")
            ));
            state::write_private(&b, old.as_bytes())?;
            Some(b)
        }
        None => None,
    };
    // A dotfiles setup keeps ~/.kube/config as a symlink: write through to its target
    // (atomically, beside the target) so the link stays a link.
    state::write_private(&link_target(user)?, text.as_bytes())?;
    Ok(Merged {
        path: user.to_path_buf(),
        context: context.to_string(),
        backup,
        replaced,
        current_context: dst.current_context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: kind-dev\n  cluster:\n    server: https://127.0.0.1:40001\ncontexts:\n- name: kind-dev\n  context:\n    cluster: kind-dev\n    user: kind-dev\ncurrent-context: kind-dev\nusers:\n- name: kind-dev\n  user:\n    token: abc\n";
    const THEIRS: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://prod.example.com\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: admin\ncurrent-context: prod\nusers:\n- name: admin\n  user:\n    token: secret\n";

    #[test]
    fn merge_adds_the_context_keeps_the_current_one_and_backs_up() {
        let d = tempfile::tempdir().unwrap();
        let ours = d.path().join("ours");
        let user = d.path().join(".kube/config");
        std::fs::write(&ours, OURS).unwrap();
        std::fs::create_dir_all(user.parent().unwrap()).unwrap();
        std::fs::write(&user, THEIRS).unwrap();
        let m = merge(&ours, &user, "kind-dev", false).unwrap();
        assert_eq!(m.current_context.as_deref(), Some("prod"));
        assert!(!m.replaced);
        assert_eq!(std::fs::read_to_string(m.backup.unwrap()).unwrap(), THEIRS);
        let kc = Kubeconfig::read_from(&user).unwrap();
        let names: Vec<_> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["prod", "kind-dev"]);
        assert_eq!(kc.clusters.len(), 2);
        assert_eq!(kc.auth_infos.len(), 2);

        let m = merge(&ours, &user, "kind-dev", true).unwrap();
        assert!(m.replaced);
        let kc = Kubeconfig::read_from(&user).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("kind-dev"));
        assert_eq!(kc.contexts.len(), 2, "replaced, not duplicated");
    }

    /// Issue 13: a dotfiles-managed ~/.kube/config (a symlink) stays a symlink, and
    /// its target gets the merged content.
    #[test]
    fn merge_writes_through_a_symlinked_kubeconfig() {
        let d = tempfile::tempdir().unwrap();
        let ours = d.path().join("ours");
        std::fs::write(&ours, OURS).unwrap();
        let target = d.path().join("dotfiles/kube/config");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, THEIRS).unwrap();
        let user = d.path().join(".kube/config");
        std::fs::create_dir_all(user.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("../dotfiles/kube/config", &user).unwrap();
        merge(&ours, &user, "kind-dev", false).unwrap();
        assert!(
            std::fs::symlink_metadata(&user)
                .unwrap()
                .file_type()
                .is_symlink(),
            "the link is kept"
        );
        let kc = Kubeconfig::read_from(&target).unwrap();
        assert_eq!(kc.contexts.len(), 2);
        let looped = d.path().join("loop");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        assert!(merge(&ours, &looped, "kind-dev", false).is_err());
    }

    #[test]
    fn user_kubeconfig_path() {
        let home = Path::new("/h");
        assert_eq!(
            user_kubeconfig(&|_| None, Some(home)).unwrap(),
            Path::new("/h/.kube/config")
        );
        let env = |k: &str| (k == "KUBECONFIG").then(|| "/a/one:/b/two".to_string());
        assert_eq!(
            user_kubeconfig(&env, Some(home)).unwrap(),
            Path::new("/a/one")
        );
    }
}
