//! Embedding throughput: all-MiniLM-L6-v2 on candle for a batch of 32 sentence-sized
//! texts, against the same 32 texts one call each (what batching buys), with the hashing
//! embedder as the no-model baseline, all in one run.
//!
//! Needs the model (see `memlog_engine::embed::find_model`: `MEMLOG_EMBED_MODEL` or the
//! model cache); without it only the hashing baseline runs, and a warning says so.
//!
//! `cargo bench -p memlog-benches --bench embed`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use memlog_benches::text;
use memlog_engine::embed::{Embedder, Hashing, MiniLm, find_model};

const TEXTS: usize = 32;
/// About one chat message: 20–30 tokens.
const TEXT_BYTES: usize = 120;
const SEED: u64 = 7;

fn embed(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(SEED);
    let texts: Vec<String> = (0..TEXTS)
        .map(|_| text::conversational(&mut rng, TEXT_BYTES))
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();

    let mut group = c.benchmark_group("embed");
    group.throughput(Throughput::Elements(TEXTS as u64));

    let hashing = Hashing::default();
    group.bench_function("hashing/batch32", |b| {
        b.iter(|| {
            hashing
                .embed(black_box(&texts))
                .expect("hashing never fails")
        })
    });

    match find_model(None) {
        Some(dir) => {
            let model = MiniLm::load(&dir).expect("load all-MiniLM-L6-v2");
            group.bench_function("minilm/batch32", |b| {
                b.iter(|| model.embed(black_box(&texts)).expect("embed"))
            });
            group.bench_function("minilm/one_at_a_time", |b| {
                b.iter(|| {
                    for t in &texts {
                        black_box(model.embed(black_box(&[t])).expect("embed"));
                    }
                })
            });
        }
        None => eprintln!(
            "WARNING: all-MiniLM-L6-v2 not found (set MEMLOG_EMBED_MODEL); \
             only the hashing baseline was measured"
        ),
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // A MiniLM batch takes a few hundred milliseconds on a small machine.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    targets = embed
}
criterion_main!(benches);
