//! From a safetensors header to a loaded `Model`, one tensor at a time.
//!
//! `LoadPlan::new` validates the whole checkpoint up front — every tensor's name, dtype,
//! shape and byte range, and the GPT-2 config — before a single weight is read. The
//! caller then feeds each planned tensor's bytes to a `ModelBuilder` in any order and
//! across as many calls as it likes (the canister spreads a big model over several
//! messages), and `finish` yields the model.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::error::{bad_model, EngineError};
use crate::kernels::{PackedMatrix, QuantMatrix};
use crate::model::{Block, LayerNorm, Linear, Model, Weight};
use crate::safetensors::{Dtype, Header, TensorInfo};

/// What a tensor is in the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    TokenEmbedding,
    PositionEmbedding,
    FinalNormWeight,
    FinalNormBias,
    LmHead,
    Block(usize, BlockParam),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BlockParam {
    Ln1Weight,
    Ln1Bias,
    AttnWeight,
    AttnBias,
    AttnProjWeight,
    AttnProjBias,
    Ln2Weight,
    Ln2Bias,
    FcWeight,
    FcBias,
    MlpProjWeight,
    MlpProjBias,
}

const BLOCK_PARAMS: [(&str, BlockParam); 12] = [
    ("ln_1.weight", BlockParam::Ln1Weight),
    ("ln_1.bias", BlockParam::Ln1Bias),
    ("attn.c_attn.weight", BlockParam::AttnWeight),
    ("attn.c_attn.bias", BlockParam::AttnBias),
    ("attn.c_proj.weight", BlockParam::AttnProjWeight),
    ("attn.c_proj.bias", BlockParam::AttnProjBias),
    ("ln_2.weight", BlockParam::Ln2Weight),
    ("ln_2.bias", BlockParam::Ln2Bias),
    ("mlp.c_fc.weight", BlockParam::FcWeight),
    ("mlp.c_fc.bias", BlockParam::FcBias),
    ("mlp.c_proj.weight", BlockParam::MlpProjWeight),
    ("mlp.c_proj.bias", BlockParam::MlpProjBias),
];

/// A layer norm's epsilon only guards a division: anything near 1 swamps the variance.
const MAX_LAYER_NORM_EPSILON: f32 = 1.0;

/// Buffers some GPT-2 checkpoints carry (the causal mask); not weights.
const IGNORED_BLOCK_TENSORS: [&str; 2] = ["attn.bias", "attn.masked_bias"];

/// Which half of a tensor pair: the values, or the per-output scales of int8 values
/// (stored as `<name>_scale`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Values,
    Scale,
}

/// Suffix of the tensor holding an int8 matrix's per-output-channel scales.
pub const SCALE_SUFFIX: &str = "_scale";

#[derive(Clone, Debug, PartialEq)]
pub struct LoadStep {
    pub role: Role,
    pub part: Part,
    pub tensor: TensorInfo,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoadPlan {
    pub config: Config,
    /// Tensors to read, in file order (sequential reads).
    pub steps: Vec<LoadStep>,
}

impl LoadPlan {
    pub fn new(header: &Header) -> Result<LoadPlan, EngineError> {
        let mut roles: BTreeMap<Role, &TensorInfo> = BTreeMap::new();
        let mut scales: BTreeMap<Role, &TensorInfo> = BTreeMap::new();
        for t in &header.tensors {
            let (name, map) = match t.name.strip_suffix(SCALE_SUFFIX) {
                Some(base) => (base, &mut scales),
                None => (t.name.as_str(), &mut roles),
            };
            if let Some(role) = role_of(name)? {
                if map.insert(role, t).is_some() {
                    return Err(bad_model(format!("tensor {} appears twice", t.name)));
                }
            }
        }
        let config = infer_config(&roles, &header.metadata)?;
        let mut steps = check_shapes(&roles, &config)?;
        steps.extend(check_scales(&roles, &scales)?);
        steps.sort_by_key(|s| s.tensor.start);
        Ok(LoadPlan { config, steps })
    }

    /// Bytes of tensor data the plan reads.
    pub fn total_bytes(&self) -> u64 {
        self.steps.iter().map(|s| s.tensor.len()).sum()
    }
}

fn role_of(full_name: &str) -> Result<Option<Role>, EngineError> {
    // `save_pretrained` of GPT2LMHeadModel prefixes the body's tensors.
    let name = full_name.strip_prefix("transformer.").unwrap_or(full_name);
    let role = match name {
        "wte.weight" => Role::TokenEmbedding,
        "wpe.weight" => Role::PositionEmbedding,
        "ln_f.weight" => Role::FinalNormWeight,
        "ln_f.bias" => Role::FinalNormBias,
        "lm_head.weight" => Role::LmHead,
        _ => {
            let unexpected =
                || bad_model(format!("unexpected tensor {full_name} (not a GPT-2 checkpoint?)"));
            let rest = name.strip_prefix("h.").ok_or_else(unexpected)?;
            let (index, param) = rest.split_once('.').ok_or_else(unexpected)?;
            let index: usize = index.parse().map_err(|_| unexpected())?;
            if IGNORED_BLOCK_TENSORS.contains(&param) {
                return Ok(None);
            }
            let (_, p) = BLOCK_PARAMS.iter().find(|(n, _)| *n == param).ok_or_else(unexpected)?;
            Role::Block(index, *p)
        }
    };
    Ok(Some(role))
}

fn infer_config(
    roles: &BTreeMap<Role, &TensorInfo>,
    metadata: &BTreeMap<String, String>,
) -> Result<Config, EngineError> {
    let shape2 = |role: Role, what: &str| -> Result<(usize, usize), EngineError> {
        let t = roles.get(&role).ok_or_else(|| bad_model(format!("missing tensor {what}")))?;
        match t.shape[..] {
            [a, b] => Ok((a, b)),
            _ => Err(bad_model(format!("tensor {} has shape {:?}, expected 2-D", t.name, t.shape))),
        }
    };
    let (vocab_size, n_embd) = shape2(Role::TokenEmbedding, "wte.weight")?;
    let (n_ctx, _) = shape2(Role::PositionEmbedding, "wpe.weight")?;
    let (_, n_inner) = shape2(Role::Block(0, BlockParam::FcWeight), "h.0.mlp.c_fc.weight")?;
    let n_layer = roles
        .keys()
        .filter_map(|r| match r {
            Role::Block(i, _) => Some(i.saturating_add(1)),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    if n_embd == 0 || vocab_size == 0 || n_ctx == 0 || n_inner == 0 {
        return Err(bad_model("a dimension of wte, wpe or c_fc is zero"));
    }
    // Every layer has all its parameters, so a layer index beyond what the tensors can
    // fill (e.g. h.4000000000) is refused before anything is sized by it.
    if n_layer.checked_mul(BLOCK_PARAMS.len()).is_none_or(|n| n > roles.len()) {
        return Err(bad_model(format!(
            "a tensor of layer {} but only {} tensors: layers are missing",
            n_layer - 1,
            roles.len()
        )));
    }

    let meta = |key: &str| -> Result<Option<usize>, EngineError> {
        metadata
            .get(key)
            .map(|v| {
                v.trim().parse::<usize>().map_err(|_| {
                    bad_model(format!("__metadata__ {key}={v:?} is not a whole number"))
                })
            })
            .transpose()
    };
    let n_head = match meta("n_head")? {
        Some(h) => h,
        None if n_embd % 64 == 0 => n_embd / 64,
        None => {
            return Err(bad_model(format!(
                "cannot infer n_head: n_embd {n_embd} is not a multiple of GPT-2's head size 64; \
                 put n_head in __metadata__ (gpt2-chat prepare does)"
            )))
        }
    };
    if n_head == 0 || n_embd % n_head != 0 {
        return Err(bad_model(format!("n_head {n_head} does not divide n_embd {n_embd}")));
    }
    for (key, actual) in [
        ("n_layer", n_layer),
        ("n_embd", n_embd),
        ("vocab_size", vocab_size),
        ("n_ctx", n_ctx),
        ("n_inner", n_inner),
    ] {
        if let Some(declared) = meta(key)? {
            if declared != actual {
                return Err(bad_model(format!(
                    "__metadata__ says {key}={declared} but the tensors have {actual}"
                )));
            }
        }
    }
    let layer_norm_epsilon = match metadata.get("layer_norm_epsilon") {
        Some(v) => v
            .trim()
            .parse::<f32>()
            .ok()
            .filter(|e| *e > 0.0 && *e <= MAX_LAYER_NORM_EPSILON)
            .ok_or_else(|| {
                bad_model(format!(
                    "__metadata__ layer_norm_epsilon={v:?} is not a number in \
                     (0, {MAX_LAYER_NORM_EPSILON}]"
                ))
            })?,
        None => 1e-5,
    };
    Ok(Config { n_layer, n_head, n_embd, n_inner, vocab_size, n_ctx, layer_norm_epsilon })
}

fn expected_shape(role: Role, c: &Config) -> Option<Vec<usize>> {
    use BlockParam::*;
    let (e, f) = (c.n_embd, c.n_inner);
    let e3 = e.checked_mul(3)?;
    Some(match role {
        Role::TokenEmbedding | Role::LmHead => vec![c.vocab_size, e],
        Role::PositionEmbedding => vec![c.n_ctx, e],
        Role::FinalNormWeight | Role::FinalNormBias => vec![e],
        Role::Block(_, p) => match p {
            Ln1Weight | Ln1Bias | Ln2Weight | Ln2Bias | AttnProjBias | MlpProjBias => vec![e],
            AttnWeight => vec![e, e3],
            AttnBias => vec![e3],
            AttnProjWeight => vec![e, e],
            FcWeight => vec![e, f],
            FcBias => vec![f],
            MlpProjWeight => vec![f, e],
        },
    })
}

fn check_shapes(
    roles: &BTreeMap<Role, &TensorInfo>,
    config: &Config,
) -> Result<Vec<LoadStep>, EngineError> {
    let mut required = vec![
        Role::TokenEmbedding,
        Role::PositionEmbedding,
        Role::FinalNormWeight,
        Role::FinalNormBias,
    ];
    for l in 0..config.n_layer {
        required.extend(BLOCK_PARAMS.iter().map(|(_, p)| Role::Block(l, *p)));
    }
    for role in &required {
        if !roles.contains_key(role) {
            return Err(bad_model(format!("missing tensor {}", role_name(*role))));
        }
    }
    let mut steps = Vec::with_capacity(roles.len());
    for (&role, &t) in roles {
        let want = expected_shape(role, config)
            .ok_or_else(|| bad_model(format!("n_embd {} is too large", config.n_embd)))?;
        if t.shape != want {
            return Err(bad_model(format!(
                "tensor {} has shape {:?}, expected {want:?}",
                t.name, t.shape
            )));
        }
        if t.dtype == Dtype::I8 && !is_matrix(role) {
            return Err(bad_model(format!(
                "tensor {} is I8; only weight matrices may be int8",
                t.name
            )));
        }
        steps.push(LoadStep { role, part: Part::Values, tensor: t.clone() });
    }
    Ok(steps)
}

fn is_matrix(role: Role) -> bool {
    use BlockParam::*;
    match role {
        Role::TokenEmbedding | Role::LmHead => true,
        Role::Block(_, p) => matches!(p, AttnWeight | AttnProjWeight | FcWeight | MlpProjWeight),
        _ => false,
    }
}

/// Number of outputs of a matrix: Conv1D weights are `[in, out]`, embeddings `[out, in]`.
fn outputs(role: Role, shape: &[usize]) -> usize {
    match role {
        Role::TokenEmbedding | Role::LmHead => shape[0],
        _ => shape[1],
    }
}

/// Every int8 matrix needs an F32 scale per output; nothing else may have one.
fn check_scales(
    roles: &BTreeMap<Role, &TensorInfo>,
    scales: &BTreeMap<Role, &TensorInfo>,
) -> Result<Vec<LoadStep>, EngineError> {
    for (&role, &t) in roles {
        if t.dtype == Dtype::I8 && !scales.contains_key(&role) {
            return Err(bad_model(format!(
                "int8 tensor {} has no {}{SCALE_SUFFIX}",
                t.name, t.name
            )));
        }
    }
    let mut steps = Vec::new();
    for (&role, &s) in scales {
        let values = roles.get(&role).filter(|v| v.dtype == Dtype::I8).ok_or_else(|| {
            bad_model(format!("unexpected tensor {} (no int8 matrix it scales)", s.name))
        })?;
        let want = vec![outputs(role, &values.shape)];
        if s.dtype != Dtype::F32 || s.shape != want {
            return Err(bad_model(format!(
                "tensor {} is {} {:?}, expected F32 {want:?}",
                s.name,
                s.dtype.name(),
                s.shape
            )));
        }
        steps.push(LoadStep { role, part: Part::Scale, tensor: s.clone() });
    }
    Ok(steps)
}

fn role_name(role: Role) -> String {
    match role {
        Role::TokenEmbedding => "wte.weight".into(),
        Role::PositionEmbedding => "wpe.weight".into(),
        Role::FinalNormWeight => "ln_f.weight".into(),
        Role::FinalNormBias => "ln_f.bias".into(),
        Role::LmHead => "lm_head.weight".into(),
        Role::Block(l, p) => {
            let name = BLOCK_PARAMS.iter().find(|(_, q)| *q == p).map_or("?", |(n, _)| n);
            format!("h.{l}.{name}")
        }
    }
}

/// Decodes little-endian tensor bytes to f32.
pub fn to_f32(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => {
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        Dtype::F16 => {
            bytes.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect()
        }
        Dtype::I8 => bytes.iter().map(|&b| b as i8 as f32).collect(),
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if frac == 0 => sign,
        // Subnormal: renormalise the fraction.
        0 => {
            let shift = frac.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | ((frac << shift) & 0x3ff) << 13
        }
        0x1f => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// Collects converted tensors until the model is complete.
pub struct ModelBuilder {
    config: Config,
    file_dtype: Dtype,
    vectors: BTreeMap<Role, Vec<f32>>,
    matrices: BTreeMap<Role, Weight>,
    /// Halves of int8 matrices waiting for the other half (values or scales).
    int8_values: BTreeMap<Role, (Vec<i8>, Vec<usize>)>,
    int8_scales: BTreeMap<Role, Vec<f32>>,
}

impl ModelBuilder {
    pub fn new(plan: &LoadPlan) -> Self {
        let file_dtype = plan
            .steps
            .iter()
            .find(|s| s.role == Role::TokenEmbedding)
            .map_or(Dtype::F32, |s| s.tensor.dtype);
        ModelBuilder {
            config: plan.config.clone(),
            file_dtype,
            vectors: BTreeMap::new(),
            matrices: BTreeMap::new(),
            int8_values: BTreeMap::new(),
            int8_scales: BTreeMap::new(),
        }
    }

    /// Converts and stores one planned tensor from its raw bytes.
    pub fn add(&mut self, step: &LoadStep, bytes: &[u8]) -> Result<(), EngineError> {
        if bytes.len() as u64 != step.tensor.len() {
            return Err(bad_model(format!(
                "tensor {}: got {} bytes, expected {}",
                step.tensor.name,
                bytes.len(),
                step.tensor.len()
            )));
        }
        let (role, shape) = (step.role, step.tensor.shape.clone());
        if step.tensor.dtype == Dtype::I8 {
            self.int8_values.insert(role, (bytes.iter().map(|&b| b as i8).collect(), shape));
            return self.pair_int8(role);
        }
        let values = to_f32(step.tensor.dtype, bytes);
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(bad_model(format!(
                "tensor {} holds a non-finite value at element {i}",
                step.tensor.name
            )));
        }
        if step.part == Part::Scale {
            if values.iter().any(|v| *v < 0.0) {
                return Err(bad_model(format!("tensor {} has a negative scale", step.tensor.name)));
            }
            self.int8_scales.insert(role, values);
            return self.pair_int8(role);
        }
        match role {
            Role::TokenEmbedding | Role::LmHead => {
                let m = PackedMatrix::from_out_in(shape[1], shape[0], &values);
                self.matrices.insert(role, Weight::F32(m));
            }
            _ if is_matrix(role) => {
                let m = PackedMatrix::from_in_out(shape[0], shape[1], &values);
                self.matrices.insert(role, Weight::F32(m));
            }
            _ => {
                self.vectors.insert(role, values);
            }
        }
        Ok(())
    }

    /// Packs an int8 matrix once both its values and its scales have arrived.
    fn pair_int8(&mut self, role: Role) -> Result<(), EngineError> {
        if !(self.int8_values.contains_key(&role) && self.int8_scales.contains_key(&role)) {
            return Ok(());
        }
        let (q, shape) = self.int8_values.remove(&role).expect("checked");
        let scales = self.int8_scales.remove(&role).expect("checked");
        let m = match role {
            Role::TokenEmbedding | Role::LmHead => {
                QuantMatrix::from_out_in(shape[1], shape[0], &q, scales)
            }
            _ => QuantMatrix::from_in_out(shape[0], shape[1], &q, scales),
        };
        self.matrices.insert(role, Weight::Int8(m));
        Ok(())
    }

    /// Assembles the model; every planned tensor must have been added.
    pub fn finish(mut self) -> Result<Model, EngineError> {
        let mut vector = |role: Role| {
            self.vectors
                .remove(&role)
                .ok_or_else(|| bad_model(format!("tensor {} was not loaded", role_name(role))))
        };
        let wpe = vector(Role::PositionEmbedding)?;
        let ln_f = LayerNorm {
            weight: vector(Role::FinalNormWeight)?,
            bias: vector(Role::FinalNormBias)?,
        };
        let mut blocks = Vec::with_capacity(self.config.n_layer);
        for l in 0..self.config.n_layer {
            use BlockParam::*;
            let mut v = |p| vector(Role::Block(l, p));
            let ln_1 = LayerNorm { weight: v(Ln1Weight)?, bias: v(Ln1Bias)? };
            let ln_2 = LayerNorm { weight: v(Ln2Weight)?, bias: v(Ln2Bias)? };
            let (b_attn, b_proj, b_fc, b_mlp) =
                (v(AttnBias)?, v(AttnProjBias)?, v(FcBias)?, v(MlpProjBias)?);
            let mut m = |p| {
                self.matrices.remove(&Role::Block(l, p)).ok_or_else(|| {
                    bad_model(format!("tensor {} was not loaded", role_name(Role::Block(l, p))))
                })
            };
            blocks.push(Block {
                ln_1,
                attn_qkv: Linear { weight: m(AttnWeight)?, bias: b_attn },
                attn_proj: Linear { weight: m(AttnProjWeight)?, bias: b_proj },
                ln_2,
                mlp_fc: Linear { weight: m(FcWeight)?, bias: b_fc },
                mlp_proj: Linear { weight: m(MlpProjWeight)?, bias: b_mlp },
            });
        }
        let wte = self
            .matrices
            .remove(&Role::TokenEmbedding)
            .ok_or_else(|| bad_model("tensor wte.weight was not loaded"))?;
        let lm_head = self.matrices.remove(&Role::LmHead);
        Ok(Model {
            config: self.config,
            file_dtype: self.file_dtype,
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-layer GPT-2 header (n_embd 4, vocab 8, n_ctx 4, n_inner 8) and its metadata.
    fn header(extra: &[(&str, Vec<usize>)], metadata: &[(&str, &str)]) -> Header {
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            ("wte.weight".into(), vec![8, 4]),
            ("wpe.weight".into(), vec![4, 4]),
            ("ln_f.weight".into(), vec![4]),
            ("ln_f.bias".into(), vec![4]),
        ];
        let c = Config {
            n_layer: 1,
            n_head: 1,
            n_embd: 4,
            n_inner: 8,
            vocab_size: 8,
            n_ctx: 4,
            layer_norm_epsilon: 1e-5,
        };
        for (name, p) in BLOCK_PARAMS {
            shapes.push((format!("h.0.{name}"), expected_shape(Role::Block(0, p), &c).unwrap()));
        }
        shapes.extend(extra.iter().map(|(n, s)| (n.to_string(), s.clone())));
        let mut at = 0u64;
        let tensors = shapes
            .into_iter()
            .map(|(name, shape)| {
                let len = 4 * shape.iter().product::<usize>() as u64;
                at += len;
                TensorInfo { name, dtype: Dtype::F32, shape, start: at - len, end: at }
            })
            .collect();
        let metadata = [("n_head", "1")]
            .iter()
            .chain(metadata)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Header { tensors, metadata }
    }

    #[test]
    fn a_huge_layer_index_is_refused_promptly() {
        assert_eq!(LoadPlan::new(&header(&[], &[])).unwrap().config.n_layer, 1);
        for index in ["4000000000", "13", "18446744073709551615"] {
            let name = format!("h.{index}.ln_1.weight");
            let err = LoadPlan::new(&header(&[(&name, vec![4])], &[])).unwrap_err();
            assert!(matches!(err, EngineError::BadModel(_)), "{index}: {err}");
        }
    }

    #[test]
    fn layer_norm_epsilon_must_be_a_small_positive_number() {
        let eps = |v: &str| LoadPlan::new(&header(&[], &[("layer_norm_epsilon", v)]));
        assert_eq!(eps("1e-6").unwrap().config.layer_norm_epsilon, 1e-6);
        for bad in ["inf", "1e30", "NaN", "0", "-1e-5", "x"] {
            assert!(matches!(eps(bad), Err(EngineError::BadModel(_))), "{bad}");
        }
    }

    #[test]
    fn f16_decoding() {
        for (bits, want) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x0001, 5.960_464_5e-8),
            (0x7bff, 65504.0),
            (0, 0.0),
        ] {
            assert_eq!(f16_to_f32(bits), want, "{bits:#x}");
        }
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
