//! ggml tensor types and their dequantisation to f32.
//!
//! Block layouts follow ggml's `ggml-common.h` and the reference (scalar) dequantisers in
//! `ggml-quants.c`; sizes agree with gguf-py's `GGML_QUANT_SIZES`. All multi-byte fields are little-endian;
//! `d`/`m` scales are f16 unless noted.

use std::fmt;

use half::{bf16, f16};

use super::GgufError;

/// Super-block size of the k-quants.
const QK_K: usize = 256;

/// A ggml tensor type, with the id it has in GGUF files.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
}

impl GgmlType {
    /// Every type this module knows the layout of.
    pub const ALL: [GgmlType; 32] = {
        use GgmlType::*;
        [
            F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K,
            IQ2_XXS, IQ2_XS, IQ3_XXS, IQ1_S, IQ4_NL, IQ3_S, IQ2_S, IQ4_XS, I8, I16, I32, I64, F64,
            IQ1_M, BF16, TQ1_0, TQ2_0, MXFP4,
        ]
    };

    pub fn from_u32(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| *t as u32 == id)
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | F16 | BF16 | I8 | I16 | I32 | I64 | F64 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | IQ4_NL | MXFP4 => 32,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K | IQ2_XXS | IQ2_XS | IQ3_XXS | IQ1_S
            | IQ3_S | IQ2_S | IQ4_XS | IQ1_M | TQ1_0 | TQ2_0 => QK_K,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | I32 => 4,
            F16 | BF16 | I16 => 2,
            I8 => 1,
            I64 | F64 => 8,
            Q4_0 => 2 + 16,
            Q4_1 => 2 + 2 + 16,
            Q5_0 => 2 + 4 + 16,
            Q5_1 => 2 + 2 + 4 + 16,
            Q8_0 => 2 + 32,
            // ggml's block_q8_1 is {f16 d, f16 s, i8 qs[32]}.
            Q8_1 => 2 + 2 + 32,
            Q2_K => 2 + 2 + QK_K / 16 + QK_K / 4,
            Q3_K => 2 + QK_K / 4 + QK_K / 8 + 12,
            Q4_K => 2 + 2 + QK_K / 2 + 12,
            Q5_K => 2 + 2 + QK_K / 2 + QK_K / 8 + 12,
            Q6_K => 2 + QK_K / 2 + QK_K / 4 + QK_K / 16,
            Q8_K => 4 + QK_K + QK_K / 8,
            IQ2_XXS => 2 + QK_K / 4,
            IQ2_XS => 2 + QK_K / 4 + QK_K / 32,
            IQ3_XXS => 2 + QK_K / 4 + QK_K / 8,
            IQ1_S => 2 + QK_K / 8 + QK_K / 16,
            IQ4_NL => 2 + 16,
            IQ3_S => 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4,
            IQ2_S => 2 + QK_K / 4 + QK_K / 16,
            IQ4_XS => 2 + 2 + QK_K / 2 + QK_K / 64,
            IQ1_M => QK_K / 8 + QK_K / 16 + QK_K / 32,
            TQ1_0 => 2 + 4 * 13,
            TQ2_0 => 2 + 64,
            MXFP4 => 1 + 16,
        }
    }

    /// Whether [`dequantize`] handles this type.
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(
            self,
            F32 | F16 | BF16 | F64 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | Q4_K | Q6_K
        )
    }

    pub(crate) fn supported_list() -> String {
        let names: Vec<String> = Self::ALL
            .into_iter()
            .filter(|t| t.can_dequantize())
            .map(|t| t.to_string())
            .collect();
        names.join(", ")
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Dequantises `n_elements` values of type `ty` from `bytes` (exactly `n_elements / block_size` blocks).
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>, GgufError> {
    let mut out = vec![0f32; n_elements];
    dequantize_into(ty, bytes, &mut out)?;
    Ok(out)
}

/// Dequantises into `out`, whose length is the element count.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), GgufError> {
    let (block, size) = (ty.block_size(), ty.type_size());
    if !out.len().is_multiple_of(block) {
        return Err(GgufError::Malformed(format!(
            "{} {ty} values are not a whole number of {block}-element blocks",
            out.len()
        )));
    }
    let expected = out.len() / block * size;
    if bytes.len() != expected {
        return Err(GgufError::Malformed(format!(
            "{} {ty} values need {expected} bytes, got {}",
            out.len(),
            bytes.len()
        )));
    }
    let blocks = bytes.chunks_exact(size).zip(out.chunks_exact_mut(block));
    match ty {
        GgmlType::F32 => {
            blocks.for_each(|(b, y)| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
        GgmlType::F16 => blocks.for_each(|(b, y)| y[0] = f16_at(b, 0)),
        GgmlType::BF16 => {
            blocks.for_each(|(b, y)| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32())
        }
        GgmlType::F64 => blocks.for_each(|(b, y)| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            y[0] = f64::from_le_bytes(a) as f32;
        }),
        GgmlType::Q4_0 => blocks.for_each(|(b, y)| q4_0(b, y)),
        GgmlType::Q4_1 => blocks.for_each(|(b, y)| q4_1(b, y)),
        GgmlType::Q5_0 => blocks.for_each(|(b, y)| q5_0(b, y)),
        GgmlType::Q5_1 => blocks.for_each(|(b, y)| q5_1(b, y)),
        GgmlType::Q8_0 => blocks.for_each(|(b, y)| q8_0(b, y)),
        GgmlType::Q8_1 => blocks.for_each(|(b, y)| q8_1(b, y)),
        GgmlType::Q4_K => blocks.for_each(|(b, y)| q4_k(b, y)),
        GgmlType::Q6_K => blocks.for_each(|(b, y)| q6_k(b, y)),
        other => {
            return Err(GgufError::Malformed(format!(
                "ggml type {other} cannot be dequantised (supported: {})",
                GgmlType::supported_list()
            )));
        }
    }
    Ok(())
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q4_0 `{f16 d; u8 qs[16]}`: element j is the low nibble of qs[j], element j+16 the high nibble;
/// x = (q - 8) * d.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let (lo, hi) = y.split_at_mut(16);
    for (j, &q) in b[2..18].iter().enumerate() {
        lo[j] = (i32::from(q & 0x0F) - 8) as f32 * d;
        hi[j] = (i32::from(q >> 4) - 8) as f32 * d;
    }
}

/// Q4_1 `{f16 d; f16 m; u8 qs[16]}`: nibbles as Q4_0; x = q * d + m.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let (lo, hi) = y.split_at_mut(16);
    for (j, &q) in b[4..20].iter().enumerate() {
        lo[j] = f32::from(q & 0x0F) * d + m;
        hi[j] = f32::from(q >> 4) * d + m;
    }
}

/// The fifth bits of a Q5 block: bit j of the u32 `qh` is the high bit of element j.
fn q5_high_bits(qh: &[u8], j: usize) -> (u8, u8) {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let h0 = ((qh >> j) & 1) as u8;
    let h1 = ((qh >> (j + 16)) & 1) as u8;
    (h0 << 4, h1 << 4)
}

/// Q5_0 `{f16 d; u8 qh[4]; u8 qs[16]}`: 5-bit q = nibble | high bit << 4; x = (q - 16) * d.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = &b[2..6];
    let (lo, hi) = y.split_at_mut(16);
    for (j, &q) in b[6..22].iter().enumerate() {
        let (h0, h1) = q5_high_bits(qh, j);
        lo[j] = (i32::from((q & 0x0F) | h0) - 16) as f32 * d;
        hi[j] = (i32::from((q >> 4) | h1) - 16) as f32 * d;
    }
}

/// Q5_1 `{f16 d; f16 m; u8 qh[4]; u8 qs[16]}`: x = q * d + m.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = &b[4..8];
    let (lo, hi) = y.split_at_mut(16);
    for (j, &q) in b[8..24].iter().enumerate() {
        let (h0, h1) = q5_high_bits(qh, j);
        lo[j] = f32::from((q & 0x0F) | h0) * d + m;
        hi[j] = f32::from((q >> 4) | h1) * d + m;
    }
}

/// Q8_0 `{f16 d; i8 qs[32]}`: x = q * d.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = f32::from(q as i8) * d;
    }
}

/// Q8_1 `{f16 d; f16 s; i8 qs[32]}` (`s` caches d * sum(qs)): x = q * d.
fn q8_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[4..36]) {
        *y = f32::from(q as i8) * d;
    }
}

/// Scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block, packed as 6-bit values in 12 bytes.
fn k_scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// Q4_K `{f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}`: 8 sub-blocks of 32; each 32 bytes of qs hold two
/// sub-blocks (low nibbles first); x = d * sc * q - dmin * m.
fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (chunk, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = k_scale_min(scales, 2 * chunk);
        let (sc2, m2) = k_scale_min(scales, 2 * chunk + 1);
        let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let (lo, hi) = y.split_at_mut(32);
        for l in 0..32 {
            lo[l] = d1 * f32::from(q[l] & 0x0F) - m1;
            hi[l] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

/// Q6_K `{u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}`: two halves of 128; 6-bit q = 4 low bits from ql,
/// 2 high bits from qh; x = d * scale * (q - 32), one i8 scale per 16 elements.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            let s = |k: usize| f32::from(sc[is + k] as i8);
            y[l] = d * s(0) * q1 as f32;
            y[l + 32] = d * s(2) * q2 as f32;
            y[l + 64] = d * s(4) * q3 as f32;
            y[l + 96] = d * s(6) * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn sizes_match_ggml() {
        assert_eq!(GgmlType::Q4_K.type_size(), 144);
        assert_eq!(GgmlType::Q6_K.type_size(), 210);
        assert_eq!(GgmlType::Q2_K.type_size(), 84);
        assert_eq!(GgmlType::IQ4_XS.type_size(), 136);
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_u32(t as u32), Some(t));
        }
        assert_eq!(GgmlType::from_u32(4), None);
    }

    #[test]
    fn q4_0_block() {
        let mut b = Vec::new();
        b.extend(h(0.5));
        // qs[j] = low j % 16, high 15 - j % 16
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5);
        }
    }

    #[test]
    fn q5_0_block_uses_high_bits() {
        let mut b = Vec::new();
        b.extend(h(1.0));
        // high bit set for elements 1 and 17
        b.extend(((1u32 << 1) | (1u32 << 17)).to_le_bytes());
        b.extend([0x21u8; 16]); // low nibble 1, high nibble 2
        let y = dequantize(GgmlType::Q5_0, &b, 32).unwrap();
        assert_eq!(y[0], 1.0 - 16.0);
        assert_eq!(y[1], (1.0 + 16.0) - 16.0);
        assert_eq!(y[16], 2.0 - 16.0);
        assert_eq!(y[17], (2.0 + 16.0) - 16.0);
    }

    #[test]
    fn q6_k_block() {
        // all q = 32 + 1 (ql low nibble 1, no high bits) except the first element; scales 1..16
        let mut b = vec![0x11u8; 128];
        b.extend([0u8; 64]);
        b.extend((1..=16).map(|s: i8| s as u8));
        b.extend(h(0.25));
        b[0] = 0x10; // element 0: q = 0 -> -32 ; element 64: q = 1
        let y = dequantize(GgmlType::Q6_K, &b, 256).unwrap();
        // element 0: scale sc[0] = 1 -> 0.25 * 1 * (0 - 32)
        assert_eq!(y[0], 0.25 * -32.0);
        // element 1: low nibble 1 -> q1 = 1 - 32
        assert_eq!(y[1], 0.25 * (1.0 - 32.0));
        // element 16 (is=1) uses sc[1] = 2; element 32+16 uses sc[3] = 4; second half uses sc[8..]
        assert_eq!(y[16], 0.25 * 2.0 * -31.0);
        assert_eq!(y[48], 0.25 * 4.0 * -31.0);
        assert_eq!(y[128], 0.25 * 9.0 * -31.0);
        assert_eq!(y[255], 0.25 * 16.0 * -31.0);
    }

    #[test]
    fn q4_k_block() {
        let mut b = Vec::new();
        b.extend(h(2.0));
        b.extend(h(0.5));
        // sub-blocks 0..4: scale j+1, min j; sub-blocks 4..8: scale 8j+1, min 33 (6-bit values whose top
        // two bits live in the first 8 bytes), packed as ggml does
        let mut scales = [0u8; 12];
        for j in 0..4 {
            scales[j] = (j as u8) + 1;
            scales[j + 4] = j as u8;
        }
        for j in 4..8 {
            let (sc, m) = (8 * j as u8 + 1, 33u8);
            scales[j + 4] = (sc & 0x0F) | ((m & 0x0F) << 4);
            scales[j - 4] |= (sc >> 4) << 6;
            scales[j] |= (m >> 4) << 6;
        }
        b.extend(scales);
        b.extend([0x31u8; 128]); // low nibble 1, high nibble 3
        let y = dequantize(GgmlType::Q4_K, &b, 256).unwrap();
        for sub in 0..8 {
            let (sc, m) = if sub < 4 {
                (sub as f32 + 1.0, sub as f32)
            } else {
                (8.0 * sub as f32 + 1.0, 33.0)
            };
            let q = if sub % 2 == 0 { 1.0 } else { 3.0 };
            for l in 0..32 {
                assert_eq!(y[32 * sub + l], 2.0 * sc * q - 0.5 * m, "sub-block {sub}");
            }
        }
    }

    #[test]
    fn q8_1_block_ignores_the_cached_sum() {
        let mut b = Vec::new();
        b.extend(h(0.5));
        b.extend(h(123.0));
        b.extend((0..32).map(|q: i8| (q - 16) as u8));
        let y = dequantize(GgmlType::Q8_1, &b, 32).unwrap();
        for (j, y) in y.iter().enumerate() {
            assert_eq!(*y, (j as f32 - 16.0) * 0.5);
        }
    }

    #[test]
    fn wrong_length_is_an_error() {
        assert!(dequantize(GgmlType::Q8_0, &[0; 33], 32).is_err());
        assert!(dequantize(GgmlType::Q8_0, &[0; 34], 31).is_err());
        assert!(dequantize(GgmlType::IQ2_XXS, &[0; 66], 256).is_err());
    }
}
