//! Parsing and validating a safetensors header.
//!
//! Layout: 8-byte little-endian header length N, N bytes of JSON, then the raw tensor data.
//! The header maps tensor names to `{dtype, shape, data_offsets: [begin, end]}` (offsets
//! relative to the data section) plus an optional `__metadata__` string map. The bytes
//! themselves are read by the caller (the canister reads them from stable memory), so this
//! module only works on the header and hands out validated byte ranges.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{bad_model, EngineError};

/// The safetensors reference implementation refuses headers above 100 MB; so do we, so
/// that a corrupt length cannot make us read gigabytes.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    I8,
}

impl Dtype {
    fn parse(s: &str) -> Option<Dtype> {
        match s {
            "F32" => Some(Dtype::F32),
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::BF16),
            "I8" => Some(Dtype::I8),
            _ => None,
        }
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I8 => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I8 => "I8",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: u64,
    pub end: u64,
}

impl TensorInfo {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub tensors: Vec<TensorInfo>,
    pub metadata: BTreeMap<String, String>,
}

/// Reads the header length from the file's first 8 bytes and checks it fits the file.
pub fn header_len(first8: &[u8], file_len: u64) -> Result<u64, EngineError> {
    let bytes: [u8; 8] = first8
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad_model("file is shorter than the 8-byte safetensors header length"))?;
    let n = u64::from_le_bytes(bytes);
    if n > MAX_HEADER_LEN {
        return Err(bad_model(format!(
            "header length {n} is over the {MAX_HEADER_LEN}-byte limit (not a safetensors file?)"
        )));
    }
    if n.checked_add(8).is_none_or(|end| end > file_len) {
        return Err(bad_model(format!(
            "header length {n} runs past the end of the {file_len}-byte file (truncated?)"
        )));
    }
    Ok(n)
}

/// Parses the JSON header (the `header_len` bytes after the length) and validates every
/// tensor's dtype, shape and byte range against a file of `file_len` bytes.
pub fn parse_header(json: &[u8], file_len: u64) -> Result<Header, EngineError> {
    let data_start = (json.len() as u64)
        .checked_add(8)
        .filter(|&d| d <= file_len)
        .ok_or_else(|| bad_model("the header runs past the end of the file"))?;
    let value: Value = serde_json::from_slice(json)
        .map_err(|e| bad_model(format!("header is not valid JSON: {e}")))?;
    let Value::Object(entries) = value else {
        return Err(bad_model("header is not a JSON object"));
    };
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, entry) in entries {
        if name == "__metadata__" {
            metadata = parse_metadata(&entry)?;
            continue;
        }
        tensors.push(parse_tensor(&name, &entry, data_start, file_len)?);
    }
    tensors.sort_by_key(|t| (t.start, t.end));
    for pair in tensors.windows(2) {
        if pair[1].start < pair[0].end {
            return Err(bad_model(format!(
                "tensors {} and {} overlap",
                pair[0].name, pair[1].name
            )));
        }
    }
    Ok(Header { tensors, metadata })
}

fn parse_metadata(entry: &Value) -> Result<BTreeMap<String, String>, EngineError> {
    let Value::Object(map) = entry else {
        return Err(bad_model("__metadata__ is not an object"));
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(bad_model(format!("__metadata__ value for {k} is not a string"))),
        })
        .collect()
}

fn parse_tensor(
    name: &str,
    entry: &Value,
    data_start: u64,
    file_len: u64,
) -> Result<TensorInfo, EngineError> {
    let field =
        |key: &str| entry.get(key).ok_or_else(|| bad_model(format!("tensor {name} has no {key}")));
    let dtype_name = field("dtype")?
        .as_str()
        .ok_or_else(|| bad_model(format!("tensor {name}: dtype is not a string")))?;
    let dtype = Dtype::parse(dtype_name).ok_or_else(|| {
        bad_model(format!(
            "tensor {name} has dtype {dtype_name}; supported: F32, F16, BF16 (and I8 from gpt2-chat prepare)"
        ))
    })?;
    let shape = as_u64_list(field("shape")?)
        .ok_or_else(|| bad_model(format!("tensor {name}: shape is not a list of integers")))?;
    let offsets = as_u64_list(field("data_offsets")?)
        .filter(|o| o.len() == 2)
        .ok_or_else(|| bad_model(format!("tensor {name}: data_offsets is not [begin, end]")))?;
    let (begin, end) = (offsets[0], offsets[1]);
    if end < begin {
        return Err(bad_model(format!("tensor {name}: data_offsets end {end} < begin {begin}")));
    }
    let elements = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad_model(format!("tensor {name}: shape {shape:?} overflows")))?;
    let expected = elements
        .checked_mul(dtype.size() as u64)
        .ok_or_else(|| bad_model(format!("tensor {name}: shape {shape:?} overflows")))?;
    if end - begin != expected {
        return Err(bad_model(format!(
            "tensor {name}: {} bytes stored, but shape {shape:?} of {} needs {expected}",
            end - begin,
            dtype.name()
        )));
    }
    // Offsets come from the file: near 2^64 they would wrap past the end check.
    let (start, stop) = data_start
        .checked_add(begin)
        .zip(data_start.checked_add(end))
        .filter(|&(_, stop)| stop <= file_len)
        .ok_or_else(|| {
            bad_model(format!(
                "tensor {name}: data_offsets [{begin}, {end}] run past the end of the \
                 {file_len}-byte file (truncated?)"
            ))
        })?;
    let shape = shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad_model(format!("tensor {name}: shape {shape:?} too large")))?;
    Ok(TensorInfo { name: name.to_string(), dtype, shape, start, end: stop })
}

fn as_u64_list(v: &Value) -> Option<Vec<u64>> {
    v.as_array()?.iter().map(Value::as_u64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data_len: usize) -> Vec<u8> {
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        f.resize(f.len() + data_len, 0);
        f
    }

    fn parse(f: &[u8]) -> Result<Header, EngineError> {
        let n = header_len(f, f.len() as u64)?;
        parse_header(&f[8..8 + n as usize], f.len() as u64)
    }

    #[test]
    fn parses_tensors_and_metadata() {
        let f = file(
            r#"{"__metadata__":{"n_head":"3"},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}}"#,
            16,
        );
        let h = parse(&f).unwrap();
        assert_eq!(h.metadata["n_head"], "3");
        assert_eq!(h.tensors[0].name, "a");
        assert_eq!(h.tensors[0].shape, vec![2, 2]);
        assert_eq!(h.tensors[1].dtype, Dtype::F32);
        let data_start = f.len() as u64 - 16;
        assert_eq!((h.tensors[1].start, h.tensors[1].end), (data_start + 8, data_start + 16));
    }

    #[test]
    fn rejects_bad_files_with_a_reason() {
        let cases = [
            (file(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8), "needs 12"),
            (file(r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, 8), "truncated"),
            // Offsets that wrap around 2^64 when the data section's start is added.
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,18446744073709551615]}}"#,
                    8,
                ),
                "needs 8",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551600,18446744073709551608]}}"#,
                    8,
                ),
                "run past the end",
            ),
            (file(r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#, 8), "dtype I64"),
            (file(r#"{"a":{"dtype":"F32","shape":[1]}}"#, 8), "no data_offsets"),
            (file(r#"[1,2]"#, 0), "not a JSON object"),
            (file(r#"{"a":"#, 0), "not valid JSON"),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                    12,
                ),
                "overlap",
            ),
        ];
        for (f, want) in cases {
            let err = parse(&f).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
        let huge = u64::MAX.to_le_bytes();
        assert!(header_len(&huge, 100).unwrap_err().to_string().contains("limit"));
        assert!(header_len(&[1, 0], 2).unwrap_err().to_string().contains("shorter"));
        assert!(header_len(&64u64.to_le_bytes(), 20)
            .unwrap_err()
            .to_string()
            .contains("past the end"));
    }
}
