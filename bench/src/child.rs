//! Child processes for the load tools: stdout lines on a channel, killed on drop; and the
//! `key=value` / `label value` readers for what they print.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use crossbeam_channel::{Receiver, RecvTimeoutError};

/// Removes a directory (and what is in it) on drop.
pub(crate) struct RemoveDir(pub(crate) PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process whose stdout lines arrive on a channel; killed on drop.
pub(crate) struct Proc {
    child: Child,
    lines: Receiver<String>,
}

impl Proc {
    pub(crate) fn spawn(bin: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut c = Command::new(bin);
        c.args(args).stderr(Stdio::null());
        Self::spawn_cmd(c)
    }

    /// Starts `c` with its stdout read line by line (stderr as `c` says).
    pub(crate) fn spawn_cmd(mut c: Command) -> anyhow::Result<Self> {
        let mut child = c
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", c.get_program().to_string_lossy()))?;
        let out = child.stdout.take().context("stdout")?;
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// Starts `c` with its stdout where `c` sends it (a log file); no lines are read.
    pub(crate) fn spawn_logged(mut c: Command) -> anyhow::Result<Self> {
        let child = c
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", c.get_program().to_string_lossy()))?;
        Ok(Self {
            child,
            lines: crossbeam_channel::never(),
        })
    }

    /// The next stdout line before `until`: `Ok(None)` when time is up, an error once the
    /// process closed its stdout (it ended).
    pub(crate) fn next_line(&self, until: Instant) -> anyhow::Result<Option<String>> {
        match self
            .lines
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            Ok(l) => Ok(Some(l)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => bail!("the process ended"),
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(|_| ())
    }

    /// Sends `sig` (`"-INT"`, …) with kill(1).
    pub(crate) fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([sig, &self.pid()]).status();
    }

    /// Waits up to `limit` for the process to exit (killing it after that).
    pub(crate) fn wait(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                bail!("pid {} did not exit within {limit:?}", self.pid());
            }
            // Poll interval of a bounded wait for exit.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The next stdout line containing `needle`, waiting at most `limit`.
    pub(crate) fn line_with(&self, needle: &str, limit: Duration) -> anyhow::Result<String> {
        let end = Instant::now() + limit;
        loop {
            match self
                .lines
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(l) if l.contains(needle) => return Ok(l),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => bail!("no {needle:?} line within {limit:?}"),
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("process ended before a {needle:?} line")
                }
            }
        }
    }

    pub(crate) fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key=value` from a summary line, as f64 (`-` and missing keys are NaN).
pub(crate) fn kv(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The number after `label` in a line ("p99 1.23 ms" → 1.23).
pub(crate) fn after(line: &str, label: &str) -> Option<f64> {
    let mut w = line.split_whitespace();
    w.find(|x| *x == label)?;
    w.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::{after, kv};

    #[test]
    #[allow(clippy::float_cmp)] // exact decimal values parsed, not computed
    fn summary_fields_parse() {
        let s = "summary pictures=10 g2g_p50_ms=3.25 g2g_p99_ms=- cpu_s=1.5";
        assert_eq!(kv(s, "pictures"), 10.0);
        assert_eq!(kv(s, "g2g_p50_ms"), 3.25);
        assert!(kv(s, "g2g_p99_ms").is_nan());
        assert!(kv(s, "g2g_p5").is_nan());
        let l = "injected 3 input events through log; one-way latency p50 0.20 ms p99 0.90 ms";
        assert_eq!(after(l, "p99"), Some(0.9));
        assert_eq!(after(l, "p999"), None);
    }
}
