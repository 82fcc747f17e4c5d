//! Real-time scheduling for the threads a person waits on: a driver's I/O loop and a host's
//! input thread.
//!
//! On a machine busy encoding video, a woken I/O thread at normal priority queues behind the
//! encoder's threads for up to a scheduler slice (milliseconds). Measured on a 2-core machine
//! at 720p60 (`wavry-bench e2e`): input one-way p99 about 2 ms at normal priority, 0.2 ms with
//! the I/O and input threads under `SCHED_FIFO`. These threads sleep between events and use a
//! few percent of a core, so a fixed real-time priority cannot starve the machine (and Linux
//! throttles real-time threads at 95 % of each second anyway).
//!
//! Raising a thread needs `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` above zero (root has both).
//! [`Realtime::Auto`] asks and carries on at normal priority when refused; [`Realtime::On`]
//! makes a refusal an error.

use std::fmt;
use std::str::FromStr;

/// The `SCHED_FIFO` priority asked for: low among real-time threads (1-99), so kernel
/// threads and audio servers that ask for more still preempt ours.
pub const REALTIME_PRIORITY: u8 = 10;

/// Whether a latency-critical thread asks for real-time scheduling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Realtime {
    /// Never ask (the library default).
    #[default]
    Off,
    /// Ask; stay at normal priority when the OS refuses.
    Auto,
    /// Ask; a refusal is an error.
    On,
}

impl FromStr for Realtime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Self::Off),
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            other => Err(format!("{other:?}: expected auto, on or off")),
        }
    }
}

impl fmt::Display for Realtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Auto => "auto",
            Self::On => "on",
        })
    }
}

/// How a thread ended up scheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheduling {
    /// Real-time (`SCHED_FIFO` on Linux) at this priority.
    Realtime(u8),
    /// Normal priority: not asked for ([`Realtime::Off`]) or refused, and why.
    Normal(Option<String>),
}

impl fmt::Display for Scheduling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Realtime(p) => write!(f, "real-time (SCHED_FIFO {p})"),
            Self::Normal(None) => f.write_str("normal priority"),
            Self::Normal(Some(why)) => write!(
                f,
                "normal priority (real-time refused: {why}; grant CAP_SYS_NICE, e.g. \
                 `setcap cap_sys_nice+ep <binary>`, or an rtprio limit in limits.conf)"
            ),
        }
    }
}

/// The OS refused real-time scheduling under [`Realtime::On`].
#[derive(Debug, thiserror::Error)]
#[error(
    "real-time scheduling refused ({0}): grant CAP_SYS_NICE (`setcap cap_sys_nice+ep \
     <binary>`) or an rtprio limit in limits.conf, or use --realtime auto"
)]
pub struct RealtimeRefused(pub String);

/// Asks the OS to schedule the calling thread as `mode` says.
pub fn raise_current_thread(mode: Realtime) -> Result<Scheduling, RealtimeRefused> {
    if mode == Realtime::Off {
        return Ok(Scheduling::Normal(None));
    }
    match ask() {
        Ok(()) => Ok(Scheduling::Realtime(REALTIME_PRIORITY)),
        Err(why) if mode == Realtime::Auto => Ok(Scheduling::Normal(Some(why))),
        Err(why) => Err(RealtimeRefused(why)),
    }
}

#[cfg(target_os = "linux")]
fn ask() -> Result<(), String> {
    use thread_priority::{
        RealtimeThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let value = ThreadPriorityValue::try_from(REALTIME_PRIORITY)?;
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(value),
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    )
    .map_err(|e| match e {
        thread_priority::Error::OS(code) => std::io::Error::from_raw_os_error(code).to_string(),
        other => other.to_string(),
    })
}

#[cfg(not(target_os = "linux"))]
fn ask() -> Result<(), String> {
    thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Max)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print_as_the_flag_spells_them() {
        for m in [Realtime::Off, Realtime::Auto, Realtime::On] {
            assert_eq!(m.to_string().parse::<Realtime>(), Ok(m));
        }
        assert!("fast".parse::<Realtime>().is_err());
    }

    #[test]
    fn off_never_asks() {
        let s = raise_current_thread(Realtime::Off).unwrap();
        assert_eq!(s, Scheduling::Normal(None));
    }

    /// Run as root (CI is), `On` gets SCHED_FIFO; without the capability `Auto` must not fail.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_is_raised_or_told_why_not() {
        std::thread::spawn(|| {
            let s = raise_current_thread(Realtime::Auto).unwrap();
            let policy = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            // Field 41 (policy) follows the command name in parentheses.
            let fields: Vec<&str> = policy
                .rsplit_once(')')
                .unwrap()
                .1
                .split_whitespace()
                .collect();
            let policy: u32 = fields[41 - 3].parse().unwrap();
            match s {
                Scheduling::Realtime(p) => {
                    assert_eq!(p, REALTIME_PRIORITY);
                    assert_eq!(policy, 1, "SCHED_FIFO");
                }
                Scheduling::Normal(why) => {
                    assert!(why.is_some());
                    assert_eq!(policy, 0, "SCHED_OTHER");
                }
            }
        })
        .join()
        .unwrap();
    }
}
