# syntax=docker/dockerfile:1.7
# NVIDIA Triton serving the python-backend repository `swansphere export` writes (DESIGN §2): the
# official image plus what each model.py imports, i.e. our `swansphere` package and CUDA torch.
#
# Triton 24.10 is server 2.51.0, the same release the nvidia-pytriton 0.7.0 wheel runs in the tests and
# `make up`. Its python backend stub is built for the image's Python 3.10; ours needs 3.11, so the
# image gets Ubuntu 22.04's python3.11 with a virtual environment, and the 3.11 stub of that same
# Triton release (shipped in the nvidia-pytriton wheel) replaces the default one. The stub embeds
# libpython3.11 from the same Ubuntu package as the venv's interpreter, so the two always match.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3

FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir pip==25.3 grpcio-tools==1.81.1 protobuf==6.33.6
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY ml ./ml
COPY services ./services
RUN rm -rf ml/swansphere/v1 && mkdir -p ml/swansphere/v1 && touch ml/swansphere/v1/__init__.py \
 && python -m grpc_tools.protoc -Iprotos --python_out=ml --grpc_python_out=ml --pyi_out=ml \
      protos/swansphere/v1/*.proto \
 && python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .
# The Python 3.11 backend stub of Triton 2.51 (nvidia-pytriton 0.7.0 ships one per Python version),
# with the CUDA runtime it links against: the wheel's own renamed copy, found through the stub's RPATH.
RUN python -m pip download --no-cache-dir --no-deps --dest /pytriton nvidia-pytriton==0.7.0 \
 && python -c "import glob, zipfile; wheel = zipfile.ZipFile(glob.glob('/pytriton/*.whl')[0]); \
[wheel.extract(name, '/stub') for name in wheel.namelist() \
 if name == 'pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub' \
 or name.startswith('nvidia_pytriton.libs/libcudart-')]"

FROM ${TRITON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv libpython3.11 \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/swansphere \
 && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin swansphere
# CUDA torch from PyPI (the lock pins its version), then our package without touching the pins.
COPY requirements.lock /tmp/requirements.lock
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    /opt/swansphere/bin/python -m pip install --no-cache-dir pip==25.3 \
 && /opt/swansphere/bin/python -m pip install --no-cache-dir -r /tmp/requirements.lock \
 && /opt/swansphere/bin/python -m pip install --no-cache-dir --no-deps /wheels/swansphere-*.whl \
 && rm /tmp/requirements.lock
COPY --from=build --chmod=755 \
    /stub/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub \
    /opt/tritonserver/backends/python/triton_python_backend_stub
# The stub's RPATH is $ORIGIN/../../../../nvidia_pytriton.libs, its place in the wheel; from
# /opt/tritonserver/backends/python that is /nvidia_pytriton.libs. Without its libcudart there, every
# model's stub fails to start and Triton exits (tests/test_helm.py checks the two paths agree).
COPY --from=build /stub/nvidia_pytriton.libs /nvidia_pytriton.libs
# The stub's interpreter finds the venv's packages (torch, swansphere) through PYTHONPATH.
ENV PYTHONPATH=/opt/swansphere/lib/python3.11/site-packages \
    PATH=/opt/tritonserver/bin:${PATH} \
    PYTHONUNBUFFERED=1
USER 10001
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
CMD ["--help"]
