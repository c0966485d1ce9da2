//! The command-line contract: usage errors, configuration errors, exit codes, output.

use crate::harness::Pd;

#[test]
fn a_config_with_two_mistakes_reports_both_with_lines_and_exits_4() {
    let pd = Pd::new();
    pd.write(
        "pulsedev.toml",
        "version = 1\nname = \"pulse dev\"\n\n[ports]\nhttp = 8080\nhtps = 8443\n",
    );
    let pd = pd.args(&["doctor"]);
    let run = pd.run();
    assert_eq!(run.code, 4, "{run:?}");
    assert_eq!(run.stdout, "");
    let stderr = run
        .stderr
        .replace(&pd.work.path().display().to_string(), "[WORK]");
    insta::assert_snapshot!(stderr, @r#"
    error[config-invalid]: configuration is invalid (2 problems)
      [WORK]/pulsedev.toml:2:8: name: "pulse dev" is not a valid cluster name: use 1-50 lowercase letters, digits and '-', not starting or ending with '-'
      [WORK]/pulsedev.toml:6:1: ports.htps: unknown key (did you mean `ports.https`?)

    hint: fix the listed keys; `pulsedev --help` and README.md describe every setting
    "#);
}

#[test]
fn config_errors_in_json_mode_are_one_document() {
    let pd = Pd::new();
    pd.write("custom.toml", "[images]\nload = \"ftp\"\nparalel = 2\n");
    let run = pd
        .args(&["--config", "custom.toml", "--output", "json", "doctor"])
        .run();
    assert_eq!(run.code, 4);
    let doc = run.json();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["error"]["id"], "config-invalid");
    let details: Vec<&str> = doc["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(details.len(), 2, "{details:?}");
    // In the file's order, line 2 before line 3 (the checks visit unknown keys first).
    assert!(
        details[0].ends_with(
            "custom.toml:2:8: images.load: expected \"registry\" or \"archive\", found \"ftp\""
        ),
        "{details:?}"
    );
    assert!(
        details[1].ends_with(
            "custom.toml:3:1: images.paralel: unknown key (did you mean `images.parallel`?)"
        ),
        "{details:?}"
    );
}

#[test]
fn environment_values_are_validated_too() {
    let run = Pd::new()
        .env("PULSEDEV_HTTPS_PORT", "https")
        .args(&["doctor"])
        .run();
    assert_eq!(run.code, 4);
    assert!(run.stderr.contains("environment variable PULSEDEV_HTTPS_PORT: expected a port number 1-65535, found \"https\""), "{}", run.stderr);
}

#[test]
fn an_explicit_missing_config_file_is_an_error() {
    let run = Pd::new().args(&["--config", "nope.toml", "doctor"]).run();
    assert_eq!(run.code, 4);
    assert!(
        run.stderr
            .starts_with("error[config-invalid]: failed to read "),
        "{}",
        run.stderr
    );
}

#[test]
fn usage_errors_exit_2_and_keep_the_json_promise() {
    let run = Pd::new().args(&["frobnicate"]).run();
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("unrecognized subcommand 'frobnicate'"),
        "{}",
        run.stderr
    );

    let run = Pd::new()
        .args(&["--output", "json", "doctor", "--bogus"])
        .run();
    assert_eq!(run.code, 2);
    let doc = run.json();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["error"]["id"], "usage");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--bogus")
    );

    let run = Pd::new().args(&["--http-port", "0", "doctor"]).run();
    assert_eq!(run.code, 2, "port 0 is rejected by the parser: {run:?}");
}

#[test]
fn no_command_prints_help_and_exits_2() {
    let run = Pd::new().run();
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("Usage: pulsedev"), "{run:?}");
}

#[test]
fn version_and_help_exit_0_on_stdout() {
    let run = Pd::new().args(&["--version"]).run();
    assert_eq!(run.code, 0);
    assert_eq!(
        run.stdout.trim(),
        format!("pulsedev {}", env!("CARGO_PKG_VERSION"))
    );
    let run = Pd::new().args(&["--help"]).run();
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("doctor"));
    assert!(run.stdout.contains("Exit codes: 0 success"));
}

#[test]
fn completions_are_printed_for_a_shell() {
    let run = Pd::new().args(&["completions", "bash"]).run();
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("_pulsedev()"),
        "{}",
        &run.stdout[..200.min(run.stdout.len())]
    );
}

#[test]
fn ci_mode_finds_its_cluster_by_job_id_or_asks_for_a_name() {
    // No job id: a later command cannot know the name `up` chose.
    let run = Pd::new().env("CI", "true").args(&["status"]).run();
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("pass `--name NAME`"), "{}", run.stderr);
    let run = Pd::new().args(&["down", "--ci", "--output", "json"]).run();
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.json()["error"]["id"], "usage");
    // A CI job id gives every command of the job the same name.
    let names: Vec<String> = (0..2)
        .map(|_| {
            let run = Pd::new()
                .env("CI", "true")
                .env("CI_JOB_ID", "4242")
                .args(&["status", "--output", "json"])
                .run();
            assert_eq!(run.code, 1, "{run:?}");
            run.json()["cluster"]["name"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(names[0], names[1]);
    assert!(names[0].starts_with("ci-"), "{names:?}");
    // An explicit name always wins.
    let run = Pd::new()
        .env("CI", "true")
        .args(&["--name", "mine", "status", "--output", "json"])
        .run();
    assert_eq!(run.json()["cluster"]["name"], "mine");
}

#[test]
fn down_with_nothing_to_remove_needs_neither_kind_nor_docker() {
    let pd = Pd::new();
    let sock = pd.home.path().join("nobody.sock");
    let run = pd
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .args(&["down"])
        .run();
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "nothing to remove for pulsedev\n");
}

/// `sudo pulsedev trust --install` must find the invoking user's cluster, not root's.
#[test]
fn under_sudo_the_invoking_users_state_is_used() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (as in CI) to stand in for sudo");
        return;
    }
    let run = Pd::new()
        .without("XDG_STATE_HOME")
        .env("SUDO_USER", "daemon")
        .args(&["status", "--output", "json"])
        .run();
    assert_eq!(run.code, 1, "{run:?}");
    let kubeconfig = run.json()["cluster"]["kubeconfig"]
        .as_str()
        .unwrap()
        .to_string();
    let home = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("daemon:")
                .map(|r| r.split(':').nth(4).unwrap().to_string())
        })
        .unwrap();
    assert!(
        kubeconfig.starts_with(&format!("{home}/.local/state/pulsedev/")),
        "{kubeconfig}"
    );
}

#[test]
fn up_outside_the_repository_is_a_config_error_before_anything_runs() {
    let pd = Pd::new().args(&["up"]);
    let run = pd.run();
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr.contains("services.api.context: "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("run pulsedev from the PulseWatch repository"),
        "{}",
        run.stderr
    );
    assert!(
        !pd.home.path().join("state/pulsedev").exists(),
        "nothing was left behind"
    );
}

#[test]
fn up_refuses_an_env_other_than_dev() {
    let run = Pd::new()
        .cwd(crate::harness::repo_root())
        .env("PULSEDEV_ENV", "prod")
        .args(&["up"])
        .run();
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr
            .contains("`up` makes the dev environment; env is prod"),
        "{}",
        run.stderr
    );
}

#[test]
fn out_of_range_durations_are_usage_errors_never_a_panic() {
    for args in [
        &["doctor", "--timeout", "1e30"][..],
        &["doctor", "--timeout", "inf"],
        &["doctor", "--timeout", "NaN"],
        &["doctor", "--timeout=-1"],
        &["up", "--timeout", "18446744073709551615"],
        &["up", "--timeout", "0"],
        &["reset", "--yes", "--timeout", "86401"],
    ] {
        let run = Pd::new().args(args).args(&["--output", "json"]).run();
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        let doc = run.json();
        assert_eq!(doc["error"]["id"], "usage", "{args:?}");
        assert!(
            doc["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--timeout"),
            "{args:?}: {doc}"
        );
    }
}

#[test]
fn a_bad_flag_value_is_error_usage_with_a_hint_in_pulsedevs_format() {
    let run = Pd::new().args(&["--name", "Not_Valid", "status"]).run();
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .starts_with("error[usage]: invalid value 'Not_Valid' for '--name <NAME>'"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("\nhint: run `pulsedev --help`"),
        "{}",
        run.stderr
    );

    // Ports that clash because of flags: the fix is on the command line.
    let run = Pd::new()
        .args(&["--http-port", "8080", "--https-port", "8080", "doctor"])
        .run();
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .starts_with("error[usage]: port flags: ports.http and ports.https are both 8080"),
        "{}",
        run.stderr
    );

    // A 100 kB name (about what one environment variable may hold) is not echoed in full.
    let long = "x".repeat(100_000);
    let run = Pd::new()
        .env("PULSEDEV_NAME", &long)
        .args(&["status"])
        .run();
    assert_eq!(run.code, 4, "{}", &run.stderr[..run.stderr.len().min(500)]);
    assert!(
        run.stderr.len() < 2_000,
        "{} bytes of stderr",
        run.stderr.len()
    );
}

#[test]
fn reset_without_a_terminal_needs_yes() {
    let run = Pd::new().args(&["reset"]).run();
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .starts_with("error[usage]: reset deletes the cluster pulsedev and its data"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("hint: pass `--yes`"), "{}", run.stderr);
}

#[test]
fn version_honours_output_json() {
    let run = Pd::new().args(&["--version", "--output", "json"]).run();
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn completions_honour_output_json() {
    let run = Pd::new()
        .args(&["completions", "bash", "--output", "json"])
        .run();
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["shell"], "bash");
    assert!(
        doc["script"].as_str().unwrap().contains("_pulsedev()"),
        "{doc}"
    );
}

/// An `up` that failed before creating anything (kind could not be fetched) leaves a
/// journal without entries. `down` must then clean up without kind (none on PATH, none
/// cached, the download refused): it needs kind only to delete a cluster that exists.
#[test]
fn down_after_an_up_that_made_nothing_needs_no_kind() {
    let Some(host) = crate::harness::docker_host() else {
        return;
    };
    let pd = Pd::new()
        .cwd(crate::harness::repo_root())
        .env("DOCKER_HOST", &host)
        // Nothing answers here: kind cannot be downloaded.
        .env("PULSEDEV_TOOLS_MIRROR", "https://127.0.0.1:9")
        .free_ports()
        .args(&["--name", &crate::fakes::unique("made-nothing")]);
    let up = pd.run_with(&["up", "--output", "json"]);
    assert_eq!(up.code, 3, "{up:?}");
    assert_eq!(up.json()["error"]["id"], "tool-missing", "{}", up.stdout);
    let down = pd.run_with(&["down"]);
    assert_eq!(down.code, 0, "{down:?}");
    assert!(down.stdout.contains("removed pulsedev's state"), "{down:?}");
    assert!(!down.stderr.contains("download"), "{down:?}");
    // And again: nothing left.
    let again = pd.run_with(&["down"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.starts_with("nothing to remove"), "{again:?}");
}

/// With nothing recorded, `down` still looks for a leftover registry container; an
/// engine that accepts connections and never answers is "could not check", not
/// "nothing to remove".
#[test]
fn down_against_a_hanging_engine_says_it_could_not_check() {
    let pd = Pd::new();
    let sock = pd.home.path().join("hang.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let run = pd
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .args(&["down"])
        .run();
    drop(listener);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr
            .starts_with("error[docker-unreachable]: could not check for a leftover registry container of pulsedev"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("then run `pulsedev down` again"),
        "{}",
        run.stderr
    );
}

/// "No cluster" is one id, one exit code and one message in every command that reads a
/// cluster.
#[test]
fn no_cluster_reads_the_same_in_status_trust_and_kubeconfig() {
    for cmd in ["status", "trust", "kubeconfig"] {
        let run = Pd::new().args(&[cmd, "--output", "json"]).run();
        assert_eq!(run.code, 1, "{cmd}: {run:?}");
        let doc = run.json();
        assert_eq!(doc["error"]["id"], "not-ready", "{cmd}: {doc:#}");
        assert_eq!(
            doc["error"]["message"], "pulsedev has no cluster `pulsedev` on this machine",
            "{cmd}"
        );
        assert_eq!(
            doc["error"]["hint"],
            "run `pulsedev up` to create it, or pass the `--name` it was made with",
            "{cmd}"
        );
    }
}
