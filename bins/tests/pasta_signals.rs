//! Real OS: how pasta ends. A stop signal is passed on to the command, and pasta keeps
//! forwarding while the command shuts down, ending with the command's status; a second signal
//! ends it at once, saying so. What the command leaves running ends with it (its own PID
//! namespace). Attached to a namespace file, pasta says so when the file goes away.
//!
//! Everything runs inside the lab (see common/mod.rs): pasta in the lab's host namespace, a
//! file server in the remote namespace.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    addr, bin, random_file, require, run_timeout, sha256_file, wait_for_file, wait_timeout,
    wait_until, Collected, Lab, Need, Shape, TempDir, FILE_SERVER_PY,
};

const HTTP_PORT: u16 = 8000;
const WAIT: Duration = Duration::from_secs(20);
/// Well within pasta's grace period after a first signal (10 s): an exit this soon after a
/// second one is its doing, not the grace period's end.
const AT_ONCE: Duration = Duration::from_secs(5);

/// pasta, spawned with its stderr collected (see [`Collected`]).
struct Pasta(Collected);

impl std::ops::Deref for Pasta {
    type Target = Collected;
    fn deref(&self) -> &Collected {
        &self.0
    }
}

impl Pasta {
    fn start(cmd: Command) -> Pasta {
        Pasta(Collected::start(cmd))
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signals our own child, by PID (`ip netns exec` became pasta).
        assert_eq!(unsafe { libc::kill(self.pid() as libc::pid_t, sig) }, 0);
    }

    /// pasta's exit code, waiting at most `timeout`.
    fn exit_code(&mut self, timeout: Duration) -> Option<i32> {
        wait_timeout(&mut self.0.child, timeout).map(|s| s.code().expect("an exit code"))
    }
}

/// `pasta --config-net -- sh -c script` in the lab's host namespace.
fn pasta_running(lab: &Lab, script: &str) -> Pasta {
    Pasta::start(lab.host_command(
        None,
        &bin("pasta"),
        &["--config-net", "--", "sh", "-c", script],
    ))
}

/// PIDs (as this namespace sees them) of processes with `arg` among their arguments.
fn processes_with_arg(arg: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|&b| b == 0).any(|a| a == arg.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// A shell loop waiting (bounded, ~20 s) for `file`.
fn wait_in_shell(file: &Path) -> String {
    format!(
        "i=0; while [ ! -e {0} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done",
        file.display()
    )
}

#[test]
fn a_signal_is_passed_on_and_forwarding_goes_on_until_the_command_ends() {
    if !require(&[
        Need::Tun,
        Need::Tool("python3"),
        Need::Tool("curl"),
        Need::Tool("sha256sum"),
    ]) {
        return;
    }
    let Some(mut lab) = Lab::new(Shape::Ipv4Only) else {
        return;
    };
    lab.add_remote_servers();
    let dir = TempDir::new("signals");
    let sha = random_file(&dir.path().join("blob"), 1 << 20);
    let server = dir.path().join("server.py");
    std::fs::write(&server, FILE_SERVER_PY).unwrap();
    let ready = dir.path().join("server-ready");
    let cmd = lab.remote_command(
        "python3",
        &[
            server.to_str().unwrap(),
            dir.path().to_str().unwrap(),
            &HTTP_PORT.to_string(),
            ready.to_str().unwrap(),
        ],
    );
    lab.spawn(cmd);
    assert!(wait_for_file(&ready, WAIT), "the file server didn't start");

    // The command ignores SIGTERM, as an interactive shell does; once pasta has passed the
    // signal on, it fetches a file over pasta's network and ends with a status of its own.
    let (started, go, copy) = (
        dir.path().join("started"),
        dir.path().join("go"),
        dir.path().join("copy"),
    );
    let script = format!(
        "trap '' TERM; touch {started}; {wait}; \
         curl -sS --max-time 15 -o {copy} http://{server}:{HTTP_PORT}/blob; exit 7",
        started = started.display(),
        wait = wait_in_shell(&go),
        copy = copy.display(),
        server = addr::SERVER4,
    );
    let mut pasta = pasta_running(&lab, &script);
    assert!(wait_for_file(&started, WAIT), "{}", pasta.stderr());
    pasta.signal(libc::SIGTERM);
    assert!(
        pasta.wait_stderr("SIGTERM passed on to the command", WAIT),
        "{}",
        pasta.stderr()
    );
    std::fs::write(&go, "").unwrap();
    assert_eq!(pasta.exit_code(WAIT), Some(7), "{}", pasta.stderr());
    assert_eq!(sha256_file(&copy), sha, "the copy fetched after SIGTERM");
}

#[test]
fn a_second_signal_ends_pasta_at_once() {
    let Some(lab) = Lab::new(Shape::Ipv4Only) else {
        return;
    };
    let dir = TempDir::new("signals");
    let started = dir.path().join("started");
    let marker = format!("{}", 5_000_000 + std::process::id() % 1_000_000);
    // The sleep would run for days; as PID 1's child in its namespace, it ends with pasta.
    let script = format!(
        "trap '' TERM INT; touch {}; sleep {marker}",
        started.display()
    );
    let mut pasta = pasta_running(&lab, &script);
    assert!(wait_for_file(&started, WAIT), "{}", pasta.stderr());
    assert!(wait_until(WAIT, || !processes_with_arg(&marker).is_empty()));
    pasta.signal(libc::SIGTERM);
    assert!(
        pasta.wait_stderr("SIGTERM passed on to the command", WAIT),
        "{}",
        pasta.stderr()
    );
    pasta.signal(libc::SIGINT);
    let code = pasta.exit_code(AT_ONCE);
    assert_eq!(code, Some(128 + libc::SIGINT), "{}", pasta.stderr());
    assert!(
        pasta.stderr().contains("SIGINT after SIGTERM: exiting now"),
        "{}",
        pasta.stderr()
    );
    assert!(
        wait_until(WAIT, || processes_with_arg(&marker).is_empty()),
        "the command's sleep outlived pasta"
    );
}

#[test]
fn the_command_ends_if_pasta_is_killed() {
    let Some(lab) = Lab::new(Shape::Ipv4Only) else {
        return;
    };
    let marker = format!("{}", 7_000_000 + std::process::id() % 1_000_000);
    let mut pasta = pasta_running(&lab, &format!("trap '' TERM; sleep {marker}"));
    let mut sleeps = Vec::new();
    assert!(wait_until(WAIT, || {
        sleeps = processes_with_arg(&marker);
        !sleeps.is_empty()
    }));
    pasta.signal(libc::SIGKILL);
    let status = wait_timeout(&mut pasta.0.child, WAIT).expect("pasta killed");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(
        wait_until(WAIT, || processes_with_arg(&marker).is_empty()),
        "the command (and its sleep, PID {sleeps:?}) outlived a killed pasta"
    );
}

#[test]
fn what_the_command_leaves_running_ends_with_it() {
    let Some(lab) = Lab::new(Shape::Ipv4Only) else {
        return;
    };
    let dir = TempDir::new("signals");
    let go = dir.path().join("go");
    let pid_file = dir.path().join("inner-pid");
    let marker = format!("{}", 6_000_000 + std::process::id() % 1_000_000);
    // `$!` is the sleep's PID inside the command's namespace; the test finds the outer one
    // by the marker in its arguments.
    let script = format!(
        "sleep {marker} & echo $! > {}; {}; exit 3",
        pid_file.display(),
        wait_in_shell(&go)
    );
    let mut pasta = pasta_running(&lab, &script);
    assert!(wait_for_file(&pid_file, WAIT), "{}", pasta.stderr());
    let mut outer = Vec::new();
    assert!(wait_until(WAIT, || {
        outer = processes_with_arg(&marker);
        !outer.is_empty()
    }));
    let status = std::fs::read_to_string(format!("/proc/{}/status", outer[0])).unwrap();
    let nspid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .expect("NSpid")
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();
    let inner = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(nspid, inner.trim(), "the sleep's PID in its namespace");
    assert_ne!(nspid, outer[0].to_string());

    std::fs::write(&go, "").unwrap();
    assert_eq!(pasta.exit_code(WAIT), Some(3), "{}", pasta.stderr());
    assert!(
        wait_until(WAIT, || !Path::new(&format!("/proc/{}", outer[0])).exists()),
        "the command's background sleep (PID {}) outlived it",
        outer[0]
    );
}

#[test]
fn attached_pasta_says_why_it_exits_when_the_namespace_goes() {
    let Some(lab) = Lab::new(Shape::Ipv4Only) else {
        return;
    };
    let name = format!("{}-gone", lab.host);
    let made = run_timeout(Command::new("ip").args(["netns", "add", &name]), WAIT);
    assert!(made.status.success());
    let path = format!("/run/netns/{name}");
    let dir = TempDir::new("signals");
    let pid_file = dir.path().join("pasta.pid");
    // Podman's shape: attached to a namespace file, which Podman deletes when done.
    let mut pasta = Pasta::start(lab.host_command(
        None,
        &bin("pasta"),
        &[
            "-f",
            "--config-net",
            "-P",
            pid_file.to_str().unwrap(),
            "--netns",
            &path,
        ],
    ));
    let ready = wait_for_file(&pid_file, WAIT);
    let _ = run_timeout(Command::new("ip").args(["netns", "del", &name]), WAIT);
    assert!(ready, "{}", pasta.stderr());
    assert_eq!(pasta.exit_code(WAIT), Some(0), "{}", pasta.stderr());
    let said = format!("namespace {path} is gone, exiting");
    assert_eq!(
        pasta.stderr().matches(&said).count(),
        1,
        "{}",
        pasta.stderr()
    );
}

/// Ctrl-C on the terminal is for the command, as for a job a shell started: pasta, on a
/// terminal, gives the command a process group of its own in the terminal's foreground, so
/// that an interactive shell in the namespace catching Ctrl-C doesn't cost it its network.
/// (`script` gives pasta a terminal; `kill -INT 0` is what the terminal does on Ctrl-C: a
/// SIGINT to the foreground process group.)
#[test]
fn ctrl_c_on_the_terminal_goes_to_the_command_alone() {
    if !require(&[Need::Tun, Need::Tool("script")]) {
        return;
    }
    let Some(lab) = Lab::new(Shape::Ipv4Only) else {
        return;
    };
    let inner = "trap 'echo caught' INT; kill -INT 0; sleep 0.2; \
                 test \"$(ps -o pgid= -p $$ | tr -d ' ')\" = \"$$\" && echo own-group";
    let line = format!(
        "ip netns exec {} {} --config-net -- sh -c \"{}\"",
        lab.host,
        bin("pasta").display(),
        inner.replace('"', "\\\"").replace('$', "\\$")
    );
    let mut script = Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    // A shell on a terminal starts its foreground jobs with SIGINT at its default; ours may
    // have inherited it ignored (a job a non-interactive shell put in the background), which
    // pasta and its command would inherit in turn: the command's shell could not trap it.
    // SAFETY: signal(2) is async-signal-safe, and only the child calls it, before exec.
    unsafe {
        script.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let out = run_timeout(&mut script, WAIT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("caught"),
        "the command didn't get SIGINT: {text}"
    );
    assert!(
        !text.contains("passed on"),
        "pasta got the terminal's SIGINT too: {text}"
    );
}
