"""Plain baselines on the LoCoMo turns and questions `memlog bench locomo --peers` wrote:
BM25 (rank-bm25's BM25Okapi, k1=1.5 b=0.75, lowercase word tokens) and brute-force dense
search (exact inner product over memlog's own all-MiniLM-L6-v2 vectors). Both search one
conversation at a time, as memlog does with its namespace filter.

Run by the runner, or by hand:  python baselines.py --dir bench-out/locomo/peers

IO contract (DIR, written by the runner):
  meta.json        {"dim", "top_k", "embedder"}
  turns.jsonl      one {"sample", "dia_id", "content"} per turn, in conversation order
  turns.f32        the turns' vectors (little-endian f32 rows of dim, same order)
  questions.jsonl  one {"sample", "category", "question"} per scored question
  questions.f32    the questions' vectors
Prints {"peers": [{"lib", "ranked": [[dia_id, ...] per question], "search_ms": {"p50", "p95"}}]};
the runner scores `ranked` with memlog's own hit@k code. Exits 3 when a package is missing.
"""
import argparse
import json
import re
import sys
import time
from collections import defaultdict

try:
    import numpy as np
    from rank_bm25 import BM25Okapi
except ImportError as e:
    print(f"a baseline package is not installed ({e}); run benches/peers/setup", file=sys.stderr)
    sys.exit(3)

p = argparse.ArgumentParser()
p.add_argument("--dir", required=True)
a = p.parse_args()

meta = json.load(open(f"{a.dir}/meta.json"))
dim, top_k = meta["dim"], meta["top_k"]
turns = [json.loads(line) for line in open(f"{a.dir}/turns.jsonl")]
questions = [json.loads(line) for line in open(f"{a.dir}/questions.jsonl")]
tv = np.fromfile(f"{a.dir}/turns.f32", dtype="<f4").reshape(-1, dim)
qv = np.fromfile(f"{a.dir}/questions.f32", dtype="<f4").reshape(-1, dim)


def tokens(text):
    return re.findall(r"\w+", text.lower())


by_sample = defaultdict(list)
for i, t in enumerate(turns):
    by_sample[t["sample"]].append(i)
bm25 = {s: BM25Okapi([tokens(turns[i]["content"]) for i in ids]) for s, ids in by_sample.items()}


def pct(xs, q):
    return float(np.percentile(np.array(xs) * 1e3, q)) if xs else 0.0


def run(lib, score):
    ranked, took = [], []
    for qi, q in enumerate(questions):
        ids = by_sample.get(q["sample"], [])
        t = time.perf_counter()
        s = score(qi, q, ids)
        order = np.argsort(-s, kind="stable")[:top_k] if len(ids) else []
        took.append(time.perf_counter() - t)
        ranked.append([turns[ids[j]]["dia_id"] for j in order])
    return {"lib": lib, "ranked": ranked, "search_ms": {"p50": pct(took, 50), "p95": pct(took, 95)}}


peers = [
    run("bm25 (rank-bm25 Okapi)", lambda qi, q, ids: bm25[q["sample"]].get_scores(tokens(q["question"]))),
    run("dense brute force", lambda qi, q, ids: tv[ids] @ qv[qi]),
]
json.dump({"peers": peers}, sys.stdout)
