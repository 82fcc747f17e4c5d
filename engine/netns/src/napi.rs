//! Finding threaded-NAPI kernel threads and pinning threads to CPUs.

use std::fs;
use std::io;

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;

/// Longest `comm` the kernel reports for a thread (`TASK_COMM_LEN` - 1).
const COMM_LEN: usize = 15;

/// PIDs, ascending, of the kernel threads `napi/<ifname>-<napi id>` serving `ifname`'s queues.
///
/// They exist once the interface has NAPI instances and `/sys/class/net/<ifname>/threaded` is 1.
/// Matching is by name prefix, so `ifname` must be unique machine-wide (a [`crate::Topology`]'s
/// are) and at most 9 bytes, so that `napi/<ifname>-` survives `comm`'s 15-byte truncation.
pub fn napi_threads_of(ifname: &str) -> Vec<u32> {
    let prefix = format!("napi/{ifname}-");
    if prefix.len() > COMM_LEN {
        tracing::warn!(
            ifname,
            "interface name too long to find its NAPI threads by name"
        );
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            // Threads come and go while we look; a vanished one simply does not match.
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end().starts_with(&prefix))
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Restricts thread `pid` (0: the calling thread) to `cpus` with `sched_setaffinity`.
///
/// Works for NAPI kernel threads too when running as root, so that a benchmark can keep the
/// relay's softirq and NAPI work on the cores whose [`crate::CpuTime`] it measures.
pub fn pin(pid: u32, cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "pin: empty CPU set",
        ));
    }
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu).map_err(io::Error::from)?;
    }
    let pid = i32::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("pin: pid {pid}")))?;
    sched_setaffinity(Pid::from_raw(pid), &set).map_err(io::Error::from)
}
