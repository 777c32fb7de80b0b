"""faiss (IndexHNSWFlat) on the vectors `memlog bench ann` wrote: the same base, queries,
ground truth, M, efConstruction and ef values, one thread (`faiss.omp_set_num_threads(1)`),
QPS measured as memlog measures it (blocks of 100 queries, the fastest of `reps`
repetitions of each block).

Run by the runner (`memlog bench ann`), or by hand:
    python faiss_ann.py --dir bench-out/ann/run --dim 384 [--m 16 --ef-construction 200]

Reads DIR/base.f32 and DIR/query.f32 (little-endian f32 rows of DIM) and DIR/gt.u32 (10
exact neighbour ids per query). Prints one JSON object:
{"lib", "build_secs", "points": [{"ef", "recall", "qps"}]}.
Exits 3 with a message on stderr when faiss is not installed (benches/peers/setup).
"""
import argparse
import json
import sys
import time

try:
    import faiss
    import numpy as np
except ImportError as e:  # the runner reports this instead of a number
    print(f"faiss is not installed ({e}); run benches/peers/setup", file=sys.stderr)
    sys.exit(3)

p = argparse.ArgumentParser()
p.add_argument("--dir", required=True)
p.add_argument("--dim", type=int, required=True)
p.add_argument("--m", type=int, default=16)
p.add_argument("--ef-construction", type=int, default=200)
p.add_argument("--reps", type=int, default=3)
p.add_argument("--efs", default="10,16,32,64,128,256")
a = p.parse_args()
K = 10

faiss.omp_set_num_threads(1)
base = np.fromfile(f"{a.dir}/base.f32", dtype="<f4").reshape(-1, a.dim)
query = np.fromfile(f"{a.dir}/query.f32", dtype="<f4").reshape(-1, a.dim)
gt = np.fromfile(f"{a.dir}/gt.u32", dtype="<u4").reshape(-1, K)

# The vectors are unit length, so inner product is cosine, as in memlog and hnswlib.
index = faiss.IndexHNSWFlat(a.dim, a.m, faiss.METRIC_INNER_PRODUCT)
index.hnsw.efConstruction = a.ef_construction
t = time.perf_counter()
index.add(base)
build = time.perf_counter() - t

points = []
for ef in [int(x) for x in a.efs.split(",")]:
    index.hnsw.efSearch = max(ef, K)
    found, total = [], 0.0
    for start in range(0, len(query), 100):
        block = query[start:start + 100]
        best = float("inf")
        for _ in range(max(a.reps, 1)):
            t = time.perf_counter()
            # One call per block: faiss's C++ search speed, no per-query Python overhead.
            labels = index.search(block, K)[1]
            best = min(best, time.perf_counter() - t)
        total += best
        found.extend(labels)
    hits = sum(len(set(map(int, f)) & set(map(int, g))) for f, g in zip(found, gt))
    points.append({"ef": ef, "recall": hits / (len(gt) * K), "qps": len(query) / total})

json.dump({"lib": "faiss", "build_secs": build, "points": points}, sys.stdout)
