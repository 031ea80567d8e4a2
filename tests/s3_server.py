"""S3 servers for the tests: moto's server (fast, any credentials) and the environment that points boto3 at one.

The real SeaweedFS comes from `maddpg.bench.s3_server`, which the checkpoint benchmark uses too.
"""

from __future__ import annotations

import logging

from maddpg.bench.s3_server import S3Server, SeaweedServer, free_ports

__all__ = ["MotoServer", "SeaweedServer", "free_ports", "s3_env"]


def s3_env(server: S3Server) -> dict[str, str]:
    """The environment variables that point boto3 (and `maddpg`) at `server`."""
    return {"AWS_ENDPOINT_URL": server.endpoint_url, "AWS_ACCESS_KEY_ID": server.access_key,
            "AWS_SECRET_ACCESS_KEY": server.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}


class MotoServer(S3Server):
    """moto's S3 server in a thread of this process, on a free port (any credentials are accepted)."""

    def __init__(self):
        self.port = free_ports(1)[0]
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
