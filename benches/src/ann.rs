//! `memlog bench ann`: the vector index alone — recall@10 against exact search and
//! single-threaded queries per second at several `ef`, on real all-MiniLM-L6-v2 vectors
//! (LoCoMo turns as the base, LoCoMo questions as the queries), side by side with
//! hnswlib and faiss (HNSW) on the same vectors and parameters; a peer Python cannot run
//! is in the report as unavailable, with the reason.
//!
//! ```text
//!  LoCoMo ─▶ embed turns + questions (cached in OUT/vectors) ─▶ [scale up: real + noise]
//!        ─▶ exact top-10 (ground truth) ─▶ memlog HNSW: build, search at each ef
//!                                         ├▶ hnswlib (Python peer): same files, same ef
//!                                         └▶ faiss IndexHNSWFlat (Python peer): same
//! ```
//!
//! QPS is measured the same way for both: the queries run in blocks of 100, each block
//! `reps` times, and the fastest repetition of each block counts — robust to the
//! preemptions of a shared machine. All run on one thread.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use memlog_engine::embed::{self, Embedder};
use memlog_engine::index::hnsw::{self, Hnsw, Params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::machine_info;
use crate::peers::{self, Peer};

const K: usize = 10;

/// Vectors, one per row.
type Rows = Vec<Vec<f32>>;

/// What `run` measures.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct AnnOptions {
    /// The LoCoMo file whose turns and questions are embedded.
    pub data: PathBuf,
    pub embed_model: Option<PathBuf>,
    /// Where vectors, report.json and report.md go.
    pub out: PathBuf,
    /// Grow the base to this many vectors with noisy copies of real ones (0: real only).
    pub scale: usize,
    pub efs: Vec<usize>,
    pub m: usize,
    pub ef_construction: usize,
    pub reps: usize,
    /// Python with the peers' packages (`benches/peers/setup`; None: skip them, and say so).
    pub python: Option<PathBuf>,
    pub seed: u64,
}

impl Default for AnnOptions {
    fn default() -> AnnOptions {
        AnnOptions {
            data: PathBuf::new(),
            embed_model: None,
            out: PathBuf::from("bench-out/ann"),
            scale: 0,
            efs: vec![10, 16, 32, 64, 128, 256],
            m: 16,
            ef_construction: 200,
            reps: 3,
            python: None,
            seed: 42,
        }
    }
}

/// One point of a recall/QPS curve.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    pub ef: usize,
    pub recall: f64,
    pub qps: f64,
}

/// One library's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LibResult {
    pub lib: String,
    pub build_secs: f64,
    pub points: Vec<Point>,
}

impl LibResult {
    /// The best QPS among the settings that reach `recall`.
    pub fn qps_at(&self, recall: f64) -> Option<f64> {
        self.points
            .iter()
            .filter(|p| p.recall >= recall)
            .map(|p| p.qps)
            .fold(None, |a, q| Some(a.map_or(q, |a: f64| a.max(q))))
    }
}

/// What `run` found.
#[derive(Clone, Debug, Serialize)]
pub struct AnnReport {
    pub machine: Value,
    pub options: AnnOptions,
    pub embedder: String,
    pub base: usize,
    /// How many of the base vectors are synthetic (noisy copies of real ones).
    pub synthetic: usize,
    pub queries: usize,
    pub dim: usize,
    pub memlog: LibResult,
    /// hnswlib and faiss: results, or why there are none; `vs_memlog.qps_ratio_at_095` is
    /// memlog's QPS over the peer's, each at its best setting with recall@10 ≥ 0.95.
    pub peers: Vec<Peer<LibResult>>,
}

impl AnnReport {
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "# memlog bench ann\n\n{} base vectors ({} synthetic), {} queries, {}-d, embedder {}; \
             M={}, efConstruction={}, one thread, k={K}.\n\n",
            self.base,
            self.synthetic,
            self.queries,
            self.dim,
            self.embedder,
            self.options.m,
            self.options.ef_construction
        );
        let ran: Vec<&LibResult> = self
            .peers
            .iter()
            .filter_map(|p| p.result.as_ref())
            .collect();
        s += "| ef | memlog recall@10 | memlog QPS |";
        for r in &ran {
            s += &format!(" {0} recall@10 | {0} QPS | memlog/{0} QPS |", r.lib);
        }
        s += &format!("\n|---|---|---|{}\n", "---|---|---|".repeat(ran.len()));
        for p in &self.memlog.points {
            s += &format!("| {} | {:.4} | {:.0} |", p.ef, p.recall, p.qps);
            for r in &ran {
                match r.points.iter().find(|q| q.ef == p.ef) {
                    Some(q) => {
                        s += &format!(" {:.4} | {:.0} | {:.2} |", q.recall, q.qps, p.qps / q.qps)
                    }
                    None => s += " – | – | – |",
                }
            }
            s += "\n";
        }
        s += &format!("\nBuild: memlog {:.2} s", self.memlog.build_secs);
        for r in &ran {
            s += &format!(", {} {:.2} s", r.lib, r.build_secs);
        }
        s += ".\n\n";
        let memlog_095 = self.memlog.qps_at(0.95);
        for p in &self.peers {
            match (&p.result, &p.reason) {
                (Some(r), _) => match (memlog_095, r.qps_at(0.95)) {
                    (Some(m), Some(q)) => {
                        s += &format!(
                            "At recall@10 ≥ 0.95: memlog {m:.0} QPS, {} {q:.0} QPS, ratio **{:.2}**.\n",
                            p.lib,
                            m / q
                        )
                    }
                    _ => {
                        s += &format!(
                            "No QPS ratio to {} at recall@10 ≥ 0.95 (one side never reached it).\n",
                            p.lib
                        )
                    }
                },
                (None, why) => {
                    s += &format!(
                        "{}: **unavailable** — {}\n",
                        p.lib,
                        why.as_deref().unwrap_or("?")
                    )
                }
            }
        }
        s
    }
}

fn write_f32(path: &Path, rows: &[Vec<f32>]) -> anyhow::Result<()> {
    let mut bytes = Vec::with_capacity(rows.len() * rows.first().map_or(0, Vec::len) * 4);
    for r in rows {
        for x in r {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn read_f32(path: &Path, dim: usize) -> anyhow::Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() % (dim * 4) != 0 {
        bail!(
            "{} is not a whole number of {dim}-d f32 rows",
            path.display()
        );
    }
    Ok(bytes
        .chunks_exact(dim * 4)
        .map(|row| {
            row.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .collect())
}

#[derive(Serialize, Deserialize, PartialEq)]
struct VectorsMeta {
    data: PathBuf,
    embedder: String,
    base: usize,
    queries: usize,
    dim: usize,
}

/// Embeds (or reuses the cached embeddings of) every LoCoMo turn and question.
fn vectors(opts: &AnnOptions) -> anyhow::Result<(String, Rows, Rows)> {
    let dir = opts.out.join("vectors");
    std::fs::create_dir_all(&dir)?;
    let model = embed::find_model(opts.embed_model.as_deref()).context(
        "`memlog bench ann` needs the MiniLM model (run `memlog model fetch`, or pass --embed-model)",
    )?;
    let embedder = embed::MiniLm::load(&model)?;
    let ds = memlog_datasets::locomo::Dataset::load(&opts.data)?;
    let mut base_texts = Vec::new();
    for s in &ds.samples {
        for (_, t) in s.turns() {
            base_texts.push(format!("{}: {}", t.speaker, t.text));
        }
    }
    let query_texts: Vec<String> = ds.questions().map(|(_, q)| q.question.clone()).collect();
    let meta = VectorsMeta {
        data: opts.data.clone(),
        embedder: embedder.name().to_owned(),
        base: base_texts.len(),
        queries: query_texts.len(),
        dim: embedder.dim(),
    };
    let meta_path = dir.join("meta.json");
    if let Ok(bytes) = std::fs::read(&meta_path)
        && serde_json::from_slice::<VectorsMeta>(&bytes).ok().as_ref() == Some(&meta)
    {
        let base = read_f32(&dir.join("base.f32"), meta.dim)?;
        let query = read_f32(&dir.join("query.f32"), meta.dim)?;
        if base.len() == meta.base && query.len() == meta.queries {
            eprintln!("reusing the embeddings in {}", dir.display());
            return Ok((meta.embedder, base, query));
        }
    }
    let all: Vec<&str> = base_texts
        .iter()
        .chain(&query_texts)
        .map(String::as_str)
        .collect();
    let bar = crate::progress::bar(all.len() as u64, "embedding sentences", true);
    let mut out = Vec::with_capacity(all.len());
    for chunk in all.chunks(64) {
        out.extend(embedder.embed(chunk)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let query = out.split_off(base_texts.len());
    write_f32(&dir.join("base.f32"), &out)?;
    write_f32(&dir.join("query.f32"), &query)?;
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta)?)?;
    Ok((meta.embedder, out, query))
}

/// Noisy copies of real vectors (each component + N(0, 0.02²), renormalised) up to `n`.
fn scale_up(base: &mut Vec<Vec<f32>>, n: usize, seed: u64) -> usize {
    let real = base.len();
    if n <= real {
        return 0;
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut gauss = move || {
        // Box–Muller.
        let (u, v) = (rng.f64().max(1e-12), rng.f64());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    };
    let mut pick = fastrand::Rng::with_seed(seed ^ 0x9e37_79b9);
    while base.len() < n {
        let src = &base[pick.usize(0..real)];
        let mut v: Vec<f32> = src.iter().map(|x| x + 0.02 * gauss()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
        base.push(v);
    }
    n - real
}

/// Exact top-k ids per query (ties to the lower id).
fn ground_truth(base: &[Vec<f32>], queries: &[Vec<f32>]) -> Vec<Vec<u32>> {
    queries
        .iter()
        .map(|q| {
            let mut s: Vec<(f32, u32)> = base
                .iter()
                .enumerate()
                .map(|(i, b)| (hnsw::dot(q, b), i as u32))
                .collect();
            s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            s.into_iter().take(K).map(|(_, i)| i).collect()
        })
        .collect()
}

fn recall(found: &[Vec<u32>], gt: &[Vec<u32>]) -> f64 {
    let hits: usize = found
        .iter()
        .zip(gt)
        .map(|(f, g)| f.iter().filter(|id| g.contains(id)).count())
        .sum();
    hits as f64 / (gt.len() * K) as f64
}

fn run_memlog(
    opts: &AnnOptions,
    base: &[Vec<f32>],
    queries: &[Vec<f32>],
    gt: &[Vec<u32>],
) -> LibResult {
    let started = Instant::now();
    let mut index = Hnsw::new(
        base[0].len(),
        Params {
            m: opts.m,
            ef_construction: opts.ef_construction,
            ..Params::default()
        },
    );
    let bar = crate::progress::bar(base.len() as u64, "memlog HNSW build", true);
    for (i, v) in base.iter().enumerate() {
        index.insert(i as u64, v);
        if i % 256 == 0 {
            bar.set_position(i as u64);
        }
    }
    bar.finish_and_clear();
    let build_secs = started.elapsed().as_secs_f64();
    let mut points = Vec::new();
    for &ef in &opts.efs {
        let mut found = vec![Vec::new(); queries.len()];
        let mut best_total = 0.0;
        for (b, block) in queries.chunks(100).enumerate() {
            let mut best = f64::INFINITY;
            for _ in 0..opts.reps.max(1) {
                let t = Instant::now();
                for (j, q) in block.iter().enumerate() {
                    let hits = index.search(q, K, ef, None);
                    found[b * 100 + j] = hits.into_iter().map(|(id, _)| id).collect();
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            best_total += best;
        }
        points.push(Point {
            ef,
            recall: recall(&found, gt),
            qps: queries.len() as f64 / best_total.max(1e-9),
        });
    }
    LibResult {
        lib: "memlog".into(),
        build_secs,
        points,
    }
}

/// The ANN peers: (library, script in `benches/peers/`).
const PEERS: [(&str, &str); 2] = [("hnswlib", "hnswlib_ann.py"), ("faiss", "faiss_ann.py")];

/// Runs one peer script on the files in `dir`; the same contract for each.
fn run_peer(
    opts: &AnnOptions,
    script: &str,
    dir: &Path,
    dim: usize,
    memlog: &LibResult,
) -> Result<(LibResult, Value), String> {
    let Some(python) = &opts.python else {
        return Err("peers skipped (--no-peer)".into());
    };
    let efs: Vec<String> = opts.efs.iter().map(usize::to_string).collect();
    let args = [
        "--dir".into(),
        dir.display().to_string(),
        "--dim".into(),
        dim.to_string(),
        "--m".into(),
        opts.m.to_string(),
        "--ef-construction".into(),
        opts.ef_construction.to_string(),
        "--reps".into(),
        opts.reps.to_string(),
        "--efs".into(),
        efs.join(","),
    ];
    let out: LibResult = serde_json::from_value(peers::run(python, script, &args)?)
        .map_err(|e| format!("unreadable output of {script}: {e}"))?;
    let ratio = match (memlog.qps_at(0.95), out.qps_at(0.95)) {
        (Some(m), Some(p)) => Some(m / p),
        _ => None,
    };
    let by_ef: Vec<Value> = memlog
        .points
        .iter()
        .filter_map(|m| {
            let p = out.points.iter().find(|p| p.ef == m.ef)?;
            Some(serde_json::json!({
                "ef": m.ef, "qps_ratio": m.qps / p.qps, "recall_diff": m.recall - p.recall,
            }))
        })
        .collect();
    Ok((
        out,
        serde_json::json!({ "qps_ratio_at_095": ratio, "by_ef": by_ef }),
    ))
}

/// Runs the benchmark and writes `report.json` and `report.md` into `opts.out`.
pub fn run(opts: &AnnOptions) -> anyhow::Result<AnnReport> {
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let (embedder, mut base, queries) = vectors(opts)?;
    let dim = base.first().map_or(0, Vec::len);
    if dim == 0 || queries.is_empty() {
        bail!("no vectors to index");
    }
    let synthetic = scale_up(&mut base, opts.scale, opts.seed);
    eprintln!(
        "exact search for the ground truth ({} × {})…",
        queries.len(),
        base.len()
    );
    let gt = ground_truth(&base, &queries);
    // The peer reads the same files.
    let run_dir = opts.out.join("run");
    std::fs::create_dir_all(&run_dir)?;
    write_f32(&run_dir.join("base.f32"), &base)?;
    write_f32(&run_dir.join("query.f32"), &queries)?;
    let gt_bytes: Vec<u8> = gt.iter().flatten().flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(run_dir.join("gt.u32"), gt_bytes)?;
    eprintln!("memlog HNSW…");
    let memlog = run_memlog(opts, &base, &queries, &gt);
    let peers = PEERS
        .iter()
        .map(|(lib, script)| {
            eprintln!("{lib}…");
            match run_peer(opts, script, &run_dir, dim, &memlog) {
                Ok((r, vs)) => Peer {
                    vs_memlog: Some(vs),
                    ..Peer::new(*lib, Ok(r))
                },
                Err(why) => Peer::new(*lib, Err(why)),
            }
        })
        .collect();
    let report = AnnReport {
        machine: machine_info(),
        options: opts.clone(),
        embedder,
        base: base.len(),
        synthetic,
        queries: queries.len(),
        dim,
        memlog,
        peers,
    };
    std::fs::write(
        opts.out.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    std::fs::write(opts.out.join("report.md"), report.to_markdown())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_up_keeps_unit_vectors_and_is_seeded() {
        let mut a = vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]];
        let mut b = a.clone();
        assert_eq!(scale_up(&mut a, 10, 7), 8);
        scale_up(&mut b, 10, 7);
        assert_eq!(a, b);
        for v in &a {
            let n: f32 = v.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn recall_and_qps_at() {
        let gt = vec![(0..10).collect::<Vec<u32>>()];
        let half = vec![(5..15).collect::<Vec<u32>>()];
        assert!((recall(&half, &gt) - 0.5).abs() < 1e-12);
        let r = LibResult {
            lib: "x".into(),
            build_secs: 0.0,
            points: vec![
                Point {
                    ef: 10,
                    recall: 0.9,
                    qps: 100.0,
                },
                Point {
                    ef: 20,
                    recall: 0.96,
                    qps: 50.0,
                },
                Point {
                    ef: 40,
                    recall: 0.99,
                    qps: 30.0,
                },
            ],
        };
        assert_eq!(r.qps_at(0.95), Some(50.0));
        assert_eq!(r.qps_at(0.999), None);
    }
}
