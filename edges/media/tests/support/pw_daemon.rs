//! A private PipeWire daemon for tests, with GStreamer producers; shared by the media and
//! runtime tests (included by path).
#![allow(dead_code, unreachable_pub)]

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A PipeWire daemon in its own runtime directory, and the processes using it; all killed and
/// removed on drop.
pub struct Daemon {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Daemon {
    pub fn start() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("wavry-pw-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let mut d = Self {
            dir,
            children: Vec::new(),
        };
        let daemon = d
            .logged("pipewire", "pipewire")
            .spawn()
            .expect("pipewire is installed (cargo xtask test installs it)");
        d.children.push(daemon);
        // The daemon creates its socket once it listens; bounded wait for that file.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !d.socket().exists() {
            assert!(
                Instant::now() < deadline,
                "pipewire never opened its socket"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("XDG_RUNTIME_DIR", &self.dir)
            .env_remove("PIPEWIRE_REMOTE")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// `command(program)` with its stderr in `<dir>/<log>.log`, printed if the test fails.
    fn logged(&self, program: &str, log: &str) -> Command {
        let mut c = self.command(program);
        let file = std::fs::File::create(self.dir.join(format!("{log}.log"))).unwrap();
        c.stderr(file);
        c
    }

    /// The runtime directory (`XDG_RUNTIME_DIR` for clients of this daemon).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("pipewire-0")
    }

    /// A `Video/Source` node named `name` showing one colour (GStreamer ARGB) in `format`.
    pub fn produce(&mut self, name: &str, argb: u32, format: &str) {
        let child = self
            .logged("gst-launch-1.0", name)
            .args([
                "videotestsrc",
                "is-live=true",
                "pattern=solid-color",
                &format!("foreground-color={argb}"),
                "!",
                &format!("video/x-raw,format={format},width=320,height=240,framerate=30/1"),
                "!",
                "pipewiresink",
                "mode=provide",
                &format!("stream-properties=props,node.name={name},media.class=Video/Source"),
            ])
            .spawn()
            .expect("gst-launch-1.0 is installed (gstreamer1.0-tools, gstreamer1.0-pipewire)");
        self.children.push(child);
        self.wait_for_node(name);
    }

    /// Waits (bounded) until the daemon lists a node named `name`: a producer's first start
    /// scans GStreamer's plugins, which on a fresh, busy machine takes longer than a capture's
    /// wait for its first frame.
    pub fn wait_for_node(&mut self, name: &str) {
        let needle = format!("\"node.name\": \"{name}\"");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self
                .command("pw-dump")
                .stdout(Stdio::piped())
                .output()
                .expect("pw-dump is installed (pipewire-bin)");
            if String::from_utf8_lossy(&out.stdout).contains(&needle) {
                return;
            }
            for c in &mut self.children {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("a PipeWire test process exited ({status}) before {name:?} appeared");
                }
            }
            assert!(
                Instant::now() < deadline,
                "no PipeWire node {name:?} appeared within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Daemon {
    /// Prints what the daemon and the producers wrote to stderr: the cause when a test fails.
    fn print_logs(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                eprintln!("--- {} ---\n{text}", path.display());
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        // Producers first, the daemon last.
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
