//! The key/value cache for incremental decoding of a batch of sequences of different lengths.
//!
//! Layout: per layer, keys and values of shape `(batch, kv_heads, columns, head_dim)`, before the
//! grouped-query repeat. Columns are shared by the batch: a prefill of prompts right-padded to the
//! longest one, then one column per decoding step. Each row records which columns hold real tokens
//! (padding columns are masked out of attention) and the RoPE position of its next token, so rows of
//! different lengths decode together exactly as each would alone.

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};

/// Cached keys and values of every layer, plus the per-row bookkeeping.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    /// `valid[row][column]`: whether that column holds one of the row's tokens.
    valid: Vec<Vec<bool>>,
    /// The RoPE position of each row's next token (its number of real tokens so far).
    next_position: Vec<usize>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model with `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![None; num_layers], valid: vec![], next_position: vec![] }
    }

    /// Layers the cache was made for.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Rows in the cache (0 before the prefill).
    pub fn batch_size(&self) -> usize {
        self.valid.len()
    }

    /// Columns in the cache: the padded prompt length plus one per decoding step.
    pub fn columns(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    /// Each row's number of real tokens so far (the position of its next token).
    pub fn lengths(&self) -> &[usize] {
        &self.next_position
    }

    /// Records that a step of `new_columns` columns is added for rows with `lengths[row]` real tokens
    /// in it (right-padded), and returns the positions of every new column, row-major.
    pub(crate) fn begin_step(&mut self, lengths: &[usize], new_columns: usize) -> Vec<usize> {
        if self.valid.is_empty() {
            self.valid = vec![vec![]; lengths.len()];
            self.next_position = vec![0; lengths.len()];
        }
        let mut positions = Vec::with_capacity(lengths.len() * new_columns);
        for (row, &len) in lengths.iter().enumerate() {
            let start = self.next_position[row];
            positions.extend((0..new_columns).map(|i| start + i.min(len.saturating_sub(1))));
            self.valid[row].extend((0..new_columns).map(|i| i < len));
            self.next_position[row] += len;
        }
        positions
    }

    /// The attention mask for the step just begun: `(batch, 1, new_columns, columns)`, `true` where a
    /// query may not look (a padding column, or a later token of its own row).
    pub(crate) fn step_mask(&self, new_columns: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
        let cols = self.columns();
        let first_new = cols - new_columns;
        let mut mask = Vec::with_capacity(self.batch_size() * new_columns * cols);
        for valid in &self.valid {
            for q in 0..new_columns {
                let last_visible = first_new + q;
                mask.extend(valid.iter().enumerate().map(|(k, &ok)| !ok || k > last_visible));
            }
        }
        Tensor::from_data(TensorData::new(mask, [self.batch_size(), 1, new_columns, cols]), device)
    }

    /// Appends a layer's new keys and values and returns the whole cached keys and values.
    pub(crate) fn append(&mut self, layer: usize, k: Tensor<B, 4>, v: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let (k, v) = match self.layers[layer].take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        (k, v)
    }

    /// Keeps the given rows, in the given order; a row may repeat (to fan a prompt out to a group of
    /// samples after one prefill) or be dropped (a finished sequence).
    pub fn select_rows(&mut self, rows: &[usize]) {
        let Some(device) = self.layers.iter().flatten().next().map(|(k, _)| k.device()) else {
            return;
        };
        let ids: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [rows.len()]), &device);
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.clone().select(0, index.clone());
            *v = v.clone().select(0, index.clone());
        }
        self.valid = rows.iter().map(|&r| self.valid[r].clone()).collect();
        self.next_position = rows.iter().map(|&r| self.next_position[r]).collect();
    }
}
