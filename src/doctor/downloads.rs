//! The doctor checks of what `up` downloads (`crate::offline` finds and probes them):
//! one check per group (download-kind, download-helm, download-node-image,
//! download-charts, download-images), then `offline`, which says whether the machine is
//! ready to work with no network at all.
//!
//! Owns: turning the inventory into checks. Must not download anything.

use std::collections::BTreeMap;

use super::{Check, Machine, Status};
use crate::config::Config;
use crate::error::ErrorKind;
use crate::offline::{self, EnginePull, Group, Inputs, Piece, Proxies, State};

/// The problem id of a check whose piece is missing and cannot be reached.
pub const UNREACHABLE: ErrorKind = ErrorKind::DownloadUnreachable;
/// The warning id when it could not be told whether a piece is here.
pub const UNCHECKED: &str = "downloads-unchecked";

/// The pieces with their probe results: `Ok(source that answered)` or `Err(why)`.
type Probed = Vec<(Piece, Option<std::result::Result<String, String>>)>;

/// Probes each distinct set of sources once (many base images share one registry).
async fn probe_all(pieces: Vec<Piece>) -> Probed {
    let mut distinct: Vec<&Vec<offline::Probe>> = Vec::new();
    for p in &pieces {
        if let State::Missing(probes) = &p.state
            && !distinct.contains(&probes)
        {
            distinct.push(probes);
        }
    }
    let answers = futures::future::join_all(distinct.iter().map(|p| offline::reach(p))).await;
    let answer_of = |probes: &Vec<offline::Probe>| {
        distinct
            .iter()
            .position(|d| *d == probes)
            .map(|i| answers[i].clone())
    };
    let results: Vec<_> = pieces
        .iter()
        .map(|p| match &p.state {
            State::Missing(probes) => answer_of(probes),
            _ => None,
        })
        .collect();
    pieces.into_iter().zip(results).collect()
}

/// Tools and charts: pulsedev's own downloads, through this process's proxies.
async fn own_downloads(config: &Config, m: &Machine) -> BTreeMap<Group, Probed> {
    let env = |k: &str| m.var(k);
    let inputs = Inputs {
        env: &env,
        home: m.home.as_deref(),
        path_var: m.path_var.as_deref(),
        cwd: &m.cwd,
        tool_timeout: m.tool_timeout,
        docker_timeout: m.docker_timeout,
    };
    let (kind, helm) = tokio::join!(
        offline::tool_state(&crate::tools::KIND, &inputs),
        offline::tool_state(&crate::tools::HELM, &inputs),
    );
    let charts = match offline::cache_dir(&inputs) {
        Some(cache) => offline::chart_states(config, &cache, &env),
        None => vec![Piece {
            what: "platform charts".into(),
            state: State::Unknown("pulsedev's cache directory is unknown (no HOME)".into()),
        }],
    };
    let (kind, helm, charts) = tokio::join!(
        probe_all(vec![kind]),
        probe_all(vec![helm]),
        probe_all(charts)
    );
    BTreeMap::from([
        (Group::Kind, kind),
        (Group::Helm, helm),
        (Group::Charts, charts),
    ])
}

/// The node image and the other images: pulled by the engine, through its proxies and
/// mirrors; unknown when the engine does not answer (the docker check says why).
async fn engine_downloads(config: &Config, m: &Machine) -> BTreeMap<Group, Probed> {
    let env = |k: &str| m.var(k);
    let (node, images) = offline::image_refs(config, &env);
    let unknown = |why: &str| {
        let mut pieces = vec![Piece {
            what: format!("node image {node}"),
            state: State::Unknown(why.to_string()),
        }];
        let node_group = vec![(pieces.remove(0), None)];
        let image_group: Probed = images
            .iter()
            .map(|(what, r)| {
                (
                    Piece {
                        what: match r {
                            Ok(image) => format!("{what} {image}"),
                            Err(_) => what.clone(),
                        },
                        state: State::Unknown(why.to_string()),
                    },
                    None,
                )
            })
            .collect();
        BTreeMap::from([(Group::NodeImage, node_group), (Group::Images, image_group)])
    };
    // The same allowances as the docker check: connecting, then /info, each within
    // the timeout, so a busy engine that passes that check is not "silent" here.
    let engine = async {
        let endpoint = crate::docker::resolve(&env, m.home.as_deref())?;
        let engine = crate::docker::connect(&endpoint, m.docker_timeout).await?;
        let settings = tokio::time::timeout(m.docker_timeout, engine.pull_settings())
            .await
            .map_err(|_| crate::error::Error::internal("no answer to /info in time"))??;
        Ok::<_, crate::error::Error>((engine, settings))
    };
    let (engine, settings) = match engine.await {
        Ok(e) => e,
        Err(_) => {
            return unknown("not checked: the Docker engine did not answer (see the docker check)");
        }
    };
    let pull = EnginePull {
        proxies: Proxies {
            http: settings.http_proxy,
            https: settings.https_proxy,
            all: None,
            no: settings.no_proxy,
        },
        mirrors: settings.mirrors,
        insecure_cidrs: settings.insecure_cidrs,
        insecure_hosts: settings.insecure_hosts,
    };
    let state_of = |image: String| {
        let engine = &engine;
        let pull = &pull;
        async move {
            match tokio::time::timeout(m.docker_timeout, engine.has_image(&image)).await {
                Ok(Ok(true)) => State::Here("in the Docker engine".into()),
                Ok(Ok(false)) => State::Missing(pull.probes(&image)),
                Ok(Err(e)) => State::Unknown(e.message.clone()),
                Err(_) => State::Unknown("the Docker engine did not answer in time".into()),
            }
        }
    };
    let node_piece = Piece {
        what: format!("node image {node}"),
        state: state_of(node.clone()).await,
    };
    let mut image_pieces = Vec::new();
    for (what, r) in images {
        image_pieces.push(match r {
            Ok(image) => Piece {
                what: format!("{what} {image}"),
                state: state_of(image).await,
            },
            Err(why) => Piece {
                what,
                state: State::Unknown(why),
            },
        });
    }
    let (node_group, image_group) =
        tokio::join!(probe_all(vec![node_piece]), probe_all(image_pieces));
    BTreeMap::from([(Group::NodeImage, node_group), (Group::Images, image_group)])
}

/// The images of the cluster's own workloads, which `fetch` downloads into pulsedev's
/// image cache (`up` imports them from there): the engine's Docker Hub mirrors apply,
/// when it answers.
async fn workload_downloads(config: &Config, m: &Machine) -> Probed {
    let env = |k: &str| m.var(k);
    let Some(cache) = crate::state::Dirs::resolve(&env, m.home.as_deref())
        .ok()
        .map(|d| d.cache)
    else {
        return Vec::new();
    };
    let mirrors = async {
        let endpoint = crate::docker::resolve(&env, m.home.as_deref()).ok()?;
        let engine = crate::docker::connect(&endpoint, m.docker_timeout)
            .await
            .ok()?;
        tokio::time::timeout(m.docker_timeout, engine.pull_settings())
            .await
            .ok()?
            .ok()
            .map(|s| s.mirrors)
    }
    .await
    .unwrap_or_default();
    probe_all(offline::workload_states(config, &cache, &env, &mirrors)).await
}

/// The checks, in a fixed order, the `offline` verdict last.
pub async fn checks(config: &Config, m: &Machine) -> Vec<Check> {
    let (mut own, engine, workloads) = tokio::join!(
        own_downloads(config, m),
        engine_downloads(config, m),
        workload_downloads(config, m)
    );
    own.extend(engine);
    own.entry(Group::Images).or_default().extend(workloads);
    let mut out = Vec::new();
    for g in Group::ALL {
        out.push(group_check(g, own.remove(&g).unwrap_or_default()));
    }
    out.push(offline_check(&out));
    out
}

fn fix_for(g: Group) -> &'static str {
    match g {
        Group::Kind | Group::Helm => {
            "run `pulsedev fetch` where you have network (it brings everything `up` downloads), or set HTTPS_PROXY (and NO_PROXY) for pulsedev, or PULSEDEV_TOOLS_MIRROR to a mirror of the releases"
        }
        Group::Charts => {
            "run `pulsedev fetch` where you have network (it brings everything `up` downloads), or set HTTPS_PROXY (and NO_PROXY) for pulsedev and helm"
        }
        Group::NodeImage => {
            "run `pulsedev fetch` where you have network (it brings everything `up` downloads), or give the Docker engine a proxy (its HTTPS_PROXY, see `docker info`) or a registry mirror; PULSEDEV_NODE_IMAGE names a mirror's copy of the node image"
        }
        Group::Images => {
            "run `pulsedev fetch` where you have network (it brings everything `up` downloads), or give the Docker engine a proxy (its HTTPS_PROXY, see `docker info`) or a registry mirror; workload images are downloaded by pulsedev: set HTTPS_PROXY (and NO_PROXY) for it, or PULSEDEV_IMAGE_MIRRORS (registry=URL,…)"
        }
    }
}

fn group_check(g: Group, probed: Probed) -> Check {
    let id = g.check_id();
    let mut here = Vec::new();
    let mut reachable = Vec::new();
    let mut unreachable: Vec<(String, Vec<String>)> = Vec::new();
    let mut unknown: Vec<(String, Vec<String>)> = Vec::new();
    for (piece, result) in probed {
        match (&piece.state, result) {
            (State::Here(where_), _) => here.push(format!("{} ({where_})", piece.what)),
            (State::Manual(why), _) => here.push(format!("{}: {why}", piece.what)),
            (State::Missing(_), Some(Ok(answer))) => reachable.push(format!(
                "{} is not here; `up` downloads it: {answer}",
                piece.what
            )),
            (State::Missing(_), Some(Err(why))) => match unreachable
                .iter_mut()
                .find(|(w, _): &&mut (String, Vec<String>)| *w == why)
            {
                Some((_, whats)) => whats.push(piece.what.clone()),
                None => unreachable.push((why, vec![piece.what.clone()])),
            },
            (State::Missing(_), None) => {}
            (State::Unknown(why), _) => match unknown
                .iter_mut()
                .find(|(w, _): &&mut (String, Vec<String>)| w == why)
            {
                Some((_, whats)) => whats.push(piece.what.clone()),
                None => unknown.push((why.clone(), vec![piece.what.clone()])),
            },
        }
    }
    if !unreachable.is_empty() {
        return Check::fail(
            id,
            UNREACHABLE,
            format!(
                "not on this machine and cannot be downloaded: {}",
                unreachable
                    .iter()
                    .map(|(why, whats)| format!("{} ({why})", whats.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Some(fix_for(g).to_string()),
        );
    }
    if !unknown.is_empty() {
        return Check::warn(
            id,
            UNCHECKED,
            format!(
                "could not tell whether it is here: {}",
                unknown
                    .iter()
                    .map(|(why, whats)| format!("{} ({why})", whats.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            "fix what stopped the check (named above), then run `pulsedev doctor` again",
        );
    }
    let mut parts = reachable;
    parts.extend(here);
    if parts.is_empty() {
        parts.push("nothing to download".into());
    }
    Check::ok(id, parts.join("; "))
}

/// The verdict: every group present means `up` needs no network.
fn offline_check(checks: &[Check]) -> Check {
    let downloads: Vec<&Check> = checks
        .iter()
        .filter(|c| c.id.starts_with("download-"))
        .collect();
    let names = |keep: &dyn Fn(&Check) -> bool| -> Vec<&str> {
        downloads
            .iter()
            .filter(|c| keep(c))
            .map(|c| c.id.trim_start_matches("download-"))
            .collect()
    };
    let to_fetch = names(&|c| c.status == Status::Fail || c.message.contains("is not here"));
    let unknown = names(&|c| c.status == Status::Warn);
    let mut parts = Vec::new();
    if !to_fetch.is_empty() {
        parts.push(format!(
            "`up` would download ({}); `pulsedev fetch` brings it all here",
            to_fetch.join(", ")
        ));
    }
    if !unknown.is_empty() {
        parts.push(format!("not known for ({})", unknown.join(", ")));
    }
    if parts.is_empty() {
        Check::ok(
            "offline",
            "ready offline: everything `up` downloads is on this machine",
        )
    } else {
        Check::ok(
            "offline",
            format!("not ready offline: {}", parts.join("; ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(what: &str, state: State) -> Piece {
        Piece {
            what: what.into(),
            state,
        }
    }

    #[test]
    fn a_group_fails_only_when_something_missing_cannot_be_reached() {
        let missing = || State::Missing(vec![]);
        let c = group_check(
            Group::Charts,
            vec![
                (piece("chart a 1", State::Here("cached".into())), None),
                (
                    piece("chart b 2", missing()),
                    Some(Ok("x answers (HTTP 200)".into())),
                ),
            ],
        );
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.message.starts_with("chart b 2 is not here"),
            "{}",
            c.message
        );
        let c = group_check(
            Group::Images,
            vec![
                (
                    piece("base image of api a", missing()),
                    Some(Err("no answer".into())),
                ),
                (piece("chart b 2", missing()), Some(Ok("answers".into()))),
            ],
        );
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.problem, Some("download-unreachable"));
        assert!(c.hint.as_deref().unwrap().contains("pulsedev fetch"));
        let c = group_check(
            Group::NodeImage,
            vec![(piece("n", State::Unknown("?".into())), None)],
        );
        assert_eq!((c.status, c.problem), (Status::Warn, Some(UNCHECKED)));

        let all_here = vec![
            Check::ok("docker", "x"),
            Check::ok("download-kind", "kind v0.32.0 (on PATH)"),
        ];
        assert!(
            offline_check(&all_here)
                .message
                .starts_with("ready offline")
        );
        let not = vec![Check::ok(
            "download-kind",
            "kind v0.32.0 is not here; `up` downloads it",
        )];
        assert_eq!(
            offline_check(&not).message,
            "not ready offline: `up` would download (kind); `pulsedev fetch` brings it all here"
        );
    }
}
