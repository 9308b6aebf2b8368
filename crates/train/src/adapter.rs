//! LoRA in the training stages: how a stage readies the model it loaded (`--lora` or not) and
//! how a checkpoint's adapter is restored on resume. The adapter itself is `rlhf_model::lora`.

use std::path::Path;

use rlhf_model::{Gpt, LoraConfig};

use crate::error::{Result, TrainError};

/// Readies a loaded model for training. With `cfg.enabled`: a fresh adapter on the frozen base,
/// drawn from libtorch's generator seeded with `seed` (the same run gives the same adapter),
/// recording `model_dir` (absolute) as its base; the input must then be a full checkpoint (an
/// adapter input would leave the new adapter without a base on disk: merge it first). Without:
/// full fine-tuning, so an adapter input is merged into the weights.
pub fn prepare(gpt: &mut Gpt, cfg: &LoraConfig, model_dir: &Path, seed: u64) -> Result<()> {
    if !cfg.enabled {
        return Ok(gpt.merge_adapter()?);
    }
    if gpt.adapter().is_some() {
        return Err(TrainError::Invalid(format!(
            "{}: is a LoRA adapter; a new adapter needs a full checkpoint as its base. Merge it \
             first (`rlhf merge --adapter {} --out DIR`) and train on DIR",
            model_dir.display(),
            model_dir.display()
        )));
    }
    tch::manual_seed(seed as i64);
    Ok(gpt.add_lora(cfg, Some(absolute(model_dir)))?)
}

/// `path` made absolute (canonical when it exists), as an adapter's base is recorded.
pub fn absolute(path: &Path) -> String {
    let abs = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf());
    abs.display().to_string()
}

/// Checks `[lora]` settings when they are on.
pub fn validate(cfg: &LoraConfig) -> Result<()> {
    if cfg.enabled {
        cfg.validate()
            .map_err(|e| TrainError::Config(e.to_string()))?;
    }
    Ok(())
}
