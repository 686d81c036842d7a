//! Prefix affinity: the key that sends a conversation's requests to the replica that has its
//! prompt cached (`balance = "prefix"`).
//!
//! The key is the client's `prompt_cache_key` when it set one (OpenAI's parameter for exactly
//! this; vLLM takes it as its cache salt). Otherwise it is the conversation's beginning: for
//! chat (`messages`) and the Responses API (`input` as items), the system and developer
//! messages *and the first message after them*, so that a system prompt shared by every
//! conversation does not send them all to one replica; for a prompt string (completions, or
//! `input` as text, or as token ids), its first [`PREFIX_BYTES`] bytes (a shorter prompt is
//! its own key, so a prompt that grows turn by turn keeps its replica once past that size). Anthropic's `system` and the Responses
//! API's `instructions` are part of it. The bytes are hashed as the client sent them (the SDKs
//! write the same history the same way each turn), with xxh3, whose definition is fixed, so
//! every Bridge instance and version computes the same key. Only the members the routing scan
//! already found are read, and of the conversation only its first messages.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::json::{scan_members, skip_value, ws, Member};

/// Bytes of a prompt string that make its key: its beginning, which the turns of a
/// conversation sent as one growing string share.
pub const PREFIX_BYTES: usize = 2048;

/// Seed separating keys from `prompt_cache_key` from keys made of content.
const CACHE_KEY_SEED: u64 = 0x6272_6964_6765;

/// The members that make the key, as the routing scan found them.
#[derive(Debug, Default)]
pub struct PrefixMembers {
    /// `prompt_cache_key`.
    pub cache_key: Option<Member>,
    /// `messages`, `prompt` or `input`.
    pub conversation: Option<Member>,
    /// `system` (Anthropic) or `instructions` (Responses API).
    pub system: Option<Member>,
}

impl PrefixMembers {
    /// Notes `member` when its key makes the affinity key; `true` when it did.
    pub fn note(&mut self, key: &[u8], member: &Member) -> bool {
        let slot = match key {
            b"prompt_cache_key" => &mut self.cache_key,
            b"messages" | b"prompt" | b"input" => &mut self.conversation,
            b"system" | b"instructions" => &mut self.system,
            _ => return false,
        };
        *slot = Some(member.clone());
        true
    }

    /// The affinity key of `body`, when it has something to key on.
    pub fn key(&self, body: &[u8]) -> Option<u64> {
        let value = |m: &Member| body.get(m.value.clone());
        if let Some(key) = self.cache_key.as_ref().and_then(value) {
            if key.first() == Some(&b'"') {
                return Some(xxh3_64_with_seed(key, CACHE_KEY_SEED));
            }
        }
        let conversation = self.conversation.as_ref().and_then(value)?;
        let beginning = beginning(conversation)?;
        let seed = self.system.as_ref().and_then(value).map_or(0, xxh3_64);
        Some(xxh3_64_with_seed(beginning, seed))
    }
}

/// The part of a conversation that makes its key (see the module doc).
fn beginning(value: &[u8]) -> Option<&[u8]> {
    match value.first()? {
        b'"' => Some(&value[..value.len().min(PREFIX_BYTES)]),
        b'[' => {
            let mut i = ws(value, 1);
            if value.get(i).is_some_and(|&b| b != b'{' && b != b']') {
                // Not messages: a prompt as token ids or strings keys on its beginning too.
                return Some(&value[..value.len().min(PREFIX_BYTES)]);
            }
            while value.get(i).is_some_and(|&b| b != b']') {
                let end = skip_value(value, i).ok()?;
                if !is_instructions(&value[i..end]) {
                    // The first message that is not a system prompt closes the key.
                    return Some(&value[..end]);
                }
                i = ws(value, end);
                if value.get(i) == Some(&b',') {
                    i = ws(value, i + 1);
                }
            }
            // Only system prompts (or nothing): they are the key.
            Some(value)
        }
        _ => None,
    }
}

/// Whether a message is a system or developer prompt (shared by many conversations).
fn is_instructions(message: &[u8]) -> bool {
    if message.first() != Some(&b'{') {
        return false;
    }
    let mut role: Option<&[u8]> = None;
    let _ = scan_members(message, |m| {
        if m.key_is(message, "role") {
            role = message.get(m.value.clone());
        }
        Ok(())
    });
    matches!(role, Some(br#""system""# | br#""developer""#))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::scan_object;

    fn key(body: &str) -> Option<u64> {
        let mut members = PrefixMembers::default();
        for m in scan_object(body.as_bytes()).unwrap() {
            let name = m.key(body.as_bytes()).into_owned();
            members.note(&name, &m);
        }
        members.key(body.as_bytes())
    }

    const SYSTEM: &str = r#"{"role":"system","content":"You are helpful."}"#;

    fn chat(messages: &[&str]) -> String {
        format!(r#"{{"model":"m","messages":[{}]}}"#, messages.join(","))
    }

    #[test]
    fn a_conversation_keeps_its_key_as_it_grows() {
        let first = chat(&[SYSTEM, r#"{"role":"user","content":"tell me about owls"}"#]);
        let later = chat(&[
            SYSTEM,
            r#"{"role":"user","content":"tell me about owls"}"#,
            r#"{"role":"assistant","content":"Owls are..."}"#,
            r#"{"role":"user","content":"and their eyes?"}"#,
        ]);
        assert_eq!(key(&first), key(&later));
        assert!(key(&first).is_some());
    }

    #[test]
    fn a_shared_system_prompt_does_not_make_conversations_one() {
        let a = chat(&[SYSTEM, r#"{"role":"user","content":"owls"}"#]);
        let b = chat(&[SYSTEM, r#"{"role":"user","content":"bats"}"#]);
        assert_ne!(key(&a), key(&b));
        // The system prompt is part of the key too.
        let other = r#"{"role":"developer","content":"Be terse."}"#;
        let c = chat(&[other, r#"{"role":"user","content":"owls"}"#]);
        assert_ne!(key(&a), key(&c));
    }

    #[test]
    fn prompt_cache_key_wins() {
        let a = r#"{"prompt_cache_key":"user-42","messages":[{"role":"user","content":"owls"}]}"#;
        let b = r#"{"messages":[{"role":"user","content":"bats"}],"prompt_cache_key":"user-42"}"#;
        assert_eq!(key(a), key(b));
        let c = r#"{"prompt_cache_key":"user-43","messages":[{"role":"user","content":"owls"}]}"#;
        assert_ne!(key(a), key(c));
    }

    #[test]
    fn prompts_key_on_their_beginning() {
        let long = "x".repeat(PREFIX_BYTES);
        let a = format!(r#"{{"prompt":"{long} first turn"}}"#);
        let b = format!(r#"{{"prompt":"{long} first turn, answer, second turn"}}"#);
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(r#"{"prompt":"owls"}"#), key(r#"{"prompt":"bats"}"#));
        // Responses API: input as text, or as items with instructions beside it.
        assert_eq!(
            key(r#"{"input":"owls","instructions":"terse"}"#),
            key(r#"{"instructions":"terse","input":"owls"}"#)
        );
        assert_ne!(
            key(r#"{"input":"owls","instructions":"terse"}"#),
            key(r#"{"input":"owls"}"#)
        );
        let items =
            r#"{"input":[{"role":"user","content":"owls"},{"role":"assistant","content":"..."}]}"#;
        assert_eq!(
            key(items),
            key(r#"{"input":[{"role":"user","content":"owls"}]}"#)
        );
    }

    #[test]
    fn token_prompts_key_on_their_beginning_not_their_first_token() {
        assert_ne!(
            key(r#"{"prompt":[1,15,16]}"#),
            key(r#"{"prompt":[1,17,18]}"#)
        );
        let long: Vec<String> = (0..PREFIX_BYTES).map(|i| (i % 10).to_string()).collect();
        let a = format!(r#"{{"prompt":[{}]}}"#, long.join(","));
        let b = format!(r#"{{"prompt":[{},7,7]}}"#, long.join(","));
        assert_eq!(key(&a), key(&b));
    }

    #[test]
    fn nothing_to_key_on_is_no_key() {
        assert_eq!(key(r#"{"model":"m"}"#), None);
        assert_eq!(key(r#"{"messages":3}"#), None);
        assert!(key(r#"{"messages":[]}"#).is_some());
    }
}
