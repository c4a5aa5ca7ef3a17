//! String-level clean-up of an extracted LaTeX answer before parsing: spacing commands, `\left`/`\right`,
//! `\dfrac`, units, degrees, percent words, thousands separators, `\text{ and }` lists.

use std::sync::LazyLock;

use regex::Regex;

/// Unit words removed when they trail a number (singular; plural `s`/`es` also matches).
const UNITS: &[&str] = &[
    "cm", "mm", "km", "m", "meter", "metre", "kg", "g", "gram", "mg", "lb", "pound", "ounce", "oz", "inch", "inches",
    "foot", "feet", "ft", "yard", "mile", "mph", "kmh", "hour", "hr", "minute", "min", "second", "sec", "s", "day",
    "week", "month", "year", "yr", "liter", "litre", "ml", "gallon", "dollar", "cent", "euro", "yuan", "rupee",
    "unit", "degree", "deg", "square", "sq", "cubic", "acre", "hectare", "point", "people", "student", "book", "apple",
    "page", "times", "way", "edge", "coin", "toy", "mark", "piece", "item", "ticket", "child", "children", "person",
    "kilometer", "centimeter", "millimeter", "meters", "cups", "cup", "bag", "box", "boxes",
];

static UNIT_TAIL: LazyLock<Regex> = LazyLock::new(|| {
    let alts = UNITS.join("|");
    Regex::new(&format!(r"([0-9}}\s])\s*(?:{alts})(?:s|es)?(?:\^\{{?[23]\}}?|[²³])?\s*\.?\s*$")).expect("static regex")
});
static TEXT_TAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(.*\S)\s*\\text\{[^{}]*\}(?:\^\{?\d\}?)?\s*$").expect("static regex"));
static LEFT_RIGHT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\\(?:left|right|mleft|mright|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg)\s*(\.)?").expect("static regex")
});
static DEGREES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°").expect("static regex"));
static PERCENT_WORDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\s*(?:\\text\{\s*)?\b(?:percentage|percent|pct)\b(?:\s*\})?").expect("static regex"));
static AND_OR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r",?\s*\\text\{\s*,?\s*(?:and|or)\s*\}\s*|,?\s*(?:\\q?quad\s*)+").expect("static regex")
});
/// Bare `and`/`or` not touching other letters (`(11,7)or(7,11)`, `6 and 8`).
static BARE_AND_OR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(^|[^a-zA-Z\\])\s*,?\s*(?:and|or)\s*([^a-zA-Z]|$)").expect("static regex"));
/// A unit word between a number and a list separator: `{35 cm, 4}`.
static INNER_UNIT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(\d)\s+(?:cm|mm|km|m|kg|g|meters?|inch(?:es)?|feet|ft|miles?|hours?|minutes?|seconds?|degrees?|units?)\s*([,}])").expect("static regex")
});
static NEG_SPACE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\!\s*").expect("static regex"));
static SPACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\[,;:> ]|\\q?quad|~").expect("static regex"));
static STYLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits|rm\b)").expect("static regex")
});
static TEXT_ALIASES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\\(?:mathrm|mathit|mathsf|textbf|textit|textrm|textnormal|textsf|mbox|hbox)\s*\{").expect("static regex")
});
static FRAC_ALIASES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\[dtc]frac").expect("static regex"));
static BRACED_COMMA: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s*\{\s*,\s*\}\s*").expect("static regex"));
static DOUBLE_SLASH_CMD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\\\([a-zA-Z])").expect("static regex"));
static DOTS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r",?\s*\\(?:ldots|cdots|dots)").expect("static regex"));

/// Normalise one extracted LaTeX answer.
pub fn normalize_latex(input: &str) -> String {
    let mut s = input.replace(['\n', '\t', '\r'], " ");
    if !s.contains("matrix") && !s.contains("array") {
        s = DOUBLE_SLASH_CMD.replace_all(&s, r"\$1").into_owned();
    }
    // Protect `\\` (row separators) from the single-backslash rules below.
    s = s.replace("\\\\", "\u{1}");
    s = s.replace("\\$", "").replace('$', "");
    s = LEFT_RIGHT.replace_all(&s, "").into_owned();
    s = STYLE.replace_all(&s, "").into_owned();
    s = TEXT_ALIASES.replace_all(&s, r"\text{").into_owned();
    s = FRAC_ALIASES.replace_all(&s, r"\frac").into_owned();
    s = BRACED_COMMA.replace_all(&s, ",").into_owned();
    s = AND_OR.replace_all(&s, ",").into_owned();
    s = BARE_AND_OR.replace_all(&s, "$1,$2").into_owned();
    s = INNER_UNIT.replace_all(&s, "$1$2").into_owned();
    s = NEG_SPACE.replace_all(&s, "").into_owned();
    s = SPACES.replace_all(&s, " ").into_owned();
    s = DOTS.replace_all(&s, " ").into_owned();
    s = DEGREES.replace_all(&s, "").into_owned();
    s = PERCENT_WORDS.replace_all(&s, "%").into_owned();
    s = s.replace("\\%", "%");
    s = s.replace("\\infin ", "\\infty ").replace("\\le ", "\\leq ").replace("\\ge ", "\\geq ");
    s = s.replace("\\text{i}", "\\imath").replace("\\text{e}", "e");
    let mut t = s.trim().trim_end_matches(['.', ',', ';']).trim().to_string();
    // Trailing units: "\text{ cm}^2", "125 miles".
    for _ in 0..2 {
        if let Some(c) = TEXT_TAIL.captures(&t)
            && let Some(m) = c.get(1)
        {
            let head = m.as_str();
            // Keep \text when it is the whole answer or part of a list of words.
            if head.chars().any(|c| c.is_ascii_digit() || c == '}') && !head.ends_with(',') {
                t = head.trim().to_string();
            }
        }
        let stripped = UNIT_TAIL.replace(&t, "$1").trim().to_string();
        if !stripped.is_empty() && stripped.chars().any(|c| c.is_ascii_alphanumeric()) {
            t = stripped;
        }
    }
    t = t.replace('\u{1}', "\\\\");
    if t.starts_with('.') && t[1..].starts_with(|c: char| c.is_ascii_digit()) {
        t.insert(0, '0');
    }
    t
}

/// Does the answer end with a percent sign (after normalisation)?
pub fn split_percent(s: &str) -> (&str, bool) {
    match s.trim_end().strip_suffix('%') {
        Some(head) if !head.trim().is_empty() => (head.trim_end(), true),
        _ => (s, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans() {
        assert_eq!(normalize_latex("\\dfrac{1}{3}"), "\\frac{1}{3}");
        assert_eq!(normalize_latex("\\left( 1 \\right)"), "( 1 )");
        assert_eq!(normalize_latex("90^\\circ"), "90");
        assert_eq!(normalize_latex("15\\mbox{ cm}^2"), "15");
        assert_eq!(normalize_latex("125\\textnormal{ miles}"), "125");
        assert_eq!(normalize_latex("28 percent"), "28%");
        assert_eq!(normalize_latex("6 \\text{ and } 8"), "6,8");
        assert_eq!(normalize_latex("11,\\! 111"), "11,111");
        assert_eq!(normalize_latex("\\text{Evelyn}"), "\\text{Evelyn}");
    }
}
