//! Test helpers shared by the in-crate tests (compiled only for tests): running a future on a fresh
//! executor of the runtime under test (`SHARDS_TEST_RUNTIME=glommio|epoll`, default glommio),
//! running one ignored test of this binary in a child process (under `taskset`, or alone),
//! and parsing kernel CPU lists.

use std::process::Command;

use crate::rt::{spawn_thread, ExecutorThread, Runtime};

/// The runtime the tests run on: `SHARDS_TEST_RUNTIME` (`glommio` or `epoll`), glommio if unset.
pub(crate) fn runtime() -> Runtime {
    match std::env::var("SHARDS_TEST_RUNTIME").as_deref() {
        Ok("epoll") => Runtime::Epoll,
        Ok("glommio") | Err(_) => Runtime::Glommio,
        Ok(other) => panic!("SHARDS_TEST_RUNTIME={other}: expected glommio or epoll"),
    }
}

/// Starts a new unpinned executor of [`runtime`] (its own thread) running the future `f` makes.
pub(crate) fn spawn_executor<F, T>(
    f: impl FnOnce() -> F + Send + 'static,
) -> std::io::Result<ExecutorThread<T>>
where
    F: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    spawn_thread("test-executor", runtime(), f)
}

/// Runs the future made by `f` on a new unpinned executor (its own thread) to completion.
pub(crate) fn run<F: std::future::Future<Output = ()> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) {
    spawn_executor(f).unwrap().join().unwrap();
}

/// [`run`] on glommio whatever the runtime under test (tests of glommio-specific code).
pub(crate) fn run_glommio<F: std::future::Future<Output = ()> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) {
    spawn_thread("test-glommio", Runtime::Glommio, f)
        .unwrap()
        .join()
        .unwrap();
}

/// Runs the ignored test `test` (full path, e.g. `cpus::tests::child_x`) of the current test
/// binary in a child process under `taskset -c {cpu_list}` and returns its stdout, or `None` if
/// `taskset` is not installed. Panics if the child fails.
pub(crate) fn run_child_under_taskset(cpu_list: &str, test: &str) -> Option<String> {
    let mut command = Command::new("taskset");
    command
        .args(["-c", cpu_list])
        .arg(std::env::current_exe().unwrap());
    match run_child_test(command, test) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("taskset not found: skipping the child-process check of {test}");
            None
        }
        Err(e) => panic!("running taskset: {e}"),
        Ok(stdout) => Some(stdout),
    }
}

/// Runs the ignored test `test` of the current test binary in a child process (for tests that
/// change process-wide state, such as resource limits, or need a second process) with the
/// environment variables `env` added, and returns its stdout. Panics if the child fails.
pub(crate) fn run_child(test: &str, env: &[(&str, &std::ffi::OsStr)]) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.envs(env.iter().copied());
    run_child_test(command, test).expect("start the test binary again")
}

/// `command` (the test binary, maybe behind a wrapper) running only the ignored test `test`:
/// its stdout, once it passed alone; the error if it could not be started.
fn run_child_test(mut command: Command, test: &str) -> std::io::Result<String> {
    let out = command
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child {test} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "child {test} did not run exactly one test:\n{stdout}"
    );
    Ok(stdout)
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub(crate) fn parse_cpu_list(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}
