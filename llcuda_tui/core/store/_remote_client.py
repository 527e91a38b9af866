"""The team store's connection: where it is (``[store.remote]`` and the environment), the
credentials, a boto3 S3 client, and S3 failures turned into one-line errors.

boto3 signs every request (no hand-written S3 signing), so the same code talks to SeaweedFS,
MinIO, Ceph RGW, R2 and AWS S3. It is imported on first use only: a command that never
touches the team store does not pay for it. No message made here contains a credential.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from llcuda_tui.core.config import Settings
from llcuda_tui.core.errors import ConfigError, ModelNotFoundError, one_line
from llcuda_tui.core.store._errors import StoreError

URL_ENV = "LLCUDA_REMOTE_URL"
BUCKET_ENV = "LLCUDA_REMOTE_BUCKET"
DEFAULT_REGION = "us-east-1"
_AUTH_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "InvalidToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed", "403", "401",
}  # fmt: skip
_KEY_FILE_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


class RemoteError(StoreError):
    """The team store failed or refused a request (one line, never with a credential)."""


class RemoteUnavailableError(RemoteError):
    """The team store cannot be used now: unreachable, no or wrong credentials, no bucket."""


class RemoteNotFoundError(ModelNotFoundError):
    """The team store has no model of that name."""


@dataclass(frozen=True)
class RemoteConfig:
    """Where the team store is: ``[store.remote]`` with the environment's overrides."""

    url: str = ""
    bucket: str = ""
    prefix: str = ""
    region: str = ""
    profile: str = ""
    key_file: str = ""
    ca_file: str = ""

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> RemoteConfig:
        """``settings.store.remote``; ``LLCUDA_REMOTE_URL`` / ``_BUCKET`` win when set."""
        env = os.environ if environ is None else environ
        r = settings.store.remote
        return cls(
            url=env.get(URL_ENV) or r.url,
            bucket=env.get(BUCKET_ENV) or r.bucket,
            prefix=r.prefix,
            region=r.region,
            profile=r.profile,
            key_file=r.key_file,
            ca_file=r.ca_file,
        )

    @property
    def configured(self) -> bool:
        """True when a bucket is set (without one there is no team store)."""
        return bool(self.bucket)

    @property
    def key_prefix(self) -> str:
        """``prefix`` as the start of every key ('' or 'a/b/')."""
        p = self.prefix.strip("/")
        return f"{p}/" if p else ""

    @property
    def where(self) -> str:
        """The store for messages: endpoint (without any user:password), bucket and prefix."""
        endpoint = "s3"
        if self.url:
            parts = urlsplit(self.url)
            netloc = parts.netloc.rpartition("@")[2]
            endpoint = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        return f"{endpoint}/{self.bucket}" + (f"/{self.prefix.strip('/')}" if self.prefix else "")


def read_key_file(path: Path) -> dict[str, str]:
    """``aws_access_key_id`` / ``aws_secret_access_key`` (/ ``aws_session_token``) from a
    credentials-style file that only its owner can read (``[section]`` lines are ignored)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"[store.remote] key_file {path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"[store.remote] key_file {path} can be read by other users: chmod 600 {path}"
        )
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        if sep and key in _KEY_FILE_KEYS:
            found[key] = value.strip()
    if not (found.get("aws_access_key_id") and found.get("aws_secret_access_key")):
        raise ConfigError(
            f"[store.remote] key_file {path} needs aws_access_key_id and aws_secret_access_key"
        )
    return found


def make_client(config: RemoteConfig, max_connections: int = 16) -> Any:
    """A boto3 S3 client for ``config`` (thread-safe; one per :class:`RemoteStore`)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    keys: dict[str, str] = {}
    if config.key_file:
        keys = read_key_file(Path(config.key_file).expanduser())
    if config.ca_file and not Path(config.ca_file).expanduser().is_file():
        raise ConfigError(f"[store.remote] ca_file {config.ca_file}: no such file")
    try:
        session = boto3.Session(profile_name=config.profile or None, **keys)
    except BotoCoreError as exc:  # ProfileNotFound
        raise ConfigError(f"[store.remote] profile: {one_line(exc)}") from None
    client_config = Config(
        s3={"addressing_style": "path"} if config.url else {},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=max_connections,
    )
    verify: str | bool = str(Path(config.ca_file).expanduser()) if config.ca_file else True
    return session.client(
        "s3",
        endpoint_url=config.url or None,
        region_name=config.region or DEFAULT_REGION,
        verify=verify,
        config=client_config,
    )


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ``ClientError`` ('NoSuchKey', '404', ...), else ''."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def is_missing(exc: BaseException) -> bool:
    """True for 'no such key' (GET: NoSuchKey, HEAD: a bare 404)."""
    return error_code(exc) in ("NoSuchKey", "404", "NotFound")


def translate(exc: BaseException, config: RemoteConfig, what: str) -> RemoteError:
    """A one-line :class:`RemoteError` for a botocore failure while doing ``what``."""
    from botocore import exceptions as bx

    where = f"team store {config.where}"
    code = error_code(exc)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return RemoteUnavailableError(
            f"{where}: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
            "[store.remote] profile or key_file)"
        )
    if isinstance(exc, bx.SSLError):
        return RemoteUnavailableError(
            f"{where}: TLS verification failed (set [store.remote] ca_file to the CA bundle)"
        )
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError):
        return RemoteUnavailableError(f"{where} is unreachable (while {what})")
    if isinstance(exc, bx.ReadTimeoutError | bx.ConnectionClosedError):
        return RemoteUnavailableError(f"{where} stopped answering (while {what})")
    if code in _AUTH_CODES:
        return RemoteUnavailableError(f"{where} refused the credentials ({code}) while {what}")
    if code == "NoSuchBucket":
        return RemoteUnavailableError(f"{where}: the bucket {config.bucket} does not exist")
    if code:
        message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
        return RemoteError(f"{where}: {what} failed: {code} {message}".rstrip())
    return RemoteError(f"{where}: {what} failed: {one_line(exc)}")


@contextlib.contextmanager
def s3_calls(config: RemoteConfig, what: str) -> Iterator[None]:
    """Turn botocore failures inside the block into one-line :class:`RemoteError` s."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise translate(exc, config, what) from None
