//! OTLP trace decoding, the first step of `POST /v1/traces`: the same requests decoded
//! from OTLP/protobuf and from OTLP/JSON (validation included), then mapped onto memlog's
//! spans. The requests are the hand-written fixtures of `evals/tests/fixtures` (every
//! convention memlog reads), protobuf-encoded from their decoded JSON, so both encodings
//! carry exactly the same spans and the JSON/protobuf ratio is like for like.
//!
//! Needs the `eval` feature: `cargo bench -p memlog-benches --features eval --bench otlp`

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use memlog_evals::otlp::{self, Limits};
use prost::Message as _;

const FIXTURES: &[&str] = &[
    "genai_current.json",
    "genai_legacy.json",
    "openinference_langgraph.json",
    "openai_agents.json",
    "strands.json",
];

fn otlp(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../evals/tests/fixtures");
    let limits = Limits::default();
    let json: Vec<Vec<u8>> = FIXTURES
        .iter()
        .map(|f| std::fs::read(dir.join(f)).expect("read a fixture"))
        .collect();
    let protobuf: Vec<Vec<u8>> = json
        .iter()
        .map(|j| {
            otlp::decode_json(j, &limits)
                .expect("the fixtures decode")
                .encode_to_vec()
        })
        .collect();
    let spans: usize = protobuf
        .iter()
        .map(|p| {
            let r = otlp::decode_protobuf(p, &limits).expect("decode");
            memlog_evals::mapping::map(&r).spans.len()
        })
        .sum();
    let mut group = c.benchmark_group("otlp_fixtures");
    group.throughput(Throughput::Elements(spans as u64));
    group.bench_function("decode_protobuf", |b| {
        b.iter(|| {
            for p in &protobuf {
                black_box(otlp::decode_protobuf(black_box(p), &limits).expect("decode"));
            }
        })
    });
    group.bench_function("decode_json", |b| {
        b.iter(|| {
            for j in &json {
                black_box(otlp::decode_json(black_box(j), &limits).expect("decode"));
            }
        })
    });
    let decoded: Vec<_> = protobuf
        .iter()
        .map(|p| otlp::decode_protobuf(p, &limits).expect("decode"))
        .collect();
    group.bench_function("map", |b| {
        b.iter(|| {
            for r in &decoded {
                black_box(memlog_evals::mapping::map(black_box(r)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, otlp);
criterion_main!(benches);
