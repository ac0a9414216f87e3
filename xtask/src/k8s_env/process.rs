//! The cluster's daemons: started detached with their output in `DIR/<name>.log` and their PID
//! in `DIR/<name>.pid`, found again by that PID (checked against the binary's name, so a reused PID
//! is never taken for ours) and stopped by it.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// One daemon of the cluster, e.g. `Daemon::new(dir, "etcd", "/usr/bin/etcd")`.
pub(crate) struct Daemon {
    pub(crate) name: &'static str,
    binary: PathBuf,
    dir: PathBuf,
}

impl Daemon {
    pub(crate) fn new(dir: &Path, name: &'static str, binary: impl Into<PathBuf>) -> Self {
        Self {
            name,
            binary: binary.into(),
            dir: dir.to_owned(),
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join(format!("{}.pid", self.name))
    }

    pub(crate) fn log_file(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// The PID of our running daemon, if it runs.
    pub(crate) fn running_pid(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (is_alive(pid) && runs_binary(pid, &self.binary)).then_some(pid)
    }

    /// Starts the daemon detached (own process group, so a Ctrl-C of `cargo xtask` does not
    /// reach it), unless it already runs.
    pub(crate) fn start(&self, args: &[String]) -> Result<(), String> {
        if self.running_pid().is_some() {
            return Ok(());
        }
        let log_path = self.log_file();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let child = Command::new(&self.binary)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {} ({}): {e}", self.name, self.binary.display()))?;
        let pid_file = self.pid_file();
        fs::write(&pid_file, format!("{}\n", child.id()))
            .map_err(|e| format!("writing {}: {e}", pid_file.display()))?;
        Ok(())
    }

    /// Fails with the end of the log when the daemon has exited.
    pub(crate) fn check_running(&self) -> Result<(), String> {
        if self.running_pid().is_some() {
            return Ok(());
        }
        Err(format!(
            "{} exited; last lines of {}:\n{}",
            self.name,
            self.log_file().display(),
            log_tail(&self.log_file(), 15)
        ))
    }

    /// SIGTERM, then SIGKILL after a grace period; removes the PID file. Idempotent.
    pub(crate) fn stop(&self) -> Result<(), String> {
        if let Some(pid) = self.running_pid() {
            signal(pid, "TERM")?;
            let deadline = Instant::now() + STOP_GRACE;
            while is_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if is_alive(pid) {
                eprintln!("xtask: {} ignored SIGTERM; killing it", self.name);
                signal(pid, "KILL")?;
                while is_alive(pid) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            wait_until_reaped(pid);
        }
        match fs::remove_file(self.pid_file()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("removing {}: {e}", self.pid_file().display()))
            }
            _ => Ok(()),
        }
    }
}

/// A daemon whose starter has exited is reaped by PID 1; wait briefly for that, so `down`
/// leaves not even a zombie behind.
fn wait_until_reaped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, signal: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("running kill -{signal} {pid}: {e}"))?;
    if status.success() || !is_alive(pid) {
        Ok(())
    } else {
        Err(format!("kill -{signal} {pid} failed ({status})"))
    }
}

/// Alive and not a zombie (a daemon whose parent is gone may stay a zombie until reaped).
pub(crate) fn is_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesised command name, which may itself hold spaces.
            let after_name = &stat[stat.rfind(')')? + 1..];
            after_name
                .split_whitespace()
                .next()
                .map(|s| s != "Z" && s != "X")
        })
        .unwrap_or(false)
}

/// By file name only, so `status` and `down` recognise a daemon whichever cache started it.
fn runs_binary(pid: u32, binary: &Path) -> bool {
    fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|exe| exe.file_name().is_some() && exe.file_name() == binary.file_name())
}

/// The last `lines` lines of a log, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// PIDs of running processes whose executable is `binary` (e.g. dockerd).
pub(crate) fn pids_of(binary: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe.file_name().is_some_and(|n| n == binary))
        })
        .collect()
}
