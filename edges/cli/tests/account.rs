//! `wavry register` and `wavry login` against real `wavry-master` and `wavry-gateway`
//! processes on loopback: the token lands in a 0600 file and binds to the gateway as the
//! account, the password and token never reach the terminal, and refusals (taken names, a
//! wrong password, 2FA, an unreachable gateway) say what to do.
//!
//! Build the services first: `cargo build -p wavry-master -p wavry-gateway`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use totp_rs::{Algorithm, Secret, TOTP};
use wavry_control_testkit::{Service, TempDir, free_port, sibling_binary};
use wavry_runtime::signal::Signal;

const PASSWORD: &str = "correct horse battery staple";
const STARTUP: Duration = Duration::from_secs(30);
const SERVICE_TOKEN: &str = "gateway-service-token-for-the-cli-tests-0123";

struct Stack {
    _master: Service,
    gateway: Service,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Stack {
    fn start(dir: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let anchor = Path::new(env!("CARGO_BIN_EXE_wavry"));
        let spawn = |bin: &'static str, port: u16, args: Vec<String>, envs: &[(&str, &str)]| {
            let bin = sibling_binary(anchor, bin).unwrap();
            let envs: Vec<(String, String)> = envs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            rt.block_on(Service::spawn(&bin, port, &args, &envs, STARTUP))
                .unwrap()
        };
        let args = |port: u16, data: &str| {
            vec![
                "--listen".to_owned(),
                format!("127.0.0.1:{port}"),
                "--data-dir".to_owned(),
                dir.join(data).display().to_string(),
            ]
        };
        let port = free_port().unwrap();
        let master = spawn(
            "wavry-master",
            port,
            args(port, "master"),
            &[("WAVRY_MASTER_SERVICE_TOKEN", SERVICE_TOKEN)],
        );
        let port = free_port().unwrap();
        let gateway = spawn(
            "wavry-gateway",
            port,
            [
                args(port, "gateway"),
                vec!["--master-url".into(), master.base.clone()],
            ]
            .concat(),
            &[
                ("WAVRY_GATEWAY_MASTER_TOKEN", SERVICE_TOKEN),
                ("WAVRY_AUTH_RATE_LIMIT", "1000"),
            ],
        );
        Self {
            _master: master,
            gateway,
            http: reqwest::Client::new(),
            rt,
        }
    }

    /// Binds to the gateway's `/ws` with `token`: the account's username and Wavry ID.
    fn whoami(&self, token: &str) -> (String, Option<String>) {
        let url = format!("ws://127.0.0.1:{}/ws", self.gateway.port);
        let s = Signal::connect(&url, token, Duration::from_secs(10)).unwrap();
        (s.username.clone(), s.wavry_id.clone())
    }

    fn post(&self, path: &str, body: &Value, token: &str) -> (u16, Value) {
        self.rt.block_on(async {
            let r = self
                .http
                .post(format!("{}{path}", self.gateway.base))
                .bearer_auth(token)
                .json(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        })
    }
}

/// Runs `wavry` with `args`, the password in `WAVRY_PASSWORD` (or on stdin when `stdin`).
fn wavry(args: &[&str], password: Option<&str>, stdin: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wavry"));
    c.args(args)
        .env_remove("WAVRY_PASSWORD")
        .env_remove("WAVRY_GATEWAY_HTTP_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = password {
        c.env("WAVRY_PASSWORD", p);
    }
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// Both streams of a run, for assertions on what reached the terminal.
fn shown(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", shown(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The token in `path`, after checking the file is private.
fn token_in(path: &Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let t = std::fs::read_to_string(path).unwrap();
    assert!(
        t.ends_with('\n') && t.lines().count() == 1,
        "one line: {t:?}"
    );
    t.trim().to_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn totp(secret: &str) -> TOTP {
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        30,
        Secret::Encoded(secret.into()).to_bytes().unwrap(),
    )
    .unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn register_then_login_write_private_tokens_that_bind_as_the_account() {
    let dir = TempDir::new("cli-account").unwrap();
    let stack = Stack::start(dir.path());
    let gw = stack.gateway.base.as_str();
    let at = |name: &str| -> PathBuf { dir.path().join(name) };

    let id = ok(&wavry(&["keygen", "-o", s(&at("alice"))], None, None))
        .trim()
        .to_owned();
    let reg = wavry(
        &[
            "register",
            "--gateway",
            gw,
            "--username",
            "alice",
            "--email",
            "alice@example.com",
            "--key",
            s(&at("alice.key")),
            "--token-out",
            s(&at("alice.token")),
        ],
        Some(PASSWORD),
        None,
    );
    let stdout = ok(&reg);
    assert!(
        stdout.contains("alice") && stdout.contains(&id) && stdout.contains("alice.token"),
        "{stdout}"
    );
    let token = token_in(&at("alice.token"));
    assert!(!shown(&reg).contains(&token) && !shown(&reg).contains(PASSWORD));
    assert_eq!(stack.whoami(&token), ("alice".to_owned(), Some(id.clone())));

    // Login by username (gateway from the environment); an existing world-readable file
    // is replaced and made private.
    let login_out = at("login.token");
    std::fs::write(&login_out, "stale\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&login_out, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut c = Command::new(env!("CARGO_BIN_EXE_wavry"));
    let login = c
        .args(["login", "--username", "alice", "--token-out", s(&login_out)])
        .env("WAVRY_GATEWAY_HTTP_URL", gw)
        .env("WAVRY_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = ok(&login);
    assert!(stdout.contains("alice") && stdout.contains(&id), "{stdout}");
    let token2 = token_in(&login_out);
    assert_ne!(token2, token);
    assert!(!shown(&login).contains(&token2) && !shown(&login).contains(PASSWORD));
    assert_eq!(stack.whoami(&token2).0, "alice");

    // By email, the password as one line of stdin.
    let by_email = wavry(
        &[
            "login",
            "--gateway",
            gw,
            "--email",
            "alice@example.com",
            "--token-out",
            s(&at("email.token")),
        ],
        None,
        Some(&format!("{PASSWORD}\n")),
    );
    ok(&by_email);
    assert_eq!(stack.whoami(&token_in(&at("email.token"))).0, "alice");

    // A wrong password: non-zero, says so, shows neither password, leaves the file alone.
    let wrong = "not the password at all";
    let bad = wavry(
        &[
            "login",
            "--gateway",
            gw,
            "--username",
            "alice",
            "--token-out",
            s(&login_out),
        ],
        Some(wrong),
        None,
    );
    assert!(!bad.status.success());
    let err = shown(&bad);
    assert!(err.contains("wrong username, email or password"), "{err}");
    assert!(!err.contains(wrong) && !err.contains(PASSWORD), "{err}");
    assert_eq!(token_in(&login_out), token2);

    // The name is taken: 409 explained.
    ok(&wavry(&["keygen", "-o", s(&at("other"))], None, None));
    let taken = wavry(
        &[
            "register",
            "--gateway",
            gw,
            "--username",
            "alice",
            "--email",
            "other@example.com",
            "--key",
            s(&at("other.key")),
            "--token-out",
            s(&at("other.token")),
        ],
        Some(PASSWORD),
        None,
    );
    assert!(!taken.status.success());
    let err = shown(&taken);
    assert!(
        err.contains("already has an account") && err.contains("wavry login"),
        "{err}"
    );
    assert!(!at("other.token").exists());
}

#[test]
fn two_factor_logins_ask_for_the_code() {
    let dir = TempDir::new("cli-2fa").unwrap();
    let stack = Stack::start(dir.path());
    let gw = stack.gateway.base.as_str();
    let at = |name: &str| -> PathBuf { dir.path().join(name) };
    ok(&wavry(&["keygen", "-o", s(&at("bob"))], None, None));
    ok(&wavry(
        &[
            "register",
            "--gateway",
            gw,
            "--username",
            "bob",
            "--email",
            "bob@example.com",
            "--display-name",
            "Bob B.",
            "--key",
            s(&at("bob.key")),
            "--token-out",
            s(&at("bob.token")),
        ],
        Some(PASSWORD),
        None,
    ));
    let token = token_in(&at("bob.token"));
    let (code, setup) = stack.post("/auth/2fa/setup", &json!({}), &token);
    assert_eq!(code, 200, "{setup}");
    let secret = setup["secret"].as_str().unwrap();
    let (code, body) = stack.post(
        "/auth/2fa/enable",
        &json!({"secret": secret, "code": totp(secret).generate(unix_now()), "password": PASSWORD}),
        &token,
    );
    assert_eq!(code, 200, "{body}");

    let login = |extra: &[&str]| {
        let mut args = vec!["login", "--gateway", gw, "--username", "bob", "--token-out"];
        let out = at("login.token");
        let out = out.to_str().unwrap().to_owned();
        args.push(&out);
        args.extend_from_slice(extra);
        wavry(&args, Some(PASSWORD), None)
    };
    let without = login(&[]);
    assert!(!without.status.success());
    let err = shown(&without);
    assert!(err.contains("2FA") && err.contains("--totp"), "{err}");
    // The next step's code (the current one was spent enabling 2FA).
    let code = totp(secret).generate(unix_now() + 30);
    ok(&login(&["--totp", &code]));
    assert_eq!(stack.whoami(&token_in(&at("login.token"))).0, "bob");
}

#[test]
fn an_unreachable_gateway_is_explained() {
    let dir = TempDir::new("cli-unreachable").unwrap();
    let prefix = dir.path().join("k");
    ok(&wavry(&["keygen", "-o", s(&prefix)], None, None));
    let url = format!("http://127.0.0.1:{}", free_port().unwrap());
    let out = wavry(
        &[
            "register",
            "--gateway",
            &url,
            "--username",
            "carol",
            "--email",
            "carol@example.com",
            "--key",
            s(&dir.path().join("k.key")),
            "--token-out",
            s(&dir.path().join("t")),
        ],
        Some(PASSWORD),
        None,
    );
    assert!(!out.status.success());
    let err = shown(&out);
    assert!(
        err.contains("unreachable") && err.contains("--gateway") && err.contains(&url),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
    // The signalling URL instead of the HTTP one, and a missing password, are explained too.
    let ws = wavry(
        &[
            "login",
            "--gateway",
            "ws://127.0.0.1:3000/ws",
            "--username",
            "carol",
            "--token-out",
            s(&dir.path().join("t")),
        ],
        Some(PASSWORD),
        None,
    );
    assert!(shown(&ws).contains("HTTP address"), "{}", shown(&ws));
    let none = wavry(
        &[
            "login",
            "--gateway",
            &url,
            "--username",
            "carol",
            "--token-out",
            s(&dir.path().join("t")),
        ],
        None,
        Some(""),
    );
    assert!(shown(&none).contains("WAVRY_PASSWORD"), "{}", shown(&none));
}
