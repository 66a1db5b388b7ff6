# syntax=docker/dockerfile:1.7
# The swansphere image: the CLI (SynthSphere, DoA, captioning, eval, export), the training jobs
# (`torchrun ... swansphere-train`, submitted by `swansphere-ml submit` or the Helm chart) and the base
# of the five service images (gateway.Dockerfile, video-encoder.Dockerfile, ...), which only set the
# entry point. Multi-stage: wheels and the health probe are built once; the runtime stage carries no
# compiler and runs as uid 10001.

# grpc_health_probe: readiness over TLS, where the kubelet's native grpc: probes cannot go (DESIGN §7).
FROM golang:1.25.5-bookworm AS health-probe
RUN CGO_ENABLED=0 GOBIN=/out go install -trimpath github.com/grpc-ecosystem/grpc-health-probe@v0.4.62

FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir pip==25.3
# Dependencies first: this layer is rebuilt only when the lock changes. CPU torch: model compute of
# the services runs in Triton (triton.Dockerfile has the CUDA build).
COPY pyproject.toml requirements.lock README.md ./
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels \
      --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock \
 && python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels aisfx==0.1.2
COPY protos ./protos
COPY ml ./ml
COPY services ./services
# The gRPC code under ml/swansphere/v1/ is generated, never committed (the Makefile's GENERATE_PROTOS).
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels grpcio-tools==1.81.1 \
 && rm -rf ml/swansphere/v1 && mkdir -p ml/swansphere/v1 && touch ml/swansphere/v1/__init__.py \
 && python -m grpc_tools.protoc -Iprotos --python_out=ml --grpc_python_out=ml --pyi_out=ml \
      protos/swansphere/v1/*.proto \
 && python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11.7-slim-bookworm
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin swansphere
# aisfx pins numpy 1.23 and librosa; eval uses only its network and weights, so no deps.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links /wheels swansphere \
 && python -m pip install --no-cache-dir --no-index --no-deps --find-links /wheels aisfx==0.1.2
COPY --from=health-probe /out/grpc-health-probe /usr/local/bin/grpc_health_probe
ENV PYTHONUNBUFFERED=1
USER 10001
ENTRYPOINT ["swansphere"]
CMD ["--help"]
