"""The handle the session-scoped ``sandbox`` fixture returns (see tests/conftest.py).

API (agreed in the preamble): ``api_endpoint``, ``port``, ``ca_file``, ``region``, ``dir``,
``env()``, ``create_cluster()``, ``connect(cluster_id, user="admin", *, creds=None, **kw)``,
``iam_identity(name, kind="role"|"user") -> (arn, creds)``. ``creds`` are boto3 credential
keyword arguments (``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dsqlops.sandbox import lifecycle
from dsqlops.sandbox.state import SandboxDir

TRUST_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}]})


class SandboxHandle:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.sdir = SandboxDir(self.dir)
        self.started: lifecycle.StartResult | None = None

    # life cycle ------------------------------------------------------------------------------
    def start(self, *, api_port: int | None = None, port: int | None = None) -> lifecycle.StartResult:
        import os

        from dsqlops.sandbox.postgres import free_port

        # owner_pid: if this test session is killed, the sandbox stops by itself
        self.started = lifecycle.start_background(self.sdir, api_port=api_port or free_port(),
                                                  port=port or free_port(), timeout=120, owner_pid=os.getpid())
        return self.started

    def attach(self) -> SandboxHandle:
        """Use a sandbox already running in ``dir`` (started by the CLI)."""
        rt = self.sdir.load_runtime()
        assert rt is not None and rt.get("ready"), f"no sandbox running in {self.dir}"
        self.started = lifecycle.result_from_runtime(rt)
        return self

    def stop(self) -> dict[str, Any]:
        return lifecycle.stop(self.sdir, timeout=120)

    @property
    def _rt(self) -> lifecycle.StartResult:
        assert self.started is not None, "sandbox not started"
        return self.started

    @property
    def api_endpoint(self) -> str:
        return self._rt.api_endpoint

    @property
    def port(self) -> int:
        return self._rt.port

    @property
    def ca_file(self) -> str:
        return self._rt.ca_file

    @property
    def region(self) -> str:
        return self._rt.region

    def env(self) -> dict[str, str]:
        return lifecycle.env_vars(self.sdir)

    # AWS side ----------------------------------------------------------------------------------
    def credentials(self) -> dict[str, str]:
        creds = self.sdir.load_credentials()
        assert creds is not None
        return {"aws_access_key_id": creds.access_key_id, "aws_secret_access_key": creds.secret_access_key}

    def client(self, service: str, *, creds: dict[str, str] | None = None, region: str | None = None) -> Any:
        import boto3

        c = creds or self.credentials()
        return boto3.client(service, region_name=region or self.region, endpoint_url=self.api_endpoint,
                            aws_access_key_id=c["aws_access_key_id"],
                            aws_secret_access_key=c["aws_secret_access_key"],
                            aws_session_token=c.get("aws_session_token") or None)

    def create_cluster(self, *, region: str | None = None, timeout: float = 60.0, **kw: Any) -> str:
        dsql = self.client("dsql", region=region)
        kw.setdefault("deletionProtectionEnabled", False)
        cid: str = dsql.create_cluster(**kw)["identifier"]
        self.wait_active(cid, region=region, timeout=timeout)
        return cid

    def wait_active(self, cid: str, *, region: str | None = None, timeout: float = 60.0) -> None:
        dsql = self.client("dsql", region=region)
        deadline = time.monotonic() + timeout
        while True:
            st = dsql.get_cluster(identifier=cid)["status"]
            if st == "ACTIVE":
                return
            if st == "FAILED":
                log = self.sdir.log_file.read_text(errors="replace")[-4000:] if self.sdir.log_file.exists() else ""
                raise RuntimeError(f"cluster {cid} FAILED; sandbox log:\n{log}")
            if time.monotonic() > deadline:
                log = self.sdir.log_file.read_text(errors="replace")[-4000:] if self.sdir.log_file.exists() else ""
                raise TimeoutError(f"cluster {cid} still {st} after {timeout}s; sandbox log:\n{log}")
            time.sleep(0.1)

    def endpoint(self, cid: str, region: str | None = None) -> str:
        return f"{cid}.dsql.{region or self.region}.on.aws"

    def token(self, cid: str, user: str = "admin", *, creds: dict[str, str] | None = None,
              region: str | None = None, expires_in: int = 900) -> str:
        dsql = self.client("dsql", creds=creds, region=region)
        host = self.endpoint(cid, region)
        if user == "admin":
            return str(dsql.generate_db_connect_admin_auth_token(host, region or self.region, expires_in))
        return str(dsql.generate_db_connect_auth_token(host, region or self.region, expires_in))

    def conninfo(self, cid: str, user: str = "admin", *, creds: dict[str, str] | None = None,
                 region: str | None = None, **kw: Any) -> dict[str, Any]:
        info: dict[str, Any] = {
            "host": self.endpoint(cid, region), "hostaddr": "127.0.0.1", "port": self.port, "user": user,
            "dbname": "postgres", "sslmode": "verify-full", "sslrootcert": self.ca_file,
            "password": self.token(cid, user, creds=creds, region=region), "connect_timeout": 30,
        }
        info.update(kw)
        return info

    def connect(self, cluster_id: str, user: str = "admin", *, creds: dict[str, str] | None = None,
                **kw: Any) -> Any:
        import psycopg

        region = kw.pop("region", None)
        return psycopg.connect(**self.conninfo(cluster_id, user, creds=creds, region=region, **kw))

    def iam_identity(self, name: str, kind: str = "role") -> tuple[str, dict[str, str]]:
        iam = self.client("iam")
        if kind == "user":
            try:
                arn = iam.create_user(UserName=name)["User"]["Arn"]
            except iam.exceptions.EntityAlreadyExistsException:
                arn = iam.get_user(UserName=name)["User"]["Arn"]
            key = iam.create_access_key(UserName=name)["AccessKey"]
            return arn, {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
        if kind != "role":
            raise ValueError("kind must be 'role' or 'user'")
        try:
            arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST_POLICY)["Role"]["Arn"]
        except iam.exceptions.EntityAlreadyExistsException:
            arn = iam.get_role(RoleName=name)["Role"]["Arn"]
        c = self.client("sts").assume_role(RoleArn=arn, RoleSessionName=f"{name}-session")["Credentials"]
        return arn, {"aws_access_key_id": c["AccessKeyId"], "aws_secret_access_key": c["SecretAccessKey"],
                     "aws_session_token": c["SessionToken"]}

    # test helpers beyond the agreed API ---------------------------------------------------------
    def runtime(self) -> dict[str, Any]:
        rt = self.sdir.load_runtime()
        assert rt is not None
        return rt

    def superuser_connect(self, cid: str, **kw: Any) -> Any:
        """Straight to the cluster's PostgreSQL as its superuser (bypassing the front)."""
        import psycopg

        c = self.runtime()["clusters"][cid]
        # the cluster's PostgreSQL listens on its Unix socket only
        # hostaddr="" so that a PGHOSTADDR in the environment (`sandbox env` sets one) does not win
        return psycopg.connect(host=c["pg_socket_dir"], hostaddr="", port=c["pg_port"], user="postgres",
                               dbname="postgres", **kw)

    def map_role(self, cid: str, role: str, arn: str) -> None:
        """CREATE ROLE + AWS IAM GRANT through the front (the dialect); without a working dialect
        grant, the mapping row is written directly as the superuser (what the front checks is the same)."""
        import psycopg

        with self.connect(cid, autocommit=True) as conn:
            conn.execute(f'CREATE ROLE "{role}" WITH LOGIN')
            if self.runtime().get("dialect") == "DsqlDialect":
                try:
                    conn.execute(f"AWS IAM GRANT \"{role}\" TO '{arn}'")
                    return
                except psycopg.Error as e:
                    import warnings

                    warnings.warn(f"AWS IAM GRANT failed ({e}); inserting the mapping directly", stacklevel=2)
        with self.superuser_connect(cid, autocommit=True) as su:
            kind = su.execute("SELECT relkind FROM pg_class WHERE oid = 'sys.iam_pg_role_mappings'::regclass"
                              ).fetchone()
            if kind == ("r",):
                su.execute("INSERT INTO sys.iam_pg_role_mappings (arn, pg_role_name) VALUES (%s, %s)", (arn, role))
            else:
                su.execute("INSERT INTO sys._iam_mappings (arn, pg_role_oid, grantor_oid) SELECT %s, r.oid, g.oid "
                           "FROM pg_roles r, pg_roles g WHERE r.rolname = %s AND g.rolname = 'admin'", (arn, role))

    def fd_count(self) -> int:
        import os

        return len(os.listdir(f"/proc/{self._rt.pid}/fd"))
