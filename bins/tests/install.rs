//! `make install` and `make uninstall` (the Makefile at the top of the workspace), as a
//! distribution packages us: into a temporary DESTDIR under /tmp, never the real prefix. The
//! binaries cargo built for these tests are installed as they are (`PREBUILT`), so nothing is
//! rebuilt; the installed programs run and the installed man pages format.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{bin, require, run_timeout, show, Need, TempDir};

/// Generous: `make` only copies files, `man` formats four pages.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace above bins/")
        .to_owned()
}

/// `make -C WORKSPACE TARGET VARS...`; panics unless it succeeds.
fn make(target: &str, vars: &[String]) -> Output {
    let out = run_timeout(
        Command::new("make")
            .arg("--no-print-directory")
            .arg("-C")
            .arg(workspace())
            .arg(target)
            .args(vars),
        STEP_TIMEOUT,
    );
    assert!(out.status.success(), "make {target}: {}", show(&out));
    out
}

/// Every file and symbolic link below `dir`, relative to it, sorted.
fn files_below(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                todo.push(entry.path());
            } else {
                let rel = entry.path().strip_prefix(dir).unwrap().to_owned();
                found.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

fn run(program: &Path, args: &[&str]) -> Output {
    run_timeout(Command::new(program).args(args), STEP_TIMEOUT)
}

#[test]
fn make_install_and_uninstall_into_a_destdir() {
    if !require(&[Need::Tool("make"), Need::Tool("man")]) {
        return;
    }
    let dest = TempDir::new("install");
    let prebuilt = bin("passt").parent().unwrap().to_owned();
    assert!(prebuilt.join("qrap").exists(), "qrap is built with passt");
    assert!(prebuilt.join("pesto").exists(), "pesto is built with passt");
    let vars = [
        format!("DESTDIR={}", dest.path().display()),
        "prefix=/usr".to_owned(),
        format!("PREBUILT={}", prebuilt.display()),
    ];
    let out = make("install", &vars);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("cargo"),
        "PREBUILT installs without building: {}",
        show(&out)
    );

    let installed = files_below(dest.path());
    assert_eq!(
        installed,
        [
            "usr/bin/passt",
            "usr/bin/pasta",
            "usr/bin/pesto",
            "usr/bin/qrap",
            "usr/share/man/man1/passt.1",
            "usr/share/man/man1/pasta.1",
            "usr/share/man/man1/pesto.1",
            "usr/share/man/man1/qrap.1",
        ]
    );
    let bindir = dest.path().join("usr/bin");
    // pasta is passt by another name: its mode comes from the name it was run by.
    for (program, name) in [
        ("passt", "passt "),
        ("pasta", "pasta "),
        ("pesto", "pesto "),
    ] {
        let out = run(&bindir.join(program), &["--version"]);
        assert!(out.status.success(), "{program} --version: {}", show(&out));
        let version = String::from_utf8_lossy(&out.stdout);
        assert!(version.starts_with(name), "{program} --version: {version}");
    }
    let out = run(&bindir.join("qrap"), &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Usage: qrap"),
        "qrap without arguments: {}",
        show(&out)
    );

    let man1 = dest.path().join("usr/share/man/man1");
    for (page, title) in [
        ("passt.1", "PASST(1)"),
        ("pasta.1", "PASST(1)"),
        ("qrap.1", "QRAP(1)"),
        ("pesto.1", "PESTO(1)"),
    ] {
        let out = run_timeout(
            Command::new("man")
                .arg("-l")
                .arg(man1.join(page))
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "80"),
            STEP_TIMEOUT,
        );
        assert!(out.status.success(), "man -l {page}: {}", show(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(title) && text.contains("NAME"),
            "man -l {page}: {}",
            show(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("warning"), "man -l {page}: {stderr}");
    }

    make("uninstall", &vars);
    assert_eq!(
        files_below(dest.path()),
        Vec::<String>::new(),
        "uninstall leaves nothing behind"
    );
}

/// Without PREBUILT, `make` (and so `make install`) builds the release binaries with cargo.
#[test]
fn make_builds_the_release_binaries_with_cargo() {
    if !require(&[Need::Tool("make")]) {
        return;
    }
    let out = make("-n", &[]);
    let plan = String::from_utf8_lossy(&out.stdout);
    // `$(CARGO)`: cargo, or the path cargo test put in $CARGO.
    assert!(
        plan.contains("build --release --package passt --bins"),
        "{plan}"
    );
    let out = make(
        "-n",
        &["install".to_owned(), "DESTDIR=/nonexistent".to_owned()],
    );
    let plan = String::from_utf8_lossy(&out.stdout);
    let build = plan.find("build --release").expect("install builds first");
    let copy = plan.find("install -m 755").expect("then installs");
    assert!(build < copy, "{plan}");
}
