//! HF checkpoint weights on the host: read `model.safetensors` or a sharded checkpoint
//! (`model.safetensors.index.json` + shards) in f32, f16 or bf16 into f32 host tensors, and write them
//! back as one safetensors file in the dtype asked for.
//!
//! This layer knows nothing about the model or burn, so the GGUF importer and the verifier-side tools
//! can use it without the `model` feature.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, View};
use serde_json::Value;

/// Errors reading or writing checkpoint weights; each names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid safetensors file: {message}")]
    Format { path: PathBuf, message: String },
    #[error("tensor `{name}` in {path} has dtype {dtype:?}; supported are F32, F16 and BF16")]
    Dtype { name: String, path: PathBuf, dtype: Dtype },
    #[error("no weights in {0}: expected model.safetensors or model.safetensors.index.json")]
    Missing(PathBuf),
    #[error("tensor `{0}` appears in more than one shard")]
    Duplicate(String),
}

/// A dense row-major f32 tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }
}

/// The dtype weights are saved in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveDtype {
    F32,
    F16,
    Bf16,
}

impl SaveDtype {
    /// The name transformers uses in `config.json`'s `torch_dtype`.
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::Bf16 => "bfloat16",
        }
    }

    fn safetensors_dtype(self) -> Dtype {
        match self {
            Self::F32 => Dtype::F32,
            Self::F16 => Dtype::F16,
            Self::Bf16 => Dtype::BF16,
        }
    }
}

impl std::str::FromStr for SaveDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "float32" => Ok(Self::F32),
            "f16" | "float16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => Err(format!("unknown dtype {other:?}; use f32, f16 or bf16")),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

/// Reads every tensor of an HF checkpoint directory, converting to f32.
pub fn read_weights(dir: &Path) -> Result<HashMap<String, HostTensor>, CheckpointError> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(io(&index))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| CheckpointError::Format { path: index.clone(), message: e.to_string() })?;
        let map = json.get("weight_map").and_then(Value::as_object).ok_or_else(|| {
            CheckpointError::Format { path: index.clone(), message: "no `weight_map` object".into() }
        })?;
        let mut shards: Vec<PathBuf> = map.values().filter_map(Value::as_str).map(|f| dir.join(f)).collect();
        shards.sort();
        shards.dedup();
        shards
    } else if single.exists() {
        vec![single]
    } else {
        return Err(CheckpointError::Missing(dir.to_path_buf()));
    };
    let mut out = HashMap::new();
    for file in files {
        for (name, tensor) in read_safetensors(&file)? {
            if out.insert(name.clone(), tensor).is_some() {
                return Err(CheckpointError::Duplicate(name));
            }
        }
    }
    Ok(out)
}

/// Reads one safetensors file, converting every tensor to f32.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, HostTensor)>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| CheckpointError::Format { path: path.to_path_buf(), message: e.to_string() })?;
    let mut out = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            dtype => return Err(CheckpointError::Dtype { name, path: path.to_path_buf(), dtype }),
        };
        out.push((name, HostTensor::new(view.shape().to_vec(), data)));
    }
    Ok(out)
}

/// One tensor encoded for writing.
struct Encoded {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Encoded {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn encode(t: &HostTensor, dtype: SaveDtype) -> Encoded {
    let bytes = match dtype {
        SaveDtype::F32 => t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        SaveDtype::F16 => t.data.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
        SaveDtype::Bf16 => t.data.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
    };
    Encoded { dtype: dtype.safetensors_dtype(), shape: t.shape.clone(), bytes }
}

/// Writes tensors to one safetensors file (with `{"format": "pt"}` metadata, as transformers expects),
/// via a temporary file renamed into place so a crash never leaves a half-written checkpoint.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, HostTensor)],
    dtype: SaveDtype,
) -> Result<(), CheckpointError> {
    let encoded: BTreeMap<&str, Encoded> = tensors.iter().map(|(n, t)| (n.as_str(), encode(t, dtype))).collect();
    let views = encoded.iter().map(|(n, e)| (*n, e));
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, metadata, &tmp)
        .map_err(|e| CheckpointError::Format { path: tmp.clone(), message: e.to_string() })?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_each_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let t = HostTensor::new(vec![2, 3], vec![0.5, -1.25, 3.0, 1e-3, -7.5, 65504.0]);
        for dtype in [SaveDtype::F32, SaveDtype::F16, SaveDtype::Bf16] {
            let path = dir.path().join("model.safetensors");
            write_safetensors(&path, &[("w".into(), t.clone())], dtype).unwrap();
            let back = read_weights(dir.path()).unwrap();
            let w = &back["w"];
            assert_eq!(w.shape, vec![2, 3]);
            let tol = match dtype {
                SaveDtype::F32 => 0.0,
                SaveDtype::F16 => 1e-3,
                SaveDtype::Bf16 => 1e-2,
            };
            for (a, b) in w.data.iter().zip(&t.data) {
                assert!((a - b).abs() <= tol * b.abs().max(1.0), "{dtype:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn missing_and_corrupt_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read_weights(dir.path()), Err(CheckpointError::Missing(_))));
        std::fs::write(dir.path().join("model.safetensors"), b"\x10\0\0\0\0\0\0\0{not json").unwrap();
        let err = read_weights(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
    }
}
