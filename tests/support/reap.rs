//! Every process a test starts ends with the test — pass, fail or panic.
//!
//! [`spawn`] starts a command in a process group of its own and returns a
//! [`Guard`] that kills the whole group (the child and anything it started)
//! when it is dropped: at the end of the test's scope, or while a failing
//! test unwinds. [`output`] does the same for a command run to completion.
//! Each such child carries [`MARKER`] in its environment, so what a test run
//! left behind can be found in `/proc`: `tests/support/leftovers.sh` looks
//! after a whole `cargo test` (CI runs it).
#![allow(dead_code)]

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Output, Stdio};

/// The environment variable a test's children carry: the value CI gave the
/// whole run (`.ci/run` exports it), else the test process's pid.
pub const MARKER: &str = "GITGATE_TEST_RUN";

/// The marker's value for this test process.
pub fn run_id() -> String {
    std::env::var(MARKER).unwrap_or_else(|_| std::process::id().to_string())
}

fn prepare(cmd: &mut Command) {
    cmd.env(MARKER, run_id()).process_group(0);
}

/// Spawns `cmd` in a new process group, marked; the group is killed when
/// the returned guard drops.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Guard> {
    prepare(cmd);
    cmd.spawn().map(|child| Guard { child })
}

/// Runs `cmd` to completion (stdout and stderr captured) in a new process
/// group, marked, and kills whatever it left running in that group.
pub fn output(cmd: &mut Command) -> std::io::Result<Output> {
    prepare(cmd);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let group = child.id();
    let out = child.wait_with_output();
    kill_group(group);
    out
}

/// A child process (the leader of its own process group) that is killed,
/// with its group, when this drops.
pub struct Guard {
    child: Child,
}

impl std::ops::Deref for Guard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILL to every process of group `pgid` (none left: a no-op).
pub fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether `pid` is a live process (a zombie — exited, not yet reaped by
/// its parent — counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}
