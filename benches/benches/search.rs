//! The search hot paths, each alone, on seeded synthetic data: an HNSW beam search and an
//! exact scan over the same 10k unit vectors (384-d, MiniLM's size), a BM25 query over
//! 10k conversational texts in tantivy, and the reciprocal rank fusion of two 100-long
//! lists. The exact scan is the baseline the HNSW search is read against.
//!
//! `cargo bench -p memlog-benches --bench search`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use memlog_benches::text;
use memlog_engine::index::bm25::Bm25;
use memlog_engine::index::hnsw::{Hnsw, Params};
use memlog_engine::record::{Record, RecordId};
use memlog_engine::types::Timestamp;

const POINTS: usize = 10_000;
const DIM: usize = 384;
const QUERIES: usize = 64;
const DOCS: usize = 10_000;
const DOC_BYTES: usize = 160;
const SEED: u64 = 7;

/// A random unit vector (Gaussian-ish by summing uniforms, then normalised).
fn unit(rng: &mut fastrand::Rng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM)
        .map(|_| (0..4).map(|_| rng.f32() - 0.5).sum())
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn hnsw(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut index = Hnsw::new(DIM, Params::default());
    for key in 0..POINTS as u64 {
        index.insert(key, &unit(&mut rng));
    }
    let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| unit(&mut rng)).collect();
    let mut group = c.benchmark_group("hnsw_10k");
    group.throughput(Throughput::Elements(1));
    for ef in [32, 128] {
        let mut i = 0;
        group.bench_function(format!("search_k10_ef{ef}"), |b| {
            b.iter(|| {
                i = (i + 1) % QUERIES;
                index.search(black_box(&queries[i]), 10, ef, None)
            })
        });
    }
    let mut i = 0;
    group.bench_function("exact_k10", |b| {
        b.iter(|| {
            i = (i + 1) % QUERIES;
            index.exact(black_box(&queries[i]), 10, None)
        })
    });
    group.finish();
}

fn bm25(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(SEED);
    let index = Bm25::in_memory().expect("an in-memory tantivy index");
    let texts: Vec<String> = (0..DOCS)
        .map(|_| text::conversational(&mut rng, DOC_BYTES))
        .collect();
    for (key, t) in texts.iter().enumerate() {
        index.add(key as u64, "memory", t).expect("add a document");
    }
    index.commit(1).expect("commit");
    // Queries are pieces of indexed texts: three words from a random document.
    let queries: Vec<String> = (0..QUERIES)
        .map(|_| {
            let words: Vec<&str> = texts[rng.usize(..DOCS)].split_whitespace().collect();
            let at = rng.usize(..words.len().saturating_sub(3).max(1));
            words[at..(at + 3).min(words.len())].join(" ")
        })
        .collect();
    let mut group = c.benchmark_group("bm25_10k");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("search_k10", |b| {
        b.iter(|| {
            i = (i + 1) % QUERIES;
            index
                .search("memory", black_box(&queries[i]), 10, None)
                .expect("search")
        })
    });
    group.finish();
}

fn record(n: usize) -> Arc<Record> {
    Arc::new(Record {
        id: RecordId::parse(&format!("mem-{n:036}")).expect("a valid record id"),
        content: String::new(),
        namespaces: vec![],
        strategy_id: None,
        metadata: Default::default(),
        timestamp: Timestamp(0),
        created_at: Timestamp(0),
        source_event_ids: vec![],
        embedding: Default::default(),
        embed_model: String::new(),
        supersedes: None,
    })
}

fn rrf(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(SEED);
    // Two 100-long lists over 150 records: half of each list is in the other.
    let records: Vec<Arc<Record>> = (0..150).map(record).collect();
    let mut ids: Vec<usize> = (0..150).collect();
    rng.shuffle(&mut ids);
    let vector: Vec<(Arc<Record>, f32)> = ids[..100]
        .iter()
        .enumerate()
        .map(|(rank, &i)| (records[i].clone(), 1.0 - rank as f32 / 100.0))
        .collect();
    rng.shuffle(&mut ids);
    let text: Vec<(Arc<Record>, f32)> = ids[..100]
        .iter()
        .enumerate()
        .map(|(rank, &i)| (records[i].clone(), 20.0 - rank as f32 / 10.0))
        .collect();
    let mut group = c.benchmark_group("rrf");
    group.throughput(Throughput::Elements(1));
    group.bench_function("fuse_100x100_top10", |b| {
        b.iter(|| {
            memlog_engine::index::fuse(black_box(&vector), black_box(&text), 1.0, 1.0, 60.0, 10)
        })
    });
    group.finish();
}

criterion_group!(benches, hnsw, bm25, rrf);
criterion_main!(benches);
