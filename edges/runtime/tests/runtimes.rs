//! The real `wavry-server` and `wavry-client` processes on loopback: the host streams its
//! synthetic source over an authenticated, encrypted session; the client decodes it and reads
//! the right frame numbers back from the pixels; both record; Ctrl-C ends the host cleanly;
//! impostors and unsupported flags are refused.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;
use wavry_rift::identity::IdentityKey;

#[test]
fn host_streams_synthetic_video_that_the_client_decodes_frame_by_frame() {
    let dir = TempDir::new("stream");
    let (mut host, addr, host_id) = server(&dir.0, &[]);
    let client_rec = dir.0.join("client-rec");
    let client = client(
        &dir.0,
        &addr,
        &host_id,
        &[
            "--seconds",
            "3",
            "--stats",
            "--input-probe-hz",
            "20",
            "--record",
            "--record-dir",
            client_rec.to_str().unwrap(),
        ],
    );
    let (ok, lines) = client.wait();
    assert!(ok, "client failed: {lines:?}");
    host.line_with("connected");
    let summary = summary(&lines);
    let n = |k: &str| kv(summary, k).parse::<u64>().unwrap();
    // ~80 frames in 3 s at 30 fps; the bound leaves room for a loaded CI machine.
    assert!(n("decoded") >= 30, "{summary}");
    assert_eq!(n("unreadable"), 0, "{summary}");
    assert_eq!(
        n("mismatched"),
        0,
        "pixel timestamps match metadata: {summary}"
    );
    assert_eq!(n("out_of_order"), 0, "{summary}");
    assert_eq!(n("decode_errors"), 0, "{summary}");
    let (first, last) = (n("first_frame"), n("last_frame"));
    assert!(last > first, "{summary}");
    assert!(lines.iter().any(|l| l.starts_with("stats: ")), "{lines:?}");
    // The default audio source: a tone in 10 ms Opus packets, all decoded.
    assert!(n("audio_packets") >= 50, "{summary}");
    assert_eq!(n("audio_errors"), 0, "{summary}");
    assert!(
        n("audio_ms") >= 10 * n("audio_packets") * 9 / 10,
        "{summary}"
    );
    check_recording(&lines);
    // The parts of glass to glass are measured (a number, not "-").
    for k in [
        "g2g_p999_ms",
        "encode_p50_ms",
        "transport_p99_ms",
        "decode_p99_ms",
        "cpu_s",
    ] {
        assert!(kv(summary, k).parse::<f64>().is_ok(), "{k}: {summary}");
    }

    // Ctrl-C: the host says Goodbye, finalises its recording and exits 0.
    host.signal("-INT");
    let (ok, host_lines) = host.wait();
    assert!(ok, "host exit status after SIGINT: {host_lines:?}");
    check_recording(&host_lines);
    // Every input probe the client sent reached the sink, with its latency measured.
    let probes = n("input_probes");
    assert!(probes >= 20, "{summary}");
    let injected = host_lines
        .iter()
        .find(|l| l.contains("one-way latency p50 "))
        .unwrap_or_else(|| panic!("no input line in {host_lines:?}"));
    assert!(
        injected.contains(&format!("injected {probes} input events")),
        "{injected} / {summary}"
    );
}

#[test]
fn client_pinning_another_host_id_is_refused() {
    let dir = TempDir::new("pin");
    let (_host, addr, _) = server(&dir.0, &[]);
    let impostor = IdentityKey::generate().unwrap().id().to_string();
    let client = client(&dir.0, &addr, &impostor, &["--connect-timeout", "5"]);
    let (ok, lines) = client.wait();
    assert!(
        !ok,
        "client must fail against the wrong host identity: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("connected to")),
        "{lines:?}"
    );
}

#[test]
fn unsupported_and_unsafe_flags_are_refused_with_a_reason() {
    let client = env!("CARGO_BIN_EXE_wavry-client");
    let server = env!("CARGO_BIN_EXE_wavry-server");
    let cases: [(&str, &[&str], &str); 5] = [
        (client, &["--connect", "127.0.0.1:9", "--vr"], "VR"),
        (
            client,
            &["--connect", "127.0.0.1:9", "--no-encrypt"],
            "WAVRY_ALLOW_INSECURE_NO_ENCRYPT",
        ),
        (server, &["--allow-any", "--enable-webrtc"], "WebRTC"),
        (server, &[], "--allow"),
        (
            server,
            &["--allow-any", "--listen", "0.0.0.0:0"],
            "WAVRY_SERVER_ALLOW_PUBLIC_BIND",
        ),
    ];
    for (bin, args, reason) in cases {
        let out = run(bin, args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(err.contains(reason), "{args:?}: {err}");
    }
}

/// Every thread of `pid`: (thread id, name, scheduling policy: 0 normal, 1 SCHED_FIFO).
fn thread_policies(pid: u32) -> Vec<(u32, String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let tid = task.file_name().to_string_lossy().parse().unwrap();
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // Field 41 (policy); the fields after the parenthesised name start at field 3.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        out.push((tid, comm.trim().to_owned(), fields[41 - 3].parse().unwrap()));
    }
    out
}

/// Whether this process may ask for real-time scheduling (CAP_SYS_NICE, bit 23).
fn may_raise_priority() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    eff & (1 << 23) != 0
}

/// The host's I/O thread and input thread ask for SCHED_FIFO so that they preempt the encoder:
/// granted with CAP_SYS_NICE (CI runs as root); without it (`setpriv` drops it) `auto` carries
/// on at normal priority and says why, and `on` refuses to start.
#[test]
fn realtime_threads_are_granted_or_refused_with_a_reason() {
    let dir = TempDir::new("realtime");
    let (mut host, _, _) = server(&dir.0, &["--realtime", "on"]);
    host.line_with("input thread at");
    let raised = u32::from(may_raise_priority());
    let threads = thread_policies(host.pid());
    for (tid, name, policy) in &threads {
        // The input thread is the main thread; the encoder's, the capture loop's and the
        // audio loop's threads stay at normal priority.
        let want = if name == "wavry-host-io" || *tid == host.pid() {
            raised
        } else {
            0
        };
        assert_eq!(*policy, want, "{name} ({tid}) in {threads:?}");
    }
    assert!(
        threads.iter().any(|t| t.1 == "wavry-host-io"),
        "{threads:?}"
    );
    assert!(threads.len() >= 4, "{threads:?}");
    drop(host);

    let (key, _) = keys(&dir.0, "host2");
    let server = env!("CARGO_BIN_EXE_wavry-server");
    let base = [
        "--bounding-set=-sys_nice",
        server,
        "--key",
        &key,
        "--allow-any",
        "--listen",
        "127.0.0.1:0",
        "--audio-source",
        "disabled",
        "--seconds",
        "1",
        "--realtime",
    ];
    let mut on = base.to_vec();
    on.push("on");
    let out = run("setpriv", &on, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "--realtime on without the capability must fail"
    );
    assert!(err.contains("real-time scheduling refused"), "{err}");
    assert!(err.contains("CAP_SYS_NICE"), "{err}");
    let mut auto = base.to_vec();
    auto.push("auto");
    let out = run("setpriv", &auto, &[]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "--realtime auto must run: {out:?}");
    assert!(
        said.contains("I/O thread at normal priority (real-time refused"),
        "{said}"
    );
    assert!(said.contains("input thread at normal priority"), "{said}");
}

#[test]
fn no_encrypt_with_the_opt_in_says_it_changes_nothing() {
    let out = run(
        env!("CARGO_BIN_EXE_wavry-client"),
        // Nothing listens on port 9 of loopback: the connection itself fails quickly.
        &[
            "--connect",
            "127.0.0.1:9",
            "--no-encrypt",
            "--connect-timeout",
            "1",
        ],
        &[("WAVRY_ALLOW_INSECURE_NO_ENCRYPT", "1")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("changes nothing"), "{err}");
    assert!(
        !out.status.success(),
        "nothing answered, so the client fails: {err}"
    );
}

#[test]
fn ping_gets_echoes_from_a_running_server_and_an_unknown_identity_is_refused() {
    use wavry_runtime::ping::{PingError, PingOptions, ping};
    let dir = TempDir::new("ping");
    let (_host, addr, host_id) = server(&dir.0, &[]);
    let mut opts = PingOptions {
        server: addr.parse().unwrap(),
        key: Some(dir.0.join("client.key")),
        host_id: Some(host_id.parse().unwrap()),
        count: 5,
        interval: Duration::from_millis(10),
        timeout: Duration::from_secs(5),
        io: wavry_net::IoMode::Auto,
    };
    let mut seqs = Vec::new();
    let report = ping(&opts, |seq, _| seqs.push(seq)).unwrap();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    assert_eq!(report.peer.to_string(), host_id);
    assert!(report.summary_ms().is_some());

    // An identity the host does not allow: the handshake fails, no probe is answered.
    opts.key = None;
    opts.timeout = Duration::from_secs(2);
    let err = ping(&opts, |_, _| panic!("no reply expected")).unwrap_err();
    assert!(
        matches!(err, PingError::Refused(..) | PingError::NoAnswer(..)),
        "{err}"
    );
}

#[test]
fn ctrl_c_ends_the_client_cleanly_with_its_summary_and_recording() {
    // In Matroska: the format whose index and duration only the finish writes.
    let dir = TempDir::new("sigint");
    let (_host, addr, host_id) = server(&dir.0, &[]);
    let client_rec = dir.0.join("client-rec");
    let mut client = client(
        &dir.0,
        &addr,
        &host_id,
        &[
            "--stats",
            "--record",
            "--record-dir",
            client_rec.to_str().unwrap(),
            "--record-format",
            "mkv",
        ],
    );
    // A stats line comes after a second of streaming: frames have been recorded by then.
    client.line_with("stats: ");
    client.signal("-INT");
    let (ok, lines) = client.wait();
    assert!(ok, "client exit status after SIGINT: {lines:?}");
    let summary = summary(&lines);
    assert!(
        kv(summary, "decoded").parse::<u64>().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(kv(summary, "unreadable"), "0", "{summary}");
    let (_, path) = recorded(&lines);
    assert_eq!(path.extension().and_then(|e| e.to_str()), Some("mkv"));
    check_recording(&lines);
}

/// The video stream's bitrate in a recording, bit/s, as ffprobe reads it.
fn video_bit_rate(path: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=bit_rate", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("bit_rate of {}: {s:?}", path.display()))
}

#[test]
fn record_quality_low_and_high_reencode_at_their_own_bitrates() {
    let dir = TempDir::new("recq");
    let mut rates = Vec::new();
    for quality in ["low", "high"] {
        let sub = dir.0.join(quality);
        std::fs::create_dir_all(&sub).unwrap();
        // --bitrate-kbps 1000: low records at 250 kbit/s, high at 2000 kbit/s.
        let (host, addr, host_id) = server(&sub, &["--record-quality", quality]);
        let mut c = client(&sub, &addr, &host_id, &["--stats"]);
        // Two stats lines: two seconds of stream, so the recording is long enough to measure.
        c.line_with("stats: ");
        c.line_with("stats: ");
        let (_, lines) = stop_both(c, host);
        check_recording(&lines);
        rates.push(video_bit_rate(&recorded(&lines).1));
    }
    assert!(
        rates[0] * 3.0 < rates[1],
        "low and high recordings at {rates:?} bit/s"
    );
}

#[test]
fn host_streams_an_xvfb_display_and_a_client_key_press_reaches_its_xtest_sink() {
    let x = Xvfb::start("320x240x24");
    let display = x.display.to_string();
    let dir = TempDir::new("x11");
    let (host, addr, host_id) = server(&dir.0, &["--source", "x11", "--display-id", &display]);
    let client = client(
        &dir.0,
        &addr,
        &host_id,
        &["--seconds", "2", "--input-test-key", "30"],
    );
    let (ok, lines) = client.wait();
    assert!(ok, "client failed: {lines:?}");
    assert_pictures(&lines, 10);
    host.signal("-INT");
    let (ok, host_lines) = host.wait();
    assert!(ok, "{host_lines:?}");
    assert!(
        host_lines
            .iter()
            .any(|l| l.contains("injected 2 input events through xtest")),
        "{host_lines:?}"
    );
    check_recording(&host_lines);
}

#[test]
fn a_file_sent_from_the_client_arrives_whole_at_the_host_during_the_stream() {
    let dir = TempDir::new("file");
    let out = dir.0.join("received");
    let (host, addr, host_id) = server(&dir.0, &["--file-out-dir", out.to_str().unwrap()]);
    let src = dir.0.join("notes.bin");
    // 96 KiB: well within 2 s even at the 256 kbit/s floor of the transfer budget.
    let bytes: Vec<u8> = (0..96 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&src, &bytes).unwrap();
    let mut client = client(
        &dir.0,
        &addr,
        &host_id,
        &["--send-file", src.to_str().unwrap()],
    );
    client.line_with("sent notes.bin (98304 bytes, SHA-256 verified by the host)");
    let (_, host_lines) = stop_both(client, host);
    assert!(
        host_lines
            .iter()
            .any(|l| l.contains("received") && l.contains("notes.bin")),
        "{host_lines:?}"
    );
    assert_eq!(std::fs::read(out.join("notes.bin")).unwrap(), bytes);
}

#[test]
fn file_control_on_stdin_pauses_resumes_cancels_and_retries_an_upload() {
    let dir = TempDir::new("filectl");
    let out = dir.0.join("received");
    let (host, addr, host_id) = server(&dir.0, &["--file-out-dir", out.to_str().unwrap()]);
    let src = dir.0.join("big.bin");
    // 1 MiB: at the 4 Mbit/s ceiling of the transfer budget the upload takes over 2 s, far
    // longer than the pause that follows its offer needs to arrive.
    let bytes: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 23) as u8)
        .collect();
    std::fs::write(&src, &bytes).unwrap();
    let key = dir.0.join("client.key");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wavry-client"));
    cmd.args([
        "--connect",
        &addr,
        "--key",
        key.to_str().unwrap(),
        "--host-id",
        &host_id,
        "--send-file",
        src.to_str().unwrap(),
        "--file-control-stdin",
    ])
    .stdin(Stdio::piped());
    let mut client = Proc::spawn_cmd(cmd);
    let mut stdin = client.child.as_mut().unwrap().stdin.take().unwrap();
    let offer = client.line_with("offering big.bin (1048576 bytes) to the host as file");
    let id = offer.split_whitespace().last().unwrap().to_owned();
    let mut say = |line: &str| writeln!(stdin, "{line}").unwrap();
    say(&format!("{id} pause"));
    client.line_with(&format!("file {id}: paused"));
    // A bad line is reported (on stderr) and changes nothing.
    say("pause everything");
    say(&format!("{id} resume"));
    client.line_with(&format!("file {id}: resumed"));
    say(&format!("{id} cancel"));
    client.line_with(&format!("file {id}: cancelled"));
    say(&format!("{id} retry"));
    client.line_with(&format!("(retry of file {id})"));
    client.line_with("sent big.bin (1048576 bytes, SHA-256 verified by the host)");
    drop(stdin);
    stop_both(client, host);
    assert_eq!(std::fs::read(out.join("big.bin")).unwrap(), bytes);
}

#[test]
fn a_file_sent_by_the_host_arrives_whole_at_the_client() {
    let dir = TempDir::new("hostfile");
    let src = dir.0.join("from-host.bin");
    let bytes: Vec<u8> = (0..40_000u32)
        .map(|i| (i.wrapping_mul(40_503) >> 8) as u8)
        .collect();
    std::fs::write(&src, &bytes).unwrap();
    let (_host, addr, host_id) = server(&dir.0, &["--send-file", src.to_str().unwrap()]);
    let out = dir.0.join("client-received");
    let mut client = client(
        &dir.0,
        &addr,
        &host_id,
        &["--file-out-dir", out.to_str().unwrap()],
    );
    client.line_with("received");
    client.signal("-INT");
    let (ok, lines) = client.wait();
    assert!(ok, "{lines:?}");
    assert_eq!(std::fs::read(out.join("from-host.bin")).unwrap(), bytes);
}

/// A Wavry ID starting with '-' (base64url has it): found by walking seeds, deterministically.
fn dash_id() -> String {
    (0u8..=255)
        .map(|b| IdentityKey::from_seed([b; 32]).unwrap().id().to_string())
        .find(|id| id.starts_with('-'))
        .expect("one of 256 seeds gives an ID starting with '-'")
}

#[test]
fn wavry_ids_starting_with_a_hyphen_are_accepted_as_values() {
    let id = dash_id();
    let out = run(
        env!("CARGO_BIN_EXE_wavry-server"),
        &[
            "--allow",
            &id,
            "--seconds",
            "1",
            "--audio-source",
            "disabled",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let out = run(
        env!("CARGO_BIN_EXE_wavry-client"),
        &[
            "--connect",
            "127.0.0.1:9",
            "--host-id",
            &id,
            "--connect-timeout",
            "1",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("unexpected argument"), "{err}");
    assert!(err.contains("127.0.0.1:9"), "it tried to connect: {err}");
}

#[test]
fn the_window_under_xvfb_shows_decoded_frames() {
    use wavry_media::{InputEvent, InputSink, RawFrame, VideoSource, stamp, x11::X11Source};
    let x = Xvfb::start("640x480x24");
    let display = format!(":{}", x.display);
    let dir = TempDir::new("window");
    let (host, addr, host_id) = server(&dir.0, &[]);
    let client_key = dir.0.join("client.key");
    let mut c = Command::new(env!("CARGO_BIN_EXE_wavry-client"));
    c.args(["--connect", &addr, "--key", client_key.to_str().unwrap()])
        .args(["--host-id", &host_id, "--window", "--stats"])
        .env("DISPLAY", &display);
    let mut client = Proc::spawn_cmd(c);
    // A stats line comes after a second of frames presented.
    client.line_with("stats: ");
    // Screenshot the display; the window sits at the top-left, the stream is 320x240.
    let mut shot = RawFrame::new(2, 2);
    X11Source::open(Some(&display), 30)
        .unwrap()
        .capture(&mut shot)
        .unwrap();
    let mut crop = RawFrame::new(320, 240);
    for row in 0..240 {
        let src = &shot.y()[row * 640..row * 640 + 320];
        crop.y_mut()[row * 320..(row + 1) * 320].copy_from_slice(src);
    }
    let s = stamp::read(&crop).expect("the window shows a frame whose pixel code reads back");
    assert!(s.capture_us > 0);
    // Type into the window as a person would: pointer over it (no window manager: focus
    // follows the pointer), then press and release A. The client sends both to the host.
    let mut keyboard = wavry_media::x11::XTestSink::open(Some(&display)).unwrap();
    keyboard
        .inject(&InputEvent::MouseMove { x: 0.1, y: 0.1 })
        .unwrap();
    for pressed in [true, false] {
        keyboard
            .inject(&InputEvent::Key { code: 30, pressed })
            .unwrap();
    }
    // The video thread reads the window's events every 2 ms and as each picture is shown.
    client.line_with("stats: ");
    client.line_with("stats: ");
    client.signal("-INT");
    let (ok, lines) = client.wait();
    assert!(ok, "{lines:?}");
    let summary = summary(&lines);
    assert_eq!(kv(summary, "window_keys"), "2", "{summary}");
    host.signal("-INT");
    let (ok, host_lines) = host.wait();
    assert!(ok, "{host_lines:?}");
    let sent: u64 = kv(summary, "window_input").parse().unwrap();
    assert!(
        host_lines
            .iter()
            .any(|l| l.contains(&format!("injected {sent} input events"))),
        "client sent {sent}: {host_lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("presenter window")),
        "{lines:?}"
    );
}
