//! Output: the mode (human or JSON, colour, progress bars or plain lines), decided
//! once by a pure function, and the renderers for errors and status lines.
//!
//! Owns: how things look. Data goes to stdout; logs, progress and prompts to stderr.
//! Must not decide what to do: it renders what commands hand it.
//!
//! Every string leaves the process through this module, and each is scrubbed of the
//! known secret values on the way out (`crate::redact`): call sites never need to.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::error::Error;
use crate::redact::{scrub, scrub_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// How progress is shown on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Live bars and spinners (indicatif): an interactive terminal only.
    Bars,
    /// One timestamped line per event: CI, pipes, dumb terminals.
    Lines,
    /// Nothing but errors (`--quiet`).
    Silent,
}

/// Everything the output mode depends on; gathered once in `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    pub format: Format,
    pub color: ColorChoice,
    pub quiet: bool,
    pub verbose: bool,
    /// NO_COLOR is set to a non-empty value.
    pub no_color: bool,
    /// TERM=dumb.
    pub dumb_term: bool,
    pub stdout_tty: bool,
    pub stderr_tty: bool,
    /// A CI system is detected (see `is_ci`); they often fake a TTY.
    pub ci: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub format: Format,
    /// Colour on stderr (messages, errors, progress).
    pub color_stderr: bool,
    /// Colour on stdout (human data such as the doctor table); never for JSON.
    pub color_stdout: bool,
    pub progress: Progress,
    pub verbose: bool,
}

/// The one decision about output, as a pure function of its inputs.
pub fn decide(i: Inputs) -> Mode {
    let color_for = |tty: bool| match i.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => tty && !i.no_color && !i.dumb_term,
    };
    let progress = if i.quiet {
        Progress::Silent
    } else if i.stderr_tty && !i.ci && !i.dumb_term {
        Progress::Bars
    } else {
        Progress::Lines
    };
    Mode {
        format: i.format,
        color_stderr: color_for(i.stderr_tty),
        color_stdout: i.format == Format::Human && color_for(i.stdout_tty),
        progress,
        verbose: i.verbose && !i.quiet,
    }
}

/// Whether we run under CI: `CI` set to anything but "" / "0" / "false", or one of
/// the CI systems that do not set `CI`.
pub fn is_ci(env: &dyn Fn(&str) -> Option<String>) -> bool {
    if let Some(v) = env("CI") {
        return !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false");
    }
    [
        "GITHUB_ACTIONS",
        "BUILDKITE",
        "TF_BUILD",
        "JENKINS_URL",
        "GITLAB_CI",
        "TEAMCITY_VERSION",
    ]
    .iter()
    .any(|k| env(k).is_some_and(|v| !v.is_empty()))
}

/// Minimal ANSI styling; only applied when the stream's mode says so.
#[derive(Debug, Clone, Copy)]
pub enum Style {
    Bold,
    Red,
    Yellow,
    Green,
    Dim,
}

pub fn paint(on: bool, style: Style, text: &str) -> String {
    if !on {
        return text.to_string();
    }
    let code = match style {
        Style::Bold => "1",
        Style::Red => "1;31",
        Style::Yellow => "1;33",
        Style::Green => "32",
        Style::Dim => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// The human rendering of an error (stderr):
///
/// ```text
/// error[port-in-use]: port 443 on 127.0.0.1 is in use by pid 812 (nginx)
///   detail line
///
/// hint: stop that process, or choose another port with `--https-port`
/// ```
pub fn render_error(e: &Error, color: bool) -> String {
    scrub(&render_error_raw(e, color)).into_owned()
}

fn render_error_raw(e: &Error, color: bool) -> String {
    let mut out = format!(
        "{}: {}\n",
        paint(color, Style::Red, &format!("error[{}]", e.id())),
        e.message
    );
    for d in &e.details {
        for line in d.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some(h) = &e.hint {
        out.push('\n');
        out.push_str(&paint(color, Style::Bold, "hint"));
        out.push_str(": ");
        out.push_str(h);
        out.push('\n');
    }
    out
}

/// The JSON form of an error, inside `{"ok": false, "error": …}`.
pub fn error_json(e: &Error) -> serde_json::Value {
    scrub_json(&error_json_raw(e))
}

fn error_json_raw(e: &Error) -> serde_json::Value {
    let mut v = json!({
        "id": e.id(),
        "message": e.message,
        "hint": e.hint,
        "exit_code": e.exit_code(),
    });
    if !e.details.is_empty() {
        v["details"] = json!(e.details);
    }
    if let Some(data) = &e.data {
        v["data"] = data.clone();
    }
    v
}

/// The whole failure document for `--output json`.
pub fn failure_document(e: &Error) -> serde_json::Value {
    json!({ "ok": false, "error": error_json(e) })
}

/// Writes to the user according to the mode. Cheap to clone; commands hold one.
#[derive(Debug, Clone)]
pub struct Ui {
    pub mode: Mode,
    started: Instant,
}

impl Ui {
    pub fn new(mode: Mode) -> Ui {
        Ui {
            mode,
            started: Instant::now(),
        }
    }

    pub fn json(&self) -> bool {
        self.mode.format == Format::Json
    }

    /// A progress line on stderr (plain modes); bars are drawn by `spinner`.
    pub fn info(&self, msg: &str) {
        if self.mode.progress == Progress::Silent {
            return;
        }
        let line = match self.mode.progress {
            Progress::Lines => format!("[{}] {msg}", elapsed(self.started.elapsed())),
            _ => msg.to_string(),
        };
        let _ = writeln!(std::io::stderr(), "{}", scrub(&line));
    }

    /// A line shown only with `--verbose`.
    pub fn debug(&self, msg: &str) {
        if self.mode.verbose {
            self.info(msg);
        }
    }

    pub fn warn(&self, msg: &str) {
        let tag = paint(self.mode.color_stderr, Style::Yellow, "warning");
        let _ = writeln!(std::io::stderr(), "{tag}: {}", scrub(msg));
    }

    /// Data for stdout (human mode).
    pub fn out(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(scrub(text).as_bytes());
        let _ = stdout.flush();
    }

    /// The single JSON document of `--output json`.
    pub fn out_json(&self, value: &serde_json::Value) {
        let text = serde_json::to_string_pretty(&scrub_json(value)).expect("JSON values serialize");
        self.out(&format!("{text}\n"));
    }

    /// A spinner on stderr while `msg` runs; `None` unless bars are on.
    pub fn spinner(&self, msg: &str) -> Option<indicatif::ProgressBar> {
        if self.mode.progress != Progress::Bars {
            return None;
        }
        let bar = indicatif::ProgressBar::new_spinner().with_message(scrub(msg).into_owned());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Some(bar)
    }

    /// Reports a failure: JSON document on stdout, or the human rendering on stderr.
    pub fn error(&self, e: &Error) {
        if self.json() {
            self.out_json(&failure_document(e));
        } else {
            let _ = write!(
                std::io::stderr(),
                "{}",
                render_error(e, self.mode.color_stderr)
            );
        }
    }
}

/// One live status line per task (e.g. per image build): indicatif bars on a
/// terminal, `[time] task: message` lines otherwise, nothing when quiet.
/// Safe to call from several tasks at once.
pub struct TaskLines {
    ui: Ui,
    multi: Option<indicatif::MultiProgress>,
    bars: std::sync::Mutex<std::collections::BTreeMap<String, indicatif::ProgressBar>>,
}

impl Ui {
    pub fn task_lines(&self) -> TaskLines {
        TaskLines {
            ui: self.clone(),
            multi: (self.mode.progress == Progress::Bars).then(indicatif::MultiProgress::new),
            bars: Default::default(),
        }
    }
}

impl TaskLines {
    /// Shows `msg` as the current state of `task`. `important` lines are also
    /// printed in plain mode; the others only update a bar (or show with -v).
    pub fn update(&self, task: &str, msg: &str, important: bool) {
        match &self.multi {
            Some(multi) => {
                let mut bars = self.bars.lock().expect("bars lock");
                let bar = bars.entry(task.to_string()).or_insert_with(|| {
                    let bar = multi.add(indicatif::ProgressBar::new_spinner());
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{spinner} {prefix} {wide_msg} {elapsed}",
                        )
                        .expect("valid template"),
                    );
                    bar.set_prefix(task.to_string());
                    bar.enable_steady_tick(Duration::from_millis(100));
                    bar
                });
                bar.set_message(scrub(msg).into_owned());
            }
            None if important => self.ui.info(&format!("{task}: {msg}")),
            None => self.ui.debug(&format!("{task}: {msg}")),
        }
    }

    /// Ends `task`'s line with a final message.
    pub fn finish(&self, task: &str, msg: &str) {
        match &self.multi {
            Some(_) => {
                if let Some(bar) = self.bars.lock().expect("bars lock").get(task) {
                    bar.set_style(
                        indicatif::ProgressStyle::with_template("  {prefix} {wide_msg}")
                            .expect("valid template"),
                    );
                    bar.finish_with_message(scrub(msg).into_owned());
                }
            }
            None => self.ui.info(&format!("{task}: {msg}")),
        }
    }

    /// Removes every bar (before the final summary is printed).
    pub fn clear(&self) {
        if let Some(multi) = &self.multi {
            let _ = multi.clear();
        }
    }
}

/// Shows the steps of a plan as they run, one line per step (a spinner on a terminal,
/// timestamped lines elsewhere); detail lines of a step (builds) go through `lines()`.
pub struct StepProgress {
    lines: TaskLines,
    color: bool,
}

impl StepProgress {
    pub fn new(ui: &Ui) -> StepProgress {
        StepProgress {
            lines: ui.task_lines(),
            color: ui.mode.color_stderr,
        }
    }

    pub fn lines(&self) -> &TaskLines {
        &self.lines
    }
}

impl crate::plan::Observer for StepProgress {
    fn started(&self, name: &str) {
        self.lines.update(name, "running", true);
    }

    fn finished(&self, r: &crate::plan::StepReport) {
        use crate::plan::Status;
        let (word, style) = match r.status {
            Status::Done => ("done", Style::Green),
            Status::Skipped => ("skipped", Style::Dim),
            Status::Failed => ("FAILED", Style::Red),
            Status::NotRun => ("not run", Style::Dim),
        };
        let detail = r
            .detail
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        let msg = format!(
            "{} ({:.1}s){detail}",
            paint(self.color, style, word),
            r.seconds
        );
        self.lines.finish(&r.name, &msg);
    }
}

fn elapsed(d: Duration) -> String {
    let s = d.as_secs_f64();
    format!("{s:6.1}s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn all_inputs() -> Vec<Inputs> {
        let mut v = Vec::new();
        let b = [false, true];
        for format in [Format::Human, Format::Json] {
            for color in [ColorChoice::Auto, ColorChoice::Always, ColorChoice::Never] {
                for quiet in b {
                    for no_color in b {
                        for dumb_term in b {
                            for stdout_tty in b {
                                for stderr_tty in b {
                                    for ci in b {
                                        v.push(Inputs {
                                            format,
                                            color,
                                            quiet,
                                            verbose: true,
                                            no_color,
                                            dumb_term,
                                            stdout_tty,
                                            stderr_tty,
                                            ci,
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        v
    }

    /// Every combination of the inputs, checked against the rules stated plainly.
    #[test]
    fn output_mode_over_every_combination() {
        let inputs = all_inputs();
        assert_eq!(inputs.len(), 2 * 3 * 64);
        for i in inputs {
            let m = decide(i);
            assert_eq!(m.format, i.format);
            // Bars need an interactive stderr that is not a CI log or a dumb terminal.
            let bars = !i.quiet && i.stderr_tty && !i.ci && !i.dumb_term;
            assert_eq!(m.progress == Progress::Bars, bars, "{i:?}");
            assert_eq!(m.progress == Progress::Silent, i.quiet, "{i:?}");
            // Colour: forced either way by the flag; in auto, only on a TTY, and
            // NO_COLOR / TERM=dumb win.
            let auto = |tty: bool| tty && !i.no_color && !i.dumb_term;
            let expect_err = match i.color {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => auto(i.stderr_tty),
            };
            assert_eq!(m.color_stderr, expect_err, "{i:?}");
            let expect_out = i.format == Format::Human
                && match i.color {
                    ColorChoice::Always => true,
                    ColorChoice::Never => false,
                    ColorChoice::Auto => auto(i.stdout_tty),
                };
            assert_eq!(m.color_stdout, expect_out, "{i:?}");
            assert_eq!(m.verbose, !i.quiet, "{i:?}");
        }
    }

    #[test]
    fn json_never_colours_stdout() {
        for i in all_inputs()
            .into_iter()
            .filter(|i| i.format == Format::Json)
        {
            assert!(!decide(i).color_stdout);
        }
    }

    #[test]
    fn ci_detection() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(is_ci(&env(&[("CI", "true")])));
        assert!(is_ci(&env(&[("CI", "1")])));
        assert!(!is_ci(&env(&[("CI", "false")])));
        assert!(!is_ci(&env(&[("CI", "")])));
        assert!(!is_ci(&env(&[("CI", "0"), ("GITHUB_ACTIONS", "true")])));
        assert!(is_ci(&env(&[("GITHUB_ACTIONS", "true")])));
        assert!(!is_ci(&env(&[])));
    }

    #[test]
    fn error_rendering_human_and_json() {
        let e = Error::new(
            ErrorKind::ConfigInvalid,
            "configuration is invalid (2 problems)",
        )
        .with_details(vec![
            "a.toml:1:1: x: bad".into(),
            "a.toml:2:1: y: bad".into(),
        ])
        .with_hint("fix the listed keys");
        insta::assert_snapshot!(render_error(&e, false), @r"
        error[config-invalid]: configuration is invalid (2 problems)
          a.toml:1:1: x: bad
          a.toml:2:1: y: bad

        hint: fix the listed keys
        ");
        assert!(render_error(&e, true).contains("\x1b[1;31merror[config-invalid]\x1b[0m"));
        let doc = failure_document(&e);
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["error"]["id"], "config-invalid");
        assert_eq!(doc["error"]["hint"], "fix the listed keys");
        assert_eq!(doc["error"]["exit_code"], 4);
        assert_eq!(doc["error"]["details"][1], "a.toml:2:1: y: bad");
    }
}
