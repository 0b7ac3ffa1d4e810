//! Chat sessions: a KV cache per conversation, owned by the principal that created it,
//! kept in the heap between calls, with caps that evict the least recently used.

use std::collections::BTreeMap;

use candid::Principal;
use gpt2_engine::{Config, KvCache, KvLayout, SamplingParams};

use crate::api::{Sampling, SessionInfo};

/// Sessions one principal may hold; a new one beyond this evicts its least recently used.
pub const MAX_SESSIONS_PER_OWNER: usize = 4;
/// Sessions in the canister at once.
pub const MAX_SESSIONS: usize = 64;
/// KV memory reserved by all sessions (each reserves a full context up front, so a
/// session never runs out of memory mid-conversation).
pub const KV_LIMIT_BYTES: u64 = 1 << 30;

pub struct Session {
    pub id: u64,
    pub owner: Principal,
    /// The context: every token whose keys and values are in `cache`.
    pub tokens: Vec<u32>,
    pub cache: KvCache,
    /// Final hidden state after the last context token: the next token's logits come from it.
    pub hidden: Option<Vec<f32>>,
    pub sampling: SamplingParams,
    pub last_used_ns: u64,
    /// The last prefill or generate call's Candid-encoded arguments and reply, so an
    /// identical retry gets the same answer instead of generating more.
    pub last_call: Option<(Vec<u8>, Vec<u8>)>,
    reserved: u64,
}

impl Session {
    pub fn info(&self, config: &Config) -> SessionInfo {
        SessionInfo {
            id: self.id,
            position: self.tokens.len() as u32,
            n_ctx: config.n_ctx as u32,
            kv_bytes: self.cache.heap_bytes() as u64,
            sampling: to_api(self.sampling),
            tokens: self.tokens.clone(),
        }
    }

    /// Drops every token from `position` on.
    pub fn truncate(&mut self, position: usize) {
        self.tokens.truncate(position);
        self.cache.truncate(position);
        // The hidden state of the new last token is gone; the next prefill restores it.
        self.hidden = None;
        self.last_call = None;
    }
}

pub fn to_api(p: SamplingParams) -> Sampling {
    Sampling { temperature: p.temperature, top_k: p.top_k, top_p: p.top_p, seed: p.seed }
}

pub fn from_api(s: Sampling) -> Result<SamplingParams, String> {
    let p =
        SamplingParams { temperature: s.temperature, top_k: s.top_k, top_p: s.top_p, seed: s.seed };
    p.validate().map_err(|e| e.to_string())?;
    Ok(p)
}

#[derive(Default)]
pub struct Sessions {
    next_id: u64,
    map: BTreeMap<u64, Session>,
    reserved: u64,
}

impl Sessions {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn reserved_bytes(&self) -> u64 {
        self.reserved
    }

    /// Removes every session (a different model was loaded).
    pub fn clear(&mut self) {
        self.map.clear();
        self.reserved = 0;
    }

    pub fn create(
        &mut self,
        owner: Principal,
        sampling: SamplingParams,
        config: &Config,
        layout: KvLayout,
        now_ns: u64,
    ) -> Result<&Session, String> {
        let reserve = (config.n_ctx * layout.bytes_per_token(config)) as u64;
        if reserve > KV_LIMIT_BYTES {
            return Err(format!(
                "one session of this model needs {reserve} bytes of KV cache, over the {KV_LIMIT_BYTES}-byte limit"
            ));
        }
        // Allocated first, so that a heap too small for it changes nothing.
        let cache = KvCache::try_new(config, layout).map_err(|e| e.to_string())?;
        if self.map.values().filter(|s| s.owner == owner).count() >= MAX_SESSIONS_PER_OWNER {
            self.evict_lru(|s| s.owner == owner);
        }
        while self.map.len() >= MAX_SESSIONS || self.reserved + reserve > KV_LIMIT_BYTES {
            self.evict_lru(|_| true);
        }
        self.next_id += 1;
        let id = self.next_id;
        let session = Session {
            id,
            owner,
            tokens: Vec::new(),
            cache,
            hidden: None,
            sampling,
            last_used_ns: now_ns,
            last_call: None,
            reserved: reserve,
        };
        self.reserved += reserve;
        Ok(self.map.entry(id).or_insert(session))
    }

    fn evict_lru(&mut self, which: impl Fn(&Session) -> bool) {
        let victim = self
            .map
            .values()
            .filter(|s| which(s))
            .min_by_key(|s| (s.last_used_ns, s.id))
            .map(|s| s.id);
        if let Some(id) = victim {
            self.remove_entry(id);
        }
    }

    fn remove_entry(&mut self, id: u64) {
        if let Some(s) = self.map.remove(&id) {
            self.reserved -= s.reserved;
        }
    }

    /// The caller's session `id`; another principal's session is reported as missing.
    pub fn get_mut(&mut self, id: u64, caller: Principal) -> Result<&mut Session, String> {
        match self.map.get_mut(&id) {
            Some(s) if s.owner == caller => Ok(s),
            _ => Err(not_found(id)),
        }
    }

    pub fn get(&self, id: u64, caller: Principal) -> Result<&Session, String> {
        match self.map.get(&id) {
            Some(s) if s.owner == caller => Ok(s),
            _ => Err(not_found(id)),
        }
    }

    pub fn delete(&mut self, id: u64, caller: Principal) -> Result<(), String> {
        self.get(id, caller)?;
        self.remove_entry(id);
        Ok(())
    }

    pub fn owned_by(&self, caller: Principal) -> impl Iterator<Item = &Session> {
        self.map.values().filter(move |s| s.owner == caller)
    }
}

fn not_found(id: u64) -> String {
    format!("no session {id} for this caller (it was deleted, evicted, or belongs to another principal)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(n_ctx: usize) -> Config {
        Config {
            n_layer: 2,
            n_head: 2,
            n_embd: 64,
            n_inner: 256,
            vocab_size: 100,
            n_ctx,
            layer_norm_epsilon: 1e-5,
        }
    }

    fn principal(n: u8) -> Principal {
        Principal::from_slice(&[n; 29])
    }

    #[test]
    fn sessions_are_private_to_their_owner() {
        let mut s = Sessions::default();
        let id = s
            .create(principal(1), SamplingParams::GREEDY, &config(8), KvLayout::F32, 0)
            .unwrap()
            .id;
        assert!(s.get_mut(id, principal(1)).is_ok());
        assert!(s.get_mut(id, principal(2)).err().unwrap().contains("no session"));
        assert!(s.delete(id, principal(2)).is_err());
        assert_eq!(s.len(), 1);
        s.delete(id, principal(1)).unwrap();
        assert_eq!((s.len(), s.reserved_bytes()), (0, 0));
    }

    #[test]
    fn owner_cap_evicts_that_owners_least_recently_used() {
        let mut s = Sessions::default();
        let other = s
            .create(principal(9), SamplingParams::GREEDY, &config(8), KvLayout::F32, 0)
            .unwrap()
            .id;
        let ids: Vec<u64> = (0..MAX_SESSIONS_PER_OWNER as u64)
            .map(|t| {
                s.create(principal(1), SamplingParams::GREEDY, &config(8), KvLayout::F32, 10 + t)
                    .unwrap()
                    .id
            })
            .collect();
        s.get_mut(ids[0], principal(1)).unwrap().last_used_ns = 100;
        s.create(principal(1), SamplingParams::GREEDY, &config(8), KvLayout::F32, 200).unwrap();
        assert!(s.get(ids[1], principal(1)).is_err(), "least recently used is evicted");
        assert!(s.get(ids[0], principal(1)).is_ok());
        assert!(s.get(other, principal(9)).is_ok(), "other owners are untouched");
    }

    #[test]
    fn kv_limit_evicts_globally_and_refuses_oversized_sessions() {
        let mut s = Sessions::default();
        let big = config(
            (KV_LIMIT_BYTES / 3 / KvLayout::F32.bytes_per_token(&config(1)) as u64) as usize,
        );
        let first =
            s.create(principal(1), SamplingParams::GREEDY, &big, KvLayout::F32, 0).unwrap().id;
        s.create(principal(2), SamplingParams::GREEDY, &big, KvLayout::F32, 1).unwrap();
        s.create(principal(3), SamplingParams::GREEDY, &big, KvLayout::F32, 2).unwrap();
        s.create(principal(4), SamplingParams::GREEDY, &big, KvLayout::F32, 3).unwrap();
        assert!(s.get(first, principal(1)).is_err());
        assert!(s.reserved_bytes() <= KV_LIMIT_BYTES);
        let huge = config(KV_LIMIT_BYTES as usize);
        assert!(s
            .create(principal(5), SamplingParams::GREEDY, &huge, KvLayout::F32, 4)
            .err()
            .unwrap()
            .contains("limit"));
    }
}
