//! A minimal GGUF v3 writer: enough to build fixtures and synthetic models for tests.

use std::path::Path;

use super::{
    DEFAULT_ALIGNMENT, GgmlType, GgufError, MAX_DIMS, MetadataValue, ValueType, tensor_size,
};

/// One tensor to write: raw bytes already in `ggml_type`'s block layout.
#[derive(Debug, Clone)]
pub struct GgufTensorData<'a> {
    pub name: String,
    /// GGUF order: `dims[0]` innermost.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    pub data: &'a [u8],
}

/// Encodes a GGUF v3 file. The alignment is `general.alignment` when `metadata` has it (as u32), else 32.
pub fn encode_gguf(
    metadata: &[(String, MetadataValue)],
    tensors: &[GgufTensorData<'_>],
) -> Result<Vec<u8>, GgufError> {
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, MetadataValue::U32(a))) if a.is_power_of_two() => u64::from(*a),
        Some((k, v)) => {
            return Err(GgufError::metadata(
                k,
                format!("is {v:?}, expected a power of two as u32"),
            ));
        }
    };

    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_string(&mut out, key);
        out.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
        put_value(&mut out, key, value)?;
    }

    let mut offset = 0u64;
    let mut offsets = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.dims.len() > MAX_DIMS {
            return Err(GgufError::tensor(
                &t.name,
                format!("has {} dims, at most {MAX_DIMS}", t.dims.len()),
            ));
        }
        let (_, n_bytes) = tensor_size(&t.name, &t.dims, t.ggml_type)?;
        if n_bytes != t.data.len() as u64 {
            return Err(GgufError::tensor(
                &t.name,
                format!(
                    "dims {:?} of {} need {n_bytes} bytes, got {}",
                    t.dims,
                    t.ggml_type,
                    t.data.len()
                ),
            ));
        }
        put_string(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&(t.ggml_type as u32).to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + n_bytes).next_multiple_of(alignment);
    }

    let data_start = (out.len() as u64).next_multiple_of(alignment);
    out.resize(data_start as usize, 0);
    for (t, off) in tensors.iter().zip(offsets) {
        out.resize((data_start + off) as usize, 0);
        out.extend_from_slice(t.data);
    }
    Ok(out)
}

/// Writes [`encode_gguf`]'s output to `path`.
pub fn write_gguf(
    path: &Path,
    metadata: &[(String, MetadataValue)],
    tensors: &[GgufTensorData<'_>],
) -> Result<(), GgufError> {
    let bytes = encode_gguf(metadata, tensors)?;
    std::fs::write(path, bytes).map_err(|e| GgufError::io("write", path, e))
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, key: &str, value: &MetadataValue) -> Result<(), GgufError> {
    use MetadataValue as V;
    match value {
        V::U8(v) => out.push(*v),
        V::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        V::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        V::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        V::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        V::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        V::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        V::Bool(v) => out.push(u8::from(*v)),
        V::String(s) => put_string(out, s),
        V::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        V::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        V::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        V::Array { elem_type, items } => {
            out.extend_from_slice(&(*elem_type as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                if item.value_type() != *elem_type {
                    return Err(GgufError::metadata(
                        key,
                        format!("array of {elem_type:?} holds a {:?}", item.value_type()),
                    ));
                }
                put_value(out, key, item)?;
            }
        }
    }
    Ok(())
}

impl MetadataValue {
    /// An array of strings.
    pub fn strings<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Self {
        Self::Array {
            elem_type: ValueType::String,
            items: items.into_iter().map(|s| Self::String(s.into())).collect(),
        }
    }

    /// An array of i32.
    pub fn i32s(items: impl IntoIterator<Item = i32>) -> Self {
        Self::Array {
            elem_type: ValueType::I32,
            items: items.into_iter().map(Self::I32).collect(),
        }
    }
}
