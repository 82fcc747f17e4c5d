//! Test and bench support for the control plane: run `wavry-master` / `wavry-gateway` as real
//! processes on free loopback ports and wait for them by polling `/health` with a deadline;
//! start throwaway Postgres clusters from the Debian `postgresql` binaries; read `/metrics`
//! strictly ([`openmetrics`]).

pub mod openmetrics;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A free loopback TCP port (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A fresh temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/wavry-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "wavry-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            Instant::now().elapsed().subsec_nanos()
        ));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running service process (killed on drop).
#[derive(Debug)]
pub struct Service {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Port it listens on.
    pub port: u16,
}

impl Service {
    /// Spawns `bin` with `args` and `envs` (the environment is otherwise inherited minus
    /// `RUST_LOG` noise), then polls `GET {base}/health` until it answers 200 or `deadline`.
    pub async fn spawn(
        bin: &Path,
        port: u16,
        args: &[String],
        envs: &[(String, String)],
        deadline: Duration,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("WAVRY_TEST_SHOW_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut svc = Self {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            port,
        };
        svc.wait_healthy(deadline).await?;
        Ok(svc)
    }

    async fn wait_healthy(&mut self, deadline: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let end = Instant::now() + deadline;
        let mut backoff = Duration::from_millis(10);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "service exited before becoming healthy: {status} (set WAVRY_TEST_SHOW_LOGS=1 to see its log)"
                    );
                }
            }
            if let Ok(r) = client.get(format!("{}/health", self.base)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() >= end {
                bail!("service at {} not healthy within {deadline:?}", self.base);
            }
            // Poll interval of a bounded readiness wait (not a synchronisation sleep).
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().await?;
        }
        Ok(())
    }
}

/// Runs `bin` with `args` and `envs` (environment otherwise inherited) to completion, for
/// one-shot modes such as `--probe`; killed after `deadline`. Returns its status and output.
pub async fn run_once(
    bin: &Path,
    args: &[String],
    envs: &[(String, String)],
    deadline: Duration,
) -> anyhow::Result<std::process::Output> {
    let child = Command::new(bin)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .with_context(|| format!("{} still running after {deadline:?}", bin.display()))?
        .with_context(|| format!("waiting for {}", bin.display()))
}

/// Checks a service binary's `--probe` health-check mode, as the container images use it:
/// against the service listening on `port` it exits 0 quietly, both with the address given
/// as `addr_flag` and with it coming from `addr_env` as the unspecified address; against a
/// free port it exits 1 with one line naming the URL it tried. Panics (test helper) otherwise.
#[allow(clippy::missing_panics_doc)]
pub async fn assert_probe(bin: &Path, name: &str, addr_flag: &str, addr_env: &str, port: u16) {
    let probe = |args: Vec<String>, envs: Vec<(String, String)>| async move {
        run_once(bin, &args, &envs, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{name} --probe: {e:#}"))
    };
    let flag = |port: u16| {
        vec![
            "--probe".to_owned(),
            addr_flag.to_owned(),
            format!("127.0.0.1:{port}"),
        ]
    };
    let out = probe(flag(port), vec![]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    // As in the image: the address comes from the environment and is unspecified.
    let env = vec![(addr_env.to_owned(), format!("0.0.0.0:{port}"))];
    let out = probe(vec!["--probe".into()], env).await;
    assert!(out.status.success(), "{out:?}");

    let free = free_port().unwrap_or_else(|e| panic!("free port: {e}"));
    let out = probe(flag(free), vec![]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    let want = format!("{name} --probe: GET http://127.0.0.1:{free}/health: ");
    assert!(err.starts_with(&want), "{err}");
}

/// Locates a sibling binary of the running executable's target directory (e.g. the master
/// binary next to the gateway's, or both next to `wavry-bench`).
pub fn sibling_binary(anchor: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = anchor.parent().context("binary has no parent directory")?;
    let p = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !p.exists() {
        bail!(
            "{} not found: build it first (`cargo test -p wavry-master -p wavry-gateway`, \
             `cargo build --release -p {name}`, or `cargo xtask test`)",
            p.display()
        );
    }
    Ok(p)
}

/// A throwaway Postgres cluster on a free loopback port in a temp dir; stopped and deleted on
/// drop. Uses `/usr/lib/postgresql/*/bin/{initdb,pg_ctl}` and, when running as root, the
/// `postgres` OS user (`runuser -u postgres`).
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    as_root: bool,
    /// Port the cluster listens on.
    pub port: u16,
}

fn find_pg_bin() -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().context(
        "Postgres server binaries not found under /usr/lib/postgresql/*/bin (initdb, pg_ctl). \
         Run `cargo xtask test` (it installs the Debian `postgresql` package) or `apt-get install -y postgresql`",
    )
}

impl PgCluster {
    /// initdb + pg_ctl start (trust auth on loopback, user `postgres`).
    pub fn start() -> anyhow::Result<Self> {
        let bin = find_pg_bin()?;
        let as_root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let dir =
            std::env::temp_dir().join(format!("wavry-pg-{}-{}", std::process::id(), free_port()?));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let me = Self {
            dir: dir.clone(),
            bin,
            as_root,
            port,
        };
        if as_root {
            let ok = std::process::Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&dir)
                .status()?
                .success();
            if !ok {
                bail!("chown postgres {} failed", dir.display());
            }
        }
        let data = dir.join("data");
        me.run_pg(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off",
            dir.display()
        );
        me.run_pg(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-o",
                &opts,
                "-l",
                &dir.join("log").to_string_lossy(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        )?;
        Ok(me)
    }

    fn run_pg(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.bin.join(tool);
        let out = if self.as_root {
            std::process::Command::new("runuser")
                .arg("-u")
                .arg("postgres")
                .arg("--")
                .arg(&exe)
                .args(args)
                .output()
        } else {
            std::process::Command::new(&exe).args(args).output()
        }
        .with_context(|| format!("running {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// URL of database `db` (create it first with [`Self::create_db`]).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a database with `createdb`.
    pub fn create_db(&self, name: &str) -> anyhow::Result<()> {
        self.run_pg(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ],
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.run_pg(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Verifies a relay lease exactly as a relay does, with `wavry_rift::lease::LeaseVerifier`
/// (signature, key id, relay id, session, role, times).
pub fn verify_lease(
    public_key: [u8; 32],
    key_id: &str,
    relay_id: &str,
    token: &str,
    session_id: uuid::Uuid,
    role: wavry_rift::lease::LeaseRole,
) -> anyhow::Result<wavry_rift::lease::LeaseClaims> {
    use wavry_rift::lease::LeaseVerifier;
    let now = time::OffsetDateTime::now_utc();
    LeaseVerifier::new(public_key, Some(key_id.to_owned()), relay_id)
        .verify(token, now, session_id, role)
        .map_err(|e| anyhow::anyhow!("lease refused: {e}"))
}
