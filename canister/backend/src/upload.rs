//! The model upload: chunks written straight to stable memory, offset-checked so retries
//! are harmless, hashed as they arrive, and a record of it all that survives upgrades.

use candid::{CandidType, Decode, Encode};
use serde::Deserialize;

use crate::api::{Error, StableDamage, UploadBegin, UploadState};
use crate::sha256::{hex, Sha256State};
use crate::stable::{Stable, DATA_START};

/// Room for the record's encoding in its page, after the 4-byte length.
const RECORD_ROOM: u64 = DATA_START - 4;

#[derive(CandidType, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct UploadRecord {
    pub received: u64,
    pub declared: Option<UploadBegin>,
    hasher: Sha256State,
    /// Digest of the whole file, set when the upload is complete.
    pub sha256: Option<String>,
    pub complete: bool,
    /// A model was loaded from this file: load it again after an upgrade.
    pub load_on_upgrade: bool,
}

impl UploadRecord {
    /// Reads the record from stable memory. An empty memory holds an empty upload; a
    /// record that is unreadable or describes more bytes than stable memory holds is
    /// reported as damage, never a trap.
    pub fn read(stable: &impl Stable) -> Result<UploadRecord, StableDamage> {
        let size = stable.size();
        if size == 0 {
            return Ok(UploadRecord::default());
        }
        if size < DATA_START {
            return Err(StableDamage::Truncated { stable_bytes: size, needed_bytes: DATA_START });
        }
        let mut len = [0u8; 4];
        stable.read(0, &mut len);
        let len = u64::from(u32::from_le_bytes(len));
        if len == 0 {
            return Ok(UploadRecord::default());
        }
        if len > RECORD_ROOM {
            return Err(StableDamage::UnreadableRecord);
        }
        let mut bytes = vec![0u8; len as usize];
        stable.read(4, &mut bytes);
        let record = Decode!(&bytes, UploadRecord).map_err(|_| StableDamage::UnreadableRecord)?;
        if !record.is_consistent() {
            return Err(StableDamage::UnreadableRecord);
        }
        let needed =
            DATA_START.checked_add(record.received).ok_or(StableDamage::UnreadableRecord)?;
        if needed > size {
            return Err(StableDamage::Truncated { stable_bytes: size, needed_bytes: needed });
        }
        Ok(record)
    }

    /// The invariants every record this code writes keeps.
    fn is_consistent(&self) -> bool {
        let within_declared = self.declared.as_ref().is_none_or(|d| self.received <= d.size);
        let digest_iff_complete = self.sha256.is_some() == self.complete;
        self.hasher.is_consistent_with(self.received)
            && within_declared
            && digest_iff_complete
            && (!self.load_on_upgrade || self.complete)
    }

    pub fn write(&self, stable: &mut impl Stable) -> Result<(), Error> {
        let bytes = Encode!(self)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode the upload record: {e}")))?;
        assert!(bytes.len() as u64 <= RECORD_ROOM, "upload record outgrew its page");
        stable.grow_to(DATA_START)?;
        stable.write(0, &(bytes.len() as u32).to_le_bytes());
        stable.write(4, &bytes);
        Ok(())
    }

    pub fn state(&self, loaded: bool, damage: Option<StableDamage>) -> UploadState {
        UploadState {
            received_bytes: self.received,
            declared_size: self.declared.as_ref().map(|d| d.size),
            declared_sha256: self.declared.as_ref().map(|d| d.sha256.clone()),
            sha256: self.sha256.clone(),
            complete: self.complete,
            loaded,
            damage,
        }
    }

    /// Declares the file to come. The same declaration again is a no-op (a resumed
    /// upload); a different one starts over. Returns whether anything was reset.
    pub fn begin(&mut self, args: UploadBegin) -> Result<bool, Error> {
        let sha = args.sha256.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidArgument(format!(
                "sha256 {:?} is not 64 hex digits",
                args.sha256
            )));
        }
        if args.size < 8 {
            return Err(Error::InvalidArgument(format!(
                "a {}-byte file cannot be a safetensors model",
                args.size
            )));
        }
        let declared = UploadBegin { size: args.size, sha256: sha };
        if self.declared.as_ref() == Some(&declared) {
            return Ok(false);
        }
        *self = UploadRecord { declared: Some(declared), ..UploadRecord::default() };
        Ok(true)
    }

    /// Writes `data` at `offset`. A chunk that repeats bytes already received (a retry)
    /// is accepted once; a gap, or an overlap with different bytes, is refused. Checks
    /// everything before writing, so an `Err` changes nothing.
    pub fn append(
        &mut self,
        stable: &mut impl Stable,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Error> {
        let received = self.received;
        if self.complete {
            return Err(Error::UploadComplete);
        }
        if offset > received {
            return Err(Error::Gap { expected: received });
        }
        let overlap = usize::try_from(received - offset).unwrap_or(usize::MAX).min(data.len());
        if overlap > 0 {
            let mut stored = vec![0u8; overlap];
            stable.read(DATA_START + offset, &mut stored);
            if stored != data[..overlap] {
                return Err(Error::ChunkMismatch { expected: received });
            }
        }
        let new = &data[overlap..];
        if new.is_empty() {
            return Ok(());
        }
        let too_big = || Error::OutOfMemory(format!("a file over {} bytes", u64::MAX - DATA_START));
        let end = received.checked_add(new.len() as u64).ok_or_else(too_big)?;
        if let Some(d) = &self.declared {
            if end > d.size {
                return Err(Error::PastDeclaredSize { size: d.size });
            }
        }
        stable.grow_to(DATA_START.checked_add(end).ok_or_else(too_big)?)?;
        stable.write(DATA_START + received, new);
        self.hasher.update(new);
        self.received = end;
        Ok(())
    }

    /// Marks the upload complete after checking it against the declaration, if any.
    pub fn finalize(&mut self) -> Result<(), Error> {
        if self.complete {
            return Ok(());
        }
        let digest = hex(&self.hasher.finish());
        match &self.declared {
            Some(d) if self.received != d.size => {
                return Err(Error::UploadIncomplete {
                    received: self.received,
                    size: Some(d.size),
                });
            }
            Some(d) if digest != d.sha256 => {
                return Err(Error::Sha256Mismatch { received: digest, declared: d.sha256.clone() });
            }
            None if self.received == 0 => {
                return Err(Error::UploadIncomplete { received: 0, size: None })
            }
            _ => {}
        }
        self.sha256 = Some(digest);
        self.complete = true;
        Ok(())
    }

    /// Reads `buf.len()` file bytes starting at `offset`.
    pub fn read_file(
        &self,
        stable: &impl Stable,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), Error> {
        let end = offset.checked_add(buf.len() as u64).filter(|&end| end <= self.received);
        if end.is_none() {
            return Err(Error::InvalidModel(format!(
                "the file is truncated: needed {} bytes from byte {offset} of a {}-byte upload",
                buf.len(),
                self.received
            )));
        }
        stable.read(DATA_START + offset, buf);
        Ok(())
    }

    /// sha256 of the stored file, read back from stable memory `step` bytes at a time.
    pub fn hash_stored(&self, stable: &impl Stable, step: usize) -> String {
        let mut hasher = Sha256State::default();
        let mut buf = vec![0u8; step];
        let mut at = 0u64;
        while at < self.received {
            let n = (self.received - at).min(step as u64) as usize;
            stable.read(DATA_START + at, &mut buf[..n]);
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        hex(&hasher.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stable::{MemStable, DATA_START};
    use sha2::Digest;

    fn file() -> Vec<u8> {
        (0..5000u32).map(|i| (i % 251) as u8).collect()
    }

    fn declared(f: &[u8]) -> UploadBegin {
        UploadBegin { size: f.len() as u64, sha256: hex(&sha2::Sha256::digest(f)) }
    }

    #[test]
    fn chunks_resume_retry_and_finalize() {
        let (f, mut s) = (file(), MemStable::default());
        let mut rec = UploadRecord::default();
        assert!(rec.begin(declared(&f)).unwrap());
        rec.append(&mut s, 0, &f[..1000]).unwrap();
        rec.append(&mut s, 0, &f[..1000]).unwrap(); // retried chunk: accepted, nothing added
        assert_eq!(rec.received, 1000);
        rec.append(&mut s, 500, &f[500..2000]).unwrap(); // overlap with equal bytes
        assert_eq!(rec.received, 2000);
        let gap = rec.append(&mut s, 2500, &f[2500..3000]).unwrap_err();
        assert_eq!(gap, Error::Gap { expected: 2000 });
        let mut bad = f[1500..2500].to_vec();
        bad[0] ^= 1;
        let differ = rec.append(&mut s, 1500, &bad).unwrap_err();
        assert_eq!(differ, Error::ChunkMismatch { expected: 2000 });
        assert_eq!(rec.received, 2000);

        // The record survives a restart (upgrade) and the upload resumes where it was.
        rec.write(&mut s).unwrap();
        let mut rec = UploadRecord::read(&s).unwrap();
        assert!(!rec.begin(declared(&f)).unwrap(), "same declaration must not reset");
        assert_eq!(
            rec.finalize().unwrap_err(),
            Error::UploadIncomplete { received: 2000, size: Some(5000) }
        );
        rec.append(&mut s, 2000, &f[2000..]).unwrap();
        assert_eq!(
            rec.append(&mut s, 5000, &[1]).unwrap_err(),
            Error::PastDeclaredSize { size: 5000 }
        );
        rec.finalize().unwrap();
        assert_eq!(rec.sha256.as_deref(), Some(declared(&f).sha256.as_str()));
        let mut back = vec![0u8; 5000];
        rec.read_file(&s, 0, &mut back).unwrap();
        assert_eq!(back, f);
        assert_eq!(rec.append(&mut s, 5000, &[1]).unwrap_err(), Error::UploadComplete);
    }

    #[test]
    fn wrong_sha_is_refused_and_changes_nothing() {
        let (f, mut s) = (file(), MemStable::default());
        let mut rec = UploadRecord::default();
        let mut d = declared(&f);
        d.sha256 = "00".repeat(32);
        rec.begin(d).unwrap();
        rec.append(&mut s, 0, &f).unwrap();
        let before = rec.clone();
        assert!(matches!(rec.finalize().unwrap_err(), Error::Sha256Mismatch { .. }));
        assert_eq!(rec, before);
        assert!(rec
            .begin(UploadBegin { size: 10, sha256: "xyz".into() })
            .unwrap_err()
            .to_string()
            .contains("hex"));
    }

    #[test]
    fn seed_flow_appends_and_finalizes_without_declaration() {
        let (f, mut s) = (file(), MemStable::default());
        let mut rec = UploadRecord::default();
        assert_eq!(
            rec.finalize().unwrap_err(),
            Error::UploadIncomplete { received: 0, size: None }
        );
        for chunk in f.chunks(2000) {
            let at = rec.received;
            rec.append(&mut s, at, chunk).unwrap();
        }
        rec.finalize().unwrap();
        assert_eq!(rec.sha256, Some(declared(&f).sha256));
    }

    #[test]
    fn damaged_stable_memory_is_reported_not_trapped_on() {
        let (f, mut s) = (file(), MemStable::default());
        let mut rec = UploadRecord::default();
        rec.begin(declared(&f)).unwrap();
        rec.append(&mut s, 0, &f).unwrap();
        rec.finalize().unwrap();
        rec.write(&mut s).unwrap();
        assert_eq!(UploadRecord::read(&s).unwrap(), rec);
        assert_eq!(rec.hash_stored(&s, 1000), declared(&f).sha256);

        let mut truncated = MemStable(s.0[..DATA_START as usize + 100].to_vec());
        let needed_bytes = DATA_START + f.len() as u64;
        let damage = StableDamage::Truncated { stable_bytes: DATA_START + 100, needed_bytes };
        assert_eq!(UploadRecord::read(&truncated).unwrap_err(), damage);
        truncated.0.truncate(10);
        assert!(matches!(UploadRecord::read(&truncated), Err(StableDamage::Truncated { .. })));

        for garbage in [[0xffu8; 4], [0x10, 0, 0, 0]] {
            let mut bad = MemStable(s.0.clone());
            bad.0[..4].copy_from_slice(&garbage); // a length past the page, or a cut record
            assert_eq!(UploadRecord::read(&bad).unwrap_err(), StableDamage::UnreadableRecord);
        }
        let mut bad = MemStable(s.0.clone());
        bad.0[4..200].fill(0xA5);
        assert_eq!(UploadRecord::read(&bad).unwrap_err(), StableDamage::UnreadableRecord);
        assert_eq!(UploadRecord::read(&MemStable::default()).unwrap(), UploadRecord::default());
    }
}
