"""Where bytes live: local paths and fsspec URLs (s3://, gs://, file://), with credentials kept out of logs."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from ..errors import ConfigError

# Keys whose values must never appear in an error message, a log line or MLflow params.
_SECRET_KEYS = ("key", "secret", "token", "password", "credential")


def parse_storage_options(text: str | None) -> dict[str, Any]:
    """Parse the `--storage-options JSON` flag into a dict (empty when not given)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("--storage-options", f"not valid JSON ({exc.msg}); pass e.g. '{{\"anon\": true}}'") from None
    if not isinstance(value, dict):
        raise ConfigError("--storage-options", "must be a JSON object, e.g. '{\"anon\": true}'")
    return value


def redact(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of storage options safe to print: secret-looking values replaced by '***'."""
    out: dict[str, Any] = {}
    for k, v in (options or {}).items():
        if isinstance(v, Mapping):
            out[k] = redact(v)
        elif any(s in k.lower() for s in _SECRET_KEYS):
            out[k] = "***"
        else:
            out[k] = v
    return out


def normalize_uri(uri: str) -> str:
    """Turn `file://` URLs and relative paths into absolute local paths; leave remote URLs alone."""
    uri = str(uri)
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" in uri:
        return uri
    return os.path.abspath(os.path.expanduser(uri))


def absolute_paths(config: Any, *fields: str) -> None:
    """Make a (frozen) config's local path fields absolute, in place: Ray Train and Tune run the workers in
    folders of their own, where a relative `--cohort data/cohort.csv` points nowhere."""
    for name in fields:
        value = getattr(config, name)
        if value:
            object.__setattr__(config, name, normalize_uri(value))


def is_remote(uri: str) -> bool:
    """True for URLs handled by a network filesystem (s3://, gs://, http://...)."""
    return "://" in str(uri) and not str(uri).startswith("file://")


def filesystem(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and in-filesystem path for a URI; S3 credentials come from the AWS env/config."""
    return url_to_fs(normalize_uri(uri), **dict(storage_options or {}))


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    return chain


def describe_storage_error(exc: BaseException) -> str | None:
    """A reason with its fix when `exc` is a storage failure (not found, denied, unreachable...), else None.

    The whole cause chain is searched because fsspec wraps connection errors in FileNotFoundError.
    Apart from a missing package's name, only fixed texts come back, so no credential can reach a message.
    """
    low = " ".join(f"{type(e).__name__}: {e}" for e in _causes(exc)).lower()
    if isinstance(exc, ImportError):
        return f"no filesystem installed for this URL scheme ({exc}); install it, e.g. `pip install gcsfs` for gs://"
    if "protocol not known" in low:
        return "unknown URL scheme; use a local path, file://, s3://, gs:// or another fsspec URL"
    if "unexpected keyword argument" in low:
        return "a storage option is not accepted by this filesystem; check --storage-options"
    if any(s in low for s in ("could not connect", "connection refused", "connect call failed", "cannot connect",
                              "name resolution", "name or service not known", "connecttimeout")):
        return "storage unreachable; check AWS_ENDPOINT_URL (or the URL's host) and the network"
    if isinstance(exc, PermissionError) or any(s in low for s in ("accessdenied", "access denied", "forbidden",
                                                                  "invalidaccesskeyid", "signaturedoesnotmatch",
                                                                  "unable to locate credentials")):
        return ("access denied; check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and "
                "AWS_ENDPOINT_URL, or pass --storage-options")
    if "nosuchbucket" in low or "bucket does not exist" in low:
        return "no such bucket; check the bucket name and AWS_ENDPOINT_URL"
    if isinstance(exc, FileNotFoundError) or "nosuchkey" in low or "no such file" in low:
        return "file not found; check the path or URI (and the bucket/prefix for s3://)"
    return None


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or URL with '/'."""
    base = str(base).rstrip("/")
    return "/".join([base, *[p.strip("/") for p in parts]])


@contextmanager
def atomic_write(uri: str, storage_options: Mapping[str, Any] | None = None, durable: bool = True) -> Iterator[Any]:
    """Open `uri` for binary writing so readers see either nothing or the whole file.

    Locally: write a hidden temporary sibling, fsync (unless not `durable`: scratch files a crash may lose),
    then rename (atomic on POSIX). On object stores one upload is already atomic (a single PUT, or a multipart
    upload that appears whole when completed), so the bytes are buffered and put once.
    """
    fs, path = filesystem(uri, storage_options)
    if is_remote(uri):
        import io

        buf = io.BytesIO()
        yield buf
        fs.pipe_file(path, buf.getvalue())
        return
    directory, name = os.path.split(path)
    os.makedirs(directory or ".", exist_ok=True)
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
