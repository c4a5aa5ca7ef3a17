//! The tokenizer and chat template of an HF model directory: `tokenizer.json` through the `tokenizers`
//! crate, and the Jinja chat template from `chat_template.jinja` or `tokenizer_config.json` rendered
//! with minijinja the way transformers renders it (`trim_blocks`, `lstrip_blocks`, Python string
//! methods), so prompts are formatted exactly as the model was trained.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Errors loading or using a tokenizer; each says which file or template is at fault.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("tokenizer failed: {0}")]
    Tokenize(String),
    #[error("this model has no chat template (no chat_template.jinja and no `chat_template` in tokenizer_config.json); pass raw prompts instead")]
    NoChatTemplate,
    #[error("the chat template failed to render: {0}")]
    Template(String),
}

/// One chat message, as in HF's `messages` lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// A tokenizer with its special tokens and chat template.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

/// A special token in `tokenizer_config.json`: a string or an `AddedToken` object with `content`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json`, and if present `tokenizer_config.json` and `chat_template.jinja`.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| TokenizerError::Load { path: path.clone(), message: e.to_string() })?;
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| TokenizerError::Load { path: config_path.clone(), message: e.to_string() })?,
            Err(_) => Value::Null,
        };
        let jinja = dir.join("chat_template.jinja");
        let jinja = if jinja.exists() {
            Some(std::fs::read_to_string(&jinja).map_err(|e| TokenizerError::Load { path: jinja, message: e.to_string() })?)
        } else {
            None
        };
        Ok(Self::from_parts(inner, &config, jinja))
    }

    /// From the contents of `tokenizer.json` and `tokenizer_config.json` (how an actor gets the
    /// tokenizer from the learner).
    pub fn from_json(tokenizer_json: &str, config_json: Option<&str>) -> Result<Self, TokenizerError> {
        let load = |what: &str, message: String| TokenizerError::Load { path: what.into(), message };
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json.as_bytes()).map_err(|e| load("tokenizer.json", e.to_string()))?;
        let config: Value = match config_json {
            Some(text) => serde_json::from_str(text).map_err(|e| load("tokenizer_config.json", e.to_string()))?,
            None => Value::Null,
        };
        Ok(Self::from_parts(inner, &config, None))
    }

    fn from_parts(inner: tokenizers::Tokenizer, config: &Value, jinja: Option<String>) -> Self {
        let chat_template = jinja.or_else(|| match config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: use the one called "default".
            Some(Value::Array(items)) => items
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        });
        Self { inner, chat_template, bos_token: token_text(config.get("bos_token")), eos_token: token_text(config.get("eos_token")) }
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (e.g. a BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode(text, add_special_tokens).map_err(|e| TokenizerError::Tokenize(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, optionally without special tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| TokenizerError::Tokenize(e.to_string()))
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The EOS token id from `tokenizer_config.json`, if it names one in the vocabulary.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token.as_deref().and_then(|t| self.token_id(t))
    }

    /// Whether a chat template is available.
    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Renders the chat template over `messages`, as transformers' `apply_chat_template(…,
    /// tokenize=False)` does.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template = self.chat_template.as_deref().ok_or(TokenizerError::NoChatTemplate)?;
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Python string/dict methods (`.strip()`, `.startswith()`, `.items()`) that HF templates use.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", template).map_err(|e| TokenizerError::Template(e.to_string()))?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        env.get_template("chat")
            .and_then(|t| t.render(ctx))
            .map_err(|e| TokenizerError::Template(e.to_string()))
    }

    /// The token ids of a chat prompt (templated, then encoded without adding special tokens, since the
    /// template writes them).
    pub fn encode_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<Vec<u32>, TokenizerError> {
        self.encode(&self.apply_chat_template(messages, add_generation_prompt)?, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A word-level tokenizer with ChatML special tokens, written to a temporary directory.
    fn tiny_dir(with_template: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let vocab: serde_json::Map<String, Value> =
            ["<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant", "hello", "world", "\n"]
                .iter()
                .enumerate()
                .map(|(i, t)| (t.to_string(), json!(i)))
                .collect();
        let tok = json!({
            "version": "1.0", "truncation": null, "padding": null, "normalizer": null, "post_processor": null,
            "decoder": null,
            "added_tokens": [
                {"id": 1, "content": "<|im_start|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 2, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\n| "}, "behavior": "Isolated", "invert": false},
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
        let mut cfg = json!({"eos_token": {"content": "<|im_end|>"}, "bos_token": "<|im_start|>"});
        if with_template {
            cfg["chat_template"] = json!("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'].strip() + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}");
        }
        std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
        dir
    }

    #[test]
    fn chat_template_renders_and_encodes() {
        let dir = tiny_dir(true);
        let tok = Tokenizer::from_dir(dir.path()).unwrap();
        let msgs = [ChatMessage::new("user", "  hello world ")];
        let text = tok.apply_chat_template(&msgs, true).unwrap();
        assert_eq!(text, "<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n");
        let ids = tok.encode_chat(&msgs, true).unwrap();
        assert_eq!(ids.first(), Some(&1));
        assert_eq!(ids.last(), Some(&7));
        assert!(ids.contains(&5) && ids.contains(&6));
        assert_eq!(tok.eos_token_id(), Some(2));
    }

    #[test]
    fn missing_template_and_files_are_clear_errors() {
        let dir = tiny_dir(false);
        let tok = Tokenizer::from_dir(dir.path()).unwrap();
        let err = tok.apply_chat_template(&[ChatMessage::new("user", "hello")], true).unwrap_err();
        assert!(err.to_string().contains("no chat template"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = Tokenizer::from_dir(empty.path()).unwrap_err();
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }
}
