# The swansphere image: the CLI (SynthSphere, DoA, captioning, eval) and the training jobs
# (`torchrun ... swansphere-train`, submitted by `swansphere-ml submit`).
# Multi-stage: wheels are built once, the runtime stage carries no compiler and runs as non-root.
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY ml ./ml
RUN python -m pip install --no-cache-dir --upgrade pip==25.3 \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels \
      --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock \
 && python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . aisfx==0.1.2

FROM python:3.11.7-slim-bookworm
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin swansphere
COPY --from=build /wheels /wheels
# aisfx pins numpy 1.23 and librosa; eval uses only its network and weights, so no deps.
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels swansphere \
 && python -m pip install --no-cache-dir --no-index --no-deps --find-links /wheels aisfx==0.1.2 \
 && rm -rf /wheels
USER 10001
ENTRYPOINT ["swansphere"]
CMD ["--help"]
