"""Fixtures and helpers of the sweep tests: a small base config, writing or loading a space, reading results."""

import pytest

from tsmoe.config import RunConfig
from tsmoe.sweep.space import load_search_space

# Reading a results CSV: a trial id is 8 hex digits, and one like "35e12345" would otherwise parse as a number.
TRIAL_ID_AS_TEXT = {"trial_id": str}
EXPLICIT_SCHEDULE = [{"until": 0.5, "length": 256}, {"until": 1.0, "length": 1.0}]


@pytest.fixture
def small_base() -> RunConfig:
    """The quickstart shape: hidden 64, 4 heads, 4 experts with top-k 2."""
    return RunConfig.model_validate(
        {
            "model": {
                "hidden_size": 64,
                "num_attention_heads": 4,
                "intermediate_size": 256,
                "num_experts": 4,
                "num_experts_per_tok": 2,
            }
        }
    )


def write_space(tmp_path, text: str, name: str = "space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path, text: str, base: RunConfig, segment_length: int = 512) -> str:
    path = write_space(tmp_path, text, "x.yaml")
    with pytest.raises(ValueError) as raised:
        load_search_space(path, base, segment_length)
    message = str(raised.value)
    assert message.startswith(str(path)), message
    return message


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto) for the session: its host:port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, request) -> str:
    """A new bucket on the local S3 server, as an s3:// URI that carries the server's address; the
    credentials pyarrow and boto3 read are set for this process and the Ray processes it starts."""
    import re

    import boto3

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = "tsmoe-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:50].strip("-")
    boto3.client("s3", endpoint_url=f"http://{s3_server}").create_bucket(Bucket=bucket)
    return f"s3://{bucket}?endpoint_override={s3_server}&scheme=http"
