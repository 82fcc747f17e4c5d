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
            .command("pipewire")
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
            .command("gst-launch-1.0")
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
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Producers first, the daemon last.
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
