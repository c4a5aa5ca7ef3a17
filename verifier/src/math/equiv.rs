//! Equivalence of two parsed answers: exact rational arithmetic first, then evaluation at random
//! points with a tolerance; relations, intervals, sets, tuples and matrices structurally.

use num_rational::BigRational;
use num_traits::{Signed, Zero};

use super::expr::{C64, Env, Expr, Func, RelOp, eval_exact, eval_num};
use crate::budget::{Budget, Exhausted};

/// How strictly to compare.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompareConfig {
    /// Decimal places to which numbers written with a decimal point are rounded before comparing.
    pub precision: u32,
    /// Variable names matter (`f(x)` is not `f(y)`).
    pub strict: bool,
    /// Compare a relation in the response with a set in the ground truth (`1 < x < 2` vs `(1, 2)`).
    pub allow_set_relation: bool,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig { precision: 6, strict: true, allow_set_relation: false }
    }
}

/// Largest set the matcher compares element by element.
const MAX_SET: usize = 64;
/// Random points tried for expressions with free symbols.
const POINTS: usize = 6;

struct Point<'a> {
    names: &'a [String],
    values: &'a [C64],
}

impl Env for Point<'_> {
    fn get(&self, name: &str) -> Option<C64> {
        self.names.iter().position(|n| n == name).map(|k| self.values[k])
    }
}

/// Deterministic pseudo-random values (splitmix64), so verdicts are reproducible.
fn sample(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    0.35 + 1.9 * ((z >> 11) as f64 / (1u64 << 53) as f64)
}

fn is_symbolic_only(e: &Expr) -> bool {
    if let Expr::Tuple(v) = e {
        return !v.is_empty() && v.iter().all(is_symbolic_only);
    }
    !e.has_number() && !e.symbols().is_empty() && !e.is_relation() && !e.is_set_like()
}

fn is_assignment(e: &Expr) -> bool {
    matches!(e, Expr::Rel { terms, ops } if ops.iter().all(|o| *o == RelOp::Eq) && is_symbolic_only(&terms[0]))
}

fn last_term(e: &Expr) -> Expr {
    match e {
        Expr::Rel { terms, .. } => terms.last().cloned().unwrap_or(Expr::int(0)),
        other => other.clone(),
    }
}

fn unwrap_in(e: Expr) -> Expr {
    match e {
        Expr::In(_, s) => *s,
        Expr::Set(items) => Expr::Set(items.into_iter().map(unwrap_in).collect()),
        other => other,
    }
}

fn neg(e: Expr) -> Expr {
    Expr::Neg(Box::new(e))
}

fn sub(a: &Expr, b: &Expr) -> Expr {
    Expr::Add(vec![a.clone(), neg(b.clone())])
}

fn is_infinite(e: &Expr) -> Option<bool> {
    match e {
        Expr::Infinity => Some(true),
        Expr::Neg(x) if **x == Expr::Infinity => Some(false),
        _ => None,
    }
}

/// A relation in one variable as the set it describes: `x < 3` is (-∞, 3); `1 ≤ |z| ≤ 2` is [-2,-1] ∪ [1,2].
fn relation_to_set(e: &Expr) -> Option<Expr> {
    let Expr::Rel { terms, ops } = e else { return None };
    let interval = |lo: Expr, hi: Expr, lo_open: bool, hi_open: bool| Expr::Interval {
        lo: Box::new(lo),
        hi: Box::new(hi),
        lo_open,
        hi_open,
    };
    let is_var = |t: &Expr| is_symbolic_only(t);
    let is_const = |t: &Expr| t.symbols().is_empty();
    let inf = || Expr::Infinity;
    let ninf = || neg(Expr::Infinity);
    match (terms.as_slice(), ops.as_slice()) {
        ([a, b], [op]) => {
            let (op, c) = if is_var(a) && is_const(b) {
                (*op, b.clone())
            } else if is_const(a) && is_var(b) {
                (op.flipped(), a.clone())
            } else {
                return None;
            };
            Some(match op {
                RelOp::Lt => interval(ninf(), c, true, true),
                RelOp::Le => interval(ninf(), c, true, false),
                RelOp::Gt => interval(c, inf(), true, true),
                RelOp::Ge => interval(c, inf(), false, true),
                RelOp::Eq => Expr::Set(vec![c]),
                RelOp::Ne => Expr::Union(vec![interval(ninf(), c.clone(), true, true), interval(c, inf(), true, true)]),
            })
        }
        ([a, v, b], [o1, o2]) if is_const(a) && is_var(v) && is_const(b) => {
            let (lo, hi, lo_open, hi_open) = match (o1, o2) {
                (RelOp::Lt | RelOp::Le, RelOp::Lt | RelOp::Le) => (a, b, *o1 == RelOp::Lt, *o2 == RelOp::Lt),
                (RelOp::Gt | RelOp::Ge, RelOp::Gt | RelOp::Ge) => (b, a, *o2 == RelOp::Gt, *o1 == RelOp::Gt),
                _ => return None,
            };
            if let Expr::Call(Func::Abs, _) = v {
                // c1 ≤ |z| ≤ c2 with c1 ≥ 0: two mirrored intervals.
                let budget = Budget::generous();
                let lo_v = eval_exact(lo, &budget).ok().flatten()?;
                if lo_v.is_negative() {
                    return None;
                }
                return Some(Expr::Union(vec![
                    interval(neg(hi.clone()), neg(lo.clone()), hi_open, lo_open),
                    interval(lo.clone(), hi.clone(), lo_open, hi_open),
                ]));
            }
            Some(interval(lo.clone(), hi.clone(), lo_open, hi_open))
        }
        _ => None,
    }
}

/// Compare a ground-truth answer with a response's answer.
pub fn equivalent(gold: &Expr, pred: &Expr, cfg: &CompareConfig, budget: &Budget) -> Result<bool, Exhausted> {
    budget.tick()?;
    let mut gold = unwrap_in(gold.clone());
    let mut pred = unwrap_in(pred.clone());
    if !cfg.strict {
        let gs: Vec<String> = gold.symbols().into_iter().collect();
        let ps: Vec<String> = pred.symbols().into_iter().collect();
        if gs.len() == ps.len() && gs != ps {
            pred = pred.rename(&|name| ps.iter().position(|p| p == name).map(|k| gs[k].clone()));
            // Function applications carry their argument names in the argument list.
            gold = strip_apply_args(&gold);
            pred = strip_apply_args(&pred);
        }
    }
    let gold_assign = is_assignment(&gold);
    let pred_assign = is_assignment(&pred);
    if gold_assign && let Expr::Rel { terms, .. } = &gold {
        gold = Expr::Rel { terms: vec![terms[0].clone(), last_term(&gold)], ops: vec![RelOp::Eq] };
    }
    if pred_assign && let Expr::Rel { terms, .. } = &pred {
        pred = Expr::Rel { terms: vec![terms[0].clone(), last_term(&pred)], ops: vec![RelOp::Eq] };
    }
    if pred.is_equation() && !gold.is_equation() {
        pred = last_term(&pred);
    } else if gold_assign && !pred.is_equation() {
        gold = last_term(&gold);
    }
    if gold.is_relation()
        && pred.is_set_like()
        && let Some(s) = relation_to_set(&gold)
    {
        gold = s;
    }
    if cfg.allow_set_relation
        && pred.is_relation()
        && gold.is_set_like()
        && let Some(s) = relation_to_set(&pred)
    {
        pred = s;
    }
    expr_eq(&gold, &pred, cfg, budget)
}

fn strip_apply_args(e: &Expr) -> Expr {
    match e {
        Expr::Apply(n, args) => Expr::Apply(n.clone(), args.iter().map(|_| Expr::Sym("_".into())).collect()),
        Expr::Rel { terms, ops } => Expr::Rel { terms: terms.iter().map(strip_apply_args).collect(), ops: ops.clone() },
        other => other.clone(),
    }
}

fn text_of(e: &Expr) -> Option<String> {
    match e {
        Expr::Text(s) | Expr::Word(s) => Some(s.to_lowercase()),
        Expr::Sym(s) => Some(if s.chars().count() > 1 { s.to_lowercase() } else { s.clone() }),
        _ => None,
    }
}

fn expr_eq(gold: &Expr, pred: &Expr, cfg: &CompareConfig, budget: &Budget) -> Result<bool, Exhausted> {
    budget.tick()?;
    if gold == pred {
        return Ok(true);
    }
    if gold.is_relation() || pred.is_relation() {
        return if gold.is_relation() && pred.is_relation() { relations_eq(gold, pred, cfg, budget) } else { Ok(false) };
    }
    if gold.is_set_like() || pred.is_set_like() {
        return sets_eq(gold, pred, cfg, budget);
    }
    if let (Expr::Matrix(a), Expr::Matrix(b)) = (gold, pred) {
        if a.len() != b.len() || a.iter().zip(b).any(|(r, s)| r.len() != s.len()) {
            return Ok(false);
        }
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            if !expr_eq(x, y, cfg, budget)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    if matches!(gold, Expr::Matrix(_)) || matches!(pred, Expr::Matrix(_)) {
        return Ok(false);
    }
    if matches!(gold, Expr::Text(_) | Expr::Word(_)) || matches!(pred, Expr::Text(_) | Expr::Word(_)) {
        if let (Some(a), Some(b)) = (text_of(gold), text_of(pred)) {
            return Ok(a == b);
        }
        if matches!(gold, Expr::Text(_)) || matches!(pred, Expr::Text(_)) {
            return Ok(false);
        }
    }
    if let (Expr::Sym(a), Expr::Sym(b)) = (gold, pred) {
        return Ok(text_of(&Expr::Sym(a.clone())) == text_of(&Expr::Sym(b.clone())));
    }
    // Percentages: "28%" matches 28, 0.28 and 28%.
    match (gold, pred) {
        (Expr::Percent(a), Expr::Percent(b)) => return scalar_eq(a, b, cfg, budget),
        (Expr::Percent(a), other) | (other, Expr::Percent(a)) => {
            return Ok(scalar_eq(a, other, cfg, budget)? || scalar_eq(&Expr::Percent(a.clone()), other, cfg, budget)?);
        }
        _ => {}
    }
    scalar_eq(gold, pred, cfg, budget)
}

fn round_eq_f64(a: f64, b: f64, precision: u32) -> bool {
    let scale = 10f64.powi(precision.min(15) as i32);
    (a * scale).round() == (b * scale).round() || (a - b).abs() < 1.0 / scale * 0.5 + f64::EPSILON * a.abs().max(b.abs())
}

fn round_eq_exact(a: &BigRational, b: &BigRational, precision: u32) -> bool {
    let scale = BigRational::from_integer(num_traits::pow::Pow::pow(num_bigint::BigInt::from(10u8), precision.min(30)));
    let ra = (a * &scale).round();
    let rb = (b * &scale).round();
    ra == rb || (a - b).abs() * &scale < BigRational::new(1.into(), 2.into())
}

fn close(a: C64, b: C64, tol: f64) -> bool {
    let d = C64::new(a.re - b.re, a.im - b.im).abs();
    d <= tol * 1f64.max(a.abs()).max(b.abs())
}

fn scalar_eq(gold: &Expr, pred: &Expr, cfg: &CompareConfig, budget: &Budget) -> Result<bool, Exhausted> {
    if gold == pred {
        return Ok(true);
    }
    if let (Some(a), Some(b)) = (is_infinite(gold), is_infinite(pred)) {
        return Ok(a == b);
    }
    if is_infinite(gold).is_some() || is_infinite(pred).is_some() {
        return Ok(false);
    }
    let decimal = gold.has_decimal() || pred.has_decimal();
    if let (Some(a), Some(b)) = (eval_exact(gold, budget)?, eval_exact(pred, budget)?) {
        return Ok(if decimal { round_eq_exact(&a, &b, cfg.precision) } else { a == b });
    }
    let mut names: Vec<String> = gold.symbols().into_iter().collect();
    for s in pred.symbols() {
        if !names.contains(&s) {
            names.push(s);
        }
    }
    let tol = if decimal { 10f64.powi(-(cfg.precision.min(12) as i32)) } else { 1e-8 };
    if names.is_empty() {
        let empty = Point { names: &[], values: &[] };
        return Ok(match (eval_num(gold, &empty, budget)?, eval_num(pred, &empty, budget)?) {
            (Some(a), Some(b)) if a.is_finite() && b.is_finite() => {
                if decimal && a.im.abs() < 1e-12 && b.im.abs() < 1e-12 {
                    round_eq_f64(a.re, b.re, cfg.precision)
                } else {
                    close(a, b, tol)
                }
            }
            _ => false,
        });
    }
    let mut agreed = 0;
    for trial in 0..POINTS as u64 * 3 {
        budget.tick()?;
        let values: Vec<C64> =
            (0..names.len() as u64).map(|k| C64::real(sample(trial * 1_000 + k * 7 + 1))).collect();
        let env = Point { names: &names, values: &values };
        let (Some(a), Some(b)) = (eval_num(gold, &env, budget)?, eval_num(pred, &env, budget)?) else { continue };
        if !a.is_finite() || !b.is_finite() {
            continue;
        }
        if !close(a, b, tol) {
            return Ok(false);
        }
        agreed += 1;
        if agreed >= POINTS {
            break;
        }
    }
    Ok(agreed >= 2)
}

/// Is `f = c·g` for a constant `c` (positive when `positive`)?
fn proportional(f: &Expr, g: &Expr, positive: bool, budget: &Budget) -> Result<bool, Exhausted> {
    let mut names: Vec<String> = f.symbols().into_iter().collect();
    for s in g.symbols() {
        if !names.contains(&s) {
            names.push(s);
        }
    }
    let mut ratio: Option<C64> = None;
    let mut agreed = 0;
    for trial in 0..POINTS as u64 * 3 {
        budget.tick()?;
        let values: Vec<C64> =
            (0..names.len() as u64).map(|k| C64::real(sample(trial * 1_000 + k * 13 + 5))).collect();
        let env = Point { names: &names, values: &values };
        let (Some(a), Some(b)) = (eval_num(f, &env, budget)?, eval_num(g, &env, budget)?) else { continue };
        if !a.is_finite() || !b.is_finite() {
            continue;
        }
        if b.abs() < 1e-12 {
            if a.abs() > 1e-9 {
                return Ok(false);
            }
            agreed += 1;
            continue;
        }
        let r = C64::new(
            (a.re * b.re + a.im * b.im) / (b.re * b.re + b.im * b.im),
            (a.im * b.re - a.re * b.im) / (b.re * b.re + b.im * b.im),
        );
        match ratio {
            None => {
                if r.abs() < 1e-12 || (positive && (r.re <= 0.0 || r.im.abs() > 1e-9)) {
                    return Ok(false);
                }
                ratio = Some(r);
            }
            Some(r0) => {
                if !close(r, r0, 1e-8) {
                    return Ok(false);
                }
            }
        }
        agreed += 1;
        if agreed >= POINTS || (names.is_empty() && agreed >= 1) {
            break;
        }
    }
    Ok(agreed >= 1)
}

/// One relation as (expression, kind) with `expression kind 0`, kind ∈ {=, ≠, <, ≤}.
fn canonical(lhs: &Expr, op: RelOp, rhs: &Expr) -> (Expr, RelOp) {
    match op {
        RelOp::Gt => (sub(rhs, lhs), RelOp::Lt),
        RelOp::Ge => (sub(rhs, lhs), RelOp::Le),
        o => (sub(lhs, rhs), o),
    }
}

fn relations_eq(gold: &Expr, pred: &Expr, cfg: &CompareConfig, budget: &Budget) -> Result<bool, Exhausted> {
    let (Expr::Rel { terms: gt, ops: go }, Expr::Rel { terms: pt, ops: po }) = (gold, pred) else { return Ok(false) };
    if go.len() != po.len() {
        return Ok(false);
    }
    // Try the response as written and read backwards (`5 ≥ x` is `x ≤ 5`).
    for reversed in [false, true] {
        let (pt2, po2): (Vec<Expr>, Vec<RelOp>) = if reversed {
            (pt.iter().rev().cloned().collect(), po.iter().rev().map(|o| o.flipped()).collect())
        } else {
            (pt.clone(), po.clone())
        };
        let mut all = true;
        for k in 0..go.len() {
            let (f, fk) = canonical(&gt[k], go[k], &gt[k + 1]);
            let (g, gk) = canonical(&pt2[k], po2[k], &pt2[k + 1]);
            if fk != gk {
                all = false;
                break;
            }
            let positive = matches!(fk, RelOp::Lt | RelOp::Le);
            let same = if positive || go.len() > 1 {
                // Chains compare piecewise exactly (up to a positive factor).
                proportional(&f, &g, positive, budget)?
            } else {
                proportional(&f, &g, false, budget)?
            };
            if !same {
                all = false;
                break;
            }
        }
        if all {
            return Ok(true);
        }
    }
    let _ = cfg;
    Ok(false)
}

fn elements(e: &Expr) -> Option<(&[Expr], bool)> {
    match e {
        Expr::Set(v) => Some((v, false)),
        Expr::Tuple(v) => Some((v, true)),
        _ => None,
    }
}

fn dedup(items: &[Expr]) -> Vec<Expr> {
    let mut out: Vec<Expr> = Vec::new();
    for it in items {
        if !out.contains(it) {
            out.push(it.clone());
        }
    }
    out
}

fn interval_ends(e: &Expr) -> Option<(&Expr, &Expr, bool, bool)> {
    match e {
        Expr::Interval { lo, hi, lo_open, hi_open } => Some((lo, hi, *lo_open, *hi_open)),
        _ => None,
    }
}

fn sets_eq(gold: &Expr, pred: &Expr, cfg: &CompareConfig, budget: &Budget) -> Result<bool, Exhausted> {
    let wrap = |e: &Expr| if e.is_set_like() { e.clone() } else { Expr::Set(vec![e.clone()]) };
    let g = wrap(gold);
    let p = wrap(pred);
    // Intervals.
    if let (Some(a), Some(b)) = (interval_ends(&g), interval_ends(&p)) {
        return Ok(a.2 == b.2
            && a.3 == b.3
            && scalar_or_expr_eq(a.0, b.0, cfg, budget)?
            && scalar_or_expr_eq(a.1, b.1, cfg, budget)?);
    }
    // An open interval (a, b) is written like a pair.
    let as_pair = |e: &Expr| -> Option<Expr> {
        match interval_ends(e) {
            Some((lo, hi, true, true)) => Some(Expr::Tuple(vec![lo.clone(), hi.clone()])),
            _ => None,
        }
    };
    if let (Some(pair), Some(_)) = (as_pair(&g), elements(&p)) {
        return sets_eq(&pair, &p, cfg, budget);
    }
    if let (Some(_), Some(pair)) = (elements(&g), as_pair(&p)) {
        return sets_eq(&g, &pair, cfg, budget);
    }
    // Unions: the same pieces in any order.
    let pieces = |e: &Expr| -> Vec<Expr> {
        match e {
            Expr::Union(v) => v.clone(),
            other => vec![other.clone()],
        }
    };
    if matches!(g, Expr::Union(_)) || matches!(p, Expr::Union(_)) {
        return matching(&pieces(&g), &pieces(&p), cfg, budget);
    }
    let (Some((ga, g_ordered)), Some((pa, p_ordered))) = (elements(&g), elements(&p)) else { return Ok(false) };
    if g_ordered || p_ordered {
        if ga.len() != pa.len() {
            return Ok(false);
        }
        for (x, y) in ga.iter().zip(pa) {
            if !equivalent(x, y, cfg, budget)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let (ga, pa) = (dedup(ga), dedup(pa));
    if ga.len() != pa.len() && ga.len() <= MAX_SET && pa.len() <= MAX_SET {
        // Sets hold each value once: {15 + 39/40, 639/40} is {639/40}.
        return matching(&dedup_by_value(&ga, cfg, budget)?, &dedup_by_value(&pa, cfg, budget)?, cfg, budget);
    }
    matching(&ga, &pa, cfg, budget)
}

fn dedup_by_value(items: &[Expr], cfg: &CompareConfig, budget: &Budget) -> Result<Vec<Expr>, Exhausted> {
    let mut out: Vec<Expr> = Vec::new();
    'next: for it in items {
        for kept in &out {
            if equivalent(kept, it, cfg, budget)? {
                continue 'next;
            }
        }
        out.push(it.clone());
    }
    Ok(out)
}

fn scalar_or_expr_eq(a: &Expr, b: &Expr, cfg: &CompareConfig, budget: &Budget) -> Result<bool, Exhausted> {
    expr_eq(a, b, cfg, budget)
}

/// Unordered comparison: every ground-truth element matches a distinct response element.
fn matching(ga: &[Expr], pa: &[Expr], cfg: &CompareConfig, budget: &Budget) -> Result<bool, Exhausted> {
    if ga.len() != pa.len() || ga.len() > MAX_SET {
        return Ok(false);
    }
    let mut used = vec![false; pa.len()];
    for x in ga {
        let mut found = false;
        for (k, y) in pa.iter().enumerate() {
            if !used[k] && equivalent(x, y, cfg, budget)? {
                used[k] = true;
                found = true;
                break;
            }
        }
        if !found {
            return Ok(false);
        }
    }
    Ok(true)
}

#[allow(dead_code)]
fn is_zero(r: &BigRational) -> bool {
    r.is_zero()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::parse::parse_latex;

    fn eq(a: &str, b: &str) -> bool {
        let budget = Budget::generous();
        let x = parse_latex(a, &budget).unwrap();
        let y = parse_latex(b, &budget).unwrap();
        equivalent(&x, &y, &CompareConfig::default(), &budget).unwrap()
    }

    #[test]
    fn numbers_and_expressions() {
        assert!(eq("\\frac{1}{2}", "0.5"));
        assert!(eq("\\frac{x+2}{7}", "\\frac{x}{7}+\\frac{2}{7}"));
        assert!(eq("\\tan^2(y)+1", "\\sec^2(y)"));
        assert!(!eq("4", "4\\sqrt{2}"));
        assert!(eq("3\\sqrt{13}", "\\sqrt{117}"));
        assert!(!eq("x+1", "y+1"));
    }

    #[test]
    fn relations_and_sets() {
        assert!(eq("x \\leq 5", "5 \\geq x"));
        assert!(eq("x < 1", "-x > -1"));
        assert!(!eq("x < 1", "x > -1"));
        assert!(eq("2x+4y-3=0", "y=-\\frac{1}{2}x+\\frac{3}{4}"));
        assert!(eq("k=1", "1"));
        assert!(eq("\\{1,2\\}", "\\{2,1\\}"));
        assert!(!eq("(1,2)", "(2,1)"));
        assert!(eq("[0,1)", "[0,1)"));
        assert!(!eq("(0,9)", "[0,9)"));
        assert!(eq("-2 \\le x \\le 7", "x \\in [-2,7]"));
    }
}
