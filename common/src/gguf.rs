//! GGUF reader, dequantisers and the Hugging Face importer.
//!
//! GGUF is llama.cpp's single-file model format (spec: ggml `docs/gguf.md`). A file is a header (magic
//! `GGUF`, version, tensor count, metadata count), typed metadata key/values, tensor infos (name, dims
//! with `ne[0]` innermost, ggml type, offset), then the tensor data, each tensor aligned to
//! `general.alignment` (default 32) from the start of the data section.
//!
//! Every offset and count read from the file is bounds-checked: a malformed or truncated file gives a
//! [`GgufError`] that names what is wrong, never a panic.
//!
//! # Layout
//! - this file: [`GgufFile`] (parse, metadata and tensor lookup) and [`GgufError`]
//! - `dequant`: [`GgmlType`] and the block dequantisers to f32
//! - `writer`: [`encode_gguf`] / [`write_gguf`], a small writer (tests, fixtures)
//! - `tokenizer`: HF `tokenizer.json` / `tokenizer_config.json` from the GGUF vocabulary
//! - `import`: [`import_gguf`], GGUF (`llama`) to an HF directory (safetensors F32, `config.json`, tokenizer)

mod dequant;
mod import;
mod tokenizer;
mod writer;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use dequant::{GgmlType, dequantize, dequantize_into};
pub use import::{ImportReport, LlamaHyperParams, hf_tensor_name, import_gguf, unpermute_qk_rows};
pub use tokenizer::{tokenizer_config_json, tokenizer_json};
pub use writer::{GgufTensorData, encode_gguf, write_gguf};

/// `GGUF` read as a little-endian u32.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of metadata arrays we accept (real files use 1).
const MAX_ARRAY_DEPTH: usize = 4;

/// What can go wrong reading, dequantising or importing a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a GGUF file: starts with {found:?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("GGUF version {0} is not supported (only versions 2 and 3)")]
    UnsupportedVersion(u32),
    #[error(
        "GGUF file is truncated: {what} at byte {offset} needs {needed} bytes, the file has {len}"
    )]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        len: u64,
    },
    #[error("malformed GGUF: {0}")]
    Malformed(String),
    #[error("metadata key `{key}`: {problem}")]
    Metadata { key: String, problem: String },
    #[error("tensor `{name}`: {problem}")]
    Tensor { name: String, problem: String },
    #[error(
        "tensor `{name}` has ggml type {ty}, which cannot be dequantised (supported: {supported})"
    )]
    UnsupportedType {
        name: String,
        ty: GgmlType,
        supported: String,
    },
    #[error("`general.architecture` is `{0}`: only `llama` can be imported")]
    UnsupportedArchitecture(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("cannot write safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    #[error("cannot serialise JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl GgufError {
    fn metadata(key: &str, problem: impl Into<String>) -> Self {
        Self::Metadata {
            key: key.to_owned(),
            problem: problem.into(),
        }
    }

    fn tensor(name: &str, problem: impl Into<String>) -> Self {
        Self::Tensor {
            name: name.to_owned(),
            problem: problem.into(),
        }
    }

    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// The type tag of a metadata value, as stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_u32(v: u32) -> Option<Self> {
        use ValueType::*;
        Some(match v {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The fewest bytes one value of this type takes (a string is at least its u64 length, an array
    /// its u32 type and u64 count). Used to reject counts the file cannot possibly hold.
    fn min_size(self) -> u64 {
        match self {
            Self::U8 | Self::I8 | Self::Bool => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 | Self::String => 8,
            Self::Array => 12,
        }
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Elements all have `elem_type` (kept so that empty arrays round-trip).
    Array {
        elem_type: ValueType,
        items: Vec<MetadataValue>,
    },
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetadataValue {
    pub fn value_type(&self) -> ValueType {
        match self {
            Self::U8(_) => ValueType::U8,
            Self::I8(_) => ValueType::I8,
            Self::U16(_) => ValueType::U16,
            Self::I16(_) => ValueType::I16,
            Self::U32(_) => ValueType::U32,
            Self::I32(_) => ValueType::I32,
            Self::F32(_) => ValueType::F32,
            Self::Bool(_) => ValueType::Bool,
            Self::String(_) => ValueType::String,
            Self::Array { .. } => ValueType::Array,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F64(_) => ValueType::F64,
        }
    }

    /// Any integer type as i128 (so every GGUF integer fits), `None` for other types.
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(v) => v.into(),
            Self::I8(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U64(v) => v.into(),
            Self::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// F32 or F64 as f64.
    pub fn as_float(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            Self::Array { items, .. } => Some(items),
            _ => None,
        }
    }

    /// A short description for error messages: the type, and the value if it is short.
    fn describe(&self) -> String {
        match self {
            Self::String(s) if s.len() <= 40 => format!("the string {s:?}"),
            Self::String(s) => format!("a string of {} bytes", s.len()),
            Self::Array { elem_type, items } => {
                format!("an array of {} {elem_type:?}", items.len())
            }
            other => format!("{other:?}"),
        }
    }
}

/// One tensor's entry in the tensor-info table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the innermost (contiguous) dimension, the reverse of a PyTorch shape.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Product of `dims`.
    pub n_elements: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The shape in PyTorch / safetensors order (outermost first).
    pub fn shape(&self) -> Vec<usize> {
        // Fits: `n_elements` was checked against the file size, which fits in usize.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file; tensor data stays in the (memory-mapped) file until asked for.
pub struct GgufFile {
    storage: Storage,
    version: u32,
    metadata: Vec<(String, MetadataValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let file = std::fs::File::open(path).map_err(|e| GgufError::io("open", path, e))?;
        // SAFETY: the map is read-only and private to this value. Undefined behaviour would need another
        // process to truncate or rewrite the file while it is mapped; model files are written once and
        // then only read, and every read below is bounds-checked against the length seen at map time.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| GgufError::io("memory-map", path, e))?;
        Self::parse(Storage::Mapped(map))
    }

    /// Parses a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(Storage::Owned(bytes))
    }

    fn parse(storage: Storage) -> Result<Self, GgufError> {
        let bytes = storage.bytes();
        let mut r = Reader { bytes, pos: 0 };
        let magic: [u8; 4] = r.array("magic")?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        // Each key/value takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info at
        // least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
        r.check_count(n_kv, 13, "metadata key/values")?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut metadata_index = HashMap::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let key = r.string(&format!("key of metadata entry {i}"))?;
            let ty = r.u32(&format!("value type of `{key}`"))?;
            let ty = ValueType::from_u32(ty)
                .ok_or_else(|| GgufError::metadata(&key, format!("unknown value type {ty}")))?;
            let value = r.value(ty, &key, 0)?;
            if metadata_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::metadata(&key, "appears twice"));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata_index
            .get("general.alignment")
            .map(|&i| &metadata[i].1)
        {
            None => DEFAULT_ALIGNMENT,
            Some(MetadataValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(other) => {
                return Err(GgufError::metadata(
                    "general.alignment",
                    format!("is {}, expected a power of two as u32", other.describe()),
                ));
            }
        };

        r.check_count(n_tensors, 24, "tensor infos")?;
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = r.string(&format!("name of tensor {i}"))?;
            let n_dims = r.u32(&format!("n_dims of `{name}`"))? as usize;
            if n_dims > MAX_DIMS {
                return Err(GgufError::tensor(
                    &name,
                    format!("has {n_dims} dims, at most {MAX_DIMS} allowed"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for d in 0..n_dims {
                dims.push(r.u64(&format!("dim {d} of `{name}`"))?);
            }
            let type_id = r.u32(&format!("type of `{name}`"))?;
            let ggml_type = GgmlType::from_u32(type_id)
                .ok_or_else(|| GgufError::tensor(&name, format!("unknown ggml type {type_id}")))?;
            let offset = r.u64(&format!("offset of `{name}`"))?;
            let (n_elements, n_bytes) = tensor_size(&name, &dims, ggml_type)?;
            if offset % alignment != 0 {
                return Err(GgufError::tensor(
                    &name,
                    format!("data offset {offset} is not a multiple of the alignment {alignment}"),
                ));
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::tensor(&name, "appears twice"));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                n_elements,
                n_bytes,
            });
        }

        let len = bytes.len() as u64;
        let data_offset = (r.pos as u64).next_multiple_of(alignment);
        for t in &tensors {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.n_bytes))
                .filter(|&end| end <= len);
            if end.is_none() {
                return Err(GgufError::Truncated {
                    what: format!("data of tensor `{}`", t.name),
                    offset: data_offset.saturating_add(t.offset),
                    needed: t.n_bytes,
                    len,
                });
            }
        }

        Ok(Self {
            storage,
            version,
            metadata,
            metadata_index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section (after the tensor infos, padded to the alignment).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata, in file order.
    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// An integer value of any integer type, converted to `T`; `Ok(None)` when absent.
    pub fn get_int<T: TryFrom<i128>>(&self, key: &str) -> Result<Option<T>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let wrong = || {
            GgufError::metadata(
                key,
                format!(
                    "is {}, expected an integer that fits {}",
                    v.describe(),
                    std::any::type_name::<T>()
                ),
            )
        };
        let i = v.as_int().ok_or_else(wrong)?;
        T::try_from(i).map(Some).map_err(|_| wrong())
    }

    /// An F32 or F64 value; `Ok(None)` when absent.
    pub fn get_float(&self, key: &str) -> Result<Option<f64>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_float().map(Some).ok_or_else(|| {
                GgufError::metadata(key, format!("is {}, expected a float", v.describe()))
            }),
        }
    }

    /// A string value; `Ok(None)` when absent.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| {
                GgufError::metadata(key, format!("is {}, expected a string", v.describe()))
            }),
        }
    }

    /// A bool value; `Ok(None)` when absent.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| {
                GgufError::metadata(key, format!("is {}, expected a bool", v.describe()))
            }),
        }
    }

    /// A required value, with an error naming the key when it is missing.
    pub fn require<'a, T>(
        &'a self,
        key: &str,
        get: impl FnOnce(&'a Self, &str) -> Result<Option<T>, GgufError>,
    ) -> Result<T, GgufError> {
        get(self, key)?.ok_or_else(|| GgufError::metadata(key, "is missing"))
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw (quantised) bytes of a tensor of this file.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8], GgufError> {
        let start = self.data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.n_bytes));
        match (start, end) {
            (Some(s), Some(e)) => self
                .storage
                .bytes()
                .get(s as usize..e as usize)
                .ok_or_else(|| GgufError::tensor(&info.name, "data lies outside the file")),
            _ => Err(GgufError::tensor(&info.name, "data offset overflows")),
        }
    }

    /// Dequantises the tensor `name` to f32, in file order (`dims[0]` fastest).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let info = self
            .tensor(name)
            .ok_or_else(|| GgufError::tensor(name, "is not in the file"))?;
        self.dequantize_info(info)
    }

    /// Like [`Self::dequantize`], for an info already looked up.
    pub fn dequantize_info(&self, info: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        if !info.ggml_type.can_dequantize() {
            return Err(GgufError::UnsupportedType {
                name: info.name.clone(),
                ty: info.ggml_type,
                supported: GgmlType::supported_list(),
            });
        }
        let bytes = self.tensor_bytes(info)?;
        dequantize(info.ggml_type, bytes, info.n_elements as usize)
            .map_err(|e| GgufError::tensor(&info.name, e.to_string()))
    }
}

/// Element count and byte size of a tensor, rejecting overflow and rows that are not whole blocks.
fn tensor_size(name: &str, dims: &[u64], ty: GgmlType) -> Result<(u64, u64), GgufError> {
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| GgufError::tensor(name, format!("dims {dims:?} overflow")))?;
    let block = ty.block_size() as u64;
    let inner = dims.first().copied().unwrap_or(1);
    if inner % block != 0 {
        return Err(GgufError::tensor(
            name,
            format!("innermost dim {inner} is not a multiple of the {ty} block size {block}"),
        ));
    }
    let n_bytes = (n_elements / block)
        .checked_mul(ty.type_size() as u64)
        .ok_or_else(|| GgufError::tensor(name, format!("dims {dims:?} overflow")))?;
    Ok((n_elements, n_bytes))
}

/// A bounds-checked little-endian cursor.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let remaining = (self.bytes.len() - self.pos) as u64;
        if n > remaining {
            return Err(GgufError::Truncated {
                what: what.to_owned(),
                offset: self.pos as u64,
                needed: n,
                len: self.bytes.len() as u64,
            });
        }
        let n = n as usize;
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Rejects a count of items that cannot fit in the rest of the file (so that a corrupt count never
    /// drives a huge allocation).
    fn check_count(&self, count: u64, min_item_size: u64, what: &str) -> Result<(), GgufError> {
        let remaining = (self.bytes.len() - self.pos) as u64;
        match count.checked_mul(min_item_size) {
            Some(n) if n <= remaining => Ok(()),
            _ => Err(GgufError::Truncated {
                what: format!("{count} {what}"),
                offset: self.pos as u64,
                needed: count.saturating_mul(min_item_size),
                len: self.bytes.len() as u64,
            }),
        }
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let start = self.pos;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec())
            .map_err(|e| GgufError::Malformed(format!("{what} at byte {start} is not UTF-8: {e}")))
    }

    fn value(
        &mut self,
        ty: ValueType,
        key: &str,
        depth: usize,
    ) -> Result<MetadataValue, GgufError> {
        use MetadataValue as V;
        Ok(match ty {
            ValueType::U8 => V::U8(self.array::<1>(key)?[0]),
            ValueType::I8 => V::I8(i8::from_le_bytes(self.array(key)?)),
            ValueType::U16 => V::U16(u16::from_le_bytes(self.array(key)?)),
            ValueType::I16 => V::I16(i16::from_le_bytes(self.array(key)?)),
            ValueType::U32 => V::U32(u32::from_le_bytes(self.array(key)?)),
            ValueType::I32 => V::I32(i32::from_le_bytes(self.array(key)?)),
            ValueType::F32 => V::F32(f32::from_le_bytes(self.array(key)?)),
            ValueType::U64 => V::U64(u64::from_le_bytes(self.array(key)?)),
            ValueType::I64 => V::I64(i64::from_le_bytes(self.array(key)?)),
            ValueType::F64 => V::F64(f64::from_le_bytes(self.array(key)?)),
            ValueType::Bool => match self.array::<1>(key)?[0] {
                0 => V::Bool(false),
                1 => V::Bool(true),
                b => return Err(GgufError::metadata(key, format!("bool has byte value {b}"))),
            },
            ValueType::String => V::String(self.string(key)?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::metadata(
                        key,
                        format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
                    ));
                }
                let elem = self.u32(key)?;
                let elem_type = ValueType::from_u32(elem).ok_or_else(|| {
                    GgufError::metadata(key, format!("array of unknown value type {elem}"))
                })?;
                let count = self.u64(key)?;
                self.check_count(
                    count,
                    elem_type.min_size(),
                    &format!("array items of `{key}`"),
                )?;
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_type, key, depth + 1)?);
                }
                V::Array { elem_type, items }
            }
        })
    }
}
