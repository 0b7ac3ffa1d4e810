"""`gpt2-chat bench`: IC instructions per token, tokens per update call and wall-clock speed of
the canister on GPT-2-shaped random checkpoints (`client.random_model`), beside a native runtime.

- `canister_runs`: calls to the shipped wasm in the embedded runtime, metered;
- `tables`: the cost model and the seed's tables read off it;
- `native`: the reference runtime (onnxruntime, else numpy), one thread;
- `report`: JSON, markdown and the PNG plot; `machine`: what it ran on;
- `run`: the whole run, as `gpt2-chat bench` does it.
"""
