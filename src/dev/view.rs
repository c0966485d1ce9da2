//! How `dev` and `logs` print: one line per pod log line with the service's prefix and
//! colour, the loop's own lines between them, or one JSON event per line.
//!
//! Owns: the look of those lines. Everything goes through `Ui::out` (stdout, scrubbed
//! of secret values); colour only when `ui` decided stdout may have it (`--color`,
//! NO_COLOR, TERM=dumb, a terminal).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::Value;

use crate::kube::logs::LogLine;
use crate::ui::Ui;

/// ANSI colours for service prefixes, picked in order of first appearance (the
/// services' names sorted), like docker compose's and Tilt's per-resource colours.
const PALETTE: [&str; 6] = ["36", "35", "34", "32", "33", "96"];

pub struct View {
    ui: Ui,
    width: usize,
    colours: Mutex<BTreeMap<String, &'static str>>,
}

impl View {
    /// `services`: the names known up front (prefix width and stable colours).
    pub fn new(ui: &Ui, services: &[String]) -> View {
        let mut colours = BTreeMap::new();
        let mut sorted = services.to_vec();
        sorted.sort();
        for (i, s) in sorted.iter().enumerate() {
            colours.insert(s.clone(), PALETTE[i % PALETTE.len()]);
        }
        View {
            ui: ui.clone(),
            width: services.iter().map(String::len).max().unwrap_or(0).max(4),
            colours: Mutex::new(colours),
        }
    }

    pub fn json(&self) -> bool {
        self.ui.json()
    }

    /// `<service> | <text>`, padded, the prefix coloured when allowed.
    pub fn prefix_line(&self, service: &str, text: &str) -> String {
        let mut colours = self.colours.lock().expect("not poisoned");
        let n = colours.len();
        let colour = *colours
            .entry(service.to_string())
            .or_insert(PALETTE[n % PALETTE.len()]);
        let prefix = format!("{service:<w$} |", w = self.width);
        if self.ui.mode.color_stdout {
            format!("\x1b[{colour}m{prefix}\x1b[0m {text}\n")
        } else {
            format!("{prefix} {text}\n")
        }
    }

    pub fn log(&self, line: &LogLine) {
        if self.json() {
            self.event(serde_json::json!({
                "event": "log",
                "service": line.service,
                "pod": line.pod,
                "container": line.container,
                "time": line.time,
                "line": line.text,
            }));
        } else {
            self.ui.out(&self.prefix_line(&line.service, &line.text));
        }
    }

    /// A line of the loop itself (human mode), prefixed `dev`.
    pub fn say(&self, text: &str) {
        if !self.json() {
            let t = if self.ui.mode.color_stdout {
                "\x1b[1mdev\x1b[0m".to_string()
            } else {
                "dev".to_string()
            };
            let pad = " ".repeat(self.width.saturating_sub(3));
            self.ui.out(&format!("{t}{pad} | {text}\n"));
        }
    }

    /// One JSON event on one line (JSON mode).
    pub fn event(&self, v: Value) {
        if self.json() {
            self.ui.out(&format!(
                "{}\n",
                serde_json::to_string(&v).expect("JSON values serialize")
            ));
        }
    }

    /// A warning, as `up` gives one (stderr, both modes).
    pub fn warn(&self, text: &str) {
        self.ui.warn(text);
    }

    pub fn error(&self, e: &crate::error::Error) {
        if self.json() {
            let mut v = crate::ui::error_json(e);
            v["event"] = "error".into();
            self.event(v);
        } else {
            self.ui.error(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::{ColorChoice, Format, Inputs, decide};

    fn ui(color: ColorChoice, no_color: bool) -> Ui {
        Ui::new(decide(Inputs {
            format: Format::Human,
            color,
            quiet: false,
            verbose: false,
            no_color,
            dumb_term: false,
            stdout_tty: true,
            stderr_tty: true,
            ci: false,
        }))
    }

    #[test]
    fn prefixes_are_padded_and_coloured_only_when_the_ui_allows() {
        let services = vec!["api".to_string(), "worker".to_string()];
        let plain = View::new(&ui(ColorChoice::Auto, true), &services);
        assert_eq!(plain.prefix_line("api", "hello"), "api    | hello\n");
        let never = View::new(&ui(ColorChoice::Never, false), &services);
        assert_eq!(never.prefix_line("worker", "x"), "worker | x\n");
        let coloured = View::new(&ui(ColorChoice::Auto, false), &services);
        let a = coloured.prefix_line("api", "hello");
        let w = coloured.prefix_line("worker", "hello");
        assert!(a.starts_with("\x1b[36m"), "{a:?}");
        assert!(w.starts_with("\x1b[35m"), "{w:?}");
    }
}
