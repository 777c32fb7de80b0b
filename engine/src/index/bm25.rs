//! BM25 full-text index over memory records, built on tantivy.
//!
//! # Layout
//!
//! One tantivy index holds the documents of every group (tenant, i.e. memory id). Each document
//! has three fields:
//!
//! * `key`: `u64`, indexed (so [`Bm25::delete`] is a delete-by-term) and a fast field (so the
//!   collector reads the key of a hit straight from a column, without a stored-document fetch);
//! * `group`: the tenant, indexed whole with the raw tokenizer, basic postings (no frequencies);
//!   used to delete a whole group and to count its documents;
//! * `ns`: the document's namespaces, each one raw term;
//! * `text`: analyzed with [`ANALYZER_NAME`] by us and added pre-tokenized, every term prefixed
//!   with the group's tag ([`group_tag`]: 16 hex digits of a hash of the group, then `:`);
//!   postings with term frequencies but no positions (there are no phrase queries), not stored.
//!
//! Nothing is stored: the index only maps text to keys; memlog keeps the records.
//!
//! # Queries
//!
//! User text is never handed to tantivy's query parser. It goes through the same analyzer as the
//! documents ([`Bm25::analyze`]); the distinct resulting terms, prefixed with the group's tag,
//! become `SHOULD` term clauses. Because the tag is part of every term, the terms themselves
//! keep the search inside the group: the query is a pure disjunction of term queries, which
//! tantivy answers with block-max WAND, skipping the blocks of postings that cannot reach the
//! current top k. (A `MUST` clause on a group term, as this index first did, turns the query
//! into an intersection that scores every document of the group that holds any query term:
//! linear in the size of the group. At 100k records that was most of a query's time.)
//! A namespace restriction ([`Bm25::search_scoped`]) is either a `MUST` clause scored at 0
//! ([`NsScope::Required`]: only the namespaces' documents are visited, the right plan when
//! they are a small share of the group) or a per-segment bitset of their documents that the
//! collector tests ([`NsScope::Collected`]: block-max WAND stays on, the right plan for a
//! large share).
//! Scores are tantivy's BM25 (k1 = 1.2, b = 0.75, idf = ln(1 + (N - n + 0.5) / (n + 0.5))).
//! Repeated query terms count once.
//!
//! The per-key filter runs inside collection: a custom [`Collector`] drives the weight per
//! segment, skips deleted documents, reads the key column, applies the filter and keeps a
//! bounded heap of the best k accepted hits. A selective filter therefore still yields k results
//! when k matching documents pass it. Ties are broken by smaller key first, so results are
//! deterministic.
//!
//! # Durability and visibility
//!
//! [`Bm25::commit`] runs tantivy's two-phase commit with the checkpoint (memlog's LSN) as the
//! commit payload, so the documents and the checkpoint become durable atomically; the reader is
//! then reloaded by hand ([`ReloadPolicy::Manual`]). Documents added since the last commit are
//! lost on a crash or drop: the caller replays its log from [`Bm25::checkpoint`].
//!
//! Tantivy searches only committed segments, and a commit is expensive for the searches
//! around it: it writes a segment and fsyncs, the readers reload, and ever more small
//! segments are merged in the background. So changes are made searchable without one:
//! [`Bm25::publish`] moves the changes since the last publish into an in-memory *delta*,
//! and searches read the last commit's segments and the delta together. The delta is a
//! short list of immutable chunks, each with its own small inverted index (term →
//! document, frequency), merged pairwise like a binary counter so a search looks into
//! O(log n) of them; a map from each key changed since the commit to its live version
//! tells which committed and delta documents are superseded. Publishing builds a new
//! view (searcher + chunks + that map) and swaps it in: a search clones an `Arc` of the
//! view and never waits on the writer. A commit swaps in the new searcher with an empty
//! delta. Scores do not depend on where a document is: the statistics add the delta's
//! counts to the segments' (a document deleted since the commit still counts, as in a
//! segment until it is merged), and the delta scores with tantivy's arithmetic. With
//! deletes the counts are approximate either way: tantivy also drops, at commit, a
//! segment whose documents are all deleted.
//!
//! The writer runs one indexing thread with a small memory budget; tantivy's default
//! `LogMergePolicy` merges small segments in the background.
//!
//! # Statistics
//!
//! N (the documents of the group), the document frequencies (of the group's tagged terms) and
//! the average length are per group, so one tenant's documents do not change another's scores.
//! The group's token total is the sum of its documents' field lengths, read once per segment
//! from the group term's postings and the fieldnorms and cached by segment (segments are
//! immutable; a commit adds small ones, a merge replaces some). All of them count deleted
//! documents until their segment is merged. Field
//! lengths are stored as tantivy's one-byte fieldnorm code, exact up to 40 tokens and
//! approximate beyond; [`score_exact`] applies the same quantisation so its scores match.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as MemOrder};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::directory::MmapDirectory;
use tantivy::fieldnorm::FieldNormReader;
use tantivy::query::{
    Bm25StatisticsProvider, BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery, Weight,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, PreTokenizedString, RemoveLongFilter,
    SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer, Token, TokenStream,
};
use tantivy::{
    DocId, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Score, Searcher, SegmentOrdinal,
    SegmentReader, TantivyDocument, TantivyError, Term,
};

use crate::{Error, Result};

/// Name under which the analyzer is registered in the index's tokenizer manager.
///
/// Changing what the analyzer does (stop words, stemmer, length limit) changes the terms in the
/// index: bump the name, so that an index written with the old analyzer fails to open (schema
/// mismatch) instead of silently answering badly, and rebuild it.
pub const ANALYZER_NAME: &str = "memlog_en_v2";

/// BM25 term-frequency saturation, as in tantivy's scorer.
const K1: f32 = 1.2;
/// BM25 length normalisation, as in tantivy's scorer.
const B: f32 = 0.75;
/// Tokens of this many bytes or more are dropped (hashes, URLs, base64 and such).
const MAX_TOKEN_BYTES: usize = 40;
/// Writer arena for the single indexing thread; a segment is flushed when it fills.
const WRITER_MEMORY_BYTES: usize = 32_000_000;

const KEY_FIELD: &str = "key";
const GROUP_FIELD: &str = "group";
/// The record's namespaces, each one raw term: a namespace filter becomes a required
/// clause, so tantivy skips other namespaces' documents instead of scoring them.
const NS_FIELD: &str = "ns";
const TEXT_FIELD: &str = "text";

/// English stop words, removed before stemming.
///
/// Lucene's 33-word list (tantivy's `Language::English`) keeps question words, pronouns and
/// auxiliaries. In conversational memory those are very common in the documents (chat turns are
/// full of "what", "did", "you", "how") yet carry no topic, and questions put to the memory are
/// made mostly of them ("When did she go to ...?"): with BM25 they still earn an idf of 2–4 each
/// and pull up turns that merely ask something. This list is NLTK's English list (question words,
/// pronouns, auxiliaries, the fragments left by splitting contractions on the apostrophe: "don",
/// "t", "ll", ...), without "won" (a past tense that matters: "won a prize"), plus a few
/// conversational fillers. Measured on LoCoMo's dev split (5 conversations, 760 questions of
/// categories 1–4, one document per turn as "Speaker: text", BM25 per conversation),
/// hit@5 / recall@10: no stop words 0.546 / 0.564, Lucene's list 0.543 / 0.565, this list
/// 0.607 / 0.605 (0.554 / 0.570 without stemming). Negations ("not", "no") are dropped too; BM25
/// has no use for them.
#[rustfmt::skip]
pub(crate) const STOP_WORDS: &[&str] = &[
    "i", "me", "my", "myself", "we", "our", "ours", "ourselves", "you", "your", "yours", "yourself",
    "yourselves", "he", "him", "his", "himself", "she", "her", "hers", "herself", "it", "its",
    "itself", "they", "them", "their", "theirs", "themselves", "what", "which", "who", "whom",
    "this", "that", "these", "those", "am", "is", "are", "was", "were", "be", "been", "being",
    "have", "has", "had", "having", "do", "does", "did", "doing", "a", "an", "the", "and", "but",
    "if", "or", "because", "as", "until", "while", "of", "at", "by", "for", "with", "about",
    "against", "between", "into", "through", "during", "before", "after", "above", "below", "to",
    "from", "up", "down", "in", "out", "on", "off", "over", "under", "again", "further", "then",
    "once", "here", "there", "when", "where", "why", "how", "all", "any", "both", "each", "few",
    "more", "most", "other", "some", "such", "no", "nor", "not", "only", "own", "same", "so",
    "than", "too", "very", "s", "t", "can", "will", "just", "don", "should", "now", "d", "ll", "m",
    "o", "re", "ve", "y", "ain", "aren", "couldn", "didn", "doesn", "hadn", "hasn", "haven", "isn",
    "ma", "mightn", "mustn", "needn", "shan", "shouldn", "wasn", "weren", "wouldn", "would",
    "could", "also", "really", "oh", "yeah",
];

fn build_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(StopWordFilter::remove(
            STOP_WORDS.iter().map(|w| (*w).to_owned()),
        ))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The analyzer, built once; callers clone it (cheap: the stop-word set is shared).
fn analyzer() -> TextAnalyzer {
    static ANALYZER: OnceLock<TextAnalyzer> = OnceLock::new();
    ANALYZER.get_or_init(build_analyzer).clone()
}

/// The prefix of every text term of `group`: 16 hex digits of its FNV-1a hash and `:` (which
/// the analyzer never emits, as it splits on non-alphanumerics). Two groups whose hashes
/// collide would share term statistics and candidates; callers resolve hits through their
/// own per-group key map, so a foreign key is dropped, never returned.
fn group_tag(group: &str) -> String {
    format!("{:016x}:", crate::embed::fnv1a(&[group.as_bytes()]))
}

/// BM25 statistics for one group: N is the group's document count (its group-term
/// frequency), document frequencies are those of the group's tagged terms, the average
/// length is the index's.
struct GroupStats<'a> {
    searcher: &'a Searcher,
    group_docs: u64,
    group_tokens: u64,
    /// The delta's document frequencies of the query's terms (empty without a delta).
    delta_df: Vec<(Term, u64)>,
}

impl Bm25StatisticsProvider for GroupStats<'_> {
    fn total_num_tokens(&self, _field: Field) -> tantivy::Result<u64> {
        Ok(self.group_tokens)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.group_docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let delta = self
            .delta_df
            .iter()
            .find(|(t, _)| t == term)
            .map_or(0, |(_, df)| *df);
        Ok(self.searcher.doc_freq(term)? + delta)
    }
}

/// The distinct terms of `text`, in order of first appearance.
fn query_terms(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    Bm25::analyze(text)
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

#[derive(Clone, Copy)]
struct Fields {
    key: Field,
    group: Field,
    ns: Field,
    text: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let key = builder.add_u64_field(KEY_FIELD, INDEXED | FAST);
    let group = builder.add_text_field(GROUP_FIELD, STRING);
    let ns = builder.add_text_field(NS_FIELD, STRING);
    let text = builder.add_text_field(
        TEXT_FIELD,
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER_NAME)
                .set_index_option(IndexRecordOption::WithFreqs),
        ),
    );
    (
        builder.build(),
        Fields {
            key,
            group,
            ns,
            text,
        },
    )
}

/// A BM25 full-text index of `(key, group, text)` documents. See the module documentation.
pub struct Bm25 {
    /// The writer and the changes not yet published. Writes, [`Bm25::publish`] and
    /// [`Bm25::commit`] take this lock; searches never do.
    pending: Mutex<Pending>,
    reader: IndexReader,
    /// What searches see: the last commit's searcher and what was published since. A
    /// search clones the `Arc` and lets go of the lock at once; publish and commit swap in
    /// a new view.
    view: RwLock<Arc<View>>,
    fields: Fields,
    checkpoint: AtomicU64,
    /// Where the index lives, for error messages (`None` in RAM).
    path: Option<PathBuf>,
    /// Group → segment → the group's token total in that segment.
    group_tokens: Mutex<HashMap<String, HashMap<tantivy::index::SegmentId, u64>>>,
}

/// The writer, and what was written since the last publish.
struct Pending {
    writer: IndexWriter<TantivyDocument>,
    /// Changes since the last publish, in order; they are in the writer too.
    staged: Vec<Change>,
    /// The next [`DeltaDoc::seq`].
    next_seq: u64,
    /// Documents added since the last commit.
    uncommitted_docs: u64,
    /// When the first change after the last commit was made.
    first_uncommitted: Option<Instant>,
}

/// A change made since the last commit, as the delta needs it.
enum Change {
    Add(DeltaDoc, Vec<(String, u32)>),
    Delete(u64),
    DeleteGroup(String),
}

impl Pending {
    fn change(&mut self, change: Change) {
        if let Change::Add(..) = change {
            self.uncommitted_docs += 1;
        }
        self.first_uncommitted.get_or_insert_with(Instant::now);
        self.staged.push(change);
    }
}

/// A document added since the last commit, as the delta keeps it.
#[derive(Clone)]
struct DeltaDoc {
    key: u64,
    /// Order of addition since the commit: the document is live while `View::newest` maps
    /// its key to this number.
    seq: u64,
    group: Arc<str>,
    namespaces: Arc<[String]>,
    /// Length in tokens, quantised as tantivy's fieldnorms are.
    len: u32,
}

/// Documents published together (or merged from several publishes), with an inverted index
/// of their own. Immutable once in a [`View`].
#[derive(Default)]
struct Chunk {
    docs: Vec<DeltaDoc>,
    /// Group-tagged term → (index in `docs`, term frequency), in `docs` order.
    postings: HashMap<String, Vec<(u32, u32)>>,
    /// Group → (documents, their quantised lengths summed).
    groups: HashMap<Arc<str>, (u64, u64)>,
}

impl Chunk {
    fn push(&mut self, doc: DeltaDoc, freqs: &[(String, u32)]) {
        let at = u32::try_from(self.docs.len()).expect("fewer than 2^32 uncommitted documents");
        for (term, tf) in freqs {
            self.postings
                .entry(term.clone())
                .or_default()
                .push((at, *tf));
        }
        let group = self.groups.entry(Arc::clone(&doc.group)).or_default();
        group.0 += 1;
        group.1 += u64::from(doc.len);
        self.docs.push(doc);
    }

    /// `older` followed by `newer`, as one chunk.
    fn merged(older: &Chunk, newer: &Chunk) -> Chunk {
        let offset = u32::try_from(older.docs.len()).expect("fewer than 2^32 documents");
        let mut postings = older.postings.clone();
        for (term, list) in &newer.postings {
            postings
                .entry(term.clone())
                .or_default()
                .extend(list.iter().map(|&(d, tf)| (d + offset, tf)));
        }
        let mut groups = older.groups.clone();
        for (group, (docs, tokens)) in &newer.groups {
            let g = groups.entry(Arc::clone(group)).or_default();
            g.0 += docs;
            g.1 += tokens;
        }
        let mut docs = Vec::with_capacity(older.docs.len() + newer.docs.len());
        docs.extend(older.docs.iter().cloned());
        docs.extend(newer.docs.iter().cloned());
        Chunk {
            docs,
            postings,
            groups,
        }
    }
}

/// What a search sees: the searcher of the last commit, and the delta, i.e. the changes
/// published since (see the module documentation).
///
/// The delta's statistics follow tantivy's: a document deleted or replaced since the
/// commit still counts in N, the document frequencies and the average length, as a
/// deleted document counts in tantivy until its segment is merged (or, if all of its
/// segment is deleted, until the next commit drops the segment).
struct View {
    searcher: Searcher,
    /// Published documents, oldest first. At most about log2 of their number: a new chunk
    /// is merged into the one before it while that one is not larger.
    chunks: Vec<Arc<Chunk>>,
    /// Every key added or deleted since the commit → the `seq` of its live version in the
    /// delta, or `None` if deleted. Committed documents with these keys are not live.
    newest: HashMap<u64, Option<u64>>,
    /// The `seq` of every delta document that is not live (replaced or deleted since):
    /// usually empty, so a search rarely looks anything up for a delta document.
    superseded: HashSet<u64>,
    /// Groups deleted since the commit: none of their committed documents is live.
    dropped: HashSet<String>,
}

impl View {
    fn committed(searcher: Searcher) -> View {
        View {
            searcher,
            chunks: Vec::new(),
            newest: HashMap::new(),
            superseded: HashSet::new(),
            dropped: HashSet::new(),
        }
    }

    /// This view with `changes` published on top.
    fn with(&self, changes: Vec<Change>, next_seq: &mut u64) -> View {
        let mut chunks = self.chunks.clone();
        let mut newest = self.newest.clone();
        let mut superseded = self.superseded.clone();
        let mut dropped = self.dropped.clone();
        let mut chunk = Chunk::default();
        // Records `key`'s new state; its previous delta version, if any, is no longer live.
        let mut set = |key: u64, seq: Option<u64>| {
            if let Some(Some(old)) = newest.insert(key, seq) {
                superseded.insert(old);
            }
        };
        for change in changes {
            match change {
                Change::Add(mut doc, freqs) => {
                    doc.seq = *next_seq;
                    *next_seq += 1;
                    set(doc.key, Some(doc.seq));
                    chunk.push(doc, &freqs);
                }
                Change::Delete(key) => set(key, None),
                Change::DeleteGroup(group) => {
                    let docs = chunks.iter().flat_map(|c| c.docs.iter());
                    for doc in docs.chain(chunk.docs.iter()) {
                        if *doc.group == *group {
                            set(doc.key, None);
                        }
                    }
                    dropped.insert(group);
                }
            }
        }
        if !chunk.docs.is_empty() {
            let mut chunk = Arc::new(chunk);
            // Like a binary counter: each document is copied O(log n) times, and a search
            // looks into O(log n) chunks.
            while let Some(last) = chunks.last()
                && last.docs.len() <= chunk.docs.len()
            {
                chunk = Arc::new(Chunk::merged(last, &chunk));
                chunks.pop();
            }
            chunks.push(chunk);
        }
        View {
            searcher: self.searcher.clone(),
            chunks,
            newest,
            superseded,
            dropped,
        }
    }

    /// The delta's documents of `group` and their lengths summed (deleted ones included).
    fn group_totals(&self, group: &str) -> (u64, u64) {
        self.chunks
            .iter()
            .filter_map(|c| c.groups.get(group))
            .fold((0, 0), |(d, t), (docs, tokens)| (d + docs, t + tokens))
    }

    /// The delta's document frequency of a group-tagged term (deleted documents included).
    fn doc_freq(&self, tagged: &str) -> u64 {
        self.chunks
            .iter()
            .filter_map(|c| c.postings.get(tagged))
            .map(|list| list.len() as u64)
            .sum()
    }

    /// BM25 over the delta's live documents of `group`: `weights` are idf × (k1 + 1) of the
    /// `tagged` terms, from statistics over the committed documents and the delta together.
    /// Same arithmetic as tantivy's scorer, so scores compare with the committed hits'.
    fn search(
        &self,
        group: &str,
        tagged: &[String],
        weights: &[f32],
        avg_len: f32,
        namespaces: Option<&[String]>,
        filter: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Vec<Hit> {
        let mut hits = Vec::new();
        let mut scores = Vec::new();
        for chunk in &self.chunks {
            let lists: Vec<(&[(u32, u32)], f32)> = tagged
                .iter()
                .zip(weights)
                .filter_map(|(t, w)| chunk.postings.get(t).map(|l| (l.as_slice(), *w)))
                .collect();
            if lists.is_empty() {
                continue;
            }
            // Dense per chunk: the delta is small (see `Tuning::bm25_commit_docs`).
            scores.clear();
            scores.resize(chunk.docs.len(), 0.0f32);
            for (list, weight) in lists {
                for &(d, tf) in list {
                    let len = chunk.docs[d as usize].len;
                    let tf = tf as f32;
                    let norm = K1 * (1.0 - B + B * len as f32 / avg_len);
                    scores[d as usize] += weight * (tf / (tf + norm));
                }
            }
            for (doc, &score) in chunk.docs.iter().zip(&scores) {
                // Every posting adds a positive score (idf > 0).
                if score > 0.0
                    && (self.superseded.is_empty() || !self.superseded.contains(&doc.seq))
                    && *doc.group == *group
                    && namespaces.is_none_or(|ns| doc.namespaces.iter().any(|n| ns.contains(n)))
                    && filter.is_none_or(|f| f(doc.key))
                {
                    hits.push(Hit {
                        score,
                        key: doc.key,
                    });
                }
            }
        }
        hits
    }
}

impl std::fmt::Debug for Bm25 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bm25")
            .field("path", &self.path)
            .field("checkpoint", &self.checkpoint())
            .field("num_docs", &self.num_docs())
            .finish_non_exhaustive()
    }
}

impl Bm25 {
    /// Opens (or creates) the index in `dir`. Its checkpoint is read back from the last commit's
    /// payload.
    ///
    /// Takes tantivy's writer lock on the directory: a second `open` of the same directory, in
    /// this process or another, fails until the first `Bm25` is dropped.
    pub fn open(dir: &Path) -> Result<Bm25> {
        let path = Some(dir.to_path_buf());
        std::fs::create_dir_all(dir).map_err(|e| Error::Storage {
            path: dir.to_path_buf(),
            message: format!("creating the BM25 index directory: {e}"),
        })?;
        let directory = MmapDirectory::open(dir).map_err(|e| Error::Storage {
            path: dir.to_path_buf(),
            message: format!("opening the BM25 index directory: {e}"),
        })?;
        let (schema, fields) = schema();
        let index =
            Index::open_or_create(directory, schema).map_err(|e| tantivy_error(&path, e))?;
        Self::from_index(index, fields, path)
    }

    /// An index in RAM (tests, throw-away indexes).
    pub fn in_memory() -> Result<Bm25> {
        let (schema, fields) = schema();
        Self::from_index(Index::create_in_ram(schema), fields, None)
    }

    fn from_index(index: Index, fields: Fields, path: Option<PathBuf>) -> Result<Bm25> {
        let err = |e| tantivy_error(&path, e);
        index.tokenizers().register(ANALYZER_NAME, analyzer());
        let checkpoint = match index.load_metas().map_err(err)?.payload {
            None => 0,
            Some(payload) => payload.parse().map_err(|_| Error::Corruption {
                path: display_path(&path),
                message: format!("BM25 commit payload {payload:?} is not a checkpoint"),
            })?,
        };
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY_BYTES)
            .map_err(err)?;
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(err)?;
        let view = View::committed(reader.searcher());
        Ok(Bm25 {
            pending: Mutex::new(Pending {
                writer,
                staged: Vec::new(),
                next_seq: 0,
                uncommitted_docs: 0,
                first_uncommitted: None,
            }),
            reader,
            view: RwLock::new(Arc::new(view)),
            fields,
            checkpoint: AtomicU64::new(checkpoint),
            path,
            group_tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The sum of the text lengths (as fieldnorms) of `group`'s documents in `searcher`'s
    /// segments, deleted ones included (as in N and the document frequencies).
    fn group_tokens(&self, searcher: &Searcher, group: &str) -> tantivy::Result<u64> {
        let term = Term::from_field_text(self.fields.group, group);
        let segments = searcher.segment_readers();
        let mut cache = self.group_tokens.lock().unwrap_or_else(|p| p.into_inner());
        if !cache.contains_key(group) {
            cache.insert(group.to_owned(), HashMap::new());
        }
        let Some(per_segment) = cache.get_mut(group) else {
            return Ok(0);
        };
        let mut total = 0u64;
        for segment in segments {
            if let Some(t) = per_segment.get(&segment.segment_id()) {
                total += t;
                continue;
            }
            let norms = segment.get_fieldnorms_reader(self.fields.text)?;
            let mut tokens = 0u64;
            if let Some(mut postings) = segment
                .inverted_index(self.fields.group)?
                .read_postings(&term, IndexRecordOption::Basic)?
            {
                let mut doc = postings.doc();
                while doc != tantivy::TERMINATED {
                    tokens += u64::from(norms.fieldnorm(doc));
                    doc = postings.advance();
                }
            }
            per_segment.insert(segment.segment_id(), tokens);
            total += tokens;
        }
        // Forget segments merged away.
        if per_segment.len() > 2 * segments.len() + 8 {
            let live: HashSet<_> = segments.iter().map(SegmentReader::segment_id).collect();
            per_segment.retain(|id, _| live.contains(id));
        }
        Ok(total)
    }

    /// The last LSN made durable by `commit` (0 for a new index).
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint.load(MemOrder::Acquire)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What searches see now.
    fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn set_view(&self, view: View) {
        let old = std::mem::replace(
            &mut *self.view.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(view),
        );
        // Freed here, outside the lock, if no search holds it.
        drop(old);
    }

    /// Adds a document. `key` is unique across the index (memlog's internal record number);
    /// `group` is the tenant (the memory id string): searches never cross groups.
    ///
    /// Adding a key that is already present creates a second document; use [`Bm25::replace`]
    /// when that can happen (e.g. replaying a log over an index that may already hold some of
    /// it).
    pub fn add(&self, key: u64, group: &str, text: &str) -> Result<()> {
        self.add_scoped(key, group, text, &[])
    }

    /// [`Bm25::add`] with the document's namespaces, for [`Bm25::search_scoped`].
    pub fn add_scoped(
        &self,
        key: u64,
        group: &str,
        text: &str,
        namespaces: &[String],
    ) -> Result<()> {
        let mut doc = TantivyDocument::new();
        for ns in namespaces {
            doc.add_text(self.fields.ns, ns);
        }
        doc.add_u64(self.fields.key, key);
        doc.add_text(self.fields.group, group);
        let tag = group_tag(group);
        let terms: Vec<String> = Bm25::analyze(text)
            .into_iter()
            .map(|t| format!("{tag}{t}"))
            .collect();
        let mut freqs: HashMap<&str, u32> = HashMap::new();
        for t in &terms {
            *freqs.entry(t.as_str()).or_default() += 1;
        }
        let mut freqs: Vec<(String, u32)> =
            freqs.into_iter().map(|(t, f)| (t.to_owned(), f)).collect();
        freqs.sort_unstable();
        let delta = DeltaDoc {
            key,
            seq: 0,
            group: Arc::from(group),
            namespaces: Arc::from(namespaces),
            len: quantised_len(terms.len()),
        };
        let tokens = terms
            .into_iter()
            .enumerate()
            .map(|(position, text)| Token {
                offset_from: 0,
                offset_to: 0,
                position,
                text,
                position_length: 1,
            })
            .collect();
        doc.add_pre_tokenized_text(
            self.fields.text,
            PreTokenizedString {
                text: String::new(),
                tokens,
            },
        );
        let mut pending = self.pending();
        pending
            .writer
            .add_document(doc)
            .map_err(|e| tantivy_error(&self.path, e))?;
        pending.change(Change::Add(delta, freqs));
        Ok(())
    }

    /// Deletes any document with this key, then adds this one (an upsert).
    pub fn replace(&self, key: u64, group: &str, text: &str) -> Result<()> {
        self.delete(key)?;
        self.add(key, group, text)
    }

    /// Removes the document with this key (no-op if absent). It also removes a document added
    /// earlier in the same uncommitted batch.
    pub fn delete(&self, key: u64) -> Result<()> {
        let mut pending = self.pending();
        pending
            .writer
            .delete_term(Term::from_field_u64(self.fields.key, key));
        pending.change(Change::Delete(key));
        Ok(())
    }

    /// Deletes every document of a group (memory deleted).
    pub fn delete_group(&self, group: &str) -> Result<()> {
        let mut pending = self.pending();
        pending
            .writer
            .delete_term(Term::from_field_text(self.fields.group, group));
        pending.change(Change::DeleteGroup(group.to_owned()));
        drop(pending);
        // Recomputed from the postings if the group is searched again.
        self.group_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(group);
        Ok(())
    }

    /// Makes everything added or deleted so far visible to searches, at once, without
    /// making it durable: the changes go into the in-memory delta (see the module
    /// documentation). Cheap: it does not touch tantivy.
    pub fn publish(&self) -> Result<()> {
        let mut pending = self.pending();
        if pending.staged.is_empty() {
            return Ok(());
        }
        let changes = std::mem::take(&mut pending.staged);
        let next = self.view().with(changes, &mut pending.next_seq);
        self.set_view(next);
        Ok(())
    }

    /// Makes everything added or deleted so far durable together with `checkpoint`, and
    /// visible to searches when it returns (it publishes too).
    ///
    /// `checkpoint` must not be lower than the current one. If this fails, the index on disk is
    /// still at the previous commit; drop this `Bm25`, reopen and replay from
    /// [`Bm25::checkpoint`].
    pub fn commit(&self, checkpoint: u64) -> Result<()> {
        let mut pending = self.pending();
        if checkpoint < self.checkpoint() {
            return Err(Error::Invalid(format!(
                "BM25 checkpoint would go back from {} to {checkpoint}",
                self.checkpoint()
            )));
        }
        let err = |e| tantivy_error(&self.path, e);
        let mut prepared = pending.writer.prepare_commit().map_err(err)?;
        prepared.set_payload(&checkpoint.to_string());
        prepared.commit().map_err(err)?;
        self.checkpoint.store(checkpoint, MemOrder::Release);
        self.reader.reload().map_err(err)?;
        // The new searcher holds everything: the delta goes, in the same swap (the lock
        // on `pending` keeps publishes out meanwhile).
        pending.staged.clear();
        pending.uncommitted_docs = 0;
        pending.first_uncommitted = None;
        self.set_view(View::committed(self.reader.searcher()));
        Ok(())
    }

    /// Documents added since the last commit, and when the first change after it was
    /// made (`None` when nothing changed): what a caller weighs to decide when to commit.
    pub fn uncommitted(&self) -> (u64, Option<Instant>) {
        let pending = self.pending();
        (pending.uncommitted_docs, pending.first_uncommitted)
    }

    /// Top-k by BM25 (k1 = 1.2, b = 0.75), best first, within `group`, only keys for which
    /// `filter` returns true.
    ///
    /// Query text goes through the same analyzer as documents; user text is never parsed as
    /// query syntax (quotes, colons, AND/OR, unbalanced brackets are just text). An empty or
    /// stop-word-only query, or `k == 0`, gives an empty result. Only documents that contain at
    /// least one query term are returned. Equal scores are ordered by key.
    pub fn search(
        &self,
        group: &str,
        query: &str,
        k: usize,
        filter: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<(u64, f32)>> {
        self.search_scoped(group, query, k, None, filter)
    }

    /// [`Bm25::search`] restricted to documents added (with [`Bm25::add_scoped`]) in one
    /// of `namespaces`, when given. The restriction is a required clause of the query, so
    /// documents of other namespaces are skipped, not scored and then filtered.
    pub fn search_scoped(
        &self,
        group: &str,
        query: &str,
        k: usize,
        namespaces: Option<(&[String], NsScope)>,
        filter: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<(u64, f32)>> {
        let terms = query_terms(query);
        if terms.is_empty() || k == 0 || namespaces.is_some_and(|(ns, _)| ns.is_empty()) {
            return Ok(Vec::new());
        }
        let view = self.view();
        let searcher = &view.searcher;
        let err = |e| tantivy_error(&self.path, e);
        let committed_docs = searcher
            .doc_freq(&Term::from_field_text(self.fields.group, group))
            .map_err(err)?;
        let (delta_docs, delta_tokens) = view.group_totals(group);
        let group_docs = committed_docs + delta_docs;
        if group_docs == 0 {
            return Ok(Vec::new());
        }
        let tag = group_tag(group);
        let tagged: Vec<String> = terms.iter().map(|t| format!("{tag}{t}")).collect();
        let text_terms: Vec<Term> = tagged
            .iter()
            .map(|t| Term::from_field_text(self.fields.text, t))
            .collect();
        let group_tokens = if committed_docs > 0 {
            self.group_tokens(searcher, group).map_err(err)?
        } else {
            0
        };
        let stats = GroupStats {
            searcher,
            group_docs,
            group_tokens: group_tokens + delta_tokens,
            delta_df: if view.chunks.is_empty() {
                Vec::new()
            } else {
                text_terms
                    .iter()
                    .zip(&tagged)
                    .map(|(term, t)| (term.clone(), view.doc_freq(t)))
                    .collect()
            },
        };
        let mut hits = Vec::new();
        // A group deleted since the commit has no committed documents left to find.
        if committed_docs > 0 && !view.dropped.contains(group) {
            // Committed documents changed since the commit are the delta's to answer for.
            let superseded = |key: u64| -> bool {
                !view.newest.contains_key(&key) && filter.is_none_or(|f| f(key))
            };
            let filter: Option<&(dyn Fn(u64) -> bool + Sync)> = if view.newest.is_empty() {
                filter
            } else {
                Some(&superseded)
            };
            hits = self
                .search_committed(searcher, &stats, &text_terms, k, namespaces, filter)
                .map_err(err)?;
        }
        if !view.chunks.is_empty() {
            let avg_len = stats.group_tokens as f32 / group_docs as f32;
            let mut weights = Vec::with_capacity(text_terms.len());
            for term in &text_terms {
                let df = stats.doc_freq(term).map_err(err)?;
                weights.push(idf(df, group_docs) * (1.0 + K1));
            }
            let scope = namespaces.map(|(ns, _)| ns);
            hits.extend(view.search(group, &tagged, &weights, avg_len, scope, filter));
            hits.sort_unstable_by(|a, b| b.cmp(a));
            hits.truncate(k);
        }
        Ok(hits.into_iter().map(|h| (h.key, h.score)).collect())
    }

    /// The committed part of [`Bm25::search_scoped`]: tantivy, with `stats` (which count
    /// the delta's documents too).
    fn search_committed(
        &self,
        searcher: &Searcher,
        stats: &GroupStats<'_>,
        text_terms: &[Term],
        k: usize,
        namespaces: Option<(&[String], NsScope)>,
        filter: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> tantivy::Result<Vec<Hit>> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(text_terms.len() + 1);
        let mut ns_terms = None;
        if let Some((namespaces, NsScope::Collected)) = namespaces {
            ns_terms = Some(
                namespaces
                    .iter()
                    .map(|ns| Term::from_field_text(self.fields.ns, ns))
                    .collect(),
            );
        } else if let Some((namespaces, NsScope::Required)) = namespaces {
            let any_ns: Vec<(Occur, Box<dyn Query>)> = namespaces
                .iter()
                .map(|ns| {
                    let q: Box<dyn Query> = Box::new(TermQuery::new(
                        Term::from_field_text(self.fields.ns, ns),
                        IndexRecordOption::Basic,
                    ));
                    (Occur::Should, q)
                })
                .collect();
            clauses.push((
                Occur::Must,
                Box::new(ConstScoreQuery::new(
                    Box::new(BooleanQuery::new(any_ns)),
                    0.0,
                )),
            ));
        }
        for term in text_terms {
            let clause: Box<dyn Query> =
                Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs));
            clauses.push((Occur::Should, clause));
        }
        let query = BooleanQuery::with_minimum_required_clauses(clauses, 1);
        let collector = TopKeys {
            k,
            filter,
            ns_terms,
            ns_field: self.fields.ns,
            best: Mutex::new(Vec::with_capacity(2 * k.min(1024))),
        };
        searcher.search_with_statistics_provider(&query, &collector, stats)
    }

    /// Number of live documents as of the last commit (the delta is not counted).
    pub fn num_docs(&self) -> u64 {
        self.view().searcher.num_docs()
    }

    /// Number of segments in the last committed state (for monitoring merges).
    pub fn num_segments(&self) -> usize {
        self.view().searcher.segment_readers().len()
    }

    /// The analyzer's output for `text` (for tests and for naive scoring over ad-hoc candidate
    /// sets): split on non-alphanumerics, drop tokens of 40 bytes or more, lowercase, fold to
    /// ASCII, remove English stop words, Snowball English (Porter2) stemming.
    pub fn analyze(text: &str) -> Vec<String> {
        let mut analyzer = analyzer();
        let mut stream = analyzer.token_stream(text);
        let mut tokens = Vec::new();
        while let Some(token) = stream.next() {
            tokens.push(token.text.clone());
        }
        tokens
    }
}

/// Exact BM25 over an ad-hoc set of documents (used for point-in-time queries over a candidate
/// set that is not in the index). Returns (index into docs, score) best first, top-k.
///
/// Same analyzer, same k1/b and idf formula as tantivy's scorer
/// (idf = ln(1 + (N - n + 0.5) / (n + 0.5))), with N, n and the average length taken over the
/// given docs, and document lengths quantised like tantivy's fieldnorms (exact up to 40
/// tokens; the average is of the quantised lengths, as the index's per-group average is),
/// so the scores equal what an index holding exactly these documents would give.
/// Repeated query terms count once; documents matching no query term are left out; equal scores
/// are ordered by index.
pub fn score_exact(query: &str, docs: &[&str], k: usize) -> Vec<(usize, f32)> {
    let terms = query_terms(query);
    if terms.is_empty() || docs.is_empty() || k == 0 {
        return Vec::new();
    }
    let docs: Vec<Vec<String>> = docs.iter().map(|d| Bm25::analyze(d)).collect();
    score_tokens(&terms, &docs, k)
}

/// BM25 of already analyzed, deduplicated query terms over analyzed documents; see
/// [`score_exact`].
pub(crate) fn score_tokens(terms: &[String], docs: &[Vec<String>], k: usize) -> Vec<(usize, f32)> {
    let slot: HashMap<&str, usize> = terms
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    // Per document: quantised length and the frequency of each query term.
    let mut freqs = Vec::with_capacity(docs.len());
    let mut doc_freq = vec![0u64; terms.len()];
    let mut total_tokens = 0u64;
    for doc in docs {
        // The index's average is over stored (quantised) lengths too: see `group_tokens`.
        total_tokens += u64::from(quantised_len(doc.len()));
        let mut tf = vec![0u32; terms.len()];
        for token in doc {
            if let Some(&i) = slot.get(token.as_str()) {
                tf[i] += 1;
            }
        }
        for (df, &f) in doc_freq.iter_mut().zip(&tf) {
            *df += u64::from(f > 0);
        }
        freqs.push((quantised_len(doc.len()), tf));
    }
    let n = docs.len() as u64;
    let avg_len = total_tokens as f32 / n as f32;
    let weights: Vec<f32> = doc_freq.iter().map(|&df| idf(df, n) * (1.0 + K1)).collect();
    let mut scored: Vec<(usize, f32)> = freqs
        .iter()
        .enumerate()
        .filter(|(_, (_, tf))| tf.iter().any(|&f| f > 0))
        .map(|(i, (len, tf))| {
            let norm = K1 * (1.0 - B + B * *len as f32 / avg_len);
            let score = tf
                .iter()
                .zip(&weights)
                .filter(|(f, _)| **f > 0)
                .map(|(&f, w)| w * (f as f32 / (f as f32 + norm)))
                .sum();
            (i, score)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

/// Tantivy's idf.
fn idf(doc_freq: u64, num_docs: u64) -> f32 {
    let x = ((num_docs - doc_freq) as f32 + 0.5) / (doc_freq as f32 + 0.5);
    (1.0 + x).ln()
}

/// A length as tantivy stores it: rounded down to the nearest value its one-byte fieldnorm
/// code can represent (exact up to 40).
fn quantised_len(len: usize) -> u32 {
    static TABLE: OnceLock<Vec<u32>> = OnceLock::new();
    let table = TABLE.get_or_init(|| (0..=255u8).map(FieldNormReader::id_to_fieldnorm).collect());
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    // The table is increasing and starts at 0, so the partition point is at least 1.
    table[table.partition_point(|&v| v <= len) - 1]
}

/// A hit: ordered so that "greater" is better (higher score, then smaller key).
#[derive(Clone, Copy, Debug)]
struct Hit {
    score: Score,
    key: u64,
}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.key.cmp(&self.key))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Hit {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Hit {}

/// Top-k keys by score, with an optional key filter applied during collection.
struct TopKeys<'a> {
    k: usize,
    filter: Option<&'a (dyn Fn(u64) -> bool + Sync)>,
    /// [`NsScope::Collected`]: only documents holding one of these terms are collected.
    ns_terms: Option<Vec<Term>>,
    ns_field: Field,
    /// The best `k` scores collected from the segments searched so far, best first. Their
    /// `k`-th is where the next segment's pruning starts: scores are comparable across
    /// segments (the statistics are the searcher's), so a document below it cannot make
    /// the top `k`. Without it, block-max WAND starts every segment from nothing.
    best: Mutex<Vec<Score>>,
}

impl TopKeys<'_> {
    /// The threshold a segment's pruning starts from: just below the `k`-th best score so
    /// far, so that a tie can still win on its smaller key.
    fn floor(&self) -> Score {
        let best = self.best.lock().unwrap_or_else(|p| p.into_inner());
        match best.get(self.k.saturating_sub(1)) {
            Some(&kth) if self.k > 0 => next_down(kth),
            _ => Score::NEG_INFINITY,
        }
    }

    /// Adds a segment's collected hits to the best scores.
    fn record(&self, hits: &[Hit]) {
        let mut best = self.best.lock().unwrap_or_else(|p| p.into_inner());
        best.extend(hits.iter().map(|h| h.score));
        best.sort_unstable_by(|a, b| b.total_cmp(a));
        best.truncate(self.k);
    }
}

/// How [`Bm25::search_scoped`] keeps to the given namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsScope {
    /// A required clause: tantivy visits only the namespaces' documents, and scores every
    /// one holding a query term (no block-max WAND).
    Required,
    /// A bitset of the namespaces' documents per segment, tested as hits are collected:
    /// block-max WAND still skips what cannot reach the top k.
    Collected,
}

/// One segment's top-k. Tantivy requires segment collectors to be `'static`, so the borrowed
/// filter cannot live here: [`TopKeys::collect_segment`] applies it (and the alive bitset)
/// before pushing. Used on its own, this collects every document it is given.
struct SegmentTopKeys {
    k: usize,
    keys: Column<u64>,
    /// Min-heap (through `Reverse`) of the best hits so far.
    heap: BinaryHeap<std::cmp::Reverse<Hit>>,
}

impl SegmentTopKeys {
    fn push(&mut self, doc: DocId, score: Score, filter: Option<&(dyn Fn(u64) -> bool + Sync)>) {
        let Some(key) = self.keys.first(doc) else {
            return;
        };
        if filter.is_some_and(|f| !f(key)) {
            return;
        }
        let hit = Hit { score, key };
        if self.heap.len() < self.k {
            self.heap.push(std::cmp::Reverse(hit));
        } else if let Some(mut worst) = self.heap.peek_mut()
            && hit > worst.0
        {
            worst.0 = hit;
        }
    }

    /// The score a document must exceed to be worth pushing. Just below the current k-th score,
    /// so that a tie can still win on its smaller key.
    fn threshold(&self) -> Score {
        match self.heap.peek() {
            Some(worst) if self.heap.len() >= self.k => next_down(worst.0.score),
            _ => Score::NEG_INFINITY,
        }
    }
}

/// The largest `f32` below `x` (for finite, positive `x`; BM25 scores are positive).
fn next_down(x: f32) -> f32 {
    if x > 0.0 && x.is_finite() {
        f32::from_bits(x.to_bits() - 1)
    } else {
        x
    }
}

impl SegmentCollector for SegmentTopKeys {
    type Fruit = Vec<Hit>;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.push(doc, score, None);
    }

    fn harvest(self) -> Vec<Hit> {
        self.heap.into_iter().map(|r| r.0).collect()
    }
}

impl Collector for TopKeys<'_> {
    type Fruit = Vec<Hit>;
    type Child = SegmentTopKeys;

    fn for_segment(
        &self,
        _segment_local_id: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<SegmentTopKeys> {
        Ok(SegmentTopKeys {
            k: self.k,
            keys: segment.fast_fields().u64(KEY_FIELD)?,
            heap: BinaryHeap::with_capacity(self.k.min(1024) + 1),
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(&self, fruits: Vec<Vec<Hit>>) -> tantivy::Result<Vec<Hit>> {
        let mut hits: Vec<Hit> = fruits.into_iter().flatten().collect();
        hits.sort_unstable_by(|a, b| b.cmp(a));
        hits.truncate(self.k);
        Ok(hits)
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment_ord: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<Vec<Hit>> {
        let mut top = self.for_segment(segment_ord, reader)?;
        let alive = reader.alive_bitset();
        let scope = match &self.ns_terms {
            None => None,
            Some(terms) => {
                let mut bits = tantivy::BitSet::with_max_value(reader.max_doc());
                let index = reader.inverted_index(self.ns_field)?;
                for term in terms {
                    if let Some(mut postings) =
                        index.read_postings(term, IndexRecordOption::Basic)?
                    {
                        let mut doc = postings.doc();
                        while doc != tantivy::TERMINATED {
                            bits.insert(doc);
                            doc = postings.advance();
                        }
                    }
                }
                Some(bits)
            }
        };
        let floor = self.floor();
        weight.for_each_pruning(floor, reader, &mut |doc, score| {
            if alive.is_none_or(|a| a.is_alive(doc))
                && scope.as_ref().is_none_or(|s| s.contains(doc))
            {
                top.push(doc, score, self.filter);
            }
            top.threshold().max(floor)
        })?;
        let hits = top.harvest();
        self.record(&hits);
        Ok(hits)
    }
}

fn display_path(path: &Option<PathBuf>) -> PathBuf {
    path.clone()
        .unwrap_or_else(|| PathBuf::from("<in-memory BM25 index>"))
}

/// Maps a tantivy error: damaged or incompatible index → `Corruption` (the index is derived data:
/// rebuild it from the log), misuse → `Invalid`, the rest (I/O, locks, threads) → `Storage`.
fn tantivy_error(path: &Option<PathBuf>, e: TantivyError) -> Error {
    let path = display_path(path);
    match e {
        // We build the schema ourselves, so a schema error means the index on disk was written
        // with another schema or analyzer name.
        TantivyError::DataCorruption(_)
        | TantivyError::IncompatibleIndex(_)
        | TantivyError::SchemaError(_) => Error::Corruption {
            path,
            message: format!("BM25 index: {e}"),
        },
        TantivyError::InvalidArgument(_) | TantivyError::FieldNotFound(_) => {
            Error::Invalid(format!("BM25 index at {}: {e}", path.display()))
        }
        _ => Error::Storage {
            path,
            message: format!("BM25 index: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const VOCAB: &[&str] = &[
        "apple", "banana", "cherry", "painting", "paints", "hiking", "mountain", "river",
        "camping", "guitar", "concert", "adoption", "agency", "school", "speech", "support",
        "group", "running", "race", "charity", "pottery", "class", "sunrise", "lake", "dog", "cat",
        "book", "library", "the", "of", "and", "you", "what", "did",
    ];

    /// A small deterministic generator (SplitMix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        /// `len` words of the test vocabulary.
        fn sentence(&mut self, len: usize) -> String {
            (0..len)
                .map(|_| VOCAB[self.below(VOCAB.len())])
                .collect::<Vec<_>>()
                .join(" ")
        }

        /// Between 1 and `max` words.
        fn words(&mut self, max: usize) -> String {
            let len = 1 + self.below(max);
            self.sentence(len)
        }
    }

    /// Textbook BM25 in f64 over the given (key, group, analyzed text) corpus, restricted to
    /// `group`, with N, document frequencies and average length all of the group.
    /// Lengths must stay ≤ 40 tokens (exact fieldnorms).
    fn naive(corpus: &[(u64, String, Vec<String>)], group: &str, query: &str) -> HashMap<u64, f64> {
        let docs: Vec<&Vec<String>> = corpus
            .iter()
            .filter(|(_, g, _)| g == group)
            .map(|(_, _, d)| d)
            .collect();
        assert!(docs.iter().all(|d| d.len() <= 40));
        let mut terms = Bm25::analyze(query);
        terms.sort();
        terms.dedup();
        let n = docs.len() as f64;
        let group_tokens: usize = docs.iter().map(|d| d.len()).sum();
        let avg = group_tokens as f64 / n;
        let mut out = HashMap::new();
        for (key, g, doc) in corpus {
            if g != group {
                continue;
            }
            let mut score = 0.0;
            for term in &terms {
                let tf = doc.iter().filter(|t| *t == term).count() as f64;
                if tf == 0.0 {
                    continue;
                }
                let df = docs.iter().filter(|d| d.contains(term)).count() as f64;
                let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                let norm = 1.2 * (1.0 - 0.75 + 0.75 * doc.len() as f64 / avg);
                score += idf * tf * (1.2 + 1.0) / (tf + norm);
            }
            if score > 0.0 {
                out.insert(*key, score);
            }
        }
        out
    }

    fn assert_close(got: f64, want: f64, what: &str) {
        assert!(
            ((got - want) / want).abs() < 1e-4,
            "{what}: got {got}, want {want}"
        );
    }

    fn keys(hits: &[(u64, f32)]) -> Vec<u64> {
        hits.iter().map(|h| h.0).collect()
    }

    #[test]
    fn bm25_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Bm25>();
    }

    #[test]
    fn analyzer_splits_folds_drops_stop_words_and_stems() {
        assert_eq!(
            Bm25::analyze("The Running dogs' CAFÉ, naïve!"),
            vec!["run", "dog", "cafe", "naiv"]
        );
        assert_eq!(Bm25::analyze("I didn't win; what did you do?"), vec!["win"]);
        let long = "x".repeat(MAX_TOKEN_BYTES);
        let short = "y".repeat(MAX_TOKEN_BYTES - 1);
        assert_eq!(Bm25::analyze(&format!("{long} {short}")), vec![short]);
        assert!(Bm25::analyze("").is_empty());
    }

    /// 150 random documents in three groups, committed in three segments; returns the
    /// index and the analyzed corpus `(key, group, tokens)`.
    fn three_segments(rng: &mut Rng) -> (Bm25, Vec<(u64, String, Vec<String>)>) {
        let index = Bm25::in_memory().unwrap();
        let mut corpus = Vec::new();
        for key in 0..150u64 {
            // Groups of different lengths (1–10, 13–22, 25–34 words), so an average length
            // taken over the whole index would be wrong for every group.
            let g = rng.below(3);
            let group = format!("g{g}");
            let len = 1 + rng.below(10) + 12 * g;
            let text = rng.sentence(len);
            index.add(key, &group, &text).unwrap();
            corpus.push((key, group, Bm25::analyze(&text)));
            if key % 50 == 49 {
                index.commit(key).unwrap();
            }
        }
        assert!(index.num_segments() > 1, "the test should span segments");
        (index, corpus)
    }

    #[test]
    fn scores_match_naive_bm25_across_segments() {
        let mut rng = Rng(7);
        let (index, corpus) = three_segments(&mut rng);
        for _ in 0..30 {
            let query = rng.words(4);
            for group in ["g0", "g1", "g2"] {
                let want = naive(&corpus, group, &query);
                let got = index.search(group, &query, 1000, None).unwrap();
                assert_eq!(got.len(), want.len(), "{query:?} in {group}");
                for pair in got.windows(2) {
                    assert!(pair[0].1 >= pair[1].1);
                }
                for (key, score) in got {
                    assert_close(score.into(), want[&key], &format!("{query:?} key {key}"));
                }
            }
        }
    }

    /// A small `k` prunes each segment from the best scores of the segments before it; the
    /// top `k` must still be the naive top `k`, with and without a filter (whose rejected
    /// documents must not raise the floor).
    #[test]
    fn top_k_across_segments_is_the_naive_top_k() {
        let mut rng = Rng(11);
        let (index, corpus) = three_segments(&mut rng);
        let odd = |key: u64| key % 2 == 1;
        for _ in 0..40 {
            let query = rng.words(3);
            for group in ["g0", "g1", "g2"] {
                let all = naive(&corpus, group, &query);
                for filtered in [false, true] {
                    let mut want: Vec<(u64, f64)> = all
                        .iter()
                        .filter(|(k, _)| !filtered || odd(**k))
                        .map(|(k, s)| (*k, *s))
                        .collect();
                    want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                    for k in [1, 3, 5] {
                        let filter: Option<&(dyn Fn(u64) -> bool + Sync)> =
                            if filtered { Some(&odd) } else { None };
                        let got = index.search(group, &query, k, filter).unwrap();
                        let what = format!("{query:?} in {group}, k {k}, filtered {filtered}");
                        assert_eq!(got.len(), k.min(want.len()), "{what}");
                        for ((key, score), (_, best)) in got.iter().zip(&want) {
                            assert!(!filtered || odd(*key), "{what}");
                            assert_close(f64::from(*score), *best, &what);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn groups_never_leak() {
        let index = Bm25::in_memory().unwrap();
        for (key, group) in [(1, "a"), (2, "ab"), (3, "b"), (4, "a"), (5, "A")] {
            index.add(key, group, "shared words about hiking").unwrap();
        }
        index.commit(1).unwrap();
        assert_eq!(
            keys(&index.search("a", "hiking", 10, None).unwrap()),
            [1, 4]
        );
        assert_eq!(keys(&index.search("ab", "hiking", 10, None).unwrap()), [2]);
        assert_eq!(keys(&index.search("A", "hiking", 10, None).unwrap()), [5]);
        assert!(index.search("c", "hiking", 10, None).unwrap().is_empty());
        assert!(index.search("", "hiking", 10, None).unwrap().is_empty());

        index.delete_group("a").unwrap();
        index.commit(2).unwrap();
        assert!(index.search("a", "hiking", 10, None).unwrap().is_empty());
        assert_eq!(keys(&index.search("ab", "hiking", 10, None).unwrap()), [2]);
        assert_eq!(index.num_docs(), 3);
    }

    #[test]
    fn filter_is_applied_during_collection() {
        let index = Bm25::in_memory().unwrap();
        // Shorter documents score higher, so the best hits have the smallest keys.
        for key in 0..300u64 {
            let padding = "filler ".repeat((key % 40) as usize);
            index.add(key, "g", &format!("apple {padding}")).unwrap();
        }
        index.commit(1).unwrap();
        let all = index.search("g", "apple", 1000, None).unwrap();
        assert_eq!(all.len(), 300);

        // Rejects the 290 best documents: only 10 pass, all must come back.
        let worst: HashSet<u64> = keys(&all[290..]).into_iter().collect();
        let only_worst = |key: u64| worst.contains(&key);
        let got = index.search("g", "apple", 10, Some(&only_worst)).unwrap();
        assert_eq!(got, all[290..].to_vec());

        let every_7th = |key: u64| key.is_multiple_of(7);
        let got = index.search("g", "apple", 10, Some(&every_7th)).unwrap();
        let want: Vec<(u64, f32)> = all
            .iter()
            .copied()
            .filter(|h| h.0.is_multiple_of(7))
            .take(10)
            .collect();
        assert_eq!(got, want);

        let none = |_: u64| false;
        assert!(
            index
                .search("g", "apple", 10, Some(&none))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn equal_scores_are_ordered_by_key() {
        let index = Bm25::in_memory().unwrap();
        for key in [9, 3, 7, 1, 5] {
            index.add(key, "g", "same text").unwrap();
        }
        index.commit(1).unwrap();
        assert_eq!(
            keys(&index.search("g", "text", 3, None).unwrap()),
            [1, 3, 5]
        );
    }

    #[test]
    fn delete_removes_documents() {
        let index = Bm25::in_memory().unwrap();
        for key in 1..=3 {
            index.add(key, "g", "river camping").unwrap();
        }
        index.commit(1).unwrap();
        index.delete(2).unwrap();
        index.delete(99).unwrap();
        // Added and deleted in the same batch: never visible.
        index.add(4, "g", "river camping").unwrap();
        index.delete(4).unwrap();
        index.commit(2).unwrap();
        assert_eq!(keys(&index.search("g", "river", 10, None).unwrap()), [1, 3]);
        assert_eq!(index.num_docs(), 2);

        index.replace(1, "g", "guitar concert").unwrap();
        index.commit(3).unwrap();
        assert_eq!(keys(&index.search("g", "river", 10, None).unwrap()), [3]);
        assert_eq!(keys(&index.search("g", "guitar", 10, None).unwrap()), [1]);
    }

    #[test]
    fn open_reports_garbage_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meta.json"), "not json").unwrap();
        let err = Bm25::open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Corruption { .. }), "{err:?}");
    }

    #[test]
    fn reopen_keeps_committed_docs_and_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bm25");
        {
            let index = Bm25::open(&path).unwrap();
            assert_eq!(index.checkpoint(), 0);
            index.add(1, "g", "pottery class").unwrap();
            index.add(2, "g", "charity race").unwrap();
            index.commit(42).unwrap();
            assert!(matches!(index.commit(41), Err(Error::Invalid(_))));
            // Second writer on the same directory: refused.
            assert!(Bm25::open(&path).is_err());
            index.add(3, "g", "pottery again, never committed").unwrap();
        }
        let index = Bm25::open(&path).unwrap();
        assert_eq!(index.checkpoint(), 42);
        assert_eq!(index.num_docs(), 2);
        assert_eq!(keys(&index.search("g", "pottery", 10, None).unwrap()), [1]);
    }

    #[test]
    fn query_syntax_is_just_text() {
        let index = Bm25::in_memory().unwrap();
        index.add(1, "g:\"x\"", "apple banana").unwrap();
        index.add(2, "g:\"x\"", "text title cherry").unwrap();
        index.commit(1).unwrap();
        for query in [
            "\"apple",
            "apple:banana",
            "apple AND (banana",
            "*",
            "apple^2 [1 TO",
            "-apple",
            "text:apple",
            "\\\"",
            ")(",
            "~~",
            "{}",
            "/regex/",
            "apple OR",
            "NOT",
        ] {
            index.search("g:\"x\"", query, 10, None).unwrap();
            score_exact(query, &["apple banana"], 10);
        }
        let plain = index.search("g:\"x\"", "apple banana", 10, None).unwrap();
        let syntax = index
            .search("g:\"x\"", "apple AND (banana", 10, None)
            .unwrap();
        assert_eq!(plain, syntax);
        // "text:" is a word here, not a field prefix.
        assert_eq!(
            keys(&index.search("g:\"x\"", "text:", 10, None).unwrap()),
            [2]
        );
    }

    #[test]
    fn empty_queries_give_nothing() {
        let index = Bm25::in_memory().unwrap();
        index.add(1, "g", "the and of apple").unwrap();
        index.commit(1).unwrap();
        for query in ["", "   ", "the and of", "!!! ???", "what did you"] {
            assert!(index.search("g", query, 10, None).unwrap().is_empty());
            assert!(score_exact(query, &["the and of apple"], 10).is_empty());
        }
        assert!(index.search("g", "apple", 0, None).unwrap().is_empty());
        assert!(score_exact("apple", &[], 10).is_empty());
        assert!(score_exact("apple", &["apple"], 0).is_empty());
    }

    #[test]
    fn score_exact_agrees_with_the_index() {
        let mut rng = Rng(11);
        let index = Bm25::in_memory().unwrap();
        // Some documents longer than 40 tokens, where fieldnorms are quantised.
        let docs: Vec<String> = (0..80)
            .map(|i| {
                if i % 10 == 0 {
                    rng.sentence(60 + i)
                } else {
                    rng.words(25)
                }
            })
            .collect();
        for (key, text) in docs.iter().enumerate() {
            index.add(key as u64, "g", text).unwrap();
        }
        index.commit(1).unwrap();
        let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
        for _ in 0..30 {
            let query = rng.words(4);
            let got = index.search("g", &query, 20, None).unwrap();
            let want = score_exact(&query, &refs, 20);
            assert_eq!(got.len(), want.len(), "{query:?}");
            // Block-max WAND sums term scores in another order than `score_exact`, so equal
            // scores may differ in the last bit and swap places: compare the ranked scores,
            // and each returned key's own exact score.
            let every: HashMap<u64, f32> = score_exact(&query, &refs, refs.len())
                .into_iter()
                .map(|(i, s)| (i as u64, s))
                .collect();
            for ((key, score), (_, exact)) in got.iter().zip(&want) {
                assert_close((*score).into(), (*exact).into(), &query);
                assert_close((*score).into(), every[key].into(), &query);
            }
        }
    }

    #[test]
    fn many_small_commits_stay_searchable() {
        let index = Bm25::in_memory().unwrap();
        // Enough commits for the merge policy (8 segments per merge) to kick in; the release
        // benchmark does 500 on disk.
        for key in 0..20u64 {
            index
                .add(key, "g", &format!("note number {key} about hiking"))
                .unwrap();
            index.commit(key + 1).unwrap();
        }
        assert_eq!(index.checkpoint(), 20);
        assert_eq!(index.num_docs(), 20);
        assert_eq!(index.search("g", "hiking", 100, None).unwrap().len(), 20);
        assert_eq!(keys(&index.search("g", "17", 5, None).unwrap()), [17]);
        assert!(
            index.num_segments() < 20,
            "{} segments",
            index.num_segments()
        );
    }

    /// A `Bm25` whose segments are never merged, so a document deleted since its segment
    /// was written counts in the statistics for good (as in the delta).
    fn unmerged() -> Bm25 {
        let index = Bm25::in_memory().unwrap();
        index
            .pending()
            .writer
            .set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        index
    }

    /// Random changes, published now and then and committed rarely, against an index that
    /// commits at every publish. Without deletes the two answer every search alike, same
    /// documents and same scores, whether a document sits in a segment or in the delta.
    /// With replaces, deletes and a group deletion they return the same documents; their
    /// scores may differ, because tantivy drops a segment whose documents are all deleted
    /// at commit, which the reference does more often (the statistics count deleted
    /// documents only approximately, with or without the delta). In both, a small k gives
    /// the first k of the full ranking: the best of the segments and the delta together.
    fn delta_against_commits(seed: u64, deletes: bool) {
        let mut rng = Rng(seed);
        let delta = unmerged();
        let reference = unmerged();
        let namespaces = ["/a", "/b", "/c"];
        let (mut publishes, mut commits, mut merged_chunks) = (0u64, 0u64, false);
        let mut published_keys = 0usize;
        for step in 0..600u64 {
            let key = if deletes { rng.below(80) as u64 } else { step };
            let group = if key % 2 == 0 { "g0" } else { "g1" };
            match rng.below(100) {
                0..60 => {
                    let text = rng.words(12);
                    let ns = vec![namespaces[rng.below(3)].to_owned()];
                    for index in [&delta, &reference] {
                        // As the indexer writes a record: delete the key, then add it.
                        if deletes {
                            index.delete(key).unwrap();
                        }
                        index.add_scoped(key, group, &text, &ns).unwrap();
                    }
                }
                60..75 if deletes => {
                    for index in [&delta, &reference] {
                        index.delete(key).unwrap();
                    }
                }
                75..76 if deletes && step > 300 => {
                    for index in [&delta, &reference] {
                        index.delete_group("g1").unwrap();
                    }
                }
                _ => {}
            }
            if rng.below(5) != 0 {
                continue;
            }
            publishes += 1;
            reference.commit(step).unwrap();
            if rng.below(12) == 0 {
                commits += 1;
                delta.commit(step).unwrap();
            } else {
                delta.publish().unwrap();
            }
            let view = delta.view();
            let in_delta: usize = view.chunks.iter().map(|c| c.docs.len()).sum();
            merged_chunks |= view.chunks.len() > 1;
            assert!(
                view.chunks.len() <= 1 + (usize::BITS - in_delta.leading_zeros()) as usize,
                "{} chunks for {in_delta} documents",
                view.chunks.len()
            );
            published_keys = published_keys.max(view.newest.len());
            drop(view);
            let every_third = |key: u64| !key.is_multiple_of(3);
            for _ in 0..4 {
                let query = rng.words(3);
                for group in ["g0", "g1"] {
                    let scopes = [
                        None,
                        Some((vec!["/a".to_owned()], NsScope::Required)),
                        Some((vec!["/a".to_owned(), "/c".to_owned()], NsScope::Collected)),
                    ];
                    for scope in &scopes {
                        let scope = scope.as_ref().map(|(ns, s)| (ns.as_slice(), *s));
                        for filter in [None, Some(&every_third as &(dyn Fn(u64) -> bool + Sync))] {
                            let what = format!("step {step}, {query:?} in {group}, {scope:?}");
                            let search = |index: &Bm25, k| {
                                index
                                    .search_scoped(group, &query, k, scope, filter)
                                    .unwrap()
                            };
                            let (got, want) = (search(&delta, 1000), search(&reference, 1000));
                            let mut got_keys = keys(&got);
                            let mut want_keys = keys(&want);
                            got_keys.sort_unstable();
                            want_keys.sort_unstable();
                            assert_eq!(got_keys, want_keys, "{what}");
                            for pair in got.windows(2) {
                                assert!(pair[0].1 >= pair[1].1, "{what}: not ranked");
                            }
                            if !deletes {
                                let want: HashMap<u64, f32> = want.into_iter().collect();
                                for (key, score) in &got {
                                    assert_close((*score).into(), want[key].into(), &what);
                                }
                            }
                            let top = search(&delta, 3);
                            assert_eq!(top.len(), got.len().min(3), "{what}");
                            for (a, b) in top.iter().zip(&got) {
                                assert_close(a.1.into(), b.1.into(), &what);
                            }
                        }
                    }
                }
            }
        }
        // The run must have exercised what it claims to.
        assert!(
            publishes > 80 && commits > 3,
            "{publishes} publishes, {commits} commits"
        );
        assert!(merged_chunks, "the delta never held more than one chunk");
        assert!(published_keys > 20, "the delta never held many keys");
    }

    #[test]
    fn the_delta_scores_as_committed_segments_do() {
        delta_against_commits(23, false);
    }

    #[test]
    fn the_delta_finds_what_committed_segments_find_across_deletes() {
        delta_against_commits(29, true);
    }

    #[test]
    fn publish_shows_changes_without_committing_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = Bm25::open(dir.path()).unwrap();
            index.add(1, "g", "hiking in the mountains").unwrap();
            index.commit(5).unwrap();
            assert_eq!(index.uncommitted(), (0, None));
            index.add(2, "g", "hiking by the river").unwrap();
            index.delete(1).unwrap();
            // Staged: not searchable yet.
            assert_eq!(keys(&index.search("g", "hiking", 10, None).unwrap()), [1]);
            index.publish().unwrap();
            assert_eq!(keys(&index.search("g", "hiking", 10, None).unwrap()), [2]);
            let (docs, since) = index.uncommitted();
            assert_eq!(docs, 1);
            assert!(since.is_some());
            assert_eq!(index.checkpoint(), 5);
            assert_eq!(index.num_docs(), 1, "committed documents only");
        } // dropped without a commit: the delta is gone, as after a crash
        let index = Bm25::open(dir.path()).unwrap();
        assert_eq!(index.checkpoint(), 5);
        assert_eq!(keys(&index.search("g", "hiking", 10, None).unwrap()), [1]);
        index.add(2, "g", "hiking by the river").unwrap();
        index.delete(1).unwrap();
        index.commit(7).unwrap();
        assert_eq!(keys(&index.search("g", "hiking", 10, None).unwrap()), [2]);
        assert_eq!(index.uncommitted(), (0, None));
    }
}
