//! GGUF reader, dequantisers and importer against files the tests write themselves, plus the real
//! SmolLM2-135M-Instruct GGUF when `scripts/setup-model.sh` has cached it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use proptest::prelude::*;
use rlvr_common::gguf::{
    GgmlType, GgufError, GgufFile, GgufTensorData, MetadataValue, ValueType, encode_gguf,
    hf_tensor_name, import_gguf, unpermute_qk_rows, write_gguf,
};

fn kv(key: &str, value: MetadataValue) -> (String, MetadataValue) {
    (key.to_owned(), value)
}

fn s(v: &str) -> MetadataValue {
    MetadataValue::String(v.to_owned())
}

fn tensor<'a>(name: &str, dims: &[u64], ggml_type: GgmlType, data: &'a [u8]) -> GgufTensorData<'a> {
    GgufTensorData {
        name: name.to_owned(),
        dims: dims.to_vec(),
        ggml_type,
        data,
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn h(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

/// Small deterministic generator (tests only need variety, not quality).
struct Lcg(u64);

impl Lcg {
    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    /// Multiples of 1/64 in [-2, 2): exact in f32 and f16.
    fn value(&mut self) -> f32 {
        (self.next_u32() % 256) as f32 / 64.0 - 2.0
    }

    fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.value()).collect()
    }
}

// ---------------------------------------------------------------------------------------------------
// Reader

fn all_metadata_types() -> Vec<(String, MetadataValue)> {
    use MetadataValue as V;
    vec![
        kv("u8", V::U8(200)),
        kv("i8", V::I8(-100)),
        kv("u16", V::U16(60_000)),
        kv("i16", V::I16(-30_000)),
        kv("u32", V::U32(4_000_000_000)),
        kv("i32", V::I32(-2_000_000_000)),
        kv("f32", V::F32(1e-5)),
        kv("bool", V::Bool(true)),
        kv("string", s("héllo, GGUF")),
        kv("u64", V::U64(u64::MAX)),
        kv("i64", V::I64(i64::MIN)),
        kv("f64", V::F64(-2.5e300)),
        kv("strings", MetadataValue::strings(["a", "", "Ġthe"])),
        kv("i32s", MetadataValue::i32s([1, -2, 3])),
        kv(
            "empty",
            V::Array {
                elem_type: ValueType::F32,
                items: vec![],
            },
        ),
        kv(
            "nested",
            V::Array {
                elem_type: ValueType::Array,
                items: vec![MetadataValue::i32s([7]), MetadataValue::i32s([8, 9])],
            },
        ),
    ]
}

#[test]
fn metadata_of_every_type_round_trips() {
    let metadata = all_metadata_types();
    let data = f32_bytes(&[1.0, 2.0, 3.0]);
    let bytes = encode_gguf(&metadata, &[tensor("t", &[3], GgmlType::F32, &data)]).unwrap();
    let file = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.metadata(), metadata.as_slice());
    assert_eq!(file.get_int::<u64>("u64").unwrap(), Some(u64::MAX));
    assert_eq!(file.get_int::<i64>("i16").unwrap(), Some(-30_000));
    assert!(file.get_int::<u8>("i16").is_err(), "-30000 does not fit u8");
    assert_eq!(file.get_float("f32").unwrap(), Some(f64::from(1e-5f32)));
    assert_eq!(file.get_str("string").unwrap(), Some("héllo, GGUF"));
    assert_eq!(file.get_bool("bool").unwrap(), Some(true));
    assert_eq!(file.get_str("absent").unwrap(), None);
    let err = file.get_str("u8").unwrap_err().to_string();
    assert!(
        err.contains("`u8`") && err.contains("expected a string"),
        "{err}"
    );
    let err = file
        .require("absent", GgufFile::get_str)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`absent`") && err.contains("missing"), "{err}");
}

#[test]
fn default_alignment_is_32_and_offsets_are_aligned() {
    let a = f32_bytes(&[1.0, 2.0, 3.0]); // 12 bytes: the next tensor needs padding
    let b = f32_bytes(&[4.0, 5.0]);
    let bytes = encode_gguf(
        &[kv("general.name", s("x"))],
        &[
            tensor("a", &[3], GgmlType::F32, &a),
            tensor("b", &[2], GgmlType::F32, &b),
        ],
    )
    .unwrap();
    let file = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(file.alignment(), 32);
    assert_eq!(file.data_offset() % 32, 0);
    assert_eq!(file.tensor("b").unwrap().offset, 32);
    assert_eq!(file.dequantize("a").unwrap(), vec![1.0, 2.0, 3.0]);
    assert_eq!(file.dequantize("b").unwrap(), vec![4.0, 5.0]);
}

#[test]
fn custom_alignment_is_honoured() {
    let a = f32_bytes(&[1.0; 5]);
    let b = f32_bytes(&[2.0; 6]);
    let bytes = encode_gguf(
        &[kv("general.alignment", MetadataValue::U32(256))],
        &[
            tensor("a", &[5], GgmlType::F32, &a),
            tensor("b", &[3, 2], GgmlType::F32, &b),
        ],
    )
    .unwrap();
    let file = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(file.alignment(), 256);
    assert_eq!(file.data_offset() % 256, 0);
    let info = file.tensor("b").unwrap();
    assert_eq!(info.offset, 256);
    assert_eq!(
        info.shape(),
        vec![2, 3],
        "HF shape is the reverse of the GGUF dims"
    );
    assert_eq!(file.dequantize("b").unwrap(), vec![2.0; 6]);
}

#[test]
fn opens_a_file_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.gguf");
    let data = f32_bytes(&[0.5; 4]);
    write_gguf(
        &path,
        &[kv("general.architecture", s("llama"))],
        &[tensor("t", &[4], GgmlType::F32, &data)],
    )
    .unwrap();
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.dequantize("t").unwrap(), vec![0.5; 4]);
    let err = GgufFile::open(&dir.path().join("missing.gguf")).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------------------
// Dequantisers, through a file

fn dequantize_one(ty: GgmlType, n: u64, data: &[u8]) -> Vec<f32> {
    let bytes = encode_gguf(&[], &[tensor("t", &[n], ty, data)]).unwrap();
    GgufFile::from_bytes(bytes)
        .unwrap()
        .dequantize("t")
        .unwrap()
}

#[test]
fn float_types() {
    let values = [0.0f32, -1.5, 3.25, 65504.0];
    assert_eq!(
        dequantize_one(GgmlType::F32, 4, &f32_bytes(&values)),
        values
    );
    let f16s: Vec<u8> = values.iter().flat_map(|v| h(*v)).collect();
    assert_eq!(dequantize_one(GgmlType::F16, 4, &f16s), values);
    let bf16s: Vec<u8> = [1.0f32, -2.0, 0.15625, 1e30]
        .iter()
        .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
        .collect();
    let y = dequantize_one(GgmlType::BF16, 4, &bf16s);
    assert_eq!(&y[..3], &[1.0, -2.0, 0.15625]);
    assert_eq!(y[3], bf16::from_f32(1e30).to_f32());
}

#[test]
fn q8_0() {
    // two blocks: d = 0.5 with q = -16..16, d = -2 with q = 127, -128, 0...
    let mut b = h(0.5).to_vec();
    b.extend((-16i8..16).map(|q| q as u8));
    b.extend(h(-2.0));
    b.extend([127i8 as u8, -128i8 as u8]);
    b.extend([0u8; 30]);
    let y = dequantize_one(GgmlType::Q8_0, 64, &b);
    for (j, q) in (-16..16).enumerate() {
        assert_eq!(y[j], q as f32 * 0.5);
    }
    assert_eq!(&y[32..35], &[-254.0, 256.0, 0.0]);
}

#[test]
fn q4_0() {
    let mut b = h(0.25).to_vec();
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let y = dequantize_one(GgmlType::Q4_0, 32, &b);
    for j in 0..16 {
        assert_eq!(y[j], (j as f32 - 8.0) * 0.25, "low nibble of byte {j}");
        assert_eq!(
            y[j + 16],
            (7.0 - j as f32) * 0.25,
            "high nibble of byte {j}"
        );
    }
}

#[test]
fn q4_1() {
    let mut b = h(0.5).to_vec();
    b.extend(h(-1.0));
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let y = dequantize_one(GgmlType::Q4_1, 32, &b);
    for j in 0..16 {
        assert_eq!(y[j], j as f32 * 0.5 - 1.0);
        assert_eq!(y[j + 16], (15 - j) as f32 * 0.5 - 1.0);
    }
}

#[test]
fn q5_0() {
    let mut b = h(1.0).to_vec();
    let qh: u32 = 0b1010_1010_1010_1010_0000_0000_1111_1111; // high bits of elements 0..8 and odd 17..31
    b.extend(qh.to_le_bytes());
    b.extend((0..16u8).map(|j| j | (j << 4)));
    let y = dequantize_one(GgmlType::Q5_0, 32, &b);
    for (j, y) in y.iter().enumerate() {
        let low = (j % 16) as u32;
        let q = low | (((qh >> j) & 1) << 4);
        assert_eq!(*y, q as f32 - 16.0, "element {j}");
    }
}

#[test]
fn q5_1() {
    let mut b = h(0.5).to_vec();
    b.extend(h(1.0));
    let qh: u32 = 0xF0F0_0F0F;
    b.extend(qh.to_le_bytes());
    b.extend((0..16u8).map(|j| (15 - j) | (j << 4)));
    let y = dequantize_one(GgmlType::Q5_1, 32, &b);
    for (j, y) in y.iter().enumerate() {
        let low = if j < 16 { 15 - j as u32 } else { j as u32 - 16 };
        let q = low | (((qh >> j) & 1) << 4);
        assert_eq!(*y, q as f32 * 0.5 + 1.0, "element {j}");
    }
}

#[test]
fn unsupported_type_is_named() {
    let bytes = encode_gguf(&[], &[tensor("w", &[256], GgmlType::IQ2_XXS, &[0; 66])]).unwrap();
    let file = GgufFile::from_bytes(bytes).unwrap();
    let err = file.dequantize("w").unwrap_err().to_string();
    assert!(
        err.contains("`w`") && err.contains("IQ2_XXS") && err.contains("Q4_1"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------------
// Malformed input

fn small_valid_file() -> Vec<u8> {
    let q8: Vec<u8> = {
        let mut b = h(0.5).to_vec();
        b.extend(1..=32u8);
        b
    };
    let f = f32_bytes(&[1.0, 2.0, 3.0]);
    encode_gguf(
        &[
            kv("general.architecture", s("llama")),
            kv("tokenizer.ggml.tokens", MetadataValue::strings(["a", "b"])),
            kv("x", MetadataValue::U32(7)),
        ],
        &[
            tensor("q", &[32], GgmlType::Q8_0, &q8),
            tensor("f", &[3], GgmlType::F32, &f),
        ],
    )
    .unwrap()
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = small_valid_file();
    assert!(GgufFile::from_bytes(bytes.clone()).is_ok());
    for len in 0..bytes.len() {
        let result = GgufFile::from_bytes(bytes[..len].to_vec());
        assert!(
            result.is_err(),
            "a file cut at {len} of {} bytes parsed",
            bytes.len()
        );
    }
    let err = GgufFile::from_bytes(bytes[..bytes.len() - 1].to_vec()).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("tensor `f`"), "{err}");
}

#[test]
fn bad_headers_are_named() {
    let good = small_valid_file();
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(
        GgufFile::from_bytes(bad).unwrap_err(),
        GgufError::BadMagic { .. }
    ));
    let mut bad = good.clone();
    bad[4] = 9;
    assert!(matches!(
        GgufFile::from_bytes(bad).unwrap_err(),
        GgufError::UnsupportedVersion(9)
    ));
    // a metadata count of 2^60 must be rejected before anything is allocated
    let mut bad = good.clone();
    bad[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(matches!(
        GgufFile::from_bytes(bad).unwrap_err(),
        GgufError::Truncated { .. }
    ));
    // the first key is `general.architecture` (8 + 20 bytes from 24), then its value type
    let mut bad = good.clone();
    bad[52..56].copy_from_slice(&99u32.to_le_bytes());
    let err = GgufFile::from_bytes(bad).unwrap_err().to_string();
    assert!(
        err.contains("general.architecture") && err.contains("unknown value type 99"),
        "{err}"
    );
}

#[test]
fn huge_array_count_is_rejected() {
    let mut bytes = encode_gguf(&[kv("arr", MetadataValue::i32s([1, 2]))], &[]).unwrap();
    // header 24 + key (8 + 3) + type 4 + elem type 4 = 43: the count follows
    bytes[43..51].copy_from_slice(&u64::MAX.to_le_bytes());
    let err = GgufFile::from_bytes(bytes).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
}

#[test]
fn misaligned_tensor_offset_is_rejected() {
    let data = f32_bytes(&[1.0]);
    let mut bytes = encode_gguf(&[], &[tensor("t", &[1], GgmlType::F32, &data)]).unwrap();
    // header 24 + name (8 + 1) + n_dims 4 + dim 8 + type 4 = 49: the offset follows
    bytes[49..57].copy_from_slice(&4u64.to_le_bytes());
    let err = GgufFile::from_bytes(bytes).unwrap_err().to_string();
    assert!(err.contains("`t`") && err.contains("alignment"), "{err}");
}

#[test]
fn writer_rejects_a_wrong_data_length() {
    let err = encode_gguf(&[], &[tensor("t", &[32], GgmlType::Q8_0, &[0; 33])]).unwrap_err();
    assert!(err.to_string().contains("need 34 bytes"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Corrupted files parse or fail; they never panic, and neither does dequantising what parsed.
    #[test]
    fn corrupted_files_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = small_valid_file();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if do_cut {
            let len = cut.index(bytes.len());
            bytes.truncate(len);
        }
        if let Ok(file) = GgufFile::from_bytes(bytes) {
            for t in file.tensors().to_vec() {
                let _ = file.dequantize(&t.name);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Q/K permutation

/// llama.cpp's `permute` (`convert_hf_to_gguf.py`), written as the reshape it is:
/// `w.reshape(n_heads, 2, rows / n_heads / 2, cols).swapaxes(1, 2)`.
fn llama_cpp_permute(w: &[f32], n_heads: usize, cols: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let half = rows / n_heads / 2;
    let mut out = Vec::with_capacity(w.len());
    for h in 0..n_heads {
        for i in 0..half {
            for j in 0..2 {
                let src = ((h * 2 + j) * half + i) * cols;
                out.extend_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

#[test]
fn unpermute_inverts_llama_cpp_permute() {
    // one head of four rows: llama.cpp order is [r0, r2, r1, r3]
    let w = [0.0, 1.0, 2.0, 3.0];
    assert_eq!(llama_cpp_permute(&w, 1, 1), vec![0.0, 2.0, 1.0, 3.0]);
    assert_eq!(unpermute_qk_rows(&[0.0, 2.0, 1.0, 3.0], 1, 1).unwrap(), w);

    let mut rng = Lcg(7);
    for (n_heads, head_dim, cols) in [(9, 64, 5), (3, 64, 3), (2, 8, 1), (4, 4, 7)] {
        let w = rng.values(n_heads * head_dim * cols);
        let permuted = llama_cpp_permute(&w, n_heads, cols);
        assert_ne!(permuted, w);
        assert_eq!(
            unpermute_qk_rows(&permuted, n_heads, cols).unwrap(),
            w,
            "{n_heads} heads of {head_dim}"
        );
    }
    assert!(
        unpermute_qk_rows(&[0.0; 6], 2, 1).is_err(),
        "3 rows per head is not an even head_dim"
    );
}

#[test]
fn tensor_names_map_to_hf() {
    assert_eq!(
        hf_tensor_name("token_embd.weight").unwrap(),
        "model.embed_tokens.weight"
    );
    assert_eq!(hf_tensor_name("output.weight").unwrap(), "lm_head.weight");
    assert_eq!(
        hf_tensor_name("output_norm.weight").unwrap(),
        "model.norm.weight"
    );
    assert_eq!(
        hf_tensor_name("blk.12.attn_q.weight").unwrap(),
        "model.layers.12.self_attn.q_proj.weight"
    );
    assert_eq!(
        hf_tensor_name("blk.0.attn_output.weight").unwrap(),
        "model.layers.0.self_attn.o_proj.weight"
    );
    assert_eq!(
        hf_tensor_name("blk.0.ffn_norm.weight").unwrap(),
        "model.layers.0.post_attention_layernorm.weight"
    );
    assert_eq!(
        hf_tensor_name("blk.1.ffn_down.weight").unwrap(),
        "model.layers.1.mlp.down_proj.weight"
    );
    assert_eq!(hf_tensor_name("rope_freqs.weight"), None);
    assert_eq!(hf_tensor_name("blk.x.attn_q.weight"), None);
}

// ---------------------------------------------------------------------------------------------------
// Importer, on a tiny synthetic llama

/// GPT-2's byte -> printable character table (`bytes_to_unicode`).
fn byte_chars() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap()
            }
        })
        .collect()
}

struct TinyLlama {
    /// HF name -> (HF shape, HF-order values)
    expected: HashMap<String, (Vec<usize>, Vec<f32>)>,
    vocab: Vec<String>,
}

const HIDDEN: usize = 32;
const HEADS: usize = 2;
const KV_HEADS: usize = 1;
const HEAD_DIM: usize = 16;
const FFN: usize = 64;
const LAYERS: usize = 2;

fn write_tiny_llama(
    path: &Path,
    arch: &str,
    tied: bool,
    extra: &[(String, MetadataValue)],
) -> TinyLlama {
    let mut vocab: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    vocab.extend(byte_chars().iter().map(|c| c.to_string()));
    vocab.extend(["ab", "abc", "Ġt"].map(String::from));
    let n_vocab = vocab.len();
    let mut token_type = vec![3; 3];
    token_type.resize(n_vocab, 1);

    let mut metadata = vec![
        kv("general.architecture", s(arch)),
        kv("general.name", s("tiny")),
        kv(
            &format!("{arch}.block_count"),
            MetadataValue::U32(LAYERS as u32),
        ),
        kv(&format!("{arch}.context_length"), MetadataValue::U32(128)),
        kv(
            &format!("{arch}.embedding_length"),
            MetadataValue::U32(HIDDEN as u32),
        ),
        kv(
            &format!("{arch}.feed_forward_length"),
            MetadataValue::U32(FFN as u32),
        ),
        kv(
            &format!("{arch}.attention.head_count"),
            MetadataValue::U32(HEADS as u32),
        ),
        kv(
            &format!("{arch}.attention.head_count_kv"),
            MetadataValue::U32(KV_HEADS as u32),
        ),
        kv(
            &format!("{arch}.rope.freq_base"),
            MetadataValue::F32(100_000.0),
        ),
        kv(
            &format!("{arch}.attention.layer_norm_rms_epsilon"),
            MetadataValue::F32(1e-5),
        ),
        kv(
            &format!("{arch}.rope.dimension_count"),
            MetadataValue::U32(HEAD_DIM as u32),
        ),
        kv("tokenizer.ggml.model", s("gpt2")),
        kv("tokenizer.ggml.pre", s("smollm")),
        kv(
            "tokenizer.ggml.tokens",
            MetadataValue::strings(vocab.clone()),
        ),
        kv("tokenizer.ggml.token_type", MetadataValue::i32s(token_type)),
        kv(
            "tokenizer.ggml.merges",
            MetadataValue::strings(["a b", "ab c", "Ġ t"]),
        ),
        kv("tokenizer.ggml.bos_token_id", MetadataValue::U32(1)),
        kv("tokenizer.ggml.eos_token_id", MetadataValue::U32(2)),
        kv("tokenizer.ggml.padding_token_id", MetadataValue::U32(2)),
        kv(
            "tokenizer.chat_template",
            s("{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"),
        ),
    ];
    metadata.extend_from_slice(extra);

    let mut rng = Lcg(42);
    let mut expected = HashMap::new();
    // (gguf name, HF shape, file bytes, type)
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>, GgmlType)> = Vec::new();

    // token_embd as Q8_0 with d = 1/64: values q / 64, exact
    let mut embd_bytes = Vec::new();
    let mut embd = Vec::new();
    for _ in 0..(n_vocab * HIDDEN / 32) {
        embd_bytes.extend(h(1.0 / 64.0));
        for _ in 0..32 {
            let q = (rng.next_u32() % 255) as i32 - 127;
            embd_bytes.push(q as i8 as u8);
            embd.push(q as f32 / 64.0);
        }
    }
    expected.insert(
        "model.embed_tokens.weight".to_owned(),
        (vec![n_vocab, HIDDEN], embd),
    );
    tensors.push((
        "token_embd.weight".into(),
        vec![n_vocab, HIDDEN],
        embd_bytes,
        GgmlType::Q8_0,
    ));

    let mut plain = |gguf: String,
                     hf: String,
                     shape: Vec<usize>,
                     ty: GgmlType,
                     permute_heads: Option<usize>| {
        let n: usize = shape.iter().product();
        let values = rng.values(n);
        let file_values = match permute_heads {
            Some(heads) => llama_cpp_permute(&values, heads, shape[1]),
            None => values.clone(),
        };
        let bytes = match ty {
            GgmlType::F16 => file_values.iter().flat_map(|v| h(*v)).collect(),
            _ => f32_bytes(&file_values),
        };
        expected.insert(hf, (shape.clone(), values));
        tensors.push((gguf, shape, bytes, ty));
    };
    plain(
        "output_norm.weight".into(),
        "model.norm.weight".into(),
        vec![HIDDEN],
        GgmlType::F32,
        None,
    );
    if !tied {
        plain(
            "output.weight".into(),
            "lm_head.weight".into(),
            vec![n_vocab, HIDDEN],
            GgmlType::F16,
            None,
        );
    }
    for l in 0..LAYERS {
        let mut layer = |g: &str, hf: &str, shape: Vec<usize>, ty, heads| {
            plain(
                format!("blk.{l}.{g}.weight"),
                format!("model.layers.{l}.{hf}.weight"),
                shape,
                ty,
                heads,
            )
        };
        layer(
            "attn_norm",
            "input_layernorm",
            vec![HIDDEN],
            GgmlType::F32,
            None,
        );
        layer(
            "ffn_norm",
            "post_attention_layernorm",
            vec![HIDDEN],
            GgmlType::F32,
            None,
        );
        layer(
            "attn_q",
            "self_attn.q_proj",
            vec![HEADS * HEAD_DIM, HIDDEN],
            GgmlType::F16,
            Some(HEADS),
        );
        layer(
            "attn_k",
            "self_attn.k_proj",
            vec![KV_HEADS * HEAD_DIM, HIDDEN],
            GgmlType::F32,
            Some(KV_HEADS),
        );
        layer(
            "attn_v",
            "self_attn.v_proj",
            vec![KV_HEADS * HEAD_DIM, HIDDEN],
            GgmlType::F32,
            None,
        );
        layer(
            "attn_output",
            "self_attn.o_proj",
            vec![HIDDEN, HEADS * HEAD_DIM],
            GgmlType::F16,
            None,
        );
        layer(
            "ffn_gate",
            "mlp.gate_proj",
            vec![FFN, HIDDEN],
            GgmlType::F32,
            None,
        );
        layer(
            "ffn_up",
            "mlp.up_proj",
            vec![FFN, HIDDEN],
            GgmlType::F16,
            None,
        );
        layer(
            "ffn_down",
            "mlp.down_proj",
            vec![HIDDEN, FFN],
            GgmlType::F32,
            None,
        );
    }

    let data: Vec<GgufTensorData<'_>> = tensors
        .iter()
        .map(|(name, shape, bytes, ty)| {
            let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
            tensor(name, &dims, *ty, bytes)
        })
        .collect();
    write_gguf(path, &metadata, &data).unwrap();
    TinyLlama { expected, vocab }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn imports_a_tiny_llama() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    let tiny = write_tiny_llama(&gguf, "llama", true, &[]);
    let out = dir.path().join("hf");
    let report = import_gguf(&gguf, &out).unwrap();
    assert_eq!(report.n_tensors, 2 + LAYERS * 9);
    assert_eq!(report.source_types["Q8_0"], 1);
    assert!(report.hyper_params.tie_word_embeddings);
    assert!(!out.join("model.safetensors.partial").exists());

    // weights: every tensor in HF order and shape, Q/K un-permuted, exact values
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), tiny.expected.len());
    for (name, (shape, values)) in &tiny.expected {
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        assert_eq!(t.shape(), shape.as_slice(), "{name}");
        let got: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(&got, values, "{name}");
    }
    assert!(st.tensor("lm_head.weight").is_err(), "tied: no lm_head");

    let config = read_json(&out.join("config.json"));
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(config["model_type"], "llama");
    assert_eq!(config["hidden_size"], HIDDEN);
    assert_eq!(config["intermediate_size"], FFN);
    assert_eq!(config["num_hidden_layers"], LAYERS);
    assert_eq!(config["num_attention_heads"], HEADS);
    assert_eq!(config["num_key_value_heads"], KV_HEADS);
    assert_eq!(config["head_dim"], HEAD_DIM);
    assert_eq!(config["rms_norm_eps"], 1e-5);
    assert_eq!(config["rope_theta"], 100_000.0);
    assert_eq!(config["max_position_embeddings"], 128);
    assert_eq!(config["vocab_size"], tiny.vocab.len());
    assert_eq!(config["tie_word_embeddings"], true);
    assert_eq!(config["bos_token_id"], 1);
    assert_eq!(config["eos_token_id"], 2);
    assert_eq!(config["pad_token_id"], 2);
    assert_eq!(config["torch_dtype"], "float32");
    let generation = read_json(&out.join("generation_config.json"));
    assert_eq!(generation["eos_token_id"], 2);

    let tok_config = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(tok_config["bos_token"], "<|im_start|>");
    assert_eq!(tok_config["eos_token"], "<|im_end|>");
    assert_eq!(tok_config["pad_token"], "<|im_end|>");
    assert_eq!(tok_config["unk_token"], "<|endoftext|>");
    assert_eq!(tok_config["add_bos_token"], false);
    assert_eq!(tok_config["model_max_length"], 128);
    assert_eq!(tok_config["tokenizer_class"], "GPT2Tokenizer");
    assert!(
        tok_config["chat_template"]
            .as_str()
            .unwrap()
            .contains("<|im_start|>")
    );
    assert_eq!(
        tok_config["added_tokens_decoder"]["2"]["content"],
        "<|im_end|>"
    );

    // tokenizer: digits split one by one, merges applied, control tokens matched whole, no BOS added
    let tokenizer = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    let id = |t: &str| tiny.vocab.iter().position(|v| v == t).unwrap() as u32;
    let enc = tokenizer.encode("abc 12 t<|im_end|>", false).unwrap();
    assert_eq!(
        enc.get_ids(),
        &[id("abc"), id("Ġ"), id("1"), id("2"), id("Ġt"), 2]
    );
    let enc = tokenizer.encode("abc", true).unwrap();
    assert_eq!(
        enc.get_ids(),
        &[id("abc")],
        "add_special_tokens adds nothing"
    );
    assert_eq!(
        tokenizer
            .decode(&[id("abc"), id("Ġt"), id("1")], false)
            .unwrap(),
        "abc t1"
    );
}

#[test]
fn imports_an_untied_llama() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    let tiny = write_tiny_llama(&gguf, "llama", false, &[]);
    let out = dir.path().join("hf");
    let report = import_gguf(&gguf, &out).unwrap();
    assert!(!report.hyper_params.tie_word_embeddings);
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let lm_head = st.tensor("lm_head.weight").unwrap();
    let got: Vec<f32> = lm_head
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got, tiny.expected["lm_head.weight"].1);
    assert_eq!(
        read_json(&out.join("config.json"))["tie_word_embeddings"],
        false
    );
}

#[test]
fn add_bos_token_becomes_a_template() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    let tiny = write_tiny_llama(
        &gguf,
        "llama",
        true,
        &[kv(
            "tokenizer.ggml.add_bos_token",
            MetadataValue::Bool(true),
        )],
    );
    let out = dir.path().join("hf");
    import_gguf(&gguf, &out).unwrap();
    let tokenizer = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    let abc = tiny.vocab.iter().position(|v| v == "abc").unwrap() as u32;
    assert_eq!(tokenizer.encode("abc", true).unwrap().get_ids(), &[1, abc]);
    assert_eq!(tokenizer.encode("abc", false).unwrap().get_ids(), &[abc]);
    assert_eq!(
        read_json(&out.join("tokenizer_config.json"))["add_bos_token"],
        true
    );
}

#[test]
fn other_architectures_are_rejected_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    write_tiny_llama(&gguf, "qwen2", true, &[]);
    let err = import_gguf(&gguf, &dir.path().join("hf"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("general.architecture") && err.contains("qwen2"),
        "{err}"
    );
    assert!(
        !dir.path().join("hf").exists(),
        "nothing is written for a rejected file"
    );
}

#[test]
fn wrong_shapes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    write_tiny_llama(&gguf, "llama", true, &[]);
    // head_dim 8: q_proj's 32 rows no longer match 2 heads * 8
    let file = GgufFile::open(&gguf).unwrap();
    let mut metadata = file.metadata().to_vec();
    metadata.retain(|(k, _)| k != "llama.rope.dimension_count");
    metadata.push(kv("llama.attention.key_length", MetadataValue::U32(8)));
    let infos = file.tensors().to_vec();
    let bytes: Vec<Vec<u8>> = infos
        .iter()
        .map(|t| file.tensor_bytes(t).unwrap().to_vec())
        .collect();
    let data: Vec<GgufTensorData<'_>> = infos
        .iter()
        .zip(&bytes)
        .map(|(t, b)| tensor(&t.name, &t.dims, t.ggml_type, b))
        .collect();
    let bad = dir.path().join("bad.gguf");
    write_gguf(&bad, &metadata, &data).unwrap();
    let err = import_gguf(&bad, &dir.path().join("hf"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("blk.0.attn_q.weight") && err.contains("[16, 32]"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------------
// The real model

fn smollm2_gguf() -> Option<PathBuf> {
    let path = match std::env::var_os("RLVR_SMOLLM2_GGUF") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/.cache/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    if path.exists() {
        Some(path)
    } else {
        // CI runs the setup first, so there a missing file is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "{} is absent; run scripts/setup-model.sh", path.display());
        println!(
            "skipped: {} is absent (run scripts/setup-model.sh)",
            path.display()
        );
        None
    }
}

#[test]
fn imports_smollm2_when_cached() {
    let Some(path) = smollm2_gguf() else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.tensors().len(), 272);
    assert_eq!(file.get_str("tokenizer.ggml.pre").unwrap(), Some("smollm"));

    // RLVR_GGUF_IMPORT_DIR keeps the imported directory for inspection (e.g. to diff against transformers).
    let dir = tempfile::tempdir().unwrap();
    let out = std::env::var_os("RLVR_GGUF_IMPORT_DIR")
        .map_or_else(|| dir.path().to_owned(), PathBuf::from);
    let started = std::time::Instant::now();
    let report = import_gguf(&path, &out).unwrap();
    println!("imported {} in {:.2?}", path.display(), started.elapsed());
    let p = &report.hyper_params;
    assert_eq!(
        (
            p.num_hidden_layers,
            p.hidden_size,
            p.intermediate_size,
            p.num_attention_heads,
            p.num_key_value_heads
        ),
        (30, 576, 1536, 9, 3)
    );
    assert_eq!(
        (p.head_dim, p.vocab_size, p.max_position_embeddings),
        (64, 49152, 8192)
    );
    assert_eq!((p.rms_norm_eps, p.rope_theta), (1e-5, 100_000.0));
    assert!(p.tie_word_embeddings);
    assert_eq!(
        (p.bos_token_id, p.eos_token_id, p.pad_token_id),
        (Some(1), Some(2), Some(2))
    );
    assert_eq!(report.n_tensors, 272);
    assert_eq!(report.source_types["Q4_1"], 210);
    assert_eq!(report.source_types["F32"], 61);
    assert_eq!(report.source_types["Q8_0"], 1);
    assert_eq!(report.n_parameters, 134_515_008);

    let tokenizer = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    let text = "The capital of France is Paris. 12345";
    let enc = tokenizer.encode(text, true).unwrap();
    let tokens = enc.get_tokens();
    assert_eq!(&tokens[..3], &["The", "Ġcapital", "Ġof"], "{tokens:?}");
    assert_eq!(
        &tokens[tokens.len() - 5..],
        &["1", "2", "3", "4", "5"],
        "digits split one by one: {tokens:?}"
    );
    assert_eq!(tokenizer.decode(enc.get_ids(), false).unwrap(), text);
    let chat = "<|im_start|>user\nHi<|im_end|>\n";
    let ids = tokenizer.encode(chat, true).unwrap().get_ids().to_vec();
    assert_eq!(
        (ids[0], ids[ids.len() - 2]),
        (1, 2),
        "control tokens are single ids: {ids:?}"
    );
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), chat);
    println!("SmolLM2 encodes {text:?} as {:?}", enc.get_ids());
}
