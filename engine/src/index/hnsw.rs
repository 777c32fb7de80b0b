//! An in-memory HNSW index (Malkov & Yashunin, "Efficient and robust approximate nearest
//! neighbor search using Hierarchical Navigable Small World graphs") over L2-normalised
//! `f32` vectors, with similarity = dot product. No `unsafe`, deterministic.
//!
//! # Layout
//!
//! Everything lives in a handful of flat, contiguous vectors indexed by the dense internal
//! id (`0..len`), so a search touches few cache lines and no pointers:
//!
//! ```text
//!   keys      [k0 k1 k2 ...]                       u64 per node (caller's key)
//!   vectors   [v0 ....... | v1 ....... | ...]      dim f32 per node, row-major
//!   codes     [c0 .. | c1 .. | ...]                dim i8 per node + scale (derived)
//!   levels    [0 0 2 0 1 ...]                      u8 per node (top layer of the node)
//!   deleted   [. . x . . ...]                      tombstones
//!   layer0    [c|n n n .. (2M) | c|n n n .. | ...] 1 + 2M u32 per node: count, ids
//!   upper     [c|n .. (M) c|n .. (M) | ...]        1 + M u32 per node per layer 1..=level,
//!   upper_off [-  -  0  -  2(1+M) ...]             start of each node's blocks in `upper`
//!
//!   layer 2   e ----------------- x                 greedy descent (ef = 1) from the
//!   layer 1   e ------ y -------- x ---- z          entry point `e` down to layer 1,
//!   layer 0   e - a - y - b - c - x - d - z - ...   then a best-first beam search (ef)
//! ```
//!
//! # Algorithms
//!
//! - Node levels are drawn as `floor(-ln(u) / ln(M))` where `u` comes from a hash of
//!   `(key, seed)`: no RNG state, so the same inserts in the same order give the same graph,
//!   byte for byte. Nothing iterates a `HashMap`.
//! - Insertion follows the paper (alg. 1): greedy descent, then at each layer a beam search
//!   with `ef_construction` whose whole result set seeds the next layer down, and neighbour
//!   selection by the heuristic of alg. 4 (a candidate is kept only if it is closer to the
//!   new point than to every neighbour already kept). A neighbour whose list overflows
//!   (M on upper layers, 2M on layer 0) is re-pruned with the same heuristic.
//! - Candidate and result sets are binary heaps of packed `u64`s: the high 32 bits are the
//!   distance (`-dot`) mapped to an order-preserving integer, the low 32 bits the id. One
//!   integer compare orders by distance and breaks ties by id, which makes results
//!   reproducible and keeps the heaps cheap.
//! - The visited set is a per-thread, reusable array of `u16` generation marks (an
//!   increment per query, a clear every 65 535 queries): no `O(n)` allocation per query.
//! - [`Hnsw::search`] walks the graph on int8 codes of the vectors (see [`super::quant`]):
//!   a quarter of the bytes per visited node, which is what a walk over 100k points
//!   waits on (their `f32` rows are 150 MB, far beyond the cache). The `ef` points it
//!   finds are then rescored in `f32`, only those whose approximate score plus its error
//!   bound reaches the `k`-th best lower bound, so the similarities returned are exact
//!   and the order is the `f32` order. Insertion walks in `f32`: the graph is built from
//!   exact distances. Measured (`memlog bench ann`, one thread): recall@10 within 0.006
//!   of an `f32` walk at every ef, at 0.99–1.22 × its QPS on 100k vectors; in-process
//!   vector retrieval at 100k records 0.25–0.28 ms against 0.33–0.35.
//! - Deleted points are tombstones: they stay in the graph, are traversed, and are never
//!   returned; the same holds for points a search filter rejects, so neither disconnects the
//!   graph. [`Hnsw::compacted`] rebuilds without them.
//! - [`dot`] takes an AVX2 + FMA path (four 8-lane fused multiply-add accumulators, through
//!   pulp's safe run-time dispatch) when the CPU has both, since release builds target
//!   baseline x86-64;
//!   dot products were a third of a query's time at 100k records. Elsewhere it is written
//!   so LLVM vectorises it cleanly: four 4-lane accumulators, i.e. four SSE2 registers
//!   doing `mulps` + `addps` (checked in the disassembly). The two paths round
//!   differently, so a graph is reproducible byte for byte on machines with the same
//!   features; snapshots carry the graph itself, so a restart never depends on it. The
//!   beam search reads the first word of every unvisited neighbour's vector before
//!   computing any of their distances, so the cache misses overlap.
//!
//! # Serialised form
//!
//! Little-endian: magic `MEMLHNSW`, version `u32`, params, dim, count, entry point, keys,
//! levels, tombstones, vectors, layer-0 lists, upper-layer lists, then a 64-bit checksum of
//! every byte before it (FNV-1a over 64-bit words, see [`Checksum`]). [`Hnsw::read_from`]
//! verifies the checksum and the structure of the graph before returning it. The codes are
//! not stored: [`Hnsw::read_from`] encodes them again from the vectors.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};

use super::quant::{Codes, QueryCode};

/// The highest layer a node can be drawn on.
const MAX_LEVEL: usize = 16;
/// "No node", e.g. the entry point of an empty index.
const NONE: u32 = u32::MAX;
/// File magic of the serialised form.
const MAGIC: &[u8; 8] = b"MEMLHNSW";
/// Version of the serialised form.
const VERSION: u32 = 1;

/// Build parameters of an [`Hnsw`] index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Neighbours per node on layers >= 1; layer 0 keeps up to `2 * m`. Values below 2 are
    /// treated as 2.
    pub m: usize,
    /// Beam width while inserting. Larger builds a better graph, more slowly.
    pub ef_construction: usize,
    /// Seed of the level draw. Different seeds give different (equally good) graphs.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            m: 16,
            ef_construction: 200,
            seed: 0x6d65_6d6c_6f67,
        }
    }
}

/// A hierarchical navigable small-world graph over unit vectors. See the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct Hnsw {
    dim: usize,
    params: Params,
    /// Capacity of a layer-0 list (`2 * m`).
    m0: usize,
    keys: Vec<u64>,
    vectors: Vec<f32>,
    /// Int8 codes of `vectors`, row per node: what [`Hnsw::search`] walks the graph on
    /// (derived, never serialised).
    codes: Codes,
    levels: Vec<u8>,
    deleted: Vec<bool>,
    n_deleted: usize,
    /// `n * (1 + m0)`: per node a count then up to `m0` neighbour ids.
    layer0: Vec<u32>,
    /// Per node, the start of its `level` blocks of `1 + m` in `upper` (`NONE` at level 0).
    upper_off: Vec<u32>,
    upper: Vec<u32>,
    entry: u32,
    max_level: usize,
}

/// What the read-only phase of an insertion found ([`Hnsw::plan_batch`]), for
/// [`Hnsw::apply_plan`].
#[derive(Debug)]
pub struct InsertPlan {
    /// Each item's level.
    levels: Vec<usize>,
    /// Each item's search results per layer (index = layer), packed.
    found: Vec<Vec<Vec<u64>>>,
    /// The graph's size when planned: nothing may be inserted before the plan is applied.
    planned_at: usize,
}

impl Hnsw {
    /// An empty index for vectors of length `dim`.
    pub fn new(dim: usize, params: Params) -> Self {
        let m = params.m.max(2);
        let params = Params {
            m,
            ef_construction: params.ef_construction.max(m),
            seed: params.seed,
        };
        Hnsw {
            dim,
            params,
            m0: 2 * m,
            keys: Vec::new(),
            vectors: Vec::new(),
            codes: Codes::new(dim),
            levels: Vec::new(),
            deleted: Vec::new(),
            n_deleted: 0,
            layer0: Vec::new(),
            upper_off: Vec::new(),
            upper: Vec::new(),
            entry: NONE,
            max_level: 0,
        }
    }

    /// The vector length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The parameters in effect (after clamping `m >= 2`, `ef_construction >= m`).
    pub fn params(&self) -> Params {
        self.params
    }

    /// Points ever inserted, including deleted ones.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether nothing was ever inserted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Points not deleted.
    pub fn live(&self) -> usize {
        self.keys.len() - self.n_deleted
    }

    /// Inserts `vector` under `key` and returns its internal id (dense, from 0).
    ///
    /// Vectors are L2-normalised by the caller; similarity is the dot product.
    /// Deterministic: the same inserts in the same order give the same graph (the node level
    /// is drawn from a hash of `(key, seed)`).
    ///
    /// # Panics
    ///
    /// If `vector.len() != self.dim()` or the index already holds `u32::MAX - 1` points.
    pub fn insert(&mut self, key: u64, vector: &[f32]) -> u32 {
        // A batch of one: its searches see the graph as it is, as they would here (the
        // new node is unreachable until it is linked, layer by layer, top down).
        self.insert_batch(&[(key, vector)], 1)[0]
    }

    /// Inserts `items` (key, vector) in order and returns their ids: the same graph for
    /// the same batches, on any number of threads.
    ///
    /// The expensive part of an insertion, the beam searches that find each new point's
    /// neighbours, only reads the graph, so it runs for all items of the batch at once on
    /// up to `threads` threads against the graph as it was before the batch. Then the
    /// items are linked one after the other, in order, as [`Hnsw::insert`] would; the
    /// candidates of each are its search results plus the batch's earlier items (scored
    /// exactly: they were not in the graph when it searched). The one difference from
    /// inserting one at a time is that a search cannot route through the batch's earlier
    /// items, only find them this way.
    ///
    /// # Panics
    ///
    /// As [`Hnsw::insert`].
    pub fn insert_batch(&mut self, items: &[(u64, &[f32])], threads: usize) -> Vec<u32> {
        let plan = self.plan_batch(items, threads);
        self.apply_plan(items, plan)
    }

    /// The read-only first phase of [`Hnsw::insert_batch`]: the beam searches, on up to
    /// `threads` threads. A caller can run it under a shared lock, beside searches, and
    /// then [`Hnsw::apply_plan`] under an exclusive one; nothing may insert in between
    /// (deletes may: the searches of an insertion do not look at them).
    ///
    /// # Panics
    ///
    /// If a vector's length is not [`Hnsw::dim`].
    pub fn plan_batch(&self, items: &[(u64, &[f32])], threads: usize) -> InsertPlan {
        for (_, v) in items {
            assert_eq!(v.len(), self.dim, "hnsw: vector length != dim");
        }
        let levels: Vec<usize> = items
            .iter()
            .map(|(key, _)| draw_level(*key, self.params.seed, self.params.m))
            .collect();
        // Each item's search results per layer (index = layer).
        let search = |i: usize| self.search_for_insert(items[i].1, levels[i]);
        let threads = threads.clamp(1, items.len().max(1));
        let found: Vec<Vec<Vec<u64>>> = if threads == 1 || items.len() < 8 {
            (0..items.len()).map(search).collect()
        } else {
            let chunk = items.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..items.len())
                    .step_by(chunk)
                    .map(|start| {
                        let end = (start + chunk).min(items.len());
                        scope.spawn(move || (start..end).map(search).collect::<Vec<_>>())
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("hnsw: a search thread panicked"))
                    .collect()
            })
        };
        InsertPlan {
            levels,
            found,
            planned_at: self.len(),
        }
    }

    /// The second phase of [`Hnsw::insert_batch`]: adds `items` (the ones `plan` was made
    /// for) and links them, in order; returns their ids.
    ///
    /// # Panics
    ///
    /// If the plan is not for these items (or a vector's length is not [`Hnsw::dim`]), or
    /// something was inserted since it was made.
    pub fn apply_plan(&mut self, items: &[(u64, &[f32])], plan: InsertPlan) -> Vec<u32> {
        assert_eq!(
            plan.found.len(),
            items.len(),
            "hnsw: a plan for other items"
        );
        assert_eq!(
            plan.planned_at,
            self.len(),
            "hnsw: the graph changed since the plan"
        );
        for (_, v) in items {
            assert_eq!(v.len(), self.dim, "hnsw: vector length != dim");
        }
        let InsertPlan { levels, found, .. } = plan;
        // Phase 2, in order: add each node and link it.
        let m = self.params.m;
        let ef = self.params.ef_construction;
        let mut ids = Vec::with_capacity(items.len());
        let mut selected = Vec::with_capacity(self.m0);
        for (i, ((key, vector), mut layers)) in items.iter().zip(found).enumerate() {
            let level = levels[i];
            let id = self.push_node(*key, vector, level);
            ids.push(id);
            if self.entry == NONE {
                self.entry = id;
                self.max_level = level;
                continue;
            }
            for l in (0..=level).rev() {
                let mut cands = layers.get_mut(l).map(std::mem::take).unwrap_or_default();
                for (j, &earlier) in ids[..i].iter().enumerate() {
                    if levels[j] >= l {
                        cands.push(pack(self.dist(vector, earlier), earlier));
                    }
                }
                if cands.is_empty() {
                    continue;
                }
                cands.sort_unstable();
                cands.dedup();
                cands.truncate(ef);
                self.select_neighbours(&cands, m, &mut selected);
                self.block_mut(id, l)[0] = selected.len() as u32;
                self.block_mut(id, l)[1..=selected.len()].copy_from_slice(&selected);
                for &s in &selected {
                    self.link(s, id, l);
                }
            }
            if level > self.max_level {
                self.entry = id;
                self.max_level = level;
            }
        }
        ids
    }

    /// The searches [`Hnsw::insert`] makes for a point of `level` (results per layer, empty
    /// above the graph's top, closest first by exact distance), without changing anything.
    ///
    /// The beam walks the int8 codes, as [`Hnsw::search`] does; each layer's results are
    /// then given their exact `f32` distances, which the neighbour selection compares.
    fn search_for_insert(&self, vector: &[f32], level: usize) -> Vec<Vec<u64>> {
        let mut out = vec![Vec::new(); level + 1];
        if self.entry == NONE {
            return out;
        }
        let space = Coded {
            codes: &self.codes,
            q: Codes::query(vector),
        };
        let (ep, ep_dist) = self.descend(&space, self.max_level, level);
        let top = level.min(self.max_level);
        with_visited(self.len(), |visited| {
            // Each layer's search starts from the results of the layer above.
            let mut seeds = vec![pack(ep_dist, ep)];
            for l in (0..=top).rev() {
                let found = self.search_layer(
                    &space,
                    &seeds,
                    self.params.ef_construction,
                    l,
                    |_| true,
                    visited,
                );
                let mut exact: Vec<u64> = found
                    .iter()
                    .map(|&p| pack(self.dist(vector, p as u32), p as u32))
                    .collect();
                exact.sort_unstable();
                out[l] = exact;
                seeds = found;
            }
        });
        out
    }

    /// Appends a node with no links yet; returns its id.
    fn push_node(&mut self, key: u64, vector: &[f32], level: usize) -> u32 {
        assert!(self.keys.len() < (NONE - 1) as usize, "hnsw: index is full");
        let id = self.keys.len() as u32;
        self.keys.push(key);
        self.vectors.extend_from_slice(vector);
        self.codes.push(vector);
        self.levels.push(level as u8);
        self.deleted.push(false);
        self.layer0.resize(self.layer0.len() + 1 + self.m0, 0);
        if level > 0 {
            self.upper_off.push(self.upper.len() as u32);
            self.upper
                .resize(self.upper.len() + level * (1 + self.params.m), 0);
        } else {
            self.upper_off.push(NONE);
        }
        id
    }

    /// Marks `id` deleted: it is still traversed but never returned. Deleting twice is a
    /// no-op.
    ///
    /// # Panics
    ///
    /// If `id` was never returned by [`insert`](Hnsw::insert).
    pub fn delete(&mut self, id: u32) {
        let d = &mut self.deleted[id as usize];
        if !*d {
            *d = true;
            self.n_deleted += 1;
        }
    }

    /// Whether `id` was deleted.
    ///
    /// # Panics
    ///
    /// If `id` is out of range.
    pub fn is_deleted(&self, id: u32) -> bool {
        self.deleted[id as usize]
    }

    /// The key `id` was inserted under.
    ///
    /// # Panics
    ///
    /// If `id` is out of range.
    pub fn key(&self, id: u32) -> u64 {
        self.keys[id as usize]
    }

    /// The int8 codes of the vectors, one row per id (what [`Hnsw::search`] walks on).
    pub fn codes(&self) -> &Codes {
        &self.codes
    }

    /// The vector of `id`.
    ///
    /// # Panics
    ///
    /// If `id` is out of range.
    pub fn vector(&self, id: u32) -> &[f32] {
        let i = id as usize * self.dim;
        &self.vectors[i..i + self.dim]
    }

    /// Approximate top-`k` by dot product, best first, as `(id, similarity)`; ties go to
    /// the lower id.
    ///
    /// Deleted points and points for which `filter` returns false are never returned but
    /// are still traversed (so a filter does not disconnect the graph; a very selective
    /// filter makes the search visit more of the graph). `ef` is clamped to `>= k`; larger
    /// is slower and more accurate.
    ///
    /// # Panics
    ///
    /// If `query.len() != self.dim()`.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<(u32, f32)> {
        assert_eq!(query.len(), self.dim, "hnsw: query length != dim");
        if k == 0 || self.live() == 0 {
            return Vec::new();
        }
        let ef = ef.max(k);
        // Walk the graph on the int8 codes (a quarter of the bytes per visited node), then
        // rescore what the walk found in f32 and keep the best `k`.
        let space = Coded {
            codes: &self.codes,
            q: Codes::query(query),
        };
        let (ep, ep_dist) = self.descend(&space, self.max_level, 0);
        let seeds = [pack(ep_dist, ep)];
        let found = with_visited(self.len(), |visited| match (filter, self.n_deleted) {
            (None, 0) => self.search_layer(&space, &seeds, ef, 0, |_| true, visited),
            (None, _) => self.search_layer(
                &space,
                &seeds,
                ef,
                0,
                |id| !self.deleted[id as usize],
                visited,
            ),
            (Some(f), _) => self.search_layer(
                &space,
                &seeds,
                ef,
                0,
                |id| !self.deleted[id as usize] && f(id),
                visited,
            ),
        });
        self.rescore(query, &space.q, k, &found)
    }

    /// The best `k` of `found` (packed approximate distances from the codes) by exact
    /// `f32` similarity, as `(id, similarity)`. Only the points whose approximate score
    /// plus its error bound reaches the `k`-th best lower bound can be among them, so only
    /// those are read in `f32`.
    fn rescore(&self, query: &[f32], qc: &QueryCode, k: usize, found: &[u64]) -> Vec<(u32, f32)> {
        let scored: Vec<(u32, f32, f32)> = found
            .iter()
            .map(|&p| {
                let (id, approx) = (p as u32, -unpack_dist(p));
                (id, approx, self.codes.bound(qc, id as usize, approx))
            })
            .collect();
        let ids = within_reach(scored, k);
        let exact = Exact { h: self, q: query };
        touch(&exact, &ids);
        let mut best: Vec<u64> = ids.iter().map(|&id| pack(exact.dist(id), id)).collect();
        best.sort_unstable();
        best.into_iter()
            .take(k)
            .map(|p| (p as u32, -unpack_dist(p)))
            .collect()
    }

    /// Exact top-`k` by dot product over `candidates` (or all points when `None`), best
    /// first, ties to the lower id. Deleted ids are skipped, as are out-of-range and
    /// repeated candidate ids.
    ///
    /// # Panics
    ///
    /// If `query.len() != self.dim()`.
    pub fn exact(&self, query: &[f32], k: usize, candidates: Option<&[u32]>) -> Vec<(u32, f32)> {
        assert_eq!(query.len(), self.dim, "hnsw: query length != dim");
        if k == 0 {
            return Vec::new();
        }
        let mut top: BinaryHeap<u64> = BinaryHeap::with_capacity(k + 1);
        let mut consider = |id: u32| {
            if (id as usize) < self.len() && !self.deleted[id as usize] {
                let p = pack(self.dist(query, id), id);
                if top.len() < k {
                    top.push(p);
                } else if top.peek().is_some_and(|&worst| p < worst) {
                    top.pop();
                    top.push(p);
                }
            }
        };
        match candidates {
            Some(ids) => {
                let mut ids = ids.to_vec();
                ids.sort_unstable();
                ids.dedup();
                ids.into_iter().for_each(&mut consider);
            }
            None => (0..self.len() as u32).for_each(&mut consider),
        }
        top.into_sorted_vec()
            .into_iter()
            .map(|p| (p as u32, -unpack_dist(p)))
            .collect()
    }

    /// Exact top-`k` from approximate scores: `scored` holds distinct `(id, approx, bound)`
    /// with `|dot − approx| ≤ bound` (see [`super::quant`]). Only the ids whose upper bound
    /// reaches the k-th best lower bound are scored in f32; every true top-k point is among
    /// them, so the answer is the one [`Hnsw::exact`] gives over the same ids. Deleted and
    /// out-of-range ids are skipped. (Distinct, because a repeated id would count twice
    /// towards the k-th lower bound.)
    pub fn refine(
        &self,
        query: &[f32],
        k: usize,
        mut scored: Vec<(u32, f32, f32)>,
    ) -> Vec<(u32, f32)> {
        assert_eq!(query.len(), self.dim, "hnsw: query length != dim");
        scored.retain(|(id, _, _)| (*id as usize) < self.len() && !self.deleted[*id as usize]);
        if k == 0 || scored.is_empty() {
            return Vec::new();
        }
        self.exact(query, k, Some(&within_reach(scored, k)))
    }

    /// A new index holding only the live points, inserted in their original order with the
    /// same parameters (ids change; keys are kept).
    pub fn compacted(&self) -> Hnsw {
        let mut out = Hnsw::new(self.dim, self.params);
        let live = self.live();
        out.keys.reserve(live);
        out.vectors.reserve(live * self.dim);
        out.layer0.reserve(live * (1 + self.m0));
        for id in 0..self.len() as u32 {
            if !self.deleted[id as usize] {
                out.insert(self.keys[id as usize], self.vector(id));
            }
        }
        out
    }

    /// Writes the index in the binary form described in the module docs.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut w = HashWrite {
            w,
            sum: Checksum::new(),
        };
        w.put(MAGIC)?;
        w.put(&VERSION.to_le_bytes())?;
        w.put_u64s(&[
            self.params.m as u64,
            self.params.ef_construction as u64,
            self.params.seed,
            self.dim as u64,
            self.len() as u64,
            u64::from(self.entry),
            self.max_level as u64,
            self.upper.len() as u64,
        ])?;
        w.put_u64s(&self.keys)?;
        w.put(&self.levels)?;
        let deleted: Vec<u8> = self.deleted.iter().map(|&d| u8::from(d)).collect();
        w.put(&deleted)?;
        w.put_f32s(&self.vectors)?;
        w.put_u32s(&self.layer0)?;
        w.put_u32s(&self.upper)?;
        let sum = w.sum.finish();
        w.w.write_all(&sum.to_le_bytes())
    }

    /// Reads an index written by [`write_to`](Hnsw::write_to). Fails with
    /// [`io::ErrorKind::InvalidData`] on a wrong magic or version, a checksum mismatch or
    /// an inconsistent graph, and with the reader's error (e.g. `UnexpectedEof`) on
    /// truncation. Reads exactly the bytes `write_to` wrote.
    pub fn read_from(r: &mut impl Read) -> io::Result<Hnsw> {
        let mut r = HashRead {
            r,
            sum: Checksum::new(),
        };
        let mut magic = [0u8; 8];
        r.get(&mut magic)?;
        if &magic != MAGIC {
            return Err(invalid("not an hnsw index (bad magic)".into()));
        }
        let mut version = [0u8; 4];
        r.get(&mut version)?;
        let version = u32::from_le_bytes(version);
        if version != VERSION {
            return Err(invalid(format!(
                "unsupported hnsw format version {version} (expected {VERSION})"
            )));
        }
        let head = r.get_u64s(8)?;
        let [m, ef_construction, seed, dim, n, entry, max_level, n_upper] = head[..] else {
            return Err(invalid("short header".into()));
        };
        let small = |v: u64, what: &str| {
            usize::try_from(v)
                .ok()
                .filter(|&v| v < NONE as usize)
                .ok_or_else(|| invalid(format!("{what} {v} out of range")))
        };
        let (m, ef_construction, dim, n) = (
            small(m, "m")?,
            small(ef_construction, "ef_construction")?,
            small(dim, "dim")?,
            small(n, "point count")?,
        );
        if !(2..=1 << 16).contains(&m) || ef_construction < m {
            return Err(invalid(format!(
                "bad params m={m} ef_construction={ef_construction}"
            )));
        }
        let n_upper = small(n_upper, "upper-layer size")?;
        let n_floats = n
            .checked_mul(dim)
            .ok_or_else(|| invalid("vector data size overflows".into()))?;
        let m0 = 2 * m;
        let n_layer0 = n
            .checked_mul(1 + m0)
            .ok_or_else(|| invalid("layer-0 size overflows".into()))?;
        let keys = r.get_u64s(n)?;
        let levels = r.get_bytes(n)?;
        let deleted = r.get_bytes(n)?;
        let vectors = r.get_f32s(n_floats)?;
        let layer0 = r.get_u32s(n_layer0)?;
        let upper = r.get_u32s(n_upper)?;
        let expected = r.sum.finish();
        let mut stored = [0u8; 8];
        r.r.read_exact(&mut stored)?;
        if u64::from_le_bytes(stored) != expected {
            return Err(invalid("checksum mismatch (corrupted index)".into()));
        }

        // The checksum only proves the bytes are what some writer wrote; check the graph is
        // one this code can walk without going out of bounds.
        let mut upper_off = Vec::with_capacity(n);
        let mut next = 0usize;
        let mut top = 0usize;
        let mut n_deleted = 0;
        for i in 0..n {
            let level = levels[i] as usize;
            if level > MAX_LEVEL {
                return Err(invalid(format!("node {i} has level {level}")));
            }
            top = top.max(level);
            match deleted[i] {
                0 => {}
                1 => n_deleted += 1,
                b => return Err(invalid(format!("bad tombstone byte {b}"))),
            }
            if level == 0 {
                upper_off.push(NONE);
            } else {
                upper_off.push(next as u32);
                next += level * (1 + m);
            }
        }
        if next != n_upper {
            return Err(invalid("upper-layer size does not match levels".into()));
        }
        let check_block = |block: &[u32], cap: usize| {
            let count = block[0] as usize;
            count <= cap && block[1..=count].iter().all(|&x| (x as usize) < n)
        };
        if !layer0.chunks_exact(1 + m0).all(|b| check_block(b, m0))
            || !upper.chunks_exact(1 + m).all(|b| check_block(b, m))
        {
            return Err(invalid("neighbour list out of range".into()));
        }
        let (entry, max_level) = (entry as u32, max_level as usize);
        let entry_ok = if n == 0 {
            entry == NONE && max_level == 0
        } else {
            (entry as usize) < n && levels[entry as usize] as usize == top && max_level == top
        };
        if !entry_ok {
            return Err(invalid("bad entry point".into()));
        }
        let mut codes = Codes::new(dim);
        if dim > 0 {
            vectors.chunks_exact(dim).for_each(|v| codes.push(v));
        }
        Ok(Hnsw {
            dim,
            params: Params {
                m,
                ef_construction,
                seed,
            },
            m0,
            keys,
            vectors,
            codes,
            levels,
            deleted: deleted.into_iter().map(|d| d == 1).collect(),
            n_deleted,
            layer0,
            upper_off,
            upper,
            entry,
            max_level,
        })
    }

    // ---- internals ----

    /// Distance used internally: `-dot`, so smaller is closer.
    #[inline(always)]
    fn dist(&self, q: &[f32], id: u32) -> f32 {
        -dot(q, self.vector(id))
    }

    /// The neighbour ids of `id` on `level` (a count-prefixed block, count stripped).
    #[inline(always)]
    fn neighbours(&self, id: u32, level: usize) -> &[u32] {
        let block = if level == 0 {
            let s = id as usize * (1 + self.m0);
            &self.layer0[s..s + 1 + self.m0]
        } else {
            let b = 1 + self.params.m;
            let s = self.upper_off[id as usize] as usize + (level - 1) * b;
            &self.upper[s..s + b]
        };
        let (count, ids) = block.split_at(1);
        &ids[..count[0] as usize]
    }

    /// The whole count-prefixed block of `id` on `level`, for writing.
    fn block_mut(&mut self, id: u32, level: usize) -> &mut [u32] {
        if level == 0 {
            let s = id as usize * (1 + self.m0);
            &mut self.layer0[s..s + 1 + self.m0]
        } else {
            let b = 1 + self.params.m;
            let s = self.upper_off[id as usize] as usize + (level - 1) * b;
            &mut self.upper[s..s + b]
        }
    }

    /// Greedy (ef = 1) descent from the entry point through layers `from..=above+1`;
    /// returns the closest node found and its distance.
    fn descend(&self, space: &impl Space, from: usize, above: usize) -> (u32, f32) {
        let mut cur = self.entry;
        let mut cur_dist = space.dist(cur);
        for level in (above + 1..=from).rev() {
            loop {
                let mut moved = false;
                for &nb in self.neighbours(cur, level) {
                    let d = space.dist(nb);
                    if d < cur_dist {
                        cur = nb;
                        cur_dist = d;
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        (cur, cur_dist)
    }

    /// Best-first beam search of one layer from `seeds` (packed, distances already
    /// computed). Returns up to `ef` accepted nodes, packed, closest first. Rejected nodes
    /// are expanded like any other but never enter the result set.
    #[inline]
    fn search_layer(
        &self,
        space: &impl Space,
        seeds: &[u64],
        ef: usize,
        level: usize,
        accept: impl Fn(u32) -> bool,
        visited: &mut Visited,
    ) -> Vec<u64> {
        let mut top: BinaryHeap<u64> = BinaryHeap::with_capacity(ef + 1);
        let mut cand: BinaryHeap<Reverse<u64>> = BinaryHeap::with_capacity(ef * 2);
        visited.next_query(self.len());
        for &s in seeds {
            if visited.insert(s as u32) {
                cand.push(Reverse(s));
                if accept(s as u32) {
                    top.push(s);
                    if top.len() > ef {
                        top.pop();
                    }
                }
            }
        }
        let mut worst = if top.len() < ef {
            u64::MAX
        } else {
            top.peek().copied().unwrap_or(u64::MAX)
        };
        let mut fresh = Vec::with_capacity(self.m0);
        while let Some(Reverse(c)) = cand.pop() {
            if c > worst {
                break;
            }
            // Gather the unvisited neighbours first, then compute their distances in one
            // tight loop: the vector loads of consecutive neighbours overlap.
            fresh.clear();
            fresh.extend(
                self.neighbours(c as u32, level)
                    .iter()
                    .copied()
                    .filter(|&nb| visited.insert(nb)),
            );
            touch(space, &fresh);
            for &nb in &fresh {
                let p = pack(space.dist(nb), nb);
                if p < worst {
                    cand.push(Reverse(p));
                    if accept(nb) {
                        top.push(p);
                        if top.len() > ef {
                            top.pop();
                        }
                        if top.len() == ef {
                            worst = top.peek().copied().unwrap_or(u64::MAX);
                        }
                    }
                }
            }
        }
        top.into_sorted_vec()
    }

    /// The heuristic of alg. 4: walk `sorted` (packed, closest first) and keep a candidate
    /// only if it is closer to the base point than to every candidate already kept, up to
    /// `m`. With `m` or fewer candidates all are kept.
    fn select_neighbours(&self, sorted: &[u64], m: usize, out: &mut Vec<u32>) {
        out.clear();
        if sorted.len() <= m {
            out.extend(sorted.iter().map(|&p| p as u32));
            return;
        }
        for &p in sorted {
            if out.len() >= m {
                break;
            }
            let (id, d) = (p as u32, unpack_dist(p));
            let v = self.vector(id);
            if out.iter().all(|&r| -dot(v, self.vector(r)) >= d) {
                out.push(id);
            }
        }
    }

    /// Adds the edge `from -> to` on `level`, re-pruning `from`'s list with the heuristic
    /// when it is full.
    fn link(&mut self, from: u32, to: u32, level: usize) {
        let cap = if level == 0 { self.m0 } else { self.params.m };
        let block = self.block_mut(from, level);
        let count = block[0] as usize;
        if count < cap {
            block[1 + count] = to;
            block[0] += 1;
            return;
        }
        let base = self.vector(from);
        let mut cands: Vec<u64> = self
            .neighbours(from, level)
            .iter()
            .chain(std::iter::once(&to))
            .map(|&x| pack(-dot(base, self.vector(x)), x))
            .collect();
        cands.sort_unstable();
        let mut kept = Vec::with_capacity(cap);
        self.select_neighbours(&cands, cap, &mut kept);
        let block = self.block_mut(from, level);
        block[0] = kept.len() as u32;
        block[1..=kept.len()].copy_from_slice(&kept);
    }
}

/// Dot product of two equally long slices (extra elements of the longer are ignored).
///
/// The widest instruction set the CPU has, chosen once at run time: AVX-512 (16 lanes,
/// 64 elements a step: six steps for a 384-d vector), else AVX2 + FMA (8 lanes), else
/// portable code. On the benches' Xeon (2 cores) AVX-512 took 0.72x the time of AVX2 per
/// 384-d product over a 30 MB set (random access, as in a graph search). The sum order
/// depends on the lane width, so the last bits of a score are the same for a given build
/// *and CPU*, not across CPUs.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match simd() {
        Simd::V4(v4) => return pulp::Simd::vectorize(v4, DotOp(a, b)),
        Simd::V3(v3) => return pulp::Simd::vectorize(v3, DotOp(a, b)),
        Simd::None => {}
    }
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
enum Simd {
    V4(pulp::x86::V4),
    V3(pulp::x86::V3),
    None,
}

/// The widest of AVX-512 and AVX2 + FMA this CPU has (checked once).
#[cfg(target_arch = "x86_64")]
fn simd() -> Simd {
    static SIMD: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *SIMD.get_or_init(|| {
        if let Some(v4) = pulp::x86::V4::try_new() {
            Simd::V4(v4)
        } else if let Some(v3) = pulp::x86::V3::try_new() {
            Simd::V3(v3)
        } else {
            Simd::None
        }
    })
}

/// [`dot`] over the instruction set's vectors: four fused multiply-add accumulators.
/// pulp compiles it with the instruction set's features enabled, without `unsafe` here.
struct DotOp<'a>(&'a [f32], &'a [f32]);

impl pulp::WithSimd for DotOp<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> f32 {
        let n = self.0.len().min(self.1.len());
        let (a, a_tail) = S::as_simd_f32s(&self.0[..n]);
        let (b, b_tail) = S::as_simd_f32s(&self.1[..n]);
        let zero = simd.splat_f32s(0.0);
        let mut acc = [zero; 4];
        let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
        let (a_rest, b_rest) = (a4.remainder(), b4.remainder());
        for (x, y) in a4.zip(b4) {
            for k in 0..4 {
                acc[k] = simd.mul_add_e_f32s(x[k], y[k], acc[k]);
            }
        }
        for (x, y) in a_rest.iter().zip(b_rest) {
            acc[0] = simd.mul_add_e_f32s(*x, *y, acc[0]);
        }
        let v = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
        let mut sum = simd.reduce_sum_f32s(v);
        for (x, y) in a_tail.iter().zip(b_tail) {
            sum += x * y;
        }
        sum
    }
}

/// [`dot`] in portable code that LLVM vectorises with the baseline target's registers.
#[inline]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [[0.0f32; 4]; 4];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = madd4(*acc, &x[4 * k..4 * k + 4], &y[4 * k..4 * k + 4]);
        }
    }
    // Without this barrier LLVM's SLP vectoriser lets the final horizontal sum shape the
    // loop and splits every accumulator into two-lane halves (two `shufps` per `mulps`).
    let acc = std::hint::black_box(acc);
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    let v = add4(add4(acc[0], acc[1]), add4(acc[2], acc[3]));
    ((v[0] + v[1]) + (v[2] + v[3])) + tail
}

/// `acc + x * y`, lane by lane (one SSE2 `mulps` + `addps`).
#[inline(always)]
fn madd4(acc: [f32; 4], x: &[f32], y: &[f32]) -> [f32; 4] {
    let (x, y) = (&x[..4], &y[..4]);
    [
        acc[0] + x[0] * y[0],
        acc[1] + x[1] * y[1],
        acc[2] + x[2] * y[2],
        acc[3] + x[3] * y[3],
    ]
}

/// Lane-wise sum of two 4-lane accumulators.
#[inline(always)]
fn add4(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]
}

/// Packs a distance and an id into one integer that orders by distance, then id.
#[inline(always)]
fn pack(dist: f32, id: u32) -> u64 {
    let bits = dist.to_bits();
    // Order-preserving map of f32 onto u32: flip all bits of negatives, the sign of
    // positives.
    let ord = if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    (u64::from(ord) << 32) | u64::from(id)
}

/// The distance half of [`pack`].
#[inline(always)]
fn unpack_dist(p: u64) -> f32 {
    let ord = (p >> 32) as u32;
    f32::from_bits(if ord & 0x8000_0000 != 0 {
        ord & 0x7fff_ffff
    } else {
        !ord
    })
}

/// The ids of `scored` (`(id, approx, bound)` with `|dot − approx| ≤ bound`) whose upper
/// bound reaches the `k`-th best lower bound: every one of the true top `k` is among them.
/// Empty when `k` or `scored` is.
fn within_reach(scored: Vec<(u32, f32, f32)>, k: usize) -> Vec<u32> {
    let Some(kth) = k.min(scored.len()).checked_sub(1) else {
        return Vec::new();
    };
    let mut lows: Vec<f32> = scored.iter().map(|(_, a, b)| a - b).collect();
    let floor = *lows.select_nth_unstable_by(kth, |x, y| y.total_cmp(x)).1;
    scored
        .into_iter()
        .filter(|(_, a, b)| a + b >= floor)
        .map(|(id, _, _)| id)
        .collect()
}

/// What a graph walk measures distances in.
trait Space {
    /// Distance of the query to node `id`: smaller is closer.
    fn dist(&self, id: u32) -> f32;
    /// Reads the first byte of `id`'s row, to start its cache miss early.
    fn first_bits(&self, id: u32) -> u32;
}

/// Exact `f32` distances: `-dot`.
struct Exact<'a> {
    h: &'a Hnsw,
    q: &'a [f32],
}

impl Space for Exact<'_> {
    #[inline(always)]
    fn dist(&self, id: u32) -> f32 {
        self.h.dist(self.q, id)
    }

    #[inline(always)]
    fn first_bits(&self, id: u32) -> u32 {
        let i = id as usize * self.h.dim;
        self.h.vectors.get(i).map_or(0, |x| x.to_bits())
    }
}

/// Approximate distances from the int8 codes: `-q̂·v̂` (see [`super::quant`]).
struct Coded<'a> {
    codes: &'a Codes,
    q: QueryCode,
}

impl Space for Coded<'_> {
    #[inline(always)]
    fn dist(&self, id: u32) -> f32 {
        -self.codes.score(&self.q, id as usize)
    }

    #[inline(always)]
    fn first_bits(&self, id: u32) -> u32 {
        self.codes.first(id as usize) as u32
    }
}

/// Touches the first cache line of each of `ids`' rows before any distance is computed,
/// so their cache misses overlap: a safe stand-in for hnswlib's `_mm_prefetch` (the
/// hardware prefetcher follows on with the rest).
#[inline(always)]
fn touch(space: &impl Space, ids: &[u32]) {
    let mut bits = 0u32;
    for &id in ids {
        bits ^= space.first_bits(id);
    }
    std::hint::black_box(bits);
}

/// The layer of a new node: `floor(-ln(u) / ln(m))` with `u` in (0, 1) from a hash of
/// `(key, seed)`, capped at [`MAX_LEVEL`].
fn draw_level(key: u64, seed: u64, m: usize) -> usize {
    let h = splitmix64(key ^ splitmix64(seed));
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let level = -u.ln() / (m as f64).ln();
    (level as usize).min(MAX_LEVEL)
}

/// SplitMix64 finaliser: a fast, well-mixed 64-bit hash.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Reusable visited set: a node is visited when its mark equals the current generation.
#[derive(Default)]
struct Visited {
    marks: Vec<u16>,
    generation: u16,
}

impl Visited {
    /// Starts a new query over `n` nodes: bumps the generation (clearing on wrap-around).
    fn next_query(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.fill(0);
            self.generation = 1;
        }
    }

    /// Marks `id` visited; true if it was not already.
    #[inline(always)]
    fn insert(&mut self, id: u32) -> bool {
        let mark = &mut self.marks[id as usize];
        let fresh = *mark != self.generation;
        *mark = self.generation;
        fresh
    }
}

thread_local! {
    /// Visited sets for this thread. A pool rather than one cell so a search filter that
    /// itself searches does not clash with the search that called it.
    static VISITED: RefCell<Vec<Visited>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a visited set for `n` nodes borrowed from this thread's pool.
fn with_visited<R>(n: usize, f: impl FnOnce(&mut Visited) -> R) -> R {
    let mut visited = VISITED
        .with(|pool| pool.borrow_mut().pop())
        .unwrap_or_default();
    if visited.marks.capacity() < n {
        visited
            .marks
            .reserve(n.next_power_of_two() - visited.marks.len());
    }
    let out = f(&mut visited);
    VISITED.with(|pool| pool.borrow_mut().push(visited));
    out
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("hnsw: {message}"))
}

/// The checksum of the serialised form: FNV-1a 64 over 64-bit little-endian words (the
/// tail zero-padded, then the byte length mixed in), with an xor-shift after each multiply
/// so high bits feed back into low ones. Every step is a bijection of the state, so any
/// single corrupted word is always detected. Eight bytes per step keeps it at memory speed.
struct Checksum {
    state: u64,
    pending: [u8; 8],
    n_pending: usize,
    total: u64,
}

impl Checksum {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Checksum {
            state: Self::OFFSET,
            pending: [0; 8],
            n_pending: 0,
            total: 0,
        }
    }

    #[inline(always)]
    fn word(state: u64, w: u64) -> u64 {
        let s = (state ^ w).wrapping_mul(Self::PRIME);
        s ^ (s >> 29)
    }

    fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.n_pending > 0 {
            let take = (8 - self.n_pending).min(data.len());
            self.pending[self.n_pending..self.n_pending + take].copy_from_slice(&data[..take]);
            self.n_pending += take;
            data = &data[take..];
            if self.n_pending < 8 {
                return;
            }
            self.state = Self::word(self.state, u64::from_le_bytes(self.pending));
            self.n_pending = 0;
        }
        let words = data.chunks_exact(8);
        let rest = words.remainder();
        let mut s = self.state;
        for w in words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            s = Self::word(s, u64::from_le_bytes(b));
        }
        self.state = s;
        self.pending[..rest.len()].copy_from_slice(rest);
        self.n_pending = rest.len();
    }

    fn finish(&self) -> u64 {
        let mut s = self.state;
        if self.n_pending > 0 {
            let mut b = [0u8; 8];
            b[..self.n_pending].copy_from_slice(&self.pending[..self.n_pending]);
            s = Self::word(s, u64::from_le_bytes(b));
        }
        Self::word(s, self.total)
    }
}

/// Bytes per bulk conversion buffer when reading and writing arrays.
const CHUNK: usize = 1 << 16;

/// A writer that checksums what passes through and writes arrays in large blocks.
struct HashWrite<'a, W: Write> {
    w: &'a mut W,
    sum: Checksum,
}

impl<W: Write> HashWrite<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sum.update(bytes);
        self.w.write_all(bytes)
    }

    fn put_words<T: Copy, const N: usize>(
        &mut self,
        items: &[T],
        to_bytes: impl Fn(T) -> [u8; N],
    ) -> io::Result<()> {
        let mut buf = Vec::with_capacity(CHUNK);
        for chunk in items.chunks(CHUNK / N) {
            buf.clear();
            buf.extend(chunk.iter().flat_map(|&x| to_bytes(x)));
            self.put(&buf)?;
        }
        Ok(())
    }

    fn put_u64s(&mut self, items: &[u64]) -> io::Result<()> {
        self.put_words(items, u64::to_le_bytes)
    }

    fn put_u32s(&mut self, items: &[u32]) -> io::Result<()> {
        self.put_words(items, u32::to_le_bytes)
    }

    fn put_f32s(&mut self, items: &[f32]) -> io::Result<()> {
        self.put_words(items, f32::to_le_bytes)
    }
}

/// A reader that checksums what it reads and reads arrays in bounded blocks, so a corrupt
/// length fails with `UnexpectedEof` instead of allocating it up front.
struct HashRead<'a, R: Read> {
    r: &'a mut R,
    sum: Checksum,
}

impl<R: Read> HashRead<'_, R> {
    fn get(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.r.read_exact(buf)?;
        self.sum.update(buf);
        Ok(())
    }

    fn get_words<T, const N: usize>(
        &mut self,
        count: usize,
        from_bytes: impl Fn([u8; N]) -> T,
    ) -> io::Result<Vec<T>> {
        let mut out = Vec::with_capacity(count.min(CHUNK));
        let mut buf = vec![0u8; CHUNK];
        let mut left = count;
        while left > 0 {
            let take = left.min(CHUNK / N);
            let bytes = &mut buf[..take * N];
            self.get(bytes)?;
            out.extend(bytes.chunks_exact(N).map(|c| {
                let mut b = [0u8; N];
                b.copy_from_slice(c);
                from_bytes(b)
            }));
            left -= take;
        }
        Ok(out)
    }

    fn get_bytes(&mut self, count: usize) -> io::Result<Vec<u8>> {
        self.get_words(count, |[b]: [u8; 1]| b)
    }

    fn get_u64s(&mut self, count: usize) -> io::Result<Vec<u64>> {
        self.get_words(count, u64::from_le_bytes)
    }

    fn get_u32s(&mut self, count: usize) -> io::Result<Vec<u32>> {
        self.get_words(count, u32::from_le_bytes)
    }

    fn get_f32s(&mut self, count: usize) -> io::Result<Vec<f32>> {
        self.get_words(count, f32::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// Deterministic gaussian generator (SplitMix64 + Box-Muller).
    struct Rng(u64);

    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(1);
            ((splitmix64(self.0) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn gauss(&mut self) -> f32 {
            let (u, v) = (self.uniform(), self.uniform());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        }
    }

    fn normalise(v: &mut [f32]) {
        let n = dot(v, v).sqrt();
        v.iter_mut().for_each(|x| *x /= n);
    }

    /// `n` unit vectors in `dim` dimensions around 40 random centres, plus queries drawn
    /// the same way.
    fn clustered(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = Rng(seed);
        let centres: Vec<Vec<f32>> = (0..40)
            .map(|_| (0..dim).map(|_| rng.gauss()).collect())
            .collect();
        (0..n)
            .map(|i| {
                let c = &centres[(splitmix64(i as u64 ^ seed) % 40) as usize];
                let mut v: Vec<f32> = c.iter().map(|&x| x + 0.5 * rng.gauss()).collect();
                normalise(&mut v);
                v
            })
            .collect()
    }

    const DIM: usize = 32;
    const N: usize = 2000;

    fn test_params() -> Params {
        Params {
            m: 10,
            ef_construction: 40,
            ..Params::default()
        }
    }

    fn build(points: &[Vec<f32>]) -> Hnsw {
        let mut h = Hnsw::new(DIM, test_params());
        for (i, p) in points.iter().enumerate() {
            assert_eq!(h.insert(1000 + i as u64, p), i as u32);
        }
        h
    }

    /// Points, queries, and the index over the points.
    type Fixture = (Vec<Vec<f32>>, Vec<Vec<f32>>, Hnsw);

    /// One shared build: the tests run unoptimised.
    fn shared() -> &'static Fixture {
        static S: OnceLock<Fixture> = OnceLock::new();
        S.get_or_init(|| {
            let points = clustered(N, DIM, 7);
            let queries = clustered(100, DIM, 8);
            let h = build(&points);
            (points, queries, h)
        })
    }

    fn recall(h: &Hnsw, queries: &[Vec<f32>], ef: usize) -> f64 {
        let mut hits = 0;
        for q in queries {
            let truth: Vec<u32> = h.exact(q, 10, None).iter().map(|r| r.0).collect();
            let got = h.search(q, 10, ef, None);
            assert_eq!(got.len(), 10);
            hits += got.iter().filter(|r| truth.contains(&r.0)).count();
        }
        hits as f64 / (10 * queries.len()) as f64
    }

    #[test]
    fn dot_matches_naive() {
        for n in [0, 1, 15, 16, 17, 64, 100, 384] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4, "n={n}");
        }
    }

    #[test]
    fn pack_orders_by_distance_then_id() {
        let ds = [-2.0f32, -1.0, -0.5, -0.0, 0.0, 1e-30, 0.5, 1.0, 2.0];
        for w in ds.windows(2) {
            assert!(pack(w[0], 9) <= pack(w[1], 0) || w[0] == w[1], "{w:?}");
            assert_eq!(unpack_dist(pack(w[0], 3)), w[0]);
        }
        assert!(pack(0.5, 1) < pack(0.5, 2));
    }

    #[test]
    fn recall_at_10_is_high() {
        let (_, queries, h) = shared();
        let r = recall(h, queries, 64);
        assert!(r >= 0.95, "recall@10 = {r}");
        // Results are sorted best first and the scores are dot products.
        let q = &queries[0];
        let got = h.search(q, 10, 64, None);
        assert!(got.windows(2).all(|w| w[0].1 >= w[1].1));
        for &(id, s) in &got {
            assert_eq!(s, dot(q, h.vector(id)));
        }
    }

    /// The search walks the int8 codes and rescores in f32 only the candidates whose
    /// error bound lets them reach the top `k`: that must give exactly what an f32 scan of
    /// the same candidates gives, near-ties (points a hair apart) included.
    #[test]
    fn rescore_equals_an_exact_scan_of_the_candidates() {
        let mut rng = Rng(5);
        let base = clustered(100, DIM, 9);
        let mut h = Hnsw::new(DIM, test_params());
        for (i, p) in base.iter().enumerate() {
            for copy in 0..3u64 {
                let mut v: Vec<f32> = p.iter().map(|x| x + 1e-4 * rng.gauss()).collect();
                normalise(&mut v);
                h.insert(10 * i as u64 + copy, &v);
            }
        }
        for q in clustered(30, DIM, 10) {
            let qc = Codes::query(&q);
            let mut ids: Vec<u32> = (0..h.len() as u32)
                .filter(|_| rng.uniform() < 0.5)
                .collect();
            ids.dedup();
            let mut found: Vec<u64> = ids
                .iter()
                .map(|&id| pack(-h.codes.score(&qc, id as usize), id))
                .collect();
            found.sort_unstable();
            for k in [1, 5, 10, 40, 1000] {
                assert_eq!(
                    h.rescore(&q, &qc, k, &found),
                    h.exact(&q, k, Some(&ids)),
                    "k {k}"
                );
            }
        }
    }

    /// Batches of 100 (a BatchCreateMemoryRecords), searched on 1, 2 or 3 threads: the
    /// same graph byte for byte whatever the threads, and as good as one at a time.
    #[test]
    fn batch_inserts_are_deterministic_and_keep_recall() {
        let (points, queries, _) = shared();
        let batched = |threads: usize| {
            let mut h = Hnsw::new(DIM, test_params());
            for (b, chunk) in points.chunks(100).enumerate() {
                let items: Vec<(u64, &[f32])> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (1000 + (b * 100 + i) as u64, p.as_slice()))
                    .collect();
                let ids = h.insert_batch(&items, threads);
                let want: Vec<u32> = (b * 100..b * 100 + chunk.len()).map(|i| i as u32).collect();
                assert_eq!(ids, want);
            }
            h
        };
        let one = batched(1);
        assert!(
            one == batched(2) && one == batched(3),
            "threads changed the graph"
        );
        let r = recall(&one, queries, 64);
        assert!(r >= 0.95, "recall@10 = {r}");
        // A first batch into an empty index, and a batch smaller than the parallel cut-off.
        let mut h = Hnsw::new(DIM, test_params());
        let items: Vec<(u64, &[f32])> = points[..5].iter().map(|p| (7, p.as_slice())).collect();
        assert_eq!(h.insert_batch(&items, 2), vec![0, 1, 2, 3, 4]);
        assert_eq!(h.search(&points[3], 1, 16, None)[0].0, 3);
    }

    /// The first `n` of `points`, inserted one at a time under keys 0, 1, …
    fn first(points: &[Vec<f32>], n: usize) -> Hnsw {
        let mut h = Hnsw::new(DIM, test_params());
        for (i, p) in points[..n].iter().enumerate() {
            h.insert(i as u64, p);
        }
        h
    }

    /// The indexer plans a batch beside searches and applies it later, deleting the
    /// points the batch replaces in between: deletes do not change what the plan's
    /// searches would find, so the graph is the one `insert_batch` builds after them.
    #[test]
    fn a_plan_stays_valid_across_deletes() {
        let points = clustered(340, DIM, 5);
        let items: Vec<(u64, &[f32])> = points[300..]
            .iter()
            .enumerate()
            .map(|(i, p)| (300 + i as u64, p.as_slice()))
            .collect();
        let mut planned = first(&points, 300);
        let plan = planned.plan_batch(&items, 2);
        (0..300).step_by(7).for_each(|id| planned.delete(id));
        assert_eq!(
            planned.apply_plan(&items, plan),
            (300..340).collect::<Vec<u32>>()
        );
        let mut direct = first(&points, 300);
        (0..300).step_by(7).for_each(|id| direct.delete(id));
        direct.insert_batch(&items, 1);
        assert!(
            planned == direct,
            "a plan made before the deletes built another graph"
        );
    }

    /// An insertion between planning and applying would make the plan's neighbours stale.
    #[test]
    #[should_panic(expected = "the graph changed since the plan")]
    fn a_plan_is_refused_after_an_insert() {
        let points = clustered(40, DIM, 6);
        let mut h = first(&points, 30);
        let items: Vec<(u64, &[f32])> = vec![(100, points[31].as_slice())];
        let plan = h.plan_batch(&items, 1);
        h.insert(101, &points[32]);
        h.apply_plan(&items, plan);
    }

    #[test]
    fn builds_are_deterministic() {
        let points = clustered(300, DIM, 11);
        let (a, b) = (build(&points), build(&points));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.write_to(&mut x).unwrap();
        b.write_to(&mut y).unwrap();
        assert_eq!(x, y);
        let q = &points[5];
        assert_eq!(a.search(q, 10, 32, None), b.search(q, 10, 32, None));
        // A different seed gives a different graph.
        let mut c = Hnsw::new(
            DIM,
            Params {
                seed: 99,
                ..test_params()
            },
        );
        for (i, p) in points.iter().enumerate() {
            c.insert(1000 + i as u64, p);
        }
        let mut z = Vec::new();
        c.write_to(&mut z).unwrap();
        assert_ne!(x, z);
    }

    #[test]
    fn deleted_points_are_never_returned() {
        let (points, queries, h) = shared();
        let mut h = h.clone();
        // Delete every other point, including each query's true nearest neighbours.
        for id in (0..N as u32).step_by(2) {
            h.delete(id);
        }
        h.delete(0); // twice is a no-op
        assert_eq!(h.live(), N / 2);
        assert_eq!(h.len(), N);
        for q in queries.iter().chain(points.iter().take(20)) {
            let got = h.search(q, 10, 64, None);
            assert_eq!(got.len(), 10);
            assert!(got.iter().all(|&(id, _)| id % 2 == 1 && !h.is_deleted(id)));
            assert!(h.exact(q, 10, None).iter().all(|&(id, _)| id % 2 == 1));
        }
        // Everything deleted: nothing comes back.
        for id in 0..N as u32 {
            h.delete(id);
        }
        assert!(h.search(&queries[0], 10, 64, None).is_empty());
        assert!(h.exact(&queries[0], 10, None).is_empty());
    }

    #[test]
    fn filter_is_respected() {
        let (_, queries, h) = shared();
        let only = |id: u32| id % 7 == 3;
        let mut hits = 0;
        for q in queries {
            let got = h.search(q, 10, 64, Some(&only));
            assert_eq!(got.len(), 10);
            assert!(got.iter().all(|&(id, _)| only(id)));
            let candidates: Vec<u32> = (0..N as u32).filter(|&id| only(id)).collect();
            let truth = h.exact(q, 10, Some(&candidates));
            assert!(truth.iter().all(|&(id, _)| only(id)));
            hits += got.iter().filter(|r| truth.contains(r)).count();
        }
        let r = hits as f64 / (10 * queries.len()) as f64;
        assert!(r >= 0.9, "filtered recall@10 = {r}");
        // A filter that rejects everything returns nothing.
        let none = |_: u32| false;
        assert!(h.search(&queries[0], 10, 64, Some(&none)).is_empty());
    }

    #[test]
    fn exact_over_candidates() {
        let (points, _, h) = shared();
        let got = h.exact(&points[10], 3, Some(&[10, 10, 11, 12, 99_999]));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, 10);
        assert!(got.iter().all(|&(id, _)| (10..=12).contains(&id)));
    }

    #[test]
    fn write_read_round_trip_and_corruption() {
        let (_, queries, h) = shared();
        let mut h = h.clone();
        h.delete(17);
        let mut bytes = Vec::new();
        h.write_to(&mut bytes).unwrap();
        let back = Hnsw::read_from(&mut bytes.as_slice()).unwrap();
        assert_eq!(back, h);
        assert_eq!(
            back.search(&queries[1], 10, 50, None),
            h.search(&queries[1], 10, 50, None)
        );
        // Reads exactly what was written, so it can sit inside a larger stream.
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"trailer");
        let mut cursor = longer.as_slice();
        Hnsw::read_from(&mut cursor).unwrap();
        assert_eq!(cursor, b"trailer");

        // Flip single bytes across the file: each is rejected with a clear error.
        for pos in [
            0,
            9,
            20,
            100,
            bytes.len() / 2,
            bytes.len() - 20,
            bytes.len() - 1,
        ] {
            let mut bad = bytes.clone();
            bad[pos] ^= 0x40;
            let err = Hnsw::read_from(&mut bad.as_slice()).unwrap_err();
            assert!(
                matches!(
                    err.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ),
                "pos {pos}: {err}"
            );
            assert!(err.to_string().contains("hnsw") || pos < 100, "{err}");
        }
        let mid = {
            let mut bad = bytes.clone();
            let p = bytes.len() / 2;
            bad[p] ^= 1;
            Hnsw::read_from(&mut bad.as_slice()).unwrap_err()
        };
        assert!(mid.to_string().contains("checksum"), "{mid}");
        // Truncation is an error too.
        let err = Hnsw::read_from(&mut &bytes[..bytes.len() - 3]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // An empty index round-trips.
        let empty = Hnsw::new(8, Params::default());
        let mut e = Vec::new();
        empty.write_to(&mut e).unwrap();
        assert_eq!(Hnsw::read_from(&mut e.as_slice()).unwrap(), empty);
    }

    #[test]
    fn compacted_drops_tombstones() {
        let points = clustered(600, DIM, 21);
        let mut h = build(&points);
        for id in (0..600).filter(|id| id % 3 == 0) {
            h.delete(id);
        }
        let c = h.compacted();
        assert_eq!(c.len(), 400);
        assert_eq!(c.live(), 400);
        // Keys keep their original order; ids are dense again.
        let keys: Vec<u64> = (0..400).map(|id| c.key(id)).collect();
        let want: Vec<u64> = (0..600u64)
            .filter(|i| i % 3 != 0)
            .map(|i| 1000 + i)
            .collect();
        assert_eq!(keys, want);
        let mut hits = 0;
        for q in points.iter().step_by(10) {
            let truth: Vec<u64> = h.exact(q, 10, None).iter().map(|r| h.key(r.0)).collect();
            let got = c.search(q, 10, 64, None);
            assert_eq!(got.len(), 10);
            hits += got.iter().filter(|r| truth.contains(&c.key(r.0))).count();
        }
        assert!(hits as f64 / 600.0 >= 0.95, "hits {hits}/600");
    }

    #[test]
    fn empty_and_tiny() {
        let mut h = Hnsw::new(4, Params::default());
        assert!(h.is_empty());
        assert!(h.search(&[1.0, 0.0, 0.0, 0.0], 5, 10, None).is_empty());
        h.insert(42, &[1.0, 0.0, 0.0, 0.0]);
        h.insert(43, &[0.0, 1.0, 0.0, 0.0]);
        let got = h.search(&[0.6, 0.8, 0.0, 0.0], 5, 1, None);
        assert_eq!(got, vec![(1, 0.8), (0, 0.6)]);
        assert_eq!(h.key(1), 43);
        assert_eq!(h.dim(), 4);
    }

    #[test]
    fn dot_paths_agree_with_f64_at_every_length() {
        let mut rng = Rng(3);
        for n in (0..=70).chain([383, 384, 385, 1536]) {
            let a: Vec<f32> = (0..n).map(|_| rng.gauss()).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.gauss()).collect();
            let want: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let scale: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from((x * y).abs()))
                .sum();
            let tol = 1e-5 * scale.max(1.0);
            for (what, got) in [("dot", dot(&a, &b)), ("portable", dot_portable(&a, &b))] {
                assert!(
                    (f64::from(got) - want).abs() <= tol,
                    "{what} at n = {n}: {got} vs {want}"
                );
            }
            // Unequal lengths use the shorter one.
            if n > 0 {
                assert_eq!(dot(&a, &b[..n - 1]), dot(&a[..n - 1], &b[..n - 1]));
            }
        }
    }
}
