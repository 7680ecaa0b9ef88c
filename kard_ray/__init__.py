"""kard-ray: Knowledge-Augmented Reasoning Distillation (Kang et al., NeurIPS 2023) on Ray."""

__version__ = "0.1.0"
