//! `wavry-bench net`: loopback packet I/O throughput of every path, in one run.
//!
//! For `--size`-byte datagrams (1200 by default) a pinned sender thread blasts unpaced for
//! `--seconds` (or `--packets`) while a pinned receiver counts what arrives. Paths: std
//! `send_to`/`recv_from` (the baseline), `sendmmsg`/`recvmmsg`, the portable backend, the uring
//! backend without GSO, with GSO/GRO, with GSO/GRO and SEND_ZC, and a raw GSO `sendmsg` / GRO
//! `recvmsg` pair (the ceiling), and the encrypted RIFT session stream (a host driver streaming
//! 64 KiB frames to a client driver) over each backend. Each row: received pps, Gbit/s, packets
//! per CPU-second of the whole process (getrusage), loss, and ratios against the baseline and
//! the ceiling measured in the same run. `--json` writes the same numbers.
//!
//! The paths are measured in `--rounds` interleaved rounds (round 1: every path in order, round
//! 2: every path again, ...). Each row is its path's best round, the one with the most packets
//! per CPU-second, and the ratios compare best with best: on a shared machine other tenants only
//! ever add CPU time or stalls to a measurement, so the best round is the closest to the path's
//! own cost. The spread over the rounds is printed next to it, to show the noise, and so is
//! the spread of each round's own ratio against the baseline measured in that round (seconds
//! apart): the best rounds of two paths need not come from the same round.

use std::path::PathBuf;

/// Options of `wavry-bench net`.
#[derive(clap::Args, Debug)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // read only by the Linux paths
pub(crate) struct Args {
    /// Seconds each path is measured (in each round).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Measurement rounds, at least 1. Every selected path is measured once per round,
    /// round-robin (round 1: all paths in order, round 2: all paths again, ...), so a full run
    /// takes rounds x paths x --seconds. Each row shows its path's best round, the one with the
    /// most packets per CPU-second (noise from other tenants only ever adds CPU time or
    /// stalls), ratios compare best with best, a min/median/max column shows the spread of
    /// packets per CPU-second over the rounds, and another the spread of each round's ratio
    /// against the baseline's packets per CPU-second in the same round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Stop a path after this many datagrams were sent (bounds the run together with --seconds).
    #[arg(long)]
    packets: Option<u64>,
    /// Datagram size in bytes.
    #[arg(long, default_value_t = 1200)]
    size: usize,
    /// Datagrams per GSO send (the kernel allows 65 507 B per send: 54 x 1200 B).
    #[arg(long, default_value_t = 54)]
    gso_segments: usize,
    /// Provided receive buffers per io_uring socket (power of two; each ~64 KiB).
    #[arg(long, default_value_t = wavry_net::Config::default().uring_buffers)]
    uring_buffers: u16,
    /// CPU for the sender thread (the host driver's I/O thread on session paths).
    #[arg(long, default_value_t = 0)]
    sender_cpu: usize,
    /// CPU for the receiver thread (the client driver's I/O thread on session paths).
    #[arg(long, default_value_t = 1)]
    receiver_cpu: usize,
    /// Comma-separated path ids to run (std, mmsg, portable, portable-borrow, portable-nogso,
    /// uring-nogso, uring-gso, uring-borrow, uring-zc, raw-gso, session-portable,
    /// session-uring, session-portable-burst, session-uring-burst); the baseline (std) and
    /// ceiling (raw-gso) always run.
    #[arg(long, value_delimiter = ',')]
    paths: Vec<String>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) mod raw;

#[cfg(target_os = "linux")]
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    linux::run(args)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("wavry-bench net measures Linux paths (io_uring, GSO/GRO, sendmmsg) only")
}

#[cfg(target_os = "linux")]
mod linux;

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser};

    use super::Args;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// `wavry-bench net` arguments from `argv` (without the program and subcommand names).
    pub(super) fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("net").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn help_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rounds_default_to_three_and_must_be_positive() {
        assert_eq!(parse(&[]).expect("defaults").rounds, 3);
        assert_eq!(parse(&["--rounds", "1"]).expect("one").rounds, 1);
        assert!(parse(&["--rounds", "0"]).is_err());
        assert!(parse(&["--rounds", "-2"]).is_err());
    }

    #[test]
    fn paths_are_comma_separated() {
        let a = parse(&["--paths", "std,session-uring", "--seconds", "1"]).expect("args");
        assert_eq!(a.paths, ["std", "session-uring"]);
        assert!((a.seconds - 1.0).abs() < f64::EPSILON);
    }
}
