//! The benchmark's records: about 1 KiB of JSON each, the shape of a
//! clickstream event, with the time it was put so that a consumer can tell
//! its propagation latency.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One event as the library's consumers decode it (owned strings: items
/// outlive the record they came from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Event {
    /// 0, 1, 2, … in the order the preloader wrote them.
    pub(crate) id: u64,
    /// One of a thousand users.
    pub(crate) user: String,
    /// What happened.
    pub(crate) kind: String,
    /// Microseconds since the Unix epoch when the record was put.
    pub(crate) sent_at_micros: u64,
    /// Filler that brings the record to its size.
    pub(crate) payload: String,
}

/// The same event with strings borrowed from the payload: the raw loop
/// decodes it from the response, as a hand-written loop that drops each
/// record at once would, and the library into a `JsonView` that keeps the
/// payload. (`&str` and not `Cow<str>`: the events have no escapes.)
#[derive(Debug, Serialize, Deserialize, yoke::Yokeable)]
pub(crate) struct EventRef<'a> {
    /// See [`Event::id`].
    pub(crate) id: u64,
    /// See [`Event::user`].
    #[serde(borrow)]
    pub(crate) user: &'a str,
    /// See [`Event::kind`].
    #[serde(borrow)]
    pub(crate) kind: &'a str,
    /// See [`Event::sent_at_micros`].
    pub(crate) sent_at_micros: u64,
    /// See [`Event::payload`].
    #[serde(borrow)]
    pub(crate) payload: &'a str,
}

const KINDS: [&str; 4] = ["click", "view", "scroll", "purchase"];

/// The JSON of event `id`, padded with `payload` to `size` bytes (or a
/// little more when `size` is below the fields' own length).
pub(crate) fn encode(id: u64, size: usize) -> Vec<u8> {
    let mut event = Event {
        id,
        user: format!("user-{:04}", id % 1000),
        kind: KINDS[(id % KINDS.len() as u64) as usize].to_owned(),
        sent_at_micros: now_micros(),
        payload: String::new(),
    };
    let bare = serde_json::to_vec(&event).unwrap_or_default().len();
    event.payload = filler(id, size.saturating_sub(bare));
    serde_json::to_vec(&event).unwrap_or_default()
}

/// Words for the filler: text that compresses about as well as real event
/// JSON does (3 to 4 times with gzip), unlike a repeated pattern.
const WORDS: [&str; 32] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "checkout", "session", "mobile",
    "desktop", "campaign", "referrer",
];

/// `len` bytes of words picked by a generator seeded with `id` (letters,
/// digits and spaces only: nothing to escape, so borrowed strings decode).
fn filler(id: u64, len: usize) -> String {
    let mut state = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
        out.push(' ');
        if state.is_multiple_of(7) {
            out.push_str(&(state % 100_000).to_string());
            out.push(' ');
        }
    }
    out.truncate(len);
    out
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_their_size_and_decode_both_ways() {
        for size in [128, 1024, 4096] {
            let json = encode(7, size);
            assert_eq!(json.len(), size);
            let owned: Event = serde_json::from_slice(&json).unwrap();
            let borrowed: EventRef<'_> = serde_json::from_slice(&json).unwrap();
            assert_eq!(owned.id, 7);
            assert_eq!(borrowed.payload, owned.payload);
            assert_eq!(borrowed.user, "user-0007");
        }
    }

    #[test]
    fn the_filler_compresses_like_text_not_like_a_pattern() {
        use std::io::Write as _;
        let json: Vec<u8> = (0..200).flat_map(|id| encode(id, 1024)).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&json).unwrap();
        let ratio = json.len() as f64 / gz.finish().unwrap().len() as f64;
        assert!((2.0..8.0).contains(&ratio), "gzip ratio {ratio:.1}");
    }

    #[test]
    fn a_size_below_the_fields_gives_the_bare_event() {
        let json = encode(1, 10);
        assert!(json.len() > 10);
        assert!(
            serde_json::from_slice::<Event>(&json)
                .unwrap()
                .payload
                .is_empty()
        );
    }
}
