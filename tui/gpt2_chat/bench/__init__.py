"""`gpt2-chat bench`: IC instructions per token, tokens per update call and wall-clock speed of
the canister on GPT-2-shaped random checkpoints, beside a native runtime.

- `models`: deterministic random checkpoints, written canister-ready (f32 or int8);
- `canister_runs`: calls to the shipped wasm in the embedded runtime, metered;
- `tables`: the cost model and the seed's tables read off it;
- `native`: the reference runtime (onnxruntime, else numpy), one thread;
- `report`: JSON, markdown and the PNG plot; `machine`: what it ran on;
- `run`: the whole run, as `gpt2-chat bench` does it.
"""
