//! Project commands, run as `cargo xtask <command>`:
//! - `demo`: installs what it needs, then runs the local end-to-end demo on real defaults;
//! - `test`: installs what it needs, then fmt, clippy, every test and a bounded fuzz run;
//! - `bench`: criterion benches (and load tools as they arrive);
//! - `fuzz`: a bounded run of every fuzz target.
//!
//! Every installation step is idempotent and says what it does before doing it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// Debian packages the whole test suite needs (ring and libfuzzer build C/C++ code; the
/// control-plane suite starts throwaway PostgreSQL clusters; the media edges link FFmpeg through
/// `ffmpeg-next`, whose bindgen needs clang, and their tests check recordings with `ffprobe`
/// and run X11 capture, XTEST and a window under Xvfb).
const APT_TEST: &[&str] = &[
    "build-essential",
    // Network namespaces, veth pairs and NAT for the hole-punching and AF_XDP relay tests
    // (ping checks that ICMP still reaches a namespace with the XDP program attached).
    "iproute2",
    "nftables",
    "iputils-ping",
    // The relay's XDP program is built from source: clang (below) and libbpf's headers.
    "libbpf-dev",
    // The plot's text (wavry-bench stack).
    "fonts-dejavu-core",
    "pkg-config",
    "postgresql",
    "clang",
    "libavcodec-dev",
    "libavformat-dev",
    "libavutil-dev",
    "libswscale-dev",
    "libswresample-dev",
    "libavfilter-dev",
    "libavdevice-dev",
    "ffmpeg",
    "libopus-dev",
    "xvfb",
    // The client's window (minifb) loads these at run time.
    "libx11-6",
    "libxcursor1",
    // PipeWire capture: the library to build against, and a private daemon with a
    // GStreamer `videotestsrc ! pipewiresink` producer for its tests.
    "libpipewire-0.3-dev",
    "pipewire",
    "pipewire-bin",
    "gstreamer1.0-pipewire",
    "gstreamer1.0-tools",
    "gstreamer1.0-plugins-base",
];
/// Debian packages the demo needs (the media runtimes link FFmpeg).
const APT_DEMO: &[&str] = &[
    "build-essential",
    "pkg-config",
    "clang",
    "libbpf-dev",
    "libavcodec-dev",
    "libavformat-dev",
    "libavutil-dev",
    "libswscale-dev",
    "libswresample-dev",
    "libavfilter-dev",
    "libavdevice-dev",
    "ffmpeg",
    "libopus-dev",
    "libpipewire-0.3-dev",
    // The plot's text.
    "fonts-dejavu-core",
];

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "Wavry project commands")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Install prerequisites, build, then run the whole stack on loopback as real processes:
    /// wavry-master, wavry-gateway, two wavry-relays, a wavry-server host and a wavry-client
    /// with fresh identities and accounts. The client finds the host by name through the
    /// gateway and streams direct, then through a relay that is killed half-way (failover to
    /// the other one); live stats, a table per path, a recording and a plot in target/demo/.
    Demo {
        /// Seconds of streaming on each path.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Packet I/O backend: auto (io_uring when the kernel allows), uring or portable.
        #[arg(long, default_value = "auto")]
        io: String,
        /// What the host captures: synthetic, x11 (needs $DISPLAY) or pipewire.
        #[arg(long, default_value = "synthetic")]
        source: String,
        /// The host's encoder: auto, libx264, h264-vaapi or h264-nvenc.
        #[arg(long, default_value = "auto")]
        encoder: String,
    },
    /// Install prerequisites, then: fmt check, clippy -D warnings, all tests, bounded fuzzing.
    Test {
        /// Seconds each fuzz target runs (0 skips fuzzing; CI uses the default).
        #[arg(long, default_value_t = 20)]
        fuzz_seconds: u64,
    },
    /// Run the criterion benches (results under target/criterion), or `bench netsim` for the
    /// transport's scenario figures on the simulated network (FEC under loss, DELTA behind a
    /// bottleneck, handshake under loss).
    Bench {
        /// `netsim`, or a filter: only criterion benches whose name contains this.
        filter: Option<String>,
    },
    /// Run every fuzz target for a bounded time.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let root = project_root()?;
    std::env::set_current_dir(&root)?;
    match Cli::parse().command {
        Cmd::Demo {
            seconds,
            io,
            source,
            encoder,
        } => demo(&root, seconds, &io, &source, &encoder),
        Cmd::Test { fuzz_seconds } => test(fuzz_seconds),
        Cmd::Bench { filter } if filter.as_deref() == Some("netsim") => bench_netsim(),
        Cmd::Bench { filter } => {
            let mut args = vec!["bench", "--workspace"];
            if let Some(f) = filter.as_deref() {
                args.extend(["--", f]);
            }
            cargo(&args)
        }
        Cmd::Fuzz { seconds, target } => {
            ensure_apt(APT_TEST)?;
            fuzz(seconds, target.as_deref())
        }
    }
}

fn project_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("xtask lives one level below the root")?
        .to_path_buf())
}

fn step(what: &str) {
    println!("\n==> {what}");
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}").replace('"', "");
    println!("    $ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args(args))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

/// Installs missing Debian packages (apt-get update once, then install), skipping what is there.
fn ensure_apt(packages: &[&str]) -> anyhow::Result<()> {
    step(&format!("checking Debian packages: {}", packages.join(" ")));
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        println!("    all present");
        return Ok(());
    }
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!(
            "missing packages {missing:?} and no apt-get: install them with your package manager"
        );
    }
    println!("    installing: {}", missing.join(" "));
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let apt = |args: &[&str]| {
        let mut all: Vec<&str> = sudo.to_vec();
        all.push("apt-get");
        all.extend_from_slice(args);
        let mut c = Command::new(all[0]);
        c.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut c)
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    apt(&args)
}

/// Installs a cargo tool if `cargo <sub> --version` does not answer.
fn ensure_cargo_tool(sub: &str, krate: &str) -> anyhow::Result<()> {
    step(&format!("checking cargo tool `cargo {sub}`"));
    let present = Command::new("cargo")
        .args([sub, "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        println!("    present");
        return Ok(());
    }
    println!("    installing {krate} from crates.io");
    cargo(&["install", "--locked", krate])
}

fn test(fuzz_seconds: u64) -> anyhow::Result<()> {
    ensure_apt(APT_TEST)?;
    step("rustfmt check");
    cargo(&["fmt", "--all", "--check"])?;
    step("clippy, all targets, warnings are errors");
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ])?;
    step("tests");
    let (passed, failed) = cargo_test(&["test", "--workspace", "--locked"])?;
    step("the demo's whole stack runs (short, small picture, debug build)");
    build_stack(&["--locked"])?;
    run(Command::new("target/debug/wavry-bench").args([
        "stack",
        "--seconds",
        "4",
        "--width",
        "320",
        "--height",
        "240",
        "--fps",
        "30",
        "--bitrate-kbps",
        "1000",
        "--out-dir",
        "target/demo-ci",
    ]))?;
    step("the relay bench in network namespaces: AF_XDP vs io_uring vs naive (short, debug build)");
    run(Command::new("target/debug/wavry-bench").args([
        "relay",
        "--topology",
        "netns",
        "--quick",
    ]))?;
    if fuzz_seconds > 0 {
        fuzz(fuzz_seconds, None)?;
    }
    step("all checks passed");
    println!("tests: {passed} passed, {failed} failed");
    Ok(())
}

/// Runs `cargo test`, echoing its output, and sums the per-binary "test result" lines.
fn cargo_test(args: &[&str]) -> anyhow::Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    println!("    $ cargo {}", args.join(" "));
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("could not start cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    let out = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .strip_suffix(word)?
                            .trim()
                            .rsplit(' ')
                            .next()?
                            .parse::<u64>()
                            .ok()
                    })
                    .unwrap_or(0)
            };
            passed += count(" passed");
            failed += count(" failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        println!("tests: {passed} passed, {failed} failed");
        bail!("cargo test failed ({status})");
    }
    Ok((passed, failed))
}

/// Runs the netsim scenario tests in release mode and prints their figures as tables.
fn bench_netsim() -> anyhow::Result<()> {
    step("netsim scenarios (virtual time, deterministic seeds)");
    let out = Command::new("cargo")
        .args(["test", "--release", "--locked", "-p", "wavry-rift"])
        .args([
            "--test",
            "fec_loss",
            "--test",
            "delta_bottleneck",
            "--test",
            "handshake_under_loss",
            "--test",
            "input_priority",
            "--test",
            "path_stats",
            "--test",
            "file_transfer",
        ])
        .args(["--", "--nocapture", "--test-threads", "1"])
        .output()
        .context("could not run cargo test")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        println!("{text}{}", String::from_utf8_lossy(&out.stderr));
        bail!("a scenario failed");
    }
    println!(
        "\n| scenario (60 fps, 20 Mbit/s, 40 ms RTT; deadline = interval + RTT/2 + 15 ms) | frames on time | FEC overhead | measured loss |"
    );
    println!("|---|---|---|---|");
    // libtest prints "test name ... " before a test's own output on the same line: cut it.
    let lines: Vec<&str> = text
        .lines()
        .map(|l| {
            l.strip_prefix("test ")
                .and_then(|rest| rest.split_once(" ... "))
                .map_or(l, |(_, output)| output)
        })
        .collect();
    for line in lines.iter().filter(|l| l.starts_with("loss ")) {
        // "loss L burst B: X/Y on time (R), fec overhead O, recovered .., retransmitted .., measured loss M"
        let (head, rest) = line.split_once(':').unwrap_or((line, ""));
        let parts: Vec<&str> = rest.split(',').map(str::trim).collect();
        let get = |p: &str| {
            parts
                .iter()
                .find(|x| x.starts_with(p))
                .map_or("", |x| x.trim_start_matches(p).trim())
        };
        println!(
            "| {head} | {} | {} | {} |",
            parts.first().copied().unwrap_or(""),
            get("fec overhead"),
            get("measured loss")
        );
    }
    println!(
        "\n| DELTA behind a bottleneck (30 Mbit/s offered) | window | utilisation, p95 queueing delay |"
    );
    println!("|---|---|---|");
    let labels = [
        "10 Mbit/s, after 5 s",
        "doubled to 20 Mbit/s, after 5 s",
        "halved to 10 Mbit/s, after 2 s",
        "halving transient (first 2 s)",
    ];
    for (label, line) in labels
        .iter()
        .zip(lines.iter().filter(|l| l.starts_with('[')))
    {
        let (window, figures) = line.split_once(')').unwrap_or((line, ""));
        println!("| {label} | {window}) | {} |", figures.trim());
    }
    for line in lines
        .iter()
        .filter(|l| l.starts_with("slowest connect") || l.starts_with("key latency"))
    {
        println!("\n{line}");
    }
    // Other scenarios print "figure <what>: <value>" lines.
    println!("\n| path statistics and file transfer | measured |");
    println!("|---|---|");
    for line in &lines {
        if let Some(f) = line.find("figure ").map(|i| &line[i + 7..]) {
            let (what, value) = f.split_once(':').unwrap_or((f, ""));
            println!("| {what} | {} |", value.trim());
        }
    }
    Ok(())
}

fn fuzz_targets() -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir("fuzz/fuzz_targets")?
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.path()
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    Ok(names)
}

fn fuzz(seconds: u64, only: Option<&str>) -> anyhow::Result<()> {
    ensure_cargo_tool("fuzz", "cargo-fuzz")?;
    let targets = fuzz_targets()?;
    if let Some(t) = only {
        if !targets.iter().any(|n| n == t) {
            bail!("no fuzz target {t}; targets: {}", targets.join(", "));
        }
    }
    step("building fuzz targets (stable toolchain, no sanitizer)");
    run(Command::new("cargo")
        .current_dir("fuzz")
        .args(["fuzz", "build", "-s", "none"]))?;
    for t in targets
        .iter()
        .filter(|t| only.is_none_or(|o| o == t.as_str()))
    {
        step(&format!("fuzzing {t} for {seconds} s"));
        // Work on a scratch copy of the committed seeds so runs do not dirty the repo.
        let scratch = Path::new("fuzz/target/corpus").join(t);
        std::fs::create_dir_all(&scratch)?;
        let seeds = Path::new("fuzz/corpus").join(t);
        if seeds.is_dir() {
            for e in std::fs::read_dir(&seeds)?.filter_map(Result::ok) {
                std::fs::copy(e.path(), scratch.join(e.file_name()))?;
            }
        }
        let corpus = format!("target/corpus/{t}");
        let max_time = format!("-max_total_time={seconds}");
        run(Command::new("cargo").current_dir("fuzz").args([
            "fuzz",
            "run",
            "-s",
            "none",
            t,
            &corpus,
            "--",
            &max_time,
            "-rss_limit_mb=4096",
        ]))?;
    }
    Ok(())
}

/// The packages whose binaries `wavry-bench stack` starts, and the runner itself.
const STACK_PACKAGES: [&str; 5] = [
    "wavry-master",
    "wavry-gateway",
    "wavry-relay",
    "wavry-runtime",
    "wavry-bench",
];

/// `cargo build <extra> -p <each of STACK_PACKAGES> --bins`.
fn build_stack(extra: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["build"];
    args.extend_from_slice(extra);
    for p in STACK_PACKAGES {
        args.extend(["-p", p]);
    }
    args.push("--bins");
    cargo(&args)
}

fn demo(root: &Path, seconds: u64, io: &str, source: &str, encoder: &str) -> anyhow::Result<()> {
    ensure_apt(APT_DEMO)?;
    step(
        "building the stack (release): wavry, wavry-master, wavry-gateway, wavry-relay, \
         wavry-server, wavry-client and the wavry-bench runner",
    );
    build_stack(&["--release", "-p", "wavry-cli"])?;
    run(Command::new(root.join("target/release/wavry-bench"))
        .args(["stack", "--seconds", &seconds.to_string()])
        .args(["--io", io, "--source", source, "--encoder", encoder])
        .arg("--out-dir")
        .arg(root.join("target/demo")))
}
