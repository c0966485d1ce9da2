//! The command line: clap types and thin handlers that call into the modules that do
//! the work. Owns: parsing, the output mode decision inputs, Ctrl-C, exit codes.
//! Must not talk to Docker, Kubernetes or processes itself.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Overrides};
use crate::doctor;
use crate::error::{Error, ErrorKind, Result, exit};
use crate::ui::{self, ColorChoice, Format, Ui};

#[derive(Debug, Parser)]
#[command(
    name = "pulsedev",
    version,
    about = "The PulseWatch stack on a local kind cluster, in one command",
    after_help = "Exit codes: 0 success, 1 the work failed, 2 usage error, 3 machine not ready, \
                  4 configuration invalid, 130 interrupted."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file [default: ./pulsedev.toml when present, else built-in defaults]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Cluster name [env: PULSEDEV_NAME] [default: pulsedev]
    #[arg(long, global = true, value_name = "NAME")]
    pub name: Option<String>,
    /// Host port for HTTP on 127.0.0.1 [env: PULSEDEV_HTTP_PORT] [default: 80]
    #[arg(long, global = true, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub http_port: Option<u16>,
    /// Host port for HTTPS on 127.0.0.1 [env: PULSEDEV_HTTPS_PORT] [default: 443]
    #[arg(long, global = true, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub https_port: Option<u16>,
    /// Host port of the local image registry [env: PULSEDEV_REGISTRY_PORT] [default: 5001]
    #[arg(long, global = true, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub registry_port: Option<u16>,
    /// Output format: human text, or one JSON document on stdout
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub output: Format,
    /// Colour (NO_COLOR is honoured in auto)
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Show more detail
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Show only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Preflight checks of this machine, each with a finding and a fix
    Doctor(DoctorArgs),
    /// Build the service images (no cluster needed); `build api` builds one
    Build(BuildArgs),
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Seconds the Docker engine may take to answer before it counts as hanging
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Services to build [default: all configured services]
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
}

/// What every handler gets: the output, the cancellation signal, the global flags.
pub struct Ctx {
    pub ui: Ui,
    pub cancel: CancellationToken,
    pub global: Global,
}

impl Ctx {
    /// The configuration with precedence flags > env > file > defaults.
    pub fn config(&self) -> Result<Config> {
        let cwd = std::env::current_dir()
            .map_err(|e| Error::internal(format!("failed to read the current directory: {e}")))?;
        let overrides = Overrides {
            name: self.global.name.clone(),
            env: None,
            http_port: self.global.http_port,
            https_port: self.global.https_port,
            registry_port: self.global.registry_port,
        };
        Config::load(
            self.global.config.as_deref(),
            &cwd,
            &|k| std::env::var(k).ok(),
            &overrides,
        )
    }

    /// Runs `fut` unless Ctrl-C comes first; then it is dropped and we report
    /// `interrupted`. Steps that must clean up watch `cancel` themselves.
    pub async fn interruptible<T>(&self, fut: impl Future<Output = T>) -> Result<T> {
        tokio::select! {
            r = fut => Ok(r),
            _ = self.cancel.cancelled() => Err(Error::interrupted()),
        }
    }
}

/// Parses `args`, runs the command and returns the process exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e, &args),
    };
    let env = |k: &str| std::env::var(k).ok();
    let mode = ui::decide(ui::Inputs {
        format: cli.global.output,
        color: cli.global.color,
        quiet: cli.global.quiet,
        verbose: cli.global.verbose,
        no_color: env("NO_COLOR").is_some_and(|v| !v.is_empty()),
        dumb_term: env("TERM").as_deref() == Some("dumb"),
        stdout_tty: std::io::stdout().is_terminal(),
        stderr_tty: std::io::stderr().is_terminal(),
        ci: ui::is_ci(&env),
    });
    let ui = Ui::new(mode);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ui.error(&Error::internal(format!(
                "failed to start the async runtime: {e}"
            )));
            return exit::FAILED;
        }
    };
    let cancel = CancellationToken::new();
    let ctx = Ctx {
        ui: ui.clone(),
        cancel: cancel.clone(),
        global: cli.global,
    };
    let result = runtime.block_on(async move {
        tokio::spawn(watch_interrupts(cancel));
        dispatch(cli.command, &ctx).await
    });
    // Do not wait for helper tasks (a hung Docker call) on the way out.
    runtime.shutdown_background();
    match result {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            if !(e.emitted && ui.json()) {
                ui.error(&e);
            }
            e.exit_code()
        }
    }
}

/// First Ctrl-C: cancel, so running steps stop and clean up what this run made.
/// Second Ctrl-C: leave at once.
async fn watch_interrupts(cancel: CancellationToken) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    cancel.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("interrupted again: exiting without cleaning up");
        std::process::exit(exit::INTERRUPTED);
    }
}

fn usage_error(e: clap::Error, args: &[OsString]) -> i32 {
    use clap::error::ErrorKind as K;
    if matches!(
        e.kind(),
        K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == K::DisplayHelpOnMissingArgumentOrSubcommand {
            exit::USAGE
        } else {
            exit::SUCCESS
        };
    }
    // Keep the promise of one JSON document on stdout even when parsing failed.
    if wants_json(args) {
        let text = e.render().to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ");
        let err = Error::new(ErrorKind::Usage, first.to_string())
            .with_hint("run `pulsedev --help` for the commands and flags");
        println!("{}", ui::failure_document(&err));
    } else {
        let _ = e.print();
    }
    exit::USAGE
}

fn wants_json(args: &[OsString]) -> bool {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    args.iter().any(|a| a == "--output=json")
        || args
            .windows(2)
            .any(|w| w[0] == "--output" && w[1] == "json")
}

async fn dispatch(command: Command, ctx: &Ctx) -> Result<()> {
    match command {
        Command::Doctor(args) => cmd_doctor(ctx, args).await,
        Command::Build(args) => cmd_build(ctx, args).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "pulsedev",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

async fn cmd_build(ctx: &Ctx, args: BuildArgs) -> Result<()> {
    use crate::images::{self, Event};
    let config = ctx.config()?;
    let services = images::select(&config, &args.services)?;
    let engine = ctx
        .interruptible(images::connect_engine(Duration::from_secs(5)))
        .await??;
    let opts = images::build_options(&config, &engine).await?;
    ctx.ui.debug(&format!(
        "building {} image(s) for {} on {}, {} at a time",
        services.len(),
        opts.platform,
        engine.endpoint.host,
        opts.parallel
    ));
    let lines = std::sync::Arc::new(ctx.ui.task_lines());
    let view = lines.clone();
    let events: images::Events = std::sync::Arc::new(move |e: Event| match e {
        Event::Checking { service } => view.update(&service, "hashing the context", false),
        Event::Started { service, image } => {
            view.update(&service, &format!("building {image}"), true)
        }
        Event::Step { service, step } => view.update(&service, &step, true),
        Event::Line { service, line } => view.update(&service, &line, false),
        Event::Skipped { service, reason } => view.finish(&service, &format!("skipped ({reason})")),
        Event::Built { service, seconds } => {
            view.finish(&service, &format!("built in {seconds:.1}s"))
        }
        Event::Failed { service, message } => view.finish(&service, &format!("failed: {message}")),
    });
    let outcomes = images::build(&engine, &services, &opts, &ctx.cancel, events).await;
    lines.clear();
    let failure = images::build::failure_summary(&outcomes);
    let list = images::outcomes_json(&outcomes);
    match failure {
        None => {
            if ctx.ui.json() {
                ctx.ui
                    .out_json(&serde_json::json!({"ok": true, "images": list}));
            } else {
                ctx.ui.out(&images::outcomes_table(&outcomes));
            }
            Ok(())
        }
        Some(e) => {
            if !ctx.ui.json() {
                ctx.ui.out(&images::outcomes_table(&outcomes));
            }
            Err(e.with_data(serde_json::json!({ "images": list })))
        }
    }
}

async fn cmd_doctor(ctx: &Ctx, args: DoctorArgs) -> Result<()> {
    let config = ctx.config()?;
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(Error::new(
            ErrorKind::Usage,
            "--timeout must be a positive number of seconds",
        ));
    }
    let machine = doctor::Machine::from_process(Duration::from_secs_f64(args.timeout));
    let spinner = ctx.ui.spinner("checking this machine");
    let checks = ctx.interruptible(doctor::run(&config, &machine)).await;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let checks = checks?;
    if ctx.ui.json() {
        ctx.ui.out_json(&doctor::to_json(&checks));
    } else {
        ctx.ui
            .out(&doctor::render(&checks, ctx.ui.mode.color_stdout));
    }
    match doctor::failure(&checks) {
        None => Ok(()),
        Some(mut e) => {
            // The table (or the JSON document) already lists every failure.
            e.emitted = true;
            e.details.clear();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn json_is_detected_in_raw_args() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(wants_json(&a(&["pulsedev", "--output", "json", "bogus"])));
        assert!(wants_json(&a(&["pulsedev", "bogus", "--output=json"])));
        assert!(!wants_json(&a(&["pulsedev", "--output", "human"])));
    }
}
