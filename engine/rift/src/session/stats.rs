//! Session counters: everything dropped, repaired or retransmitted is counted here.

/// Counters of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Datagrams sent (including retransmissions and parity).
    pub datagrams_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Datagrams received and authenticated.
    pub datagrams_received: u64,
    /// Datagrams refused before or during authentication (bad header, CRC, tag, unknown alias).
    pub rejected: u64,
    /// Duplicates and replays refused by the replay window.
    pub replayed: u64,
    /// Authenticated datagrams whose content did not decode.
    pub malformed: u64,
    /// Video chunks sent (first transmissions).
    pub chunks_sent: u64,
    /// Parity datagrams sent.
    pub parity_sent: u64,
    /// Bytes of parity datagrams sent.
    pub parity_bytes: u64,
    /// Bytes of video chunk datagrams sent (first transmissions).
    pub video_bytes: u64,
    /// Chunks rebuilt from parity.
    pub fec_recovered: u64,
    /// NACKed packets retransmitted.
    pub retransmitted: u64,
    /// NACK requests sent.
    pub nacks_sent: u64,
    /// Reliable control messages retransmitted after a timeout.
    pub reliable_retransmits: u64,
    /// Frames delivered.
    pub frames_delivered: u64,
    /// Frames dropped at their deadline.
    pub frames_dropped: u64,
    /// Media datagrams (chunks, parity, retransmissions) discarded unsent because their
    /// deadline passed first: the sender fell behind its frames.
    pub media_expired: u64,
    /// Handshake messages retransmitted.
    pub handshake_retransmits: u64,
    /// File-transfer chunks sent (first transmissions).
    pub file_chunks_sent: u64,
    /// File-transfer chunks received and accepted (duplicates excluded).
    pub file_chunks_received: u64,
    /// File chunks or statuses for no known transfer, or outside its window (ignored).
    pub file_ignored: u64,
    /// File offers refused automatically (invalid, over the limits, too many at once).
    pub file_offers_refused: u64,
    /// Clipboard texts ignored (over the size limit or not UTF-8).
    pub clipboard_ignored: u64,
    /// Parity shards refused by the receive caps (per group, per frame, per session) or
    /// because they contradict their group's geometry.
    pub parity_refused: u64,
    /// Video chunks refused because the frame buffers' byte budget was spent.
    pub frame_budget_refused: u64,
    /// Authenticated packets whose id jumped ahead past the NACK window (their older gaps
    /// are counted lost in one step, not tracked one by one).
    pub packet_id_jumps: u64,
    /// Messages the peer's role may not send, dropped (video, parity or audio to a host).
    pub role_refused: u64,
    /// NACKed packet ids not retransmitted: unknown, too late, or already served twice.
    pub nacks_ignored: u64,
    /// Feedback reports with implausible values (acknowledgement delay, byte counts,
    /// delivery rate) that were clamped before use.
    pub feedback_clamped: u64,
    /// Client: cookie replies acted on (the host was under load).
    pub cookie_replies: u64,
    /// Handshake messages from the peer's address that did not decrypt (forged), dropped.
    pub handshake_forged: u64,
    /// Rekeys started (host: Rekey sent; client: Rekey answered).
    pub rekeys_started: u64,
    /// Rekeys completed (the first packet under the new keys arrived; both directions use
    /// them from then on).
    pub rekeys_completed: u64,
    /// Rekey messages refused (unexpected generation or role, unusable public key).
    pub rekeys_failed: u64,
    /// Transport packets refused because the keys of their key phase are gone (sealed under
    /// keys erased after a rekey).
    pub stale_key_phase: u64,
    /// Path checks started (an authenticated, newest packet from a new address).
    pub path_checks_started: u64,
    /// Path checks that failed (no answer from the new address in time).
    pub path_checks_failed: u64,
    /// Times the session moved to a validated new address.
    pub migrations: u64,
}

/// Path statistics over one reporting period ([`super::Event::Stats`], every
/// `SessionConfig::stats_interval`): what a player's overlay or an operator's metrics show.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PathStats {
    /// Length of the period this report covers.
    pub period: std::time::Duration,
    /// Smoothed round-trip time, once measured.
    pub rtt: Option<std::time::Duration>,
    /// Inter-arrival jitter of what this side receives, µs (RFC 3550 style estimate).
    pub jitter_us: u32,
    /// The peer's jitter estimate of what this side sends, µs (from its feedback).
    pub peer_jitter_us: u32,
    /// Fraction of this side's datagrams the peer reported lost in the period (0..=1).
    pub loss: f64,
    /// Datagrams the peer reported received in the period.
    pub peer_received: u64,
    /// Datagrams the peer reported lost in the period.
    pub peer_lost: u64,
    /// Chunks this side rebuilt from parity in the period.
    pub fec_recovered: u64,
    /// NACK requests this side sent in the period.
    pub nacks_sent: u64,
    /// Datagrams this side retransmitted for the peer's NACKs in the period.
    pub retransmitted: u64,
    /// Frames this side delivered / dropped at their deadline in the period.
    pub frames_delivered: u64,
    /// Frames dropped at their deadline in the period.
    pub frames_dropped: u64,
    /// DELTA's current target, bit/s.
    pub target_bps: u64,
    /// Latest delivery rate the peer's feedback showed, bit/s.
    pub delivery_bps: Option<u64>,
    /// What this side sent in the period, bit/s.
    pub send_bps: u64,
    /// What this side received in the period, bit/s (datagrams that authenticated).
    pub recv_bps: u64,
}

/// Accumulates the peer-reported part of [`PathStats`] between reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct Period {
    pub(crate) started: Option<std::time::Instant>,
    pub(crate) peer_received: u64,
    pub(crate) peer_lost: u64,
    pub(crate) peer_jitter_us: u32,
    pub(crate) delivery_bps: Option<u64>,
    pub(crate) bytes_received: u64,
    /// Counters at the start of the period.
    pub(crate) base: SessionStats,
}
