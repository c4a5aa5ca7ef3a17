//! HF `tokenizer.json` / `tokenizer_config.json` from a GGUF vocabulary (`tokenizer.ggml.*`).
//!
//! Only byte-level BPE (`tokenizer.ggml.model = gpt2`) is converted. The pre-tokenizer is chosen by
//! `tokenizer.ggml.pre`, mirroring llama.cpp's table of pre-tokenizers (`llama-vocab.cpp`) and the HF
//! tokenizer each entry was taken from: `smollm` splits digits one by one before the GPT-2 byte-level
//! split (SmolLM2's original `tokenizer.json`); `gpt2` is the plain GPT-2 split.

use serde_json::{Map, Value, json};

use super::{GgufError, GgufFile};

/// llama.cpp token types (`llama_token_type`).
const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_UNKNOWN: i32 = 2;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";

/// The vocabulary as read from the GGUF metadata.
struct Vocab<'a> {
    tokens: Vec<&'a str>,
    token_types: Vec<i32>,
    merges: Vec<(&'a str, &'a str)>,
    pre: &'a str,
}

fn string_array<'a>(gguf: &'a GgufFile, key: &str) -> Result<Vec<&'a str>, GgufError> {
    let value = gguf
        .get(key)
        .ok_or_else(|| GgufError::metadata(key, "is missing"))?;
    let items = value.as_array().ok_or_else(|| {
        GgufError::metadata(
            key,
            format!("is {}, expected an array of strings", value.describe()),
        )
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().ok_or_else(|| {
                GgufError::metadata(
                    key,
                    format!("item {i} is {}, expected a string", v.describe()),
                )
            })
        })
        .collect()
}

impl<'a> Vocab<'a> {
    fn from_gguf(gguf: &'a GgufFile) -> Result<Self, GgufError> {
        let model = gguf.require(KEY_MODEL, GgufFile::get_str)?;
        if model != "gpt2" {
            return Err(GgufError::metadata(
                KEY_MODEL,
                format!("is `{model}`: only `gpt2` (byte-level BPE) tokenizers can be converted"),
            ));
        }
        let pre = gguf.require(KEY_PRE, GgufFile::get_str)?;
        if !matches!(pre, "smollm" | "gpt2") {
            return Err(GgufError::metadata(
                KEY_PRE,
                format!("is `{pre}`: only the `smollm` and `gpt2` pre-tokenizers can be converted"),
            ));
        }
        let tokens = string_array(gguf, KEY_TOKENS)?;
        let token_types = match gguf.get(KEY_TOKEN_TYPE) {
            None => vec![TOKEN_TYPE_NORMAL; tokens.len()],
            Some(v) => {
                let items = v.as_array().unwrap_or_default();
                let types: Option<Vec<i32>> = items
                    .iter()
                    .map(|t| t.as_int().and_then(|i| i32::try_from(i).ok()))
                    .collect();
                match types {
                    Some(t) if t.len() == tokens.len() => t,
                    _ => {
                        return Err(GgufError::metadata(
                            KEY_TOKEN_TYPE,
                            format!(
                                "is {}, expected {} integers (one per token)",
                                v.describe(),
                                tokens.len()
                            ),
                        ));
                    }
                }
            }
        };
        let merges = string_array(gguf, KEY_MERGES)?
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                // llama.cpp splits at the first space after the first character (a token may be a space).
                m.char_indices()
                    .skip(1)
                    .find(|&(_, c)| c == ' ')
                    .map(|(at, _)| (&m[..at], &m[at + 1..]))
                    .filter(|(_, right)| !right.is_empty())
                    .ok_or_else(|| {
                        GgufError::metadata(
                            KEY_MERGES,
                            format!("merge {i} ({m:?}) is not `left right`"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            tokens,
            token_types,
            merges,
            pre,
        })
    }

    /// The token text of the id stored under `key`, `Ok(None)` if the key is absent.
    fn special(&self, gguf: &GgufFile, key: &str) -> Result<Option<&'a str>, GgufError> {
        let Some(id) = gguf.get_int::<usize>(key)? else {
            return Ok(None);
        };
        self.tokens.get(id).copied().map(Some).ok_or_else(|| {
            GgufError::metadata(
                key,
                format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.tokens.len()
                ),
            )
        })
    }

    /// Tokens the HF tokenizer must match before BPE: control and unknown tokens (special), and
    /// user-defined ones.
    fn added_tokens(&self) -> impl Iterator<Item = (usize, &'a str, bool)> + '_ {
        self.tokens
            .iter()
            .zip(&self.token_types)
            .enumerate()
            .filter_map(|(id, (&tok, &ty))| match ty {
                TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN => Some((id, tok, true)),
                TOKEN_TYPE_USER_DEFINED => Some((id, tok, false)),
                _ => None,
            })
    }

    fn add_bos(gguf: &GgufFile) -> Result<bool, GgufError> {
        Ok(gguf
            .get_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(false))
    }

    /// `tokenizer.ggml.unknown_token_id`, else `<|endoftext|>` when the vocabulary has it (what GPT-2
    /// style tokenizers, SmolLM2's included, name as their unknown token).
    fn unk(&self, gguf: &GgufFile) -> Result<Option<&'a str>, GgufError> {
        Ok(self
            .special(gguf, "tokenizer.ggml.unknown_token_id")?
            .or_else(|| self.tokens.iter().copied().find(|t| *t == "<|endoftext|>")))
    }
}

fn byte_level() -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
}

/// The HF `tokenizer.json` (as a JSON value) equivalent to the GGUF's tokenizer.
pub fn tokenizer_json(gguf: &GgufFile) -> Result<Value, GgufError> {
    let vocab = Vocab::from_gguf(gguf)?;

    let mut vocab_map = Map::with_capacity(vocab.tokens.len());
    for (id, tok) in vocab.tokens.iter().enumerate() {
        if vocab_map.insert((*tok).to_owned(), json!(id)).is_some() {
            return Err(GgufError::metadata(
                KEY_TOKENS,
                format!("token {tok:?} appears twice (second at id {id})"),
            ));
        }
    }
    let merges: Vec<Value> = vocab.merges.iter().map(|(a, b)| json!([a, b])).collect();

    let added_tokens: Vec<Value> = vocab
        .added_tokens()
        .map(|(id, content, special)| {
            json!({
                "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": special,
            })
        })
        .collect();

    let pre_tokenizer = match vocab.pre {
        "smollm" => json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level()],
        }),
        _ => byte_level(),
    };

    let post_processor = match (
        Vocab::add_bos(gguf)?,
        vocab.special(gguf, "tokenizer.ggml.bos_token_id")?,
    ) {
        (true, Some(bos)) => {
            let bos_id = gguf.get_int::<u32>("tokenizer.ggml.bos_token_id")?;
            json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [
                    {"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}},
                ],
                "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
            })
        }
        (true, None) => {
            return Err(GgufError::metadata(
                "tokenizer.ggml.add_bos_token",
                "is true but `tokenizer.ggml.bos_token_id` is missing",
            ));
        }
        (false, _) => {
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
        }
    };

    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab_map,
            "merges": merges,
        },
    }))
}

/// The HF `tokenizer_config.json`: special tokens, chat template, `GPT2Tokenizer` class.
pub fn tokenizer_config_json(gguf: &GgufFile) -> Result<Value, GgufError> {
    let vocab = Vocab::from_gguf(gguf)?;
    let mut added = Map::new();
    for (id, content, special) in vocab.added_tokens() {
        added.insert(
            id.to_string(),
            json!({
                "content": content, "lstrip": false, "normalized": false, "rstrip": false,
                "single_word": false, "special": special,
            }),
        );
    }
    let model_max_length = match gguf.get_str("general.architecture")? {
        Some(arch) => gguf.get_int::<u64>(&format!("{arch}.context_length"))?,
        None => None,
    };
    let mut config = json!({
        "add_bos_token": Vocab::add_bos(gguf)?,
        "add_prefix_space": false,
        "added_tokens_decoder": added,
        "bos_token": vocab.special(gguf, "tokenizer.ggml.bos_token_id")?,
        "clean_up_tokenization_spaces": false,
        "eos_token": vocab.special(gguf, "tokenizer.ggml.eos_token_id")?,
        "model_max_length": model_max_length,
        "pad_token": vocab.special(gguf, "tokenizer.ggml.padding_token_id")?,
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": vocab.unk(gguf)?,
        "vocab_size": vocab.tokens.len(),
    });
    if let Some(template) = gguf.get_str("tokenizer.chat_template")? {
        config["chat_template"] = json!(template);
    }
    Ok(config)
}
