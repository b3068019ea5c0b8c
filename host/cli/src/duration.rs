//! Durations on the command line: `500ms`, `3s`, `1m`.

use std::time::Duration;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 500ms, 3s, 1m)"))
}
