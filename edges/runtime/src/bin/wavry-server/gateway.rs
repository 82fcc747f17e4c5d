//! The host's presence on the signalling gateway: bound as its account, it answers each RIFT
//! offer with its candidates (or a refusal when its allow list does not hold the offering
//! account's Wavry ID), and reconnects with backoff when the socket drops.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wavry_rift::crypto::PeerPolicy;
use wavry_rift::identity::WavryId;
use wavry_runtime::signal::{self, Offer, Signal, SignalError};

use super::Shared;

/// How long connecting and binding may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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
    pub(super) fn run(&self, mut signal: Option<Signal>, shared: &Shared) {
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
            if let Err(e) = self.serve(s, shared) {
                eprintln!("wavry-server: gateway connection lost ({e}); reconnecting");
                wait(shared, backoff);
            }
        }
    }

    fn serve(&self, mut s: Signal, shared: &Shared) -> Result<(), SignalError> {
        while !shared.stop.load(Ordering::Acquire) {
            let Some(m) = s.recv(Instant::now() + Duration::from_millis(250))? else {
                continue;
            };
            if let Some(offer) = Offer::from_message(&m) {
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
                signal::answer(&mut s, &offer, accepted, &self.candidates)?;
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

/// Sleeps up to `d`, returning early once the runtime stops.
fn wait(shared: &Shared, d: Duration) {
    let end = Instant::now() + d;
    while !shared.stop.load(Ordering::Acquire) && Instant::now() < end {
        std::thread::sleep(
            Duration::from_millis(100).min(end.saturating_duration_since(Instant::now())),
        );
    }
}
