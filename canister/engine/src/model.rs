//! The GPT-2 network and its forward pass: one obvious place for each layer.

use crate::config::Config;
use crate::error::{bad_input, EngineError};
use crate::kernels::{
    gelu, layer_norm, HeadCache, Kernels, PackedMatrix, QuantHeadCache, QuantMatrix,
};
use crate::kv_cache::{KvCache, KvLayout, Layer};
use crate::safetensors::Dtype;

pub struct LayerNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl LayerNorm {
    /// Normalises each row of `x` into `out`.
    fn apply(&self, x: &[f32], out: &mut [f32], eps: f32) {
        layer_norm(x, out, &self.weight, &self.bias, eps);
    }
}

/// A weight matrix (inputs × outputs), stored as f32 or as int8 with per-output scales.
pub enum Weight {
    F32(PackedMatrix),
    Int8(QuantMatrix),
}

impl Weight {
    /// `y = bias + x·W` for every token row of `x`.
    pub fn matmul<K: Kernels>(&self, k: &K, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
        match self {
            Weight::F32(m) => k.matmul(m, bias, x, y),
            Weight::Int8(m) => k.matmul_q(m, bias, x, y),
        }
    }

    /// All inputs' weights for output `o`: the embedding of token `o` when this is the
    /// tied GPT-2 LM head.
    pub fn column(&self, o: usize) -> Vec<f32> {
        match self {
            Weight::F32(m) => m.column(o),
            Weight::Int8(m) => (0..m.rows()).map(|i| m.get(i, o)).collect(),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            Weight::F32(m) => m.heap_bytes(),
            Weight::Int8(m) => m.heap_bytes(),
        }
    }
}

pub struct Linear {
    pub weight: Weight,
    pub bias: Vec<f32>,
}

pub struct Block {
    pub ln_1: LayerNorm,
    /// Query, key and value projections in one matrix: n_embd -> 3 * n_embd.
    pub attn_qkv: Linear,
    pub attn_proj: Linear,
    pub ln_2: LayerNorm,
    pub mlp_fc: Linear,
    pub mlp_proj: Linear,
}

pub struct Model {
    pub config: Config,
    /// How the weights were stored in the file (int8 stays int8 in memory; others are f32).
    pub file_dtype: Dtype,
    /// Token embeddings stored as the LM head (n_embd -> vocab); an embedding is a column.
    pub wte: Weight,
    /// Position embeddings, row-major `[n_ctx][n_embd]`.
    pub wpe: Vec<f32>,
    pub blocks: Vec<Block>,
    pub ln_f: LayerNorm,
    /// A separate output projection, only when the checkpoint does not tie it to `wte`.
    pub lm_head: Option<Weight>,
}

impl Model {
    /// Checks that `tokens` can be appended to a cache holding `cached` tokens.
    pub fn check_tokens(&self, cached: usize, tokens: &[u32]) -> Result<(), EngineError> {
        let cfg = &self.config;
        if tokens.is_empty() {
            return Err(bad_input("no tokens given"));
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(bad_input(format!(
                "token id {bad} is out of range: the vocabulary has {} ids (0..{})",
                cfg.vocab_size,
                cfg.vocab_size - 1
            )));
        }
        if cached.saturating_add(tokens.len()) > cfg.n_ctx {
            return Err(EngineError::ContextFull { n_ctx: cfg.n_ctx });
        }
        Ok(())
    }

    /// Runs `tokens` at the positions after the cached ones, appends their keys and values
    /// to `cache`, and returns the final hidden state (after `ln_f`) of the last token.
    /// On error nothing is changed.
    pub fn forward<K: Kernels>(
        &self,
        k: &K,
        cache: &mut KvCache,
        tokens: &[u32],
    ) -> Result<Vec<f32>, EngineError> {
        self.check_tokens(cache.len(), tokens)?;
        let c = self.config.n_embd;
        let n = tokens.len();
        let start = cache.len();

        let mut x = vec![0.0f32; n * c];
        for (t, &tok) in tokens.iter().enumerate() {
            let row = &mut x[t * c..(t + 1) * c];
            row.copy_from_slice(&self.wpe[(start + t) * c..(start + t + 1) * c]);
            for (xi, e) in row.iter_mut().zip(self.wte.column(tok as usize)) {
                *xi += e;
            }
        }

        let mut h = vec![0.0f32; n * c];
        let mut qkv = vec![0.0f32; n * 3 * c];
        let mut att = vec![0.0f32; n * c];
        let mut proj = vec![0.0f32; n * c];
        let mut fc = vec![0.0f32; n * self.config.n_inner];
        for (l, block) in self.blocks.iter().enumerate() {
            block.ln_1.apply(&x, &mut h, self.config.layer_norm_epsilon);
            block.attn_qkv.weight.matmul(k, Some(&block.attn_qkv.bias), &h, &mut qkv);
            for t in 0..n {
                let row = &qkv[t * 3 * c..(t + 1) * 3 * c];
                cache.push(l, &row[c..2 * c], &row[2 * c..]);
            }
            self.attention(k, cache, l, start, &qkv, &mut att);
            block.attn_proj.weight.matmul(k, Some(&block.attn_proj.bias), &att, &mut proj);
            add_in_place(&mut x, &proj);

            block.ln_2.apply(&x, &mut h, self.config.layer_norm_epsilon);
            block.mlp_fc.weight.matmul(k, Some(&block.mlp_fc.bias), &h, &mut fc);
            gelu(&mut fc);
            block.mlp_proj.weight.matmul(k, Some(&block.mlp_proj.bias), &fc, &mut proj);
            add_in_place(&mut x, &proj);
        }
        cache.commit();

        let mut out = vec![0.0f32; c];
        self.ln_f.apply(&x[(n - 1) * c..], &mut out, self.config.layer_norm_epsilon);
        Ok(out)
    }

    /// Causal self-attention of the new tokens (at positions `start..`) over the cache,
    /// whose layer `l` already holds their own keys and values.
    fn attention<K: Kernels>(
        &self,
        k: &K,
        cache: &KvCache,
        l: usize,
        start: usize,
        qkv: &[f32],
        out: &mut [f32],
    ) {
        let c = self.config.n_embd;
        let hs = self.config.head_size();
        let scale = 1.0 / (hs as f32).sqrt();
        let mut scores = Vec::with_capacity(start + out.len() / c);
        let mut weights = Vec::with_capacity(start + out.len() / c + 1);
        for (t, out_row) in out.chunks_exact_mut(c).enumerate() {
            let positions = start + t + 1;
            for head in 0..self.config.n_head {
                let cols = head * hs..(head + 1) * hs;
                let q = &qkv[t * 3 * c..][cols.clone()];
                match cache.layer(l) {
                    Layer::F32(keys, values) => {
                        let heads =
                            HeadCache { keys, values, stride: c, offset: cols.start, positions };
                        k.attend(q, &heads, scale, &mut scores, &mut out_row[cols]);
                    }
                    Layer::Int16(heads) => {
                        let heads = QuantHeadCache::new(&heads[head], positions);
                        k.attend_q(q, &heads, scale, &mut scores, &mut weights, &mut out_row[cols]);
                    }
                }
            }
        }
    }

    /// How a session's KV cache stores keys and values for this model: as 12-bit integers
    /// when the weights are int8 (attention then runs on integer kernels too), else f32.
    pub fn kv_layout(&self) -> KvLayout {
        match self.wte {
            Weight::Int8(_) => KvLayout::Int16,
            Weight::F32(_) => KvLayout::F32,
        }
    }

    /// Next-token logits from a final hidden state.
    pub fn logits<K: Kernels>(&self, k: &K, hidden: &[f32]) -> Vec<f32> {
        let head = self.lm_head.as_ref().unwrap_or(&self.wte);
        let mut logits = vec![0.0f32; self.config.vocab_size];
        head.matmul(k, None, hidden, &mut logits);
        logits
    }

    /// Heap bytes held by the weights.
    pub fn heap_bytes(&self) -> usize {
        let f = std::mem::size_of::<f32>();
        let lin = |l: &Linear| l.weight.heap_bytes() + l.bias.len() * f;
        let ln = |l: &LayerNorm| (l.weight.len() + l.bias.len()) * f;
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                ln(&b.ln_1)
                    + lin(&b.attn_qkv)
                    + lin(&b.attn_proj)
                    + ln(&b.ln_2)
                    + lin(&b.mlp_fc)
                    + lin(&b.mlp_proj)
            })
            .sum();
        self.wte.heap_bytes()
            + self.wpe.len() * f
            + blocks
            + ln(&self.ln_f)
            + self.lm_head.as_ref().map_or(0, Weight::heap_bytes)
    }
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}
