//! The forward pass on a small random BERT (2 layers, 192 wide, 4 heads of 48), built as
//! a safetensors file here: the two kernels agree end to end, packing texts together does
//! not mix them, and loading names what is wrong. The real model's vectors are checked against
//! sentence-transformers in `engine/tests/embed.rs`.

use memlog_minilm::gemm::Kernel;
use memlog_minilm::{Config, Model, Tokens};

const H: usize = 192;
const INTER: usize = 256;
const VOCAB: usize = 50;
const POSITIONS: usize = 40;

fn config() -> Config {
    serde_json::from_value(serde_json::json!({
        "hidden_size": H,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "intermediate_size": INTER,
        "max_position_embeddings": POSITIONS,
        "type_vocab_size": 2,
        "vocab_size": VOCAB,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
    }))
    .unwrap()
}

/// Every tensor of the model, seeded; `skip` leaves one out, `bad_shape` gives one a wrong
/// shape.
fn weights(skip: Option<&str>, bad_shape: Option<&str>) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(3);
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![VOCAB, H]),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![POSITIONS, H],
        ),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, H]),
        ("embeddings.LayerNorm.weight".into(), vec![H]),
        ("embeddings.LayerNorm.bias".into(), vec![H]),
    ];
    for l in 0..2 {
        let p = format!("encoder.layer.{l}");
        for (name, n, k) in [
            ("attention.self.query", H, H),
            ("attention.self.key", H, H),
            ("attention.self.value", H, H),
            ("attention.output.dense", H, H),
            ("intermediate.dense", INTER, H),
            ("output.dense", H, INTER),
        ] {
            tensors.push((format!("{p}.{name}.weight"), vec![n, k]));
            tensors.push((format!("{p}.{name}.bias"), vec![n]));
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            tensors.push((format!("{p}.{norm}.weight"), vec![H]));
            tensors.push((format!("{p}.{norm}.bias"), vec![H]));
        }
    }
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .filter(|(name, _)| Some(name.as_str()) != skip)
        .map(|(name, mut shape)| {
            if Some(name.as_str()) == bad_shape {
                shape[0] += 1;
            }
            let len: usize = shape.iter().product();
            let gamma = name.ends_with("LayerNorm.weight");
            let bytes = (0..len)
                .map(|_| {
                    if gamma {
                        1.0 + 0.1 * rng.f32()
                    } else {
                        rng.f32() - 0.5
                    }
                })
                .flat_map(f32::to_le_bytes)
                .collect();
            (name, shape, bytes)
        })
        .collect();
    let views = data.iter().map(|(name, shape, bytes)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .unwrap();
        (name.clone(), view)
    });
    safetensors::serialize(views, None).unwrap()
}

fn model() -> Model {
    Model::from_safetensors(config(), &weights(None, None)).unwrap()
}

/// Seeded texts of 1 to 39 tokens.
fn texts() -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut rng = fastrand::Rng::with_seed(9);
    [1, 2, 7, 16, 17, 31, 39, 5, 33]
        .into_iter()
        .map(|len| {
            let ids = (0..len).map(|_| rng.u32(0..VOCAB as u32)).collect();
            let types = (0..len).map(|i| u32::from(i >= len / 2)).collect();
            (ids, types)
        })
        .collect()
}

fn tokens(texts: &[(Vec<u32>, Vec<u32>)]) -> Vec<Tokens<'_>> {
    texts
        .iter()
        .map(|(ids, type_ids)| Tokens { ids, type_ids })
        .collect()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn both_kernels_give_the_same_vectors() {
    let texts = texts();
    let portable = model().with_kernel(Kernel::Portable);
    assert_eq!(portable.kernel(), Kernel::Portable);
    let slow = portable.embed(&tokens(&texts));
    let best = model();
    println!("kernel on this CPU: {}", best.kernel().name());
    if best.kernel() == Kernel::Portable {
        println!("no AVX-512 BF16 here: only the portable kernel ran");
    }
    let fast = best.embed(&tokens(&texts));
    for v in &fast {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    // Same bf16 products, f32 sums in another order; a last-bit difference can round an
    // activation to the neighbouring bf16 in the next layer, so the vectors agree closely
    // but not bit for bit.
    let diff = max_diff(&fast, &slow);
    assert!(diff < 1e-3, "kernels differ by {diff}");
    for (a, b) in fast.iter().zip(&slow) {
        let cos: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        assert!(cos > 0.99999, "cosine {cos}");
    }
}

#[test]
fn packed_texts_do_not_mix() {
    let texts = texts();
    let model = model();
    let together = model.embed(&tokens(&texts));
    let alone: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| model.embed(&tokens(std::slice::from_ref(t))).remove(0))
        .collect();
    let diff = max_diff(&together, &alone);
    assert!(diff < 1e-5, "a text's vector depends on its batch: {diff}");
    // And the same batch again (buffers reused from the pool) gives the same vectors.
    assert_eq!(model.embed(&tokens(&texts)), together);
    // Different texts give different vectors.
    assert!(max_diff(&together[..1], &together[1..2]) > 1e-3);
}

#[test]
fn an_empty_text_gives_a_zero_vector() {
    let model = model();
    let texts = texts();
    let mut all = tokens(&texts[..2]);
    all.insert(
        1,
        Tokens {
            ids: &[],
            type_ids: &[],
        },
    );
    let out = model.embed(&all);
    assert_eq!(out.len(), 3);
    assert!(out[1].iter().all(|&x| x == 0.0));
    assert_eq!(out[1].len(), H);
    assert!(model.embed(&[]).is_empty());
}

#[test]
fn loading_names_what_is_wrong() {
    let missing = "encoder.layer.1.output.dense.bias";
    let err = Model::from_safetensors(config(), &weights(Some(missing), None)).unwrap_err();
    assert!(err.contains(missing), "{err}");

    let bad = "encoder.layer.0.intermediate.dense.weight";
    let err = Model::from_safetensors(config(), &weights(None, Some(bad))).unwrap_err();
    assert!(err.contains(bad) && err.contains("shape"), "{err}");

    let mut odd = config();
    odd.hidden_act = "relu".into();
    let err = Model::from_safetensors(odd, &weights(None, None)).unwrap_err();
    assert!(err.contains("relu"), "{err}");

    let tmp = std::env::temp_dir().join(format!("memlog-minilm-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let err = Model::load(&tmp).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
