//! Busy time of a set of CPUs from `/proc/stat`, softirq included.

use std::fs;
use std::io;

use nix::unistd::{SysconfVar, sysconf};

/// Non-idle time of some CPUs since boot: user + nice + system + irq + softirq from `/proc/stat`.
///
/// This counts everything that ran on those cores, whichever process or interrupt it served:
/// read it around a run on the relay's pinned cores to charge the relay its softirq work (GRO,
/// XDP, the veth NAPI poll) as well as its own threads. Steal, idle and iowait are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuTime {
    cpus: Vec<usize>,
    jiffies: u64,
    ticks_per_second: u64,
}

impl CpuTime {
    /// Reads the current totals of `cpus` (indices as in `cpuN` lines of `/proc/stat`).
    ///
    /// Fails with `NotFound` if a CPU has no line (nonexistent or offline).
    pub fn read(cpus: &[usize]) -> io::Result<Self> {
        let stat = fs::read_to_string("/proc/stat")?;
        let jiffies = busy_jiffies(&stat, cpus)?;
        let ticks_per_second = match sysconf(SysconfVar::CLK_TCK) {
            Ok(Some(hz)) if hz > 0 => hz as u64,
            Ok(_) => return Err(io::Error::other("sysconf(_SC_CLK_TCK) has no value")),
            Err(errno) => return Err(errno.into()),
        };
        Ok(Self {
            cpus: cpus.to_vec(),
            jiffies,
            ticks_per_second,
        })
    }

    /// Seconds of busy time on these CPUs between `earlier` and `self` (0 if `earlier` is later).
    ///
    /// Both readings must be of the same CPU set.
    pub fn since(&self, earlier: &CpuTime) -> f64 {
        debug_assert_eq!(self.cpus, earlier.cpus, "CpuTime::since across CPU sets");
        self.jiffies.saturating_sub(earlier.jiffies) as f64 / self.ticks_per_second as f64
    }

    /// Busy seconds on these CPUs since boot.
    pub fn seconds(&self) -> f64 {
        self.jiffies as f64 / self.ticks_per_second as f64
    }

    /// The CPUs this reading covers.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }
}

/// Sum of user, nice, system, irq and softirq jiffies of `cpus` in `/proc/stat` text `stat`.
fn busy_jiffies(stat: &str, cpus: &[usize]) -> io::Result<u64> {
    let mut total = 0u64;
    for &cpu in cpus {
        let label = format!("cpu{cpu}");
        let line = stat
            .lines()
            .find(|line| line.split_ascii_whitespace().next() == Some(label.as_str()))
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no {label} in /proc/stat"))
            })?;
        // cpuN user nice system idle iowait irq softirq steal guest guest_nice
        let fields: Vec<u64> = line
            .split_ascii_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{label}: {e}")))?;
        if fields.len() < 7 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{label}: {} fields", fields.len()),
            ));
        }
        total += fields[0] + fields[1] + fields[2] + fields[5] + fields[6];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 200 300 400 500 600 700 800 0 0\n\
                        cpu0 1 2 3 1000 5 6 7 8 0 0\n\
                        cpu1 10 20 30 1000 50 60 70 80 0 0\n\
                        cpu10 100 0 0 0 0 0 0 0 0 0\n\
                        intr 12345\n";

    #[test]
    fn sums_busy_fields_of_the_chosen_cpus_only() {
        assert_eq!(busy_jiffies(STAT, &[0]).unwrap(), 1 + 2 + 3 + 6 + 7);
        assert_eq!(busy_jiffies(STAT, &[1]).unwrap(), 10 + 20 + 30 + 60 + 70);
        assert_eq!(busy_jiffies(STAT, &[0, 1]).unwrap(), 19 + 190);
        // "cpu1" must not match the "cpu10" line, nor the aggregate "cpu" line.
        assert_eq!(busy_jiffies(STAT, &[10]).unwrap(), 100);
        assert_eq!(busy_jiffies(STAT, &[]).unwrap(), 0);
    }

    #[test]
    fn missing_cpu_is_not_found() {
        let err = busy_jiffies(STAT, &[2]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
