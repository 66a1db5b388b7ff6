"""One interface for local paths and `s3://bucket/key` URIs, so every reader and writer takes either.

S3 goes through the `minio` client. Configuration comes from the environment, as in production:
`S3_ENDPOINT_URL` (http:// or https://, host and port only), `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`, and `AWS_REGION` (default us-east-1).
"""

import io
import os
import posixpath
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import S3Error

from swansphere.errors import InputError

S3_SCHEME = "s3://"
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MISSING = {"NoSuchKey", "NoSuchBucket"}
T = TypeVar("T")


def is_s3(uri: str | Path) -> bool:
    return str(uri).startswith(S3_SCHEME)


def read_bytes(uri: str | Path) -> bytes:
    """The whole object or file; InputError if it does not exist."""
    if not is_s3(uri):
        path = _local_path(uri)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        try:
            return path.read_bytes()
        except OSError as err:
            raise InputError(f"{path}: cannot read ({err.strerror})") from None
    bucket, key = _split_s3(uri)
    response = None
    try:
        response = _call(uri, lambda client: client.get_object(bucket, key))
        return response.read()
    finally:
        if response is not None:
            response.close()
            response.release_conn()


def write_bytes(uri: str | Path, data: bytes) -> None:
    """Create or replace; parent folders (local) or the bucket (S3) are created when missing."""
    if not is_s3(uri):
        path = _local_path(uri)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as err:
            raise InputError(f"{path}: cannot write ({err.strerror})") from None
        return
    bucket, key = _split_s3(uri)

    def put(client: Minio) -> None:
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
        client.put_object(bucket, key, io.BytesIO(data), len(data))

    _call(uri, put)


def exists(uri: str | Path) -> bool:
    """True for an existing file/object, or a folder/prefix that holds something."""
    if not is_s3(uri):
        return _local_path(uri).exists()
    bucket, key = _split_s3(uri)

    def probe(client: Minio) -> bool:
        try:
            client.stat_object(bucket, key)
            return True
        except S3Error as err:
            if err.code not in _MISSING | {"NoSuchObject", "ResourceNotFound"}:
                raise
        if not client.bucket_exists(bucket):
            return False
        prefix = key.rstrip("/") + "/"
        return next(iter(client.list_objects(bucket, prefix=prefix)), None) is not None

    return _call(uri, probe)


def list_names(uri: str | Path) -> list[str]:
    """Names of the files (objects) directly in a folder or under an `s3://bucket/prefix/`;
    InputError when there is no such folder or prefix."""
    if not is_s3(uri):
        folder = _local_path(uri)
        if not folder.is_dir():
            raise InputError(f"{uri}: no such folder")
        return sorted(path.name for path in folder.iterdir() if path.is_file())
    bucket, key = _split_s3(uri)
    key = key.rstrip("/") + "/" if key else ""
    objects = _call(uri, lambda client: list(client.list_objects(bucket, prefix=key)))
    names = sorted(obj.object_name[len(key) :] for obj in objects if not obj.is_dir)
    if not names:
        raise InputError(f"{uri}: no such S3 prefix, or it holds no objects")
    return names


def join(uri: str | Path, *parts: str) -> str:
    """Append path parts: `/` for S3 keys, the OS rules for local paths."""
    if is_s3(uri):
        return posixpath.join(str(uri), *parts)
    return str(Path(uri, *parts))


@contextmanager
def local_copy(uri: str | Path) -> Iterator[Path]:
    """A local file path for `uri`, for libraries that only open paths.

    Local paths are yielded as they are; S3 objects are downloaded into a temporary folder (keeping
    the file name, so suffix-sniffing libraries work) that is removed on exit.
    """
    if not is_s3(uri):
        path = _local_path(uri)
        if not path.exists():
            raise InputError(f"{path}: no such file")
        yield path
        return
    data = read_bytes(uri)
    with tempfile.TemporaryDirectory(prefix="swansphere-") as folder:
        path = Path(folder, posixpath.basename(_split_s3(uri)[1]))
        path.write_bytes(data)
        yield path


def _local_path(uri: str | Path) -> Path:
    text = str(uri)
    if "://" in text:
        raise InputError(f"{text}: unsupported URI scheme (use a local path or s3://bucket/key)")
    return Path(text)


def _split_s3(uri: str | Path) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); InputError if malformed."""
    text = str(uri)
    bucket, _, key = text[len(S3_SCHEME) :].partition("/")
    if not _BUCKET_NAME.match(bucket) or ".." in bucket:
        raise InputError(f"{text}: malformed S3 URI: bucket name {bucket!r} is not valid")
    if not key.strip("/"):
        raise InputError(f"{text}: malformed S3 URI: no object key after the bucket")
    return bucket, key.strip("/")


def _client() -> Minio:
    """A client for the endpoint configured in the environment."""
    endpoint = os.environ.get("S3_ENDPOINT_URL", "")
    if not endpoint:
        raise InputError("S3_ENDPOINT_URL is not set (e.g. http://127.0.0.1:9000); it is needed for s3://")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
        raise InputError(f"S3_ENDPOINT_URL={endpoint!r} must be http(s)://host[:port] without a path")
    return Minio(
        parts.netloc,
        access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        session_token=os.environ.get("AWS_SESSION_TOKEN"),
        secure=parts.scheme == "https",
        region=os.environ.get("AWS_REGION", "us-east-1"),
    )


def _call(uri: str | Path, action: Callable[[Minio], T]) -> T:
    """Run `action(client)`, turning S3 and connection failures into one-line InputErrors."""
    try:
        return action(_client())
    except S3Error as err:
        if err.code in _MISSING:
            raise InputError(f"{uri}: no such S3 object ({err.code})") from None
        raise InputError(f"{uri}: S3 request failed: {err.code}: {err.message}") from None
    except urllib3.exceptions.HTTPError as err:
        raise InputError(
            f"{uri}: cannot reach S3 endpoint {os.environ.get('S3_ENDPOINT_URL')} ({err})"
        ) from None
