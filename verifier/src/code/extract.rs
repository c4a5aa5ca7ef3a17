//! Code extraction from a model response: fenced Markdown blocks, language-tag aware.

use serde::{Deserialize, Serialize};

/// Which fenced block to take when several match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockChoice {
    /// The last matching block (the final answer, after any drafts).
    #[default]
    Last,
    First,
    /// The longest matching block.
    Longest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractConfig {
    pub block: BlockChoice,
    /// Accepted language tags (case-insensitive, first word of the info string).
    pub languages: Vec<String>,
    /// Accept blocks with no language tag.
    pub untagged: bool,
    /// With no matching block, take the whole response as the program.
    pub whole_response_fallback: bool,
    /// Look only after the last `</think>` when there is one.
    pub after_think: bool,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        ExtractConfig {
            block: BlockChoice::Last,
            languages: vec!["python".into(), "py".into(), "python3".into()],
            untagged: true,
            whole_response_fallback: false,
            after_think: true,
        }
    }
}

/// A fenced block: its info string's first word (lower-cased) and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block<'a> {
    pub language: String,
    pub body: &'a str,
    /// The closing fence was missing (the response was cut off).
    pub unclosed: bool,
}

/// All fenced blocks (``` or ~~~, three or more, closed by a fence of the same character at least as
/// long), in order. An unclosed block runs to the end of the text.
pub fn blocks(text: &str) -> Vec<Block<'_>> {
    let mut out = Vec::new();
    let mut open: Option<(char, usize, String, usize)> = None; // fence char, fence len, language, body start
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let start = pos;
        pos += line.len();
        let trimmed = line.trim_start_matches([' ', '\t']);
        let fence_char = match trimmed.chars().next() {
            Some(c @ ('`' | '~')) => c,
            _ => continue,
        };
        let fence_len = trimmed.chars().take_while(|&c| c == fence_char).count();
        if fence_len < 3 {
            continue;
        }
        let rest = trimmed[fence_len..].trim();
        match &open {
            None => {
                if fence_char == '`' && rest.contains('`') {
                    continue; // inline code, not a fence
                }
                let language = rest.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
                open = Some((fence_char, fence_len, language, pos));
            }
            Some((c, n, _, _)) if *c == fence_char && fence_len >= *n && rest.is_empty() => {
                if let Some((_, _, language, body_start)) = open.take() {
                    out.push(Block { language, body: &text[body_start..start], unclosed: false });
                }
            }
            Some(_) => {}
        }
    }
    if let Some((_, _, language, body_start)) = open {
        out.push(Block { language, body: &text[body_start.min(text.len())..], unclosed: true });
    }
    out
}

/// The program in `response`, or `None` when there is none.
pub fn extract_code(response: &str, config: &ExtractConfig) -> Option<String> {
    let text = match (config.after_think, response.rfind("</think>")) {
        (true, Some(i)) => &response[i + "</think>".len()..],
        _ => response,
    };
    let wanted = |b: &Block<'_>| {
        if b.language.is_empty() {
            config.untagged
        } else {
            config.languages.iter().any(|l| l.eq_ignore_ascii_case(&b.language))
        }
    };
    let found: Vec<Block<'_>> = blocks(text).into_iter().filter(|b| wanted(b) && !b.body.trim().is_empty()).collect();
    let chosen = match config.block {
        BlockChoice::Last => found.last(),
        BlockChoice::First => found.first(),
        BlockChoice::Longest => found.iter().max_by_key(|b| b.body.len()),
    };
    match chosen {
        Some(b) => Some(b.body.to_string()),
        None if config.whole_response_fallback && !text.trim().is_empty() => Some(text.to_string()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_python_block_wins() {
        let r = "Try:\n```python\nprint(1)\n```\nBetter:\n```py\nprint(2)\n```\nand output:\n```text\n2\n```\n";
        assert_eq!(extract_code(r, &ExtractConfig::default()).as_deref(), Some("print(2)\n"));
        let first = ExtractConfig { block: BlockChoice::First, ..Default::default() };
        assert_eq!(extract_code(r, &first).as_deref(), Some("print(1)\n"));
    }

    #[test]
    fn untagged_unclosed_and_think() {
        let r = "<think>```python\nprint('draft')\n```</think>\nAnswer:\n```\nx = 1\n```";
        assert_eq!(extract_code(r, &ExtractConfig::default()).as_deref(), Some("x = 1\n"));
        let cut = "```python\ndef f():\n    return 1\n";
        assert_eq!(extract_code(cut, &ExtractConfig::default()).as_deref(), Some("def f():\n    return 1\n"));
        let strict = ExtractConfig { untagged: false, ..Default::default() };
        assert_eq!(extract_code("```\nx = 1\n```", &strict), None);
    }

    #[test]
    fn nested_longer_fences_and_fallback() {
        let r = "````python\ns = '''\n```\n'''\n````\n";
        assert_eq!(extract_code(r, &ExtractConfig::default()).as_deref(), Some("s = '''\n```\n'''\n"));
        assert_eq!(extract_code("print(3)", &ExtractConfig::default()), None);
        let whole = ExtractConfig { whole_response_fallback: true, ..Default::default() };
        assert_eq!(extract_code("print(3)", &whole).as_deref(), Some("print(3)"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "(```|~~~|python|\n| |x|<think>|</think>|é)*") {
            let _ = extract_code(&s, &ExtractConfig::default());
            let _ = blocks(&s);
        }
    }
}
