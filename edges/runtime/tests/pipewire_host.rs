//! `wavry-server --source pipewire` as a real process against a private PipeWire daemon with a
//! GStreamer producer: a client decodes the stream and the host's recording passes ffprobe;
//! with no daemon the host says why and exits non-zero.
#![cfg(target_os = "linux")]

#[path = "../../media/tests/support/pw_daemon.rs"]
mod pw_daemon;
mod support;

use pw_daemon::Daemon;
use support::*;

#[test]
fn host_streams_a_pipewire_video_source_that_the_client_decodes() {
    let mut d = Daemon::start();
    d.produce("wavry-test-green", 0xff00_ff00, "BGRx");
    let dir = TempDir::new("pipewire");
    let runtime_dir = d.dir().to_str().unwrap().to_owned();
    let (host, addr, host_id) = server_env(
        &dir.0,
        &[
            "--source",
            "pipewire",
            "--pipewire-target",
            "wavry-test-green",
        ],
        &[("XDG_RUNTIME_DIR", &runtime_dir)],
    );
    let client = client(&dir.0, &addr, &host_id, &["--seconds", "2"]);
    let (ok, lines) = client.wait();
    assert!(ok, "client failed: {lines:?}");
    assert_pictures(&lines, 10);
    host.signal("-INT");
    let (ok, host_lines) = host.wait();
    assert!(ok, "{host_lines:?}");
    check_recording(&host_lines);
}

#[test]
fn without_a_pipewire_daemon_the_host_says_why() {
    let dir = TempDir::new("pipewire-none");
    let missing = dir.0.join("no-such-daemon");
    let out = run(
        env!("CARGO_BIN_EXE_wavry-server"),
        &["--allow-any", "--source", "pipewire"],
        &[("PIPEWIRE_REMOTE", missing.to_str().unwrap())],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--source pipewire") && err.contains("PipeWire"),
        "{err}"
    );
}
