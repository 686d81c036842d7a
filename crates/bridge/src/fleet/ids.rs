//! The response-id map, shared: with Redis, where each stored response was made is written
//! there too, so `responses.retrieve(id)` and `previous_response_id` work through any instance.
//! Written once (`SET NX`: an id never changes owner), read only for ids this instance does not
//! know.

use crate::config::response_ids::{Made, ResponseIds, RESPONSE_ID_TTL};

use super::link::PREFIX;
use super::Fleet;

impl Fleet {
    /// Shares that `id` was made at `made` (queued; nothing without Redis).
    pub fn remember(&self, id: &str, made: &Made) {
        if let Some(link) = &self.link {
            link.write_once(key(id), encode(made), RESPONSE_ID_TTL);
        }
    }

    /// When `ids` does not know `id`, asks Redis where it was made, and remembers the answer
    /// in `ids`. Redis being down or slow only means the id stays unknown here.
    pub async fn recall(&self, ids: &ResponseIds, id: &str) {
        let Some(link) = self.link.as_ref().filter(|l| l.is_up()) else {
            return;
        };
        if ids.knows(id) {
            return;
        }
        if let Ok(Some(value)) = link.get(&key(id)).await {
            if let Some(made) = decode(&value) {
                ids.learn(id, made);
            }
        }
    }
}

fn key(id: &str) -> String {
    format!("{PREFIX}response:{id}")
}

/// `model\ndeployment\nreplica\nowner` (ids and URLs hold no newline; the owner in hex).
fn encode(made: &Made) -> String {
    let owner: String = made.owner.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}\n{}\n{}\n{owner}",
        made.model_id, made.deployment_id, made.replica
    )
}

fn decode(value: &str) -> Option<Made> {
    let mut parts = value.split('\n');
    let (model_id, deployment_id, replica, owner_hex) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if owner_hex.len() != 64 || parts.next().is_some() {
        return None;
    }
    let mut owner = [0u8; 32];
    for (i, byte) in owner.iter_mut().enumerate() {
        *byte = u8::from_str_radix(owner_hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Made {
        model_id: model_id.to_string(),
        deployment_id: deployment_id.to_string(),
        replica: replica.to_string(),
        owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_a_response_was_made_reads_back_as_written() {
        let made = Made {
            model_id: "m".into(),
            deployment_id: "d".into(),
            replica: "http://10.0.0.1:8000/v1".into(),
            owner: [0xab; 32],
        };
        assert_eq!(decode(&encode(&made)), Some(made));
        assert_eq!(decode("m\nd\nr\nzz"), None);
        assert_eq!(decode("m\nd"), None);
    }
}
