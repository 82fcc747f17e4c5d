//! The sender ─ relay ─ receiver namespaces, their construction and teardown.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

use crate::{Error, Result, ethtool, napi, run};

/// Where `ip netns add` puts the handles (bind mounts) of named namespaces.
const NETNS_DIR: &str = "/var/run/netns";

/// How long IPv6 addresses may stay tentative before [`Topology::new`] gives up.
const DAD_WAIT: Duration = Duration::from_secs(5);

/// Topologies made by this process so far; part of every name and subnet.
static CREATED: AtomicU32 = AtomicU32::new(0);

/// One of the three namespaces of a [`Topology`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sends towards the relay; its default route is the relay's sender-side address.
    Sender,
    /// Holds the relay process; reachable from both sides, forwards nothing by itself.
    Relay,
    /// Receives from the relay; its default route is the relay's receiver-side address.
    Receiver,
}

impl Role {
    /// All roles, in path order.
    pub const ALL: [Role; 3] = [Role::Sender, Role::Relay, Role::Receiver];
}

/// How to build a [`Topology`]; `Options::default()` is one queue, MTU 1500, no GRO, no threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Transmit and receive queues of every veth (`numtxqueues`/`numrxqueues`), at least 1.
    pub queues: u16,
    /// MTU of every veth.
    pub mtu: u32,
    /// GRO on every interface; on veth this also gives them NAPI receive queues.
    pub gro: bool,
    /// Threaded NAPI on every interface (`/sys/class/net/<if>/threaded` = 1), so that receive
    /// work runs in `napi/<if>-<id>` kernel threads one can pin: the relay's on its cores, the
    /// end hosts' elsewhere, so that a measurement charges each side its own work. Implies
    /// `gro`: without GRO (or an XDP program) a veth has no NAPI instance to thread.
    pub threaded_napi: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            queues: 1,
            mtu: 1500,
            gro: false,
            threaded_napi: false,
        }
    }
}

/// Three network namespaces in a line, sender ─ relay ─ receiver, joined by two veth pairs.
///
/// Built by [`Topology::new`] (as root), removed on drop, also when a test panics. Every name
/// carries a per-process, per-topology tag, and every topology gets its own subnets, so that
/// tests running in parallel do not collide. Only a process in the relay namespace can carry
/// traffic from one side to the other: the relay namespace has IPv4 and IPv6 forwarding off.
#[derive(Debug)]
pub struct Topology {
    /// The tag in every name of this topology (`wx<pid><counter>` in base 36).
    pub tag: String,
    /// The sender's namespace (a name under `/var/run/netns`).
    pub sender_ns: String,
    /// The relay's namespace.
    pub relay_ns: String,
    /// The receiver's namespace.
    pub receiver_ns: String,
    /// The sender's interface (in `sender_ns`), peer of `relay_if_sender_side`.
    pub sender_if: String,
    /// The relay's interface towards the sender (in `relay_ns`).
    pub relay_if_sender_side: String,
    /// The relay's interface towards the receiver (in `relay_ns`).
    pub relay_if_receiver_side: String,
    /// The receiver's interface (in `receiver_ns`), peer of `relay_if_receiver_side`.
    pub receiver_if: String,
    /// The sender's address, `10.N.1.2`.
    pub sender_ip: Ipv4Addr,
    /// The relay's address on the sender side, `10.N.1.1`: the sender's gateway.
    pub relay_ip_sender_side: Ipv4Addr,
    /// The relay's address on the receiver side, `10.N.2.1`: the receiver's gateway.
    pub relay_ip_receiver_side: Ipv4Addr,
    /// The receiver's address, `10.N.2.2`.
    pub receiver_ip: Ipv4Addr,
    /// The sender's IPv6 address, `fd77:n:1::2`.
    pub sender_ip6: Ipv6Addr,
    /// The relay's IPv6 address on the sender side, `fd77:n:1::1`.
    pub relay_ip6_sender_side: Ipv6Addr,
    /// The relay's IPv6 address on the receiver side, `fd77:n:2::1`.
    pub relay_ip6_receiver_side: Ipv6Addr,
    /// The receiver's IPv6 address, `fd77:n:2::2`.
    pub receiver_ip6: Ipv6Addr,
    /// The options it was built with.
    pub options: Options,
    /// Namespaces created so far, deleted on drop (kept apart from the public fields).
    created: Vec<String>,
}

impl Topology {
    /// Builds the three namespaces, links, addresses and routes; needs root and iproute2.
    ///
    /// Stale namespaces with the same names (left by a killed process with the same pid) are
    /// deleted first. Returns once every IPv6 address is usable (DAD is off; this waits, bounded,
    /// until none is tentative). On error, whatever was built is removed again.
    pub fn new(options: Options) -> Result<Self> {
        if options.queues == 0 {
            return Err(Error::InvalidOption("queues must be at least 1".into()));
        }
        if options.mtu < 1280 {
            return Err(Error::InvalidOption(format!(
                "mtu {} is below IPv6's minimum of 1280",
                options.mtu
            )));
        }
        let pid = std::process::id();
        let counter = CREATED.fetch_add(1, Ordering::Relaxed);
        // ≤ 5 base-36 digits for any pid (pid_max ≤ 2^22) and exactly 2 for the counter, so that
        // interface names stay ≤ 9 bytes and `napi/<if>-` fits a thread's 15-byte comm.
        let id = format!("{}{}", base36(pid, 1), base36(counter % (36 * 36), 2));
        // Subnets are private to each namespace anyway; distinct ones keep captures readable.
        let n = (pid.wrapping_add(counter) % 192) as u8;
        let v6 = |side: u16, host: u16| Ipv6Addr::new(0xfd77, u16::from(n), side, 0, 0, 0, 0, host);
        let tag = format!("wx{id}");
        let mut topology = Self {
            sender_ns: format!("{tag}-snd"),
            relay_ns: format!("{tag}-rly"),
            receiver_ns: format!("{tag}-rcv"),
            sender_if: format!("s0{id}"),
            relay_if_sender_side: format!("r0{id}"),
            relay_if_receiver_side: format!("r1{id}"),
            receiver_if: format!("c0{id}"),
            sender_ip: Ipv4Addr::new(10, 64 + n, 1, 2),
            relay_ip_sender_side: Ipv4Addr::new(10, 64 + n, 1, 1),
            relay_ip_receiver_side: Ipv4Addr::new(10, 64 + n, 2, 1),
            receiver_ip: Ipv4Addr::new(10, 64 + n, 2, 2),
            sender_ip6: v6(1, 2),
            relay_ip6_sender_side: v6(1, 1),
            relay_ip6_receiver_side: v6(2, 1),
            receiver_ip6: v6(2, 2),
            tag,
            options,
            created: Vec::new(),
        };
        // On error `topology` is dropped here, which deletes the namespaces created so far.
        topology.build()?;
        Ok(topology)
    }

    /// The name of `role`'s namespace.
    pub fn namespace(&self, role: Role) -> &str {
        match role {
            Role::Sender => &self.sender_ns,
            Role::Relay => &self.relay_ns,
            Role::Receiver => &self.receiver_ns,
        }
    }

    /// The interfaces in `role`'s namespace (besides `lo`): one for the ends, two for the relay.
    pub fn interfaces(&self, role: Role) -> Vec<&str> {
        match role {
            Role::Sender => vec![&self.sender_if],
            Role::Relay => vec![&self.relay_if_sender_side, &self.relay_if_receiver_side],
            Role::Receiver => vec![&self.receiver_if],
        }
    }

    /// A [`Command`] running `program` inside `role`'s namespace (`ip netns exec <ns> program`).
    ///
    /// Add arguments, environment and stdio as usual. `ip netns exec` also remounts `/sys`, so
    /// the program sees the namespace's interfaces under `/sys/class/net`.
    pub fn exec(&self, role: Role, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.namespace(role)])
            .arg(program);
        command
    }

    /// Runs `f` on a new thread whose network namespace is `role`'s, and returns its result.
    ///
    /// Sockets that `f` creates belong to that namespace for their whole life and keep working
    /// when used from any other thread afterwards, so one process can, for example, create its
    /// sender sockets in the sender namespace and its receiver socket in the receiver namespace
    /// and then drive and measure both from the same thread. A panic in `f` is resumed here.
    pub fn enter<T, F>(&self, role: Role, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        enter_namespace(self.namespace(role), f)
    }

    /// PIDs of the threaded-NAPI kernel threads (`napi/<if>-<id>`) of `role`'s interfaces.
    ///
    /// Empty unless the topology was built with [`Options::threaded_napi`]; then one thread per
    /// receive queue of each interface.
    pub fn napi_threads(&self, role: Role) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .interfaces(role)
            .into_iter()
            .flat_map(napi::napi_threads_of)
            .collect();
        pids.sort_unstable();
        pids
    }

    fn build(&mut self) -> Result<()> {
        let namespaces = [
            self.sender_ns.clone(),
            self.relay_ns.clone(),
            self.receiver_ns.clone(),
        ];
        for ns in &namespaces {
            if Path::new(NETNS_DIR).join(ns).exists() {
                tracing::warn!(namespace = %ns, "deleting a stale namespace");
                run(Command::new("ip").args(["netns", "del", ns]))?;
            }
            run(Command::new("ip").args(["netns", "add", ns]))?;
            self.created.push(ns.clone());
            ip(ns, &["link", "set", "lo", "up"])?;
            // Before any interface exists, so that they all inherit "no DAD", link-local too.
            sh(
                ns,
                "echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && \
                 echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad",
            )?;
        }
        self.veth(
            &self.sender_ns,
            &self.sender_if,
            &self.relay_ns,
            &self.relay_if_sender_side,
        )?;
        self.veth(
            &self.relay_ns,
            &self.relay_if_receiver_side,
            &self.receiver_ns,
            &self.receiver_if,
        )?;
        let ends = [
            (
                &self.sender_ns,
                &self.sender_if,
                self.sender_ip,
                self.sender_ip6,
            ),
            (
                &self.relay_ns,
                &self.relay_if_sender_side,
                self.relay_ip_sender_side,
                self.relay_ip6_sender_side,
            ),
            (
                &self.relay_ns,
                &self.relay_if_receiver_side,
                self.relay_ip_receiver_side,
                self.relay_ip6_receiver_side,
            ),
            (
                &self.receiver_ns,
                &self.receiver_if,
                self.receiver_ip,
                self.receiver_ip6,
            ),
        ];
        for (ns, ifname, v4, v6) in ends {
            ip(ns, &["addr", "add", &format!("{v4}/24"), "dev", ifname])?;
            ip(
                ns,
                &[
                    "-6",
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    ifname,
                    "nodad",
                ],
            )?;
            ip(ns, &["link", "set", ifname, "up"])?;
        }
        for (ns, gateway) in [
            (&self.sender_ns, IpAddr::V4(self.relay_ip_sender_side)),
            (&self.sender_ns, IpAddr::V6(self.relay_ip6_sender_side)),
            (&self.receiver_ns, IpAddr::V4(self.relay_ip_receiver_side)),
            (&self.receiver_ns, IpAddr::V6(self.relay_ip6_receiver_side)),
        ] {
            let family = if gateway.is_ipv4() { "-4" } else { "-6" };
            ip(
                ns,
                &[
                    family,
                    "route",
                    "add",
                    "default",
                    "via",
                    &gateway.to_string(),
                ],
            )?;
        }
        // New namespaces start with forwarding off unless the host sets
        // net.core.devconf_inherit_init_net; say it explicitly, it is what the tests rely on.
        for ns in &namespaces {
            sh(
                ns,
                "echo 0 > /proc/sys/net/ipv4/ip_forward && \
                 echo 0 > /proc/sys/net/ipv6/conf/all/forwarding",
            )?;
        }
        // The end hosts write complete UDP checksums, as frames from a wire carry them (see
        // ethtool::set_tx_checksum): an AF_XDP relay forwards what it receives as it is.
        for role in [Role::Sender, Role::Receiver] {
            for ifname in self.interfaces(role) {
                self.enter(role, || ethtool::set_tx_checksum(ifname, false))?
                    .map_err(|source| Error::Ethtool {
                        namespace: self.namespace(role).to_owned(),
                        interface: ifname.to_owned(),
                        what: "TX checksum offload off",
                        source,
                    })?;
            }
        }
        // No TSO on the relay's side either, so that whatever it sends (forwarded datagrams,
        // AF_XDP transmits) enters the receiver through the receiver's NAPI, not the relay
        // CPU's backlog (see ethtool::set_tso).
        for ifname in self.interfaces(Role::Relay) {
            self.enter(Role::Relay, || ethtool::set_tso(ifname, false))?
                .map_err(|source| Error::Ethtool {
                    namespace: self.relay_ns.clone(),
                    interface: ifname.to_owned(),
                    what: "TCP segmentation offload off",
                    source,
                })?;
        }
        if self.options.gro || self.options.threaded_napi {
            for role in Role::ALL {
                for ifname in self.interfaces(role) {
                    self.enter(role, || ethtool::set_gro(ifname, true))?
                        .map_err(|source| Error::Gro {
                            namespace: self.namespace(role).to_owned(),
                            interface: ifname.to_owned(),
                            source,
                        })?;
                }
            }
        }
        if self.options.threaded_napi {
            for role in Role::ALL {
                for ifname in self.interfaces(role) {
                    sh(
                        self.namespace(role),
                        &format!("echo 1 > /sys/class/net/{ifname}/threaded"),
                    )?;
                }
            }
        }
        for ns in &namespaces {
            wait_for_dad(ns)?;
        }
        Ok(())
    }

    /// A veth pair `a_if` (in `a`) ── `b_if` (in `b`) with the configured queues and MTU.
    fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) -> Result<()> {
        let queues = self.options.queues.to_string();
        let mtu = self.options.mtu.to_string();
        let end = |name| {
            [
                name,
                "numtxqueues",
                &queues,
                "numrxqueues",
                &queues,
                "mtu",
                &mtu,
            ]
        };
        let mut args = vec!["link", "add"];
        args.extend(end(a_if));
        args.extend(["type", "veth", "peer", "name"]);
        args.extend(end(b_if));
        args.extend(["netns", b]);
        ip(a, &args).map(drop)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veths, and with them their peers. The kernel frees a
        // namespace once sockets created in it are closed too; its name is gone at once.
        for ns in self.created.iter().rev() {
            if let Err(e) = run(Command::new("ip").args(["netns", "del", ns])) {
                tracing::warn!(namespace = %ns, error = %e, "cannot delete namespace");
            }
        }
    }
}

/// Runs `f` on a new thread in the named network namespace (`/var/run/netns/<namespace>`).
///
/// What [`Topology::enter`] does, for namespaces made elsewhere; the same notes apply.
pub fn enter_namespace<T, F>(namespace: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let handle =
        File::open(Path::new(NETNS_DIR).join(namespace)).map_err(|source| Error::Enter {
            namespace: namespace.to_owned(),
            source,
        })?;
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            // setns(CLONE_NEWNET) affects only the calling thread, which ends with `f`.
            setns(&handle, CloneFlags::CLONE_NEWNET).map_err(|errno| Error::Enter {
                namespace: namespace.to_owned(),
                source: errno.into(),
            })?;
            Ok(f())
        });
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// `ip -n <ns> <args>`.
fn ip(ns: &str, args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(["-n", ns]).args(args))
}

/// `ip netns exec <ns> sh -c <script>`: for `/proc/sys` and `/sys` writes inside `ns`.
fn sh(ns: &str, script: &str) -> Result<String> {
    run(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]))
}

/// Polls until `ns` has no tentative IPv6 address, for at most [`DAD_WAIT`].
fn wait_for_dad(ns: &str) -> Result<()> {
    let deadline = Instant::now() + DAD_WAIT;
    loop {
        let tentative = ip(ns, &["-6", "addr", "show", "tentative"])?;
        if tentative.trim().is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "IPv6 addresses in {ns} still tentative after {DAD_WAIT:?}: {}",
                tentative.trim()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `value` in base 36 (lowercase), left-padded with zeros to at least `width` digits.
fn base36(mut value: u32, width: usize) -> String {
    let mut digits = Vec::new();
    while value > 0 || digits.len() < width {
        digits.push(char::from_digit(value % 36, 36).expect("digit < 36"));
        value /= 36;
    }
    digits.iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::base36;

    #[test]
    fn base36_pads_and_fits_any_pid_in_five_digits() {
        assert_eq!(base36(0, 1), "0");
        assert_eq!(base36(0, 2), "00");
        assert_eq!(base36(35, 2), "0z");
        assert_eq!(base36(36, 1), "10");
        assert_eq!(base36(1295, 2), "zz");
        assert_eq!(base36(1 << 22, 1).len(), 5);
    }
}
