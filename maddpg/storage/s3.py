"""Checkpoints in S3 or any S3-compatible server (boto3): `<prefix>/ckpt-.../<object>` and `manifest.json`.

Every request goes through botocore's standard retry mode (transient errors: connection failures, 5xx,
throttling); the manifest, the one write that makes a checkpoint visible, gets a few more tries of its own.
Errors become a StoreError that names the bucket, the endpoint and what to fix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from maddpg.storage.base import MANIFEST, PREFIX, CheckpointStore, StoreError, check_key

log = logging.getLogger(__name__)

_REFUSED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
            "AuthorizationHeaderMalformed", "InvalidClientTokenId", "Forbidden", "403"}
_TRANSIENT = {"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError", "Throttling", "503", "500"}


class S3Store(CheckpointStore):
    """A prefix of an S3 bucket holding checkpoints.

    Args:
      bucket: the bucket (it must exist). prefix: the folder inside it ('' for the top).
      endpoint_url: the S3-compatible server (None: boto3's own lookup, which reads AWS_ENDPOINT_URL).
      access_key, secret_key: credentials (None: boto3's chain: env AWS_ACCESS_KEY_ID, profiles, roles).
      max_attempts: tries per request, botocore's standard retry mode with backoff.
      manifest_attempts, backoff_s: extra tries of the manifest upload, waiting backoff_s * 2**k between them.
      connect_timeout, read_timeout: seconds per request.
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None, max_attempts: int = 5,
                 manifest_attempts: int = 3, backoff_s: float = 0.5, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0, _client=None):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._options = dict(endpoint_url=endpoint_url, access_key=access_key, secret_key=secret_key,
                             max_attempts=max_attempts, manifest_attempts=manifest_attempts, backoff_s=backoff_s,
                             connect_timeout=connect_timeout, read_timeout=read_timeout)
        self._manifest_attempts, self._backoff_s = manifest_attempts, backoff_s
        self._client = _client or _make_client(endpoint_url, access_key, secret_key, max_attempts,
                                               connect_timeout, read_timeout)

    @property
    def endpoint_url(self) -> str:
        return self._client.meta.endpoint_url

    @property
    def client(self):
        """The boto3 client (shared by `child` stores)."""
        return self._client

    # ------------------------------------------------------------------ interface
    def put(self, name: str, objects: Mapping[str, bytes], manifest: bytes) -> None:
        try:
            # Rewriting a name: drop its manifest first, so no reader pairs it with the new objects.
            self._call(f"delete the old manifest of {name}", self._client.delete_object, Bucket=self.bucket,
                       Key=self._key(name, MANIFEST))
            for key, data in objects.items():
                check_key(key)
                self._call(f"upload {name}/{key}", self._client.put_object, Bucket=self.bucket,
                           Key=self._key(name, key), Body=data)
            self._put_manifest(name, manifest)
        except StoreError as e:
            raise StoreError(f"checkpoint {name} not written (the previous ones are untouched): {e}",
                             e.transient) from None

    def _put_manifest(self, name: str, manifest: bytes) -> None:
        for attempt in range(self._manifest_attempts):
            try:
                self._call(f"upload {name}/{MANIFEST}", self._client.put_object, Bucket=self.bucket,
                           Key=self._key(name, MANIFEST), Body=manifest, ContentType="application/json")
                return
            except StoreError as e:
                if not e.transient or attempt == self._manifest_attempts - 1:
                    raise
                wait = self._backoff_s * 2 ** attempt
                log.warning("manifest upload of %s failed (%s); retrying in %.1f s", name, e, wait)
                time.sleep(wait)

    def list(self, complete: bool = True) -> list[str]:
        base = self._key("", "")  # "<prefix>/" or ""
        names, finished = set(), set()

        def scan():
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                               Prefix=base + PREFIX):
                for obj in page.get("Contents", []):
                    name, _, key = obj["Key"][len(base):].partition("/")
                    if key and "/" not in key:
                        names.add(name)
                        if key == MANIFEST:
                            finished.add(name)

        self._call("list checkpoints", scan)
        return sorted(finished if complete else names)

    def get(self, name: str, key: str) -> bytes:
        def read() -> bytes:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(name, key))["Body"].read()

        return self._call(f"read {name}/{key}", read)

    def delete(self, name: str) -> None:
        self._call(f"delete {name}/{MANIFEST}", self._client.delete_object, Bucket=self.bucket,
                   Key=self._key(name, MANIFEST))
        prefix = self._key(name, "")

        def remove_objects():
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    self._client.delete_object(Bucket=self.bucket, Key=obj["Key"])

        self._call(f"delete {name}", remove_objects)

    def child(self, name: str) -> S3Store:
        prefix = f"{self.prefix}/{name}" if self.prefix else name
        return S3Store(self.bucket, prefix, **self._options, _client=self._client)

    def location(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r}, endpoint_url={self.endpoint_url!r})"

    # ------------------------------------------------------------------ helpers
    def _key(self, name: str, key: str) -> str:
        path = f"{name}/{key}" if name else key
        return f"{self.prefix}/{path}" if self.prefix else path

    def _call(self, action: str, fn: Callable, *args, **kwargs):
        """Runs one boto3 call; turns its failures into a StoreError that says what to fix."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as e:
            raise self._explain(action, e) from None

    def _explain(self, action: str, e: Exception) -> StoreError:
        from botocore import exceptions as bx

        where = f"{self.uri} at {self.endpoint_url}"
        if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError)):
            return StoreError(f"cannot {action} in {where}: no S3 credentials; set AWS_ACCESS_KEY_ID and "
                              f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            message = err.get("Message") or code
            if code in _REFUSED or status == 403:
                return StoreError(f"cannot {action} in {where}: the server refused the credentials for bucket "
                                  f"{self.bucket!r} ({code}: {message}); check AWS_ACCESS_KEY_ID and "
                                  f"AWS_SECRET_ACCESS_KEY and the bucket's permissions")
            if code == "NoSuchBucket":
                return StoreError(f"cannot {action}: bucket {self.bucket!r} does not exist at {self.endpoint_url}; "
                                  f"create it (e.g. `aws s3 mb s3://{self.bucket}`) or fix the bucket in the URI "
                                  f"(MADDPG_CHECKPOINT_URI)")
            if code in ("NoSuchKey", "404") or status == 404:
                return StoreError(f"cannot {action}: {where} has no such object")
            transient = code in _TRANSIENT or status >= 500
            return StoreError(f"cannot {action} in {where}: {code or status}: {message}"
                              + (" (after retries)" if transient else ""), transient)
        if isinstance(e, (bx.ConnectionError, bx.HTTPClientError)):  # refused, timed out, closed mid-request
            return StoreError(f"cannot {action}: the S3 server at {self.endpoint_url} (bucket {self.bucket!r}) "
                              f"cannot be reached after retries: is it running? Set AWS_ENDPOINT_URL to the "
                              f"server's address ({e})", transient=True)
        if isinstance(e, bx.ParamValidationError):
            return StoreError(f"cannot {action} in {self.uri}: {e}")
        return StoreError(f"cannot {action} in {where}: {e}")


def _make_client(endpoint_url: str | None, access_key: str | None, secret_key: str | None, max_attempts: int,
                 connect_timeout: float, read_timeout: float):
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=connect_timeout, read_timeout=read_timeout,
        s3={"addressing_style": "path"},  # S3-compatible servers on an IP or a Kubernetes service name
        # Checksums only where S3 requires them: older S3-compatible servers refuse the newer trailers; the
        # manifest carries each object's SHA-256, checked on read.
        request_checksum_calculation="when_required", response_checksum_validation="when_required")
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, aws_access_key_id=access_key,
                          aws_secret_access_key=secret_key, region_name=session.region_name or "us-east-1",
                          config=config)
