//! The host's presence on the signalling gateway: bound as its account, it answers each RIFT
//! offer with its candidates (or a refusal when its allow list does not hold the offering
//! account's Wavry ID), takes relay leases brokered for a client it answered (the client's
//! handshake then arrives through that relay), and reconnects with backoff when the socket
//! drops.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wavry_net::HostDriver;
use wavry_rift::crypto::PeerPolicy;
use wavry_rift::identity::WavryId;
use wavry_rift::relay_client::RelayClientConfig;
use wavry_runtime::nat;
use wavry_runtime::signal::{self, Offer, RelayGrant, Signal, SignalError};

use super::Shared;

/// How long connecting and binding may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long after answering an offer the host takes relay leases for that account: a client
/// asks for a relay only after its direct attempt, well within this.
const RELAY_AFTER_OFFER: Duration = Duration::from_secs(120);

/// What the host tells the gateway and whom it lets in.
pub(super) struct Presence {
    pub(super) url: String,
    pub(super) token: String,
    pub(super) candidates: Vec<SocketAddr>,
    pub(super) policy: PeerPolicy,
}

impl Presence {
    /// Binds at once: a refused token or a bad URL fails the start; a gateway that is down
    /// only delays presence ([`Self::run`] keeps trying).
    pub(super) fn connect(&self) -> Result<Option<Signal>, SignalError> {
        match Signal::connect(&self.url, &self.token, CONNECT_TIMEOUT) {
            Ok(s) => {
                self.announce(&s);
                Ok(Some(s))
            }
            Err(e) if e.is_permanent() => Err(e),
            Err(e) => {
                eprintln!("wavry-server: gateway unreachable ({e}); retrying in the background");
                Ok(None)
            }
        }
    }

    fn announce(&self, s: &Signal) {
        let at: Vec<String> = self.candidates.iter().map(ToString::to_string).collect();
        println!(
            "wavry-server: reachable through the gateway as {} ({}), offering {}",
            s.username,
            s.wavry_id.as_deref().unwrap_or("no Wavry ID"),
            at.join(" ")
        );
    }

    /// Serves offers until the runtime stops; reconnects after transient failures. A
    /// permanent one (the token revoked) ends presence with a line saying so; sessions on
    /// --listen go on.
    pub(super) fn run(&self, mut signal: Option<Signal>, shared: &Shared, host: &HostDriver) {
        let mut backoff = Duration::from_secs(1);
        while !shared.stop.load(Ordering::Acquire) {
            let s = match signal.take() {
                Some(s) => s,
                None => match Signal::connect(&self.url, &self.token, CONNECT_TIMEOUT) {
                    Ok(s) => {
                        self.announce(&s);
                        backoff = Duration::from_secs(1);
                        s
                    }
                    Err(e) if e.is_permanent() => {
                        eprintln!(
                            "wavry-server: gateway presence ended: {e} (log in again for a new \
                             session token); direct connections on --listen go on"
                        );
                        return;
                    }
                    Err(e) => {
                        eprintln!(
                            "wavry-server: gateway unreachable ({e}); retrying in {backoff:?}"
                        );
                        wait(shared, backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            if let Err(e) = self.serve(s, shared, host) {
                eprintln!("wavry-server: gateway connection lost ({e}); reconnecting");
                wait(shared, backoff);
            }
        }
    }

    fn serve(&self, mut s: Signal, shared: &Shared, host: &HostDriver) -> Result<(), SignalError> {
        // Accounts answered (accepted) lately: only they may bring a relay lease.
        let mut answered: HashMap<String, Instant> = HashMap::new();
        // Candidates announced by accounts whose offer has not arrived yet.
        let mut announced: HashMap<String, Vec<SocketAddr>> = HashMap::new();
        while !shared.stop.load(Ordering::Acquire) {
            let Some(m) = s.recv(Instant::now() + Duration::from_millis(250))? else {
                continue;
            };
            if let Some((from, a)) = signal::candidate_of(&m) {
                // Bounded: a few addresses per account, a few accounts at once.
                if announced.len() < 64 || announced.contains_key(&from) {
                    let list = announced.entry(from).or_default();
                    if list.len() < 8 && !list.contains(&a) {
                        list.push(a);
                    }
                }
            } else if let Some(grant) = RelayGrant::from_message(&m) {
                answered.retain(|_, at| at.elapsed() < RELAY_AFTER_OFFER);
                match grant {
                    Ok(g) if answered.contains_key(&g.peer) => add_relay_path(host, g),
                    Ok(g) => eprintln!(
                        "wavry-server: relay lease for {} ignored: no offer from that account \
                         was answered lately",
                        g.peer
                    ),
                    Err(e) => eprintln!("wavry-server: unusable relay lease: {e}"),
                }
            } else if let Some(mut offer) = Offer::from_message(&m) {
                offer.candidates = announced.remove(&offer.from).unwrap_or_default();
                let accepted = self.allows(&offer);
                println!(
                    "wavry-server: offer from {} ({}, {:?}) through the gateway: {}",
                    offer.from,
                    offer.wavry_id.as_deref().unwrap_or("no Wavry ID"),
                    offer.client_name,
                    if accepted {
                        "answered"
                    } else {
                        "refused (not on --allow)"
                    }
                );
                if accepted {
                    punch(host, &offer.candidates);
                }
                signal::answer(&mut s, &offer, accepted, &self.candidates)?;
                if accepted {
                    answered.insert(offer.from, Instant::now());
                }
            } else if let wavry_signal::Message::Error { code, message } = m {
                eprintln!("wavry-server: gateway: {message} ({})", code.unwrap_or(0));
            }
        }
        Ok(())
    }

    /// The offering account's Wavry ID (vouched for by the gateway) is one the handshake
    /// would accept.
    fn allows(&self, offer: &Offer) -> bool {
        match &self.policy {
            PeerPolicy::AnyAuthenticated => true,
            p => offer
                .wavry_id
                .as_deref()
                .and_then(|w| w.parse::<WavryId>().ok())
                .is_some_and(|id| p.allows(&id)),
        }
    }
}

/// Opens the host's NAT towards a client about to handshake: a datagram from the session port
/// to each address the client announced (twice: one may be lost).
fn punch(host: &HostDriver, to: &[SocketAddr]) {
    for &a in to {
        for _ in 0..2 {
            let _ = host.send_raw(a, nat::punch_datagram());
        }
    }
}

/// Presents the host's lease to its relay; the client's handshake comes through it.
fn add_relay_path(host: &HostDriver, g: RelayGrant) {
    println!(
        "wavry-server: relay path for {}: presenting the lease to relay {} at {}",
        g.peer, g.lease.relay_id, g.lease.relay_addr
    );
    if let Err(e) = host.add_relay_path(g.lease, RelayClientConfig::default(), CONNECT_TIMEOUT) {
        eprintln!("wavry-server: relay path for {} not added: {e}", g.peer);
    }
}

/// Sleeps up to `d`, returning early once the runtime stops.
fn wait(shared: &Shared, d: Duration) {
    let end = Instant::now() + d;
    while !shared.stop.load(Ordering::Acquire) && Instant::now() < end {
        std::thread::sleep(
            Duration::from_millis(100).min(end.saturating_duration_since(Instant::now())),
        );
    }
}
