//! The `gpt2_backend` canister: Candid endpoints over the GPT-2 engine.
//!
//! The model file is uploaded in chunks to stable memory (`upload`), loaded into the heap
//! (`loading`), and used by chat sessions that keep a KV cache between calls
//! (`sessions`, `generation`). The seed project's methods keep their signatures and
//! behaviour on top of the same state.

pub mod api;
mod generation;
mod loading;
mod sessions;
mod sha256;
mod stable;
mod upload;

use std::cell::RefCell;

use candid::Principal;
use gpt2_engine::Model;

use api::*;
use loading::Loading;
use sessions::{from_api, Sessions};
use stable::IcStable;
use upload::UploadRecord;

struct State {
    upload: UploadRecord,
    loading: Option<Loading>,
    model: Option<Model>,
    sessions: Sessions,
    /// What was wrong with stable memory at the last start, until `upload_clear` or
    /// `upload_begin` starts afresh.
    damage: Option<StableDamage>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State {
        upload: UploadRecord::default(),
        loading: None,
        model: None,
        sessions: Sessions::default(),
        damage: None,
    });
}

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

fn instructions() -> u64 {
    ic_cdk::api::performance_counter(0)
}

fn require_controller() -> Result<(), Error> {
    if ic_cdk::api::is_controller(&ic_cdk::api::msg_caller()) {
        Ok(())
    } else {
        Err(Error::NotController)
    }
}

/// Session methods need a caller identity to own the session.
fn session_caller() -> Result<Principal, Error> {
    let caller = ic_cdk::api::msg_caller();
    if caller == Principal::anonymous() {
        Err(Error::AnonymousCaller)
    } else {
        Ok(caller)
    }
}

impl State {
    fn upload_state(&self) -> UploadState {
        self.upload.state(self.model.is_some(), self.damage.clone())
    }

    fn model(&self) -> Result<&Model, Error> {
        self.model.as_ref().ok_or_else(|| match &self.loading {
            Some(l) => {
                let p = l.progress(0);
                Error::ModelLoading {
                    loaded_tensors: p.loaded_tensors,
                    total_tensors: p.total_tensors,
                }
            }
            None => Error::NoModel,
        })
    }

    /// Replaces the upload record, in stable memory first. A stable-memory failure is a
    /// trap, so the whole message (and every change it made) is undone.
    fn set_upload(&mut self, upload: UploadRecord) {
        if let Err(e) = upload.write(&mut IcStable) {
            ic_cdk::trap(e.to_string());
        }
        self.upload = upload;
    }

    fn unload(&mut self) {
        self.model = None;
        self.loading = None;
        self.sessions.clear();
    }
}

// ---------------------------------------------------------------- lifecycle

#[ic_cdk::init]
fn init() {}

/// Bytes hashed per stable-memory read when the model file is checked after an upgrade.
const HASH_STEP: usize = 1 << 20;

#[ic_cdk::post_upgrade]
fn post_upgrade() {
    // Damaged stable memory must not trap here: that would lock everyone out. The canister
    // comes up empty and reports the damage until `upload_clear` or `upload_begin`.
    let upload = match UploadRecord::read(&IcStable) {
        Ok(upload) => upload,
        Err(damage) => {
            with_state(|s| s.damage = Some(damage));
            return;
        }
    };
    let reload = upload.load_on_upgrade;
    with_state(|s| s.upload = upload);
    if !reload {
        return;
    }
    if let Err(damage) = verify_stored_model() {
        with_state(|s| s.damage = Some(damage));
        return;
    }
    // An upgrade may use far more instructions than an update; what does not fit goes on
    // in `load_model` calls, and a failure leaves the canister running without a model
    // rather than failing the upgrade.
    if let Err(e) = load_step(loading::UPGRADE_BUDGET, loading::MAX_READ_PER_UPGRADE) {
        ic_cdk::api::debug_print(format!("model not reloaded after upgrade: {e}"));
    }
}

/// The stored file still hashes to the sha256 recorded when its upload completed.
fn verify_stored_model() -> Result<(), StableDamage> {
    with_state(|s| {
        let Some(recorded) = s.upload.sha256.clone() else { return Ok(()) };
        let before = instructions();
        let found = s.upload.hash_stored(&IcStable, HASH_STEP);
        ic_cdk::api::debug_print(format!(
            "sha256 of the {}-byte model checked in {} instructions",
            s.upload.received,
            instructions() - before
        ));
        if found == recorded {
            Ok(())
        } else {
            Err(StableDamage::Sha256Mismatch { recorded, found })
        }
    })
}

// ---------------------------------------------------------------- upload

#[ic_cdk::update]
fn upload_begin(args: UploadBegin) -> Result<UploadState, Error> {
    require_controller()?;
    with_state(|s| {
        // After damage nothing stored is trusted: a declaration starts from scratch.
        let mut upload =
            if s.damage.is_some() { UploadRecord::default() } else { s.upload.clone() };
        if upload.begin(args)? {
            s.unload();
        }
        s.damage = None;
        s.set_upload(upload);
        Ok(s.upload_state())
    })
}

#[ic_cdk::update]
fn upload_chunk(chunk: UploadChunk) -> Result<UploadState, Error> {
    require_controller()?;
    with_state(|s| {
        let mut upload = s.upload.clone();
        upload.append(&mut IcStable, chunk.offset, &chunk.data)?;
        s.set_upload(upload);
        Ok(s.upload_state())
    })
}

#[ic_cdk::update]
fn upload_finalize() -> Result<UploadState, Error> {
    require_controller()?;
    with_state(|s| {
        let mut upload = s.upload.clone();
        upload.finalize()?;
        s.set_upload(upload);
        Ok(s.upload_state())
    })
}

#[ic_cdk::query]
fn upload_state() -> UploadState {
    with_state(|s| s.upload_state())
}

fn clear_upload() -> Result<(), Error> {
    require_controller()?;
    with_state(|s| {
        s.unload();
        s.damage = None;
        s.set_upload(UploadRecord::default());
    });
    Ok(())
}

/// Forgets the upload (and unloads the model); also acknowledges damaged stable memory.
#[ic_cdk::update]
fn upload_clear() -> Result<(), Error> {
    clear_upload()
}

// ---------------------------------------------------------------- loading

/// Loads tensors until `budget` instructions are used; returns the progress. An `Err`
/// leaves the loading progress as it was.
fn load_step(budget: u64, max_read: u64) -> Result<LoadProgress, Error> {
    with_state(|s| {
        if let Some(StableDamage::Sha256Mismatch { recorded, found }) = &s.damage {
            return Err(Error::StoredModelCorrupt {
                recorded: recorded.clone(),
                found: found.clone(),
            });
        }
        if s.model.is_some() && s.loading.is_none() {
            return Ok(LoadProgress {
                loaded_tensors: 0,
                total_tensors: 0,
                loaded_bytes: 0,
                total_bytes: 0,
                done: true,
                instructions: instructions(),
            });
        }
        let mut loading = match s.loading.take() {
            Some(l) => l,
            None => Loading::start(&s.upload, &IcStable)?,
        };
        let advanced = loading.advance(&s.upload, &IcStable, &instructions, budget, max_read);
        if let Err(e) = advanced {
            s.loading = Some(loading).filter(|l| l.progress(0).loaded_tensors > 0);
            return Err(e);
        }
        let progress = loading.progress(instructions());
        if !loading.is_done() {
            s.loading = Some(loading);
            return Ok(progress);
        }
        match loading.finish() {
            Ok(model) => {
                s.sessions.clear();
                s.model = Some(model);
                let mut upload = s.upload.clone();
                upload.load_on_upgrade = true;
                s.set_upload(upload);
                Ok(progress)
            }
            Err(e) => Err(e),
        }
    })
}

/// Parses the uploaded file and loads its weights into the heap. A model too big for one
/// message loads over several calls: call again until `done`.
#[ic_cdk::update]
fn load_model() -> Result<LoadProgress, Error> {
    require_controller()?;
    load_step(generation::DEFAULT_BUDGET, loading::MAX_READ_PER_CALL)
}

#[ic_cdk::query]
fn model_info() -> ModelInfo {
    with_state(|s| {
        let config =
            s.model.as_ref().map(|m| &m.config).or(s.loading.as_ref().map(|l| &l.plan().config));
        ModelInfo {
            loaded: s.model.is_some(),
            config: config.map(|c| ModelConfig {
                n_layer: c.n_layer as u32,
                n_head: c.n_head as u32,
                n_embd: c.n_embd as u32,
                n_inner: c.n_inner as u32,
                vocab_size: c.vocab_size as u32,
                n_ctx: c.n_ctx as u32,
            }),
            dtype: s.model.as_ref().map(|m| m.file_dtype.name().to_string()),
            weights_heap_bytes: s.model.as_ref().map_or(0, |m| m.heap_bytes() as u64),
            upload: s.upload_state(),
            loading: s.loading.as_ref().map(|l| l.progress(0)),
            sessions: s.sessions.len() as u32,
            kv_bytes_reserved: s.sessions.reserved_bytes(),
            kv_bytes_limit: sessions::KV_LIMIT_BYTES,
            cycles: ic_cdk::api::canister_cycle_balance().into(),
        }
    })
}

// ---------------------------------------------------------------- sessions

/// A new chat session owned by the caller. Eviction when full is fair: a principal over its
/// 4 sessions loses its least recently used; when the canister is full (64 sessions or
/// 1 GiB of KV cache) the principal with the most sessions (counting the new one; the
/// creator first on a tie) loses its least recently used, while it holds more than one;
/// when every principal holds one, a session idle for 30 minutes goes, else `SessionsFull`.
#[ic_cdk::update]
fn session_create(sampling: Sampling) -> Result<SessionInfo, Error> {
    let caller = session_caller()?;
    let params = from_api(sampling)?;
    with_state(|s| {
        let m = s.model()?;
        let (config, layout) = (m.config.clone(), m.kv_layout());
        let session = s.sessions.create(caller, params, &config, layout, ic_cdk::api::time())?;
        Ok(session.info(&config))
    })
}

#[ic_cdk::update]
fn session_prefill(args: PrefillArgs) -> Result<PrefillReply, Error> {
    let caller = session_caller()?;
    with_state(|s| {
        let model = s.model.as_ref().ok_or(Error::NoModel)?;
        let session = s.sessions.get_mut(args.session, caller)?;
        let reply = generation::prefill(model, session, &args, &instructions)?;
        session.last_used_ns = ic_cdk::api::time();
        Ok(reply)
    })
}

#[ic_cdk::update]
fn session_generate(args: GenerateArgs) -> Result<GenerateReply, Error> {
    let caller = session_caller()?;
    with_state(|s| {
        let model = s.model.as_ref().ok_or(Error::NoModel)?;
        let session = s.sessions.get_mut(args.session, caller)?;
        let reply = generation::generate(model, session, &args, &instructions)?;
        session.last_used_ns = ic_cdk::api::time();
        Ok(reply)
    })
}

#[ic_cdk::query]
fn session_info(id: u64) -> Result<SessionInfo, Error> {
    let caller = session_caller()?;
    with_state(|s| {
        let config = &s.model()?.config;
        Ok(s.sessions.get(id, caller)?.info(config))
    })
}

#[ic_cdk::query]
fn session_list() -> Vec<SessionInfo> {
    let caller = ic_cdk::api::msg_caller();
    with_state(|s| match &s.model {
        Some(m) => s.sessions.owned_by(caller).map(|x| x.info(&m.config)).collect(),
        None => Vec::new(),
    })
}

/// Rewinds a session to `position` tokens (0 empties it), e.g. to regenerate a reply.
#[ic_cdk::update]
fn session_truncate(id: u64, position: u32) -> Result<SessionInfo, Error> {
    let caller = session_caller()?;
    with_state(|s| {
        let config = s.model()?.config.clone();
        let session = s.sessions.get_mut(id, caller)?;
        if position as usize > session.tokens.len() {
            return Err(Error::InvalidArgument(format!(
                "session {id} has only {} tokens; cannot truncate to {position}",
                session.tokens.len()
            )));
        }
        session.truncate(position as usize);
        Ok(session.info(&config))
    })
}

#[ic_cdk::update]
fn session_delete(id: u64) -> Result<(), Error> {
    let caller = session_caller()?;
    with_state(|s| s.sessions.delete(id, caller))
}

// ---------------------------------------------------------------- the seed's methods

/// Traps with the error's text: the seed's methods have no error in their signature, and
/// a trap undoes the message.
fn or_trap(result: Result<(), Error>) {
    if let Err(e) = result {
        ic_cdk::trap(e.to_string());
    }
}

/// Appends a chunk to the upload (the seed's `ic-file-uploader` flow).
#[ic_cdk::update]
fn upload_model_bytes_chunks(bytes: serde_bytes::ByteBuf) {
    or_trap(require_controller().and_then(|_| {
        with_state(|s| {
            let mut upload = s.upload.clone();
            let at = upload.received;
            upload.append(&mut IcStable, at, &bytes)?;
            s.set_upload(upload);
            Ok(())
        })
    }))
}

/// Bytes received so far: where an interrupted upload resumes.
#[ic_cdk::query]
fn upload_wasm_ref_cell_length() -> u64 {
    with_state(|s| s.upload.received)
}

/// Marks the upload complete. Chunks already live in stable memory, so nothing is copied.
#[ic_cdk::update]
fn upload_wasm_ref_cell_to_stable() {
    or_trap(require_controller().and_then(|_| {
        with_state(|s| {
            let mut upload = s.upload.clone();
            upload.finalize()?;
            s.set_upload(upload);
            Ok(())
        })
    }))
}

#[ic_cdk::update]
fn upload_wasm_ref_cell_clear() {
    or_trap(clear_upload())
}

/// Loads the uploaded model (completing a seed-style upload first). An `Err` changes
/// nothing: a seed-style upload that does not load is left open for more chunks.
#[ic_cdk::update]
fn setup_model() -> Result<LoadProgress, String> {
    require_controller().map_err(|e| e.to_string())?;
    let before = with_state(|s| s.upload.clone());
    if !before.complete && before.declared.is_none() {
        let mut upload = before.clone();
        upload.finalize().map_err(|e| e.to_string())?;
        with_state(|s| s.upload = upload);
    }
    let result = load_step(generation::DEFAULT_BUDGET, loading::MAX_READ_PER_CALL);
    with_state(|s| match &result {
        // The completed seed upload is kept once it loads (or starts loading).
        Ok(_) if s.upload != before => {
            let upload = s.upload.clone();
            s.set_upload(upload);
        }
        Ok(_) => {}
        Err(_) => s.upload = before,
    });
    result.map_err(|e| e.to_string())
}

/// Greedy continuation of `prompt` by up to `max_new_tokens`, stopping at end-of-text.
#[ic_cdk::update]
fn model_inference(max_new_tokens: u8, prompt: Vec<i64>) -> Result<Vec<i64>, String> {
    with_state(|s| {
        let model = s.model().map_err(|e| e.to_string())?;
        generation::seed_inference(model, max_new_tokens, &prompt, &instructions)
            .map_err(|e| e.to_string())
    })
}

// Natively only: the interface test reads it, and the wasm carries the `.did` as
// `candid:service` metadata instead of an extra export.
#[cfg(not(target_arch = "wasm32"))]
ic_cdk::export_candid!();

#[cfg(test)]
mod tests {
    /// The committed interface is exactly what the code exports. To update it after
    /// changing an endpoint: `UPDATE_DID=1 cargo test -p gpt2_backend`.
    #[test]
    fn candid_interface_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../gpt2_backend.did");
        let generated = super::__export_service();
        if std::env::var_os("UPDATE_DID").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "canister/gpt2_backend.did is stale: run UPDATE_DID=1 cargo test -p gpt2_backend"
        );
    }
}
