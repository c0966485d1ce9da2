//! Bounded fuzzing (proptest) of the two parsers that read what users write:
//! pulsedev.toml and `.dockerignore`. Issue 13 ran 900 random configs by hand; these
//! keep that check in every `scripts/test` run. The case counts are fixed so the run
//! stays within seconds (PROPTEST_CASES overrides them for a longer local session).

use std::path::Path;

use proptest::prelude::*;
use pulsedev::images::dockerignore::{Matcher, clean};

fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Fragments of real pulsedev.toml shapes, so the generator reaches past the TOML
/// parser into the validation of sections, keys and values.
fn toml_fragment() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "name",
        "env",
        "timeout",
        "parallel",
        "http",
        "https",
        "registry",
        "context",
        "dockerfile",
        "chart",
        "target",
        "build_args",
        "observability",
        "kind_config",
        "ports",
        "images",
        "services",
        "x",
        "",
    ]);
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-zA-Z0-9 ./_-]{0,20}".prop_map(|s| format!("{s:?}")),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{ A = \"b\" }".to_string()),
        "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
        Just("1e400".to_string()),
        Just("\"\\u0000\"".to_string()),
    ];
    let section = prop::sample::select(vec![
        "",
        "[ports]",
        "[images]",
        "[services.api]",
        "[services.\"a b\"]",
        "[services]",
        "[[services]]",
        "[ports.http]",
        "[env]",
    ]);
    (section, key, value).prop_map(|(s, k, v)| format!("{s}\n{k} = {v}\n"))
}

proptest! {
    #![proptest_config(cases(400))]

    #[test]
    fn the_config_parser_never_panics_on_any_text(text in "\\PC{0,300}") {
        let _ = pulsedev::config::parse(&text, Path::new("pulsedev.toml"), Path::new("/work"));
    }

    #[test]
    fn the_config_parser_reports_errors_with_an_id(parts in prop::collection::vec(toml_fragment(), 0..8)) {
        let text = parts.concat();
        if let Err(e) = pulsedev::config::parse(&text, Path::new("pulsedev.toml"), Path::new("/work")) {
            prop_assert_eq!(e.id(), "config-invalid", "{}", e.message);
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn the_dockerignore_matcher_never_panics_and_always_sends_the_dockerfile(
        lines in prop::collection::vec("!?[a-z*?/.\\[\\]^\\\\ #-]{0,12}", 0..10),
        paths in prop::collection::vec("[a-z*?./\\[\\]-]{1,16}", 1..10),
    ) {
        let text = lines.join("\n");
        if let Ok(m) = Matcher::from_dockerignore(&text, "Dockerfile") {
            // The docker CLI always sends these two, whatever the patterns say.
            prop_assert!(!m.excluded("Dockerfile"), "{text:?}");
            prop_assert!(!m.excluded(".dockerignore"), "{text:?}");
            for p in &paths {
                let p = clean(p);
                let _ = m.excluded(&p);
                let _ = m.may_descend(&p);
            }
        }
    }

    #[test]
    fn cleaning_a_path_is_idempotent(path in "[a-z./]{0,24}") {
        let once = clean(&path);
        prop_assert_eq!(clean(&once), once.clone(), "{:?}", path);
    }
}
