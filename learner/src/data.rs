//! Prompts for training and evaluation: JSONL datasets in the verl-like schema that
//! `scripts/setup-data.sh` writes (`prompt`, `ground_truth`, `data_source`, `extra`), and a procedural
//! arithmetic task with difficulty levels whose answers the math verifier scores.
//!
//! Every source is deterministic given its seed and a [`DataCursor`], which the learner checkpoints: a
//! resumed run draws exactly the prompts an uninterrupted run would have drawn next.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// One task: the question shown to the model and the answer the verifier compares against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// Stable over runs: the dataset line or the generator index.
    pub id: String,
    pub question: String,
    pub ground_truth: String,
}

/// Where prompts come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum DataSource {
    /// Generated multi-step arithmetic (see [`arithmetic`]).
    Arithmetic {
        /// Easiest level drawn (1: one-digit sums).
        #[serde(default = "one")]
        min_level: u32,
        /// Hardest level drawn (at most [`MAX_LEVEL`]).
        #[serde(default = "two")]
        max_level: u32,
    },
    /// A JSONL file with `prompt` and `ground_truth` per line (e.g. `data/gsm8k/train.jsonl`).
    Jsonl { path: PathBuf },
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}

impl Default for DataSource {
    fn default() -> Self {
        DataSource::Arithmetic { min_level: 1, max_level: 2 }
    }
}

/// Hardest arithmetic level.
pub const MAX_LEVEL: u32 = 4;

/// The position in the training stream: which pass over the data and how far into it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCursor {
    pub epoch: u64,
    pub position: u64,
}

/// A deterministic, resumable stream of training problems, with a held-out set that never appears in it.
#[derive(Debug)]
pub struct ProblemStream {
    source: Loaded,
    seed: u64,
    cursor: DataCursor,
    /// The epoch's order (datasets only).
    order: Vec<usize>,
    held_out: HashSet<String>,
}

#[derive(Debug)]
enum Loaded {
    Arithmetic { min_level: u32, max_level: u32 },
    Jsonl { problems: Vec<Problem> },
}

/// Salt separating the held-out generator stream from the training one.
const EVAL_SALT: u64 = 0x5eed_e7a1;

/// Training problems the generator is asked for, at most, to find one that is not held out.
const TRAINABLE_PROBE: u64 = 10_000;

impl ProblemStream {
    /// Opens the source. For a dataset, the last `held_out` lines (after a seeded shuffle) are the
    /// held-out set and are excluded from training; for the generator, held-out problems come from a
    /// separate seeded stream and any that the training stream generates are skipped.
    pub fn open(source: &DataSource, seed: u64, held_out: usize) -> anyhow::Result<(Self, Vec<Problem>)> {
        match source {
            DataSource::Arithmetic { min_level, max_level } => {
                if *min_level < 1 || min_level > max_level || *max_level > MAX_LEVEL {
                    bail!(
                        "data.source: levels {min_level}..={max_level} are not a range within 1..={MAX_LEVEL}; \
                         set `min_level` and `max_level` so that 1 <= min_level <= max_level <= {MAX_LEVEL}"
                    );
                }
                let mut eval = Vec::with_capacity(held_out);
                let mut seen = HashSet::new();
                let mut i = 0u64;
                while eval.len() < held_out {
                    let p = arithmetic::problem(seed ^ EVAL_SALT, i, *min_level, *max_level, "eval");
                    i += 1;
                    if seen.insert(p.question.clone()) {
                        eval.push(p);
                    }
                    if i > 100 * held_out as u64 + 1000 {
                        bail!("data.eval_prompts = {held_out} is more distinct problems than levels {min_level}..={max_level} have");
                    }
                }
                let stream = Self {
                    source: Loaded::Arithmetic { min_level: *min_level, max_level: *max_level },
                    seed,
                    cursor: DataCursor::default(),
                    order: vec![],
                    held_out: seen,
                };
                // Training skips held-out problems: if they are all there is, it would never find one.
                let trainable = (0..TRAINABLE_PROBE).any(|i| {
                    !stream.held_out.contains(&arithmetic::problem(seed, i, *min_level, *max_level, "train").question)
                });
                if !trainable {
                    bail!(
                        "data.eval_prompts = {held_out} holds out every problem levels {min_level}..={max_level} generate: nothing is left to train on; lower `data.eval_prompts` or widen the levels"
                    );
                }
                Ok((stream, eval))
            }
            DataSource::Jsonl { path } => {
                let mut problems = read_jsonl(path)?;
                if problems.len() <= held_out {
                    bail!(
                        "data.source.path {}: {} problems, but data.eval_prompts holds out {held_out}; \
                         lower `data.eval_prompts` or use a larger file",
                        path.display(),
                        problems.len()
                    );
                }
                problems.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed ^ EVAL_SALT));
                let eval = problems.split_off(problems.len() - held_out);
                let held_out: HashSet<String> = eval.iter().map(|p| p.question.clone()).collect();
                // Training skips a problem whose question is held out (duplicates included).
                if problems.iter().all(|p| held_out.contains(&p.question)) {
                    bail!(
                        "data.source.path {}: every training problem repeats a held-out question, so nothing is left to train on; lower `data.eval_prompts` or deduplicate the file",
                        path.display()
                    );
                }
                let mut stream = Self { source: Loaded::Jsonl { problems }, seed, cursor: DataCursor::default(), order: vec![], held_out };
                stream.shuffle_epoch();
                Ok((stream, eval))
            }
        }
    }

    fn shuffle_epoch(&mut self) {
        if let Loaded::Jsonl { problems } = &self.source {
            self.order = (0..problems.len()).collect();
            let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed.wrapping_add(self.cursor.epoch));
            self.order.shuffle(&mut rng);
        }
    }

    pub fn cursor(&self) -> DataCursor {
        self.cursor
    }

    /// Continues from a checkpointed cursor; one past the end of the data (which changed since the
    /// checkpoint) is an error.
    pub fn seek(&mut self, cursor: DataCursor) -> anyhow::Result<()> {
        if let Loaded::Jsonl { problems } = &self.source
            && cursor.position as usize >= problems.len()
        {
            bail!(
                "the data cursor (epoch {}, position {}) is outside the data ({} training problems): the dataset changed since the checkpoint; resume with the data it was trained on",
                cursor.epoch,
                cursor.position,
                problems.len()
            );
        }
        self.cursor = cursor;
        self.shuffle_epoch();
        Ok(())
    }

    /// The next training problem.
    pub fn next_problem(&mut self) -> Problem {
        loop {
            let p = match &self.source {
                Loaded::Arithmetic { min_level, max_level } => {
                    let p = arithmetic::problem(self.seed, self.cursor.position, *min_level, *max_level, "train");
                    self.cursor.position += 1;
                    p
                }
                Loaded::Jsonl { problems } => {
                    let p = problems[self.order[self.cursor.position as usize]].clone();
                    self.cursor.position += 1;
                    if self.cursor.position as usize == problems.len() {
                        self.cursor = DataCursor { epoch: self.cursor.epoch + 1, position: 0 };
                        self.shuffle_epoch();
                    }
                    p
                }
            };
            if !self.held_out.contains(&p.question) {
                return p;
            }
        }
    }
}

/// One line of a dataset file.
#[derive(Debug, Deserialize)]
struct Line {
    prompt: serde_json::Value,
    ground_truth: serde_json::Value,
}

/// Reads `prompt` + `ground_truth` lines; a prompt may be a string or a verl-style list of chat
/// messages (the last user message is the question).
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Problem>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (run scripts/setup-data.sh to create the datasets)", path.display()))?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = || format!("{} line {}", path.display(), i + 1);
        let l: Line = serde_json::from_str(line).with_context(at)?;
        let question = match &l.prompt {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(msgs) => msgs
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .and_then(|m| m["content"].as_str())
                .map(str::to_string)
                .with_context(|| format!("{}: `prompt` is a message list without a user message", at()))?,
            _ => bail!("{}: `prompt` must be a string or a list of chat messages", at()),
        };
        let ground_truth = match &l.ground_truth {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => bail!("{}: `ground_truth` must be a string or a number for math rewards", at()),
        };
        out.push(Problem { id: format!("{}:{}", path.file_stem().and_then(|s| s.to_str()).unwrap_or("data"), i), question, ground_truth });
    }
    Ok(out)
}

/// Procedural arithmetic with difficulty levels. Level 1: a sum of two one-digit numbers; 2: a sum or
/// difference of two two-digit numbers; 3: three terms with a product; 4: a bracketed three-step
/// expression. Answers are integers.
pub mod arithmetic {
    use super::*;

    /// Problem `index` of the stream `seed`, at a level drawn uniformly from `min..=max`.
    pub fn problem(seed: u64, index: u64, min: u32, max: u32, split: &str) -> Problem {
        // One generator per problem, so problem i does not depend on how many came before.
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index);
        let level = rng.random_range(min..=max);
        let (question, answer) = match level {
            1 => {
                let (a, b) = (rng.random_range(0..10i64), rng.random_range(0..10i64));
                (format!("{a} + {b}"), a + b)
            }
            2 => {
                let (a, b) = (rng.random_range(10..100i64), rng.random_range(10..100i64));
                if rng.random_bool(0.5) { (format!("{a} + {b}"), a + b) } else { (format!("{a} - {b}"), a - b) }
            }
            3 => {
                let (a, b, c) = (rng.random_range(2..10i64), rng.random_range(2..10i64), rng.random_range(1..50i64));
                if rng.random_bool(0.5) { (format!("{a} * {b} + {c}"), a * b + c) } else { (format!("{c} + {a} * {b}"), c + a * b) }
            }
            _ => {
                let (a, b, c, d) =
                    (rng.random_range(1..20i64), rng.random_range(1..20i64), rng.random_range(2..10i64), rng.random_range(1..30i64));
                (format!("({a} + {b}) * {c} - {d}"), (a + b) * c - d)
            }
        };
        Problem { id: format!("arith-{split}-{seed}-{index}"), question: format!("What is {question}?"), ground_truth: answer.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_answers_are_right_and_streams_resume() {
        let src = DataSource::Arithmetic { min_level: 1, max_level: MAX_LEVEL };
        let (mut a, eval) = ProblemStream::open(&src, 7, 16).unwrap();
        assert_eq!(eval.len(), 16);
        let first: Vec<Problem> = (0..50).map(|_| a.next_problem()).collect();
        for p in &first {
            // Evaluate the question with a tiny precedence-aware evaluator.
            let expr = p.question.trim_start_matches("What is ").trim_end_matches('?');
            assert_eq!(eval_expr(expr).to_string(), p.ground_truth, "{}", p.question);
            assert!(!eval.iter().any(|e| e.question == p.question));
        }
        let (mut b, _) = ProblemStream::open(&src, 7, 16).unwrap();
        for _ in 0..20 {
            b.next_problem();
        }
        let cursor = b.cursor();
        let (mut c, _) = ProblemStream::open(&src, 7, 16).unwrap();
        c.seek(cursor).unwrap();
        assert_eq!((0..30).map(|_| c.next_problem()).collect::<Vec<_>>(), first[20..]);
    }

    fn eval_expr(s: &str) -> i64 {
        // Brackets first, then products, then sums left to right.
        if let Some(open) = s.find('(') {
            let close = s.find(')').unwrap();
            let inner = eval_expr(&s[open + 1..close]);
            return eval_expr(&format!("{}{inner}{}", &s[..open], &s[close + 1..]));
        }
        let tokens: Vec<&str> = s.split_whitespace().collect();
        let mut terms: Vec<(i64, i64)> = vec![(1, tokens[0].parse().unwrap())];
        for pair in tokens[1..].chunks(2) {
            let v: i64 = pair[1].parse().unwrap();
            match pair[0] {
                "*" => terms.last_mut().unwrap().1 *= v,
                "+" => terms.push((1, v)),
                "-" => terms.push((-1, v)),
                op => panic!("{op}"),
            }
        }
        terms.iter().map(|(s, v)| s * v).sum()
    }

    #[test]
    fn datasets_hold_out_and_cycle_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let lines: Vec<String> =
            (0..10).map(|i| serde_json::json!({"prompt": format!("q{i}"), "ground_truth": i}).to_string()).collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        let (mut s, eval) = ProblemStream::open(&DataSource::Jsonl { path: path.clone() }, 1, 3).unwrap();
        assert_eq!(eval.len(), 3);
        let epoch: HashSet<String> = (0..7).map(|_| s.next_problem().question).collect();
        assert_eq!(epoch.len(), 7);
        assert!(eval.iter().all(|e| !epoch.contains(&e.question)));
        assert_eq!(s.cursor(), DataCursor { epoch: 1, position: 0 });
        let err = ProblemStream::open(&DataSource::Jsonl { path }, 1, 10).unwrap_err().to_string();
        assert!(err.contains("data.eval_prompts"), "{err}");
        // A cursor past the (now shorter) data is an error, not a panic.
        let err = s.seek(DataCursor { epoch: 1, position: 7 }).unwrap_err().to_string();
        assert!(err.contains("outside the data (7 training problems)"), "{err}");
        assert!(s.seek(DataCursor { epoch: 2, position: 6 }).is_ok());
    }

    #[test]
    fn a_held_out_split_that_leaves_nothing_to_train_on_is_an_error() {
        // Every line asks the same question: holding one out holds them all out.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let lines: Vec<String> = (0..5).map(|i| serde_json::json!({"prompt": "q", "ground_truth": i}).to_string()).collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        let err = ProblemStream::open(&DataSource::Jsonl { path }, 1, 1).unwrap_err().to_string();
        assert!(err.contains("nothing is left to train on"), "{err}");
        // Level 1 has 100 distinct problems (a + b, digits): holding out all of them.
        let err = ProblemStream::open(&DataSource::Arithmetic { min_level: 1, max_level: 1 }, 3, 100).unwrap_err().to_string();
        assert!(err.contains("nothing is left to train on"), "{err}");
        assert!(ProblemStream::open(&DataSource::Arithmetic { min_level: 1, max_level: 1 }, 3, 50).is_ok());
    }
}
