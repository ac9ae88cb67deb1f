//! Where the trace keeps its elements on the GPU: the `TRACE_STRIPE` override constant of every rule
//! kernel, and the CPU twin of its `trace_column` and `trace_element`.
//!
//! Each batch element's (N, N) trace (and its gradient, and the eligibility trace and its gradient
//! with a retroactive rule) is stored either with its rows whole, element (i, j) at `i N + j`, or
//! with its columns in stripes of S (the last one `N mod S` wide where S does not divide N), each
//! stripe's N rows one after another: element (i, j) of the stripe starting at column
//! `c = j - j mod S` lies at `c N + i min(S, N - c) + (j - c)`. The kernels walk the rows of a run
//! of columns; in stripes that walk is one contiguous stream rather than a short run every N floats.
//!
//! The host never sees the stored order: `ForwardRunner::read_trace` returns (B, N, N) row-major,
//! and the CPU twins work on row-major traces; tests convert with [`TraceLayout::store`] and
//! [`TraceLayout::load`].

/// The stored order of the trace: `stripe` columns per stripe, 0 for rows whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceLayout {
    pub stripe: u32,
}

impl TraceLayout {
    /// Rows whole: the (B, N, N) row-major order.
    pub const ROWS: TraceLayout = TraceLayout { stripe: 0 };

    /// Columns in stripes of `stripe`.
    pub const fn striped(stripe: u32) -> TraceLayout {
        TraceLayout { stripe }
    }

    /// Whether the stored order is the row-major one at N neurons (a stripe of N or more columns is one
    /// stripe holding whole rows).
    pub fn is_row_major(&self, n: u32) -> bool {
        self.stripe == 0 || self.stripe >= n
    }

    /// The pipeline override constant that sets this layout in a rule kernel.
    pub fn constant(&self) -> (&'static str, f64) {
        ("TRACE_STRIPE", self.stripe as f64)
    }

    /// The twin of the kernels' `trace_column`: (x, y) such that element (i, j) of a batch
    /// element's trace is stored at `x + i y`.
    pub fn column(&self, n: u32, j: u32) -> (u32, u32) {
        if self.is_row_major(n) {
            return (j, n);
        }
        let start = j - j % self.stripe;
        (start * n + (j - start), self.stripe.min(n - start))
    }

    /// Where element (i, j) of a batch element's (N, N) trace is stored, from the start of it.
    pub fn offset(&self, n: u32, i: u32, j: u32) -> usize {
        let (x, y) = self.column(n, j);
        x as usize + i as usize * y as usize
    }

    /// The twin of the kernels' `trace_element`: (i, j) of the element stored at offset `r < N^2`.
    pub fn element(&self, n: u32, r: u32) -> (u32, u32) {
        if self.is_row_major(n) {
            return (r / n, r % n);
        }
        let start = r / (self.stripe * n) * self.stripe;
        let width = self.stripe.min(n - start);
        let within = r - start * n;
        (within / width, start + within % width)
    }

    /// Row-major (.., N, N) traces (any number of N x N blocks) in the stored order.
    pub fn store(&self, n: u32, row_major: &[f32]) -> Vec<f32> {
        self.permute(n, row_major, true)
    }

    /// Stored (.., N, N) traces back in row-major order.
    pub fn load(&self, n: u32, stored: &[f32]) -> Vec<f32> {
        self.permute(n, stored, false)
    }

    fn permute(&self, n: u32, from: &[f32], to_stored: bool) -> Vec<f32> {
        let nn = n as usize * n as usize;
        assert!(nn > 0 && from.len().is_multiple_of(nn), "{} floats are not whole {n} x {n} traces", from.len());
        let mut out = vec![f32::NAN; from.len()];
        for (block_in, block_out) in from.chunks(nn).zip(out.chunks_mut(nn)) {
            for i in 0..n {
                for j in 0..n {
                    let (row_major, stored) = ((i * n + j) as usize, self.offset(n, i, j));
                    if to_stored {
                        block_out[stored] = block_in[row_major];
                    } else {
                        block_out[row_major] = block_in[stored];
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUTS: [TraceLayout; 5] =
        [TraceLayout::ROWS, TraceLayout::striped(4), TraceLayout::striped(8), TraceLayout::striped(12), TraceLayout::striped(128)];

    #[test]
    fn every_element_has_one_place_and_element_inverts_offset() {
        for layout in LAYOUTS {
            for n in [1, 4, 7, 12, 13, 20, 64, 65, 130] {
                let mut seen = vec![false; (n * n) as usize];
                for i in 0..n {
                    for j in 0..n {
                        let r = layout.offset(n, i, j);
                        assert!(!seen[r], "{layout:?}, N = {n}: ({i}, {j}) shares offset {r}");
                        seen[r] = true;
                        assert_eq!(layout.element(n, r as u32), (i, j), "{layout:?}, N = {n}, offset {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn rows_whole_is_row_major_and_stripes_keep_a_column_run_contiguous_down_the_rows() {
        assert_eq!(TraceLayout::ROWS.offset(10, 3, 7), 37);
        assert_eq!(TraceLayout::striped(16).offset(10, 3, 7), 37, "a stripe wider than N holds whole rows");
        // N = 10 in stripes of 4: columns 0-3, 4-7 and a last stripe of 2.
        let layout = TraceLayout::striped(4);
        assert_eq!(layout.offset(10, 0, 0), 0);
        assert_eq!(layout.offset(10, 1, 0), 4, "the next row of the same stripe follows its first row");
        assert_eq!(layout.offset(10, 9, 3), 39);
        assert_eq!(layout.offset(10, 0, 4), 40, "the second stripe follows the first's N rows");
        assert_eq!(layout.offset(10, 2, 9), 80 + 2 * 2 + 1, "the last stripe is 2 wide");
    }

    #[test]
    fn store_and_load_are_inverse_over_a_batch() {
        let (n, batch) = (13, 3);
        let row_major: Vec<f32> = (0..batch * n * n).map(|k| k as f32).collect();
        for layout in LAYOUTS {
            let stored = layout.store(n, &row_major);
            assert_eq!(layout.load(n, &stored), row_major, "{layout:?}");
            // Batch element 1's (i, j) sits at its block's offset.
            assert_eq!(stored[(n * n) as usize + layout.offset(n, 5, 11)], ((n * n) + 5 * n + 11) as f32, "{layout:?}");
        }
    }
}
