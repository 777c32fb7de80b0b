//! The search indexes over long-term records: a vector index ([`hnsw`]) and a full-text
//! index ([`bm25`]), both projections of the log with checkpoints of their own, and
//! hybrid retrieval over them.
//!
//! ```text
//!            log ──▶ indexer thread (follows the writer's commits)
//!                         │ RecordsCreated / Updated / Deleted, MemoryDeleted
//!            ┌────────────┴─────────────┐
//!            ▼                          ▼
//!   per memory: HNSW + docs        tantivy (one index, memory = group)
//!   snapshot files + MANIFEST      + in-memory delta since its last commit
//!   (checkpoint G)                 commit payload = checkpoint (T)
//! ```
//!
//! On open both are loaded from disk and caught up from `min(G, T) + 1`: each entry is
//! applied to the HNSW side if its LSN is after G and to the BM25 side if after T, so a
//! restart never rebuilds what was persisted. Deletes are tombstones in the HNSW graph
//! (traversed, never returned) until a memory's tombstones pass a quarter of its points,
//! then that memory's graph is rebuilt from its live points (compaction).
//!
//! Retrieval (see [`SearchIndex::search`]): filters by namespace, strategy and metadata
//! are applied *inside* both searches. When a filter admits few records, the candidates
//! are scored exactly instead: a filtered HNSW search over a tiny subset loses recall,
//! brute force over it does not (qdrant's rule). "Few" is [`Tuning::exact_threshold`] or,
//! in a big memory, `sqrt(ef × 2M × live)`: a filtered beam search that keeps `ef` admitted
//! results visits about `ef / s` nodes of `2M` neighbours each at selectivity `s`, while
//! brute force costs `s × live` dot products, and the two meet there (≈ 20k candidates at
//! 100k records). A namespace's candidates are scored from contiguous int8 codes, several
//! times cheaper than a graph visit, so its crossover is `sqrt(CODE_SCAN_ADVANTAGE × …)`
//! (≈ 35k at 100k records, 110k at 1M). At 100k records a 10% namespace took about 5 ms of a query in the
//! filtered graph search, about 2.2 ms exactly over f32 rows, and takes 0.5–0.6 ms over the
//! namespace's int8 codes (see `NsPoints` and the `quant` module; in-process timings on the
//! `memlog bench retrieve` store).
//! The two ranked lists are fused by weighted reciprocal rank fusion; the score is
//! normalised into [0, 1]. Hybrid queries then add neighbour context by default: each hit
//! also scores a share of the best fused score of the records just before and after it
//! in its first namespace's time order (per-point links kept as records come and go), and
//! those neighbours become candidates. Point-in-time queries (`asOf`) score the versions
//! that were live then exactly, from the log, with the same context over their timeline.

pub mod bm25;
pub mod hnsw;
mod quant;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::log::{Body, Entry};
use crate::record::{Record, RecordFilter, RecordId, Version};
use crate::store::Backend;
use crate::types::{Lsn, MemoryId};
use crate::{Error, Result};

use self::bm25::{Bm25, NsScope};
use self::hnsw::Hnsw;

/// Knobs of the indexes and of retrieval.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Tuning {
    /// HNSW graph degree.
    pub m: usize,
    pub ef_construction: usize,
    /// HNSW search breadth (raised to the number of wanted results when lower).
    pub ef_search: usize,
    /// A filter admitting at most this many records is answered by exact search (more in
    /// big memories; see the module documentation).
    pub exact_threshold: usize,
    /// Each list contributes this many candidates per wanted result to the fusion.
    pub candidates_per_result: usize,
    /// The `k` of reciprocal rank fusion: 1 / (k + rank).
    pub rrf_k: f32,
    pub vector_weight: f32,
    pub bm25_weight: f32,
    /// Default [`Query::neighbor_weight`] of hybrid retrieval (0: off). Vector-only and
    /// BM25-only queries get context only when they ask for it.
    pub neighbor_weight: f32,
    /// Threads for the graph searches of a batch of inserted records (one log entry's
    /// records; see `Hnsw::insert_batch`). The graph is the same for any number. Default:
    /// the machine's cores.
    pub insert_threads: usize,
    /// Persist the HNSW snapshots after this many applied record entries …
    pub persist_every_entries: u64,
    /// … or this long after the first unpersisted change.
    pub persist_every_secs: u64,
    /// BM25 commits this long after its first uncommitted change … Until then the changes
    /// are searched in its in-memory delta (see `bm25`), which has no pruning: every
    /// posting of a query term in it is scored.
    pub bm25_commit_millis: u64,
    /// … or once this many documents were added since its last commit.
    pub bm25_commit_docs: u64,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            exact_threshold: 2_048,
            // Measured (`memlog bench locomo --experiments`, RRF k 5, 1 : 1.5): 20 candidates
            // per list for top 10 give LoCoMo hit@5 0.658, 40 give 0.659, 10 give 0.649; at
            // 100k records 2 instead of 4 took 5–15 % off a hybrid query's p50 (BM25's
            // block-max WAND prunes sooner with a smaller k).
            candidates_per_result: 2,
            // Measured on LoCoMo (`memlog bench locomo`): k = 60, 1:1 gave hybrid hit@5
            // 0.586; k = 5 with BM25 at 1.5 gave 0.653 (first ranks matter more, and the
            // lexical list is the stronger one for conversational questions).
            rrf_k: 5.0,
            vector_weight: 1.0,
            bm25_weight: 1.5,
            // Measured on LoCoMo (`memlog bench locomo`): hybrid hit@5 0.661 without
            // context, 0.711 at 0.5 (the evidence is often the turn next to the one that
            // matches the words). Over facts an LLM extracted from one conversation
            // (`--extracted`, Qwen2.5 1.5B, 150 questions) it changed hit@5 from 0.040 to
            // 0.047 and hit@1 from 0.027 to 0.020: one or two questions, no measurable harm.
            neighbor_weight: 0.5,
            insert_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            persist_every_entries: 5_000,
            persist_every_secs: 30,
            // A commit per indexer step (20 a second under a steady writer) is what the
            // delta avoids; one a second keeps the delta small. Committing every 30 s or
            // 20k documents, one of two runs measured a retrieval p50 of 1.53 ms at 100k
            // records (0.85 in the other, 0.76–0.80 without the delta).
            bm25_commit_millis: 1_000,
            bm25_commit_docs: 5_000,
        }
    }
}

/// Which signals rank the records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Reciprocal rank fusion of both.
    #[default]
    Hybrid,
    Vector,
    Bm25,
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        match s.to_ascii_lowercase().as_str() {
            "hybrid" => Ok(Mode::Hybrid),
            "vector" | "semantic" => Ok(Mode::Vector),
            "bm25" | "keyword" | "text" => Ok(Mode::Bm25),
            other => Err(Error::invalid(format!(
                "unknown retrieval mode '{other}' (expected hybrid, vector or bm25)"
            ))),
        }
    }
}

/// A retrieval request. The caller embeds the query text (the engine never runs the
/// model on a query path it does not own).
#[derive(Clone, Debug)]
pub struct Query<'a> {
    pub memory_id: &'a MemoryId,
    pub text: &'a str,
    /// The embedding of `text`; required unless `mode` is BM25.
    pub vector: Option<&'a [f32]>,
    pub top_k: usize,
    pub filter: &'a RecordFilter,
    pub mode: Mode,
    /// Answer with the versions live right after this LSN.
    pub as_of: Option<Lsn>,
    /// Overrides of the fusion weights (vector, bm25).
    pub weights: Option<(f32, f32)>,
    /// Context: each record also gets this share of the best fused score of its
    /// neighbours (the records just before and after it in its first namespace's time
    /// order), and those neighbours become candidates. `None`: the tuning's default in
    /// hybrid mode, none in the single-signal modes. Point-in-time queries use the
    /// timeline of the versions live then.
    pub neighbor_weight: Option<f32>,
}

/// One result.
#[derive(Clone, Debug)]
pub struct Hit {
    /// The version (without its embedding).
    pub record: Arc<Record>,
    /// In [0, 1]. Without neighbour context, 1 = first in every list that took part; with
    /// it, `(own + w × neighbor) / (1 + w)`.
    pub score: f32,
    /// Rank (1-based) and cosine similarity in the vector list, if it was there.
    pub vector: Option<(usize, f32)>,
    /// Rank and BM25 score in the full-text list, if it was there.
    pub bm25: Option<(usize, f32)>,
    /// With neighbour context: the best fused score among its neighbours (0 if none was a
    /// hit). A record with neither `vector` nor `bm25` is here only as a neighbour.
    pub neighbor: Option<f32>,
}

impl Hit {
    /// `record` with a score of 0 and no signal yet.
    fn bare(record: Arc<Record>) -> Hit {
        Hit {
            record,
            score: 0.0,
            vector: None,
            bm25: None,
            neighbor: None,
        }
    }
}

/// Best score first, ties to the lower record id.
fn sort_best_first(hits: &mut [Hit]) {
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.record.id.cmp(&b.record.id))
    });
}

/// Counts for `/health` and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexStats {
    /// Everything up to this LSN is searchable.
    pub indexed_lsn: u64,
    pub hnsw_checkpoint: u64,
    pub bm25_checkpoint: u64,
    pub memories: usize,
    pub live_records: usize,
    pub tombstones: usize,
    /// Entries applied since open (catch-up included): a restart that resumed from the
    /// checkpoints applies only what came after them.
    pub applied_since_open: u64,
    pub compactions: u64,
}

/// A ranked list of one signal: records with their raw scores, best first.
type Ranked = Vec<(Arc<Record>, f32)>;

/// A document: one live record version in a memory's index.
#[derive(Clone, Debug)]
struct Doc {
    record: Arc<Record>,
}

/// One memory's vector index and the documents behind its points.
struct MemIndex {
    hnsw: Hnsw,
    /// By HNSW point id; `None` once deleted.
    docs: Vec<Option<Doc>>,
    by_record: HashMap<RecordId, u32>,
    /// BM25 key (hash of the record id) → live point.
    key_map: HashMap<u64, u32, KeyHash>,
    /// By namespace id: its points, for candidate sets and the namespace terms of a BM25
    /// query.
    ns_points: Vec<NsPoints>,
    /// (first namespace's id, timestamp, point) of live points: each record's neighbours
    /// in its namespace's time order (a conversation's turns, a session's facts).
    timeline: BTreeSet<(u32, u64, u32)>,
    /// By point: its neighbours in the timeline (previous, next; [`NO_LINK`] for none),
    /// kept as points come and go, so that a query reads them instead of walking the
    /// tree (two tree walks per hit were cache misses at 100k records).
    links: Vec<[u32; 2]>,
    tombstones: usize,
    /// Namespace → small id (never reused until compaction), in name order for prefix
    /// filters, so that a namespace filter inside the HNSW search tests a bit instead of
    /// comparing strings at every visited point.
    ns_ids: std::collections::BTreeMap<String, u32>,
    /// By point: the id of its first namespace, [`NO_NS`] if none (or deleted), with
    /// [`MORE_NS`] set when it has others (kept in `point_ns_more`).
    point_ns: Vec<u32>,
    point_ns_more: HashMap<u32, Vec<u32>>,
}

const NO_NS: u32 = u32::MAX >> 1;
/// No neighbour in [`MemIndex::links`].
const NO_LINK: u32 = u32::MAX;
const MORE_NS: u32 = 1 << 31;

/// The points of one namespace, ascending, with their vectors' int8 codes in the same
/// order (see [`quant`]): a namespace-filtered exact search reads one contiguous block of
/// codes in one sequential pass. (Before: a `BTreeSet` walk, then the points' `f32` rows,
/// scattered one per page; at 100k records and a 10% namespace that was 2.2 ms of vector
/// search, against 0.3 ms unfiltered.) Removal only counts: removed points stay (the
/// caller skips points without a document) until they are half of the list, which is
/// then swept.
struct NsPoints {
    points: Vec<u32>,
    codes: quant::Codes,
    live: usize,
}

impl NsPoints {
    fn new(dim: usize) -> NsPoints {
        NsPoints {
            points: Vec::new(),
            codes: quant::Codes::new(dim),
            live: 0,
        }
    }

    /// Adds point `p`, copying its code from the graph's (`graph`, one row per point).
    fn add(&mut self, p: u32, graph: &quant::Codes) {
        // Points are attached in increasing id order; anything else is placed in order.
        let at = match self.points.last() {
            Some(&last) if last >= p => match self.points.binary_search(&p) {
                Ok(_) => return,
                Err(at) => at,
            },
            _ => self.points.len(),
        };
        self.points.insert(at, p);
        self.codes.insert_row(at, graph, p as usize);
        self.live += 1;
    }

    fn remove(&mut self, p: u32, docs: &[Option<Doc>]) {
        if self.points.binary_search(&p).is_err() {
            return;
        }
        self.live -= 1;
        if self.live * 2 < self.points.len() {
            let keep: Vec<bool> = self
                .points
                .iter()
                .map(|&q| q != p && docs.get(q as usize).is_some_and(Option::is_some))
                .collect();
            self.codes.retain_rows(|row| keep[row]);
            let mut row = 0;
            self.points.retain(|_| {
                row += 1;
                keep[row - 1]
            });
        }
    }
}

/// The namespace ids a filter admits, as a bitset.
struct NsMask(Vec<u64>);

impl NsMask {
    fn has(&self, id: u32) -> bool {
        let id = (id & !MORE_NS) as usize;
        self.0
            .get(id / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }
}

impl MemIndex {
    fn new(dim: usize, tuning: &Tuning) -> MemIndex {
        MemIndex::with_hnsw(Hnsw::new(
            dim,
            hnsw::Params {
                m: tuning.m,
                ef_construction: tuning.ef_construction,
                ..hnsw::Params::default()
            },
        ))
    }

    /// An index over `hnsw` with no documents attached yet.
    fn with_hnsw(hnsw: Hnsw) -> MemIndex {
        MemIndex {
            hnsw,
            docs: Vec::new(),
            by_record: HashMap::new(),
            key_map: HashMap::default(),
            ns_points: Vec::new(),
            timeline: BTreeSet::new(),
            links: Vec::new(),
            tombstones: 0,
            ns_ids: std::collections::BTreeMap::new(),
            point_ns: Vec::new(),
            point_ns_more: HashMap::new(),
        }
    }

    /// Makes `record` the live document of point `p`: every derived map learns it.
    fn attach(&mut self, p: u32, record: Arc<Record>) {
        let mut ids = Vec::with_capacity(record.namespaces.len());
        for ns in &record.namespaces {
            let id = self.ns_id(ns);
            // Each namespace's list keeps a copy of the point's int8 code (encoded once,
            // by the graph).
            self.ns_points[id as usize].add(p, self.hnsw.codes());
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if self.point_ns.len() <= p as usize {
            self.point_ns.resize(p as usize + 1, NO_NS);
        }
        self.point_ns[p as usize] = match ids.as_slice() {
            [] => NO_NS,
            [one] => *one,
            [first, rest @ ..] => {
                self.point_ns_more.insert(p, rest.to_vec());
                first | MORE_NS
            }
        };
        self.link(&record, p);
        self.by_record.insert(record.id.clone(), p);
        self.key_map.insert(bm25_key_of(&record.id), p);
        if self.docs.len() <= p as usize {
            self.docs.resize(p as usize + 1, None);
        }
        self.docs[p as usize] = Some(Doc { record });
    }

    /// The namespace ids admitted by a filter (`None`: no namespace filter).
    fn ns_mask(&self, f: Option<&crate::record::NamespaceFilter>) -> Option<NsMask> {
        let f = f?;
        let mut bits = vec![0u64; self.ns_ids.len().div_ceil(64)];
        for (_, id, _) in self.matching_namespaces(f) {
            bits[id as usize / 64] |= 1 << (id % 64);
        }
        Some(NsMask(bits))
    }

    /// Whether live point `p` passes `filter`, whose namespace part is `mask`.
    fn admits(&self, p: u32, filter: &RecordFilter, mask: Option<&NsMask>) -> bool {
        if let Some(mask) = mask {
            let first = self.point_ns.get(p as usize).copied().unwrap_or(NO_NS);
            let ok = (first != NO_NS && mask.has(first))
                || (first & MORE_NS != 0
                    && self
                        .point_ns_more
                        .get(&p)
                        .is_some_and(|more| more.iter().any(|id| mask.has(*id))));
            if !ok {
                return false;
            }
        }
        let Some(doc) = self.doc(p) else {
            return false;
        };
        if filter.strategy_id.is_none() && filter.metadata.is_empty() {
            return true;
        }
        filter.matches(&doc.record)
    }

    fn live(&self) -> usize {
        self.by_record.len()
    }

    /// Exact top-`n` over the points of namespaces `ns` that `admit` accepts, from their
    /// codes then refined in f32; `None` once more than `limit` are admitted.
    fn exact_in(
        &self,
        q: &[f32],
        n: usize,
        ns: &[u32],
        admit: impl Fn(u32) -> bool,
        limit: usize,
    ) -> Option<Vec<(u32, f32)>> {
        let qc = quant::Codes::query(q);
        let mut scored = Vec::new();
        // A record in two of the namespaces must be scored once (see `Hnsw::refine`).
        let mut seen = (ns.len() > 1).then(|| vec![0u64; self.hnsw.len().div_ceil(64)]);
        for &id in ns {
            let list = &self.ns_points[id as usize];
            for (row, &p) in list.points.iter().enumerate() {
                if let Some(seen) = seen.as_mut() {
                    let (word, bit) = (p as usize / 64, 1u64 << (p % 64));
                    if seen[word] & bit != 0 {
                        continue;
                    }
                    seen[word] |= bit;
                }
                if admit(p) {
                    let (approx, bound) = list.codes.approx(&qc, row);
                    scored.push((p, approx, bound));
                    if scored.len() > limit {
                        return None;
                    }
                }
            }
        }
        Some(self.hnsw.refine(q, n, scored))
    }

    /// The id of namespace `ns`, given one (with an empty list of points) if it is new.
    fn ns_id(&mut self, ns: &str) -> u32 {
        match self.ns_ids.get(ns) {
            Some(&id) => id,
            None => {
                let id = self.ns_ids.len() as u32;
                self.ns_ids.insert(ns.to_owned(), id);
                self.ns_points.push(NsPoints::new(self.hnsw.dim()));
                id
            }
        }
    }

    /// Takes point `p` (whose document is already gone) out of namespace `ns`.
    fn remove_ns(&mut self, ns: &str, p: u32) {
        if let Some(&id) = self.ns_ids.get(ns) {
            self.ns_points[id as usize].remove(p, &self.docs);
        }
    }

    /// The distinct namespaces with live records that a filter admits: (name, id, count).
    fn matching_namespaces(&self, f: &crate::record::NamespaceFilter) -> Vec<(&str, u32, usize)> {
        let prefix = f.prefix().trim_end_matches('/');
        self.ns_ids
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(ns, _)| ns.starts_with(prefix))
            .filter(|(ns, _)| f.matches(ns))
            .map(|(ns, &id)| (ns.as_str(), id, self.ns_points[id as usize].live))
            .filter(|&(_, _, count)| count > 0)
            .collect()
    }

    fn remove(&mut self, id: &RecordId) {
        if let Some(p) = self.by_record.remove(id) {
            self.key_map.remove(&bm25_key_of(id));
            if let Some(Some(doc)) = self.docs.get_mut(p as usize).map(Option::take) {
                let mut seen: Vec<&str> = Vec::with_capacity(doc.record.namespaces.len());
                for ns in &doc.record.namespaces {
                    if !seen.contains(&ns.as_str()) {
                        seen.push(ns);
                        self.remove_ns(ns, p);
                    }
                }
                self.unlink(&doc.record, p);
            }
            if let Some(slot) = self.point_ns.get_mut(p as usize) {
                *slot = NO_NS;
            }
            self.point_ns_more.remove(&p);
            self.hnsw.delete(p);
            self.tombstones += 1;
        }
    }

    fn insert(&mut self, record: &Record) {
        self.remove(&record.id);
        let dim = self.hnsw.dim();
        let v = fit_dim(&record.embedding.0, dim);
        let p = self.hnsw.insert(bm25_key_of(&record.id), &v);
        self.attach(p, Arc::new(record.without_embedding()));
    }

    /// [`MemIndex::insert`] of each record, in order, with the graph searches of the batch
    /// on `threads` threads ([`Hnsw::insert_batch`]). A batch naming a record twice is
    /// inserted one at a time (each version must replace the one before).
    fn insert_all(&mut self, records: &[Record], threads: usize) {
        match self.plan_all(records, threads) {
            Some(planned) => self.insert_planned(records, planned),
            None => records.iter().for_each(|r| self.insert(r)),
        }
    }

    /// The read-only part of [`MemIndex::insert_all`]: the graph searches
    /// ([`Hnsw::plan_batch`]), which the indexer runs beside retrievals. `None` when the
    /// batch names a record twice and must be inserted one at a time.
    fn plan_all(&self, records: &[Record], threads: usize) -> Option<Planned> {
        let mut ids: Vec<&RecordId> = records.iter().map(|r| &r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() < records.len() {
            return None;
        }
        let dim = self.hnsw.dim();
        let vectors: Vec<Vec<f32>> = records
            .iter()
            .map(|r| fit_dim(&r.embedding.0, dim))
            .collect();
        let plan = self.hnsw.plan_batch(&keyed(records, &vectors), threads);
        Some(Planned { plan, vectors })
    }

    /// The rest of [`MemIndex::insert_all`], given its [`MemIndex::plan_all`] made with no
    /// insertion since (deletes are allowed: the searches do not look at them).
    fn insert_planned(&mut self, records: &[Record], planned: Planned) {
        for r in records {
            self.remove(&r.id);
        }
        let Planned { plan, vectors } = planned;
        let points = self.hnsw.apply_plan(&keyed(records, &vectors), plan);
        for (p, r) in points.into_iter().zip(records) {
            self.attach(p, Arc::new(r.without_embedding()));
        }
    }

    /// Whether tombstones dominate, so the graph should be rebuilt from the live points.
    fn needs_compaction(&self) -> bool {
        self.tombstones >= 64 && self.tombstones * 4 >= self.hnsw.len()
    }

    /// This index rebuilt from its live points (read-only: the indexer builds it beside
    /// retrievals, then swaps it in).
    fn compacted(&self) -> MemIndex {
        // `compacted` re-inserts the live points in id order, so the new ids are the ranks.
        let mut fresh = MemIndex::with_hnsw(self.hnsw.compacted());
        for (p, doc) in self.docs.iter().flatten().enumerate() {
            fresh.attach(p as u32, doc.record.clone());
        }
        fresh
    }

    /// Compacts when [`MemIndex::needs_compaction`]; returns whether it did.
    #[cfg(test)]
    fn maybe_compact(&mut self) -> bool {
        let due = self.needs_compaction();
        if due {
            *self = self.compacted();
        }
        due
    }

    fn doc(&self, p: u32) -> Option<&Doc> {
        self.docs.get(p as usize).and_then(Option::as_ref)
    }

    /// `p`'s place in the timeline: its first namespace's id ([`NO_NS`] without one; set
    /// by `attach` before this is asked), its timestamp, itself.
    fn timeline_key(&self, record: &Record, p: u32) -> (u32, u64, u32) {
        let first = self
            .point_ns
            .get(p as usize)
            .map_or(NO_NS, |f| f & !MORE_NS);
        (first, record.timestamp.0, p)
    }

    /// Puts point `p` (of `record`) into the timeline, between its neighbours.
    fn link(&mut self, record: &Record, p: u32) {
        use std::ops::Bound::{Excluded, Unbounded};
        let key = self.timeline_key(record, p);
        self.timeline.insert(key);
        let same = |k: &&(u32, u64, u32)| k.0 == key.0;
        let prev = self
            .timeline
            .range(..key)
            .next_back()
            .filter(same)
            .map(|k| k.2);
        let next = (self.timeline.range((Excluded(key), Unbounded)).next())
            .filter(same)
            .map(|k| k.2);
        if self.links.len() <= p as usize {
            self.links.resize(p as usize + 1, [NO_LINK; 2]);
        }
        self.links[p as usize] = [prev.unwrap_or(NO_LINK), next.unwrap_or(NO_LINK)];
        if let Some(a) = prev {
            self.links[a as usize][1] = p;
        }
        if let Some(b) = next {
            self.links[b as usize][0] = p;
        }
    }

    /// Takes point `p` (of `record`) out of the timeline; its neighbours become adjacent.
    fn unlink(&mut self, record: &Record, p: u32) {
        let key = self.timeline_key(record, p);
        self.timeline.remove(&key);
        let Some(&[a, b]) = self.links.get(p as usize) else {
            return;
        };
        if a != NO_LINK {
            self.links[a as usize][1] = b;
        }
        if b != NO_LINK {
            self.links[b as usize][0] = a;
        }
        self.links[p as usize] = [NO_LINK; 2];
    }

    /// The live points just before and after `p` in its namespace's time order.
    fn neighbours(&self, p: u32) -> [Option<u32>; 2] {
        if self.doc(p).is_none() {
            return [None, None];
        }
        let [a, b] = self.links.get(p as usize).copied().unwrap_or([NO_LINK; 2]);
        [(a != NO_LINK).then_some(a), (b != NO_LINK).then_some(b)]
    }
}

/// Adds to each fused hit `weight` × the best fused score among its neighbours, and admits
/// the neighbours that pass `filter`; scores stay in [0, 1]. `neighbours` gives a record's
/// neighbours: the records just before and after it in its first namespace's time order
/// (a conversation's adjacent turns, facts written together).
fn add_neighbors(
    filter: &RecordFilter,
    hits: Vec<Hit>,
    weight: f32,
    mut neighbours: impl FnMut(&Record) -> [Option<Arc<Record>>; 2],
) -> Vec<Hit> {
    // (score of the hit it neighbours, neighbour), for neighbours that pass the filter.
    let mut nbs: Vec<(f32, Arc<Record>)> = Vec::with_capacity(2 * hits.len());
    for h in &hits {
        for nb in neighbours(&h.record).into_iter().flatten() {
            if filter.matches(&nb) {
                nbs.push((h.score, nb));
            }
        }
    }
    // By record id (borrowed, nothing cloned): its hit, its best neighbour's score, and
    // its first entry in `nbs`.
    let mut by_id: HashMap<&RecordId, (Option<usize>, f32, Option<usize>)> =
        HashMap::with_capacity(hits.len() + nbs.len());
    for (i, h) in hits.iter().enumerate() {
        by_id.entry(&h.record.id).or_insert((None, 0.0, None)).0 = Some(i);
    }
    for (j, (score, nb)) in nbs.iter().enumerate() {
        let e = by_id.entry(&nb.id).or_insert((None, 0.0, None));
        e.1 = e.1.max(*score);
        e.2.get_or_insert(j);
    }
    let scored: Vec<(Option<usize>, Option<usize>, f32, f32)> = by_id
        .into_values()
        .map(|(hit, best, first)| {
            let own = hit.map_or(0.0, |i| hits[i].score);
            let score = ((own + weight * best) / (1.0 + weight)).clamp(0.0, 1.0);
            (hit, first, score, best)
        })
        .collect();
    let mut hits: Vec<Option<Hit>> = hits.into_iter().map(Some).collect();
    let mut out: Vec<Hit> = scored
        .into_iter()
        .filter_map(|(hit, first, score, best)| {
            let mut h = match (hit, first) {
                (Some(i), _) => hits[i].take()?,
                (None, Some(j)) => Hit::bare(nbs[j].1.clone()),
                (None, None) => return None,
            };
            h.score = score;
            h.neighbor = Some(best);
            Some(h)
        })
        .collect();
    sort_best_first(&mut out);
    out
}

/// [`add_neighbors`] over the live timeline of `s`.
fn with_live_neighbors(s: &State, q: &Query<'_>, hits: Vec<Hit>, weight: f32) -> Vec<Hit> {
    let Some(idx) = s.memories.get(q.memory_id) else {
        return hits;
    };
    add_neighbors(q.filter, hits, weight, |r| {
        let Some(&p) = idx.by_record.get(&r.id) else {
            return [None, None];
        };
        idx.neighbours(p)
            .map(|nb| nb.and_then(|nb| idx.doc(nb)).map(|d| d.record.clone()))
    })
}

/// [`add_neighbors`] for a point-in-time query: the timeline of the versions live then,
/// ordered as the live one is (first namespace, timestamp, then write order, which is the
/// order of the live index's points).
fn with_past_neighbors(
    filter: &RecordFilter,
    versions: &[Version],
    hits: Vec<Hit>,
    weight: f32,
) -> Vec<Hit> {
    fn first_ns(v: &Version) -> Option<&String> {
        v.record.namespaces.first()
    }
    let mut order: Vec<&Version> = versions.iter().collect();
    order.sort_by(|a, b| {
        first_ns(a)
            .cmp(&first_ns(b))
            .then(a.record.timestamp.0.cmp(&b.record.timestamp.0))
            .then((a.from.0, a.slot).cmp(&(b.from.0, b.slot)))
    });
    let pos: HashMap<&RecordId, usize> = order
        .iter()
        .enumerate()
        .map(|(i, v)| (&v.record.id, i))
        .collect();
    add_neighbors(filter, hits, weight, |r| {
        let Some(&i) = pos.get(&r.id) else {
            return [None, None];
        };
        let at = |j: Option<usize>| {
            j.and_then(|j| order.get(j))
                .filter(|v| first_ns(v) == first_ns(order[i]))
                .map(|v| Arc::new(v.record.without_embedding()))
        };
        [at(i.checked_sub(1)), at(i.checked_add(1))]
    })
}

/// A batch's graph searches ([`MemIndex::plan_all`]) with the vectors they were made for.
struct Planned {
    plan: hnsw::InsertPlan,
    /// The records' vectors at the graph's dimension.
    vectors: Vec<Vec<f32>>,
}

/// The graph's (key, vector) items for `records`, whose vectors are `vectors`.
fn keyed<'a>(records: &[Record], vectors: &'a [Vec<f32>]) -> Vec<(u64, &'a [f32])> {
    records
        .iter()
        .zip(vectors)
        .map(|(r, v)| (bm25_key_of(&r.id), v.as_slice()))
        .collect()
}

/// Pads or truncates a vector to the index's dimension (an embedder change between
/// writes; the record is still found by BM25).
fn fit_dim(v: &[f32], dim: usize) -> Vec<f32> {
    let mut out = v.to_vec();
    out.resize(dim, 0.0);
    out
}

/// Hashing for maps keyed by [`bm25_key_of`]: the key is already a hash, so one folded
/// multiply spreads it over every bit instead of SipHash's rounds (SipHash was 2% of a
/// namespace-filtered query, which looks up every BM25 hit).
#[derive(Clone, Copy, Default)]
struct KeyHash;

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, k: u64) {
        let m = u128::from(k ^ self.0) * 0x9e37_79b9_7f4a_7c15;
        self.0 = (m >> 64) as u64 ^ m as u64;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The key of a record in the BM25 index: a hash of its id, the same for every version,
/// so that replacing or deleting a record does not depend on which version is indexed.
fn bm25_key_of(id: &RecordId) -> u64 {
    crate::embed::fnv1a(&[id.as_str().as_bytes()])
}

struct State {
    memories: HashMap<MemoryId, MemIndex>,
    /// Every entry up to here is in `memories` (G).
    hnsw_checkpoint: Lsn,
    /// The checkpoint in the manifest on disk.
    hnsw_persisted: Lsn,
    /// Every entry up to here is in the BM25 index (committed or not).
    bm25_applied: Lsn,
    /// Memories changed since the last persist.
    dirty: BTreeSet<MemoryId>,
    /// Memories deleted since the last persist (their files go).
    removed: BTreeSet<MemoryId>,
    unpersisted_entries: u64,
    first_unpersisted: Option<Instant>,
    applied_since_open: u64,
    compactions: u64,
}

/// The indexes of one engine. Shared between the indexer thread and readers.
pub struct SearchIndex {
    dir: PathBuf,
    tuning: Tuning,
    state: RwLock<State>,
    bm25: Bm25,
    /// The LSN up to which everything is searchable, and a signal when it moves.
    indexed: Mutex<Lsn>,
    indexed_cv: Condvar,
    /// The writer's last committed LSN, and a signal when it moves.
    committed: Mutex<Lsn>,
    committed_cv: Condvar,
    stop: AtomicBool,
}

const MAGIC: &[u8; 8] = b"MLHNSW01";
const MANIFEST: &str = "MANIFEST.json";

#[derive(Serialize, Deserialize)]
struct Manifest {
    checkpoint: Lsn,
    memories: Vec<MemoryId>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Storage {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Corruption {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, fsync of the dir.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    {
        let mut w = std::io::BufWriter::new(&file);
        write(&mut w).map_err(|e| io_err(&tmp, e))?;
        w.flush().map_err(|e| io_err(&tmp, e))?;
    }
    file.sync_all().map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

fn memory_file(dir: &Path, m: &MemoryId) -> PathBuf {
    dir.join(format!("{m}.hnsw"))
}

fn save_memory(path: &Path, idx: &MemIndex) -> Result<()> {
    let docs: Vec<Option<&Record>> = idx
        .docs
        .iter()
        .map(|d| d.as_ref().map(|d| &*d.record))
        .collect();
    let docs = serde_json::to_vec(&docs).map_err(|e| io_err(path, e))?;
    write_atomic(path, |w| {
        w.write_all(MAGIC)?;
        w.write_all(&(docs.len() as u64).to_le_bytes())?;
        w.write_all(&docs)?;
        idx.hnsw.write_to(w)
    })
}

fn load_memory(path: &Path) -> Result<MemIndex> {
    let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut r = std::io::BufReader::new(file);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|e| corrupt(path, e))?;
    if &magic != MAGIC {
        return Err(corrupt(path, "not a memlog HNSW snapshot (bad magic)"));
    }
    let mut len = [0u8; 8];
    r.read_exact(&mut len).map_err(|e| corrupt(path, e))?;
    let len = u64::from_le_bytes(len);
    if len > 1 << 40 {
        return Err(corrupt(path, "implausible document table length"));
    }
    let mut docs = vec![0u8; len as usize];
    r.read_exact(&mut docs).map_err(|e| corrupt(path, e))?;
    let docs: Vec<Option<Record>> = serde_json::from_slice(&docs).map_err(|e| corrupt(path, e))?;
    let hnsw = Hnsw::read_from(&mut r).map_err(|e| corrupt(path, e))?;
    if hnsw.len() != docs.len() {
        return Err(corrupt(
            path,
            format!("{} points but {} documents", hnsw.len(), docs.len()),
        ));
    }
    let mut idx = MemIndex::with_hnsw(hnsw);
    for (p, d) in docs.into_iter().enumerate() {
        match d {
            Some(record) => idx.attach(p as u32, Arc::new(record)),
            None => {
                idx.tombstones += 1;
                idx.docs.push(None);
                idx.point_ns.push(NO_NS);
            }
        }
    }
    Ok(idx)
}

impl SearchIndex {
    /// Opens the indexes under `dir` (created if missing). Call [`SearchIndex::catch_up`]
    /// before serving, or start [`SearchIndex::run`].
    pub fn open(dir: &Path, tuning: Tuning) -> Result<SearchIndex> {
        let hdir = dir.join("hnsw");
        std::fs::create_dir_all(&hdir).map_err(|e| io_err(&hdir, e))?;
        let bdir = dir.join("bm25");
        std::fs::create_dir_all(&bdir).map_err(|e| io_err(&bdir, e))?;
        let bm25 = match Bm25::open(&bdir) {
            Ok(b) => b,
            // Derived data written by another version (schema, analyzer) or damaged:
            // start it afresh; the catch-up below refills it from the log.
            Err(e @ Error::Corruption { .. }) => {
                tracing::warn!("full-text index unusable, rebuilding it from the log: {e}");
                std::fs::remove_dir_all(&bdir).map_err(|e| io_err(&bdir, e))?;
                std::fs::create_dir_all(&bdir).map_err(|e| io_err(&bdir, e))?;
                Bm25::open(&bdir)?
            }
            Err(e) => return Err(e),
        };
        let mut memories = HashMap::new();
        let mut checkpoint = Lsn::ZERO;
        let mpath = hdir.join(MANIFEST);
        if mpath.exists() {
            let loaded = (|| -> Result<(Lsn, HashMap<MemoryId, MemIndex>)> {
                let bytes = std::fs::read(&mpath).map_err(|e| io_err(&mpath, e))?;
                let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| corrupt(&mpath, e))?;
                let mut out = HashMap::new();
                for id in m.memories {
                    let idx = load_memory(&memory_file(&hdir, &id))?;
                    out.insert(id, idx);
                }
                Ok((m.checkpoint, out))
            })();
            match loaded {
                Ok((c, m)) => {
                    checkpoint = c;
                    memories = m;
                }
                Err(e) => {
                    tracing::warn!("vector index snapshot unusable, rebuilding from the log: {e}");
                }
            }
        }
        let bm25_checkpoint = Lsn(bm25.checkpoint());
        let indexed = checkpoint.min(bm25_checkpoint);
        Ok(SearchIndex {
            dir: dir.to_path_buf(),
            tuning,
            state: RwLock::new(State {
                memories,
                hnsw_checkpoint: checkpoint,
                hnsw_persisted: checkpoint,
                bm25_applied: bm25_checkpoint,
                dirty: BTreeSet::new(),
                removed: BTreeSet::new(),
                unpersisted_entries: 0,
                first_unpersisted: None,
                applied_since_open: 0,
                compactions: 0,
            }),
            bm25,
            indexed: Mutex::new(indexed),
            indexed_cv: Condvar::new(),
            committed: Mutex::new(Lsn::ZERO),
            committed_cv: Condvar::new(),
            stop: AtomicBool::new(false),
        })
    }

    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The LSN up to which every record change is searchable.
    pub fn indexed_lsn(&self) -> Lsn {
        *self.indexed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the indexer that the log now ends at `lsn`.
    pub fn notify_committed(&self, lsn: Lsn) {
        let mut c = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        if lsn > *c {
            *c = lsn;
            self.committed_cv.notify_all();
        }
    }

    /// Blocks until everything up to `lsn` is searchable or `timeout` passes; returns
    /// whether it got there.
    pub fn wait_indexed(&self, lsn: Lsn, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.indexed.lock().unwrap_or_else(|p| p.into_inner());
        while *g < lsn {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .indexed_cv
                .wait_timeout(g, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }

    pub fn stats(&self) -> IndexStats {
        let s = self.read_state();
        let bm25 = &self.bm25;
        IndexStats {
            indexed_lsn: self.indexed_lsn().0,
            hnsw_checkpoint: s.hnsw_checkpoint.0,
            bm25_checkpoint: bm25.checkpoint(),
            memories: s.memories.len(),
            live_records: s.memories.values().map(MemIndex::live).sum(),
            tombstones: s.memories.values().map(|m| m.tombstones).sum(),
            applied_since_open: s.applied_since_open,
            compactions: s.compactions,
        }
    }

    /// Applies every entry after the indexes' checkpoints up to the log's end; returns
    /// the number of entries applied.
    pub fn catch_up(&self, backend: &dyn Backend) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self.step(backend, 1_000)?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// Applies up to `max` entries after the current position, commits BM25, and
    /// persists HNSW snapshots when due. Returns the number of entries read.
    fn step(&self, backend: &dyn Backend, max: usize) -> Result<u64> {
        let (g, t) = {
            let s = self.read_state();
            (s.hnsw_checkpoint, s.bm25_applied)
        };
        let from = g.min(t).next();
        let entries: Vec<Entry> = {
            let snap = backend.snapshot()?;
            let range = crate::store::KeyRange {
                start: std::ops::Bound::Included(crate::log::key(from).to_vec()),
                end: std::ops::Bound::Unbounded,
            };
            let mut out = Vec::new();
            for item in snap
                .range(crate::store::Table::Log, &range, false)?
                .take(max)
            {
                out.push(crate::projection::decode_entry(backend.path(), &item?.1)?);
            }
            out
        };
        let Some(last) = entries.last().map(|e| e.lsn) else {
            return Ok(0);
        };
        // Each entry takes the state's lock for itself, and exclusively only for what
        // changes it, so retrievals keep going while a batch is indexed (see `apply`).
        let mut applied = 0u64;
        let mut hnsw_applied = 0u64;
        let mut bm25_touched = false;
        for e in &entries {
            let (to_hnsw, to_bm25) = (e.lsn > g, e.lsn > t);
            if self.apply(e, to_hnsw, to_bm25)? {
                bm25_touched |= to_bm25;
                applied += 1;
                hnsw_applied += u64::from(to_hnsw);
            }
        }
        {
            let mut s = self.write_state();
            s.applied_since_open += applied;
            if hnsw_applied > 0 {
                s.unpersisted_entries += hnsw_applied;
                s.first_unpersisted.get_or_insert_with(Instant::now);
            }
            s.hnsw_checkpoint = s.hnsw_checkpoint.max(last);
            s.bm25_applied = s.bm25_applied.max(last);
        }
        // Publish BM25's changes: searchable now, from its in-memory delta. They become
        // durable at its next commit (`persist_if_due`), a restart replays the log from
        // the last one. A commit per step cost retrievals their tail: tantivy writes a
        // segment, reloads its readers and merges ever more small segments, 20 times a
        // second under a steady writer (in-process, 200 records/s: p99 5.1 → 1.6 ms with
        // commits at most every 250 ms; over HTTP at 100k records, p99 6.3–6.4 →
        // 5.2–5.5 ms with this delta).
        if bm25_touched {
            self.bm25.publish()?;
        }
        // Both sides have applied everything up to `last` (BM25 may keep an older
        // checkpoint on disk when the last entries did not concern it): searchable now,
        // before any persisting, so a writer waiting on the watermark never waits for a
        // snapshot write or a BM25 commit.
        {
            let mut g = self.indexed.lock().unwrap_or_else(|p| p.into_inner());
            if last > *g {
                *g = last;
                self.indexed_cv.notify_all();
            }
        }
        self.persist_if_due(false)?;
        Ok(entries.len() as u64)
    }

    /// Applies one entry; returns whether it concerned records.
    ///
    /// Retrievals hold the state's lock shared while they search, so the expensive parts
    /// run under a shared lock too: the graph searches of new points
    /// ([`MemIndex::plan_all`]) and the rebuild of a compacted graph. Only linking the
    /// planned points, and swapping a rebuilt graph in, take it exclusively. The indexer
    /// is the only writer, so nothing changes in between. BM25 changes go to tantivy's
    /// writer and its delta, which readers do not see until `step` publishes them.
    fn apply(&self, e: &Entry, to_hnsw: bool, to_bm25: bool) -> Result<bool> {
        let threads = self.tuning.insert_threads.max(1);
        if let Some((memory_id, records, ended)) = e.body.record_changes() {
            if to_hnsw {
                if let Some(first) = records.first()
                    && !self.read_state().memories.contains_key(memory_id)
                {
                    let fresh = MemIndex::new(first.embedding.0.len(), &self.tuning);
                    self.write_state().memories.insert(memory_id.clone(), fresh);
                }
                let plan = {
                    let s = self.read_state();
                    s.memories
                        .get(memory_id)
                        .and_then(|idx| idx.plan_all(records, threads))
                };
                let compact = {
                    let mut guard = self.write_state();
                    let s = &mut *guard;
                    match s.memories.get_mut(memory_id) {
                        Some(idx) => {
                            for id in &ended {
                                idx.remove(id);
                            }
                            match plan {
                                Some(plan) => idx.insert_planned(records, plan),
                                None => idx.insert_all(records, threads),
                            }
                            s.dirty.insert(memory_id.clone());
                            !ended.is_empty() && idx.needs_compaction()
                        }
                        None => false,
                    }
                };
                if compact {
                    let fresh = self
                        .read_state()
                        .memories
                        .get(memory_id)
                        .map(MemIndex::compacted);
                    if let Some(fresh) = fresh {
                        let mut s = self.write_state();
                        s.memories.insert(memory_id.clone(), fresh);
                        s.compactions += 1;
                    }
                }
            }
            if to_bm25 {
                let bm25 = &self.bm25;
                for id in &ended {
                    bm25.delete(bm25_key_of(id))?;
                }
                for r in records {
                    let key = bm25_key_of(&r.id);
                    bm25.delete(key)?;
                    bm25.add_scoped(key, memory_id.as_str(), &r.content, &r.namespaces)?;
                }
            }
            return Ok(true);
        }
        match &e.body {
            Body::MemoryDeleted { memory_id } => {
                if to_hnsw {
                    let mut s = self.write_state();
                    if s.memories.remove(memory_id).is_some() {
                        s.dirty.remove(memory_id);
                        s.removed.insert(memory_id.clone());
                    }
                }
                if to_bm25 {
                    self.bm25.delete_group(memory_id.as_str())?;
                }
                Ok(true)
            }
            Body::MemoryCreated { .. }
            | Body::MemoryUpdated { .. }
            | Body::EventCreated { .. }
            | Body::EventDeleted { .. }
            | Body::EventExpired { .. }
            | Body::RecordsCreated { .. }
            | Body::RecordsUpdated { .. }
            | Body::RecordsDeleted { .. }
            | Body::Extracted { .. }
            | Body::ExtractionRedriven { .. }
            | Body::SpanIngested { .. }
            | Body::EvaluationRecorded { .. }
            | Body::EvaluationRunSaved { .. }
            | Body::EvaluatorSaved { .. }
            | Body::EvaluatorDeleted { .. }
            | Body::OnlineConfigSaved { .. }
            | Body::OnlineConfigDeleted { .. } => Ok(false),
        }
    }

    /// Writes the snapshots of changed memories and then the manifest, and commits the
    /// BM25 checkpoint, when enough has changed or enough time has passed (or always, with
    /// `force`). Checkpoints also move on after long runs of entries that touched no
    /// record, so a restart does not re-read them.
    pub fn persist_if_due(&self, force: bool) -> Result<()> {
        let every = self.tuning.persist_every_entries;
        let (hnsw_due, bm25_due) = {
            let s = self.read_state();
            let bm25 = &self.bm25;
            let changed = !s.dirty.is_empty() || !s.removed.is_empty();
            let stale = s.first_unpersisted.is_some_and(|t| {
                t.elapsed() >= Duration::from_secs(self.tuning.persist_every_secs)
            });
            let hnsw_lag = s.hnsw_checkpoint.0 - s.hnsw_persisted.0;
            let bm25_lag = s.bm25_applied.0.saturating_sub(bm25.checkpoint());
            let (bm25_docs, bm25_since) = bm25.uncommitted();
            let bm25_stale = bm25_since.is_some_and(|t| {
                t.elapsed() >= Duration::from_millis(self.tuning.bm25_commit_millis)
            });
            (
                (changed && (force || stale || s.unpersisted_entries >= every))
                    || (hnsw_lag > 0 && (force || hnsw_lag >= every * 4)),
                bm25_lag > 0
                    && (force
                        || bm25_lag >= every * 4
                        || bm25_stale
                        || bm25_docs >= self.tuning.bm25_commit_docs),
            )
        };
        if bm25_due {
            let applied = self.read_state().bm25_applied;
            let bm25 = &self.bm25;
            bm25.commit(applied.0)?;
        }
        if !hnsw_due {
            return Ok(());
        }
        // Readers keep going; the indexer (the only writer) waits, which is what we want.
        let s = self.read_state();
        let hdir = self.dir.join("hnsw");
        for id in &s.dirty {
            if let Some(idx) = s.memories.get(id) {
                save_memory(&memory_file(&hdir, id), idx)?;
            }
        }
        let mut memories: Vec<MemoryId> = s.memories.keys().cloned().collect();
        memories.sort();
        let checkpoint = s.hnsw_checkpoint;
        let manifest = Manifest {
            checkpoint,
            memories,
        };
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| io_err(&hdir, e))?;
        write_atomic(&hdir.join(MANIFEST), |w| w.write_all(&bytes))?;
        let removed: Vec<MemoryId> = s.removed.iter().cloned().collect();
        drop(s);
        for id in &removed {
            let _ = std::fs::remove_file(memory_file(&hdir, id));
        }
        let mut s = self.write_state();
        s.dirty.clear();
        s.removed.clear();
        s.unpersisted_entries = 0;
        s.first_unpersisted = None;
        s.hnsw_persisted = checkpoint;
        Ok(())
    }

    /// The indexer loop: follows the log until [`SearchIndex::stop`], then persists.
    pub fn run(&self, backend: &dyn Backend) {
        let mut backoff = Duration::from_millis(100);
        while !self.stop.load(Ordering::Acquire) {
            match self.step(backend, 1_000) {
                Ok(0) => {
                    backoff = Duration::from_millis(100);
                    // Idle: what is due by time alone is persisted now.
                    if let Err(e) = self.persist_if_due(false) {
                        tracing::error!("indexer: persist failed: {e}");
                    }
                    let indexed = self.indexed_lsn();
                    let g = self.committed.lock().unwrap_or_else(|p| p.into_inner());
                    if *g <= indexed && !self.stop.load(Ordering::Acquire) {
                        // Woken by a commit, or when a BM25 commit or other persisting
                        // is due: the delta is scanned whole by every search, so it should
                        // not outlive its interval.
                        let _ = self.committed_cv.wait_timeout(g, self.idle_wait());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!("indexer: {e}; retrying in {backoff:?}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        if let Err(e) = self.persist_if_due(true) {
            tracing::error!("indexer: final persist failed: {e}");
        }
    }

    /// How long the idle indexer may sleep: until BM25's uncommitted changes are due for
    /// their commit, at most 1 s (for the time-based persisting of snapshots).
    fn idle_wait(&self) -> Duration {
        let second = Duration::from_secs(1);
        match self.bm25.uncommitted() {
            (_, Some(since)) => Duration::from_millis(self.tuning.bm25_commit_millis)
                .saturating_sub(since.elapsed())
                .clamp(Duration::from_millis(1), second),
            (_, None) => second,
        }
    }

    /// Asks [`SearchIndex::run`] to finish.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _g = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        self.committed_cv.notify_all();
    }

    /// Hybrid, vector or BM25 retrieval over the live records (or, with `as_of`, over
    /// `versions`: the versions live then, which the caller reads from the store).
    pub fn search(&self, q: &Query<'_>, versions: Option<Vec<Version>>) -> Result<Vec<Hit>> {
        let hits = self.search_in(q, versions.as_deref(), true)?;
        Ok(hits.unwrap_or_default())
    }

    /// [`SearchIndex::search`] over the live records, unless the indexer is applying
    /// entries at this moment: then `Ok(None)` at once instead of waiting for it.
    pub fn try_search_live(&self, q: &Query<'_>) -> Result<Option<Vec<Hit>>> {
        self.search_in(q, None, false)
    }

    /// The search over `versions`, or over the live records when `None` (waiting for the
    /// indexer if `wait`, else `Ok(None)` when it holds the state).
    fn search_in(
        &self,
        q: &Query<'_>,
        versions: Option<&[Version]>,
        wait: bool,
    ) -> Result<Option<Vec<Hit>>> {
        if q.top_k == 0 {
            return Ok(Some(Vec::new()));
        }
        if q.mode != Mode::Bm25 && q.vector.is_none() {
            return Err(Error::invalid(
                "vector retrieval needs the query's embedding",
            ));
        }
        let n = (q.top_k * self.tuning.candidates_per_result)
            .max(q.top_k)
            .max(20);
        let (wv, wb) = q
            .weights
            .unwrap_or((self.tuning.vector_weight, self.tuning.bm25_weight));
        let (wv, wb) = match q.mode {
            Mode::Hybrid => (wv, wb),
            Mode::Vector => (1.0, 0.0),
            Mode::Bm25 => (0.0, 1.0),
        };
        // The tuning's context weight is hybrid retrieval's default; a single-signal mode
        // gets context only when the query asks for it.
        let neighbor = q.neighbor_weight.unwrap_or(match q.mode {
            Mode::Hybrid => self.tuning.neighbor_weight,
            Mode::Vector | Mode::Bm25 => 0.0,
        });
        if !(neighbor.is_finite() && neighbor >= 0.0) {
            return Err(Error::invalid(format!(
                "the neighbour weight must be a finite number ≥ 0, got {neighbor}"
            )));
        }
        let mut hits = match versions {
            Some(vs) => {
                let (vec_list, text_list) = self.search_versions(q, vs, n, wv > 0.0, wb > 0.0);
                let hits = fuse(&vec_list, &text_list, wv, wb, self.tuning.rrf_k, usize::MAX);
                if neighbor > 0.0 {
                    with_past_neighbors(q.filter, vs, hits, neighbor)
                } else {
                    hits
                }
            }
            None => {
                // One read of the state for the lists and the context, so that both see
                // the same records.
                let s = if wait {
                    self.read_state()
                } else {
                    match self.state.try_read() {
                        Ok(s) => s,
                        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                        Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
                    }
                };
                let (vec_list, text_list) = self.search_live(&s, q, n, wv > 0.0, wb > 0.0)?;
                let hits = fuse(&vec_list, &text_list, wv, wb, self.tuning.rrf_k, usize::MAX);
                if neighbor > 0.0 {
                    with_live_neighbors(&s, q, hits, neighbor)
                } else {
                    hits
                }
            }
        };
        hits.truncate(q.top_k);
        Ok(Some(hits))
    }

    /// Exact scoring of point-in-time versions.
    fn search_versions(
        &self,
        q: &Query<'_>,
        versions: &[Version],
        n: usize,
        use_vec: bool,
        use_text: bool,
    ) -> (Ranked, Ranked) {
        let live: Vec<&Record> = versions
            .iter()
            .map(|v| &v.record)
            .filter(|r| q.filter.matches(r))
            .collect();
        let mut vec_list = Vec::new();
        if use_vec && let Some(qv) = q.vector {
            let mut scored: Vec<(usize, f32)> = live
                .iter()
                .enumerate()
                .map(|(i, r)| (i, hnsw::dot(qv, &fit_dim(&r.embedding.0, qv.len()))))
                .collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            scored.truncate(n);
            vec_list = scored
                .into_iter()
                .map(|(i, s)| (Arc::new(live[i].without_embedding()), s))
                .collect();
        }
        let mut text_list = Vec::new();
        if use_text {
            let docs: Vec<&str> = live.iter().map(|r| r.content.as_str()).collect();
            text_list = bm25::score_exact(q.text, &docs, n)
                .into_iter()
                .map(|(i, s)| (Arc::new(live[i].without_embedding()), s))
                .collect();
        }
        (vec_list, text_list)
    }

    /// The live path: HNSW (or exact over a small candidate set) and tantivy.
    fn search_live(
        &self,
        s: &State,
        q: &Query<'_>,
        n: usize,
        use_vec: bool,
        use_text: bool,
    ) -> Result<(Ranked, Ranked)> {
        let Some(idx) = s.memories.get(q.memory_id) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let mask = idx.ns_mask(q.filter.namespace.as_ref());
        let admits = |p: u32| idx.admits(p, q.filter, mask.as_ref());
        let mut vec_list = Vec::new();
        if use_vec && let Some(qv) = q.vector {
            let qv = fit_dim(qv, idx.hnsw.dim());
            let t = &self.tuning;
            // A small candidate set is searched exactly (see the module documentation):
            // over a namespace's int8 codes, or over scattered f32 rows for other filters.
            let graph = 2 * t.ef_search * 2 * t.m * idx.live();
            let crossover = |advantage: usize| ((advantage * graph) as f64).sqrt() as usize;
            let threshold = t.exact_threshold.max(crossover(1));
            let ns_threshold = t.exact_threshold.max(crossover(CODE_SCAN_ADVANTAGE));
            let only_ns = q.filter.strategy_id.is_none() && q.filter.metadata.is_empty();
            let exact = match &q.filter.namespace {
                _ if q.filter.is_empty() => None,
                Some(f) => {
                    let matching = idx.matching_namespaces(f);
                    let total: usize = matching.iter().map(|(_, _, c)| c).sum();
                    let ids: Vec<u32> = matching.iter().map(|(_, id, _)| *id).collect();
                    if only_ns && total <= ns_threshold {
                        idx.exact_in(&qv, n, &ids, |p| idx.doc(p).is_some(), ns_threshold)
                    } else if only_ns {
                        None
                    } else {
                        idx.exact_in(&qv, n, &ids, admits, ns_threshold)
                    }
                }
                None => small_candidate_set(idx, q.filter, mask.as_ref(), threshold)
                    .map(|c| idx.hnsw.exact(&qv, n, Some(&c))),
            };
            let hits = match exact {
                Some(hits) => hits,
                None if q.filter.is_empty() => {
                    idx.hnsw.search(&qv, n, self.tuning.ef_search.max(n), None)
                }
                None => {
                    let f: &dyn Fn(u32) -> bool = &admits;
                    idx.hnsw
                        .search(&qv, n, (self.tuning.ef_search * 2).max(n), Some(f))
                }
            };
            vec_list = hits
                .into_iter()
                .filter_map(|(p, sim)| idx.doc(p).map(|d| (d.record.clone(), sim)))
                .collect();
        }
        let mut text_list = Vec::new();
        if use_text {
            // The BM25 key is the hash of the record id; resolve it through the live map.
            let lookup = |key: u64| idx.key_map.get(&key).and_then(|p| idx.doc(*p));
            let filter = |key: u64| idx.key_map.get(&key).is_some_and(|p| admits(*p));
            let bm25 = &self.bm25;
            // A namespace filter over few distinct namespaces restricts BM25 to their
            // documents: with a required clause when they hold a small share of the memory
            // (tantivy then scores just their documents), otherwise with a bitset of their
            // documents tested during collection (block-max WAND stays on). A namespace-only
            // filter then needs no per-hit test; other filters, or very many namespaces,
            // test each hit against the live map.
            let scope: Option<(Vec<String>, NsScope)> = q.filter.namespace.as_ref().and_then(|f| {
                let ns = idx.matching_namespaces(f);
                let docs: usize = ns.iter().map(|(_, _, c)| c).sum();
                let how = if docs * SCOPE_SHARE <= idx.live() {
                    NsScope::Required
                } else {
                    NsScope::Collected
                };
                (ns.len() <= 256)
                    .then(|| (ns.into_iter().map(|(n, _, _)| n.to_owned()).collect(), how))
            });
            let only_ns = q.filter.strategy_id.is_none() && q.filter.metadata.is_empty();
            let per_hit: Option<&(dyn Fn(u64) -> bool + Sync)> =
                if q.filter.is_empty() || (only_ns && scope.is_some()) {
                    None
                } else {
                    Some(&filter)
                };
            let hits = bm25.search_scoped(
                q.memory_id.as_str(),
                q.text,
                n,
                scope.as_ref().map(|(ns, how)| (ns.as_slice(), *how)),
                per_hit,
            )?;
            text_list = hits
                .into_iter()
                .filter_map(|(key, score)| lookup(key).map(|d| (d.record.clone(), score)))
                .collect();
        }
        Ok((vec_list, text_list))
    }
}

/// How many times cheaper a candidate is to score from a namespace's contiguous int8 codes
/// than a node is to visit in a filtered graph search, which moves the exact-search
/// crossover up by its square root. Measured at 100k records on the hashing embedder's
/// vectors (in-process, one thread): codes 35–47 ns a candidate, a filtered beam search
/// 0.69 ms / selectivity (4.5–5.2 ms at 10 %), so the two meet near 42 % ≈ 4.4 × the
/// unit-cost crossover's square; graph search over real MiniLM vectors is about twice as
/// cheap (`memlog bench ann`), hence 3.
const CODE_SCAN_ADVANTAGE: usize = 3;

/// A namespace filter whose namespaces hold at most 1/`SCOPE_SHARE` of a memory's records
/// restricts BM25 with a required clause; a broader one filters during collection.
const SCOPE_SHARE: usize = 32;

/// The candidate set of a filter without a namespace part, when it is small enough to
/// search exactly.
fn small_candidate_set(
    idx: &MemIndex,
    filter: &RecordFilter,
    mask: Option<&NsMask>,
    threshold: usize,
) -> Option<Vec<u32>> {
    let admits = |p: u32| idx.admits(p, filter, mask);
    if idx.live() <= threshold {
        return Some(
            idx.by_record
                .values()
                .copied()
                .filter(|p| admits(*p))
                .collect::<BTreeSet<u32>>()
                .into_iter()
                .collect(),
        );
    }
    // Estimate the selectivity on a deterministic sample of live points.
    let live: Vec<u32> = idx.by_record.values().copied().collect();
    let step = (live.len() / 256).max(1);
    let sample = live.iter().step_by(step);
    let (mut seen, mut hit) = (0usize, 0usize);
    for p in sample {
        seen += 1;
        hit += usize::from(admits(*p));
    }
    let estimate = live.len() * hit / seen.max(1);
    if estimate > threshold {
        return None;
    }
    let mut out: Vec<u32> = live.into_iter().filter(|p| admits(*p)).collect();
    out.sort_unstable();
    Some(out)
}

/// Weighted reciprocal rank fusion of two ranked lists (vector, full text), normalised so
/// that being first in every list that has weight scores 1: each record scores
/// `Σ w / (k + rank)` over the lists it is in, divided by `(wv + wb) / (k + 1)`. The best
/// `top_k`, ties to the lower record id. Public for the micro-benchmarks.
pub fn fuse(
    vec_list: &[(Arc<Record>, f32)],
    text_list: &[(Arc<Record>, f32)],
    wv: f32,
    wb: f32,
    k: f32,
    top_k: usize,
) -> Vec<Hit> {
    let mut by_id: HashMap<&RecordId, Hit> = HashMap::new();
    for (rank, (r, sim)) in vec_list.iter().enumerate() {
        let h = by_id.entry(&r.id).or_insert_with(|| Hit::bare(r.clone()));
        h.vector = Some((rank + 1, *sim));
        h.score += wv / (k + rank as f32 + 1.0);
    }
    for (rank, (r, s)) in text_list.iter().enumerate() {
        let h = by_id.entry(&r.id).or_insert_with(|| Hit::bare(r.clone()));
        h.bm25 = Some((rank + 1, *s));
        h.score += wb / (k + rank as f32 + 1.0);
    }
    let best = (wv + wb) / (k + 1.0);
    let mut hits: Vec<Hit> = by_id.into_values().collect();
    for h in &mut hits {
        h.score = if best > 0.0 {
            (h.score / best).clamp(0.0, 1.0)
        } else {
            0.0
        };
    }
    sort_best_first(&mut hits);
    hits.truncate(top_k);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(rng: &mut fastrand::Rng, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| rng.f32() - 0.5).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    /// A record with a random unit vector of `dim`.
    fn record(
        rng: &mut fastrand::Rng,
        id: RecordId,
        namespaces: Vec<String>,
        timestamp: u64,
        dim: usize,
    ) -> Record {
        Record {
            id,
            content: "x".into(),
            namespaces,
            strategy_id: None,
            metadata: Default::default(),
            timestamp: crate::types::Timestamp(timestamp),
            created_at: crate::types::Timestamp(timestamp),
            source_event_ids: Vec::new(),
            embedding: crate::record::Vector(unit(rng, dim)),
            embed_model: "test".into(),
            supersedes: None,
        }
    }

    /// A record in two of the scanned namespaces is scored once: counted twice, it would
    /// raise the k-th lower bound and push true top-k points out before the f32 pass.
    #[test]
    fn exact_in_over_overlapping_namespaces_equals_brute_force() {
        let mut rng = fastrand::Rng::with_seed(5);
        let dim = 32;
        let mut idx = MemIndex::new(dim, &Tuning::default());
        for i in 0..600 {
            let namespaces = match i % 3 {
                0 => vec!["/m/a".to_owned(), "/m/b".to_owned()],
                1 => vec!["/m/b".to_owned()],
                _ => vec!["/m/c".to_owned()],
            };
            let id = RecordId::generate(&mut rng);
            idx.insert(&record(&mut rng, id, namespaces, i, dim));
        }
        let filter = crate::record::NamespaceFilter::Prefix("/m/".into());
        let ids: Vec<u32> = idx
            .matching_namespaces(&filter)
            .iter()
            .map(|(_, id, _)| *id)
            .collect();
        assert_eq!(ids.len(), 3);
        for _ in 0..20 {
            let q = unit(&mut rng, dim);
            for k in [1, 10, 200, 599] {
                let got = idx
                    .exact_in(&q, k, &ids, |p| idx.doc(p).is_some(), usize::MAX)
                    .unwrap();
                let want = idx.hnsw.exact(&q, k, None);
                assert_eq!(got, want, "k {k}");
            }
        }
    }

    /// The timeline links stay what a sort of the live records says, through inserts in
    /// any time order, updates (a new point, maybe another namespace) and deletes.
    #[test]
    fn timeline_links_match_a_sort_of_the_live_records() {
        let mut rng = fastrand::Rng::with_seed(11);
        let dim = 8;
        let mut idx = MemIndex::new(dim, &Tuning::default());
        let mut ids: Vec<RecordId> = Vec::new();
        let random = |rng: &mut fastrand::Rng, id: RecordId| {
            let namespaces = match rng.usize(0..4) {
                0 => Vec::new(),
                1 => vec!["/a".to_owned()],
                2 => vec!["/b".to_owned(), "/a".to_owned()],
                _ => vec!["/c".to_owned()],
            };
            // Few distinct timestamps, so that ties (ordered by point) happen.
            let timestamp = rng.u64(0..50);
            record(rng, id, namespaces, timestamp, dim)
        };
        let mut compactions = 0;
        for step in 0..1_500 {
            match rng.usize(0..10) {
                0..=5 => {
                    let id = RecordId::generate(&mut rng);
                    ids.push(id.clone());
                    idx.insert(&random(&mut rng, id));
                }
                6 | 7 if !ids.is_empty() => {
                    let id = ids[rng.usize(0..ids.len())].clone();
                    idx.insert(&random(&mut rng, id));
                }
                _ if !ids.is_empty() => {
                    let id = ids.swap_remove(rng.usize(0..ids.len()));
                    idx.remove(&id);
                }
                _ => {}
            }
            if step % 50 != 49 {
                continue;
            }
            // Compaction renumbers the points and rebuilds the links.
            compactions += usize::from(idx.maybe_compact());
            let mut live: Vec<(u32, u64, u32)> = ids
                .iter()
                .map(|id| {
                    let p = idx.by_record[id];
                    idx.timeline_key(&idx.doc(p).unwrap().record, p)
                })
                .collect();
            live.sort_unstable();
            for (i, k) in live.iter().enumerate() {
                let near = |j: Option<usize>| {
                    j.and_then(|j| live.get(j))
                        .filter(|o| o.0 == k.0)
                        .map(|o| o.2)
                };
                let want = [near(i.checked_sub(1)), near(Some(i + 1))];
                assert_eq!(idx.neighbours(k.2), want, "step {step}, point {}", k.2);
            }
        }
        assert!(compactions > 0, "the test should compact");
    }

    /// A caller that must not block (an async worker) gets `None` at once while the
    /// indexer holds the state, and the answer once it is free.
    #[test]
    fn try_search_live_does_not_wait_for_the_indexer() {
        let dir = tempfile::tempdir().unwrap();
        let index = SearchIndex::open(dir.path(), Tuning::default()).unwrap();
        let memory_id = MemoryId::parse("a-0123456789").unwrap();
        let filter = RecordFilter::default();
        let q = Query {
            memory_id: &memory_id,
            text: "anything",
            vector: None,
            top_k: 5,
            filter: &filter,
            mode: Mode::Bm25,
            as_of: None,
            weights: None,
            neighbor_weight: None,
        };
        {
            let _indexing = index.write_state();
            assert!(index.try_search_live(&q).unwrap().is_none());
        }
        assert_eq!(index.try_search_live(&q).unwrap().map(|h| h.len()), Some(0));
    }
}
