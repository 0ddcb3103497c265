# Gears Fabric image: the `gears` command (gears node, cluster create, api, pipelines) with
# the model layer and the NLP pipeline's libraries.
#   docker build --build-arg TORCH=cpu .      # CPU-only torch (default)
#   docker build --build-arg TORCH=cu124 .    # a CUDA build of torch (run with GPUs: the NVIDIA container toolkit)
# TORCH names a wheel index of download.pytorch.org (cpu, cu118, cu121, cu124, ...);
# EXTRAS the extras installed (setup.cfg: ai, nlp).
FROM python:3.11-slim
ARG TORCH=cpu
ARG EXTRAS=ai,nlp
WORKDIR /opt/gears-fabric
# torch first, from the chosen index: setup.cfg's range (torch>=2.5,<3) then keeps it.
RUN pip install --no-cache-dir "torch>=2.5,<3" --index-url "https://download.pytorch.org/whl/${TORCH}"
COPY setup.cfg pyproject.toml README.md ./
COPY gears ./gears
COPY readers ./readers
COPY cluster ./cluster
COPY pipelines ./pipelines
RUN pip install --no-cache-dir ".[${EXTRAS}]" && python -m gears.environments.base
ENTRYPOINT ["gears"]
