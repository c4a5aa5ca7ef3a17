//! The expression tree that LaTeX and plain-text answers parse into, with exact (rational) and
//! numeric (complex f64) evaluation. Both evaluations are bounded: big integers may not grow past
//! [`MAX_BITS`], recursion is bounded by the parser's depth limit, and every node costs a budget step.

use std::collections::BTreeSet;

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

use crate::budget::{Budget, Exhausted};

/// Largest integer (numerator or denominator) exact arithmetic may produce, in bits.
pub const MAX_BITS: u64 = 4096;

/// Relation operators, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl RelOp {
    /// The operator seen from the other side: `a < b` is `b > a`.
    pub fn flipped(self) -> RelOp {
        match self {
            RelOp::Lt => RelOp::Gt,
            RelOp::Le => RelOp::Ge,
            RelOp::Gt => RelOp::Lt,
            RelOp::Ge => RelOp::Le,
            o => o,
        }
    }
}

/// Known functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Sin,
    Cos,
    Tan,
    Sec,
    Csc,
    Cot,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Exp,
    Ln,
    /// `\log` without a base: natural log, as sympy reads it.
    Log,
    Sqrt,
    Abs,
    Floor,
    Ceil,
    Factorial,
}

impl Func {
    pub fn from_name(name: &str) -> Option<Func> {
        Some(match name {
            "sin" => Func::Sin,
            "cos" => Func::Cos,
            "tan" => Func::Tan,
            "sec" => Func::Sec,
            "csc" => Func::Csc,
            "cot" => Func::Cot,
            "arcsin" | "asin" => Func::Asin,
            "arccos" | "acos" => Func::Acos,
            "arctan" | "atan" => Func::Atan,
            "sinh" => Func::Sinh,
            "cosh" => Func::Cosh,
            "tanh" => Func::Tanh,
            "exp" => Func::Exp,
            "ln" => Func::Ln,
            "log" => Func::Log,
            "sqrt" => Func::Sqrt,
            _ => return None,
        })
    }
}

/// An answer, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// An exact number written without a decimal point.
    Num(BigRational),
    /// A number written with a decimal point: compared with rounding.
    Dec(BigRational),
    Sym(String),
    /// A run of letters (`odd`, `AB`): a product of symbols that also compares as text.
    Word(String),
    Pi,
    Infinity,
    /// The imaginary unit.
    I,
    Add(Vec<Expr>),
    Mul(Vec<Expr>),
    Neg(Box<Expr>),
    Div(Box<Expr>, Box<Expr>),
    Pow(Box<Expr>, Box<Expr>),
    Call(Func, Box<Expr>),
    /// `\log_b x`.
    LogBase(Box<Expr>, Box<Expr>),
    /// `\sqrt[n]{x}`.
    Root(Box<Expr>, Box<Expr>),
    Binom(Box<Expr>, Box<Expr>),
    /// An undefined function applied: `f(x)`.
    Apply(String, Vec<Expr>),
    /// `a \pm b` (`a` is zero for a leading `\pm`).
    PlusMinus(Box<Expr>, Box<Expr>),
    Percent(Box<Expr>),
    Tuple(Vec<Expr>),
    Set(Vec<Expr>),
    Interval { lo: Box<Expr>, hi: Box<Expr>, lo_open: bool, hi_open: bool },
    Union(Vec<Expr>),
    Matrix(Vec<Vec<Expr>>),
    /// A chain `a op b op c …` (`ops.len() == terms.len() - 1`).
    Rel { terms: Vec<Expr>, ops: Vec<RelOp> },
    /// `x \in S`.
    In(Box<Expr>, Box<Expr>),
    Text(String),
}

impl Expr {
    pub fn int(n: i64) -> Expr {
        Expr::Num(BigRational::from_integer(BigInt::from(n)))
    }

    pub fn is_set_like(&self) -> bool {
        matches!(self, Expr::Set(_) | Expr::Tuple(_) | Expr::Interval { .. } | Expr::Union(_))
    }

    pub fn is_relation(&self) -> bool {
        matches!(self, Expr::Rel { .. })
    }

    pub fn is_equation(&self) -> bool {
        matches!(self, Expr::Rel { ops, .. } if ops.iter().all(|o| *o == RelOp::Eq))
    }

    /// Does this tree contain a decimal literal (then comparison rounds)?
    pub fn has_decimal(&self) -> bool {
        let mut found = false;
        self.visit(&mut |e| {
            if matches!(e, Expr::Dec(_)) {
                found = true;
            }
        });
        found
    }

    /// Does this tree contain any number literal (outside symbol names)?
    pub fn has_number(&self) -> bool {
        let mut found = false;
        self.visit(&mut |e| {
            if matches!(e, Expr::Num(_) | Expr::Dec(_)) {
                found = true;
            }
        });
        found
    }

    /// Free symbol names (letters of words included; `e`, `i` and `\pi` are constants).
    pub fn symbols(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.visit(&mut |e| match e {
            Expr::Sym(s) if s != "e" => {
                out.insert(s.clone());
            }
            Expr::Word(w) => {
                for c in w.chars() {
                    out.insert(c.to_string());
                }
            }
            Expr::Apply(name, args) => {
                // Function applications are treated as opaque symbols named by their text.
                out.insert(format!("{name}({})", args.len()));
            }
            _ => {}
        });
        out
    }

    /// Pre-order visit of every node.
    pub fn visit(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Add(v) | Expr::Mul(v) | Expr::Tuple(v) | Expr::Set(v) | Expr::Union(v) => {
                v.iter().for_each(|e| e.visit(f))
            }
            Expr::Apply(_, v) => v.iter().for_each(|e| e.visit(f)),
            Expr::Rel { terms, .. } => terms.iter().for_each(|e| e.visit(f)),
            Expr::Neg(a) | Expr::Call(_, a) | Expr::Percent(a) => a.visit(f),
            Expr::Div(a, b)
            | Expr::Pow(a, b)
            | Expr::LogBase(a, b)
            | Expr::Root(a, b)
            | Expr::Binom(a, b)
            | Expr::PlusMinus(a, b)
            | Expr::In(a, b) => {
                a.visit(f);
                b.visit(f);
            }
            Expr::Interval { lo, hi, .. } => {
                lo.visit(f);
                hi.visit(f);
            }
            Expr::Matrix(rows) => rows.iter().flatten().for_each(|e| e.visit(f)),
            Expr::Num(_)
            | Expr::Dec(_)
            | Expr::Sym(_)
            | Expr::Word(_)
            | Expr::Pi
            | Expr::Infinity
            | Expr::I
            | Expr::Text(_) => {}
        }
    }

    /// Rename symbols (used by non-strict comparison).
    pub fn rename(&self, map: &dyn Fn(&str) -> Option<String>) -> Expr {
        let rb = |e: &Expr| Box::new(e.rename(map));
        let rv = |v: &[Expr]| v.iter().map(|e| e.rename(map)).collect::<Vec<_>>();
        match self {
            Expr::Sym(s) => Expr::Sym(map(s).unwrap_or_else(|| s.clone())),
            Expr::Add(v) => Expr::Add(rv(v)),
            Expr::Mul(v) => Expr::Mul(rv(v)),
            Expr::Tuple(v) => Expr::Tuple(rv(v)),
            Expr::Set(v) => Expr::Set(rv(v)),
            Expr::Union(v) => Expr::Union(rv(v)),
            Expr::Apply(n, v) => Expr::Apply(n.clone(), rv(v)),
            Expr::Rel { terms, ops } => Expr::Rel { terms: rv(terms), ops: ops.clone() },
            Expr::Neg(a) => Expr::Neg(rb(a)),
            Expr::Call(fun, a) => Expr::Call(*fun, rb(a)),
            Expr::Percent(a) => Expr::Percent(rb(a)),
            Expr::Div(a, b) => Expr::Div(rb(a), rb(b)),
            Expr::Pow(a, b) => Expr::Pow(rb(a), rb(b)),
            Expr::LogBase(a, b) => Expr::LogBase(rb(a), rb(b)),
            Expr::Root(a, b) => Expr::Root(rb(a), rb(b)),
            Expr::Binom(a, b) => Expr::Binom(rb(a), rb(b)),
            Expr::PlusMinus(a, b) => Expr::PlusMinus(rb(a), rb(b)),
            Expr::In(a, b) => Expr::In(rb(a), rb(b)),
            Expr::Interval { lo, hi, lo_open, hi_open } => {
                Expr::Interval { lo: rb(lo), hi: rb(hi), lo_open: *lo_open, hi_open: *hi_open }
            }
            Expr::Matrix(rows) => Expr::Matrix(rows.iter().map(|row| rv(row)).collect()),
            leaf => leaf.clone(),
        }
    }
}

fn bits(r: &BigRational) -> u64 {
    r.numer().bits().max(r.denom().bits())
}

fn checked(r: BigRational) -> Option<BigRational> {
    if bits(&r) > MAX_BITS { None } else { Some(r) }
}

/// Exact integer power with a bound on the result size.
pub fn pow_rational(base: &BigRational, exp: i64) -> Option<BigRational> {
    if base.is_zero() {
        return if exp > 0 {
            Some(BigRational::zero())
        } else if exp == 0 {
            Some(BigRational::one())
        } else {
            None
        };
    }
    let e = exp.unsigned_abs();
    if base.denom().is_one() && base.numer().abs().is_one() {
        let negative = base.is_negative() && e % 2 == 1;
        return Some(BigRational::from_integer(if negative { -BigInt::one() } else { BigInt::one() }));
    }
    let b = bits(base).max(1);
    if b.saturating_mul(e) > MAX_BITS {
        return None;
    }
    let e32 = u32::try_from(e).ok()?;
    let n = num_traits::pow::Pow::pow(base.numer(), e32);
    let d = num_traits::pow::Pow::pow(base.denom(), e32);
    let r = BigRational::new(n, d);
    Some(if exp < 0 { r.recip() } else { r })
}

fn exact_root(r: &BigRational, n: u32) -> Option<BigRational> {
    if r.is_negative() && n.is_multiple_of(2) {
        return None;
    }
    let neg = r.is_negative();
    let num = r.numer().abs().nth_root(n);
    let den = r.denom().nth_root(n);
    let cand = BigRational::new(num, den);
    let back = pow_rational(&cand, i64::from(n))?;
    if back == r.abs() { Some(if neg { -cand } else { cand }) } else { None }
}

/// Exact rational value of a constant expression, when one exists and stays small.
pub fn eval_exact(e: &Expr, budget: &Budget) -> Result<Option<BigRational>, Exhausted> {
    budget.tick()?;
    Ok(match e {
        Expr::Num(r) | Expr::Dec(r) => Some(r.clone()),
        Expr::Add(v) => {
            let mut acc = BigRational::zero();
            for t in v {
                match eval_exact(t, budget)? {
                    Some(x) => match checked(acc + x) {
                        Some(s) => acc = s,
                        None => return Ok(None),
                    },
                    None => return Ok(None),
                }
            }
            Some(acc)
        }
        Expr::Mul(v) => {
            let mut acc = BigRational::one();
            for t in v {
                match eval_exact(t, budget)? {
                    Some(x) => match checked(acc * x) {
                        Some(s) => acc = s,
                        None => return Ok(None),
                    },
                    None => return Ok(None),
                }
            }
            Some(acc)
        }
        Expr::Neg(a) => eval_exact(a, budget)?.map(|x| -x),
        Expr::Div(a, b) => match (eval_exact(a, budget)?, eval_exact(b, budget)?) {
            (Some(x), Some(y)) if !y.is_zero() => checked(x / y),
            _ => None,
        },
        Expr::Percent(a) => eval_exact(a, budget)?.map(|x| x / BigRational::from_integer(100.into())),
        Expr::Pow(a, b) => {
            let Some(base) = eval_exact(a, budget)? else { return Ok(None) };
            let Some(exp) = eval_exact(b, budget)? else { return Ok(None) };
            if exp.is_integer() {
                let Some(k) = exp.numer().to_i64() else { return Ok(None) };
                pow_rational(&base, k)
            } else {
                // Rational exponent p/q: exact only when the q-th root is exact.
                let Some(q) = exp.denom().to_u32() else { return Ok(None) };
                let Some(p) = exp.numer().to_i64() else { return Ok(None) };
                if q > 64 {
                    return Ok(None);
                }
                exact_root(&base, q).and_then(|r| pow_rational(&r, p))
            }
        }
        Expr::Call(Func::Sqrt, a) => eval_exact(a, budget)?.and_then(|x| exact_root(&x, 2)),
        Expr::Root(n, a) => {
            let Some(n) = eval_exact(n, budget)? else { return Ok(None) };
            let Some(x) = eval_exact(a, budget)? else { return Ok(None) };
            if !n.is_integer() {
                return Ok(None);
            }
            match n.numer().to_u32() {
                Some(k) if (1..=64).contains(&k) => exact_root(&x, k),
                _ => None,
            }
        }
        Expr::Call(Func::Abs, a) => eval_exact(a, budget)?.map(|x| x.abs()),
        Expr::Call(Func::Factorial, a) => {
            let Some(x) = eval_exact(a, budget)? else { return Ok(None) };
            if !x.is_integer() || x.is_negative() {
                return Ok(None);
            }
            match x.numer().to_u64() {
                Some(n) if n <= 300 => {
                    let mut acc = BigInt::one();
                    for k in 2..=n {
                        acc *= k;
                    }
                    Some(BigRational::from_integer(acc))
                }
                _ => None,
            }
        }
        Expr::Binom(n, k) => {
            let (Some(n), Some(k)) = (eval_exact(n, budget)?, eval_exact(k, budget)?) else {
                return Ok(None);
            };
            match (n.numer().to_u64(), k.numer().to_u64()) {
                (Some(n), Some(k)) if n <= 10_000 && k <= n && (n - k).min(k) <= 300 => {
                    let k = k.min(n - k);
                    let mut acc = BigInt::one();
                    for j in 0..k {
                        acc = acc * (n - j) / (j + 1);
                    }
                    Some(BigRational::from_integer(acc))
                }
                _ => None,
            }
        }
        _ => None,
    })
}

/// A complex number in f64, for numeric evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct C64 {
    pub re: f64,
    pub im: f64,
}

impl C64 {
    pub const fn new(re: f64, im: f64) -> Self {
        C64 { re, im }
    }
    pub const fn real(re: f64) -> Self {
        C64 { re, im: 0.0 }
    }
    pub fn is_finite(self) -> bool {
        self.re.is_finite() && self.im.is_finite()
    }
    pub fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
    fn add(self, o: C64) -> C64 {
        C64::new(self.re + o.re, self.im + o.im)
    }
    fn mul(self, o: C64) -> C64 {
        C64::new(self.re * o.re - self.im * o.im, self.re * o.im + self.im * o.re)
    }
    fn div(self, o: C64) -> C64 {
        let d = o.re * o.re + o.im * o.im;
        C64::new((self.re * o.re + self.im * o.im) / d, (self.im * o.re - self.re * o.im) / d)
    }
    fn neg(self) -> C64 {
        C64::new(-self.re, -self.im)
    }
    fn exp(self) -> C64 {
        let m = self.re.exp();
        C64::new(m * self.im.cos(), m * self.im.sin())
    }
    fn ln(self) -> C64 {
        C64::new(self.abs().ln(), self.im.atan2(self.re))
    }
    fn is_real(self) -> bool {
        self.im == 0.0
    }
    fn powc(self, e: C64) -> C64 {
        if self.is_real() && e.is_real() {
            if self.re >= 0.0 || e.re.fract() == 0.0 {
                return C64::real(self.re.powf(e.re));
            }
            // Odd roots of negative reals stay real, as a student means them: (-8)^(1/3) = -2.
            let inv = 1.0 / e.re;
            if (inv - inv.round()).abs() < 1e-12 && (inv.round() as i64) % 2 != 0 {
                return C64::real(-(-self.re).powf(e.re));
            }
        }
        if self.re == 0.0 && self.im == 0.0 {
            return C64::real(0.0);
        }
        self.ln().mul(e).exp()
    }
    fn sqrt(self) -> C64 {
        if self.is_real() && self.re >= 0.0 {
            return C64::real(self.re.sqrt());
        }
        self.powc(C64::real(0.5))
    }
    fn sin(self) -> C64 {
        C64::new(self.re.sin() * self.im.cosh(), self.re.cos() * self.im.sinh())
    }
    fn cos(self) -> C64 {
        C64::new(self.re.cos() * self.im.cosh(), -(self.re.sin() * self.im.sinh()))
    }
}

/// Values bound to symbols for numeric evaluation.
pub trait Env {
    fn get(&self, name: &str) -> Option<C64>;
}

/// Numeric value, `None` when undefined (division by zero, unknown construct).
pub fn eval_num(e: &Expr, env: &dyn Env, budget: &Budget) -> Result<Option<C64>, Exhausted> {
    budget.tick()?;
    let one = |a: &Expr| eval_num(a, env, budget);
    let v = match e {
        Expr::Num(r) | Expr::Dec(r) => Some(C64::real(rat_to_f64(r))),
        Expr::Sym(s) => match s.as_str() {
            "e" => Some(C64::real(std::f64::consts::E)),
            _ => env.get(s),
        },
        Expr::Word(w) => {
            let mut acc = C64::real(1.0);
            for c in w.chars() {
                let Some(v) = env.get(&c.to_string()) else { return Ok(None) };
                acc = acc.mul(v);
            }
            Some(acc)
        }
        Expr::Apply(name, args) => env.get(&format!("{name}({})", args.len())).map(|v| {
            // Mix the arguments in so f(x) and f(y) differ.
            let mut acc = v;
            for a in args {
                if let Ok(Some(x)) = eval_num(a, env, budget) {
                    acc = acc.add(x.mul(C64::real(0.7318)));
                }
            }
            acc
        }),
        Expr::Pi => Some(C64::real(std::f64::consts::PI)),
        Expr::I => Some(C64::new(0.0, 1.0)),
        Expr::Infinity => Some(C64::real(f64::INFINITY)),
        Expr::Add(v) => {
            let mut acc = C64::real(0.0);
            for t in v {
                let Some(x) = one(t)? else { return Ok(None) };
                acc = acc.add(x);
            }
            Some(acc)
        }
        Expr::Mul(v) => {
            let mut acc = C64::real(1.0);
            for t in v {
                let Some(x) = one(t)? else { return Ok(None) };
                acc = acc.mul(x);
            }
            Some(acc)
        }
        Expr::Neg(a) => one(a)?.map(C64::neg),
        Expr::Div(a, b) => match (one(a)?, one(b)?) {
            (Some(x), Some(y)) if y.abs() != 0.0 => Some(x.div(y)),
            _ => None,
        },
        Expr::Percent(a) => one(a)?.map(|x| x.div(C64::real(100.0))),
        Expr::Pow(a, b) => match (one(a)?, one(b)?) {
            (Some(x), Some(y)) => Some(x.powc(y)),
            _ => None,
        },
        Expr::Root(n, a) => match (one(n)?, one(a)?) {
            (Some(n), Some(x)) if n.abs() != 0.0 => Some(x.powc(C64::real(1.0).div(n))),
            _ => None,
        },
        Expr::LogBase(b, a) => match (one(b)?, one(a)?) {
            (Some(b), Some(x)) => Some(x.ln().div(b.ln())),
            _ => None,
        },
        Expr::Binom(n, k) => match (one(n)?, one(k)?) {
            (Some(n), Some(k)) => {
                let g = |x: f64| libm_gamma(x + 1.0);
                Some(C64::real(g(n.re) / (g(k.re) * g(n.re - k.re))))
            }
            _ => None,
        },
        Expr::Call(f, a) => {
            let Some(x) = one(a)? else { return Ok(None) };
            Some(match f {
                Func::Sin => x.sin(),
                Func::Cos => x.cos(),
                Func::Tan => x.sin().div(x.cos()),
                Func::Sec => C64::real(1.0).div(x.cos()),
                Func::Csc => C64::real(1.0).div(x.sin()),
                Func::Cot => x.cos().div(x.sin()),
                Func::Asin if x.is_real() && x.re.abs() <= 1.0 => C64::real(x.re.asin()),
                Func::Acos if x.is_real() && x.re.abs() <= 1.0 => C64::real(x.re.acos()),
                Func::Atan if x.is_real() => C64::real(x.re.atan()),
                Func::Sinh if x.is_real() => C64::real(x.re.sinh()),
                Func::Cosh if x.is_real() => C64::real(x.re.cosh()),
                Func::Tanh if x.is_real() => C64::real(x.re.tanh()),
                Func::Exp => x.exp(),
                Func::Ln | Func::Log => x.ln(),
                Func::Sqrt => x.sqrt(),
                Func::Abs => C64::real(x.abs()),
                Func::Floor if x.is_real() => C64::real(x.re.floor()),
                Func::Ceil if x.is_real() => C64::real(x.re.ceil()),
                Func::Factorial if x.is_real() => C64::real(libm_gamma(x.re + 1.0)),
                _ => return Ok(None),
            })
        }
        _ => None,
    };
    Ok(v.filter(|c| !c.re.is_nan() && !c.im.is_nan()))
}

/// Convert a rational to f64 without overflowing through huge intermediates.
pub fn rat_to_f64(r: &BigRational) -> f64 {
    if let (Some(n), Some(d)) = (r.numer().to_f64(), r.denom().to_f64())
        && n.is_finite()
        && d.is_finite()
        && d != 0.0
    {
        return n / d;
    }
    // Scale both down to ~1000 bits of shift.
    let nb = r.numer().bits() as i64;
    let db = r.denom().bits() as i64;
    let shift_n = (nb - 900).max(0);
    let shift_d = (db - 900).max(0);
    let n = (r.numer() >> (shift_n as usize)).to_f64().unwrap_or(f64::NAN);
    let d = (r.denom() >> (shift_d as usize)).to_f64().unwrap_or(f64::NAN);
    let e = shift_n - shift_d;
    (n / d) * 2f64.powi(e.clamp(-2000, 2000) as i32)
}

/// Gamma function (Lanczos approximation), enough for factorials of non-integers.
fn libm_gamma(x: f64) -> f64 {
    if x.fract() == 0.0 && x > 0.0 && x < 171.0 {
        let mut acc = 1.0;
        let mut k = 2.0;
        while k < x {
            acc *= k;
            k += 1.0;
        }
        return acc;
    }
    if x < 0.5 {
        return std::f64::consts::PI / ((std::f64::consts::PI * x).sin() * libm_gamma(1.0 - x));
    }
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    (2.0 * std::f64::consts::PI).sqrt() * t.powf(x + 0.5) * (-t).exp() * a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: i64, d: i64) -> BigRational {
        BigRational::new(n.into(), d.into())
    }

    #[test]
    fn huge_powers_are_refused() {
        assert!(pow_rational(&r(10, 1), 1_000_000).is_none());
        assert_eq!(pow_rational(&r(2, 3), 3), Some(r(8, 27)));
        assert_eq!(pow_rational(&r(-1, 1), i64::MAX), Some(r(-1, 1)));
        assert_eq!(pow_rational(&r(0, 1), -1), None);
    }

    #[test]
    fn roots() {
        assert_eq!(exact_root(&r(27, 8), 3), Some(r(3, 2)));
        assert_eq!(exact_root(&r(2, 1), 2), None);
        assert_eq!(exact_root(&r(-8, 1), 3), Some(r(-2, 1)));
    }

    #[test]
    fn gamma_matches_factorial() {
        assert!((libm_gamma(6.0) - 120.0).abs() < 1e-9);
        assert!((libm_gamma(0.5) - std::f64::consts::PI.sqrt()).abs() < 1e-9);
    }
}
