//! A small host-side page allocator for the paged KV cache (the reference model and the tests):
//! pages per sequence, slot mappings for new tokens, block tables. Not thread-safe, no
//! prefix sharing: an engine brings its own scheduler; this is the minimal correct one.

use super::PAGE_SIZES;
use crate::{Error, Result};

/// A sequence handed out by [`PageAllocator::add_sequence`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqId(usize);

#[derive(Clone, Debug, Default)]
struct SeqPages {
    pages: Vec<i32>,
    len: usize,
}

/// Hands out the pages of a cache with `num_pages` pages of `page_size` tokens.
#[derive(Clone, Debug)]
pub struct PageAllocator {
    page_size: usize,
    num_pages: usize,
    /// Free page ids; allocation pops from the end.
    free: Vec<i32>,
    seqs: Vec<Option<SeqPages>>,
}

/// A batch's block table on the host (upload it and wrap it in a
/// [`super::BlockTableView`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockTable {
    /// `[num_seqs, max_pages_per_seq]`, row-major; unused entries are −1.
    pub table: Vec<i32>,
    /// Columns of `table`: the longest sequence's page count (at least 1), or more if padded.
    pub max_pages_per_seq: usize,
    /// `[num_seqs]`: tokens per sequence.
    pub seq_lens: Vec<i32>,
}

impl PageAllocator {
    /// Pages are handed out in order 0, 1, 2, ... (until freed ones come back).
    pub fn new(num_pages: usize, page_size: usize) -> Result<Self> {
        const OP: &str = "PageAllocator::new";
        if !PAGE_SIZES.contains(&page_size) {
            return Err(Error::Unsupported { op: OP, what: "page_size (1, 8, 16, 32, 64, 128 or 256)", value: page_size.to_string() });
        }
        crate::ops::check_fits_i32(OP, "num_pages", num_pages)?;
        let free = (0..num_pages as i32).rev().collect();
        Ok(Self { page_size, num_pages, free, seqs: Vec::new() })
    }

    /// Pages are handed out in a scrambled order (a deterministic shuffle from `seed`), so that
    /// consecutive pages of a sequence are not neighbours in memory — what tests want.
    pub fn shuffled(num_pages: usize, page_size: usize, seed: u64) -> Result<Self> {
        let mut a = Self::new(num_pages, page_size)?;
        let mut rng = crate::check::Rng::new(seed);
        for i in (1..a.free.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            a.free.swap(i, j);
        }
        Ok(a)
    }

    /// Tokens per page.
    pub fn page_size(&self) -> usize {
        self.page_size
    }
    /// Pages in the cache, free or not.
    pub fn num_pages(&self) -> usize {
        self.num_pages
    }
    /// Pages not held by any sequence.
    pub fn free_pages(&self) -> usize {
        self.free.len()
    }

    /// A new, empty sequence.
    pub fn add_sequence(&mut self) -> SeqId {
        self.seqs.push(Some(SeqPages::default()));
        SeqId(self.seqs.len() - 1)
    }

    fn seq(&self, op: &'static str, id: SeqId) -> Result<&SeqPages> {
        self.seqs.get(id.0).and_then(Option::as_ref).ok_or_else(|| unknown(op, id))
    }

    /// Tokens in the sequence.
    pub fn seq_len(&self, id: SeqId) -> Result<usize> {
        Ok(self.seq("PageAllocator::seq_len", id)?.len)
    }

    /// The sequence's pages, in order.
    pub fn pages(&self, id: SeqId) -> Result<&[i32]> {
        Ok(&self.seq("PageAllocator::pages", id)?.pages)
    }

    /// Appends `num_tokens` tokens to the sequence, allocating pages as needed, and returns their
    /// slots (page · page_size + row), in order. With too few free pages: `Error::OutOfPages`
    /// and nothing changes.
    pub fn append(&mut self, id: SeqId, num_tokens: usize) -> Result<Vec<i64>> {
        const OP: &str = "PageAllocator::append";
        let ps = self.page_size;
        let s = self.seq(OP, id)?;
        let (len, have) = (s.len, s.pages.len());
        let end = len.checked_add(num_tokens).ok_or(Error::Unsupported { op: OP, what: "sequence length (overflows usize)", value: format!("{len} + {num_tokens}") })?;
        let needed = end.div_ceil(ps).saturating_sub(have);
        if needed > self.free.len() {
            return Err(Error::OutOfPages { op: OP, needed, free: self.free.len() });
        }
        let new_pages = self.free.split_off(self.free.len() - needed);
        let s = self.seqs[id.0].as_mut().expect("checked above");
        s.pages.extend(new_pages.into_iter().rev());
        let slots = (len..end).map(|p| s.pages[p / ps] as i64 * ps as i64 + (p % ps) as i64).collect();
        s.len = end;
        Ok(slots)
    }

    /// Frees the sequence and returns its pages to the pool.
    pub fn free_sequence(&mut self, id: SeqId) -> Result<()> {
        let s = self.seqs.get_mut(id.0).and_then(Option::take).ok_or_else(|| unknown("PageAllocator::free_sequence", id))?;
        self.free.extend(s.pages.into_iter().rev());
        Ok(())
    }

    /// The block table and lengths of `seqs`, in that order; max_pages_per_seq is the longest
    /// page list (at least 1).
    pub fn block_table(&self, seqs: &[SeqId]) -> Result<BlockTable> {
        const OP: &str = "PageAllocator::block_table";
        let rows = seqs.iter().map(|&id| self.seq(OP, id)).collect::<Result<Vec<_>>>()?;
        let max_pages_per_seq = rows.iter().map(|s| s.pages.len()).max().unwrap_or(0).max(1);
        let mut table = vec![-1i32; seqs.len() * max_pages_per_seq];
        for (r, s) in rows.iter().enumerate() {
            table[r * max_pages_per_seq..][..s.pages.len()].copy_from_slice(&s.pages);
        }
        let seq_lens = rows.iter().map(|s| i32::try_from(s.len)).collect::<std::result::Result<_, _>>().map_err(|_| {
            Error::Unsupported { op: OP, what: "sequence length (> i32::MAX)", value: "too long".into() }
        })?;
        Ok(BlockTable { table, max_pages_per_seq, seq_lens })
    }
}

impl BlockTable {
    /// The same table with at least `stride` columns (the new ones −1): a fixed shape from step
    /// to step, as a CUDA graph that reads the table from one buffer needs (kernels read only
    /// the first ⌈len / page_size⌉ entries of a row). A stride below the current one keeps
    /// the current one.
    pub fn padded(self, stride: usize) -> BlockTable {
        if stride <= self.max_pages_per_seq {
            return self;
        }
        let mut table = vec![-1i32; self.seq_lens.len() * stride];
        // Row by row, as far as both the rows and seq_lens go (the fields are public: a table
        // built by hand may have any width or row count; none panics).
        for (dst, row) in table.chunks_mut(stride).zip(self.table.chunks(self.max_pages_per_seq.max(1))) {
            dst[..row.len()].copy_from_slice(row);
        }
        BlockTable { table, max_pages_per_seq: stride, seq_lens: self.seq_lens }
    }
}

fn unknown(op: &'static str, id: SeqId) -> Error {
    Error::Unsupported { op, what: "sequence id (freed or never added)", value: id.0.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn padded_tables_keep_every_row() {
        let mut a = PageAllocator::new(8, 16).unwrap();
        let (s, t) = (a.add_sequence(), a.add_sequence());
        a.append(s, 20).unwrap();
        a.append(t, 5).unwrap();
        let bt = a.block_table(&[s, t]).unwrap();
        assert_eq!(bt.table, [0, 1, 2, -1]);
        let p = bt.clone().padded(4);
        assert_eq!((p.max_pages_per_seq, &p.table[..], &p.seq_lens[..]), (4, &[0, 1, -1, -1, 2, -1, -1, -1][..], &[20, 5][..]));
        assert_eq!(bt.clone().padded(1), bt);
    }

    #[test]
    fn append_allocates_pages_at_page_boundaries() {
        let mut a = PageAllocator::new(8, 16).unwrap();
        let s = a.add_sequence();
        assert_eq!(a.append(s, 15).unwrap(), (0..15).collect::<Vec<i64>>());
        assert_eq!(a.pages(s).unwrap(), &[0]);
        // Token 16 opens the second page.
        assert_eq!(a.append(s, 2).unwrap(), vec![15, 16]);
        assert_eq!(a.pages(s).unwrap(), &[0, 1]);
        assert_eq!(a.seq_len(s).unwrap(), 17);
        assert_eq!(a.free_pages(), 6);
        assert_eq!(a.append(s, 0).unwrap(), Vec::<i64>::new());
    }

    #[test]
    fn out_of_pages_changes_nothing_and_free_returns_pages() {
        let mut a = PageAllocator::new(3, 8).unwrap();
        let (s, t) = (a.add_sequence(), a.add_sequence());
        a.append(s, 10).unwrap(); // 2 pages
        let e = a.append(t, 9).unwrap_err(); // needs 2, 1 free
        assert!(matches!(e, Error::OutOfPages { needed: 2, free: 1, .. }), "{e}");
        assert_eq!((a.seq_len(t).unwrap(), a.free_pages()), (0, 1));
        a.free_sequence(s).unwrap();
        assert_eq!(a.free_pages(), 3);
        assert!(a.append(s, 1).is_err(), "a freed sequence is gone");
        assert!(a.free_sequence(s).is_err());
        let slots = a.append(t, 24).unwrap();
        assert_eq!(slots.len(), 24);
        assert_eq!(a.free_pages(), 0);
    }

    #[test]
    fn slots_are_unique_and_match_the_block_table() {
        for page_size in [1usize, 8, 16, 256] {
            let mut a = PageAllocator::shuffled(64, page_size, page_size as u64).unwrap();
            let ids: Vec<SeqId> = (0..5).map(|_| a.add_sequence()).collect();
            let mut all = HashSet::new();
            let mut per_seq = vec![Vec::new(); ids.len()];
            // Interleaved appends (decode-like), ragged lengths.
            for round in 0..7 {
                for (i, &id) in ids.iter().enumerate() {
                    let n = (i * 3 + round) % 5;
                    if a.free_pages() * page_size < n + page_size {
                        continue;
                    }
                    for slot in a.append(id, n).unwrap() {
                        assert!(all.insert(slot), "slot {slot} handed out twice");
                        assert!((slot as usize) < 64 * page_size);
                        per_seq[i].push(slot);
                    }
                }
            }
            let bt = a.block_table(&ids).unwrap();
            for (i, slots) in per_seq.iter().enumerate() {
                assert_eq!(bt.seq_lens[i] as usize, slots.len());
                for (p, &slot) in slots.iter().enumerate() {
                    let page = bt.table[i * bt.max_pages_per_seq + p / page_size];
                    assert_eq!(slot, page as i64 * page_size as i64 + (p % page_size) as i64);
                }
                let used = slots.len().div_ceil(page_size);
                assert!(bt.table[i * bt.max_pages_per_seq..][used..bt.max_pages_per_seq].iter().all(|&p| p == -1));
            }
        }
    }

    /// A length past usize is an error and leaves the sequence as it was (it had wrapped to a
    /// shorter sequence in release builds and panicked in debug ones).
    #[test]
    fn an_append_past_usize_is_refused() {
        let mut a = PageAllocator::new(4, 16).unwrap();
        let s = a.add_sequence();
        a.append(s, 5).unwrap();
        assert!(matches!(a.append(s, usize::MAX), Err(Error::Unsupported { .. })));
        assert_eq!(a.block_table(&[s]).unwrap().seq_lens, vec![5]);
        assert_eq!(a.append(s, 1).unwrap(), vec![5]);
    }

    /// Tables built by hand (the fields are public) pad without panicking: width 0, more rows
    /// than seq_lens, fewer.
    #[test]
    fn hand_built_tables_pad() {
        let t = BlockTable { table: vec![], max_pages_per_seq: 0, seq_lens: vec![] }.padded(4);
        assert!(t.table.is_empty());
        let t = BlockTable { table: vec![1, 2, 3], max_pages_per_seq: 2, seq_lens: vec![0] }.padded(4);
        assert_eq!(t.table, vec![1, 2, -1, -1]);
        let t = BlockTable { table: vec![7], max_pages_per_seq: 1, seq_lens: vec![1, 1] }.padded(2);
        assert_eq!(t.table, vec![7, -1, -1, -1]);
    }

    #[test]
    fn shuffled_pages_are_a_permutation() {
        let a = PageAllocator::shuffled(100, 8, 3).unwrap();
        let mut f = a.free.clone();
        assert_ne!(f, (0..100).rev().collect::<Vec<i32>>());
        f.sort();
        assert_eq!(f, (0..100).collect::<Vec<i32>>());
        assert!(PageAllocator::new(4, 24).is_err());
    }
}
