//! Loading the uploaded file into the heap, tensor by tensor, spread over as many
//! messages as the instruction limit requires.

use gpt2_engine::safetensors::{header_len, parse_header};
use gpt2_engine::{LoadPlan, Model, ModelBuilder};

use crate::api::LoadProgress;
use crate::stable::Stable;
use crate::upload::UploadRecord;

/// A first guess at the cost of reading, converting and packing one byte of weights,
/// replaced by the measured rate after the first tensor.
const INITIAL_INSTRUCTIONS_PER_BYTE: u64 = 50;

pub struct Loading {
    plan: LoadPlan,
    builder: ModelBuilder,
    next: usize,
    loaded_bytes: u64,
    instructions_per_byte: u64,
}

impl Loading {
    /// Reads and validates the file's header; no weight is read yet.
    pub fn start(upload: &UploadRecord, stable: &impl Stable) -> Result<Loading, String> {
        if !upload.complete {
            return Err(format!(
                "the upload is not complete ({} bytes received); finish and finalize it first",
                upload.received
            ));
        }
        let file_len = upload.received;
        let mut first8 = [0u8; 8];
        upload.read_file(stable, 0, &mut first8)?;
        let n = header_len(&first8, file_len).map_err(|e| e.to_string())?;
        let mut json = vec![0u8; n as usize];
        upload.read_file(stable, 8, &mut json)?;
        let header = parse_header(&json, file_len).map_err(|e| e.to_string())?;
        let plan = LoadPlan::new(&header).map_err(|e| e.to_string())?;
        let builder = ModelBuilder::new(&plan);
        Ok(Loading { plan, builder, next: 0, loaded_bytes: 0, instructions_per_byte: INITIAL_INSTRUCTIONS_PER_BYTE })
    }

    pub fn plan(&self) -> &LoadPlan {
        &self.plan
    }

    pub fn is_done(&self) -> bool {
        self.next == self.plan.steps.len()
    }

    /// Loads tensors until done or until the next one would take `counter()` past `budget`
    /// (at least one tensor per call, so loading always advances).
    pub fn advance(
        &mut self,
        upload: &UploadRecord,
        stable: &impl Stable,
        counter: &dyn Fn() -> u64,
        budget: u64,
    ) -> Result<(), String> {
        let mut first = true;
        while let Some(step) = self.plan.steps.get(self.next) {
            let bytes = step.tensor.len();
            let before = counter();
            if !first && before + bytes * self.instructions_per_byte > budget {
                break;
            }
            let mut buf = vec![0u8; bytes as usize];
            upload.read_file(stable, step.tensor.start, &mut buf)?;
            self.builder.add(step, &buf).map_err(|e| e.to_string())?;
            if bytes > 0 {
                self.instructions_per_byte = ((counter() - before) / bytes).max(1) * 5 / 4;
            }
            self.loaded_bytes += bytes;
            self.next += 1;
            first = false;
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

    pub fn finish(self) -> Result<Model, String> {
        self.builder.finish().map_err(|e| e.to_string())
    }
}
