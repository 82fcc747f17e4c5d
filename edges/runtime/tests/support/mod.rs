//! Helpers shared by the runtime tests: temporary directories, child processes with their
//! stdout lines, keys, the host and client started with test defaults, ffprobe checks, Xvfb.
#![allow(dead_code, unreachable_pub)] // each test binary uses a part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use wavry_rift::identity::IdentityKey;

pub const LIMIT: Duration = Duration::from_secs(60);

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("wavry-runtime-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the process on drop unless it was waited for (a failing test leaves nothing behind).
pub struct Proc {
    pub child: Option<Child>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    pub fn spawn(bin: &str, args: &[&str]) -> Self {
        let mut c = Command::new(bin);
        c.args(args);
        Self::spawn_cmd(c)
    }

    pub fn spawn_cmd(mut c: Command) -> Self {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Self {
            child: Some(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line containing `needle` and returns it.
    pub fn line_with(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(LIMIT) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(e) => panic!("no line with {needle:?} ({e:?}); saw {:?}", self.seen),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits (bounded) for exit; returns success and every stdout line.
    pub fn wait(mut self) -> (bool, Vec<String>) {
        let mut child = self.child.take().unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let pid = child.id();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(LIMIT) {
            Ok(s) => s.unwrap(),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                panic!(
                    "process {pid} did not exit in {LIMIT:?}; saw {:?}",
                    self.seen
                );
            }
        };
        // The reader thread ends at EOF once the process is gone.
        while let Ok(l) = self.lines.recv_timeout(LIMIT) {
            self.seen.push(l);
        }
        (status.success(), std::mem::take(&mut self.seen))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Ctrl-C to the client, then to the host; both must exit 0. Returns their stdout lines.
pub fn stop_both(client: Proc, host: Proc) -> (Vec<String>, Vec<String>) {
    client.signal("-INT");
    let (ok, client_lines) = client.wait();
    assert!(ok, "client: {client_lines:?}");
    host.signal("-INT");
    let (ok, host_lines) = host.wait();
    assert!(ok, "host: {host_lines:?}");
    (client_lines, host_lines)
}

/// Registers account `name` bound to `key` through a gateway: a challenge, signed with the
/// key, then the registration; returns the session token. `post(path, body)` sends to the
/// gateway and answers its status and JSON body.
pub fn register_account(
    name: &str,
    key: &IdentityKey,
    password: &str,
    mut post: impl FnMut(&str, &serde_json::Value) -> (u16, serde_json::Value),
) -> String {
    let pk = hex::encode(key.id().as_bytes());
    let (code, ch) = post(
        "/auth/register/challenge",
        &serde_json::json!({"public_key": pk}),
    );
    assert_eq!(code, 200, "{ch}");
    let sig = hex::encode(key.sign(ch["message"].as_str().unwrap().as_bytes()));
    let (code, body) = post(
        "/auth/register",
        &serde_json::json!({"email": format!("{name}@example.com"), "password": password,
                            "display_name": name, "username": name, "public_key": pk,
                            "challenge": ch["challenge"], "signature": sig}),
    );
    assert_eq!(code, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

pub fn keys(dir: &Path, name: &str) -> (String, String) {
    let k = IdentityKey::generate().unwrap();
    let (path, _) = k.write_files(&dir.join(name), false).unwrap();
    (path.to_str().unwrap().to_owned(), k.id().to_string())
}

/// The client's `summary` line among its stdout lines.
pub fn summary(lines: &[String]) -> &str {
    lines
        .iter()
        .find(|l| l.starts_with("summary "))
        .unwrap_or_else(|| panic!("no summary in {lines:?}"))
}

/// The client's summary shows at least `min` pictures shown and no decode error; returns it.
pub fn assert_pictures(lines: &[String], min: u64) -> &str {
    let s = summary(lines);
    assert!(kv(s, "pictures").parse::<u64>().unwrap() >= min, "{s}");
    assert_eq!(kv(s, "decode_errors"), "0", "{s}");
    s
}

pub fn kv(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing in {line}"))
        .to_owned()
}

pub fn ffprobe(path: &Path) -> (String, u32, u32, f64) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height:format=duration",
            "-of",
            "default=noprint_wrappers=1",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).unwrap();
    let f = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing in {s}"))
            .to_owned()
    };
    (
        f("codec_name"),
        f("width").parse().unwrap(),
        f("height").parse().unwrap(),
        f("duration").parse().unwrap(),
    )
}

/// "recorded N frames (D s) to PATH" → (D, PATH)
pub fn recorded(lines: &[String]) -> (f64, PathBuf) {
    let l = lines
        .iter()
        .find(|l| l.contains(" recorded "))
        .unwrap_or_else(|| panic!("no recording line in {lines:?}"));
    let d = l.split('(').nth(1).unwrap().split(' ').next().unwrap();
    let path = l.rsplit(" to ").next().unwrap();
    (d.parse().unwrap(), PathBuf::from(path))
}

pub fn check_recording(lines: &[String]) {
    let (claimed, path) = recorded(lines);
    let (codec, w, h, duration) = ffprobe(&path);
    let audio = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=codec_name",
        ])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&audio.stdout).trim(),
        "codec_name=opus",
        "{}: the tone's Opus track",
        path.display()
    );
    assert_eq!((codec.as_str(), w, h), ("h264", 320, 240));
    assert!(claimed > 0.5, "recording of {claimed} s");
    assert!(
        (duration - claimed).abs() <= claimed * 0.05,
        "ffprobe says {duration} s, the recorder wrote {claimed} s"
    );
}

pub fn server(dir: &Path, extra: &[&str]) -> (Proc, String, String) {
    server_env(dir, extra, &[])
}

/// [`server`] with extra environment variables.
pub fn server_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Proc, String, String) {
    let (host_key, _) = keys(dir, "host");
    let (_, client_id) = keys(dir, "client");
    let rec = dir.join("host-rec");
    let mut args = vec![
        "--key",
        &host_key,
        "--allow",
        &client_id,
        "--listen",
        "127.0.0.1:0",
        "--width",
        "320",
        "--height",
        "240",
        "--fps",
        "30",
        "--bitrate-kbps",
        "1000",
        "--record",
        "--record-dir",
        rec.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut c = Command::new(env!("CARGO_BIN_EXE_wavry-server"));
    c.args(&args).envs(env.iter().copied());
    let mut p = Proc::spawn_cmd(c);
    let line = p.line_with("listening on");
    let mut words = line.split_whitespace().skip_while(|w| *w != "on").skip(1);
    let addr = words.next().unwrap().to_owned();
    let id = words.nth(1).unwrap().to_owned();
    (p, addr, id)
}

/// Starts `wavry-client` with the key [`server`] allowed, connecting to `addr` and pinning
/// `host_id`, plus `extra` flags.
pub fn client(dir: &Path, addr: &str, host_id: &str, extra: &[&str]) -> Proc {
    let key = dir.join("client.key");
    let mut args = vec![
        "--connect",
        addr,
        "--key",
        key.to_str().unwrap(),
        "--host-id",
        host_id,
    ];
    args.extend_from_slice(extra);
    Proc::spawn(env!("CARGO_BIN_EXE_wavry-client"), &args)
}

pub fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin);
    c.args(args).env_remove("WAVRY_ALLOW_INSECURE_NO_ENCRYPT");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// An Xvfb on a free display (reported through -displayfd), killed on drop.
pub struct Xvfb {
    child: Child,
    pub display: u32,
}

impl Xvfb {
    pub fn start(size: &str) -> Self {
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0", size, "-noreset"])
            .args(["-nolisten", "tcp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is installed (cargo xtask test installs xvfb)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // Written once the server accepts connections.
        let display = line.trim().parse().expect("display number from Xvfb");
        Self { child, display }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
