# syntax=docker/dockerfile:1.7
# `swansphere serve spatial_lm`: the spatial LM stage (per-stream state in Redis and its Triton instance).
# Settings come from SWANSPHERE_* variables (the Helm chart sets them). Built on the swansphere image
# (swansphere.Dockerfile: the package, its dependencies and grpc_health_probe); skaffold passes the
# tag it built as BASE_IMAGE. Model compute runs in Triton, not here.
ARG BASE_IMAGE=swansphere
FROM ${BASE_IMAGE}
USER 10001
EXPOSE 50051 9090
ENTRYPOINT ["swansphere", "serve", "spatial_lm"]
CMD []
