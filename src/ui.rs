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
    /// The live lines on the terminal, when some are drawn: every other write to stderr
    /// goes around them (`MultiProgress::suspend`), or the terminal keeps stale copies
    /// of them (a line printed under a bar pushes the bars down, and the next redraw
    /// only clears the lines it knows of).
    live: std::sync::Arc<std::sync::Mutex<Option<indicatif::MultiProgress>>>,
}

impl Ui {
    pub fn new(mode: Mode) -> Ui {
        Ui {
            mode,
            started: Instant::now(),
            live: Default::default(),
        }
    }

    /// Writes `text` to stderr (scrubbed of secrets), around the live lines when they
    /// are drawn.
    fn to_stderr(&self, text: &str) {
        let text = scrub(text);
        let live = self.live.lock().expect("not poisoned").clone();
        let write = || {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(text.as_bytes());
            let _ = e.flush();
        };
        match live {
            Some(multi) => multi.suspend(write),
            None => write(),
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
        self.to_stderr(&format!("{line}\n"));
    }

    /// A line shown only with `--verbose`.
    pub fn debug(&self, msg: &str) {
        if self.mode.verbose {
            self.info(msg);
        }
    }

    pub fn warn(&self, msg: &str) {
        let tag = paint(self.mode.color_stderr, Style::Yellow, "warning");
        self.to_stderr(&format!("{tag}: {msg}\n"));
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
        // Inside the live lines when some are drawn: two draw targets on one terminal
        // leave each other's lines behind.
        let bar = match self.live.lock().expect("not poisoned").as_ref() {
            Some(multi) => multi.add(bar),
            None => {
                bar.set_draw_target(live_target());
                bar
            }
        };
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
            self.to_stderr(&render_error(e, self.mode.color_stderr));
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
        let multi = (self.mode.progress == Progress::Bars).then(|| {
            let multi = indicatif::MultiProgress::with_draw_target(live_target());
            *self.live.lock().expect("not poisoned") = Some(multi.clone());
            multi
        });
        TaskLines {
            ui: self.clone(),
            multi,
            bars: Default::default(),
        }
    }
}

/// (columns, rows) of the terminal on stderr, when it is one.
fn stderr_size() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ fills the winsize we own; fd 2 is only read.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some((size.ws_col, size.ws_row))
}

/// Columns of the terminal on stderr, when it is one.
fn stderr_columns() -> Option<usize> {
    stderr_size().map(|(cols, _)| cols as usize)
}

/// Where indicatif draws live lines: stderr, with real line ends.
///
/// indicatif writes each live line and then pads it with spaces to the terminal's full
/// width, letting the terminal's automatic wrap start the next line (indicatif
/// src/draw_target.rs, `DrawState::draw_to_term`: "keep the cursor on the right terminal
/// side"). Terminals then hold the lines as one wrapped line: tmux joins them
/// (`capture-pane -J`, copy mode), a resize reflows them into garbage. Here the padding
/// becomes "erase to the end of the line", and the line ends with `\r\n` when the next
/// one starts; the cursor stays where indicatif expects it (on the last line).
#[derive(Debug, Default)]
struct LineTerm {
    /// The last line was written and padded: its newline is still owed.
    pending: std::sync::Mutex<bool>,
}

impl LineTerm {
    fn emit(&self, text: &str) -> std::io::Result<()> {
        std::io::stderr().lock().write_all(text.as_bytes())
    }

    fn settle(&self) -> std::io::Result<()> {
        let mut pending = self.pending.lock().expect("not poisoned");
        if std::mem::take(&mut *pending) {
            self.emit("\r\n")?;
        }
        Ok(())
    }

    fn forget(&self) {
        *self.pending.lock().expect("not poisoned") = false;
    }
}

impl indicatif::TermLike for LineTerm {
    fn width(&self) -> u16 {
        stderr_size().map_or(80, |(cols, _)| cols)
    }

    fn height(&self) -> u16 {
        stderr_size().map_or(24, |(_, rows)| rows.max(1))
    }

    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        // Still on the last line: the owed newline is not needed to go up from it.
        self.forget();
        if n > 0 {
            self.emit(&format!("\x1b[{n}A"))?;
        }
        Ok(())
    }

    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.forget();
        if n > 0 {
            self.emit(&format!("\x1b[{n}B"))?;
        }
        Ok(())
    }

    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.emit(&format!("\x1b[{n}C"))?;
        }
        Ok(())
    }

    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.emit(&format!("\x1b[{n}D"))?;
        }
        Ok(())
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.settle()?;
        self.emit(&format!("{s}\x1b[K\r\n"))
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        if !s.is_empty() && s.bytes().all(|b| b == b' ') {
            // indicatif's padding to the full width.
            *self.pending.lock().expect("not poisoned") = true;
            return self.emit("\x1b[K");
        }
        self.settle()?;
        self.emit(s)
    }

    fn clear_line(&self) -> std::io::Result<()> {
        self.forget();
        self.emit("\r\x1b[2K")
    }

    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().lock().flush()
    }
}

/// indicatif's target for live lines on stderr (see `LineTerm`), at most 20 redraws a
/// second like indicatif's own stderr target.
fn live_target() -> indicatif::ProgressDrawTarget {
    indicatif::ProgressDrawTarget::term_like_with_hz(Box::new(LineTerm::default()), 20)
}

/// `text` cut to `max` visible characters (an ellipsis marks the cut). Colour escapes
/// (`ESC [ … m`, as `paint` writes them) take no room and are never cut in half.
fn fit(text: &str, max: usize) -> String {
    let visible = |t: &str| {
        let mut n = 0;
        let mut escape = false;
        for c in t.chars() {
            match (escape, c) {
                (false, '\x1b') => escape = true,
                (true, 'm') => escape = false,
                (true, _) => {}
                (false, _) => n += 1,
            }
        }
        n
    };
    if visible(text) <= max {
        return text.to_string();
    }
    let mut out = String::new();
    let (mut n, mut escape, mut coloured) = (0, false, false);
    for c in text.chars() {
        if escape || c == '\x1b' {
            escape = c != 'm';
            coloured = true;
            out.push(c);
            continue;
        }
        if n + 1 >= max {
            break;
        }
        out.push(c);
        n += 1;
    }
    out.push('…');
    if coloured {
        out.push_str("\x1b[0m");
    }
    out
}

/// Width of a live line's task name: step names line up.
const TASK_WIDTH: usize = 18;

impl TaskLines {
    /// Shows `msg` as the current state of `task`. `important` lines are also
    /// printed in plain mode; the others only update a bar (or show with -v).
    pub fn update(&self, task: &str, msg: &str, important: bool) {
        match &self.multi {
            Some(multi) => {
                let mut bars = self.bars.lock().expect("bars lock");
                let bar = bars.entry(task.to_string()).or_insert_with(|| {
                    let bar = multi.add(indicatif::ProgressBar::new_spinner());
                    // Never the whole width: a line that fills the last column leaves
                    // the cursor pending a wrap, and terminals (tmux) join it to the
                    // next one.
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(&format!(
                            "{{spinner}} {{prefix:<{TASK_WIDTH}}} {{elapsed:>4}} {{msg}}"
                        ))
                        .expect("valid template"),
                    );
                    bar.set_prefix(task.to_string());
                    bar.enable_steady_tick(Duration::from_millis(100));
                    bar
                });
                bar.set_message(self.fitted(task, &scrub(msg)));
            }
            None if important => self.ui.info(&format!("{task}: {msg}")),
            None => self.ui.debug(&format!("{task}: {msg}")),
        }
    }

    /// `msg` cut to what fits after the spinner, the task and the time on the
    /// terminal's current width, one column short of it.
    fn fitted(&self, task: &str, msg: &str) -> String {
        let used = 2 + task.chars().count().max(TASK_WIDTH) + 1 + 4 + 1;
        match stderr_columns() {
            Some(cols) => fit(msg, cols.saturating_sub(used + 1).max(10)),
            None => msg.to_string(),
        }
    }

    /// Ends `task`'s line: its live line goes, one final line is printed above the
    /// lines still running, and stays.
    pub fn finish(&self, task: &str, msg: &str) {
        match &self.multi {
            Some(multi) => {
                if let Some(bar) = self.bars.lock().expect("bars lock").remove(task) {
                    bar.finish_and_clear();
                }
                // Written by us, above the live lines and with its own newline: lines
                // indicatif prints itself are padded to the full width, and the text
                // after the last one would run into it.
                let cols = stderr_columns().unwrap_or(usize::MAX);
                let line = fit(
                    &format!("  {task:<TASK_WIDTH$} {}", scrub(msg)),
                    cols.saturating_sub(1),
                );
                multi.suspend(|| {
                    let mut e = std::io::stderr().lock();
                    let _ = writeln!(e, "{line}");
                    let _ = e.flush();
                });
            }
            None => self.ui.info(&format!("{task}: {msg}")),
        }
    }

    /// Removes every live line (before the final summary is printed); later writes to
    /// stderr go straight out again.
    pub fn clear(&self) {
        if let Some(multi) = &self.multi {
            for (_, bar) in std::mem::take(&mut *self.bars.lock().expect("bars lock")) {
                bar.finish_and_clear();
            }
            let _ = multi.clear();
            *self.ui.live.lock().expect("not poisoned") = None;
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

    #[test]
    fn live_lines_are_cut_to_fit_without_breaking_colour() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("a longer message", 8), "a longe…");
        let green = paint(true, Style::Green, "done");
        let cut = fit(&format!("{green} (0.6s): kind /tmp/bin/kind"), 10);
        assert!(cut.starts_with(&green), "{cut:?}");
        assert!(cut.ends_with("…\x1b[0m"), "{cut:?}");
        // Visible characters: "done (0.6" and the ellipsis.
        let plain: String = cut.replace(&green, "done").replace("\x1b[0m", "");
        assert_eq!(plain, "done (0.6…");
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
        let env = crate::test_env;
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
