"""Pruning causal language models layer by layer (SmolLM2-135M and any local HF model).

Modules (heavy packages are imported only where needed):

- `load`: a local Hugging Face folder, a ``.gguf`` file or ``builtin:smollm2-135m``.
- `text`: gensim's bundled Wikipedia dump, split by article into calibration and
  evaluation parts.
- `perplexity`: a fixed perplexity protocol.
- `layerwise`: calibration activations propagated through already-pruned decoder blocks,
  one block at a time, with per-Linear statistics (XᵀX, column norms).
- `sparsegpt`: the OBS column sweep (pure torch, one file).
- `baselines`: magnitude and Wanda masks, unstructured and 2:4.
- `icbs`: iCBS for LMs, objectives "reconstruction" (per output row, exact XᵀX) and
  "fisher" (gradient and empirical Fisher of the LM loss).
- `cli`: ``run(args)`` behind ``qcbo prune --task lm``.

Needs the optional extra ``qcbo[llm]`` (transformers, gguf, accelerate, gensim).
"""
