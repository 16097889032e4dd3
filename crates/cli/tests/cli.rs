//! End-to-end tests of the `kiln` binary.
//!
//! * `testdata/cli/<case>/`: `args` (one argument per line, run in the case
//!   directory), optional `stdin`, optional `env` (`KEY=VALUE` lines set for
//!   the command), the files the command reads, and the expected `output`
//!   (exit code, stdout, stderr).
//! * Every frontend case (`testdata/frontend/{ok,err}`) is also planned through
//!   the binary: ok cases must plan in every format, err cases must fail with
//!   exit code 2 (bad input) and print the expected diagnostic.

#![allow(clippy::print_stderr)]

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use kiln_testkit::{assert_all, case_dirs, check, testdata};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn kiln(args: &[String], cwd: &Path, stdin: Option<&[u8]>) -> Run {
    kiln_env(args, cwd, stdin, &[])
}

fn kiln_env(args: &[String], cwd: &Path, stdin: Option<&[u8]>, env: &[(String, String)]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(cwd)
        .env_remove("KILN_ROOT")
        .env_remove("KILN_SNAPSHOTTER")
        .env_remove("BUILDKIT_PROGRESS")
        .env("KILN_TEST_FROM_ENV", "from-the-environment")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln");
    if let Some(mut pipe) = child.stdin.take() {
        let _ = pipe.write_all(stdin.unwrap_or_default());
    }
    let out = child.wait_with_output().expect("wait for kiln");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn cli_cases() {
    let cases = case_dirs(&testdata().join("cli"));
    let mut failures = Vec::new();
    for case in &cases {
        let args: Vec<String> = fs::read_to_string(case.join("args"))
            .expect("args")
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        let stdin = fs::read(case.join("stdin")).ok();
        let env: Vec<(String, String)> = fs::read_to_string(case.join("env"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let r = kiln_env(&args, case, stdin.as_deref(), &env);
        let actual = format!(
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            r.code, r.stdout, r.stderr
        );
        failures.extend(check(&case.join("output"), &actual));
    }
    assert_all(failures, cases.len());
}

/// The `options` file of a frontend case as `kiln` flags, or `None` when the
/// case needs something only the library API offers (a fixed build platform,
/// base images).
fn frontend_flags(case: &Path) -> Option<Vec<String>> {
    if case.join("images.json").exists() {
        return None;
    }
    let mut out = Vec::new();
    if let Ok(text) = fs::read_to_string(case.join("options")) {
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (flag, value) = line.split_once(' ').unwrap_or((line, ""));
            if flag == "--build-platform" {
                return None;
            }
            out.push(flag.to_owned());
            if !value.is_empty() {
                out.push(value.to_owned());
            }
        }
    }
    Some(out)
}

fn host_is_amd64() -> bool {
    kiln_llb::Platform::host().format() == "linux/amd64"
}

#[test]
fn plans_every_frontend_ok_case() {
    let cases = case_dirs(&testdata().join("frontend/ok"));
    let mut failures = Vec::new();
    let empty = tempdir();
    for case in &cases {
        let mut flags = frontend_flags(case).unwrap_or_default();
        flags.extend([
            "-f".to_owned(),
            case.join("Dockerfile").display().to_string(),
        ]);
        flags.push(empty.display().to_string());
        for format in ["text", "json", "dot", "llb"] {
            let mut args = vec!["plan".to_owned(), "--format".to_owned(), format.to_owned()];
            args.extend(flags.iter().cloned());
            let r = kiln(&args, case, None);
            let ok = r.code == 0
                && match format {
                    "text" => r
                        .stdout
                        .lines()
                        .last()
                        .is_some_and(|l| l.starts_with("target ")),
                    "json" => serde_json::from_str::<serde_json::Value>(&r.stdout)
                        .ok()
                        .is_some_and(|v| v["vertices"].is_array()),
                    "dot" => r.stdout.starts_with("digraph kiln {"),
                    _ => r.stdout.contains("\nstage "),
                };
            if !ok {
                failures.push(format!(
                    "{} ({format}): exit {}\n{}{}",
                    case.display(),
                    r.code,
                    r.stdout,
                    r.stderr
                ));
            }
        }
    }
    assert_all(failures, cases.len());
}

#[test]
fn reports_every_frontend_err_case() {
    let cases = case_dirs(&testdata().join("frontend/err"));
    let mut failures = Vec::new();
    let empty = tempdir();
    for case in &cases {
        let Some(mut args) = frontend_flags(case) else {
            continue;
        };
        args.insert(0, "plan".to_owned());
        args.extend([
            "-f".to_owned(),
            "Dockerfile".to_owned(),
            empty.display().to_string(),
        ]);
        let r = kiln(&args, case, None);
        let expected = fs::read_to_string(case.join("error")).unwrap_or_default();
        // Platform-dependent cases may differ in details on other hosts.
        let wanted = if host_is_amd64() {
            format!("error: {expected}")
        } else {
            String::new()
        };
        if r.code != 2 || (!wanted.is_empty() && !r.stderr.ends_with(&wanted)) {
            failures.push(format!(
                "{}: exit {} (want 2)\n--- stderr\n{}--- want suffix\n{wanted}",
                case.display(),
                r.code,
                r.stderr
            ));
        }
    }
    assert_all(failures, cases.len());
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-test-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `kiln --version` and `kiln version` name the commit (from git, when the
/// sources are a checkout) and the build date.
#[test]
fn version_names_commit_and_date() {
    let dir = tempdir();
    let short = kiln(&["--version".to_owned()], &dir, None);
    assert_eq!(short.code, 0, "{}", short.stderr);
    let re = regex::Regex::new(
        r"^kiln [0-9]+\.[0-9]+\.[0-9]+ \(([0-9a-f]{12}|unknown) [0-9]{4}-[0-9]{2}-[0-9]{2}\)\n$",
    )
    .expect("regex");
    assert!(re.is_match(&short.stdout), "{:?}", short.stdout);
    let long = kiln(&["version".to_owned()], &dir, None);
    assert_eq!(long.code, 0);
    assert!(long.stdout.contains("commit:"), "{}", long.stdout);
    assert!(long.stdout.contains("build date:"), "{}", long.stdout);
    // In a git checkout, the commit is HEAD's (the build script runs again
    // when HEAD moves).
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Ok(h) = head
        && h.status.success()
    {
        let head = String::from_utf8_lossy(&h.stdout).trim().to_owned();
        assert!(
            short.stdout.contains(&head),
            "--version {:?} does not name HEAD {head}",
            short.stdout
        );
    } else {
        eprintln!("not a git checkout: the commit is not compared");
    }
}

/// `kiln completion bash` is a script bash sources, which completes kiln's
/// commands and flags.
#[test]
fn bash_completion_is_sourced_by_bash() {
    let dir = tempdir();
    let r = kiln(&["completion".to_owned(), "bash".to_owned()], &dir, None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let script = dir.join("kiln.bash");
    fs::write(&script, &r.stdout).expect("write the script");
    let complete = |line: &str| -> String {
        let words: Vec<&str> = line.split(' ').collect();
        let prog = format!(
            "set -e; source {}; complete -p kiln; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; _kiln kiln '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words.join(" "),
            words.len() - 1,
            words.last().copied().unwrap_or_default(),
            words
                .get(words.len().wrapping_sub(2))
                .copied()
                .unwrap_or_default(),
        );
        let out = Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &prog])
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "bash failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let commands = complete("kiln bu");
    assert!(commands.contains("-F _kiln kiln"), "{commands}");
    assert!(commands.lines().any(|l| l == "build"), "{commands}");
    assert!(commands.lines().any(|l| l == "builds"), "{commands}");
    let flags = complete("kiln build --prog");
    assert!(flags.lines().any(|l| l == "--progress"), "{flags}");
    let values = complete("kiln build --progress ");
    for v in ["plain", "tty", "json", "rawjson"] {
        assert!(values.lines().any(|l| l == v), "{v} in {values}");
    }
}

/// `kiln man DIR` writes a page per command that `man -l` renders (skipped,
/// saying so, without man-db).
#[test]
fn man_pages_render() {
    let dir = tempdir().join("man");
    let r = kiln(
        &["man".to_owned(), dir.display().to_string()],
        &tempdir(),
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    for page in [
        "kiln.1",
        "kiln-build.1",
        "kiln-builds-report.1",
        "kiln-completion.1",
    ] {
        assert!(dir.join(page).is_file(), "{page} missing: {}", r.stdout);
    }
    let man = Command::new("man")
        .args(["-P", "cat", "-l"])
        .arg(dir.join("kiln-build.1"))
        .env("MANWIDTH", "100")
        .output();
    match man {
        Err(e) => {
            eprintln!("man is not installed ({e}): the page is not rendered (CI installs man-db)")
        }
        Ok(out) => {
            assert!(
                out.status.success(),
                "man -l: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("kiln-build"), "{text}");
            assert!(text.contains("--progress"), "{text}");
            assert!(text.contains("rawjson"), "{text}");
        }
    }
}
