//! The key/value cache for incremental decoding of a batch of sequences of different lengths.
//!
//! Layout: per layer, keys and values of shape `(rows, kv_heads, capacity, head_dim)`, before the
//! grouped-query repeat, preallocated and written in place (`slice_assign` on a uniquely owned
//! tensor does not copy). Each row is left-aligned: its real tokens sit in columns `0..length`, and the
//! next step writes at column `length`, so rows of different lengths (a prompt that joined the batch
//! late, a longer prompt) share one tensor without padding columns between their tokens. A step over
//! right-padded input writes its padding columns too; they lie past the row's length, are masked out
//! of attention and are overwritten by the row's next tokens.
//!
//! The capacity grows by doubling when a step would run past it (one copy, amortised), and rows can be
//! selected (fan a prompt out to a group, drop finished rows) or appended from another cache (requests
//! joining a running batch).

use std::any::TypeId;

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};

/// Columns allocated at the first write beyond what the step needs, so the first decoding steps do not
/// regrow the cache.
const MIN_SPARE_COLUMNS: usize = 64;

/// The step being run: what each row had before it and how many columns it adds.
#[derive(Debug, Clone, Default)]
struct Step {
    /// Each row's length before the step (where its new columns start).
    start: Vec<usize>,
    /// Columns the step adds to every row (the padded width of its input).
    columns: usize,
}

/// Cached keys and values of every layer, plus the per-row bookkeeping.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    /// Each row's number of real tokens so far: the RoPE position of its next token and the column
    /// its next token is written to.
    lengths: Vec<usize>,
    step: Step,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model with `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![None; num_layers], lengths: vec![], step: Step::default() }
    }

    /// Layers the cache was made for.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Rows in the cache (0 before the prefill).
    pub fn batch_size(&self) -> usize {
        self.lengths.len()
    }

    /// Columns attention looks at: the longest row.
    pub fn columns(&self) -> usize {
        self.lengths.iter().copied().max().unwrap_or(0)
    }

    /// Columns allocated per row.
    pub fn capacity(&self) -> usize {
        self.layers.iter().flatten().next().map_or(0, |(k, _)| k.dims()[2])
    }

    /// Each row's number of real tokens so far (the position of its next token).
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// Bytes held by the cached keys and values.
    pub fn bytes(&self) -> usize {
        self.layers.iter().flatten().map(|(k, v)| (k.shape().num_elements() + v.shape().num_elements()) * 4).sum()
    }

    /// Records that a step of `new_columns` columns is added for rows with `lengths[row]` real tokens
    /// in it (right-padded), and returns the positions of every new column, row-major.
    pub(crate) fn begin_step(&mut self, lengths: &[usize], new_columns: usize) -> Vec<usize> {
        if self.lengths.is_empty() {
            self.lengths = vec![0; lengths.len()];
        }
        assert_eq!(lengths.len(), self.lengths.len(), "a step must cover every row of the cache");
        let mut positions = Vec::with_capacity(lengths.len() * new_columns);
        for (&start, &len) in self.lengths.iter().zip(lengths) {
            // Padding columns repeat the last real position; their outputs are never used.
            positions.extend((0..new_columns).map(|i| start + i.min(len.saturating_sub(1))));
        }
        self.step = Step { start: self.lengths.clone(), columns: new_columns };
        for (l, &len) in self.lengths.iter_mut().zip(lengths) {
            *l += len;
        }
        positions
    }

    /// Key columns the step just begun attends over.
    fn step_keys(&self) -> usize {
        self.step.start.iter().map(|s| s + self.step.columns).max().unwrap_or(0)
    }

    /// The attention mask for the step just begun, `true` where a query may not look (past its own
    /// position, which also hides padding and stale columns), laid out as the attention reads it:
    /// `(batch, kv_heads, groups * new_columns, keys)`, the `groups` query heads of one key/value head
    /// stacked as rows (row `g * new_columns + q`). Built on the host in that layout once per step, so
    /// no layer has to broadcast it.
    pub(crate) fn step_mask(&self, new_columns: usize, kv_heads: usize, groups: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
        debug_assert_eq!(new_columns, self.step.columns);
        let keys = self.step_keys();
        let mut mask = Vec::with_capacity(self.batch_size() * kv_heads * groups * new_columns * keys);
        for &start in &self.step.start {
            for _ in 0..kv_heads * groups {
                for q in 0..new_columns {
                    mask.extend((0..keys).map(|k| k > start + q));
                }
            }
        }
        Tensor::from_data(TensorData::new(mask, [self.batch_size(), kv_heads, groups * new_columns, keys]), device)
    }

    /// Writes a layer's new keys and values `(batch, kv_heads, new_columns, head_dim)` in place at each
    /// row's length and returns views of every row's keys and values over the step's key columns.
    pub(crate) fn append(&mut self, layer: usize, k: Tensor<B, 4>, v: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [rows, heads, new, dim] = k.dims();
        let keys = self.step_keys();
        let (mut ck, mut cv) = match self.layers[layer].take() {
            Some(kv) => kv,
            None => {
                let cap = keys + MIN_SPARE_COLUMNS;
                let zeros = || Tensor::zeros([rows, heads, cap, dim], &k.device());
                (zeros(), zeros())
            }
        };
        let cap = ck.dims()[2];
        if keys > cap {
            let grow = keys.max(2 * cap) - cap;
            let pad = || Tensor::zeros([rows, heads, grow, dim], &k.device());
            ck = Tensor::cat(vec![ck, pad()], 2);
            cv = Tensor::cat(vec![cv, pad()], 2);
        }
        if writes_in_host_memory::<B>() {
            ck = write_columns_in_place(ck, k, &self.step.start);
            cv = write_columns_in_place(cv, v, &self.step.start);
        } else {
            // One write per run of consecutive rows that start at the same column (a group of samples
            // of one prompt, or the whole batch at a prefill).
            let mut r0 = 0;
            while r0 < rows {
                let start = self.step.start[r0];
                let mut r1 = r0 + 1;
                while r1 < rows && self.step.start[r1] == start {
                    r1 += 1;
                }
                let ranges = [r0..r1, 0..heads, start..start + new, 0..dim];
                let (kr, vr) = if r0 == 0 && r1 == rows {
                    (k.clone(), v.clone())
                } else {
                    (k.clone().narrow(0, r0, r1 - r0), v.clone().narrow(0, r0, r1 - r0))
                };
                ck = ck.slice_assign(ranges.clone(), kr);
                cv = cv.slice_assign(ranges, vr);
                r0 = r1;
            }
        }
        let out = (ck.clone().narrow(2, 0, keys), cv.clone().narrow(2, 0, keys));
        self.layers[layer] = Some((ck, cv));
        out
    }

    /// Keeps the given rows, in the given order; a row may repeat (to fan a prompt out to a group of
    /// samples after one prefill) or be dropped (a finished sequence). The capacity shrinks to what the
    /// kept rows need plus spare room.
    pub fn select_rows(&mut self, rows: &[usize]) {
        let lengths: Vec<usize> = rows.iter().map(|&r| self.lengths[r]).collect();
        let keep = lengths.iter().copied().max().unwrap_or(0) + MIN_SPARE_COLUMNS;
        if let Some(device) = self.layers.iter().flatten().next().map(|(k, _)| k.device()) {
            let ids: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
            let index = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [rows.len()]), &device);
            for (k, v) in self.layers.iter_mut().flatten() {
                let cols = keep.min(k.dims()[2]);
                *k = k.clone().narrow(2, 0, cols).select(0, index.clone());
                *v = v.clone().narrow(2, 0, cols).select(0, index.clone());
            }
        }
        self.lengths = lengths;
    }

    /// Appends the rows of `other` (a cache of the same model) after this cache's rows: requests that
    /// were prefilled on their own join a running batch.
    pub fn append_rows(&mut self, other: KvCache<B>) {
        assert_eq!(self.num_layers(), other.num_layers(), "caches of different models");
        if self.batch_size() == 0 {
            *self = other;
            return;
        }
        let cap = self.capacity().max(other.capacity());
        let widen = |t: Tensor<B, 4>| {
            let [rows, heads, cols, dim] = t.dims();
            if cols == cap {
                t
            } else {
                let pad = Tensor::zeros([rows, heads, cap - cols, dim], &t.device());
                Tensor::cat(vec![t, pad], 2)
            }
        };
        for (mine, theirs) in self.layers.iter_mut().zip(other.layers) {
            let (Some((k, v)), Some((ok, ov))) = (mine.take(), theirs) else {
                panic!("append_rows needs two prefilled caches");
            };
            *mine = Some((Tensor::cat(vec![widen(k), widen(ok)], 0), Tensor::cat(vec![widen(v), widen(ov)], 0)));
        }
        self.lengths.extend(other.lengths);
    }
}

/// Whether the backend keeps tensors in host memory, where a uniquely owned tensor's buffer can be
/// taken out, written and put back without a copy. burn's CPU backend copies the whole destination in
/// `slice_assign` (0.21: it holds a second reference to the buffer while writing), which made every
/// decoding step copy the whole cache; device backends write in place.
fn writes_in_host_memory<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<super::Cpu>()
}

/// Writes `new: (rows, heads, columns, dim)` into `cache: (rows, heads, capacity, dim)` at column
/// `starts[row]` of each row, through the host buffer (no copy of the cache when it is uniquely owned,
/// as it is between steps).
fn write_columns_in_place<B: Backend>(cache: Tensor<B, 4>, new: Tensor<B, 4>, starts: &[usize]) -> Tensor<B, 4> {
    let device = cache.device();
    let [rows, heads, cap, dim] = cache.dims();
    let columns = new.dims()[2];
    let new = new.into_data().convert::<f32>();
    let src = new.as_slice::<f32>().expect("f32 tensor data");
    let mut data = cache.into_data();
    let dst = data.as_mut_slice::<f32>().expect("the CPU cache holds f32");
    let span = columns * dim;
    for (r, &start) in starts.iter().enumerate() {
        for h in 0..heads {
            let from = (r * heads + h) * span;
            let to = ((r * heads + h) * cap + start) * dim;
            dst[to..to + span].copy_from_slice(&src[from..from + span]);
        }
    }
    debug_assert_eq!(starts.len(), rows);
    Tensor::from_data(data, &device)
}
