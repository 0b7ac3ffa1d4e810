//! Loading the uploaded file into the heap, tensor by tensor, spread over as many
//! messages as the instruction limit requires.

use gpt2_engine::safetensors::{header_len, parse_header};
use gpt2_engine::{LoadPlan, Model, ModelBuilder};

use crate::api::{Error, LoadProgress};
use crate::stable::Stable;
use crate::upload::UploadRecord;

/// A first guess at the cost of reading, converting and packing one byte of weights,
/// replaced by the measured rate after the first tensor.
const INITIAL_INSTRUCTIONS_PER_BYTE: u64 = 50;
/// Stable-memory bytes read per message, under the IC's 2 GiB limit for updates.
pub const MAX_READ_PER_CALL: u64 = 1 << 30;
/// The same for `post_upgrade`, under the IC's 8 GiB limit there.
pub const MAX_READ_PER_UPGRADE: u64 = 6 << 30;
/// Instructions `post_upgrade` may spend checking the file's sha256 (~78 per byte: 39B
/// for GPT-2 124M in f32) and loading, under the IC's 300B limit for upgrades.
pub const UPGRADE_BUDGET: u64 = 250_000_000_000;

pub struct Loading {
    plan: LoadPlan,
    builder: ModelBuilder,
    next: usize,
    loaded_bytes: u64,
    instructions_per_byte: u64,
}

impl Loading {
    /// Reads and validates the file's header; no weight is read yet.
    pub fn start(upload: &UploadRecord, stable: &impl Stable) -> Result<Loading, Error> {
        if !upload.complete {
            return Err(Error::UploadIncomplete {
                received: upload.received,
                size: upload.declared.as_ref().map(|d| d.size),
            });
        }
        let file_len = upload.received;
        let mut first8 = [0u8; 8];
        upload.read_file(stable, 0, &mut first8)?;
        let n = header_len(&first8, file_len)?;
        let mut json = vec![0u8; usize::try_from(n).map_err(|_| too_big(n))?];
        upload.read_file(stable, 8, &mut json)?;
        let header = parse_header(&json, file_len)?;
        let plan = LoadPlan::new(&header)?;
        let builder = ModelBuilder::new(&plan);
        Ok(Loading {
            plan,
            builder,
            next: 0,
            loaded_bytes: 0,
            instructions_per_byte: INITIAL_INSTRUCTIONS_PER_BYTE,
        })
    }

    pub fn plan(&self) -> &LoadPlan {
        &self.plan
    }

    pub fn is_done(&self) -> bool {
        self.next == self.plan.steps.len()
    }

    /// Loads tensors until done, or until the next one would take `counter()` past
    /// `budget` or the bytes read past `max_read` (at least one tensor per call, so loading
    /// always advances). On `Err` the progress is as before the call (tensors added to the
    /// builder meanwhile are simply added again by the next call).
    pub fn advance(
        &mut self,
        upload: &UploadRecord,
        stable: &impl Stable,
        counter: &dyn Fn() -> u64,
        budget: u64,
        max_read: u64,
    ) -> Result<(), Error> {
        let (next, loaded_bytes) = (self.next, self.loaded_bytes);
        let result = self.advance_from_here(upload, stable, counter, budget, max_read);
        if result.is_err() {
            (self.next, self.loaded_bytes) = (next, loaded_bytes);
        }
        result
    }

    fn advance_from_here(
        &mut self,
        upload: &UploadRecord,
        stable: &impl Stable,
        counter: &dyn Fn() -> u64,
        budget: u64,
        max_read: u64,
    ) -> Result<(), Error> {
        let mut read = 0u64;
        while let Some(step) = self.plan.steps.get(self.next) {
            let bytes = step.tensor.len();
            let before = counter();
            let over_budget =
                before.saturating_add(bytes.saturating_mul(self.instructions_per_byte)) > budget;
            if read > 0 && (over_budget || read.saturating_add(bytes) > max_read) {
                break;
            }
            let mut buf = vec![0u8; usize::try_from(bytes).map_err(|_| too_big(bytes))?];
            upload.read_file(stable, step.tensor.start, &mut buf)?;
            self.builder.add(step, &buf)?;
            if let Some(per_byte) = counter().saturating_sub(before).checked_div(bytes) {
                self.instructions_per_byte = per_byte.max(1).saturating_mul(5) / 4;
            }
            self.loaded_bytes = self.loaded_bytes.saturating_add(bytes);
            self.next += 1;
            read = read.saturating_add(bytes.max(1));
        }
        Ok(())
    }

    pub fn progress(&self, instructions: u64) -> LoadProgress {
        LoadProgress {
            loaded_tensors: self.next as u32,
            total_tensors: self.plan.steps.len() as u32,
            loaded_bytes: self.loaded_bytes,
            total_bytes: self.plan.total_bytes(),
            done: self.is_done(),
            instructions,
        }
    }

    pub fn finish(self) -> Result<Model, Error> {
        Ok(self.builder.finish()?)
    }
}

fn too_big(bytes: u64) -> Error {
    Error::InvalidModel(format!("a {bytes}-byte tensor or header is too big for this canister"))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use gpt2_engine::{load_model, KvCache, Portable};

    use super::*;
    use crate::api::UploadBegin;
    use crate::sha256::hex;
    use crate::stable::MemStable;

    fn uploaded(file: &[u8]) -> (UploadRecord, MemStable) {
        use sha2::Digest;
        let mut stable = MemStable::default();
        let mut upload = UploadRecord::default();
        let sha256 = hex(&sha2::Sha256::digest(file));
        upload.begin(UploadBegin { size: file.len() as u64, sha256 }).unwrap();
        upload.append(&mut stable, 0, file).unwrap();
        upload.finalize().unwrap();
        (upload, stable)
    }

    #[test]
    fn a_model_over_the_per_call_limits_loads_over_several_calls() {
        let file = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../engine/tests/fixtures/small64/model.safetensors"
        ))
        .unwrap();
        let (upload, stable) = uploaded(&file);
        // An instruction counter that advances with every read, as in a real message.
        let used = Cell::new(0u64);
        let counter = || {
            used.set(used.get() + 1_000_000);
            used.get()
        };
        let mut loading = Loading::start(&upload, &stable).unwrap();
        let mut calls = 0;
        while !loading.is_done() {
            used.set(0);
            let before = loading.progress(0).loaded_tensors;
            loading.advance(&upload, &stable, &counter, 3_000_000, 200_000).unwrap();
            assert!(loading.progress(0).loaded_tensors > before, "every call advances");
            calls += 1;
        }
        assert!(calls > 5, "{calls} calls");
        let model = loading.finish().unwrap();
        let reference = load_model(&file).unwrap();
        let run = |m: &gpt2_engine::Model| {
            let hidden = m.forward(&Portable, &mut KvCache::new(&m.config), &[1, 2, 3]).unwrap();
            m.logits(&Portable, &hidden)
        };
        assert_eq!(run(&model), run(&reference));
    }

    #[test]
    fn loading_needs_a_complete_upload() {
        let (mut upload, stable) = uploaded(b"12345678");
        upload.complete = false;
        assert!(matches!(
            Loading::start(&upload, &stable).err().unwrap(),
            Error::UploadIncomplete { .. }
        ));
    }
}
