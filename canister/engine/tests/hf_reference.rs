//! The engine against Hugging Face `GPT2LMHeadModel` on randomly initialised checkpoints
//! (fixtures from `scripts/make_reference_fixtures.py`), for both kernel sets.

use gpt2_engine::sampling::argmax;
use gpt2_engine::{load_model, Kernels, KvCache, Model, Portable, Simd128};
use serde_json::Value;

const CONFIGS: [&str; 3] = ["small64", "head24", "head8"];
const TOLERANCE: f32 = 1e-4;

fn fixture(name: &str, file: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The reference tensors: ids (I64) and logits (F32), read without the engine's parser.
struct Reference {
    input_ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
}

fn reference(name: &str) -> Reference {
    let f = fixture(name, "reference.safetensors");
    let n = u64::from_le_bytes(f[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&f[8..8 + n]).unwrap();
    let data = &f[8 + n..];
    let tensor = |key: &str| {
        let t = &header[key];
        let [a, b] = [0, 1].map(|i| t["data_offsets"][i].as_u64().unwrap() as usize);
        let shape: Vec<usize> =
            t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        (t["dtype"].as_str().unwrap().to_string(), shape, &data[a..b])
    };
    let ids = |key: &str| {
        let (dtype, _, bytes) = tensor(key);
        assert_eq!(dtype, "I64");
        bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect::<Vec<_>>()
    };
    let (dtype, shape, bytes) = tensor("logits");
    assert_eq!(dtype, "F32");
    let values: Vec<f32> =
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    Reference {
        input_ids: ids("input_ids"),
        logits: values.chunks_exact(shape[1]).map(<[f32]>::to_vec).collect(),
        prompt_ids: ids("prompt_ids"),
        greedy_ids: ids("greedy_ids"),
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn logits_after<K: Kernels>(model: &Model, k: &K, cache: &mut KvCache, tokens: &[u32]) -> Vec<f32> {
    let hidden = model.forward(k, cache, tokens).unwrap();
    model.logits(k, &hidden)
}

fn check_against_hf<K: Kernels>(name: &str, k: &K) {
    let model = load_model(&fixture(name, "model.safetensors")).unwrap();
    let r = reference(name);
    assert_eq!(model.config.vocab_size, r.logits[0].len());

    // Token by token through the KV cache: every position's logits.
    let mut cache = KvCache::new(&model.config);
    for (t, &tok) in r.input_ids.iter().enumerate() {
        let got = logits_after(&model, k, &mut cache, &[tok]);
        let diff = max_abs_diff(&got, &r.logits[t]);
        assert!(diff <= TOLERANCE, "{name} incremental position {t}: max abs diff {diff}");
    }

    // The whole sequence in one pass, and in uneven blocks (as a prefill spanning calls).
    let last = r.input_ids.len() - 1;
    for blocks in [vec![r.input_ids.len()], vec![3, 10, 1, r.input_ids.len() - 14]] {
        let mut cache = KvCache::new(&model.config);
        let mut at = 0;
        for n in blocks {
            let got = logits_after(&model, k, &mut cache, &r.input_ids[at..at + n]);
            at += n;
            let diff = max_abs_diff(&got, &r.logits[at - 1]);
            assert!(diff <= TOLERANCE, "{name} block ending at {at}: max abs diff {diff}");
        }
        assert_eq!(at, last + 1);
    }

    // Greedy decoding equals transformers' generate().
    let mut cache = KvCache::new(&model.config);
    let mut logits = logits_after(&model, k, &mut cache, &r.prompt_ids);
    let mut generated = Vec::new();
    for _ in 0..r.greedy_ids.len() {
        let next = argmax(&logits);
        generated.push(next);
        logits = logits_after(&model, k, &mut cache, &[next]);
    }
    assert_eq!(generated, r.greedy_ids, "{name} greedy ids");
}

#[test]
fn portable_kernels_match_hugging_face() {
    for name in CONFIGS {
        check_against_hf(name, &Portable);
    }
}

#[test]
fn simd_kernels_match_hugging_face() {
    for name in CONFIGS {
        check_against_hf(name, &Simd128);
    }
}

#[test]
fn kv_cached_decoding_equals_full_recompute() {
    for name in CONFIGS {
        let model = load_model(&fixture(name, "model.safetensors")).unwrap();
        let ids = reference(name).input_ids;
        let mut cache = KvCache::new(&model.config);
        for t in 0..ids.len() {
            let incremental = logits_after(&model, &Simd128, &mut cache, &ids[t..t + 1]);
            let full = logits_after(&model, &Simd128, &mut KvCache::new(&model.config), &ids[..=t]);
            let diff = max_abs_diff(&incremental, &full);
            assert!(diff <= 1e-5, "{name} position {t}: cached vs recomputed differ by {diff}");
        }
    }
}

#[test]
fn simd_path_equals_portable_path() {
    for name in CONFIGS {
        let model = load_model(&fixture(name, "model.safetensors")).unwrap();
        let ids = reference(name).input_ids;
        let a = logits_after(&model, &Portable, &mut KvCache::new(&model.config), &ids);
        let b = logits_after(&model, &Simd128, &mut KvCache::new(&model.config), &ids);
        let diff = max_abs_diff(&a, &b);
        assert!(diff <= 1e-5, "{name}: simd vs portable differ by {diff}");
    }
}
