"""Service settings from `SWANSPHERE_*` environment variables, checked before anything starts."""

from pathlib import Path
from typing import Literal, TypeVar

import grpc
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from swansphere.errors import InputError

ENV_PREFIX = "SWANSPHERE_"


class ServiceSettings(BaseSettings):
    """What every service reads from its environment (e.g. SWANSPHERE_PORT=50051).

    Services with more settings subclass this; `load_settings` turns a bad value into one InputError.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    host: str = "127.0.0.1"
    """Address the gRPC server binds; 0.0.0.0 in a container."""
    port: int = Field(50051, ge=0, le=65535)
    """gRPC port; 0 picks a free one."""
    metrics_port: int | None = Field(None, ge=1, le=65535)
    """Prometheus /metrics port; unset = no metrics server."""
    triton_url: str = "127.0.0.1:8001"
    """Triton's gRPC endpoint, HOST:PORT."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    kafka_bootstrap: str | None = None
    """Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]; unset = no durable event log."""
    checkpoint: str | None = None
    """Model checkpoint: local path or s3:// URI."""
    max_streams: int = Field(16, ge=1, le=4096)
    """Streams served at once; more are refused with RESOURCE_EXHAUSTED."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    tls_cert: Path | None = None
    """Server certificate (PEM); with tls_key, the server speaks TLS."""
    tls_key: Path | None = None
    tls_ca: Path | None = None
    """CA bundle (PEM) that client certificates must chain to: mutual TLS."""
    shutdown_grace_s: float = Field(10.0, ge=0.0, le=3600.0)
    """On SIGTERM: seconds in-flight calls get to finish before they are cancelled."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("triton_url")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _check_host_port(value)
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _host_ports(cls, value: str | None) -> str | None:
        if value is not None:
            for address in value.split(","):
                _check_host_port(address.strip())
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"must start with redis://, rediss:// or unix://, got {value!r}")
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> "ServiceSettings":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError(f"{ENV_PREFIX}TLS_CERT and {ENV_PREFIX}TLS_KEY go together: set both or neither")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError(f"{ENV_PREFIX}TLS_CA (mutual TLS) needs {ENV_PREFIX}TLS_CERT and TLS_KEY too")
        for name in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{ENV_PREFIX}{name.upper()}: no such file: {path}")
        return self


def channel_credentials(settings: ServiceSettings) -> grpc.ChannelCredentials | None:
    """Credentials for this service's own calls to other services when TLS is on: peers are checked
    against tls_ca, and the service's certificate is its client certificate (mutual TLS)."""
    if settings.tls_ca is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=settings.tls_ca.read_bytes(),
        private_key=settings.tls_key.read_bytes() if settings.tls_key else None,
        certificate_chain=settings.tls_cert.read_bytes() if settings.tls_cert else None,
    )


def _check_host_port(value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be HOST:PORT, got {value!r}")


Settings = TypeVar("Settings", bound=ServiceSettings)


def load_settings(cls: type[Settings] = ServiceSettings, **overrides: object) -> Settings:
    """Settings from the environment (and `overrides`); InputError naming each bad variable."""
    try:
        return cls(**overrides)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            where = f"{ENV_PREFIX}{str(error['loc'][0]).upper()}: " if error["loc"] else ""
            message = error["msg"].removeprefix("Value error, ")
            given = f" (got {error['input']!r})" if error["loc"] else ""
            problems.append(f"{where}{message}{given}")
        raise InputError("bad service settings: " + "; ".join(problems)) from None
