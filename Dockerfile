# One image for all six services: `avsurv serve NAME` picks the service (compose.yaml, k8s/).
# BASE: any image with Python 3.11 and its venv module (deploy/realstart.sh builds one from Debian's
# packages). WHEELS: a find-links URL or folder holding every wheel the install needs, for a build without
# the indexes (deploy/realstart.sh serves one); empty: PyPI, and PyTorch's CPU index for torch.
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG WHEELS=""

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
# The CPU build of PyTorch (the default index would install a multi-GB CUDA build).
RUN python3 -m venv /opt/venv && \
    if [ -n "$WHEELS" ]; then from="--no-index --find-links $WHEELS"; \
    else from="--index-url https://download.pytorch.org/whl/cpu"; fi && \
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
