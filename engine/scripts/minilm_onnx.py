#!/usr/bin/env python3
"""Builds all-MiniLM-L6-v2 as ONNX graphs for memlog's ONNX Runtime embedder, from the same
model.safetensors + config.json the candle embedder reads (no torch, nothing downloaded):

  OUT/model.onnx       f32: BERT encoder, mean pooling over attention_mask, L2 normalisation;
                       matches sentence-transformers to cosine >= 0.9999
  OUT/model_int8.onnx  the same with every MatMul weight quantised to int8 per channel
                       (onnxruntime.quantization.quantize_dynamic on the unfused graph, so
                       ONNX Runtime fuses it at load); about 2x faster, cosine ~0.99
  OUT/libonnxruntime.so  the runtime library from the onnxruntime wheel, for `ort`'s
                       load-dynamic

Inputs input_ids, attention_mask, token_type_ids (int64 [batch, seq]); outputs
sentence_embedding [batch, 384] and last_hidden_state [batch, seq, 384]. The node layout
follows what torch.onnx exports for a BERT model, so ONNX Runtime's fusions recognise it.

usage: minilm_onnx.py MODEL_DIR OUT_DIR   (needs onnx, onnxruntime, numpy, safetensors)
"""
import glob
import json
import math
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

OPSET = 17  # LayerNormalization is a standard op from 17


def build(model_dir):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    W = load_file(os.path.join(model_dir, "model.safetensors"))
    H = cfg["hidden_size"]
    NH = cfg["num_attention_heads"]
    HD = H // NH
    L = cfg["num_hidden_layers"]
    EPS = float(cfg["layer_norm_eps"])
    assert cfg["hidden_act"] == "gelu"  # exact erf gelu
    assert cfg.get("position_embedding_type", "absolute") == "absolute"

    nodes, inits = [], []
    _n = [0]


    def name(prefix):
        _n[0] += 1
        return f"{prefix}_{_n[0]}"


    def init(nm, arr):
        inits.append(numpy_helper.from_array(np.array(arr, order="C"), nm))  # NB: ascontiguousarray makes 0-d arrays 1-d
        return nm


    def const(arr, prefix="const"):
        return init(name(prefix), np.asarray(arr))


    def node(op, inputs, n_out=1, prefix=None, **attrs):
        nm = name(prefix or op)
        outs = [f"{nm}_out{i}" for i in range(n_out)]
        nodes.append(helper.make_node(op, inputs, outs, name=nm, **attrs))
        return outs[0] if n_out == 1 else outs


    def linear(x, pfx):
        # torch Linear: y = x @ W^T + b ; store W^T as initializer
        w = init(f"{pfx}.weight_T", W[f"{pfx}.weight"].T.astype(np.float32))
        b = init(f"{pfx}.bias", W[f"{pfx}.bias"].astype(np.float32))
        mm = node("MatMul", [x, w], prefix=f"{pfx}.MatMul")  # named so quantisation can pick nodes
        return node("Add", [mm, b], prefix=f"{pfx}.BiasAdd")


    def layernorm(x, pfx):
        g = init(f"{pfx}.weight", W[f"{pfx}.weight"].astype(np.float32))
        b = init(f"{pfx}.bias", W[f"{pfx}.bias"].astype(np.float32))
        return node("LayerNormalization", [x, g, b], axis=-1, epsilon=EPS)


    # ---------------------------------------------------------------- inputs
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]

    # ---------------------------------------------------------------- embeddings
    word = init("embeddings.word_embeddings.weight", W["embeddings.word_embeddings.weight"])
    pos = init("embeddings.position_embeddings.weight", W["embeddings.position_embeddings.weight"])
    typ = init("embeddings.token_type_embeddings.weight", W["embeddings.token_type_embeddings.weight"])
    pos_ids_all = init("embeddings.position_ids", np.arange(cfg["max_position_embeddings"], dtype=np.int64)[None, :])

    we = node("Gather", [word, "input_ids"], axis=0)
    te = node("Gather", [typ, "token_type_ids"], axis=0)
    # position ids = position_ids[:, :seq]  (as torch exports it)
    shape_ids = node("Shape", ["input_ids"])
    seq_len = node("Gather", [shape_ids, const(np.array(1, dtype=np.int64))], axis=0)
    seq_len_1d = node("Unsqueeze", [seq_len, const(np.array([0], dtype=np.int64))])
    pos_ids = node(
        "Slice",
        [pos_ids_all, const(np.array([0], dtype=np.int64)), seq_len_1d,
         const(np.array([1], dtype=np.int64)), const(np.array([1], dtype=np.int64))],
    )
    pe = node("Gather", [pos, pos_ids], axis=0)
    emb = node("Add", [we, te])
    emb = node("Add", [emb, pe])
    hidden = layernorm(emb, "embeddings.LayerNorm")

    # ---------------------------------------------------------------- extended attention mask
    # (1 - mask[:, None, None, :].float()) * -10000  -> added to scores (HF BERT, old style)
    m1 = node("Unsqueeze", ["attention_mask", const(np.array([1], dtype=np.int64))])
    m2 = node("Unsqueeze", [m1, const(np.array([2], dtype=np.int64))])
    mf = node("Cast", [m2], to=TensorProto.FLOAT)
    msub = node("Sub", [const(np.array(1.0, dtype=np.float32)), mf])
    ext_mask = node("Mul", [msub, const(np.array(-10000.0, dtype=np.float32))])

    shape_heads = const(np.array([0, 0, NH, HD], dtype=np.int64), "shape_heads")
    shape_merge = const(np.array([0, 0, H], dtype=np.int64), "shape_merge")
    scale = const(np.array(math.sqrt(HD), dtype=np.float32), "sqrt_head_dim")
    sqrt2 = const(np.array(math.sqrt(2.0), dtype=np.float32), "sqrt2")
    one = const(np.array(1.0, dtype=np.float32), "one")
    half = const(np.array(0.5, dtype=np.float32), "half")

    # ---------------------------------------------------------------- encoder layers
    for i in range(L):
        p = f"encoder.layer.{i}"
        q = linear(hidden, f"{p}.attention.self.query")
        k = linear(hidden, f"{p}.attention.self.key")
        v = linear(hidden, f"{p}.attention.self.value")
        q = node("Transpose", [node("Reshape", [q, shape_heads])], perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [k, shape_heads])], perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [v, shape_heads])], perm=[0, 2, 1, 3])
        scores = node("MatMul", [q, k])
        scores = node("Div", [scores, scale])
        scores = node("Add", [scores, ext_mask])
        probs = node("Softmax", [scores], axis=-1)
        ctx = node("MatMul", [probs, v])
        ctx = node("Transpose", [ctx], perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, shape_merge])
        attn_out = linear(ctx, f"{p}.attention.output.dense")
        attn_out = node("Add", [attn_out, hidden])
        hidden = layernorm(attn_out, f"{p}.attention.output.LayerNorm")

        inter = linear(hidden, f"{p}.intermediate.dense")
        # exact GELU, as the model was trained: x * 0.5 * (1 + erf(x / sqrt(2)))
        g = node("Div", [inter, sqrt2])
        g = node("Erf", [g])
        g = node("Add", [g, one])
        g = node("Mul", [inter, g])
        g = node("Mul", [g, half])
        out = linear(g, f"{p}.output.dense")
        out = node("Add", [out, hidden])
        hidden = layernorm(out, f"{p}.output.LayerNorm")

    last_hidden = node("Identity", [hidden])
    nodes[-1].output[0] = "last_hidden_state"
    last_hidden = "last_hidden_state"

    # ---------------------------------------------------------------- mean pooling + L2 norm
    pm = node("Unsqueeze", ["attention_mask", const(np.array([-1], dtype=np.int64))])
    pmf = node("Cast", [pm], to=TensorProto.FLOAT)               # [B,S,1]
    masked = node("Mul", [last_hidden, pmf])                      # [B,S,H]
    axis1 = const(np.array([1], dtype=np.int64))
    summed = node("ReduceSum", [masked, axis1], keepdims=0)       # [B,H]
    count = node("ReduceSum", [pmf, axis1], keepdims=0)           # [B,1]
    count = node("Max", [count, const(np.array(1e-9, dtype=np.float32))])
    mean = node("Div", [summed, count])
    sq = node("Mul", [mean, mean])
    norm = node("Sqrt", [node("ReduceSum", [sq, axis1], keepdims=1)])  # [B,1]
    norm = node("Max", [norm, const(np.array(1e-12, dtype=np.float32))])
    node("Div", [mean, norm])
    nodes[-1].output[0] = "sentence_embedding"

    outputs = [
        helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", H]),
        helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", H]),
    ]
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="memlog minilm_onnx.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return onnx.shape_inference.infer_shapes(model)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model_dir, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    f32 = os.path.join(out, "model.onnx")
    int8 = os.path.join(out, "model_int8.onnx")
    onnx.save(build(model_dir), f32 + ".tmp")
    os.replace(f32 + ".tmp", f32)
    print(f"wrote {f32}", file=sys.stderr)

    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(f32, int8 + ".tmp", weight_type=QuantType.QInt8, per_channel=True)
    os.replace(int8 + ".tmp", int8)
    print(f"wrote {int8}", file=sys.stderr)

    import onnxruntime
    capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
    libs = sorted(glob.glob(os.path.join(capi, "libonnxruntime.so*")))
    if not libs:
        sys.exit(f"no libonnxruntime.so in {capi}")
    lib = os.path.join(out, "libonnxruntime.so")
    shutil.copyfile(libs[-1], lib + ".tmp")
    os.replace(lib + ".tmp", lib)
    print(f"wrote {lib} (onnxruntime {onnxruntime.__version__})", file=sys.stderr)


if __name__ == "__main__":
    main()
