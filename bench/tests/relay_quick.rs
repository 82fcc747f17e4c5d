//! `wavry-bench relay --quick` end to end: a real `wavry-relay` process, leases, the naive and
//! ceiling forwarders, the junk flood and the session-count run. Asserts the counts are sane
//! (everything forwarded something, all sessions admitted) — never timings.
//!
//! Needs the relay binary beside the bench's: `cargo build -p wavry-relay` first (the same
//! profile), or `cargo test -p wavry-relay -p wavry-bench`.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[test]
fn quick_relay_bench_forwards_through_every_path_and_admits_every_session() {
    let bench = Path::new(env!("CARGO_BIN_EXE_wavry-bench"));
    let relay = bench.with_file_name("wavry-relay");
    assert!(
        relay.exists(),
        "{} missing: run `cargo build -p wavry-relay` first",
        relay.display()
    );
    let json = std::env::temp_dir().join(format!("wavry-relay-bench-{}.json", std::process::id()));
    let mut child = Command::new(bench)
        .args(["relay", "--quick", "--json"])
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Bounded: the quick run takes seconds; kill it if it hangs.
    let end = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wavry-bench relay --quick did not finish in 180 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);

    let round = &report["rounds"][0];
    let sat = round["saturation"].as_array().unwrap();
    // Two shapes x (ceiling, naive, relay).
    assert_eq!(sat.len(), 6, "{round}");
    for f in sat {
        let (sent, received) = (f["sent"].as_u64().unwrap(), f["received"].as_u64().unwrap());
        assert!(received > 0, "nothing forwarded: {f}");
        assert!(received <= sent, "more received than sent: {f}");
        assert!(f["pps"].as_f64().unwrap() > 0.0, "{f}");
    }
    for f in sat.iter().filter(|f| f["forwarder"] == "relay") {
        assert!(
            f["cpu_seconds"].as_f64().unwrap() > 0.0,
            "relay CPU not read: {f}"
        );
    }
    let lat = round["latency"].as_array().unwrap();
    assert_eq!(lat.len(), 4, "{round}");
    for f in lat {
        assert!(f["received"].as_u64().unwrap() > 0, "{f}");
        assert!(f["p50_us"].as_f64().unwrap() > 0.0, "{f}");
    }
    let junk = &round["junk"];
    assert!(junk["junk_sent"].as_u64().unwrap() > 0, "{junk}");
    assert!(junk["received"].as_u64().unwrap() > 0, "{junk}");
    let prefix = &round["junk_prefix"];
    assert!(prefix["junk_sent"].as_u64().unwrap() > 0, "{prefix}");
    assert!(prefix["received"].as_u64().unwrap() > 0, "{prefix}");
    // Run as root with clang in the build, so eBPF loads (else the relay says why and runs
    // the prefix filter, and this fails naming it).
    assert_eq!(report["kernel_filter"], "bound-peers", "{report}");
    assert_eq!(report["added_latency"].as_array().unwrap().len(), 2);
    for f in lat.iter().filter(|f| f["forwarder"] == "relay") {
        assert!(f["inside_p99_us"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["socket_p50_us"].as_f64().unwrap() > 0.0, "{f}");
    }
    assert_eq!(report["ratios"].as_array().unwrap().len(), 2);
    let sc = &report["session_count"];
    assert_eq!(sc["sessions"], 2000, "{sc}");
    // Every admitted session still forwards (a datagram or two may be lost on loopback).
    assert!(sc["forwarded_after"].as_u64().unwrap() > 1900, "{sc}");
    assert!(sc["rss_after_bytes"].as_u64().unwrap() > 0, "{sc}");
}
