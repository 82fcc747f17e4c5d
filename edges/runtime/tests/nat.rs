//! NAT traversal with real processes in network namespaces this test creates (as root) and
//! removes, also when it fails:
//!
//! ```text
//!   h1 (host A) ── r1: NAT, endpoint-independent mapping ──┐
//!   h3 (host B) ── r3: NAT, symmetric (random ports) ──────┼── inet: master, gateway (+STUN), relay
//!   h2 (client) ── r2: NAT, endpoint-independent mapping ──┘        └── this test's namespace
//! ```
//!
//! Each home reaches the others only through its router's nftables masquerade, and each
//! router drops unsolicited traffic from its WAN side as home routers do. The client
//! asks the gateway for host A and streams **directly** through both NATs (each side learned
//! its public address from the gateway's STUN; the host punched its NAT towards the client's).
//! Host B's NAT gives every destination its own port, so the address its STUN query saw is
//! useless to the client: the direct attempt times out and the session goes **through the
//! relay**.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use wavry_control_testkit::free_port;
use wavry_rift::identity::IdentityKey;

/// The services' address: inet's side of its link to r1.
const INET: &str = "100.127.1.254";
const PASSWORD: &str = "correct horse battery staple";
const RELAY_TOKEN: &str = "relay-registration-token-for-the-nat-tests";
const SERVICE_TOKEN: &str = "gateway-service-token-for-the-nat-tests";

/// Runs `ip`/`nft`/`sysctl`, failing the test with its stderr when it fails.
fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} (iproute2, nftables; cargo xtask test installs them): {e}")
        });
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces and links; all removed on drop.
struct Net {
    tag: String,
    spaces: Vec<String>,
}

impl Net {
    fn ns(&self, role: &str) -> String {
        format!("{}{role}", self.tag)
    }

    fn build() -> Self {
        let tag = format!("wv{}", std::process::id() % 100_000);
        let mut net = Self {
            tag,
            spaces: Vec::new(),
        };
        for role in ["inet", "r1", "r2", "r3", "h1", "h2", "h3"] {
            let ns = net.ns(role);
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            sh("ip", &["netns", "add", &ns]);
            net.spaces.push(ns.clone());
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        }
        // This namespace ↔ inet, so that the test reaches the services over HTTP.
        let root_if = format!("{}t", net.tag);
        sh(
            "ip",
            &[
                "link",
                "add",
                &root_if,
                "type",
                "veth",
                "peer",
                "name",
                "test",
                "netns",
                &net.ns("inet"),
            ],
        );
        sh("ip", &["addr", "add", "100.127.9.1/24", "dev", &root_if]);
        sh("ip", &["link", "set", &root_if, "up"]);
        net.addr("inet", "test", "100.127.9.254/24");
        sh(
            "ip",
            &[
                "route",
                "add",
                &format!("{INET}/32"),
                "via",
                "100.127.9.254",
            ],
        );
        // Routers: wan towards inet, lan towards their home.
        for i in 1..=3 {
            let (r, h) = (format!("r{i}"), format!("h{i}"));
            net.link("inet", &format!("to{r}"), &r, "wan");
            net.addr("inet", &format!("to{r}"), &format!("100.127.{i}.254/24"));
            net.addr(&r, "wan", &format!("100.127.{i}.1/24"));
            net.route(&r, &format!("100.127.{i}.254"));
            net.link(&r, "lan", &h, "eth0");
            net.addr(&r, "lan", &format!("10.{i}.0.1/24"));
            net.addr(&h, "eth0", &format!("10.{i}.0.2/24"));
            net.route(&h, &format!("10.{i}.0.1"));
            net.sysctl(&r, "net.ipv4.ip_forward=1");
            // Masquerade what leaves towards inet; r3 picks a random port per destination.
            let flags = if i == 3 { " random" } else { "" };
            let rules = std::env::temp_dir().join(format!("{}-{r}.nft", net.tag));
            std::fs::write(
                &rules,
                // Like a home router: unsolicited traffic from the WAN is dropped before
                // conntrack confirms it (so a peer's early punch leaves no entry that would
                // steal the port the inside host's own flow should keep).
                format!(
                    "table ip nat {{\n chain post {{\n  type nat hook postrouting priority 100;\n  \
                     oifname \"wan\" masquerade{flags}\n }}\n}}\n\
                     table ip filter {{\n chain input {{\n  type filter hook input priority 0;\n  \
                     iifname \"wan\" ct state new drop\n }}\n chain forward {{\n  \
                     type filter hook forward priority 0;\n  \
                     iifname \"wan\" ct state new drop\n }}\n}}\n"
                ),
            )
            .unwrap();
            let path = rules.display().to_string();
            sh("ip", &["netns", "exec", &net.ns(&r), "nft", "-f", &path]);
            let _ = std::fs::remove_file(&rules);
        }
        net.sysctl("inet", "net.ipv4.ip_forward=1");
        net
    }

    fn link(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        sh(
            "ip",
            &[
                "-n",
                &self.ns(a),
                "link",
                "add",
                a_if,
                "type",
                "veth",
                "peer",
                "name",
                b_if,
                "netns",
                &self.ns(b),
            ],
        );
        sh("ip", &["-n", &self.ns(a), "link", "set", a_if, "up"]);
        sh("ip", &["-n", &self.ns(b), "link", "set", b_if, "up"]);
    }

    fn addr(&self, ns: &str, dev: &str, cidr: &str) {
        sh("ip", &["-n", &self.ns(ns), "addr", "add", cidr, "dev", dev]);
        sh("ip", &["-n", &self.ns(ns), "link", "set", dev, "up"]);
    }

    fn route(&self, ns: &str, via: &str) {
        sh(
            "ip",
            &["-n", &self.ns(ns), "route", "add", "default", "via", via],
        );
    }

    fn sysctl(&self, ns: &str, kv: &str) {
        sh("ip", &["netns", "exec", &self.ns(ns), "sysctl", "-qw", kv]);
    }

    /// `bin args` inside namespace `ns`, with `env`.
    fn command(&self, ns: &str, bin: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(ns), bin])
            .args(args)
            .envs(env.iter().copied());
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veths, and with them their peers.
        for ns in &self.spaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn bin(name: &str) -> String {
    wavry_control_testkit::sibling_binary(Path::new(env!("CARGO_BIN_EXE_wavry-server")), name)
        .unwrap()
        .display()
        .to_string()
}

/// A blocking face on reqwest (the workspace builds it without its blocking feature).
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Self {
        Self {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        }
    }

    /// Polls `url` until it answers 2xx (bounded).
    fn until_ok(&self, url: &str) {
        let end = Instant::now() + Duration::from_secs(30);
        while !self.rt.block_on(async {
            self.client
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }) {
            assert!(Instant::now() < end, "{url} not ready");
            // Poll interval of a bounded readiness wait.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn post(&self, url: &str, body: &Value) -> (u16, Value) {
        self.rt.block_on(async {
            let r = self.client.post(url).json(body).send().await.unwrap();
            let code = r.status().as_u16();
            (code, r.json().await.unwrap_or(Value::Null))
        })
    }

    /// Registers `name` with `key`; the session token.
    fn register(&self, gw: &str, name: &str, key: &IdentityKey) -> String {
        register_account(name, key, PASSWORD, |path, body| {
            self.post(&format!("{gw}{path}"), body)
        })
    }
}

#[test]
fn two_homes_behind_nat_stream_directly_and_a_symmetric_nat_goes_through_the_relay() {
    let dir = TempDir::new("nat");
    let net = Net::build();
    let http = Http::new();
    let service = |bin_name: &str, args: &[&str], env: &[(&str, &str)]| {
        let mut c = net.command("inet", &bin(bin_name), args, env);
        let log = std::fs::File::create(dir.0.join(format!("{bin_name}.log"))).unwrap();
        c.stderr(log);
        Proc::spawn_cmd(c)
    };
    let (mp, gp, rp, rh) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let master_url = format!("http://{INET}:{mp}");
    let gw = format!("http://{INET}:{gp}");
    let _master = service(
        "wavry-master",
        &[
            "--listen",
            &format!("{INET}:{mp}"),
            "--data-dir",
            &dir.0.join("master").display().to_string(),
        ],
        &[
            ("WAVRY_MASTER_ALLOW_PUBLIC_BIND", "1"),
            ("WAVRY_MASTER_ALLOW_HOST_PROD_BIND", "1"),
            ("WAVRY_MASTER_RELAY_AUTH_TOKEN", RELAY_TOKEN),
            ("WAVRY_MASTER_SERVICE_TOKEN", SERVICE_TOKEN),
        ],
    );
    http.until_ok(&format!("{master_url}/health"));
    let _gateway = service(
        "wavry-gateway",
        &[
            "--listen",
            &format!("{INET}:{gp}"),
            "--data-dir",
            &dir.0.join("gateway").display().to_string(),
            "--master-url",
            &master_url,
        ],
        &[
            ("WAVRY_ALLOW_PUBLIC_BIND", "1"),
            ("WAVRY_GATEWAY_ALLOW_HOST_PROD_BIND", "1"),
            ("WAVRY_GATEWAY_MASTER_TOKEN", SERVICE_TOKEN),
        ],
    );
    http.until_ok(&format!("{gw}/health"));
    let _relay = service(
        "wavry-relay",
        &[
            "--listen",
            &format!("{INET}:{rp}"),
            "--health-listen",
            &format!("{INET}:{rh}"),
            "--master-url",
            &master_url,
            "--master-token",
            RELAY_TOKEN,
            "--key",
            &dir.0.join("relay.key").display().to_string(),
        ],
        &[
            ("WAVRY_RELAY_ALLOW_PUBLIC_BIND", "1"),
            ("WAVRY_RELAY_ALLOW_HOST_PROD_BIND", "1"),
        ],
    );
    http.until_ok(&format!("http://{INET}:{rh}/ready"));

    let key = |name: &str| {
        let k = IdentityKey::generate().unwrap();
        let (path, _) = k.write_files(&dir.0.join(name), false).unwrap();
        (path.display().to_string(), k)
    };
    let (a_key, a) = key("host-a");
    let (b_key, b) = key("host-b");
    let (c_key, c) = key("client");
    let tokens = [
        http.register(&gw, "host-a", &a),
        http.register(&gw, "host-b", &b),
        http.register(&gw, "alice", &c),
    ];
    let ws = format!("ws://{INET}:{gp}/ws");
    let common_env = [
        ("WAVRY_ALLOW_INSECURE_SIGNALING", "1"),
        ("WAVRY_SERVER_ALLOW_PUBLIC_BIND", "1"),
        ("WAVRY_CLIENT_ALLOW_PUBLIC_CONNECT", "1"),
    ];
    let client_id = c.id().to_string();
    let host = |ns: &str, key_path: &str, token: &str| {
        let mut env = common_env.to_vec();
        env.push(("WAVRY_SESSION_TOKEN", token));
        let mut p = Proc::spawn_cmd(net.command(
            ns,
            &bin("wavry-server"),
            &[
                "--key",
                key_path,
                "--allow",
                &client_id,
                "--listen",
                "0.0.0.0:0",
                "--width",
                "320",
                "--height",
                "240",
                "--fps",
                "30",
                "--bitrate-kbps",
                "1000",
                "--gateway-url",
                &ws,
            ],
            &env,
        ));
        let public = p.line_with("public address");
        p.line_with("reachable through the gateway");
        (p, public)
    };
    let (mut host_a, public_a) = host("h1", &a_key, &tokens[0]);
    assert!(
        public_a.contains("100.127.1.1:"),
        "r1's address: {public_a}"
    );
    let (mut host_b, public_b) = host("h3", &b_key, &tokens[1]);
    assert!(
        public_b.contains("100.127.3.1:"),
        "r3's address: {public_b}"
    );

    let client = |target: &str| {
        let mut env = common_env.to_vec();
        env.push(("WAVRY_SESSION_TOKEN", tokens[2].as_str()));
        let p = Proc::spawn_cmd(net.command(
            "h2",
            &bin("wavry-client"),
            &[
                "--gateway-url",
                &ws,
                "--host",
                target,
                "--key",
                &c_key,
                "--seconds",
                "2",
                "--direct-timeout-ms",
                "1000",
            ],
            &env,
        ));
        p.wait()
    };

    // Host A, behind an endpoint-independent NAT: direct, to its public address.
    let (ok, lines) = client("host-a");
    assert!(ok, "client to host A: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("public address 100.127.2.1:")),
        "the client learned r2's address: {lines:?}"
    );
    let via = lines
        .iter()
        .find(|l| l.contains("connected to"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(
        via.contains("via 100.127.1.1:") && via.contains("(direct)"),
        "direct through both NATs: {via}; client: {lines:?}"
    );
    assert_pictures(&lines, 10);
    host_a.line_with("offer from alice");

    // Host B, behind a symmetric NAT: the direct attempts time out, the relay carries it.
    let (ok, lines) = client("host-b");
    assert!(ok, "client to host B: {lines:?}");
    let via = lines
        .iter()
        .find(|l| l.contains("connected to"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(via.contains("via relay"), "through the relay: {via}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("asking the gateway for a relay")),
        "{lines:?}"
    );
    assert_pictures(&lines, 10);
    host_b.line_with("relay path for alice");

    for h in [host_a, host_b] {
        h.signal("-INT");
        let (ok, lines) = h.wait();
        assert!(ok, "host exit: {lines:?}");
    }
}
