//! Stable memory: where the uploaded model file and the upload's bookkeeping live, so both
//! survive upgrades and neither takes heap space.
//!
//! Layout: the first `DATA_START` bytes hold the Candid-encoded upload record (a 4-byte
//! length, then the bytes); the model file follows, byte for byte.

use crate::api::Error;

/// Room reserved for the upload record; the file starts right after.
pub const DATA_START: u64 = 64 * 1024;
const PAGE: u64 = 64 * 1024;

/// The four stable-memory operations the canister needs, so the upload logic can be
/// tested natively against a `Vec<u8>`.
pub trait Stable {
    fn size(&self) -> u64;
    fn grow_to(&mut self, bytes: u64) -> Result<(), Error>;
    fn read(&self, offset: u64, buf: &mut [u8]);
    fn write(&mut self, offset: u64, buf: &[u8]);
}

/// The canister's real stable memory.
pub struct IcStable;

impl Stable for IcStable {
    fn size(&self) -> u64 {
        ic_cdk::stable::stable_size() * PAGE
    }

    fn grow_to(&mut self, bytes: u64) -> Result<(), Error> {
        let have = ic_cdk::stable::stable_size();
        let want = bytes.div_ceil(PAGE);
        if want > have {
            ic_cdk::stable::stable_grow(want - have).map_err(|e| {
                Error::OutOfMemory(format!("cannot grow stable memory to {bytes} bytes: {e:?}"))
            })?;
        }
        Ok(())
    }

    fn read(&self, offset: u64, buf: &mut [u8]) {
        ic_cdk::stable::stable_read(offset, buf)
    }

    fn write(&mut self, offset: u64, buf: &[u8]) {
        ic_cdk::stable::stable_write(offset, buf)
    }
}

/// Heap-backed stable memory for native tests.
#[cfg(test)]
#[derive(Default)]
pub struct MemStable(pub Vec<u8>);

#[cfg(test)]
impl Stable for MemStable {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn grow_to(&mut self, bytes: u64) -> Result<(), Error> {
        let want = (bytes.div_ceil(PAGE) * PAGE) as usize;
        if want > self.0.len() {
            self.0.resize(want, 0);
        }
        Ok(())
    }

    fn read(&self, offset: u64, buf: &mut [u8]) {
        buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
    }

    fn write(&mut self, offset: u64, buf: &[u8]) {
        self.0[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
    }
}
