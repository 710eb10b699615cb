# One image for all six services: `avsurv serve NAME` picks the service (compose.yaml, k8s/).
# BASE: any image with Python 3.11 and its venv module (deploy/realstart.py builds one from Debian's
# packages). WHEELS: a find-links URL or folder holding every wheel the install needs, for a build without
# the indexes (deploy/realstart.py serves one); empty: PyPI, and TORCH_INDEX for torch. TORCH_INDEX: PyTorch's
# CPU index by default; a CUDA one (e.g. https://download.pytorch.org/whl/cu128) makes the image of k8s/gpu/.
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG WHEELS=""
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
# The CPU build of PyTorch unless TORCH_INDEX says otherwise (PyPI's default is a multi-GB CUDA build).
RUN python3 -m venv /opt/venv && \
    if [ -n "$WHEELS" ]; then from="--no-index --find-links $WHEELS"; \
    else from="--index-url $TORCH_INDEX"; fi && \
    pip install $from torch==2.13.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip install ${WHEELS:+--no-index --find-links $WHEELS} . && \
    useradd --uid 10001 --create-home avsurv && mkdir -p /data /shared && chown avsurv /data /shared

USER avsurv
ENV AVSURV_DATA_DIR=/data
EXPOSE 50051 9100
ENTRYPOINT ["avsurv"]
CMD ["serve", "search"]
