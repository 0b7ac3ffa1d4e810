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
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State {
        upload: UploadRecord::default(),
        loading: None,
        model: None,
        sessions: Sessions::default(),
    });
}

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

fn instructions() -> u64 {
    ic_cdk::api::performance_counter(0)
}

fn require_controller() -> Result<(), String> {
    let caller = ic_cdk::api::msg_caller();
    if ic_cdk::api::is_controller(&caller) {
        Ok(())
    } else {
        Err(format!("only a controller of this canister may do this; {caller} is not one"))
    }
}

/// Session methods need a caller identity to own the session.
fn session_caller() -> Result<Principal, String> {
    let caller = ic_cdk::api::msg_caller();
    if caller == Principal::anonymous() {
        Err("sessions need an identity: the anonymous principal cannot own one".into())
    } else {
        Ok(caller)
    }
}

/// Persists the upload record; a failure here must undo the whole message.
fn save_upload(upload: &UploadRecord) {
    if let Err(e) = upload.write(&mut IcStable) {
        ic_cdk::trap(e);
    }
}

fn unload(state: &mut State) {
    state.model = None;
    state.loading = None;
    state.sessions.clear();
}

fn model(state: &State) -> Result<&Model, String> {
    state.model.as_ref().ok_or_else(|| match &state.loading {
        Some(l) => format!(
            "the model is still loading ({} of {} tensors): call load_model again",
            l.progress(0).loaded_tensors,
            l.progress(0).total_tensors
        ),
        None => {
            "no model is loaded: upload a model file, then call load_model (or setup_model)".into()
        }
    })
}

// ---------------------------------------------------------------- lifecycle

#[ic_cdk::init]
fn init() {}

#[ic_cdk::post_upgrade]
fn post_upgrade() {
    let upload = UploadRecord::read(&IcStable).unwrap_or_else(|e| ic_cdk::trap(e));
    let reload = upload.load_on_upgrade;
    with_state(|s| s.upload = upload);
    if reload {
        // An upgrade may use far more instructions than an update; a failure leaves the
        // canister running without a model rather than failing the upgrade.
        if let Err(e) = load_step(u64::MAX, loading::MAX_READ_PER_UPGRADE) {
            ic_cdk::api::debug_print(format!("model not reloaded after upgrade: {e}"));
        }
    }
}

// ---------------------------------------------------------------- upload

#[ic_cdk::update]
fn upload_begin(args: UploadBegin) -> Result<UploadState, String> {
    require_controller()?;
    with_state(|s| {
        if s.upload.begin(args)? {
            unload(s);
        }
        save_upload(&s.upload);
        Ok(s.upload.state(s.model.is_some()))
    })
}

#[ic_cdk::update]
fn upload_chunk(chunk: UploadChunk) -> Result<UploadState, String> {
    require_controller()?;
    with_state(|s| {
        s.upload.append(&mut IcStable, chunk.offset, &chunk.data)?;
        save_upload(&s.upload);
        Ok(s.upload.state(s.model.is_some()))
    })
}

#[ic_cdk::update]
fn upload_finalize() -> Result<UploadState, String> {
    require_controller()?;
    with_state(|s| {
        s.upload.finalize()?;
        save_upload(&s.upload);
        Ok(s.upload.state(s.model.is_some()))
    })
}

#[ic_cdk::query]
fn upload_state() -> UploadState {
    with_state(|s| s.upload.state(s.model.is_some()))
}

fn clear_upload() -> Result<(), String> {
    require_controller()?;
    with_state(|s| {
        s.upload = UploadRecord::default();
        unload(s);
        save_upload(&s.upload);
    });
    Ok(())
}

#[ic_cdk::update]
fn upload_clear() -> Result<(), String> {
    clear_upload()
}

// ---------------------------------------------------------------- loading

/// Loads tensors until `budget` instructions are used; returns the progress.
fn load_step(budget: u64, max_read: u64) -> Result<LoadProgress, String> {
    with_state(|s| {
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
        loading.advance(&s.upload, &IcStable, &instructions, budget, max_read)?;
        let progress = loading.progress(instructions());
        if loading.is_done() {
            s.sessions.clear();
            s.model = Some(loading.finish()?);
            s.upload.load_on_upgrade = true;
            save_upload(&s.upload);
        } else {
            s.loading = Some(loading);
        }
        Ok(progress)
    })
}

/// Parses the uploaded file and loads its weights into the heap. A model too big for one
/// message loads over several calls: call again until `done`.
#[ic_cdk::update]
fn load_model() -> Result<LoadProgress, String> {
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
            upload: s.upload.state(s.model.is_some()),
            loading: s.loading.as_ref().map(|l| l.progress(0)),
            sessions: s.sessions.len() as u32,
            kv_bytes_reserved: s.sessions.reserved_bytes(),
            kv_bytes_limit: sessions::KV_LIMIT_BYTES,
        }
    })
}

// ---------------------------------------------------------------- sessions

#[ic_cdk::update]
fn session_create(sampling: Sampling) -> Result<SessionInfo, String> {
    let caller = session_caller()?;
    let params = from_api(sampling)?;
    with_state(|s| {
        let m = model(s)?;
        let (config, layout) = (m.config.clone(), m.kv_layout());
        let session = s.sessions.create(caller, params, &config, layout, ic_cdk::api::time())?;
        Ok(session.info(&config))
    })
}

#[ic_cdk::update]
fn session_prefill(args: PrefillArgs) -> Result<PrefillReply, String> {
    let caller = session_caller()?;
    with_state(|s| {
        let model = s.model.as_ref().ok_or_else(|| "no model is loaded".to_string())?;
        let session = s.sessions.get_mut(args.session, caller)?;
        session.last_used_ns = ic_cdk::api::time();
        generation::prefill(model, session, &args, &instructions)
    })
}

#[ic_cdk::update]
fn session_generate(args: GenerateArgs) -> Result<GenerateReply, String> {
    let caller = session_caller()?;
    with_state(|s| {
        let model = s.model.as_ref().ok_or_else(|| "no model is loaded".to_string())?;
        let session = s.sessions.get_mut(args.session, caller)?;
        session.last_used_ns = ic_cdk::api::time();
        generation::generate(model, session, &args, &instructions)
    })
}

#[ic_cdk::query]
fn session_info(id: u64) -> Result<SessionInfo, String> {
    let caller = session_caller()?;
    with_state(|s| {
        let config = &model(s)?.config;
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
fn session_truncate(id: u64, position: u32) -> Result<SessionInfo, String> {
    let caller = session_caller()?;
    with_state(|s| {
        let config = model(s)?.config.clone();
        let session = s.sessions.get_mut(id, caller)?;
        if position as usize > session.tokens.len() {
            return Err(format!(
                "session {id} has only {} tokens; cannot truncate to {position}",
                session.tokens.len()
            ));
        }
        session.truncate(position as usize);
        Ok(session.info(&config))
    })
}

#[ic_cdk::update]
fn session_delete(id: u64) -> Result<(), String> {
    let caller = session_caller()?;
    with_state(|s| s.sessions.delete(id, caller))
}

// ---------------------------------------------------------------- the seed's methods

/// Appends a chunk to the upload (the seed's `ic-file-uploader` flow).
#[ic_cdk::update]
fn upload_model_bytes_chunks(bytes: serde_bytes::ByteBuf) {
    let result = require_controller().and_then(|_| {
        with_state(|s| {
            let at = s.upload.received;
            s.upload.append(&mut IcStable, at, &bytes)?;
            save_upload(&s.upload);
            Ok(())
        })
    });
    if let Err(e) = result {
        ic_cdk::trap(e);
    }
}

/// Bytes received so far: where an interrupted upload resumes.
#[ic_cdk::query]
fn upload_wasm_ref_cell_length() -> u64 {
    with_state(|s| s.upload.received)
}

/// Marks the upload complete. Chunks already live in stable memory, so nothing is copied.
#[ic_cdk::update]
fn upload_wasm_ref_cell_to_stable() {
    let result = require_controller().and_then(|_| {
        with_state(|s| {
            s.upload.finalize()?;
            save_upload(&s.upload);
            Ok(())
        })
    });
    if let Err(e) = result {
        ic_cdk::trap(e);
    }
}

#[ic_cdk::update]
fn upload_wasm_ref_cell_clear() {
    if let Err(e) = clear_upload() {
        ic_cdk::trap(e);
    }
}

/// Loads the uploaded model (completing a seed-style upload first).
#[ic_cdk::update]
fn setup_model() -> Result<LoadProgress, String> {
    require_controller()?;
    with_state(|s| {
        if !s.upload.complete && s.upload.declared.is_none() {
            s.upload.finalize()?;
            save_upload(&s.upload);
        }
        Ok::<(), String>(())
    })?;
    load_step(generation::DEFAULT_BUDGET, loading::MAX_READ_PER_CALL)
}

/// Greedy continuation of `prompt` by up to `max_new_tokens`, stopping at end-of-text.
#[ic_cdk::update]
fn model_inference(max_new_tokens: u8, prompt: Vec<i64>) -> Result<Vec<i64>, String> {
    with_state(|s| {
        let model = model(s)?;
        generation::seed_inference(model, max_new_tokens, &prompt, &instructions)
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
