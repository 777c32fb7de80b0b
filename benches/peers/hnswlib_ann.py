"""hnswlib on the vectors `memlog bench ann` wrote: the same base, queries, ground truth,
M, efConstruction and ef values, one thread, QPS measured as memlog measures it (blocks
of 100 queries, the fastest of `reps` repetitions of each block).

Prints one JSON object: {"lib", "build_secs", "points": [{"ef", "recall", "qps"}]}.
Exits 3 with a message on stderr when hnswlib is not installed (`pip install hnswlib numpy`).
"""
import argparse
import json
import sys
import time

try:
    import hnswlib
    import numpy as np
except ImportError as e:  # the runner reports this instead of a number
    print(f"hnswlib is not installed ({e}); pip install hnswlib numpy", file=sys.stderr)
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

base = np.fromfile(f"{a.dir}/base.f32", dtype="<f4").reshape(-1, a.dim)
query = np.fromfile(f"{a.dir}/query.f32", dtype="<f4").reshape(-1, a.dim)
gt = np.fromfile(f"{a.dir}/gt.u32", dtype="<u4").reshape(-1, K)

index = hnswlib.Index(space="ip", dim=a.dim)
index.init_index(max_elements=len(base), M=a.m, ef_construction=a.ef_construction, random_seed=100)
index.set_num_threads(1)
t = time.perf_counter()
index.add_items(base, np.arange(len(base)), num_threads=1)
build = time.perf_counter() - t

points = []
for ef in [int(x) for x in a.efs.split(",")]:
    index.set_ef(max(ef, K))
    found, total = [], 0.0
    for start in range(0, len(query), 100):
        block = query[start:start + 100]
        best = float("inf")
        for _ in range(max(a.reps, 1)):
            t = time.perf_counter()
            # One call per block, on one thread: no per-query Python overhead, so this
            # is hnswlib's C++ search speed (the fair comparison with the Rust loop).
            labels = list(index.knn_query(block, k=K, num_threads=1)[0])
            best = min(best, time.perf_counter() - t)
        total += best
        found.extend(labels)
    hits = sum(len(set(map(int, f)) & set(map(int, g))) for f, g in zip(found, gt))
    points.append({"ef": ef, "recall": hits / (len(gt) * K), "qps": len(query) / total})

json.dump({"lib": "hnswlib", "build_secs": build, "points": points}, sys.stdout)
