//! Network-namespace topologies for testing and benchmarking a relay on one Linux machine.
//!
//! [`Topology`] builds three namespaces joined by veth pairs (as root, with iproute2's `ip`):
//!
//! ```text
//!  sender ns                 relay ns                                   receiver ns
//!  [s0: 10.N.1.2/24    ]──[r0: 10.N.1.1/24    ]   [r1: 10.N.2.1/24    ]──[c0: 10.N.2.2/24    ]
//!  [    fd77:n:1::2/64 ]  [    fd77:n:1::1/64 ]   [    fd77:n:2::1/64 ]  [    fd77:n:2::2/64 ]
//! ```
//!
//! The sender and the receiver route everything through the relay's addresses, and the relay
//! namespace does not forward: a datagram crosses from sender to receiver only if a process in
//! the relay namespace carries it. The real names and addresses are fields of [`Topology`].
//!
//! Also here, for measuring a relay pinned to some cores: [`Topology::napi_threads`] and [`pin`]
//! place the relay's threaded-NAPI kernel threads, and [`CpuTime`] counts every non-idle jiffy
//! (softirq included, where GRO and XDP work runs) on a set of CPUs.
//!
//! Nothing beyond iproute2 and `sh` is needed: GRO is switched with the ethtool ioctl, not the
//! `ethtool` program. Everything here is Linux-only; on other systems the crate is empty.

#![cfg(target_os = "linux")]

mod cputime;
mod ethtool;
mod napi;
mod topology;

use std::io;
use std::process::{Command, ExitStatus};

pub use cputime::CpuTime;
pub use napi::{napi_threads_of, pin};
pub use topology::{Options, Role, Topology, enter_namespace};

/// Why building or using a [`Topology`] failed; command failures carry the command and stderr.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command (`ip …`, `ip netns exec … sh -c …`) ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, as it would be typed.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A command could not be started (usually: iproute2 is not installed).
    #[error("cannot run `{command}` (is iproute2 installed?): {source}")]
    Spawn {
        /// The command line, as it would be typed.
        command: String,
        /// The error from spawning it.
        #[source]
        source: io::Error,
    },
    /// Opening a namespace's handle or `setns` into it failed.
    #[error("cannot enter network namespace {namespace}: {source}")]
    Enter {
        /// The namespace's name (under `/var/run/netns`).
        namespace: String,
        /// The error from `open` or `setns`.
        #[source]
        source: io::Error,
    },
    /// The ethtool ioctl that switches GRO on failed or did not take effect.
    #[error("cannot turn GRO on for {interface} in {namespace}: {source}")]
    Gro {
        /// The namespace holding the interface.
        namespace: String,
        /// The interface.
        interface: String,
        /// The ioctl's error.
        #[source]
        source: io::Error,
    },
    /// Another ethtool setting (TX checksum offload) failed or did not take effect.
    #[error("cannot set {what} for {interface} in {namespace}: {source}")]
    Ethtool {
        /// The namespace holding the interface.
        namespace: String,
        /// The interface.
        interface: String,
        /// The setting.
        what: &'static str,
        /// The ioctl's error.
        #[source]
        source: io::Error,
    },
    /// Something the topology waits for (IPv6 addresses leaving "tentative") did not happen.
    #[error("timed out: {0}")]
    Timeout(String),
    /// An [`Options`] value the topology cannot be built with.
    #[error("invalid topology option: {0}")]
    InvalidOption(String),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether this process can build a [`Topology`]: effective uid 0 and an `ip` that runs.
///
/// Tests call it first so that a missing privilege is reported as such, not as a failed `ip`.
pub fn has_root() -> bool {
    nix::unistd::geteuid().is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|out| out.status.success())
}

/// Runs `command`, returning its stdout, or an [`Error`] with the command line and its stderr.
fn run(command: &mut Command) -> Result<String> {
    let line = describe(command);
    tracing::debug!(command = %line, "netns");
    let out = command.output().map_err(|source| Error::Spawn {
        command: line.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: line,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `command` as a shell-like line, for error messages.
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|arg| arg.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
