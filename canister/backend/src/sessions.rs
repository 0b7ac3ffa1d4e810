//! Chat sessions: a KV cache per conversation, owned by the principal that created it,
//! kept in the heap between calls, with caps that evict fairly.
//!
//! Eviction policy: a principal over its own cap loses its least recently used session.
//! When the canister is full (sessions or KV memory), the principal holding the most
//! sessions (counting the one being created; the creator first on a tie) loses its least
//! recently used one, as long as it holds more than one. When every principal holds just
//! one, the least recently used session goes only if it has been idle for
//! `IDLE_EVICTABLE_NS`; otherwise the new session is refused (`SessionsFull`). So a burst
//! of strangers cannot evict a principal's only session while it is in use.

use std::collections::BTreeMap;

use candid::Principal;
use gpt2_engine::{Config, KvCache, KvLayout, SamplingParams};

use crate::api::{Error, Sampling, SessionInfo};

/// Sessions one principal may hold; a new one beyond this evicts its least recently used.
pub const MAX_SESSIONS_PER_OWNER: usize = 4;
/// Sessions in the canister at once.
pub const MAX_SESSIONS: usize = 64;
/// KV memory reserved by all sessions (each reserves a full context up front, so a
/// session never runs out of memory mid-conversation).
pub const KV_LIMIT_BYTES: u64 = 1 << 30;
/// A principal's only session may be evicted for a newcomer once idle this long.
pub const IDLE_EVICTABLE_NS: u64 = 30 * 60 * 1_000_000_000;

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

    /// A session not kept in the canister (the seed's `model_inference` runs in one).
    pub fn detached(
        sampling: SamplingParams,
        config: &Config,
        layout: KvLayout,
    ) -> Result<Session, Error> {
        Ok(Session {
            id: 0,
            owner: Principal::anonymous(),
            tokens: Vec::new(),
            cache: KvCache::try_new(config, layout)?,
            hidden: None,
            sampling,
            last_used_ns: 0,
            last_call: None,
            reserved: 0,
        })
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

pub fn from_api(s: Sampling) -> Result<SamplingParams, Error> {
    let p =
        SamplingParams { temperature: s.temperature, top_k: s.top_k, top_p: s.top_p, seed: s.seed };
    p.validate()?;
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
    ) -> Result<&Session, Error> {
        let reserve = (config.n_ctx as u64).saturating_mul(layout.bytes_per_token(config) as u64);
        if reserve > KV_LIMIT_BYTES {
            return Err(Error::OutOfMemory(format!(
                "one session of this model needs {reserve} bytes of KV cache, over the {KV_LIMIT_BYTES}-byte limit"
            )));
        }
        // Victims are chosen before anything is removed, so a refusal changes nothing.
        let mut victims = Vec::new();
        let owned = self.map.values().filter(|s| s.owner == owner).count();
        if owned >= MAX_SESSIONS_PER_OWNER {
            victims.extend(self.lru(|s| s.owner == owner, &victims));
        }
        loop {
            let (count, reserved) = self.after_removing(&victims);
            if count < MAX_SESSIONS && reserved + reserve <= KV_LIMIT_BYTES {
                break;
            }
            let victim = self
                .fair_victim(owner, now_ns, &victims)
                .ok_or(Error::SessionsFull { limit: MAX_SESSIONS as u32 })?;
            victims.push(victim);
        }
        // Allocated before evicting, so that a heap too small for it changes nothing.
        let cache = KvCache::try_new(config, layout)?;
        for id in victims {
            self.remove_entry(id);
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

    fn after_removing(&self, victims: &[u64]) -> (usize, u64) {
        let gone: u64 = victims.iter().filter_map(|id| self.map.get(id)).map(|s| s.reserved).sum();
        (self.map.len() - victims.len(), self.reserved - gone)
    }

    /// The least recently used session matching `which`, not already in `victims`.
    fn lru(&self, which: impl Fn(&Session) -> bool, victims: &[u64]) -> Option<u64> {
        self.map
            .values()
            .filter(|s| which(s) && !victims.contains(&s.id))
            .min_by_key(|s| (s.last_used_ns, s.id))
            .map(|s| s.id)
    }

    /// The next session to evict for `creator`'s new one (the policy in the module doc).
    fn fair_victim(&self, creator: Principal, now_ns: u64, victims: &[u64]) -> Option<u64> {
        let mut counts: BTreeMap<Principal, usize> = BTreeMap::new();
        for s in self.map.values().filter(|s| !victims.contains(&s.id)) {
            *counts.entry(s.owner).or_default() += 1;
        }
        *counts.entry(creator).or_default() += 1;
        let most = counts.values().copied().max().unwrap_or(0);
        if most > 1 {
            let heaviest = if counts[&creator] == most && counts[&creator] > 1 {
                Some(creator)
            } else {
                let oldest = |p: &Principal| self.lru(|s| s.owner == *p, victims);
                counts
                    .iter()
                    .filter(|(p, &n)| n == most && **p != creator)
                    .min_by_key(|(p, _)| oldest(p).map(|id| (self.map[&id].last_used_ns, id)))
                    .map(|(p, _)| *p)
            };
            if let Some(p) = heaviest {
                return self.lru(|s| s.owner == p, victims);
            }
        }
        let idle_since = now_ns.saturating_sub(IDLE_EVICTABLE_NS);
        self.lru(|s| s.last_used_ns <= idle_since, victims)
    }

    fn remove_entry(&mut self, id: u64) {
        if let Some(s) = self.map.remove(&id) {
            self.reserved -= s.reserved;
        }
    }

    /// The caller's session `id`; another principal's session is reported as missing.
    pub fn get_mut(&mut self, id: u64, caller: Principal) -> Result<&mut Session, Error> {
        match self.map.get_mut(&id) {
            Some(s) if s.owner == caller => Ok(s),
            _ => Err(Error::UnknownSession { session: id }),
        }
    }

    pub fn get(&self, id: u64, caller: Principal) -> Result<&Session, Error> {
        match self.map.get(&id) {
            Some(s) if s.owner == caller => Ok(s),
            _ => Err(Error::UnknownSession { session: id }),
        }
    }

    pub fn delete(&mut self, id: u64, caller: Principal) -> Result<(), Error> {
        self.get(id, caller)?;
        self.remove_entry(id);
        Ok(())
    }

    pub fn owned_by(&self, caller: Principal) -> impl Iterator<Item = &Session> {
        self.map.values().filter(move |s| s.owner == caller)
    }
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
        assert_eq!(s.get_mut(id, principal(2)).err(), Some(Error::UnknownSession { session: id }));
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
            .to_string()
            .contains("limit"));
    }

    #[test]
    fn a_burst_of_strangers_does_not_evict_a_principals_active_session() {
        let mut s = Sessions::default();
        let t0 = 1_700_000_000_000_000_000; // the IC's clock: nanoseconds since 1970
        let create = |s: &mut Sessions, p: u8, after: u64| {
            s.create(principal(p), SamplingParams::GREEDY, &config(8), KvLayout::F32, t0 + after)
                .map(|x| x.id)
        };
        let mine = create(&mut s, 1, 0).unwrap();
        let mut refused = 0;
        for p in 2..72u8 {
            match create(&mut s, p, p as u64) {
                Ok(_) => {}
                Err(Error::SessionsFull { limit }) => {
                    assert_eq!(limit as usize, MAX_SESSIONS);
                    refused += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(s.get(mine, principal(1)).is_ok(), "the owner's session survived");
        assert_eq!((s.len(), refused), (MAX_SESSIONS, 70 - (MAX_SESSIONS - 1)));
        // A stranger holding several sessions loses its own first.
        let newest = (0..3).map(|t| create(&mut s, 2, 100 + t).unwrap()).last().unwrap();
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get(mine, principal(1)).is_ok());
        assert_eq!(s.owned_by(principal(2)).map(|x| x.id).collect::<Vec<_>>(), [newest]);
        // Once idle long enough, a lone session may go to a newcomer.
        let later = IDLE_EVICTABLE_NS + 1_000;
        create(&mut s, 200, later).unwrap();
        assert!(s.get(mine, principal(1)).is_err(), "the idle session was evicted");
    }
}
