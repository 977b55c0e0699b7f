# ppodd on a CUDA PyTorch runtime image.
#   docker build -t ppodd:0.2.0 .        (podman build works the same)
#   docker run --rm --gpus all -v "$PWD/results:/results" ppodd:0.2.0 run --config /path/cfg.yaml --out /results
# For Apptainer, containers/sif-from-docker.sh turns the built image into a .sif; containers/README.md.
#
# The base must already hold pyproject's pins, torch==2.14.1 and torchvision==0.29.1. The tag
# follows pytorch/pytorch's naming (<torch>-cuda<X.Y>-cudnn<N>-runtime) for the CUDA 13.0 build
# that torch 2.14.1 ships as on PyPI; no registry is reachable from the developers' machines, so
# it is not verified here: pass --build-arg BASE_IMAGE=... with your registry's tag for torch 2.14.1.
# A base with another torch fails the build at the pip step instead of pulling a second torch.
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="ppodd" \
      org.opencontainers.image.description="Progressive Poster Dataset Distillation (P-PoDD) and PoDD batch tool" \
      org.opencontainers.image.version="0.2.0"

# Caches at /tmp, writable by any user; host values win in Apptainer. PYTHONNOUSERSITE keeps a
# bound-in host ~/.local from shadowing the image's packages.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONNOUSERSITE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    XDG_CACHE_HOME=/tmp/ppodd-cache \
    TORCH_HOME=/tmp/ppodd-cache/torch \
    MPLCONFIGDIR=/tmp/ppodd-cache/matplotlib \
    HF_HOME=/tmp/ppodd-cache/huggingface \
    PPODD_CACHE=/tmp/ppodd-cache/ppodd

COPY pyproject.toml README.md /opt/ppodd-src/
COPY ppodd /opt/ppodd-src/ppodd

# Constrain pip to the base's own torch and torchvision (without the local label, e.g. +cu130,
# which pip would not match against pyproject's ==2.14.1): they are kept, never reinstalled.
RUN python3 -c 'import torch, torchvision; print("torch==" + torch.__version__.split("+")[0] + "\ntorchvision==" + torchvision.__version__.split("+")[0])' \
        > /tmp/base-torch.txt \
    && python3 -m pip install --no-cache-dir --constraint /tmp/base-torch.txt /opt/ppodd-src \
    && rm -rf /opt/ppodd-src /tmp/base-torch.txt \
    && ppodd --version

USER 1000
WORKDIR /tmp
ENTRYPOINT ["ppodd"]
CMD ["--help"]
