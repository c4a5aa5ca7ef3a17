//! Answer extraction: find the answer a response commits to.
//!
//! Candidates are found by kind and ranked by priority (lower first), then by position (the one that
//! ends last first), the order math-verify uses (`math_verify/parser.py`, read for behaviour only):
//!
//! | priority | what |
//! |---|---|
//! | 0 | `final answer is X. I hope`, `#### X` (GSM8K), `\boxed{}` when `boxed_priority` is 0 |
//! | 50 | `final answer … is X`, `\boxed{}` by default |
//! | 100 | `answer: … X` |
//! | 200 | `answer … X` |
//! | 300 | any LaTeX environment or number (when `without_anchor`) |
//!
//! Several boxes: the last one is the answer, as verl's `last_boxed_only_string` reads it ("I got
//! `\boxed{12}` at first; rechecking, it is `\boxed{14}`" answers 14). Boxes right next to each other
//! or joined by a conjunction (`\boxed{1}, \boxed{2}`, `\boxed{1} and \boxed{2}`) are one answer in
//! parts, as math-verify reads them, unless the words between revise the answer (`no`, `wait`,
//! `actually`, `so`, `is`, …). math-verify's own cases join boxes with words between them
//! (`\boxed{1} papers and \boxed{2} bins` is {1, 2}); rlvr does too, but not across words that revise
//! the answer, because a reward must not punish a response for correcting itself. verl never joins;
//! rlvr does, because `\boxed{1}, \boxed{2}` is one answer in two parts.
//!
//! Everything here is linear in the input: brace matching is one stack pass, the regexes are the
//! `regex` crate's (no backtracking).

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::budget::{Budget, Exhausted};

/// Which kinds of answers to look for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtractConfig {
    /// LaTeX environments (`$…$`, `\[…\]`, `\(…\)`, `$$…$$`) and `\boxed{}`.
    pub latex: bool,
    /// Plain numbers and arithmetic (`1,000.5`, `3/4`, `28%`).
    pub expr: bool,
    /// Priority of `\boxed{}` (0: before everything, 50: after "final answer is … I hope").
    pub boxed_priority: u32,
    /// Accept unanchored matches (the last number / LaTeX in the text).
    pub without_anchor: bool,
    /// Accept GSM8K's `#### 42`.
    pub gsm8k_hashes: bool,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        ExtractConfig { latex: true, expr: true, boxed_priority: 50, without_anchor: true, gsm8k_hashes: true }
    }
}

/// One extracted piece of an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// LaTeX source (inside an environment or a box); `boxed` means it came from `\boxed{}`.
    Latex { text: String, percent: bool },
    /// A plain number as written (`1,000.5`), with its percent flag.
    Number { text: String, percent: bool },
    /// Plain arithmetic (`3/4`, `2^10`).
    Arith(String),
}

/// A place in the response that may hold the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub priority: u32,
    pub start: usize,
    pub end: usize,
    /// Several pieces (`$1$ and $2$`, `\boxed{1}, \boxed{2}`) form one multi-part answer.
    pub pieces: Vec<Piece>,
}

const CURRENCY: &str = "$€£¥₹₽₪₩₫฿₡₢₣₤₥₦₧₨₭₮₯₰₱₲₳₴₵₶₷₸₺₻₼₾₿";

static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?:^|[\s=])(?:\*\*)?[{cur}]?(?P<num>-?[1-9]\d{{0,2}}(?:[ ,]\d{{3}})+(?:\.\d+)?|-?\d+[.,]\d+|\.\d+|-?\d+)(?P<pct>\s*(?:%|[Pp]ercent|\s*[Pp]ercentage|\s*[Pp]ct))?",
        cur = regex::escape(CURRENCY)
    ))
    .expect("static regex")
});

static ARITH: LazyLock<Regex> = LazyLock::new(|| {
    let ops = r"+\-*×/^()÷";
    Regex::new(&format!(
        r"(?:^|[\s=])(?:\*\*)?(?P<arith>-?\(?-?\d[\d.\s{ops}]*[{ops}][\d.\s{ops}]+\)?)(?:\*\*)?(?:[.,:\s)$]|$)"
    ))
    .expect("static regex")
});

static ANSWER_WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)answer").expect("static regex"));
static FINAL_IS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?is)final answer.{0,100}?\s+is:?\s*").expect("static regex"));
static FINAL_HOPE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)final answer is:?\s*").expect("static regex"));
static HOPE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\.?\s?I hope").expect("static regex"));
static HASHES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"####\s*\$?(?P<num>-?[\d,]*\.?\d+)").expect("static regex"));
static PERCENT_SUFFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*(?:\\?%|[Pp]ercentage|[Pp]ercent|[Pp]ct)").expect("static regex"));
static JOINER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*(?:,?and|,?or|,)\s*").expect("static regex"));
/// A conjunction between two boxes: they may be one answer in parts (`\boxed{1} and \boxed{2}`).
static CONJUNCTION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b(?:and|or)\b|[,;]").expect("static regex"));

/// Words of a response that revises itself between two boxes (`I got \boxed{12} at first;
/// rechecking, it is \boxed{14}`): then the last box is the answer.
static REVISION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:wait|actually|rather|instead|correct\w*|mistake\w*|wrong|re-?check\w*|recalculat\w*|recomput\w*|no|not|but|so|therefore|thus|hence|then|final\w*|answer\w*|is|was|should|really|oops|hmm|first|sorry)\b")
        .expect("static regex")
});

/// A LaTeX environment found in the text.
#[derive(Debug, Clone)]
struct Env {
    start: usize,
    end: usize,
    content: (usize, usize),
    percent: bool,
}

fn preceded_by(text: &[u8], i: usize, f: impl Fn(u8) -> bool) -> bool {
    i > 0 && f(text[i - 1])
}

/// All LaTeX environments, left to right, non-overlapping.
fn find_envs(text: &str, budget: &Budget) -> Result<Vec<Env>, Exhausted> {
    let b = text.as_bytes();
    let n = b.len();
    let mut out = Vec::new();
    let mut i = 0;
    // Unescaped positions of each closer, so that each lookup is a binary search (no quadratic scans).
    let positions = |pat: &str| -> Vec<usize> {
        text.match_indices(pat).map(|(i, _)| i).filter(|&i| !preceded_by(b, i, |c| c == b'\\')).collect()
    };
    let dd = positions("$$");
    let close_bracket = positions("\\]");
    let close_paren = positions("\\)");
    let newlines: Vec<usize> = text.match_indices('\n').map(|(i, _)| i).collect();
    let next_in = |v: &[usize], from: usize| -> Option<usize> { v.get(v.partition_point(|&p| p < from)).copied() };
    let find = |from: usize, pat: &[u8], stop_at_newline: bool| -> Option<usize> {
        let v = match pat {
            b"$$" => &dd,
            b"\\]" => &close_bracket,
            _ => &close_paren,
        };
        let at = next_in(v, from)?;
        if stop_at_newline && next_in(&newlines, from).is_some_and(|nl| nl < at) {
            return None;
        }
        Some(at)
    };
    while i < n {
        budget.tick()?;
        let c = b[i];
        let escaped = preceded_by(b, i, |c| c == b'\\');
        let mut found: Option<(usize, usize, usize)> = None; // content start, content end, env end
        if c == b'$' && !escaped {
            if b.get(i + 1) == Some(&b'$')
                && let Some(close) = find(i + 2, b"$$", false)
                && close > i + 2
            {
                found = Some((i + 2, close, close + 2));
            }
            if found.is_none() && !preceded_by(b, i, |c| c.is_ascii_digit()) {
                // Inline: no newline inside, `\$` allowed.
                let mut j = i + 1;
                while j < n && b[j] != b'\n' {
                    if b[j] == b'$' && !preceded_by(b, j, |c| c == b'\\') {
                        break;
                    }
                    j += 1;
                }
                if j < n && b[j] == b'$' && j > i + 1 {
                    found = Some((i + 1, j, j + 1));
                }
            }
        } else if c == b'\\' && !escaped && i + 1 < n {
            match b[i + 1] {
                b'[' => {
                    if let Some(close) = find(i + 2, b"\\]", false)
                        && close > i + 2
                    {
                        found = Some((i + 2, close, close + 2));
                    }
                }
                b'(' => {
                    if let Some(close) = find(i + 2, b"\\)", true)
                        && close > i + 2
                    {
                        found = Some((i + 2, close, close + 2));
                    }
                }
                _ => {}
            }
        }
        match found {
            Some((cs, ce, end)) => {
                let rest = &text[end..];
                let (end, percent) = match PERCENT_SUFFIX.find(rest) {
                    Some(m) => (end + m.end(), true),
                    None => (end, false),
                };
                out.push(Env { start: i, end, content: (cs, ce), percent });
                i = end;
            }
            None => i += 1,
        }
    }
    Ok(out)
}

/// Group environments joined by `,`, `and`, `or` (at most six in a group).
fn env_groups(text: &str, envs: &[Env]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut k = 0;
    while k < envs.len() {
        let mut g = vec![k];
        while g.len() < 6 && k + 1 < envs.len() {
            let between = &text[envs[k].end..envs[k + 1].start];
            match JOINER.find(between) {
                Some(m) if m.end() == between.len() => {
                    k += 1;
                    g.push(k);
                }
                _ => break,
            }
        }
        groups.push(g);
        k += 1;
    }
    groups
}

/// Positions of matching braces for every `{`, computed in one pass.
fn brace_partners(b: &[u8]) -> Vec<usize> {
    let mut partner = vec![usize::MAX; b.len()];
    let mut stack = Vec::new();
    for (i, &c) in b.iter().enumerate() {
        if c == b'{' {
            stack.push(i);
        } else if c == b'}'
            && let Some(open) = stack.pop()
        {
            partner[open] = i;
        }
    }
    partner
}

/// A `\boxed{…}` / `\fbox{…}`: command start, content range, end (after `}`).
#[derive(Debug, Clone)]
struct Boxed {
    start: usize,
    content: (usize, usize),
    end: usize,
}

fn find_boxes(text: &str, partner: &[usize]) -> Vec<Boxed> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut skip_until = 0;
    for (start, _) in text.match_indices('\\') {
        if start < skip_until {
            continue;
        }
        let rest = &b[start..];
        let len = if rest.starts_with(b"\\boxed") {
            6
        } else if rest.starts_with(b"\\fbox") {
            5
        } else {
            continue;
        };
        let mut j = start + len;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j < b.len() && b[j] == b'{' {
            let close = partner[j];
            if close != usize::MAX {
                out.push(Boxed { start, content: (j + 1, close), end: close + 1 });
            } else {
                // Unclosed: the rest of the text is the box.
                out.push(Boxed { start, content: (j + 1, b.len()), end: b.len() });
                break;
            }
            skip_until = j + 1;
        }
    }
    out
}

/// The last box plus the boxes just before it that belong to the same answer: close by (under 10
/// characters between) or separated by `and`/`or`/`,` within 70 characters.
fn last_box_group<'t>(text: &'t str, boxes: &[Boxed]) -> Option<(usize, usize, Vec<&'t str>)> {
    let last = boxes.last()?;
    let mut parts = vec![text[last.content.0..last.content.1].trim()];
    let mut first_start = last.start;
    let mut next_start = last.start;
    for bx in boxes.iter().rev().skip(1) {
        if bx.end > next_start {
            // Nested box: ignore.
            continue;
        }
        let content = text[bx.content.0..bx.content.1].trim();
        // Boxes close together, or joined by a conjunction, are one answer in several parts (as
        // math-verify reads them), unless the words between revise the answer ("I got \boxed{12} at
        // first; rechecking, it is \boxed{14}"): then the last box is the answer, as verl reads it.
        let between = &text[bx.end..next_start];
        let joined = between.chars().count() < 10 || (between.chars().count() < 70 && CONJUNCTION.is_match(between));
        if !joined || REVISION.is_match(between) {
            break;
        }
        if parts[parts.len() - 1] != content {
            parts.push(content);
        }
        first_start = bx.start;
        next_start = bx.start;
    }
    parts.reverse();
    Some((first_start, last.end, parts))
}

fn number_candidates(text: &str, offset: usize, priority: u32, out: &mut Vec<Candidate>) {
    for c in NUMBER.captures_iter(text) {
        let (Some(m), whole) = (c.name("num"), c.get(0)) else { continue };
        let end = whole.map_or(m.end(), |w| w.end());
        out.push(Candidate {
            priority,
            start: offset + m.start(),
            end: offset + end,
            pieces: vec![Piece::Number { text: m.as_str().to_string(), percent: c.name("pct").is_some() }],
        });
    }
    for c in ARITH.captures_iter(text) {
        let Some(m) = c.name("arith") else { continue };
        out.push(Candidate {
            priority,
            start: offset + m.start(),
            end: offset + m.end(),
            pieces: vec![Piece::Arith(m.as_str().to_string())],
        });
    }
}

fn env_candidate(text: &str, envs: &[Env], group: &[usize], priority: u32) -> Candidate {
    let pieces = group
        .iter()
        .map(|&k| Piece::Latex { text: text[envs[k].content.0..envs[k].content.1].to_string(), percent: envs[k].percent })
        .collect();
    Candidate { priority, start: envs[group[0]].start, end: envs[group[group.len() - 1]].end, pieces }
}

/// All candidates, best first.
pub fn candidates(text: &str, cfg: &ExtractConfig, budget: &Budget) -> Result<Vec<Candidate>, Exhausted> {
    let mut out = Vec::new();
    budget.spend(text.len() as u64 / 64)?;
    if cfg.gsm8k_hashes {
        for c in HASHES.captures_iter(text) {
            if let Some(m) = c.name("num") {
                out.push(Candidate {
                    priority: 0,
                    start: m.start(),
                    end: m.end(),
                    pieces: vec![Piece::Number { text: m.as_str().to_string(), percent: false }],
                });
            }
        }
    }
    let envs = if cfg.latex { find_envs(text, budget)? } else { Vec::new() };
    let groups = env_groups(text, &envs);
    let group_at = |pos: usize, window: usize| -> Option<&Vec<usize>> {
        groups.iter().find(|g| envs[g[0]].start >= pos && envs[g[0]].start <= pos + window)
    };
    if cfg.latex {
        let partner = brace_partners(text.as_bytes());
        let boxes = find_boxes(text, &partner);
        budget.spend(boxes.len() as u64)?;
        if let Some((start, end, parts)) = last_box_group(text, &boxes) {
            // A box inside an environment that holds several boxes: the environment's boxes.
            out.push(Candidate {
                priority: cfg.boxed_priority,
                start,
                end,
                pieces: parts.into_iter().map(|p| Piece::Latex { text: p.to_string(), percent: false }).collect(),
            });
        }
    }
    // "final answer is X. I hope" / "final answer … is X"
    for m in FINAL_HOPE.find_iter(text) {
        if cfg.latex
            && let Some(g) = group_at(m.end(), 0)
            && HOPE.is_match(&text[envs[g[g.len() - 1]].end..])
        {
            out.push(env_candidate(text, &envs, g, 0));
        }
        if cfg.expr {
            let mut v = Vec::new();
            let tail_end = (m.end() + 200).min(text.len());
            let tail_end = floor_char(text, tail_end);
            number_candidates(&text[m.end().saturating_sub(1)..tail_end], m.end().saturating_sub(1), 0, &mut v);
            if let Some(c) = v.into_iter().min_by_key(|c| c.start)
                && HOPE.is_match(&text[c.end..])
            {
                out.push(c);
            }
        }
    }
    for m in FINAL_IS.find_iter(text) {
        if cfg.latex
            && let Some(g) = group_at(m.end(), 0)
        {
            out.push(env_candidate(text, &envs, g, 50));
        }
        if cfg.expr {
            let mut v = Vec::new();
            let tail_end = floor_char(text, (m.end() + 200).min(text.len()));
            number_candidates(&text[m.end().saturating_sub(1)..tail_end], m.end().saturating_sub(1), 50, &mut v);
            if let Some(c) = v.into_iter().filter(|c| c.start <= m.end() + 1).min_by_key(|c| c.start) {
                out.push(c);
            }
        }
    }
    // "answer: … X" and "answer … X"
    let mut last_end = 0;
    for m in ANSWER_WORD.find_iter(text) {
        budget.tick()?;
        let colon = text[m.end()..].starts_with(':');
        let priority = if colon { 100 } else { 200 };
        let from = if colon { m.end() + 1 } else { m.end() };
        if cfg.latex
            && m.start() >= last_end
            && let Some(g) = group_at(from, 50)
        {
            let c = env_candidate(text, &envs, g, priority);
            last_end = c.end;
            out.push(c);
        }
        if cfg.expr {
            let window_end = floor_char(text, (from + 160).min(text.len()));
            let window = &text[from..window_end];
            let line_end = window.find('\n').unwrap_or(window.len());
            let window = &window[..line_end];
            let mut v = Vec::new();
            // Last `=` within 100 characters, then the number after it; else the first number within 50.
            let eq = window.char_indices().take_while(|(i, _)| *i < 100).filter(|(_, c)| *c == '=').map(|(i, _)| i).last();
            let base = eq.unwrap_or(0);
            let sub_start = floor_char(window, base);
            number_candidates(&window[sub_start..], from + sub_start, priority, &mut v);
            let limit = if eq.is_some() { from + sub_start + 8 } else { from + 52 };
            let pick = v
                .into_iter()
                .filter(|c| c.start <= limit)
                .filter(|c| !text[c.end..].trim_start().starts_with('='))
                .min_by_key(|c| c.start);
            if let Some(c) = pick {
                out.push(c);
            }
        }
    }
    if cfg.without_anchor {
        if cfg.latex {
            for g in &groups {
                out.push(env_candidate(text, &envs, g, 300));
            }
            // A bare \frac{1}{2} outside any environment.
            static BARE_FRAC: LazyLock<Regex> =
                LazyLock::new(|| Regex::new(r"-?\\frac\{-?\d+(?:[.,]\d+)?\}\{-?\d+(?:[.,]\d+)?\}").expect("static regex"));
            for m in BARE_FRAC.find_iter(text) {
                if envs.iter().any(|e| e.start <= m.start() && m.end() <= e.end) {
                    continue;
                }
                out.push(Candidate {
                    priority: 300,
                    start: m.start(),
                    end: m.end(),
                    pieces: vec![Piece::Latex { text: m.as_str().to_string(), percent: false }],
                });
            }
        }
        if cfg.expr {
            number_candidates(text, 0, 300, &mut out);
        }
    }
    out.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.end.cmp(&a.end)).then(a.start.cmp(&b.start)));
    Ok(out)
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Extract the contents of the last box group in a LaTeX piece, joined by `,` (an environment that
/// holds `\boxed{1}, \boxed{2}` answers both); the piece itself if it has none.
pub fn unbox(piece: &str) -> String {
    let partner = brace_partners(piece.as_bytes());
    let boxes = find_boxes(piece, &partner);
    match last_box_group(piece, &boxes) {
        Some((_, _, parts)) => parts.join(","),
        None => piece.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(text: &str) -> Option<Candidate> {
        candidates(text, &ExtractConfig::default(), &Budget::generous()).unwrap().into_iter().next()
    }

    #[test]
    fn boxed_wins() {
        let c = first("so $x=2$ and \\boxed{\\frac{1}{2}}.").unwrap();
        assert_eq!(c.pieces, vec![Piece::Latex { text: "\\frac{1}{2}".into(), percent: false }]);
    }

    #[test]
    fn nested_and_grouped_boxes() {
        let c = first("\\boxed{(1, 2)}, \\boxed{\\{3\\}}").unwrap();
        assert_eq!(c.pieces.len(), 2);
        let c = first("\\boxed{1} no no no no no \\boxed{2}").unwrap();
        assert_eq!(c.pieces.len(), 1);
    }

    #[test]
    fn gsm8k() {
        let c = first("so 3 + 4 = 7\n#### 7").unwrap();
        assert_eq!(c.pieces, vec![Piece::Number { text: "7".into(), percent: false }]);
    }

    #[test]
    fn unboxing() {
        assert_eq!(unbox("x = \\boxed{3}"), "3");
        assert_eq!(unbox("\\boxed{1}, \\boxed{2}"), "1,2");
        assert_eq!(unbox("\\boxed{12} at first; rechecking, it is \\boxed{14}"), "14");
    }

    #[test]
    fn the_last_box_is_the_answer_unless_only_separators_join_them() {
        let text = |c: Candidate| c.pieces.iter().map(|p| match p { Piece::Latex { text, .. } | Piece::Number { text, .. } | Piece::Arith(text) => text.clone() }).collect::<Vec<_>>();
        for (response, want) in [
            ("I got \\boxed{12} at first; rechecking, it is \\boxed{14}.", vec!["14"]),
            ("\\boxed{12}. So \\boxed{14}", vec!["14"]),
            ("\\boxed{12} no, \\boxed{14}", vec!["14"]),
            ("\\boxed{1}, \\boxed{2}", vec!["1", "2"]),
            ("$\\boxed{1}$ and $\\boxed{2}$", vec!["1", "2"]),
            ("\\boxed{1} \\text{ or } \\boxed{-1}", vec!["1", "-1"]),
        ] {
            assert_eq!(text(first(response).unwrap()), want, "{response}");
        }
    }
}
