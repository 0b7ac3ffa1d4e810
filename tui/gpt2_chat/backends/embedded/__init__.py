"""The local embedded runtime: the real canister wasm run in-process by wasmtime."""
