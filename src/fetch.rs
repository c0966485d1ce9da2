//! `pulsedev fetch`: brings everything `up` downloads onto this machine, so that `up`,
//! `render` and `reset` then work with no network: kind and helm (pinned, verified),
//! the kind node image, the platform charts (into pulsedev's chart cache), the images
//! the cluster's own workloads run (Postgres, Redis, the platform charts': into
//! pulsedev's image cache, byte for byte from their registries, which `up` imports into
//! the nodes), the registry image and the base images of every service (into the
//! engine), and a first build of
//! each service image (the engine's build cache then holds the dependency layers, e.g.
//! `npm ci`). Each piece that is already here is left alone: a second run downloads
//! nothing and says so.
//!
//! Owns: the order of `fetch` and its summary. Must not contain the mechanics of a
//! download: tools, cluster, up (charts) and images do those, the same code `up` runs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;

use crate::cli::Ctx;
use crate::config::Config;
use crate::docker::Engine;
use crate::error::{Error, Result};
use crate::offline::{self, Inputs, State};
use crate::plan::{Outcome, Plan, StepReport, interruptible, step};
use crate::state::Dirs;
use crate::ui::{StepProgress, Ui};

const DOCKER_TIMEOUT: Duration = Duration::from_secs(5);

struct Shared {
    config: Config,
    dirs: Dirs,
    ui: Ui,
    progress: Arc<StepProgress>,
    kind: OnceLock<PathBuf>,
    helm: OnceLock<PathBuf>,
    docker: OnceLock<Engine>,
    /// What this run downloaded or built, for the summary.
    brought: Mutex<Vec<String>>,
}

impl Shared {
    fn get<'a, T>(slot: &'a OnceLock<T>, what: &str) -> Result<&'a T> {
        slot.get()
            .ok_or_else(|| Error::internal(format!("step order bug: {what} is not ready")))
    }

    fn brought(&self, what: String) {
        self.brought.lock().expect("not poisoned").push(what);
    }
}

/// The `fetch --output json` document.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub ok: bool,
    pub steps: Vec<StepReport>,
    /// What this run downloaded or built (empty: everything was here).
    pub fetched: Vec<String>,
}

pub async fn run(ctx: &Ctx, config: Config) -> Result<()> {
    config.check_services(true, false)?;
    let dirs = Dirs::from_process()?;
    let progress = Arc::new(StepProgress::new(&ctx.ui));
    let shared = Arc::new(Shared {
        config,
        dirs,
        ui: ctx.ui.clone(),
        progress: progress.clone(),
        kind: OnceLock::new(),
        helm: OnceLock::new(),
        docker: OnceLock::new(),
        brought: Mutex::new(Vec::new()),
    });
    let plan = build_plan(&shared)?;
    let started = tokio::time::Instant::now();
    let mut run = plan.run(progress.as_ref(), &ctx.cancel).await;
    progress.lines().clear();
    let mut result = match run.error.take() {
        Some(e) => Err(e),
        None => Ok(()),
    };
    if ctx.cancel.is_cancelled() && result.is_ok() {
        result = Err(Error::interrupted());
    }
    let fetched = shared.brought.lock().expect("not poisoned").clone();
    if ctx.ui.json() {
        let summary = Summary {
            ok: result.is_ok(),
            steps: run.steps,
            fetched,
        };
        let mut doc = serde_json::to_value(&summary).expect("summary serializes");
        if let Err(e) = &result {
            doc["error"] = crate::ui::error_json(e);
        }
        ctx.ui.out_json(&doc);
        return result.map_err(|mut e| {
            e.emitted = true;
            e
        });
    }
    let mut out = String::new();
    for s in &run.steps {
        let word = match s.status {
            crate::plan::Status::Done => "done",
            crate::plan::Status::Skipped => "here",
            crate::plan::Status::Failed => "FAILED",
            crate::plan::Status::NotRun => "not run",
        };
        out.push_str(&format!(
            "  {:<16} {:<8} {:>6.1}s  {}\n",
            s.name,
            word,
            s.seconds,
            s.detail.as_deref().unwrap_or("")
        ));
    }
    match &result {
        Ok(()) if fetched.is_empty() => out.push_str(&format!(
            "nothing to download: everything `up` needs is already on this machine ({:.1}s)\n",
            started.elapsed().as_secs_f64()
        )),
        Ok(()) => out.push_str(&format!(
            "fetched {} in {:.1}s; `up`, `render` and `reset` now need no network\n",
            fetched.join(", "),
            started.elapsed().as_secs_f64()
        )),
        Err(_) => out.push_str(
            "pulsedev fetch did not bring everything; what it brought is kept, run it again to go on\n",
        ),
    }
    ctx.ui.out(&out);
    result
}

fn inputs_env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn build_plan(shared: &Arc<Shared>) -> Result<Plan> {
    let mut plan = Plan::new();
    // Each download is worth having on its own (a partial network, one registry down):
    // a failure stops only what depends on it.
    plan.keep_going();

    step(&mut plan, shared, "tools", &[], |s, cancel| async move {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let path_var = std::env::var_os("PATH");
        let home = dirs::home_dir();
        let inputs = Inputs {
            env: &inputs_env,
            home: home.as_deref(),
            path_var: path_var.as_deref(),
            cwd: &cwd,
            tool_timeout: Duration::from_secs(10),
            docker_timeout: DOCKER_TIMEOUT,
        };
        let mut here = Vec::new();
        let mut fetched = Vec::new();
        for tool in [&crate::tools::KIND, &crate::tools::HELM] {
            let before = offline::tool_state(tool, &inputs).await;
            let path = interruptible(&cancel, crate::tools::ensure(tool, &s.dirs, &s.ui)).await?;
            match before.state {
                State::Here(where_) => here.push(format!("{} {where_}", before.what)),
                _ => {
                    fetched.push(format!("{} (verified against its pin)", before.what));
                    s.brought(before.what.clone());
                }
            }
            let slot = if tool.name == "kind" {
                &s.kind
            } else {
                &s.helm
            };
            let _ = slot.set(path);
        }
        Ok(if fetched.is_empty() {
            Outcome::Skipped(here.join("; "))
        } else {
            Outcome::Done(Some(format!("downloaded {}", fetched.join(", "))))
        })
    });

    step(&mut plan, shared, "docker", &[], |s, cancel| async move {
        let engine = interruptible(&cancel, crate::images::connect_engine(DOCKER_TIMEOUT)).await?;
        let host = engine.endpoint.host.clone();
        let _ = s.docker.set(engine);
        Ok(Outcome::Done(Some(format!("the engine at {host} answers"))))
    });

    step(
        &mut plan,
        shared,
        "node-image",
        &["tools", "docker"],
        |s, cancel| async move {
            let docker = Shared::get(&s.docker, "Docker")?;
            let image = crate::cluster::node_image(&inputs_env);
            if docker.has_image(&image).await? {
                return Ok(Outcome::Skipped(format!("{image} is in the Docker engine")));
            }
            let kind = Shared::get(&s.kind, "kind")?;
            let live =
                crate::cluster::Live::connect(s.dirs.clone(), kind.clone(), DOCKER_TIMEOUT).await?;
            let deps = live.deps(&s.ui, &cancel);
            // The very step `up` runs before `kind create`.
            crate::cluster::pull_node_image(&deps, &image).await?;
            s.brought(format!("node image {image}"));
            Ok(Outcome::Done(Some(format!("pulled {image}"))))
        },
    );

    step(
        &mut plan,
        shared,
        "platform-charts",
        &["tools"],
        |s, cancel| async move {
            let helm = crate::helm::Helm {
                bin: Shared::get(&s.helm, "helm")?.clone(),
            };
            let pins = crate::stack::load_pins(&s.config.root)?;
            let mut fetched = Vec::new();
            let mut here = 0;
            for c in pins.values().filter(|c| c.enabled(&s.config)) {
                if interruptible(&cancel, crate::up::fetch_chart(&helm, &s.dirs, c, &s.ui)).await? {
                    fetched.push(format!("chart {} {}", c.chart, c.version));
                } else {
                    here += 1;
                }
            }
            for f in &fetched {
                s.brought(f.clone());
            }
            Ok(if fetched.is_empty() {
                Outcome::Skipped(format!("{here} charts are in the cache"))
            } else {
                Outcome::Done(Some(format!("fetched {}", fetched.join(", "))))
            })
        },
    );

    step(
        &mut plan,
        shared,
        "base-images",
        &["docker"],
        |s, cancel| async move {
            let docker = Shared::get(&s.docker, "Docker")?;
            let (_, images) = offline::image_refs(&s.config, &inputs_env);
            let mut pulled = Vec::new();
            let mut here = 0;
            for (what, image) in images {
                let image = image.map_err(|why| {
                    Error::new(crate::error::ErrorKind::ImageBuildFailed, why).with_hint(
                        "check `context` and `dockerfile` of the service in pulsedev.toml",
                    )
                })?;
                let lines = s.progress.clone();
                let task = format!("  pull {image}");
                let report = move |p: &crate::cluster::nodes::PullProgress| {
                    if p.layers > 0 {
                        lines.lines().update(&task, &p.to_string(), false);
                    }
                };
                let fresh = interruptible(
                    &cancel,
                    crate::cluster::nodes::pull_if_missing(
                        &docker.docker,
                        &docker.endpoint.host,
                        &image,
                        &what,
                        &report,
                    ),
                )
                .await?;
                if fresh {
                    s.progress
                        .lines()
                        .finish(&format!("  pull {image}"), "pulled");
                    s.brought(format!("{what} {image}"));
                    pulled.push(image);
                } else {
                    here += 1;
                }
            }
            Ok(if pulled.is_empty() {
                Outcome::Skipped(format!("{here} images are in the Docker engine"))
            } else {
                Outcome::Done(Some(format!("pulled {}", pulled.join(", "))))
            })
        },
    );

    step(
        &mut plan,
        shared,
        "workload-images",
        &["platform-charts", "docker"],
        |s, cancel| async move {
            let docker = Shared::get(&s.docker, "Docker")?;
            let helm = crate::helm::Helm {
                bin: Shared::get(&s.helm, "helm")?.clone(),
            };
            let (fetched, here) = interruptible(
                &cancel,
                crate::images::upstream::fetch_all(
                    &s.config,
                    &helm,
                    &s.dirs.cache,
                    docker,
                    &inputs_env,
                ),
            )
            .await?;
            for f in &fetched {
                s.brought(format!("workload image {f}"));
            }
            Ok(if fetched.is_empty() {
                Outcome::Skipped(format!(
                    "{here} workload images are in pulsedev's image cache"
                ))
            } else {
                Outcome::Done(Some(format!("downloaded {}", fetched.join(", "))))
            })
        },
    );

    step(
        &mut plan,
        shared,
        "images",
        &["base-images"],
        |s, cancel| async move {
            let docker = Shared::get(&s.docker, "Docker")?;
            let opts = crate::images::build_options(&s.config, docker).await?;
            let lines = s.progress.clone();
            let events: crate::images::Events =
                Arc::new(move |e| crate::up::build_event(lines.lines(), e));
            let outcomes =
                crate::images::build(docker, &s.config.services, &opts, &cancel, events).await;
            if let Some(e) = crate::images::build::failure_summary(&outcomes) {
                return Err(e);
            }
            let built: Vec<String> = outcomes
                .iter()
                .filter(|o| matches!(o.status, crate::images::Status::Built))
                .map(|o| o.image.service.clone())
                .collect();
            for b in &built {
                s.brought(format!("image {b}"));
            }
            Ok(if built.is_empty() {
                Outcome::Skipped("every image is built (content unchanged)".into())
            } else {
                Outcome::Done(Some(format!(
                    "built {} (the build cache now holds their dependency layers)",
                    built.join(", ")
                )))
            })
        },
    );

    plan.validate()?;
    Ok(plan)
}
