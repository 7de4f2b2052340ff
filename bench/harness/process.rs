//! Child processes (Envoy, wrk) that die with the bench: on drop, and on a panic too.
//!
//! The release profile aborts on panic, so destructors do not run then; a panic hook kills
//! every child still registered here before the process goes down.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Process ids of the children alive now.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// How often a bounded wait looks at the child.
const POLL: Duration = Duration::from_millis(20);

/// Installs the hook that kills every registered child, then runs the default hook.
pub fn kill_children_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_all();
        previous(info);
    }));
}

/// Kills every registered child (SIGKILL, by process id).
pub fn kill_all() {
    let pids = std::mem::take(&mut *LIVE.lock().unwrap_or_else(PoisonError::into_inner));
    for pid in pids {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Registers `pid` to be killed by the panic hook.
pub fn watch(pid: u32) {
    LIVE.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(pid);
}

/// Unregisters `pid` (it has been stopped).
pub fn unwatch(pid: u32) {
    LIVE.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|p| *p != pid);
}

/// `taskset -c <cpu> <program>` when a CPU is given and taskset exists, else the program alone.
pub fn pinned(cpu: Option<u32>, program: &std::path::Path) -> Command {
    match cpu.filter(|_| have("taskset")) {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// A running child; killed and reaped on drop.
pub struct Guarded {
    child: Child,
    what: String,
}

impl Guarded {
    /// Spawns `command`; panics naming `what` when it cannot start.
    pub fn spawn(mut command: Command, what: &str) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        watch(child.id());
        Guarded {
            child,
            what: what.to_string(),
        }
    }

    /// The process id (taskset execs its program, so this is Envoy's or wrk's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits at most `limit` for the child to exit, and returns its status and the CPU time it
    /// used (read while it is a zombie, before it is reaped); kills it when it has not exited.
    pub fn wait_at_most(&mut self, limit: Duration) -> Result<(ExitStatus, f64), String> {
        let deadline = Instant::now() + limit;
        let mut cpu = 0.0;
        while Instant::now() < deadline {
            match times(self.pid()) {
                Some(t) if t.exited => {
                    let status = self.child.wait().map_err(|e| e.to_string())?;
                    return Ok((status, t.cpu_seconds));
                }
                Some(t) => cpu = t.cpu_seconds,
                None => {
                    if let Some(status) = self.exited() {
                        return Ok((status, cpu));
                    }
                }
            }
            std::thread::sleep(POLL);
        }
        self.stop();
        Err(format!(
            "{} still running after {limit:?}: killed",
            self.what
        ))
    }

    /// Kills and reaps the child.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        unwatch(self.child.id());
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A process's state and CPU time, from /proc/<pid>/stat.
pub struct Times {
    /// A zombie: it has exited, and these times are final.
    pub exited: bool,
    /// User and system time of all its threads.
    pub cpu_seconds: f64,
}

/// `None` when the process is gone (or /proc cannot be read).
pub fn times(pid: u32) -> Option<Times> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the parenthesised command name: state first, utime and stime 12th and 13th.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Times {
        exited: fields.first() == Some(&"Z"),
        cpu_seconds: (ticks(11)? + ticks(12)?) as f64 / clock_ticks_per_second(),
    })
}

/// `getconf CLK_TCK` (the unit of /proc/<pid>/stat times), 100 when it cannot be read.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}
