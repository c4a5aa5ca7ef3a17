//! LaTeX (and plain-text) answer parser: a lexer and a recursive-descent parser with a depth limit.
//!
//! It reads what a normalised answer usually holds: numbers, `\frac`, `\sqrt`, powers, functions,
//! implicit multiplication, `\pm`, percentages, tuples, sets, intervals and unions, matrices,
//! relations and chains, `x \in S`, and `\text{}`.
//!
//! No input reaches unbounded recursion, here or later: the depth limit counts both the parser's
//! own recursion and every level a loop wraps around what it built (`7!!!…`, `y^y^…`, `a/b/…`,
//! `x_1_2…`, `a \pm b \pm …`, `x \in A \in …`), so a parsed tree is never deeper than
//! [`MAX_DEPTH`] and whatever walks it (normalise, compare, evaluate, print, drop) recurses at most
//! that deep. A deeper answer is [`ParseError::TooDeep`], which the checks treat as unparseable.

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{Num, One, Zero};

use super::expr::{Expr, Func, RelOp};
use crate::budget::{Budget, Exhausted};

/// Deepest nesting (of the parser's recursion plus the levels its loops build) before giving up.
pub const MAX_DEPTH: usize = 400;
/// Longest answer (in bytes) the parser accepts.
pub const MAX_LEN: usize = 64 * 1024;
/// Longest number literal (digits) accepted exactly.
const MAX_DIGITS: usize = 400;

#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    Syntax(&'static str),
    TooDeep,
    TooLong,
    Budget,
}

impl From<Exhausted> for ParseError {
    fn from(_: Exhausted) -> Self {
        ParseError::Budget
    }
}

type PResult<T> = Result<T, ParseError>;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(String),
    Word(String),
    Cmd(String),
    Text(String),
    Begin(String),
    End,
    /// `\\` (matrix row separator).
    RowSep,
    Ch(char),
}

fn lex(s: &str, budget: &Budget) -> PResult<Vec<Tok>> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    // Bracket depth: thousands separators are only read outside brackets ((12,102) is a pair).
    let mut depth = 0usize;
    while i < chars.len() {
        budget.tick()?;
        let c = chars[i];
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let start = i;
            let mut s = String::new();
            // Thousands groups: 1,234,567 (exactly three digits after each comma, no spaces).
            while i < chars.len() && chars[i].is_ascii_digit() {
                s.push(chars[i]);
                i += 1;
            }
            if s.len() <= 3 && !s.is_empty() && depth == 0 {
                let mut j = i;
                let mut grouped = String::new();
                while j + 3 < chars.len()
                    && chars[j] == ','
                    && chars[j + 1..j + 4].iter().all(|d| d.is_ascii_digit())
                    && !chars.get(j + 4).is_some_and(|d| d.is_ascii_digit())
                {
                    grouped.extend(&chars[j + 1..j + 4]);
                    j += 4;
                }
                if !grouped.is_empty() && chars.get(j) != Some(&',') {
                    s.push_str(&grouped);
                    i = j;
                }
            }
            if i < chars.len() && chars[i] == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                s.push('.');
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    s.push(chars[i]);
                    i += 1;
                }
            } else if i < chars.len() && chars[i] == '.' && start < i && !chars.get(i + 1).is_some_and(|d| d.is_alphanumeric()) {
                // "5." at the end of a sentence: drop the dot.
                i += 1;
            }
            if s.len() > MAX_DIGITS {
                return Err(ParseError::TooLong);
            }
            out.push(Tok::Num(s));
        } else if c.is_alphabetic() {
            let mut w = String::new();
            while i < chars.len() && chars[i].is_alphabetic() {
                w.push(chars[i]);
                i += 1;
            }
            out.push(Tok::Word(w));
        } else if c == '\\' {
            i += 1;
            if i >= chars.len() {
                break;
            }
            let d = chars[i];
            if d == '\\' {
                out.push(Tok::RowSep);
                i += 1;
            } else if d.is_ascii_alphabetic() {
                let mut name = String::new();
                while i < chars.len() && chars[i].is_ascii_alphabetic() {
                    name.push(chars[i]);
                    i += 1;
                }
                match name.as_str() {
                    "text" | "textup" | "texttt" | "textsf" => {
                        let (content, next) = read_group(&chars, i)?;
                        i = next;
                        out.push(Tok::Text(content));
                    }
                    "begin" => {
                        let (env, next) = read_group(&chars, i)?;
                        i = next;
                        if env == "array" {
                            // Skip the column specification.
                            let (_, next) = read_group(&chars, i)?;
                            i = next;
                        }
                        out.push(Tok::Begin(env));
                    }
                    "end" => {
                        let (_, next) = read_group(&chars, i)?;
                        i = next;
                        out.push(Tok::End);
                    }
                    _ => out.push(Tok::Cmd(name)),
                }
            } else {
                // \{ \} \| \% \, etc.
                out.push(Tok::Cmd(d.to_string()));
                i += 1;
            }
        } else {
            out.push(Tok::Ch(c));
            i += 1;
        }
    }
    Ok(out)
}

/// Read `{…}` (balanced) starting at `i` (skipping spaces); returns the content and the index after it.
fn read_group(chars: &[char], mut i: usize) -> PResult<(String, usize)> {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    if i >= chars.len() || chars[i] != '{' {
        return Err(ParseError::Syntax("expected {"));
    }
    let mut depth = 0usize;
    let start = i + 1;
    while i < chars.len() {
        match chars[i] {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Ok((chars[start..i].iter().collect(), i + 1));
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(ParseError::Syntax("unbalanced braces"))
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    abs_depth: usize,
    budget: &'a Budget,
}

fn rel_op(t: &Tok) -> Option<&'static str> {
    Some(match t {
        Tok::Ch('=') => "=",
        Tok::Ch('<') => "<",
        Tok::Ch('>') => ">",
        Tok::Ch('≤') => "<=",
        Tok::Ch('≥') => ">=",
        Tok::Ch('≠') => "!=",
        Tok::Ch('≈') => "~",
        Tok::Cmd(c) => match c.as_str() {
            "le" | "leq" | "leqslant" | "lt" => {
                if c == "lt" {
                    "<"
                } else {
                    "<="
                }
            }
            "ge" | "geq" | "geqslant" => ">=",
            "gt" => ">",
            "ne" | "neq" => "!=",
            "approx" | "simeq" | "sim" => "~",
            "in" => "in",
            _ => return None,
        },
        _ => return None,
    })
}

const FUNCTION_CMDS: &[&str] = &[
    "sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "exp", "ln",
    "log",
];

const GREEK: &[&str] = &[
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega", "Gamma",
    "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega",
];

/// Commands that only decorate their argument.
const DECORATIONS: &[&str] = &["overline", "bar", "vec", "hat", "widehat", "tilde", "mathbf", "boxed", "fbox", "underline", "overrightarrow", "mathbb", "mathcal", "bm", "boldsymbol"];

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.pos + k)
    }
    fn bump(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }
    fn eat_ch(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Ch(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn eat_cmd(&mut self, name: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Cmd(c)) if c == name) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn enter(&mut self) -> PResult<()> {
        self.budget.tick()?;
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(ParseError::TooDeep) } else { Ok(()) }
    }
    /// A loop that wraps the expression it builds one level deeper (`7!!!`, `a/b/c`, `y^y^y`) counts
    /// each level as a level of recursion: the tree's depth, not only the parser's, stays under
    /// [`MAX_DEPTH`], so nothing that walks the tree later (compare, evaluate, print, drop) can
    /// overflow the stack. Undone by [`Parser::unnest`].
    fn nest(&mut self, levels: &mut usize) -> PResult<()> {
        self.enter()?;
        *levels += 1;
        Ok(())
    }
    fn unnest(&mut self, levels: usize) {
        self.depth -= levels;
    }
    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn at_list_end(&self) -> bool {
        matches!(
            self.peek(),
            None | Some(Tok::Ch(')' | ']' | '}' | '&')) | Some(Tok::RowSep) | Some(Tok::End)
        ) || matches!(self.peek(), Some(Tok::Cmd(c)) if c == "}" || c == "rangle")
    }

    /// Items separated by `,` or `;` until a closer (not consumed).
    fn list(&mut self) -> PResult<Vec<Expr>> {
        self.enter()?;
        let mut items = Vec::new();
        loop {
            if self.at_list_end() {
                break;
            }
            items.push(self.relation()?);
            if !(self.eat_ch(',') || self.eat_ch(';')) {
                break;
            }
            while self.eat_ch(',') || self.eat_ch(';') {}
        }
        self.leave();
        Ok(items)
    }

    fn relation(&mut self) -> PResult<Expr> {
        self.enter()?;
        let mut nested = 0;
        let first = self.set_expr()?;
        let mut terms = vec![first];
        let mut ops: Vec<&'static str> = Vec::new();
        while let Some(op) = self.peek().and_then(rel_op) {
            self.pos += 1;
            // `<=` `>=` `!=` written with two characters.
            let op = match (op, self.peek()) {
                ("<", Some(Tok::Ch('='))) | (">", Some(Tok::Ch('='))) => {
                    self.pos += 1;
                    if op == "<" { "<=" } else { ">=" }
                }
                _ => op,
            };
            if op == "in" {
                self.nest(&mut nested)?;
                let set = self.set_expr()?;
                let lhs = terms.pop().unwrap_or(Expr::Sym("x".into()));
                terms.push(Expr::In(Box::new(lhs), Box::new(set)));
                continue;
            }
            ops.push(op);
            terms.push(self.set_expr()?);
        }
        // `!=` arrives as `!` (factorial position) then `=`; handled in postfix.
        self.unnest(nested);
        self.leave();
        if ops.is_empty() {
            return Ok(terms.pop().unwrap_or(Expr::Text(String::new())));
        }
        // `\approx`: `x \approx 11` is an answer; `… = 1/3 \approx 0.33` stops at the exact value.
        if let Some(k) = ops.iter().position(|o| *o == "~") {
            if k == 0 && ops.len() == 1 {
                ops[0] = "=";
            } else {
                ops.truncate(k);
                terms.truncate(k + 1);
            }
        }
        if ops.is_empty() {
            return Ok(terms.pop().unwrap_or(Expr::Text(String::new())));
        }
        let ops = ops
            .iter()
            .map(|o| match *o {
                "=" | "~" => RelOp::Eq,
                "<" => RelOp::Lt,
                "<=" => RelOp::Le,
                ">" => RelOp::Gt,
                ">=" => RelOp::Ge,
                _ => RelOp::Ne,
            })
            .collect();
        Ok(Expr::Rel { terms, ops })
    }

    fn set_expr(&mut self) -> PResult<Expr> {
        let first = self.additive()?;
        let mut parts = vec![first];
        while self.eat_cmd("cup") || self.eat_ch('∪') {
            parts.push(self.additive()?);
        }
        Ok(if parts.len() == 1 { parts.pop().unwrap_or(Expr::Text(String::new())) } else { Expr::Union(parts) })
    }

    fn additive(&mut self) -> PResult<Expr> {
        self.enter()?;
        let mut terms: Vec<Expr> = Vec::new();
        let mut pm: Option<Expr> = None;
        let first = if self.eat_cmd("pm") || self.eat_ch('±') {
            pm = Some(Expr::int(0));
            self.term()?
        } else if self.eat_cmd("mp") {
            pm = Some(Expr::int(0));
            Expr::Neg(Box::new(self.term()?))
        } else {
            self.unary_term()?
        };
        if let Some(z) = pm.take() {
            terms.push(Expr::PlusMinus(Box::new(z), Box::new(first)));
        } else {
            terms.push(first);
        }
        let mut nested = 0;
        loop {
            self.budget.tick()?;
            if self.eat_ch('+') {
                terms.push(self.term()?);
            } else if self.eat_ch('-') || self.eat_ch('−') {
                terms.push(Expr::Neg(Box::new(self.term()?)));
            } else if self.eat_cmd("pm") || self.eat_ch('±') || self.eat_cmd("mp") {
                self.nest(&mut nested)?;
                let rhs = self.term()?;
                let lhs = if terms.len() == 1 { terms.pop().unwrap_or(Expr::int(0)) } else { Expr::Add(std::mem::take(&mut terms)) };
                terms.push(Expr::PlusMinus(Box::new(lhs), Box::new(rhs)));
            } else {
                break;
            }
        }
        self.unnest(nested);
        self.leave();
        Ok(if terms.len() == 1 { terms.pop().unwrap_or(Expr::int(0)) } else { Expr::Add(terms) })
    }

    fn unary_term(&mut self) -> PResult<Expr> {
        if self.eat_ch('-') || self.eat_ch('−') {
            self.enter()?;
            let t = self.unary_term()?;
            self.leave();
            return Ok(Expr::Neg(Box::new(t)));
        }
        if self.eat_ch('+') {
            self.enter()?;
            let t = self.unary_term()?;
            self.leave();
            return Ok(t);
        }
        self.term()
    }

    fn starts_factor(&self) -> bool {
        match self.peek() {
            Some(Tok::Num(_) | Tok::Word(_) | Tok::Text(_) | Tok::Begin(_)) => true,
            Some(Tok::Ch('(' | '{' | '[' | '√' | 'π' | '∞')) => true,
            Some(Tok::Ch('|')) => self.abs_depth == 0,
            Some(Tok::Cmd(c)) => {
                !matches!(
                    c.as_str(),
                    "cdot" | "times" | "div" | "pm" | "mp" | "cup" | "cap" | "}" | "rangle" | "rfloor" | "rceil"
                        | "right" | "%" | "rvert" | "|" | "setminus" | "to" | "rightarrow" | "implies" | "quad"
                ) && rel_op(self.peek().unwrap_or(&Tok::End)).is_none()
                    && !(c == "|" && self.abs_depth > 0)
            }
            _ => false,
        }
    }

    fn term(&mut self) -> PResult<Expr> {
        self.enter()?;
        let mut nested = 0;
        let mut acc = self.unary_factor()?;
        loop {
            self.budget.tick()?;
            if !matches!(acc, Expr::Mul(_)) {
                // The next factor wraps `acc` (a product of a non-product, a quotient, a mixed number).
                self.nest(&mut nested)?;
            }
            if self.eat_ch('*') || self.eat_cmd("cdot") || self.eat_cmd("times") || self.eat_ch('×') || self.eat_ch('·') {
                let rhs = self.unary_factor()?;
                acc = mul(acc, rhs);
            } else if self.eat_ch('/') || self.eat_cmd("div") || self.eat_ch('÷') || self.eat_ch(':') {
                self.nest(&mut nested)?;
                let rhs = self.unary_factor()?;
                acc = Expr::Div(Box::new(acc), Box::new(rhs));
            } else if self.starts_factor() {
                let mixed = matches!(&acc, Expr::Num(n) if n.is_integer())
                    && matches!(self.peek(), Some(Tok::Cmd(c)) if c == "frac");
                let rhs = self.power()?;
                // 15\frac{39}{40} is a mixed number.
                let proper = |e: &Expr| matches!(e, Expr::Div(a, b) if matches!((&**a, &**b), (Expr::Num(x), Expr::Num(y)) if x.is_integer() && y.is_integer()));
                acc = if mixed && proper(&rhs) { Expr::Add(vec![acc, rhs]) } else { mul(acc, rhs) };
            } else {
                break;
            }
        }
        self.unnest(nested);
        self.leave();
        Ok(acc)
    }

    fn unary_factor(&mut self) -> PResult<Expr> {
        if self.eat_ch('-') {
            self.enter()?;
            let f = self.unary_factor()?;
            self.leave();
            return Ok(Expr::Neg(Box::new(f)));
        }
        if self.eat_ch('+') {
            return self.unary_factor();
        }
        self.power()
    }

    fn power(&mut self) -> PResult<Expr> {
        self.enter()?;
        let mut nested = 0;
        let base = self.postfix()?;
        let mut exps = Vec::new();
        while self.eat_ch('^') || (self.peek() == Some(&Tok::Ch('*')) && self.peek_at(1) == Some(&Tok::Ch('*')) && {
            self.pos += 2;
            true
        }) {
            self.nest(&mut nested)?;
            exps.push(self.script_arg()?);
            // Factorial after an exponent binds to the power: keep simple.
        }
        let mut e = None;
        while let Some(x) = exps.pop() {
            e = Some(match e {
                None => x,
                Some(inner) => Expr::Pow(Box::new(x), Box::new(inner)),
            });
        }
        let out = match e {
            Some(exp) => Expr::Pow(Box::new(base), Box::new(exp)),
            None => base,
        };
        self.unnest(nested);
        self.leave();
        Ok(out)
    }

    /// The argument of `^` or `_`: a braced group or a single token.
    fn script_arg(&mut self) -> PResult<Expr> {
        self.enter()?;
        let out = match self.peek().cloned() {
            Some(Tok::Ch('{')) => {
                self.pos += 1;
                let items = self.list()?;
                if !self.eat_ch('}') {
                    return Err(ParseError::Syntax("unclosed {"));
                }
                single(items)?
            }
            Some(Tok::Num(n)) => {
                // `x^23` is x^2·3 in LaTeX.
                let mut it = n.chars();
                let first = it.next().unwrap_or('0');
                let rest: String = it.collect();
                if rest.is_empty() || n.contains('.') {
                    self.pos += 1;
                    number(&n)?
                } else {
                    self.toks[self.pos] = Tok::Num(rest);
                    number(&first.to_string())?
                }
            }
            Some(Tok::Word(w)) if w.chars().count() > 1 => {
                let mut it = w.chars();
                let first = it.next().unwrap_or('x');
                self.toks[self.pos] = Tok::Word(it.collect());
                Expr::Sym(first.to_string())
            }
            Some(Tok::Ch('-')) => {
                self.pos += 1;
                Expr::Neg(Box::new(self.script_arg()?))
            }
            _ => self.postfix()?,
        };
        self.leave();
        Ok(out)
    }

    fn postfix(&mut self) -> PResult<Expr> {
        let mut e = self.primary()?;
        let mut nested = 0;
        loop {
            if self.peek() == Some(&Tok::Ch('!')) && self.peek_at(1) != Some(&Tok::Ch('=')) {
                self.pos += 1;
                self.nest(&mut nested)?;
                e = Expr::Call(Func::Factorial, Box::new(e));
            } else if self.peek() == Some(&Tok::Ch('!')) {
                // `!=`: turn into a relation token.
                self.pos += 1;
                self.toks[self.pos] = Tok::Cmd("neq".into());
                break;
            } else if self.eat_ch('_') {
                self.nest(&mut nested)?;
                let sub = self.script_arg()?;
                e = subscript(e, sub)?;
            } else if self.eat_ch('\'') {
                e = match e {
                    Expr::Sym(s) => Expr::Sym(format!("{s}'")),
                    other => other,
                };
            } else {
                break;
            }
        }
        self.unnest(nested);
        Ok(e)
    }

    fn group(&mut self) -> PResult<Expr> {
        if self.eat_ch('{') {
            let items = self.list()?;
            if !self.eat_ch('}') {
                return Err(ParseError::Syntax("unclosed {"));
            }
            single(items)
        } else {
            self.script_arg()
        }
    }

    fn primary(&mut self) -> PResult<Expr> {
        self.enter()?;
        let Some(tok) = self.bump() else { return Err(ParseError::Syntax("unexpected end")) };
        let out = match tok {
            Tok::Num(n) => number(&n)?,
            Tok::Word(w) => self.word(w)?,
            Tok::Text(t) => text_node(&t, self.budget)?,
            Tok::Ch('(') => {
                let items = self.list()?;
                if self.eat_ch(')') {
                    if items.len() == 1 { single(items)? } else { Expr::Tuple(items) }
                } else if self.eat_ch(']') {
                    interval(items, true, false)?
                } else {
                    return Err(ParseError::Syntax("unclosed ("));
                }
            }
            Tok::Ch('[') => {
                let items = self.list()?;
                if self.eat_ch(']') {
                    if items.len() == 2 { interval(items, false, false)? } else if items.len() == 1 { single(items)? } else { Expr::Tuple(items) }
                } else if self.eat_ch(')') {
                    interval(items, false, true)?
                } else {
                    return Err(ParseError::Syntax("unclosed ["));
                }
            }
            Tok::Ch('{') => {
                let items = self.list()?;
                if !self.eat_ch('}') {
                    return Err(ParseError::Syntax("unclosed {"));
                }
                if items.len() == 1 { single(items)? } else { Expr::Set(items) }
            }
            Tok::Ch('|') => {
                self.abs_depth += 1;
                let inner = self.additive()?;
                self.abs_depth -= 1;
                if !self.eat_ch('|') {
                    return Err(ParseError::Syntax("unclosed |"));
                }
                Expr::Call(Func::Abs, Box::new(inner))
            }
            Tok::Ch('π') => Expr::Pi,
            Tok::Ch('∞') => Expr::Infinity,
            Tok::Ch('√') => Expr::Call(Func::Sqrt, Box::new(self.power()?)),
            Tok::Begin(env) => self.matrix(&env)?,
            Tok::Cmd(c) => self.command(&c)?,
            _ => return Err(ParseError::Syntax("unexpected token")),
        };
        self.leave();
        Ok(out)
    }

    fn word(&mut self, w: String) -> PResult<Expr> {
        if w.chars().count() == 1 {
            // f(x): an undefined function applied, for the letters usually used so.
            let c = w.chars().next().unwrap_or('x');
            if "fghFGHPQRWSTNL".contains(c) && self.peek() == Some(&Tok::Ch('(')) {
                self.pos += 1;
                let args = self.list()?;
                if !self.eat_ch(')') {
                    return Err(ParseError::Syntax("unclosed ("));
                }
                return Ok(Expr::Apply(w, args));
            }
            return Ok(Expr::Sym(w));
        }
        if let Some(f) = Func::from_name(&w) {
            return self.function_args(f);
        }
        Ok(match w.as_str() {
            "pi" => Expr::Pi,
            "infty" | "inf" | "infinity" | "oo" => Expr::Infinity,
            _ => Expr::Word(w),
        })
    }

    fn function_args(&mut self, f: Func) -> PResult<Expr> {
        // \sin^2 x, \sin^{-1} x, \log_2 x
        let mut power = None;
        let mut base = None;
        loop {
            if self.eat_ch('^') {
                power = Some(self.script_arg()?);
            } else if self.eat_ch('_') {
                base = Some(self.script_arg()?);
            } else {
                break;
            }
        }
        let arg = if self.peek() == Some(&Tok::Ch('(')) {
            self.power()?
        } else if f == Func::Sqrt {
            self.group()?
        } else {
            self.power()?
        };
        let inverse = power.as_ref().is_some_and(|p| *p == Expr::Neg(Box::new(Expr::int(1))));
        let f = if inverse {
            match f {
                Func::Sin => Func::Asin,
                Func::Cos => Func::Acos,
                Func::Tan => Func::Atan,
                other => other,
            }
        } else {
            f
        };
        let call = match (f, base) {
            (Func::Log, Some(b)) => Expr::LogBase(Box::new(b), Box::new(arg)),
            (f, _) => Expr::Call(f, Box::new(arg)),
        };
        Ok(match power {
            Some(p) if !inverse => Expr::Pow(Box::new(call), Box::new(p)),
            _ => call,
        })
    }

    fn command(&mut self, c: &str) -> PResult<Expr> {
        Ok(match c {
            "frac" | "dfrac" | "tfrac" | "cfrac" => {
                let a = self.group()?;
                let b = self.group()?;
                Expr::Div(Box::new(a), Box::new(b))
            }
            "binom" | "dbinom" | "tbinom" | "choose" => {
                let a = self.group()?;
                let b = self.group()?;
                Expr::Binom(Box::new(a), Box::new(b))
            }
            "sqrt" => {
                if self.eat_ch('[') {
                    let n = self.additive()?;
                    if !self.eat_ch(']') {
                        return Err(ParseError::Syntax("unclosed ["));
                    }
                    let x = self.group()?;
                    Expr::Root(Box::new(n), Box::new(x))
                } else {
                    Expr::Call(Func::Sqrt, Box::new(self.group()?))
                }
            }
            "sum" | "prod" => {
                // Kept opaque: compared by evaluating bounds and body, not by summing.
                let mut lower = Expr::Sym("_".into());
                let mut upper = Expr::Sym("_".into());
                loop {
                    if self.eat_ch('_') {
                        lower = self.script_arg()?;
                    } else if self.eat_ch('^') {
                        upper = self.script_arg()?;
                    } else {
                        break;
                    }
                }
                let body = self.term()?;
                Expr::Apply(c.to_string(), vec![lower, upper, body])
            }
            "pi" => Expr::Pi,
            "infty" | "infin" => Expr::Infinity,
            "emptyset" | "varnothing" => Expr::Set(Vec::new()),
            "imath" | "i" => Expr::I,
            "e" => Expr::Sym("e".into()),
            "{" => {
                let items = self.list()?;
                if !self.eat_cmd("}") {
                    return Err(ParseError::Syntax("unclosed \\{"));
                }
                Expr::Set(items)
            }
            "langle" => {
                let items = self.list()?;
                if !self.eat_cmd("rangle") {
                    return Err(ParseError::Syntax("unclosed langle"));
                }
                Expr::Tuple(items)
            }
            "lfloor" | "lceil" => {
                let inner = self.additive()?;
                if !(self.eat_cmd("rfloor") || self.eat_cmd("rceil")) {
                    return Err(ParseError::Syntax("unclosed floor"));
                }
                Expr::Call(if c == "lfloor" { Func::Floor } else { Func::Ceil }, Box::new(inner))
            }
            "lvert" | "vert" | "|" | "lVert" => {
                self.abs_depth += 1;
                let inner = self.additive()?;
                self.abs_depth -= 1;
                if !(self.eat_cmd("rvert") || self.eat_cmd("vert") || self.eat_cmd("|") || self.eat_cmd("rVert") || self.eat_ch('|')) {
                    return Err(ParseError::Syntax("unclosed |"));
                }
                Expr::Call(Func::Abs, Box::new(inner))
            }
            "%" => return Err(ParseError::Syntax("stray %")),
            "operatorname" => {
                let name = match self.peek().cloned() {
                    Some(Tok::Ch('{')) => {
                        self.pos += 1;
                        let w = match self.bump() {
                            Some(Tok::Word(w)) => w,
                            _ => return Err(ParseError::Syntax("bad operatorname")),
                        };
                        if !self.eat_ch('}') {
                            return Err(ParseError::Syntax("bad operatorname"));
                        }
                        w
                    }
                    _ => return Err(ParseError::Syntax("bad operatorname")),
                };
                match Func::from_name(&name) {
                    Some(f) => self.function_args(f)?,
                    None => return Err(ParseError::Syntax("unknown operator")),
                }
            }
            _ if FUNCTION_CMDS.contains(&c) => match Func::from_name(c) {
                Some(f) => self.function_args(f)?,
                None => return Err(ParseError::Syntax("unknown function")),
            },
            _ if GREEK.contains(&c) => Expr::Sym(c.to_string()),
            _ if DECORATIONS.contains(&c) => {
                let inner = self.group()?;
                match inner {
                    // \overline{AB} names a segment: one symbol.
                    Expr::Word(w) => Expr::Sym(w),
                    other => other,
                }
            }
            _ => return Err(ParseError::Syntax("unknown command")),
        })
    }

    fn matrix(&mut self, env: &str) -> PResult<Expr> {
        if !matches!(env, "pmatrix" | "bmatrix" | "matrix" | "array" | "vmatrix" | "Bmatrix" | "smallmatrix") {
            return Err(ParseError::Syntax("unknown environment"));
        }
        let mut rows: Vec<Vec<Expr>> = Vec::new();
        let mut row = Vec::new();
        loop {
            self.budget.tick()?;
            match self.peek() {
                None => return Err(ParseError::Syntax("unclosed matrix")),
                Some(Tok::End) => {
                    self.pos += 1;
                    if !row.is_empty() {
                        rows.push(std::mem::take(&mut row));
                    }
                    break;
                }
                Some(Tok::RowSep) => {
                    self.pos += 1;
                    if !row.is_empty() {
                        rows.push(std::mem::take(&mut row));
                    }
                }
                Some(Tok::Ch('&')) => {
                    self.pos += 1;
                }
                _ => row.push(self.relation()?),
            }
        }
        if rows.is_empty() || rows.iter().any(|r| r.len() != rows[0].len()) {
            return Err(ParseError::Syntax("ragged matrix"));
        }
        Ok(Expr::Matrix(rows))
    }
}

fn mul(a: Expr, b: Expr) -> Expr {
    match a {
        Expr::Mul(mut v) => {
            v.push(b);
            Expr::Mul(v)
        }
        a => Expr::Mul(vec![a, b]),
    }
}

fn single(mut items: Vec<Expr>) -> PResult<Expr> {
    match items.len() {
        1 => Ok(items.pop().unwrap_or(Expr::int(0))),
        0 => Err(ParseError::Syntax("empty group")),
        _ => Ok(Expr::Set(items)),
    }
}

fn interval(mut items: Vec<Expr>, lo_open: bool, hi_open: bool) -> PResult<Expr> {
    if items.len() != 2 {
        return Err(ParseError::Syntax("interval needs two ends"));
    }
    let hi = items.pop().unwrap_or(Expr::Infinity);
    let lo = items.pop().unwrap_or(Expr::Infinity);
    Ok(Expr::Interval { lo: Box::new(lo), hi: Box::new(hi), lo_open, hi_open })
}

/// Parse a decimal literal (digits, optional fraction part) exactly.
pub fn number(s: &str) -> PResult<Expr> {
    let (int_part, frac_part) = match s.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let int_part = if int_part.is_empty() { "0" } else { int_part };
    let n = BigInt::from_str_radix(int_part, 10).map_err(|_| ParseError::Syntax("bad number"))?;
    match frac_part {
        None | Some("") => Ok(Expr::Num(BigRational::from_integer(n))),
        Some(f) => {
            let fnum = BigInt::from_str_radix(f, 10).map_err(|_| ParseError::Syntax("bad number"))?;
            let scale = num_traits::pow::Pow::pow(BigInt::from(10u8), f.len() as u32);
            let v = BigRational::from_integer(n) + BigRational::new(fnum, scale);
            Ok(Expr::Dec(v))
        }
    }
}

fn subscript(base: Expr, sub: Expr) -> PResult<Expr> {
    let sub_text = flat_name(&sub);
    Ok(match base {
        Expr::Sym(s) => Expr::Sym(format!("{s}_{sub_text}")),
        Expr::Word(w) => Expr::Sym(format!("{w}_{sub_text}")),
        Expr::Apply(n, a) => Expr::Apply(format!("{n}_{sub_text}"), a),
        // 204_5: a number written in base 5.
        Expr::Num(n) if n.is_integer() => {
            let digits = n.numer().to_string();
            let base: Option<u32> = sub_text.parse().ok();
            match base {
                Some(b) if (2..=36).contains(&b) => match BigInt::from_str_radix(&digits, b) {
                    Ok(v) => Expr::Num(BigRational::from_integer(v)),
                    Err(_) => Expr::Sym(format!("{digits}_{sub_text}")),
                },
                _ => Expr::Sym(format!("{digits}_{sub_text}")),
            }
        }
        other => other,
    })
}

fn flat_name(e: &Expr) -> String {
    match e {
        Expr::Num(n) => n.to_string(),
        Expr::Sym(s) | Expr::Word(s) | Expr::Text(s) => s.clone(),
        Expr::Mul(v) => v.iter().map(flat_name).collect(),
        Expr::Add(v) => v.iter().map(flat_name).collect::<Vec<_>>().join("+"),
        other => format!("{other:?}").chars().filter(|c| c.is_alphanumeric()).take(32).collect(),
    }
}

/// `\text{…}`: numbers and single letters inside text are math; other text stays text.
fn text_node(t: &str, budget: &Budget) -> PResult<Expr> {
    let t = t.trim();
    let inner = t.strip_prefix('(').and_then(|s| s.strip_suffix(')')).unwrap_or(t).trim();
    if inner.is_empty() {
        return Err(ParseError::Syntax("empty text"));
    }
    if inner.chars().count() == 1 && inner.chars().all(|c| c.is_alphabetic()) {
        return Ok(Expr::Sym(inner.to_string()));
    }
    if inner.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return number(inner);
    }
    let _ = budget;
    Ok(Expr::Text(inner.split_whitespace().collect::<Vec<_>>().join(" ")))
}

/// Parse a normalised LaTeX answer.
pub fn parse_latex(s: &str, budget: &Budget) -> PResult<Expr> {
    if s.len() > MAX_LEN {
        return Err(ParseError::TooLong);
    }
    let toks = lex(s, budget)?;
    if toks.is_empty() {
        return Err(ParseError::Syntax("empty"));
    }
    let mut p = Parser { toks, pos: 0, depth: 0, abs_depth: 0, budget };
    let items = p.list()?;
    if p.pos != p.toks.len() {
        return Err(ParseError::Syntax("trailing input"));
    }
    let e = single(items)?;
    Ok(expand_plus_minus(matrix_arithmetic(e)))
}

/// Largest matrix dimension multiplied out.
const MAX_MATRIX: usize = 16;

/// Carry out sums and products of explicit matrices (`A + B`, `A B`, `2A`), so they compare by value.
fn matrix_arithmetic(e: Expr) -> Expr {
    fn shape(m: &[Vec<Expr>]) -> (usize, usize) {
        (m.len(), m.first().map_or(0, Vec::len))
    }
    fn scale(m: Vec<Vec<Expr>>, k: &Expr) -> Vec<Vec<Expr>> {
        m.into_iter().map(|r| r.into_iter().map(|x| Expr::Mul(vec![k.clone(), x])).collect()).collect()
    }
    match e {
        Expr::Add(items) if items.iter().all(|x| matches!(x, Expr::Matrix(_))) && items.len() > 1 => {
            let ms: Vec<Vec<Vec<Expr>>> =
                items.into_iter().filter_map(|x| if let Expr::Matrix(m) = x { Some(m) } else { None }).collect();
            let (r, c) = shape(&ms[0]);
            if ms.iter().any(|m| shape(m) != (r, c)) || r > MAX_MATRIX || c > MAX_MATRIX {
                return Expr::Add(ms.into_iter().map(Expr::Matrix).collect());
            }
            let sum = (0..r).map(|i| (0..c).map(|j| Expr::Add(ms.iter().map(|m| m[i][j].clone()).collect())).collect()).collect();
            Expr::Matrix(sum)
        }
        Expr::Mul(items) if items.iter().any(|x| matches!(x, Expr::Matrix(_))) => {
            let mut acc: Option<Vec<Vec<Expr>>> = None;
            let mut scalars = Vec::new();
            for x in items {
                match x {
                    Expr::Matrix(m) => {
                        acc = Some(match acc {
                            None => m,
                            Some(a) => {
                                let (ar, ac) = shape(&a);
                                let (br, bc) = shape(&m);
                                if ac != br || ar > MAX_MATRIX || bc > MAX_MATRIX || ac > MAX_MATRIX {
                                    return Expr::Text("incompatible matrix product".into());
                                }
                                (0..ar)
                                    .map(|i| {
                                        (0..bc)
                                            .map(|j| Expr::Add((0..ac).map(|k| Expr::Mul(vec![a[i][k].clone(), m[k][j].clone()])).collect()))
                                            .collect()
                                    })
                                    .collect()
                            }
                        })
                    }
                    other => scalars.push(other),
                }
            }
            let mut m = acc.unwrap_or_default();
            for k in &scalars {
                m = scale(m, k);
            }
            Expr::Matrix(m)
        }
        other => other,
    }
}

/// `a \pm b` means the set {a + b, a - b}; inside a set it contributes both members.
pub fn expand_plus_minus(e: Expr) -> Expr {
    fn has_pm(e: &Expr) -> bool {
        let mut found = false;
        e.visit(&mut |x| {
            if matches!(x, Expr::PlusMinus(..)) {
                found = true;
            }
        });
        found
    }
    fn variants(e: &Expr, out: &mut Vec<Expr>) {
        // Replace the first PlusMinus by each sign, recursively (at most 2^4 variants).
        fn replace_first(e: &Expr, sign: bool, done: &mut bool) -> Expr {
            if *done {
                return e.clone();
            }
            match e {
                Expr::PlusMinus(a, b) => {
                    *done = true;
                    let b = if sign { (**b).clone() } else { Expr::Neg(b.clone()) };
                    if **a == Expr::int(0) { b } else { Expr::Add(vec![(**a).clone(), b]) }
                }
                Expr::Add(v) => Expr::Add(v.iter().map(|x| replace_first(x, sign, done)).collect()),
                Expr::Mul(v) => Expr::Mul(v.iter().map(|x| replace_first(x, sign, done)).collect()),
                Expr::Neg(a) => Expr::Neg(Box::new(replace_first(a, sign, done))),
                Expr::Div(a, b) => {
                    let a2 = replace_first(a, sign, done);
                    let b2 = replace_first(b, sign, done);
                    Expr::Div(Box::new(a2), Box::new(b2))
                }
                Expr::Pow(a, b) => {
                    let a2 = replace_first(a, sign, done);
                    let b2 = replace_first(b, sign, done);
                    Expr::Pow(Box::new(a2), Box::new(b2))
                }
                Expr::Call(f, a) => Expr::Call(*f, Box::new(replace_first(a, sign, done))),
                Expr::Rel { terms, ops } => Expr::Rel {
                    terms: terms.iter().map(|x| replace_first(x, sign, done)).collect(),
                    ops: ops.clone(),
                },
                other => other.clone(),
            }
        }
        if out.len() >= 16 {
            return;
        }
        if !has_pm(e) {
            out.push(e.clone());
            return;
        }
        for sign in [true, false] {
            let mut done = false;
            let v = replace_first(e, sign, &mut done);
            if !done {
                out.push(e.clone());
                return;
            }
            variants(&v, out);
        }
    }
    match e {
        Expr::Set(items) => {
            let mut out = Vec::new();
            for it in items {
                if has_pm(&it) {
                    variants(&it, &mut out);
                } else {
                    out.push(it);
                }
            }
            Expr::Set(out)
        }
        e if has_pm(&e) => {
            let mut out = Vec::new();
            variants(&e, &mut out);
            if out.len() == 1 { out.pop().unwrap_or(Expr::int(0)) } else { Expr::Set(out) }
        }
        e => e,
    }
}

/// Parse a plain-text expression (`1/2`, `3*(4+5)`, `2^10`) with the same grammar.
pub fn parse_plain(s: &str, budget: &Budget) -> PResult<Expr> {
    parse_latex(s, budget)
}

#[allow(dead_code)]
fn is_one(e: &Expr) -> bool {
    matches!(e, Expr::Num(n) if n.is_one())
}

#[allow(dead_code)]
fn is_zero(e: &Expr) -> bool {
    matches!(e, Expr::Num(n) if n.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Expr {
        parse_latex(s, &Budget::generous()).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    #[test]
    fn basics() {
        assert!(matches!(p("\\frac{1}{2}"), Expr::Div(..)));
        assert!(matches!(p("(1,2]"), Expr::Interval { lo_open: true, hi_open: false, .. }));
        assert!(matches!(p("\\{1,2\\}"), Expr::Set(v) if v.len() == 2));
        assert!(matches!(p("1 \\pm \\sqrt{2}"), Expr::Set(v) if v.len() == 2));
        assert!(matches!(p("x \\leq 2"), Expr::Rel { .. }));
        assert!(matches!(p("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"), Expr::Matrix(r) if r.len() == 2));
        assert!(matches!(p("1,000,000"), Expr::Num(_)));
        assert!(matches!(p("204_5"), Expr::Num(n) if n == BigRational::from_integer(54.into())));
        assert!(matches!(p("x != 3"), Expr::Rel { .. }));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let s = "{".repeat(10_000) + &"}".repeat(10_000);
        assert!(parse_latex(&s, &Budget::generous()).is_err());
        let s = "(".repeat(1000) + "1" + &")".repeat(1000);
        assert!(parse_latex(&s, &Budget::generous()).is_err());
        // Chains built by loops, not recursion, are as deep as what they build.
        for s in [format!("7{}", "!".repeat(1000)), vec!["y"; 1000].join("^"), vec!["a"; 1000].join("/"), vec!["x"; 1000].join("_")] {
            assert!(matches!(parse_latex(&s, &Budget::generous()), Err(ParseError::TooDeep)), "{}", &s[..20]);
        }
        // Shallow ones still parse, and a flat product or sum of many terms is not deep.
        assert!(parse_latex(&format!("7{}", "!".repeat(50)), &Budget::generous()).is_ok());
        assert!(parse_latex(&vec!["a"; 1000].join("\\cdot "), &Budget::generous()).is_ok());
        assert!(parse_latex(&vec!["a"; 1000].join("+"), &Budget::generous()).is_ok());
    }
}
