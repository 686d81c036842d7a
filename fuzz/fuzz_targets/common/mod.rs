//! Shared input decoding: the first byte says how many cut points follow (0..=15), each next
//! byte is the length of one chunk, and the rest is the payload, cut at those lengths (the
//! remainder is the last chunk). Empty chunks are allowed on purpose.

pub fn split(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let n = (n as usize % 16).min(rest.len());
    let (lens, payload) = rest.split_at(n);
    let mut chunks = Vec::with_capacity(n + 1);
    let mut left = payload;
    for &len in lens {
        let (chunk, after) = left.split_at((len as usize).min(left.len()));
        chunks.push(chunk);
        left = after;
    }
    chunks.push(left);
    (chunks, payload)
}
