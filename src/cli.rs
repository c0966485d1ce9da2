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
use crate::kube;
use crate::ui::{self, ColorChoice, Format, Ui};

/// The longest wait a flag may ask for: a day. Larger values would overflow the clock
/// arithmetic of deadlines (`Instant + Duration`), and no wait needs them.
pub const MAX_WAIT_SECONDS: u64 = 86_400;

/// `doctor --timeout`: a finite number of seconds in 0.1..=600, checked while parsing
/// so that no later `Duration` conversion can panic (`1e30`, `inf`, `NaN`, `-1`).
fn doctor_timeout(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if v.is_finite() && (0.1..=600.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is out of range: give 0.1 to 600 seconds"))
    }
}

/// `--name`: the rule of `config::check_name`, checked while parsing so that a bad value
/// on the command line is a usage error (exit 2), as the README's exit-code rule says.
fn cluster_name(s: &str) -> std::result::Result<String, String> {
    crate::config::check_name(s).map(|()| s.to_string())
}

#[derive(Debug, Parser)]
#[command(
    name = "pulsedev",
    version,
    args_override_self = true,
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
    #[arg(long, global = true, value_name = "NAME", value_parser = cluster_name)]
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
    /// CI mode (also when CI is set): a cluster name unique to the job, its own
    /// kubeconfig, free host ports chosen and reported
    #[arg(long, global = true)]
    pub ci: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or reuse the cluster and bring the whole dev stack to ready
    Up(UpArgs),
    /// Delete the cluster and everything pulsedev made for it, then `up` again
    Reset(ResetArgs),
    /// Preflight checks of this machine, each with a finding and a fix
    Doctor(DoctorArgs),
    /// Print the manifests that would be applied, as one YAML stream
    Render(RenderArgs),
    /// What exists and how ready it is (cluster, platform, data stores, services, URLs)
    Status,
    /// Export the local CA certificate; `--install` adds it to the OS trust store
    Trust(TrustArgs),
    /// Delete what pulsedev made for this cluster name (cluster, registry container, state)
    Down,
    /// Print the path of the cluster's kubeconfig; `--merge` adds its context to yours
    Kubeconfig(KubeconfigArgs),
    /// Cluster steps on their own (hidden: `up` runs them)
    #[command(hide = true, subcommand)]
    Cluster(ClusterCommand),
    /// Build the service images (no cluster needed); `build api` builds one
    Build(BuildArgs),
    /// `up`, then watch: rebuild and roll out one service per change, re-apply changed
    /// charts, show every service's logs; Ctrl-C stops watching, the stack keeps running
    Dev(DevArgs),
    /// The stack's pod logs, one prefix per service
    Logs(LogsArgs),
    /// The dev database: `psql`, `dump [FILE]`, `restore FILE` (over exec in the Postgres pod)
    #[command(subcommand)]
    Db(DbCommand),
    /// Bring everything `up` downloads onto this machine (tools, node image, charts,
    /// base images, a first build), so `up`, `render` and `reset` need no network
    Fetch(FetchArgs),
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// How images reach the nodes [default: images.load of the config, registry]
    #[arg(long, value_parser = ["registry", "archive"])]
    pub load: Option<String>,
    /// Make the cluster again when its definition changed (this deletes its data)
    #[arg(long)]
    pub recreate: bool,
    /// Seconds each readiness wait may take (1-86400)
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=MAX_WAIT_SECONDS))]
    pub timeout: u64,
    /// Publish no HTTP/HTTPS host ports (CI jobs that only use the API)
    #[arg(long)]
    pub no_host_ports: bool,
    /// Let a custom kind config bind the API server or host ports beyond 127.0.0.1
    /// (reachable from the network); refused otherwise
    #[arg(long)]
    pub allow_external_binds: bool,
    /// Add-ons to install too: `observability` (Prometheus, Grafana, Loki, Tempo, an
    /// OpenTelemetry Collector); also `observability = true` in pulsedev.toml
    #[arg(long = "with", value_name = "ADD-ON", value_parser = ["observability"])]
    pub with: Vec<String>,
    /// Let prune delete leftovers that hold data (PersistentVolumeClaims, namespaces
    /// with claims); without it they are kept and listed
    #[arg(long)]
    pub prune_data: bool,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// An interactive psql in the Postgres pod (a TTY when stdin is a terminal); ARGS go
    /// to psql, e.g. `db psql -- -c 'select 1'`
    Psql {
        #[arg(
            value_name = "ARGS",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        args: Vec<String>,
    },
    /// pg_dump (custom format) of the database to FILE, created 0600
    /// [default: pulsewatch-<name>-<unix time>.dump]
    Dump {
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// pg_restore --clean --if-exists of FILE into the database (asks first on a TTY)
    Restore {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Show only the loop's own lines, not the pods' logs
    #[arg(long)]
    pub no_logs: bool,
    #[command(flatten)]
    pub up: UpArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Services whose logs to show [default: all]
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Keep following: new lines, restarted containers, the new pods of a rollout
    #[arg(short, long)]
    pub follow: bool,
    /// Only lines younger than this (e.g. 30s, 5m, 1h)
    #[arg(long, value_name = "DURATION", value_parser = crate::dev::logs::parse_since)]
    pub since: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Do not ask for confirmation
    #[arg(long, short)]
    pub yes: bool,
    /// Dump the database first and restore it into the new cluster (the dump is kept,
    /// and its path printed, if the restore fails)
    #[arg(long)]
    pub keep_data: bool,
    #[command(flatten)]
    pub up: UpArgs,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Seconds the Docker engine may take to answer before it counts as hanging (0.1-600)
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0, value_parser = doctor_timeout)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The environment to render [env: PULSEDEV_ENV] [default: the config's env, dev]
    #[arg(long, value_parser = ["dev", "staging", "prod"])]
    pub env: Option<String>,
    /// Only this service's chart
    #[arg(long, value_name = "SERVICE")]
    pub service: Option<String>,
    /// Add-ons to render too: `observability` (also `observability = true` in pulsedev.toml)
    #[arg(long = "with", value_name = "ADD-ON", value_parser = ["observability"])]
    pub with: Vec<String>,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Add-ons to fetch too: `observability` (also `observability = true` in pulsedev.toml)
    #[arg(long = "with", value_name = "ADD-ON", value_parser = ["observability"])]
    pub with: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Where to write the CA certificate [default: pulsedev's state dir/<name>/ca.crt]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also add the certificate to the OS trust store (needs root; never in CI)
    #[arg(long, conflicts_with = "uninstall")]
    pub install: bool,
    /// Remove what `--install` added
    #[arg(long)]
    pub uninstall: bool,
}

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Add the cluster's context to your kubeconfig (KUBECONFIG's first file, else
    /// ~/.kube/config), after a backup; your current context stays as it is
    #[arg(long)]
    pub merge: bool,
    /// With --merge: also make it your current context
    #[arg(long = "use", requires = "merge")]
    pub use_context: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create or reuse the kind cluster (the cluster half of `up`)
    Create(ClusterCreateArgs),
}

#[derive(Debug, Args)]
pub struct ClusterCreateArgs {
    /// Make the cluster again when its definition changed
    #[arg(long)]
    pub recreate: bool,
    /// Make the cluster again in any case
    #[arg(long, conflicts_with = "recreate")]
    pub reset: bool,
    /// Seconds to wait for every node to be Ready (1-86400)
    #[arg(long, value_name = "SECONDS", default_value_t = 180,
          value_parser = clap::value_parser!(u64).range(1..=MAX_WAIT_SECONDS))]
    pub wait: u64,
    /// Publish no HTTP/HTTPS host ports (CI jobs that only use the API)
    #[arg(long)]
    pub no_host_ports: bool,
    /// Let a custom kind config bind the API server or host ports beyond 127.0.0.1
    /// (reachable from the network); refused otherwise
    #[arg(long)]
    pub allow_external_binds: bool,
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
        self.config_for_env(None)
    }

    /// As `config`, with `--env` of the command (flags win over PULSEDEV_ENV and file).
    pub fn config_for_env(&self, env: Option<String>) -> Result<Config> {
        let cwd = std::env::current_dir()
            .map_err(|e| Error::internal(format!("failed to read the current directory: {e}")))?;
        let overrides = Overrides {
            name: self.global.name.clone(),
            env,
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

    /// CI mode: `--ci`, or CI set to anything but empty, 0 or false.
    pub fn ci(&self) -> bool {
        self.global.ci || ui::is_ci(&|k| std::env::var(k).ok())
    }

    /// The configuration, with CI mode's unique default name when no name was given,
    /// for a command that makes the cluster (`up`, `reset`).
    pub fn cluster_config(&self) -> Result<Config> {
        self.cluster_config_to(true)
    }

    /// As `cluster_config`, for a command that finds an existing cluster (`status`,
    /// `down`, `trust`, `kubeconfig`): without a job id to derive the same name from,
    /// CI mode needs `--name`.
    pub fn existing_cluster_config(&self) -> Result<Config> {
        self.cluster_config_to(false)
    }

    fn cluster_config_to(&self, making: bool) -> Result<Config> {
        let mut config = self.config()?;
        let named = self.global.name.is_some()
            || std::env::var("PULSEDEV_NAME").is_ok_and(|v| !v.is_empty())
            || config.name != crate::config::DEFAULT_NAME;
        if !self.ci() || named {
            return Ok(config);
        }
        let env = |k: &str| std::env::var(k).ok();
        let stable = crate::cluster::ci::stable_name(&env);
        if !stable && !making {
            return Err(Error::new(
                ErrorKind::Usage,
                "in CI mode without a job id pulsedev cannot tell which cluster this job made",
            )
            .with_hint("pass `--name NAME` (or PULSEDEV_NAME) with the name `up` reported"));
        }
        let random = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()))
            ^ std::process::id().rotate_left(16);
        config.name = crate::cluster::ci::default_name(&env, std::process::id(), random);
        if !stable {
            self.ui.warn(&format!(
                "no CI job id found: this cluster is named {}; pass `--name {}` to later pulsedev commands (down, status)",
                config.name, config.name
            ));
        }
        Ok(config)
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
        // `--ci` or a CI system: the same test `Ctx::ci` makes.
        ci: cli.global.ci || ui::is_ci(&env),
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
        // The handlers are in place before any work starts: registered inside the spawned
        // task instead, a signal that came before its first poll would still get the
        // default action and end the process without the cleanup.
        let signals = interrupt_signals();
        tokio::spawn(watch_interrupts(signals, cancel));
        dispatch(cli.command, &ctx).await
    });
    // Do not wait for helper tasks (a hung Docker call) on the way out.
    runtime.shutdown_background();
    match result {
        Ok(()) => exit::SUCCESS,
        Err(mut e) => {
            if e.kind == ErrorKind::Interrupted {
                let signal = SIGNALLED.load(std::sync::atomic::Ordering::SeqCst);
                e.exit = Some(interrupted_exit_code(signal));
            }
            if !(e.emitted && ui.json()) {
                ui.error(&e);
            }
            e.exit_code()
        }
    }
}

/// The signal that interrupted this run (0: none yet).
static SIGNALLED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The exit code of an interrupted run: 128 + the signal, as shells report a process
/// a signal ended (130 Ctrl-C/SIGINT, 143 SIGTERM, 129 SIGHUP), so a supervisor sees
/// which one it was; the cleanup is the same for all three.
pub fn interrupted_exit_code(signal: i32) -> i32 {
    match signal {
        0 => exit::INTERRUPTED,
        s => 128 + s,
    }
}

type Signals = (
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
);

/// Handlers for SIGINT, SIGTERM and SIGHUP (none when the runtime cannot install them).
fn interrupt_signals() -> Option<Signals> {
    use tokio::signal::unix::{SignalKind, signal};
    Some((
        signal(SignalKind::interrupt()).ok()?,
        signal(SignalKind::terminate()).ok()?,
        signal(SignalKind::hangup()).ok()?,
    ))
}

/// First SIGINT (Ctrl-C), SIGTERM (`kill`, CI cancelling a job, `timeout`) or SIGHUP
/// (the terminal went away): cancel, so running steps stop and undo what this run made.
/// A second one: leave at once.
async fn watch_interrupts(signals: Option<Signals>, cancel: CancellationToken) {
    let Some((mut int, mut term, mut hup)) = signals else {
        return;
    };
    let mut next = async || -> i32 {
        tokio::select! {
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
            _ = hup.recv() => libc::SIGHUP,
        }
    };
    let first = next().await;
    SIGNALLED.store(first, std::sync::atomic::Ordering::SeqCst);
    cancel.cancel();
    let again = next().await;
    eprintln!("interrupted again: exiting without cleaning up");
    std::process::exit(interrupted_exit_code(again));
}

fn usage_error(e: clap::Error, args: &[OsString]) -> i32 {
    use clap::error::ErrorKind as K;
    if matches!(
        e.kind(),
        K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        if e.kind() == K::DisplayVersion && wants_json(args) {
            // One JSON document, as promised for every command.
            println!(
                "{}",
                serde_json::json!({"ok": true, "name": "pulsedev", "version": env!("CARGO_PKG_VERSION")})
            );
            return exit::SUCCESS;
        }
        let _ = e.print();
        return if e.kind() == K::DisplayHelpOnMissingArgumentOrSubcommand {
            exit::USAGE
        } else {
            exit::SUCCESS
        };
    }
    let err = usage_from_clap(&e);
    // Keep the promise of one JSON document on stdout even when parsing failed.
    if wants_json(args) {
        println!("{}", ui::failure_document(&err));
    } else {
        let color = std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::env::var("TERM").as_deref() != Ok("dumb");
        eprint!("{}", ui::render_error(&err, color));
    }
    exit::USAGE
}

/// A clap parse error in pulsedev's own format (`error[usage]: …` and a `hint:`), so a
/// script or a person reads every failure the same way. Clap's first line is the
/// message; its tips ("a similar argument exists", "to pass '-x' as a value…") and the
/// usage line become the details.
fn usage_from_clap(e: &clap::Error) -> Error {
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim_end);
    let message = lines
        .next()
        .unwrap_or("invalid command line")
        .trim_start_matches("error: ")
        .to_string();
    let details: Vec<String> = lines
        .filter(|l| !l.trim().is_empty() && !l.starts_with("For more information"))
        .map(|l| l.trim().to_string())
        .collect();
    Error::new(ErrorKind::Usage, message)
        .with_details(details)
        .with_hint(
            "run `pulsedev --help` (or `pulsedev <command> --help`) for the commands and flags",
        )
}

fn wants_json(args: &[OsString]) -> bool {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // The last --output wins, as it does for clap.
    let mut json = false;
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.strip_prefix("--output=") {
            json = v == "json";
        } else if a == "--output" {
            json = args.get(i + 1).is_some_and(|v| v == "json");
        }
    }
    json
}

async fn dispatch(command: Command, ctx: &Ctx) -> Result<()> {
    match command {
        Command::Up(args) => cmd_up(ctx, &args, false, None).await,
        Command::Reset(args) => cmd_reset(ctx, args).await,
        Command::Doctor(args) => cmd_doctor(ctx, args).await,
        Command::Render(args) => cmd_render(ctx, args).await,
        Command::Status => cmd_status(ctx).await,
        Command::Trust(args) => cmd_trust(ctx, args).await,
        Command::Down => crate::cluster::cmd::down(ctx).await,
        Command::Kubeconfig(args) => crate::cluster::cmd::kubeconfig(ctx, &args).await,
        Command::Cluster(ClusterCommand::Create(args)) => {
            crate::cluster::cmd::create(ctx, &args).await
        }
        Command::Build(args) => cmd_build(ctx, args).await,
        Command::Dev(args) => {
            let mut config = ctx.cluster_config()?;
            config.observability |= args.up.with.iter().any(|w| w == "observability");
            let up = up_options(ctx, &config, &args.up, false);
            crate::dev::run(
                ctx,
                config,
                crate::dev::DevOptions {
                    up,
                    no_logs: args.no_logs,
                },
            )
            .await
        }
        Command::Logs(args) => {
            let config = ctx.existing_cluster_config()?;
            crate::dev::logs::run(
                ctx,
                config,
                crate::dev::logs::LogsOptions {
                    services: args.services,
                    follow: args.follow,
                    since: args.since,
                },
            )
            .await
        }
        Command::Db(DbCommand::Psql { args }) => crate::db::cmd_psql(ctx, args).await,
        Command::Db(DbCommand::Dump { file }) => crate::db::cmd_dump(ctx, file).await,
        Command::Db(DbCommand::Restore { file, yes }) => {
            crate::db::cmd_restore(ctx, file, yes).await
        }
        Command::Fetch(args) => {
            let mut config = ctx.config()?;
            config.observability |= args.with.iter().any(|w| w == "observability");
            crate::fetch::run(ctx, config).await
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "pulsedev", &mut script);
            if ctx.ui.json() {
                // One JSON document, as every command promises; the script is a field.
                ctx.ui.out_json(&serde_json::json!({
                    "ok": true,
                    "shell": shell.to_string(),
                    "script": String::from_utf8_lossy(&script),
                }));
            } else {
                use std::io::Write;
                let _ = std::io::stdout().write_all(&script);
            }
            Ok(())
        }
    }
}

async fn cmd_build(ctx: &Ctx, args: BuildArgs) -> Result<()> {
    use crate::images::{self, Event};
    let config = ctx.config()?;
    let services = images::select(&config, &args.services)?;
    Config {
        services: services.clone(),
        ..config.clone()
    }
    .check_services(true, false)?;
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

fn up_options(ctx: &Ctx, config: &Config, args: &UpArgs, reset: bool) -> crate::up::UpOptions {
    use crate::cluster::Recreate;
    crate::up::UpOptions {
        load: args
            .load
            .as_deref()
            .and_then(crate::config::LoadMode::parse),
        recreate: if reset {
            Recreate::Always
        } else if args.recreate {
            Recreate::OnDrift
        } else {
            Recreate::Never
        },
        timeout: Duration::from_secs(args.timeout),
        ports: crate::cluster::cmd::port_plan(ctx, config, args.no_host_ports),
        allow_external_binds: args.allow_external_binds,
        prune_data: args.prune_data,
        summary_event: false,
    }
}

async fn cmd_up(ctx: &Ctx, args: &UpArgs, reset: bool, config: Option<Config>) -> Result<()> {
    let mut config = match config {
        Some(c) => c,
        None => ctx.cluster_config()?,
    };
    config.observability |= args.with.iter().any(|w| w == "observability");
    let opts = up_options(ctx, &config, args, reset);
    crate::up::run(ctx, config, opts).await
}

/// `reset`: asks first on a terminal (the cluster's Postgres data goes with it).
async fn cmd_reset(ctx: &Ctx, args: ResetArgs) -> Result<()> {
    // Reset acts on a cluster that exists: in CI its name must be derivable.
    let config = ctx.existing_cluster_config()?;
    if !args.yes {
        // It deletes data: without a terminal to ask on, a script must say so itself.
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            return Err(Error::new(
                ErrorKind::Usage,
                format!(
                    "reset deletes the cluster {} and its data, and there is no terminal to ask for confirmation",
                    config.name
                ),
            )
            .with_hint("pass `--yes` to confirm (`pulsedev reset --yes`)"));
        }
        eprint!(
            "This deletes the cluster {} with its data (Postgres included) and makes it again. Continue? [y/N] ",
            config.name
        );
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(
                Error::new(ErrorKind::Declined, "reset declined: nothing was changed")
                    .with_hint("run `pulsedev reset --yes` to skip the question"),
            );
        }
    }
    if args.keep_data {
        let dump = crate::db::keep_data_dump(ctx).await?;
        ctx.ui.warn(&format!(
            "reset deletes the cluster {} and makes it again; the data comes back from {}",
            config.name,
            dump.display()
        ));
        if let Err(mut e) = cmd_up(ctx, &args.up, true, Some(config)).await {
            e.details
                .push(format!("the data is kept in {}", dump.display()));
            return Err(e);
        }
        return crate::db::keep_data_restore(ctx, &dump).await;
    }
    ctx.ui.warn(&format!(
        "reset deletes the cluster {} and its data (Postgres included), then makes it again",
        config.name
    ));
    cmd_up(ctx, &args.up, true, Some(config)).await
}

async fn cmd_doctor(ctx: &Ctx, args: DoctorArgs) -> Result<()> {
    let config = ctx.config()?;
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

async fn cmd_render(ctx: &Ctx, args: RenderArgs) -> Result<()> {
    let mut config = ctx.config_for_env(args.env)?;
    config.observability |= args.with.iter().any(|w| w == "observability");
    let dirs = crate::state::Dirs::from_process()?;
    // helm as `up` finds it: from PATH when recent enough, else pulsedev's pinned
    // release (cached, or downloaded and verified), so render works wherever up does.
    let helm = crate::helm::Helm {
        bin: ctx
            .interruptible(crate::tools::ensure(&crate::tools::HELM, &dirs, &ctx.ui))
            .await??,
    };
    let images = std::collections::BTreeMap::new();
    let request = crate::stack::Request {
        env: config.env,
        service: args.service.as_deref(),
        images: &images,
        cache: Some(&dirs.cache),
    };
    let rendered = ctx
        .interruptible(crate::stack::render(&config, &helm, &request))
        .await??;
    for note in &rendered.skipped {
        ctx.ui.warn(note);
    }
    if ctx.ui.json() {
        // The images the cluster's own workloads run (what `fetch` caches for `up`).
        let workload_images: Vec<String> = match args.service {
            Some(_) => Vec::new(),
            None => crate::images::upstream::workload_images(&config, &rendered.pieces)?
                .iter()
                .map(|n| n.full())
                .collect(),
        };
        ctx.ui.out_json(&serde_json::json!({
            "ok": true,
            "env": config.env,
            "sources": rendered.pieces.iter().map(|p| &p.source).collect::<Vec<_>>(),
            "skipped": rendered.skipped,
            "workload_images": workload_images,
            "yaml": rendered.to_yaml(),
        }));
    } else {
        ctx.ui.out(&rendered.to_yaml());
    }
    Ok(())
}

/// The HTTPS host port of the cluster: its own record knows the one it was made with
/// (CI mode picks one); the configured one otherwise.
fn https_port(paths: &crate::cluster::Paths, config: &Config) -> u16 {
    crate::cluster::read_record(paths)
        .ok()
        .flatten()
        .and_then(|r| r.ports.map(|p| p.https))
        .unwrap_or(config.ports.https)
}

/// `status`: read the picture from pulsedev's kubeconfig for `--name`, print it, exit 1
/// unless everything is ready.
async fn cmd_status(ctx: &Ctx) -> Result<()> {
    let config = ctx.existing_cluster_config()?;
    let paths = crate::cluster::Paths::new(&crate::state::Dirs::from_process()?, &config.name);
    let kubeconfig = paths.kubeconfig.clone();
    let context = kube::context_name(&config.name);
    // The configured services (the migrations Job is not a Deployment to watch).
    let services: Vec<String> = config
        .services
        .keys()
        .filter(|s| *s != crate::up::MIGRATIONS)
        .cloned()
        .collect();
    let spec = kube::StatusSpec::for_stack(
        &crate::stack::namespace(config.env),
        &services,
        https_port(&paths, &config),
    );
    let spinner = ctx.ui.spinner("reading the cluster");
    let report = ctx
        .interruptible(kube::collect_status(
            &kubeconfig,
            &config.name,
            &context,
            &spec,
        ))
        .await;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let report = report?;
    if ctx.ui.json() {
        ctx.ui.out_json(&report.to_json());
    } else {
        ctx.ui.out(&report.render(ctx.ui.mode.color_stdout));
    }
    match report.failure() {
        None => Ok(()),
        Some(mut e) => {
            // The JSON document already carries the error.
            e.emitted = true;
            Err(e)
        }
    }
}

/// `trust`: the CA certificate to a file; into or out of the OS store only when asked.
async fn cmd_trust(ctx: &Ctx, args: TrustArgs) -> Result<()> {
    use crate::trust;
    let config = ctx.existing_cluster_config()?;
    if (args.install || args.uninstall) && ctx.ci() {
        return Err(Error::new(
            ErrorKind::Usage,
            "refusing to change the OS trust store in CI",
        )
        .with_hint("in CI pass the exported file to clients instead, e.g. `curl --cacert FILE`"));
    }
    let dirs = crate::state::Dirs::from_process()?;
    let paths = crate::cluster::Paths::new(&dirs, &config.name);
    let kubeconfig = paths.kubeconfig.clone();
    let cert = args.out.clone().unwrap_or_else(|| paths.ca_cert.clone());
    let store = || {
        trust::detect(&|p| p.is_dir()).ok_or_else(|| {
            Error::new(
                ErrorKind::ToolMissing,
                "no OS trust store pulsedev knows how to update",
            )
            .with_hint(format!(
                "add {} to your system's trust store by hand",
                cert.display()
            ))
        })
    };
    let mut said = Vec::new();
    if args.uninstall {
        said.push(trust::uninstall(&store()?, &cert, &config.name)?);
    } else {
        // A cluster pulsedev made, or the same "does not exist" as status and kubeconfig.
        crate::cluster::guard(&dirs, &config.name)?;
        let client = ctx
            .interruptible(kube::connect(
                &kubeconfig,
                &kube::context_name(&config.name),
            ))
            .await??;
        let pem = ctx
            .interruptible(kube::secrets::read_key(
                &client,
                trust::CA_NAMESPACE,
                trust::CA_SECRET,
                "ca.crt",
            ))
            .await??
            .ok_or_else(|| {
                Error::new(ErrorKind::NotReady, "the local CA has not been issued yet")
                    .with_hint("run `pulsedev up` and wait until it finishes, then run again")
            })?;
        let dest = if args.out.is_some() {
            trust::Dest::UserPath
        } else {
            trust::Dest::State
        };
        trust::write_cert(&cert, &pem, dest)?;
        said.push(format!(
            "wrote the local CA certificate to {}",
            cert.display()
        ));
        if args.install {
            said.push(trust::install(&store()?, &pem, &cert, &config.name)?);
        } else {
            said.push(format!(
                "use it with `curl --cacert {} https://api.pulsewatch.localhost{}/health`, or trust it system-wide with `sudo pulsedev trust --install`",
                cert.display(),
                match https_port(&paths, &config) { 443 => String::new(), p => format!(":{p}") }
            ));
        }
    }
    if ctx.ui.json() {
        ctx.ui.out_json(&serde_json::json!({
            "ok": true,
            "ca_certificate": cert,
            "installed": args.install,
            "uninstalled": args.uninstall,
            "messages": said,
        }));
    } else {
        ctx.ui.out(&format!("{}\n", said.join("\n")));
    }
    Ok(())
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
        assert!(!wants_json(&a(&[
            "pulsedev", "--output", "json", "--output", "human", "x"
        ])));
    }
}
