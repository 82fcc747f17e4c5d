//! The headless input sink: logs each event and counts them.

use crate::{InputEvent, InputSink, MediaError};

/// Logs every input event at `info` (target `wavry_media::input`) and counts them; the
/// default on hosts without a display, and what tests check input arrival against.
#[derive(Debug, Default)]
pub struct LoggingInputSink {
    /// Events received so far.
    pub events: u64,
    /// The most recent event.
    pub last: Option<InputEvent>,
}

impl InputSink for LoggingInputSink {
    fn name(&self) -> &'static str {
        "log"
    }

    fn inject(&mut self, event: &InputEvent) -> Result<(), MediaError> {
        self.events += 1;
        self.last = Some(*event);
        tracing::info!(target: "wavry_media::input", n = self.events, ?event, "input");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_keeps_the_last_event() {
        let mut s = LoggingInputSink::default();
        let key = InputEvent::Key {
            code: 30,
            pressed: true,
        };
        s.inject(&InputEvent::MouseMove { x: 0.5, y: 0.25 })
            .unwrap();
        s.inject(&key).unwrap();
        assert_eq!(s.events, 2);
        assert_eq!(s.last, Some(key));
    }
}
