//! kiln inside a container started by a real container engine with its
//! default confinement (issue 24): `testdata/pod/script` builds an image
//! holding a static kiln, runs builds in containers of it (no
//! `--privileged`, no added capabilities, the engine's default seccomp
//! profile) and prints what it checked; the output must equal
//! `testdata/pod/expected`. The `pod-realistic` trial (`script realistic`,
//! against `expected-realistic`: a debootstrapped Debian, `apt-get install
//! gcc`) also needs the Debian mirror and `debootstrap`, so it runs only
//! with `KILN_TEST_REALISTIC=1`.
//!
//! Needs root, a docker command whose engine runs containers
//! (`KILN_TEST_DOCKER`, e.g. `docker`, or the command
//! `buildkit-0.13.sh` prints), a statically linked kiln
//! (`KILN_TEST_STATIC_KILN`: `.ci/run` builds it, see
//! `examples/build-static.sh`), Debian's `docker-registry`, `skopeo`,
//! `umoci` and `/bin/busybox`. Without them the trial is reported as
//! ignored and the reason is printed.

#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::{Arguments, Trial};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Why the trial cannot run here.
fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (the host build and the container engine)".to_owned());
    }
    let Some(docker) = std::env::var("KILN_TEST_DOCKER")
        .ok()
        .filter(|s| !s.is_empty())
    else {
        return Some(
            "KILN_TEST_DOCKER is not set (a docker command whose engine runs containers)"
                .to_owned(),
        );
    };
    let Some(kiln) = std::env::var_os("KILN_TEST_STATIC_KILN") else {
        return Some(
            "KILN_TEST_STATIC_KILN is not set (a statically linked kiln: \
             examples/build-static.sh)"
                .to_owned(),
        );
    };
    if !Path::new(&kiln).is_file() {
        return Some(format!(
            "KILN_TEST_STATIC_KILN={} does not exist",
            Path::new(&kiln).display()
        ));
    }
    if let Some(why) = kiln_testkit::registry::unavailable() {
        return Some(why);
    }
    for tool in ["skopeo", "umoci", "python3"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is missing"));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox is missing (busybox-static)".to_owned());
    }
    let info = Command::new("sh")
        .arg("-c")
        .arg(format!("{docker} info"))
        .output();
    match info {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`{docker} info` failed: the engine is not running ({})",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("`{docker} info`: {e}")),
    }
}

fn pod() -> Result<(), libtest_mimic::Failed> {
    part("main", "expected")
}

fn pod_realistic() -> Result<(), libtest_mimic::Failed> {
    part("realistic", "expected-realistic")
}

fn part(name: &str, expected: &str) -> Result<(), libtest_mimic::Failed> {
    let registry = kiln_testkit::registry::Registry::start(
        kiln_testkit::registry::RegistryOptions::anonymous(),
    )?;
    let work = tempfile::tempdir()?;
    let src = repo().join("testdata/pod");
    let out = Command::new("bash")
        .arg(src.join("script"))
        .arg(name)
        .env("KILN", env!("CARGO_BIN_EXE_kiln"))
        .env("REGISTRY", registry.addr())
        .env("WORK", work.path())
        .env("SRC", &src)
        .env("DEMO", repo().join("examples/demo"))
        .env(
            "DOCKER",
            std::env::var("KILN_TEST_DOCKER").unwrap_or_default(),
        )
        .env(
            "KILN_STATIC",
            std::env::var_os("KILN_TEST_STATIC_KILN").unwrap_or_default(),
        )
        .env_remove("KILN_ROOT")
        .env_remove("KILN_ISOLATION")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "testdata/pod/script failed ({}):\n{stdout}\n{stderr}",
            out.status
        )
        .into());
    }
    let shown = stdout.replace(&registry.addr(), "<registry>");
    match kiln_testkit::check(&src.join(expected), &shown) {
        None => Ok(()),
        Some(diff) => Err(format!("{diff}\nstderr:\n{stderr}").into()),
    }
}

fn main() {
    let args = Arguments::from_args();
    let why = unavailable();
    if let Some(why) = &why {
        eprintln!("pod test ignored: {why}");
    }
    let realistic = std::env::var_os("KILN_TEST_REALISTIC").is_some_and(|v| v == "1");
    if why.is_none() && !realistic {
        eprintln!("pod-realistic ignored: it needs the Debian mirror (KILN_TEST_REALISTIC=1)");
    }
    let trials = vec![
        Trial::test("pod", pod).with_ignored_flag(why.is_some()),
        Trial::test("pod-realistic", pod_realistic).with_ignored_flag(why.is_some() || !realistic),
    ];
    libtest_mimic::run(&args, trials).exit();
}
