//! SHA-256 whose running state can be stored, so an upload spread over many messages (and
//! upgrades) is hashed chunk by chunk as it arrives instead of all at once at the end.
//! The compression function is the `sha2` crate's; this file only buffers and pads.

use candid::CandidType;
use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;

const INITIAL: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Sha256State {
    state: [u32; 8],
    /// Bytes not yet compressed (always fewer than 64).
    #[serde(with = "serde_bytes")]
    pending: Vec<u8>,
    total_len: u64,
}

impl Default for Sha256State {
    fn default() -> Self {
        Sha256State { state: INITIAL, pending: Vec::new(), total_len: 0 }
    }
}

impl Sha256State {
    /// Whether this state could come from hashing exactly `len` bytes (a state read back
    /// from damaged stable memory may not, and `update` relies on it).
    pub fn is_consistent_with(&self, len: u64) -> bool {
        self.total_len == len && self.pending.len() as u64 == len % 64
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.total_len += data.len() as u64;
        if !self.pending.is_empty() {
            let take = (64 - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < 64 {
                return;
            }
            let block = std::mem::take(&mut self.pending);
            sha2::compress256(&mut self.state, &[*GenericArray::from_slice(&block)]);
        }
        let whole = data.len() / 64 * 64;
        let blocks: Vec<_> =
            data[..whole].chunks_exact(64).map(|b| *GenericArray::from_slice(b)).collect();
        sha2::compress256(&mut self.state, &blocks);
        self.pending.extend_from_slice(&data[whole..]);
    }

    pub fn finish(&self) -> [u8; 32] {
        let mut tail = self.pending.clone();
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&(self.total_len * 8).to_be_bytes());
        let mut state = self.state;
        let blocks: Vec<_> = tail.chunks_exact(64).map(|b| *GenericArray::from_slice(b)).collect();
        sha2::compress256(&mut state, &blocks);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn matches_sha2_for_any_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let want = hex(&sha2::Sha256::digest(&data));
        for split in [0, 1, 55, 56, 63, 64, 65, 500, 999, 1000] {
            let mut s = Sha256State::default();
            s.update(&data[..split]);
            s.update(&data[split..]);
            assert_eq!(hex(&s.finish()), want, "split at {split}");
        }
        assert_eq!(
            hex(&Sha256State::default().finish()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
