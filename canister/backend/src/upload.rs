//! The model upload: chunks written straight to stable memory, offset-checked so retries
//! are harmless, hashed as they arrive, and a record of it all that survives upgrades.

use candid::{CandidType, Decode, Encode};
use serde::Deserialize;

use crate::api::{UploadBegin, UploadState};
use crate::sha256::{hex, Sha256State};
use crate::stable::{Stable, DATA_START};

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
    /// Reads the record from stable memory (an empty memory holds an empty upload).
    pub fn read(stable: &impl Stable) -> Result<UploadRecord, String> {
        if stable.size() < DATA_START {
            return Ok(UploadRecord::default());
        }
        let mut len = [0u8; 4];
        stable.read(0, &mut len);
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 {
            return Ok(UploadRecord::default());
        }
        let mut bytes = vec![0u8; len];
        stable.read(4, &mut bytes);
        Decode!(&bytes, UploadRecord)
            .map_err(|e| format!("upload record in stable memory is unreadable: {e}"))
    }

    pub fn write(&self, stable: &mut impl Stable) -> Result<(), String> {
        let bytes = Encode!(self).map_err(|e| format!("cannot encode the upload record: {e}"))?;
        assert!(bytes.len() + 4 <= DATA_START as usize, "upload record outgrew its page");
        stable.grow_to(DATA_START)?;
        stable.write(0, &(bytes.len() as u32).to_le_bytes());
        stable.write(4, &bytes);
        Ok(())
    }

    pub fn state(&self, loaded: bool) -> UploadState {
        UploadState {
            received_bytes: self.received,
            declared_size: self.declared.as_ref().map(|d| d.size),
            declared_sha256: self.declared.as_ref().map(|d| d.sha256.clone()),
            sha256: self.sha256.clone(),
            complete: self.complete,
            loaded,
        }
    }

    /// Declares the file to come. The same declaration again is a no-op (a resumed
    /// upload); a different one starts over. Returns whether anything was reset.
    pub fn begin(&mut self, args: UploadBegin) -> Result<bool, String> {
        let sha = args.sha256.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("sha256 {:?} is not 64 hex digits", args.sha256));
        }
        if args.size < 8 {
            return Err(format!("a {}-byte file cannot be a safetensors model", args.size));
        }
        let declared = UploadBegin { size: args.size, sha256: sha };
        if self.declared.as_ref() == Some(&declared) {
            return Ok(false);
        }
        *self = UploadRecord { declared: Some(declared), ..UploadRecord::default() };
        Ok(true)
    }

    /// Writes `data` at `offset`. A chunk that repeats bytes already received (a retry)
    /// is accepted once; a gap, or an overlap with different bytes, is refused.
    pub fn append(
        &mut self,
        stable: &mut impl Stable,
        offset: u64,
        data: &[u8],
    ) -> Result<(), String> {
        let received = self.received;
        if self.complete {
            return Err(format!(
                "the upload is complete ({received} bytes); begin a new upload or clear it first"
            ));
        }
        if offset > received {
            return Err(format!(
                "chunk at offset {offset} leaves a gap: expected offset {received}"
            ));
        }
        let overlap = ((received - offset) as usize).min(data.len());
        if overlap > 0 {
            let mut stored = vec![0u8; overlap];
            stable.read(DATA_START + offset, &mut stored);
            if stored != data[..overlap] {
                return Err(format!(
                    "chunk at offset {offset} differs from the bytes already received: expected offset {received}"
                ));
            }
        }
        let new = &data[overlap..];
        if new.is_empty() {
            return Ok(());
        }
        let end = received + new.len() as u64;
        if let Some(d) = &self.declared {
            if end > d.size {
                return Err(format!("chunk ends at byte {end}, past the declared size {}", d.size));
            }
        }
        stable.grow_to(DATA_START + end)?;
        stable.write(DATA_START + received, new);
        self.hasher.update(new);
        self.received = end;
        Ok(())
    }

    /// Marks the upload complete after checking it against the declaration, if any.
    pub fn finalize(&mut self) -> Result<(), String> {
        if self.complete {
            return Ok(());
        }
        let digest = hex(&self.hasher.finish());
        match &self.declared {
            Some(d) if self.received != d.size => {
                return Err(format!(
                    "upload incomplete: received {} of {} bytes",
                    self.received, d.size
                ));
            }
            Some(d) if digest != d.sha256 => {
                return Err(format!(
                    "sha256 mismatch: the received bytes hash to {digest}, but {} was declared; \
                     clear the upload and send the file again",
                    d.sha256
                ));
            }
            None if self.received == 0 => return Err("nothing has been uploaded".into()),
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
    ) -> Result<(), String> {
        if offset + buf.len() as u64 > self.received {
            return Err(format!(
                "model file is truncated: needed bytes {offset}..{} of a {}-byte upload",
                offset + buf.len() as u64,
                self.received
            ));
        }
        stable.read(DATA_START + offset, buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stable::MemStable;
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
        assert!(gap.contains("expected offset 2000"), "{gap}");
        let mut bad = f[1500..2500].to_vec();
        bad[0] ^= 1;
        let differ = rec.append(&mut s, 1500, &bad).unwrap_err();
        assert!(differ.contains("differs") && differ.contains("expected offset 2000"), "{differ}");
        assert_eq!(rec.received, 2000);

        // The record survives a restart (upgrade) and the upload resumes where it was.
        rec.write(&mut s).unwrap();
        let mut rec = UploadRecord::read(&s).unwrap();
        assert!(!rec.begin(declared(&f)).unwrap(), "same declaration must not reset");
        assert!(rec.finalize().unwrap_err().contains("received 2000 of 5000"));
        rec.append(&mut s, 2000, &f[2000..]).unwrap();
        assert!(rec.append(&mut s, 5000, &[1]).unwrap_err().contains("past the declared size"));
        rec.finalize().unwrap();
        assert_eq!(rec.sha256.as_deref(), Some(declared(&f).sha256.as_str()));
        let mut back = vec![0u8; 5000];
        rec.read_file(&s, 0, &mut back).unwrap();
        assert_eq!(back, f);
        assert!(rec.append(&mut s, 5000, &[1]).unwrap_err().contains("complete"));
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
        assert!(rec.finalize().unwrap_err().contains("sha256 mismatch"));
        assert_eq!(rec, before);
        assert!(rec
            .begin(UploadBegin { size: 10, sha256: "xyz".into() })
            .unwrap_err()
            .contains("hex"));
    }

    #[test]
    fn seed_flow_appends_and_finalizes_without_declaration() {
        let (f, mut s) = (file(), MemStable::default());
        let mut rec = UploadRecord::default();
        assert!(rec.finalize().unwrap_err().contains("nothing"));
        for chunk in f.chunks(2000) {
            let at = rec.received;
            rec.append(&mut s, at, chunk).unwrap();
        }
        rec.finalize().unwrap();
        assert_eq!(rec.sha256, Some(declared(&f).sha256));
    }
}
