//! `wavry register` and `wavry login`: a gateway account over the gateway's HTTP API, its
//! session token written to a private file for `wavry-server` / `wavry-client`
//! (`WAVRY_SESSION_TOKEN_FILE`).
//!
//! The password comes from `WAVRY_PASSWORD` or one line of stdin, never from a flag; neither
//! it nor the token is ever printed, and the gateway's error messages are shown with the
//! password blanked out.

use std::io::{BufRead, IsTerminal, Write};
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use wavry_rift::identity::WavryId;
use wavry_runtime::signal::INSECURE_SIGNALING_ENV;

/// Environment variable holding the account password (else one line of stdin is read).
const PASSWORD_ENV: &str = "WAVRY_PASSWORD";

/// How long one request may take (registration and login hash the password with argon2).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway's HTTP address, for both subcommands.
#[derive(clap::Args, Debug)]
pub(crate) struct GatewayArg {
    /// The gateway's HTTP address, e.g. http://127.0.0.1:3000 (http:// only to this
    /// machine unless WAVRY_ALLOW_INSECURE_SIGNALING=1; https:// anywhere).
    #[arg(long, env = "WAVRY_GATEWAY_HTTP_URL", value_name = "URL")]
    gateway: String,
}

/// `wavry register`.
#[derive(clap::Args, Debug)]
pub(crate) struct RegisterArgs {
    #[command(flatten)]
    gateway: GatewayArg,
    /// The account name peers reach you by (3..32 of a-z 0-9 _ . -).
    #[arg(long, value_name = "NAME")]
    username: String,
    /// The account's email.
    #[arg(long, value_name = "EMAIL")]
    email: String,
    /// The name shown to others (default: the username).
    #[arg(long, value_name = "NAME")]
    display_name: Option<String>,
    /// The identity key (.key from `wavry keygen`) the account is bound to: the gateway
    /// vouches for its Wavry ID to the peers you reach.
    #[arg(short, long, value_name = "PATH")]
    key: PathBuf,
    /// Where to write the session token (created or replaced, mode 0600).
    #[arg(long, value_name = "PATH")]
    token_out: PathBuf,
}

/// `wavry login`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("account").required(true).args(["username", "email"])))]
pub(crate) struct LoginArgs {
    #[command(flatten)]
    gateway: GatewayArg,
    /// The account's username.
    #[arg(long, value_name = "NAME")]
    username: Option<String>,
    /// The account's email.
    #[arg(long, value_name = "EMAIL")]
    email: Option<String>,
    /// The current code from your authenticator app, for an account with 2FA on.
    #[arg(long, value_name = "CODE")]
    totp: Option<String>,
    /// Where to write the session token (created or replaced, mode 0600).
    #[arg(long, value_name = "PATH")]
    token_out: PathBuf,
}

/// Which call an answer belongs to (the same status means different things).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Challenge,
    Register,
    Login,
}

/// Registers an account bound to the identity key, proving possession of the key, and writes
/// the session token.
pub(crate) fn register(a: &RegisterArgs) -> anyhow::Result<()> {
    check_token_dir(&a.token_out)?;
    let (key, _) = wavry_runtime::load_identity(Some(&a.key))?;
    let wid = key.id();
    let gw = Gateway::new(&a.gateway.gateway)?;
    let password = read_password()?;
    let public_key = hex::encode(wid.as_bytes());
    let (code, ch) = gw.post(
        "/auth/register/challenge",
        &json!({ "public_key": public_key }),
    )?;
    if code != 200 {
        return Err(refusal(&gw, Call::Challenge, code, &ch, &password));
    }
    if ch["wavry_id"].as_str() != Some(wid.to_string().as_str()) {
        bail!(
            "the gateway at {} answered a challenge for another key than {wid}: is it a \
             Wavry gateway?",
            gw.base
        );
    }
    let challenge = ch["challenge"]
        .as_str()
        .filter(|c| !c.is_empty() && c.len() <= 4096 && !c.contains('\n'))
        .ok_or_else(|| {
            anyhow!(
                "the gateway at {} answered no usable challenge: is it a Wavry gateway?",
                gw.base
            )
        })?;
    // The signed text is built here, never taken from the gateway's `message`: a gateway
    // must not be able to have the identity key sign anything but this proof.
    let signature = hex::encode(key.sign(register_message(&wid, challenge).as_bytes()));
    let display_name = a.display_name.as_deref().unwrap_or(&a.username);
    let (code, body) = gw.post(
        "/auth/register",
        &json!({
            "email": a.email, "password": password, "display_name": display_name,
            "username": a.username, "public_key": public_key, "challenge": challenge,
            "signature": signature,
        }),
    )?;
    if code != 201 {
        return Err(refusal(&gw, Call::Register, code, &body, &password));
    }
    let username = body["username"].as_str().unwrap_or(&a.username);
    save_token(&body, &a.token_out).with_context(|| {
        format!(
            "{username} is registered, but its session token was not saved: run `wavry login \
             --username {username} --token-out <path>` for a new one"
        )
    })?;
    println!("registered {username} ({wid}) at {}", gw.base);
    println!("session token written to {}", a.token_out.display());
    Ok(())
}

/// Logs in by username or email (with a 2FA code when given) and writes the session token.
pub(crate) fn login(a: &LoginArgs) -> anyhow::Result<()> {
    check_token_dir(&a.token_out)?;
    let gw = Gateway::new(&a.gateway.gateway)?;
    let password = read_password()?;
    let mut body = json!({ "password": password, "totp_code": a.totp });
    match (&a.username, &a.email) {
        (Some(u), _) => body["username"] = json!(u),
        (None, Some(e)) => body["email"] = json!(e),
        (None, None) => bail!("give --username or --email"),
    }
    let (code, answer) = gw.post("/auth/login", &body)?;
    if code != 200 {
        return Err(refusal(&gw, Call::Login, code, &answer, &password));
    }
    save_token(&answer, &a.token_out)?;
    let username = answer["username"].as_str().unwrap_or("?");
    match answer["user"]["wavry_id"].as_str() {
        Some(id) => println!("logged in as {username} ({id}) at {}", gw.base),
        None => println!("logged in as {username} at {}", gw.base),
    }
    println!("session token written to {}", a.token_out.display());
    Ok(())
}

/// What the key signs to prove possession at registration (the gateway's
/// `"wavry-gateway-register-v1\n{wavry_id}\n{challenge}"`).
fn register_message(wid: &WavryId, challenge: &str) -> String {
    format!("wavry-gateway-register-v1\n{wid}\n{challenge}")
}

/// The gateway's HTTP API.
struct Gateway {
    /// The base URL, without a trailing slash.
    base: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Gateway {
    /// Checks `url` (http:// only to this machine unless the insecure gate is set) and
    /// builds the client.
    fn new(url: &str) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            anyhow!("gateway URL {url:?}: {e} (expected e.g. http://127.0.0.1:3000)")
        })?;
        match parsed.scheme() {
            "https" => {}
            "http" => check_plain_http(&parsed)?,
            "ws" | "wss" => bail!(
                "gateway URL {url:?} is the signalling address: give the gateway's HTTP \
                 address instead, e.g. http://127.0.0.1:3000"
            ),
            other => {
                bail!("gateway URL {url:?}: unsupported scheme {other}:// (use http or https)")
            }
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("wavry-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            http,
            rt,
        })
    }

    /// Posts `body` as JSON to `path`; the status and the JSON answer (`Null` when the
    /// answer is not JSON).
    fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let r = self.http.post(&url).json(body).send().await.map_err(|e| {
                let why = if e.is_timeout() {
                    "no answer in time"
                } else {
                    "cannot connect"
                };
                anyhow::Error::new(e.without_url()).context(format!(
                    "the gateway at {} is unreachable ({why}): is wavry-gateway running \
                     there? Check --gateway or WAVRY_GATEWAY_HTTP_URL",
                    self.base
                ))
            })?;
            let code = r.status().as_u16();
            Ok((code, r.json().await.unwrap_or(Value::Null)))
        })
    }
}

/// `http://` sends the password and the token in clear: only to this machine, unless the
/// user opted in for a network they trust.
fn check_plain_http(url: &reqwest::Url) -> anyhow::Result<()> {
    if std::env::var(INSECURE_SIGNALING_ENV).is_ok_and(|v| v == "1") {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    // A name that does not resolve is left to the request, which reports it.
    let remote = (host, port)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.any(|a| !a.ip().is_loopback()));
    if remote {
        bail!(
            "http:// to a gateway on another machine ({host}) would send the password and \
             session token in clear: use https://, or set {INSECURE_SIGNALING_ENV}=1 on a \
             network you trust"
        );
    }
    Ok(())
}

/// The error for a non-success answer: what went wrong and what to do, with the gateway's
/// own message (the password blanked out, should it ever appear in it).
fn refusal(gw: &Gateway, call: Call, code: u16, body: &Value, password: &str) -> anyhow::Error {
    let said = body["error"]
        .as_str()
        .map(|m| {
            if password.is_empty() {
                m.to_owned()
            } else {
                m.replace(password, "<password>")
            }
        })
        .unwrap_or_default();
    let what = match (call, code) {
        (Call::Register, 409) => "that email, username or key already has an account: choose \
             another --username or --email, or run `wavry login` if the account is yours (a \
             key holds one account)"
            .to_owned(),
        (Call::Register, 401) => "the gateway did not accept the key's proof (a challenge is \
             good for 5 minutes): run the command again"
            .to_owned(),
        (Call::Login, 401) if body["totp_required"] == true => {
            "this account has 2FA on: run again with --totp <code from your authenticator app>"
                .to_owned()
        }
        (Call::Login, 401) if said.contains("2FA") => {
            "the 2FA code is wrong or was already used: wait for the next code and retry".to_owned()
        }
        (Call::Login, 401) => "wrong username, email or password".to_owned(),
        (_, 400) => "the gateway refused the request".to_owned(),
        (_, 403) => "the gateway refused this account".to_owned(),
        (_, 429) => match body["retry_after_secs"].as_i64() {
            Some(s) => format!("too many attempts: retry in {s} s"),
            None => "too many requests: wait a minute and retry".to_owned(),
        },
        (_, 503) => "the gateway is busy: retry in a moment".to_owned(),
        (_, 404 | 405) => format!(
            "{} does not look like a Wavry gateway's HTTP address (e.g. http://127.0.0.1:3000)",
            gw.base
        ),
        (_, c) if c >= 500 => "the gateway failed: see its log".to_owned(),
        _ => "unexpected answer from the gateway".to_owned(),
    };
    if said.is_empty() {
        anyhow!("{what} (HTTP {code})")
    } else {
        anyhow!("{what} (HTTP {code}: {said})")
    }
}

/// Fails early, before any account is created, when the token file cannot be created there.
fn check_token_dir(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "--token-out {}: the directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    if path.is_dir() {
        bail!("--token-out {} is a directory", path.display());
    }
    Ok(())
}

/// Writes the answer's session token to `path` (created or truncated, mode 0600 on Unix,
/// also when the file existed with another mode).
fn save_token(answer: &Value, path: &Path) -> anyhow::Result<()> {
    let token = answer["token"]
        .as_str()
        .filter(|t| !t.is_empty() && t.len() <= 512 && !t.contains(['\n', '\r']))
        .ok_or_else(|| anyhow!("the gateway's answer holds no session token"))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private (0600)", path.display()))?;
    }
    writeln!(f, "{token}")
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// The password: `WAVRY_PASSWORD` when set, else one line of stdin (not echoed when stdin is
/// a terminal and `stty` can turn echo off).
fn read_password() -> anyhow::Result<String> {
    if let Some(p) = std::env::var_os(PASSWORD_ENV) {
        let p = p
            .into_string()
            .map_err(|_| anyhow!("{PASSWORD_ENV} is not valid UTF-8"))?;
        if p.is_empty() {
            bail!("{PASSWORD_ENV} is set but empty");
        }
        return Ok(p);
    }
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let hidden = tty && set_echo(false);
    if tty {
        eprint!(
            "Password{}: ",
            if hidden { "" } else { " (shown as typed)" }
        );
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if hidden {
        set_echo(true);
        eprintln!();
    }
    read.context("reading the password from stdin")?;
    let p = line.trim_end_matches(['\n', '\r']);
    if p.is_empty() {
        bail!("no password: set {PASSWORD_ENV} or write it as one line on stdin");
    }
    Ok(p.to_owned())
}

/// Turns the terminal's echo on or off with `stty` (Unix); whether that worked.
fn set_echo(on: bool) -> bool {
    cfg!(unix)
        && Command::new("stty")
            .arg(if on { "echo" } else { "-echo" })
            .stdin(Stdio::inherit())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_text_is_the_gateways() {
        let wid = WavryId::from_bytes([7; 32]);
        assert_eq!(
            register_message(&wid, "enc:v2:abc"),
            format!("wavry-gateway-register-v1\n{wid}\nenc:v2:abc")
        );
    }

    #[test]
    fn plain_http_only_to_this_machine() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(check_plain_http(&url("http://127.0.0.1:3000")).is_ok());
        assert!(check_plain_http(&url("http://[::1]:3000")).is_ok());
        assert!(check_plain_http(&url("http://localhost:3000")).is_ok());
        if std::env::var(INSECURE_SIGNALING_ENV).is_err() {
            let err = check_plain_http(&url("http://192.0.2.1:3000")).unwrap_err();
            assert!(err.to_string().contains("https://"), "{err}");
        }
    }

    #[test]
    fn refusals_say_what_to_do_and_hide_the_password() {
        let gw = Gateway::new("http://127.0.0.1:9").unwrap();
        let e = refusal(
            &gw,
            Call::Login,
            401,
            &json!({"error": "2FA required", "totp_required": true}),
            "pw",
        );
        assert!(e.to_string().contains("--totp"), "{e}");
        let e = refusal(
            &gw,
            Call::Register,
            400,
            &json!({"error": "bad hunter2hunter2 here"}),
            "hunter2hunter2",
        );
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = refusal(&gw, Call::Register, 409, &Value::Null, "pw");
        assert!(e.to_string().contains("wavry login"), "{e}");
    }
}
