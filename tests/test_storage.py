"""storage: local paths and s3:// URIs behave the same (S3 against a real moto server)."""

import pytest

from swansphere import storage
from swansphere.errors import InputError


def test_local_round_trip(tmp_path):
    uri = storage.join(str(tmp_path), "a", "b.bin")
    assert uri == str(tmp_path / "a" / "b.bin")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"\x00payload")
    assert storage.exists(uri)
    assert storage.exists(str(tmp_path / "a"))
    assert storage.read_bytes(uri) == b"\x00payload"
    with storage.local_copy(uri) as path:
        assert path.read_bytes() == b"\x00payload"
    assert storage.exists(uri), "a local file is used in place, never deleted"


def test_local_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        storage.read_bytes(tmp_path / "missing.bin")
    with pytest.raises(InputError, match="no such file"), storage.local_copy(tmp_path / "missing.bin"):
        pass
    with pytest.raises(InputError, match="unsupported URI scheme"):
        storage.read_bytes("gs://bucket/key")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(InputError, match="cannot write"):
        storage.write_bytes(tmp_path / "file" / "below-a-file.bin", b"x")


@pytest.mark.servers
def test_s3_round_trip(s3_bucket):
    uri = storage.join(f"s3://{s3_bucket}/prefix", "sub", "weights.safetensors")
    assert uri == f"s3://{s3_bucket}/prefix/sub/weights.safetensors"
    assert not storage.exists(uri), "bucket does not exist yet"
    storage.write_bytes(uri, b"\x01\x02data")  # creates the bucket
    assert storage.exists(uri)
    assert storage.exists(f"s3://{s3_bucket}/prefix/sub"), "a prefix holding objects exists"
    assert storage.exists(f"s3://{s3_bucket}/prefix/sub/")
    assert not storage.exists(f"s3://{s3_bucket}/prefix/su"), "prefixes match whole path parts only"
    assert storage.read_bytes(uri) == b"\x01\x02data"
    storage.write_bytes(uri, b"replaced")
    assert storage.read_bytes(uri) == b"replaced"
    with storage.local_copy(uri) as path:
        assert path.name == "weights.safetensors", "suffix kept for libraries that sniff it"
        assert path.read_bytes() == b"replaced"
    assert not path.exists(), "the download is removed afterwards"


@pytest.mark.servers
def test_s3_missing_objects_are_input_errors(s3_bucket):
    storage.write_bytes(f"s3://{s3_bucket}/present", b"x")
    with pytest.raises(InputError, match="no such S3 object"):
        storage.read_bytes(f"s3://{s3_bucket}/absent")
    with pytest.raises(InputError, match="no such S3 object"):
        storage.read_bytes(f"s3://{s3_bucket}-never-made/key")
    with pytest.raises(InputError, match="no such S3 object"), storage.local_copy(f"s3://{s3_bucket}/absent"):
        pass
    assert not storage.exists(f"s3://{s3_bucket}-never-made/key")


@pytest.mark.parametrize(
    ("uri", "reason"),
    [("s3://", "bucket name"), ("s3://Bad_Bucket/key", "bucket name"), ("s3://bucket", "no object key")],
)
def test_malformed_s3_uris(uri, reason):
    with pytest.raises(InputError, match=reason):
        storage.read_bytes(uri)


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        (None, "S3_ENDPOINT_URL is not set"),
        ("127.0.0.1:9000", "must be http"),
        ("http://h:1/path", "without a path"),
    ],
)
def test_endpoint_configuration_errors(monkeypatch, endpoint, reason):
    if endpoint is None:
        monkeypatch.delenv("S3_ENDPOINT_URL", raising=False)
    else:
        monkeypatch.setenv("S3_ENDPOINT_URL", endpoint)
    with pytest.raises(InputError, match=reason):
        storage.write_bytes("s3://bucket/key", b"x")
