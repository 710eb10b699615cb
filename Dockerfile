# One image for all six services: `avsurv serve NAME` picks the service (compose.yaml, k8s/).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
# The CPU build of PyTorch (the default index would install a multi-GB CUDA build).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip install . && useradd --uid 10001 --create-home avsurv && mkdir -p /data && chown avsurv /data

USER avsurv
ENV AVSURV_DATA_DIR=/data
EXPOSE 50051 9100
ENTRYPOINT ["avsurv"]
CMD ["serve", "search"]
