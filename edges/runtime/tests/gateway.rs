//! A session brokered by the signalling gateway, with real processes on loopback:
//! `wavry-master` + `wavry-gateway`, two accounts registered with their identity keys, a
//! `wavry-server` bound to the gateway as one account and a `wavry-client` that asks for it by
//! username and by Wavry ID. The client pins the host's identity to the one the gateway
//! vouches for; the host refuses an account not on its allow list; a logged-out token cannot
//! start a session.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use wavry_control_testkit::{Service, free_port, sibling_binary};
use wavry_rift::identity::IdentityKey;

const PASSWORD: &str = "correct horse battery staple";
const STARTUP: Duration = Duration::from_secs(30);

/// The master's bearer for relays, and the gateway's for the master (lease brokering).
const RELAY_TOKEN: &str = "relay-registration-token-for-the-runtime-tests";
const SERVICE_TOKEN: &str = "gateway-service-token-for-the-runtime-tests";

struct Stack {
    rt: tokio::runtime::Runtime,
    _master: Service,
    gateway: Service,
    /// Each relay's health service and its relay id.
    relays: Vec<(Service, String)>,
    http: reqwest::Client,
}

impl Stack {
    /// Master and gateway, and `relays` relays registered with the master (each ready once
    /// the master lists it).
    fn start(dir: &Path, relays: usize) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let anchor = Path::new(env!("CARGO_BIN_EXE_wavry-server"));
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let spawn = |bin: &'static str,
                     port: u16,
                     args: Vec<String>,
                     envs: Vec<(String, String)>| async move {
            let bin = sibling_binary(anchor, bin).unwrap();
            Service::spawn(&bin, port, &args, &envs, STARTUP)
                .await
                .unwrap()
        };
        let (master, gateway, relays) = rt.block_on(async {
            let listen = |port: u16| vec!["--listen".to_owned(), format!("127.0.0.1:{port}")];
            let data = |d: &str| vec!["--data-dir".to_owned(), dir.join(d).display().to_string()];
            let port = free_port().unwrap();
            let master = spawn(
                "wavry-master",
                port,
                [listen(port), data("master")].concat(),
                env(&[
                    ("WAVRY_MASTER_RELAY_AUTH_TOKEN", RELAY_TOKEN),
                    ("WAVRY_MASTER_SERVICE_TOKEN", SERVICE_TOKEN),
                ]),
            )
            .await;
            let port = free_port().unwrap();
            let gateway = spawn(
                "wavry-gateway",
                port,
                [
                    listen(port),
                    data("gateway"),
                    vec!["--master-url".into(), master.base.clone()],
                ]
                .concat(),
                env(&[("WAVRY_GATEWAY_MASTER_TOKEN", SERVICE_TOKEN)]),
            )
            .await;
            let mut started = Vec::new();
            for i in 0..relays {
                let health = free_port().unwrap();
                let udp = free_port().unwrap();
                let args: Vec<String> = [
                    "--listen",
                    &format!("127.0.0.1:{udp}"),
                    "--health-listen",
                    &format!("127.0.0.1:{health}"),
                    "--master-url",
                    &master.base,
                    "--master-token",
                    RELAY_TOKEN,
                    "--key",
                    &dir.join(format!("relay{i}.key")).display().to_string(),
                ]
                .iter()
                .map(ToString::to_string)
                .collect();
                let r = spawn("wavry-relay", health, args, Vec::new()).await;
                // Bounded wait until the master lists it (registration is asynchronous).
                let end = std::time::Instant::now() + STARTUP;
                while !reqwest::get(format!("{}/ready", r.base))
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    assert!(std::time::Instant::now() < end, "relay never became ready");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let health: Value = reqwest::get(format!("{}/health", r.base))
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let id = health["relay_id"].as_str().unwrap().to_owned();
                started.push((r, id));
            }
            (master, gateway, started)
        });
        Self {
            rt,
            _master: master,
            gateway,
            relays,
            http: reqwest::Client::new(),
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.gateway.port)
    }

    fn post(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        self.rt.block_on(async {
            let mut rb = self
                .http
                .post(format!("{}{path}", self.gateway.base))
                .json(body);
            if let Some(t) = token {
                rb = rb.bearer_auth(t);
            }
            let r = rb.send().await.unwrap();
            let code = r.status().as_u16();
            (code, r.json().await.unwrap_or(Value::Null))
        })
    }

    /// Registers `name` with `key` (the gateway checks the key by signature); returns the
    /// session token.
    fn register(&self, name: &str, key: &IdentityKey) -> String {
        register_account(name, key, PASSWORD, |path, body| {
            self.post(path, body, None)
        })
    }
}

/// A key written under `dir` (for `--key`) and the key itself (to register the account).
fn identity(dir: &Path, name: &str) -> (String, IdentityKey) {
    let k = IdentityKey::generate().unwrap();
    let (path, _) = k.write_files(&dir.join(name), false).unwrap();
    (path.to_str().unwrap().to_owned(), k)
}

/// A client asking the gateway for `host`; it streams for 2 s unless `extra` says otherwise.
fn client_via_gateway(url: &str, host: &str, key: &str, token: &str, extra: &[&str]) -> Proc {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_wavry-client"));
    if !extra.contains(&"--seconds") {
        c.args(["--seconds", "2"]);
    }
    c.args(["--gateway-url", url, "--host", host, "--key", key])
        .args(extra)
        .env("WAVRY_SESSION_TOKEN", token);
    Proc::spawn_cmd(c)
}

#[test]
fn a_client_reaches_a_host_by_username_and_by_wavry_id_through_the_gateway() {
    let dir = TempDir::new("gateway");
    let stack = Stack::start(&dir.0, 0);
    let (host_key, host) = identity(&dir.0, "host");
    let (client_key, client) = identity(&dir.0, "client");
    let (stranger_key, stranger) = identity(&dir.0, "stranger");
    let host_token = stack.register("hostbox", &host);
    let client_token = stack.register("alice", &client);
    let stranger_token = stack.register("mallory", &stranger);
    let token_file = dir.0.join("host.token");
    std::fs::write(&token_file, format!("{host_token}\n")).unwrap();

    let mut server = host_via_gateway(
        &stack,
        &host_key,
        &client,
        None,
        &["--session-token-file", token_file.to_str().unwrap()],
    );
    let line = server.line_with("reachable through the gateway");
    assert!(
        line.contains("hostbox") && line.contains(&host.id().to_string()),
        "{line}"
    );

    // By username, then by Wavry ID: the client pins the identity the gateway vouches for
    // (no --host-id given) and the stream decodes.
    let host_id = host.id().to_string();
    for target in ["hostbox", host_id.as_str()] {
        let c = client_via_gateway(&stack.ws_url(), target, &client_key, &client_token, &[]);
        let (ok, lines) = c.wait();
        assert!(ok, "client via {target}: {lines:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("answered through the gateway") && l.contains("127.0.0.1")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("connected to") && l.contains(&host_id)),
            "pinned to the vouched identity: {lines:?}"
        );
        assert_pictures(&lines, 10);
        server.line_with("offer from alice");
    }

    // An account the host does not allow is refused in signalling, before any datagram.
    let refused = |key: &str, token: &str, extra: &[&str]| {
        let url = stack.ws_url();
        let args = [
            &[
                "--gateway-url",
                url.as_str(),
                "--host",
                "hostbox",
                "--key",
                key,
            ][..],
            extra,
        ]
        .concat();
        let out = run(
            env!("CARGO_BIN_EXE_wavry-client"),
            &args,
            &[("WAVRY_SESSION_TOKEN", token)],
        );
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(&stranger_key, &stranger_token, &[]);
    assert!(err.contains("does not allow this client"), "{err}");
    server.line_with("offer from mallory");

    // --host-id that contradicts the gateway is refused.
    let (_, other) = identity(&dir.0, "other");
    let other_id = other.id().to_string();
    let err = refused(&client_key, &client_token, &["--host-id", &other_id]);
    assert!(err.contains("refusing to connect"), "{err}");

    // A logged-out token cannot start a session.
    let (code, body) = stack.post("/auth/logout", &json!({}), Some(&client_token));
    assert_eq!(code, 200, "{body}");
    let err = refused(&client_key, &client_token, &[]);
    assert!(err.contains("refused (401)"), "{err}");
    assert!(
        !err.contains(&client_token),
        "the token is never printed: {err}"
    );

    server.signal("-INT");
    let (ok, lines) = server.wait();
    assert!(ok, "host exit: {lines:?}");
}

#[test]
fn a_host_with_a_refused_token_or_an_insecure_gateway_url_says_why_and_exits() {
    let dir = TempDir::new("gateway-refused");
    let stack = Stack::start(&dir.0, 0);
    let (host_key, _) = identity(&dir.0, "host");
    let base = [
        "--key",
        host_key.as_str(),
        "--allow-any",
        "--listen",
        "127.0.0.1:0",
        "--width",
        "320",
        "--height",
        "240",
    ];
    let url = stack.ws_url();
    let out = run(
        env!("CARGO_BIN_EXE_wavry-server"),
        &[&base[..], &["--gateway-url", url.as_str()]].concat(),
        &[(
            "WAVRY_SESSION_TOKEN",
            "not-a-session-token-0123456789abcdef",
        )],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the gateway refused"), "{err}");
    assert!(
        !err.contains("not-a-session-token"),
        "the token is never printed: {err}"
    );

    let out = run(
        env!("CARGO_BIN_EXE_wavry-server"),
        &[&base[..], &["--gateway-url", "ws://192.0.2.1:3000/ws"]].concat(),
        &[("WAVRY_SESSION_TOKEN", "t")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WAVRY_ALLOW_INSECURE_SIGNALING"), "{err}");
}

impl Stack {
    /// A counter of the first relay's `/metrics` (summed over its label sets).
    fn relay_counter(&self, name: &str) -> f64 {
        let (relay, _) = self.relays.first().expect("a stack with a relay");
        let text = self.rt.block_on(async {
            reqwest::get(format!("{}/metrics", relay.base))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

#[test]
fn a_client_that_cannot_reach_the_host_directly_streams_through_a_brokered_relay() {
    let dir = TempDir::new("gateway-relay");
    let stack = Stack::start(&dir.0, 1);
    let (host_key, host) = identity(&dir.0, "host");
    let (client_key, client) = identity(&dir.0, "client");
    let host_token = stack.register("hostbox", &host);
    let client_token = stack.register("alice", &client);
    // The host advertises only an address where nothing answers (a bound socket nobody
    // reads): the client's direct attempt gets no reply.
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = black_hole.local_addr().unwrap().to_string();
    let mut server = host_via_gateway(
        &stack,
        &host_key,
        &client,
        Some(&host_token),
        &["--advertise", &dead],
    );
    let line = server.line_with("reachable through the gateway");
    assert!(line.contains(&dead), "advertises only --advertise: {line}");
    let host_id = host.id().to_string();

    // --path direct: no relay, and the error says what auto would do.
    let url = stack.ws_url();
    let out = run(
        env!("CARGO_BIN_EXE_wavry-client"),
        &[
            "--gateway-url",
            &url,
            "--host",
            "hostbox",
            "--key",
            &client_key,
            "--path",
            "direct",
            "--connect-timeout",
            "2",
        ],
        &[("WAVRY_SESSION_TOKEN", &client_token)],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("falls back to a relay"), "{err}");
    let before = stack.relay_counter("wavry_relay_packets_forwarded");

    // --path auto (the default): direct times out, the gateway brokers a relay, both sides
    // present their leases and the stream decodes through it, pinned to the vouched host.
    let c = client_via_gateway(
        &url,
        "hostbox",
        &client_key,
        &client_token,
        &["--direct-timeout-ms", "500"],
    );
    let (ok, lines) = c.wait();
    assert!(ok, "auto: {lines:?}");
    let via = lines
        .iter()
        .find(|l| l.contains("connected to"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(via.contains(&host_id) && via.contains("via relay"), "{via}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("asking the gateway for a relay")),
        "{lines:?}"
    );
    assert_pictures(&lines, 10);
    server.line_with("relay path for alice");
    server.line_with("relay admitted session");
    let forwarded = stack.relay_counter("wavry_relay_packets_forwarded") - before;
    assert!(
        forwarded > 100.0,
        "the stream crossed the relay: {forwarded} datagrams forwarded"
    );

    // --path relay: straight to a relay, no direct attempt.
    let c = client_via_gateway(
        &url,
        &host_id,
        &client_key,
        &client_token,
        &["--path", "relay"],
    );
    let (ok, lines) = c.wait();
    assert!(ok, "relay: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("connected to") && l.contains("via relay")),
        "{lines:?}"
    );
    assert_pictures(&lines, 10);

    server.signal("-INT");
    let (ok, lines) = server.wait();
    assert!(ok, "host exit: {lines:?}");
}

/// A small host bound to the gateway that lets `client` in; `extra` says how it gets its
/// session token (`--session-token-file`) and what it offers (`--advertise`), `token` goes in
/// `WAVRY_SESSION_TOKEN` when given.
fn host_via_gateway(
    stack: &Stack,
    key: &str,
    client: &IdentityKey,
    token: Option<&str>,
    extra: &[&str],
) -> Proc {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_wavry-server"));
    c.args([
        "--key",
        key,
        "--allow",
        &client.id().to_string(),
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
        "--gateway-url",
        &stack.ws_url(),
    ])
    .args(extra);
    if let Some(t) = token {
        c.env("WAVRY_SESSION_TOKEN", t);
    }
    Proc::spawn_cmd(c)
}

#[test]
fn killing_the_relay_mid_session_moves_the_stream_to_the_next_relay() {
    let dir = TempDir::new("gateway-failover");
    let mut stack = Stack::start(&dir.0, 2);
    let (host_key, host) = identity(&dir.0, "host");
    let (client_key, client) = identity(&dir.0, "client");
    let host_token = stack.register("hostbox", &host);
    let client_token = stack.register("alice", &client);
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = black_hole.local_addr().unwrap().to_string();
    let mut server = host_via_gateway(
        &stack,
        &host_key,
        &client,
        Some(&host_token),
        &["--advertise", &dead],
    );
    server.line_with("reachable through the gateway");

    let mut c = client_via_gateway(
        &stack.ws_url(),
        "hostbox",
        &client_key,
        &client_token,
        &["--path", "relay", "--seconds", "8", "--stats"],
    );
    let via = c.line_with("connected to");
    let i = stack
        .relays
        .iter()
        .position(|(_, id)| via.contains(id.as_str()))
        .unwrap_or_else(|| panic!("a known relay: {via}"));
    let first = stack.relays[i].1.clone();
    // Frames flow through it (a stats line counts them), then the relay process dies.
    c.line_with("stats:");
    let (mut dead_relay, _) = stack.relays.remove(i);
    stack.rt.block_on(dead_relay.stop()).unwrap();

    let moved = c.line_with("failed over to relay");
    let second = &stack.relays[0].1;
    assert!(
        moved.contains(second.as_str()) && !moved.contains(first.as_str()),
        "{moved}"
    );
    let (ok, lines) = c.wait();
    assert!(ok, "client: {lines:?}");
    // The stream goes on through the second relay: stats lines after the move count frames.
    let after: Vec<u64> = lines
        .iter()
        .skip_while(|l| !l.contains("failed over to relay"))
        .filter_map(|l| l.strip_prefix("stats: ")?.split(' ').next()?.parse().ok())
        .collect();
    assert!(
        after.iter().filter(|&&fps| fps >= 10).count() >= 2,
        "frames flow after the failover: {after:?} in {lines:?}"
    );
    let summary = summary(&lines);
    assert_eq!(kv(summary, "failovers"), "1", "{summary}");
    assert_eq!(kv(summary, "out_of_order"), "0", "{summary}");
    println!(
        "failover: longest gap between frames {} ms ({})",
        kv(summary, "longest_frame_gap_ms"),
        moved
    );
    // The host replaced the session on the dead relay with the new one.
    server.line_with("closing the older session");
    // Both relays' parts went into the reputation the gateway keeps (and passes to the master).
    for (id, worked) in [(first.as_str(), false), (second.as_str(), true)] {
        let verdict = if worked { "worked" } else { "failed" };
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("reported relay {id} ({verdict})"))),
            "{lines:?}"
        );
    }
    let reputation: Value = stack.rt.block_on(async {
        reqwest::get(format!("{}/v1/relays/reputation", stack.gateway.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let count = |id: &str, key: &str| {
        reputation
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["relay_id"] == id)
            .map_or(0, |r| r[key].as_i64().unwrap())
    };
    assert_eq!(count(&first, "failure_count"), 1, "{reputation}");
    assert_eq!(count(second, "success_count"), 1, "{reputation}");

    server.signal("-INT");
    let (ok, lines) = server.wait();
    assert!(ok, "host exit: {lines:?}");
}
