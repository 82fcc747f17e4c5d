//! A host over several cores: one [`HostDriver`] thread per `SO_REUSEPORT` socket on the same
//! address ([`crate::bind_sharded`]), each with its own `Endpoint`. The kernel hashes every
//! flow's 4-tuple to one socket, so a client's handshake and all its later datagrams reach the
//! same shard, and shards share nothing. Events from every shard arrive through one call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Select;
use wavry_rift::identity::IdentityKey;
use wavry_rift::session::{Endpoint, Event, SessionConfig, SessionHandle};

use crate::driver::{DriverConfig, DriverError, DriverStats, HostDriver};
use crate::{Config, IoMode, bind_sharded};

/// A session of a [`ShardedHost`]: which shard, and the session inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardedHandle {
    /// Index of the shard (its driver is `ShardedHost::shard(shard)`).
    pub shard: usize,
    /// The session inside that shard's endpoint.
    pub session: SessionHandle,
}

/// Several host drivers on one address, a thread each.
#[derive(Debug)]
pub struct ShardedHost {
    shards: Vec<HostDriver>,
}

impl ShardedHost {
    /// Binds `shards` sockets on `addr` (port 0: the first picks it) and starts a host driver
    /// on each, named `<thread_name>-<i>`. Each shard accepts up to `max_sessions` sessions;
    /// which shard a client lands on is the kernel's hash of its address, so size
    /// `max_sessions` with headroom.
    #[allow(clippy::too_many_arguments)] // mirrors bind + Endpoint::new + HostDriver::spawn
    pub fn spawn(
        addr: SocketAddr,
        shards: usize,
        mode: IoMode,
        net: &Config,
        cfg: &SessionConfig,
        identity: &Arc<IdentityKey>,
        max_sessions: usize,
        driver: &DriverConfig,
    ) -> Result<Self, DriverError> {
        let sockets = bind_sharded(addr, shards, mode, net)?;
        let mut drivers = Vec::with_capacity(sockets.len());
        for (i, socket) in sockets.into_iter().enumerate() {
            let endpoint = Endpoint::new(cfg.clone(), identity.clone(), max_sessions);
            let dcfg = DriverConfig {
                thread_name: format!("{}-{i}", driver.thread_name),
                ..driver.clone()
            };
            drivers.push(HostDriver::spawn(socket, endpoint, dcfg)?);
        }
        Ok(Self { shards: drivers })
    }

    /// One shard per available core (at least one).
    pub fn cores() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }

    /// The shared address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shards[0].local_addr()
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: a sharded host has at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Shard `i`'s driver (send frames, input, calls to its sessions).
    pub fn shard(&self, i: usize) -> &HostDriver {
        &self.shards[i]
    }

    /// The next event from any shard, waiting until `deadline` (`None`: nothing by then, or
    /// every shard has stopped).
    pub fn recv_event(&self, deadline: Instant) -> Option<(ShardedHandle, Event)> {
        let mut sel = Select::new();
        for d in &self.shards {
            sel.recv(d.events());
        }
        loop {
            let op = sel.select_deadline(deadline).ok()?;
            let i = op.index();
            match op.recv(self.shards[i].events()) {
                Ok((session, e)) => return Some((ShardedHandle { shard: i, session }, e)),
                // That shard stopped: keep listening to the others.
                Err(_) => {
                    sel.remove(i);
                }
            }
        }
    }

    /// Stops every shard and returns each one's counters (the first error ends the list).
    pub fn shutdown(self) -> Result<Vec<DriverStats>, DriverError> {
        self.shards.into_iter().map(HostDriver::shutdown).collect()
    }
}
