"""Pruning causal language models layer by layer (SmolLM2-135M and any local HF model).

Modules (heavy packages are imported only where needed):

- `load`: a local Hugging Face folder, a ``.gguf`` file or ``builtin:smollm2-135m``.
- `text`: gensim's bundled Wikipedia dump, split by article into calibration and
  evaluation parts.
- `perplexity`: a fixed perplexity protocol.
- `layerwise`: calibration activations propagated through already-pruned decoder blocks,
  one block at a time, with per-Linear statistics (XᵀX, column norms).
- `sparsegpt`: the OBS column sweep (pure torch, one file).
- `alps`: ALPS (ADMM with a penalty schedule, then a PCG re-fit on the support).
- `baselines`: magnitude and Wanda masks, unstructured and N:M.
- `icbs`: iCBS for LMs, objectives "reconstruction" (per output row, exact XᵀX, optionally
  re-fit-aware) and "fisher" (gradient and empirical Fisher of the LM loss).
- `objectives`: those objectives as `pruning.engine` objectives.
- `prune`: `LMPruneConfig` and `prune_lm` (one model, any method).
- `run`: `run_lm(model_spec, config, out)`, the library function behind
  ``qcbo prune --task lm`` (whose argument handling is `qcbo.commands._prune_lm`): loads
  the model and text, prunes, writes a Hugging Face model folder, report.json and
  sparsity.json atomically.

Needs the optional extra ``qcbo[llm]`` (transformers, gguf, accelerate, gensim).
"""
