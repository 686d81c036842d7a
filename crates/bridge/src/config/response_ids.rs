//! Which replica made which stored response.
//!
//! vLLM keeps the responses of the Responses API in the memory of the replica that made them,
//! so retrieving one, deleting or cancelling it, listing its input items, or continuing the
//! conversation with `previous_response_id` must reach that replica. Bridge learns the `id` of
//! every response it relays and remembers where it was made and for which key, in a map that is
//! bounded in size and age and shared by all workers; it survives reloads with the registry.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most response ids remembered (the oldest are forgotten first): about 150 bytes each.
pub const MAX_RESPONSE_IDS: usize = 50_000;
/// How long a response id is remembered.
pub const RESPONSE_ID_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest response id accepted (vLLM's are `resp_` and 32 hex digits).
pub const MAX_RESPONSE_ID_LEN: usize = 128;

/// Where a response was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    /// The model it was made for.
    pub model_id: String,
    /// The deployment that made it.
    pub deployment_id: String,
    /// The replica that holds it, by base URL (indexes change across reloads; URLs do not).
    pub replica: String,
    /// The digest of the key it belongs to (zeros: no key): another key never reaches it.
    pub owner: [u8; 32],
}

/// What the map knows of an id, for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Made for this key, here.
    Mine(Made),
    /// Made for another key: to this one, it must look unknown, and reach nothing.
    Theirs,
    /// Never seen, or forgotten.
    Unknown,
}

/// Response ids and where each was made.
#[derive(Debug, Default)]
pub struct ResponseIds {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, (Made, Instant)>,
    /// Ids in the order they were learned, for eviction.
    order: VecDeque<String>,
}

/// Whether `id` may be a response id: 1 to [`MAX_RESPONSE_ID_LEN`] of `A-Z a-z 0-9 _ -`
/// (so it can never be a path of its own: no `/`, `.` or `%`).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_RESPONSE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ResponseIds {
    /// Remembers that `id` was made at `made`.
    pub fn learn(&self, id: &str, made: Made) {
        if !valid_id(id) {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let now = Instant::now();
        // Forget the expired, and the oldest past the bound.
        while let Some(oldest) = inner.order.front().cloned() {
            let expired = inner
                .by_id
                .get(&oldest)
                .is_none_or(|(_, at)| now.duration_since(*at) > RESPONSE_ID_TTL);
            if !expired && inner.order.len() < MAX_RESPONSE_IDS {
                break;
            }
            inner.order.pop_front();
            inner.by_id.remove(&oldest);
        }
        match inner.by_id.get(id) {
            // An id is never taken over by another key (an answer that echoes someone
            // else's id must not make it its own).
            Some((known, _)) if known.owner != made.owner => {}
            Some(_) => {
                inner.by_id.insert(id.to_string(), (made, now));
            }
            None => {
                inner.by_id.insert(id.to_string(), (made, now));
                inner.order.push_back(id.to_string());
            }
        }
    }

    /// Where `id` was made, if it is known; whether it belongs to `owner` or to another key.
    pub fn find(&self, id: &str, owner: &[u8; 32]) -> Found {
        let Ok(inner) = self.inner.lock() else {
            return Found::Unknown;
        };
        match inner.by_id.get(id) {
            Some((_, at)) if at.elapsed() > RESPONSE_ID_TTL => Found::Unknown,
            Some((made, _)) if made.owner == *owner => Found::Mine(made.clone()),
            Some(_) => Found::Theirs,
            None => Found::Unknown,
        }
    }

    /// Whether `id` is remembered (for any key).
    pub fn knows(&self, id: &str) -> bool {
        self.inner.lock().is_ok_and(|i| {
            i.by_id
                .get(id)
                .is_some_and(|(_, at)| at.elapsed() <= RESPONSE_ID_TTL)
        })
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.by_id.len())
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(owner: u8) -> Made {
        Made {
            model_id: "m".into(),
            deployment_id: "d".into(),
            replica: "http://r/v1".into(),
            owner: [owner; 32],
        }
    }

    #[test]
    fn ids_are_found_by_their_own_key_only() {
        let ids = ResponseIds::default();
        ids.learn("resp_1", made(1));
        assert_eq!(ids.find("resp_1", &[1; 32]), Found::Mine(made(1)));
        assert_eq!(ids.find("resp_1", &[2; 32]), Found::Theirs);
        assert_eq!(ids.find("resp_2", &[1; 32]), Found::Unknown);
        ids.learn("resp_1", made(2));
        assert_eq!(
            ids.find("resp_1", &[1; 32]),
            Found::Mine(made(1)),
            "never taken over"
        );
        for bad in ["", "../slots", "a/b", "a%2Fb", "a.b"] {
            ids.learn(bad, made(1));
            assert_eq!(ids.find(bad, &[1; 32]), Found::Unknown, "{bad}");
        }
    }

    #[test]
    fn the_map_is_bounded() {
        let ids = ResponseIds::default();
        for i in 0..MAX_RESPONSE_IDS + 10 {
            ids.learn(&format!("resp_{i}"), made(0));
        }
        assert_eq!(ids.len(), MAX_RESPONSE_IDS);
        assert_eq!(
            ids.find("resp_0", &[0; 32]),
            Found::Unknown,
            "the oldest went first"
        );
        let newest = format!("resp_{}", MAX_RESPONSE_IDS + 9);
        assert!(matches!(ids.find(&newest, &[0; 32]), Found::Mine(_)));
    }
}
