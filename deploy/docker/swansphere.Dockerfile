# The swansphere CLI image (batch jobs: SynthSphere generation, DoA, captioning).
# Multi-stage: wheels are built once, the runtime stage carries no compiler and runs as non-root.
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY ml ./ml
RUN python -m pip install --no-cache-dir --upgrade pip==25.3 \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels \
      --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock \
 && python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11.7-slim-bookworm
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin swansphere
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels swansphere \
 && rm -rf /wheels
USER 10001
ENTRYPOINT ["swansphere"]
CMD ["--help"]
