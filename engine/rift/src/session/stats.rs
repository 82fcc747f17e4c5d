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
}
