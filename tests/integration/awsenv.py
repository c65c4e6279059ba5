"""awsenv - shared AWS test harness for dagy integration tests (moto server, helpers).

Usage:
    import awsenv
    with awsenv.Moto() as m:            # signatures enforced (IAM user with an Allow-* policy)
        m.client("s3").create_bucket(Bucket="b")
        awsenv.run([binary, ...], env=m.env(), timeout=60)

Moto(auth=False) skips signature checking (moto's checker wrongly rejects S3 keys containing
`+ = , %` or non-ASCII characters). Every process started here is stopped by its pid.
"""

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loopback import LoopbackServer  # noqa: E402

REGION = "us-east-1"
# Requests moto serves before it starts enforcing signatures: CreateUser, PutUserPolicy,
# CreateAccessKey (see Moto._bootstrap_iam).
_BOOTSTRAP_REQUESTS = 3
_ADMIN_POLICY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


def free_port():
    """Returns a TCP port on 127.0.0.1 that was free a moment ago."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra=None):
    """A copy of os.environ without any AWS_* variable (no profile or shared-config leakage)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = "/dev/null"
    env["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    if extra:
        env.update(extra)
    return env


def run(argv, env=None, timeout=120, input=None, cwd=None):
    """Runs argv with a timeout; returns subprocess.CompletedProcess with text stdout/stderr.
    On timeout the whole process group is killed and subprocess.TimeoutExpired is raised."""
    p = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = p.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise subprocess.TimeoutExpired(argv, timeout, output=out, stderr=err)
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def stop_process(p, timeout=10):
    """Terminates a Popen by its pid: SIGTERM, wait, then SIGKILL."""
    if p is None or p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        p.terminate()
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait(timeout=timeout)


class Moto:
    """A moto server on a free loopback port with an IAM user whose keys pass signature checks.

    Attributes after start(): endpoint, access_key, secret_key, region, auth."""

    def __init__(self, auth=True, start_timeout=30):
        self.auth = auth
        self.start_timeout = start_timeout
        self.region = REGION
        self.proc = None
        self.port = None
        self.endpoint = None
        self.access_key = None
        self.secret_key = None
        self._log = None
        self._role_n = 0

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        """Starts moto_server and bootstraps the IAM user. Raises RuntimeError on failure."""
        self.port = free_port()
        self.endpoint = "http://127.0.0.1:%d" % self.port
        env = clean_env({"MOTO_ALLOW_NONEXISTENT_REGION": "true"})
        if self.auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(_BOOTSTRAP_REQUESTS)
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready()
            self._bootstrap_iam()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self):
        """Polls moto's own API (not counted as an AWS action) until it answers."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("moto_server exited early:\n" + self.log())
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/data.json", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        raise RuntimeError("moto_server did not answer within %ds" % self.start_timeout)

    def _bootstrap_iam(self):
        """CreateUser + PutUserPolicy + CreateAccessKey: exactly the unauthenticated requests."""
        iam = self._boto("iam", "AKIDBOOTSTRAP0000000", "bootstrap-secret")
        iam.create_user(UserName="dagy-test")
        iam.put_user_policy(UserName="dagy-test", PolicyName="admin", PolicyDocument=_ADMIN_POLICY)
        key = iam.create_access_key(UserName="dagy-test")["AccessKey"]
        self.access_key = key["AccessKeyId"]
        self.secret_key = key["SecretAccessKey"]

    def _boto(self, service, key, secret, token=None):
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            aws_session_token=token,
            config=Config(retries={"max_attempts": 2, "mode": "standard"}),
        )

    def client(self, service):
        """A boto3 client for `service` signed with the IAM user's keys."""
        return self._boto(service, self.access_key, self.secret_key)

    def create_status_tables(self, runs="DAGY_RUNS", task_runs="DAGY_TASK_RUNS"):
        """Creates the agent's two status tables (contract section 6 keys, on-demand)."""
        ddb = self.client("dynamodb")
        ddb.create_table(
            TableName=runs,
            KeySchema=[{"AttributeName": "run_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "run_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST")
        ddb.create_table(
            TableName=task_runs,
            KeySchema=[{"AttributeName": "run_id", "KeyType": "HASH"},
                       {"AttributeName": "task_name", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "run_id", "AttributeType": "S"},
                                  {"AttributeName": "task_name", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST")

    def env(self, base=None, **extra):
        """Environment for a dagy binary: endpoint, keys, region; no AWS_PROFILE, no config files."""
        env = clean_env(base)
        env.update(
            {
                "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": self.region,
            }
        )
        env.update(extra)
        return env

    def assume_role_creds(self, duration=900):
        """Creates a role (Allow *) and assumes it: returns dict key, secret, token, expiration.
        Use these for session-token tests (moto rejects GetSessionToken keys under auth)."""
        self._role_n += 1
        name = "dagy-test-role-%d" % self._role_n
        iam = self.client("iam")
        trust = json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
                ],
            }
        )
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
        iam.put_role_policy(RoleName=name, PolicyName="admin", PolicyDocument=_ADMIN_POLICY)
        c = self.client("sts").assume_role(
            RoleArn=arn, RoleSessionName="dagy-test", DurationSeconds=duration
        )["Credentials"]
        return {
            "key": c["AccessKeyId"],
            "secret": c["SecretAccessKey"],
            "token": c["SessionToken"],
            "expiration": c["Expiration"],
        }

    def log(self):
        """moto's combined stdout/stderr so far (for failure messages)."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self):
        """Stops the server by its pid (terminate, wait, kill)."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def dynalite_cli():
    """Path of dynalite's cli.js (installed by scripts/deps.sh --test), or None."""
    dirs = [os.environ.get("DAGY_DYNALITE_DIR"),
            os.path.join(os.environ.get("DAGY_TEST_BUILD", "build"), "node_modules", ".."),
            os.path.join(os.path.expanduser("~"), ".cache", "dagy")]
    for d in dirs:
        if d:
            cli = os.path.join(d, "node_modules", "dynalite", "cli.js")
            if os.path.exists(cli):
                return cli
    return None


class DynaliteServer:
    """dynalite (a second, independent DynamoDB implementation on node) on a free loopback port,
    in memory; the same surface as Moto for DynamoDB tests: endpoint, access_key, secret_key,
    region, client("dynamodb"), create_status_tables(), env(). Stopped by its pid.
    dynalite does not check signatures; any well-formed keys pass."""

    def __init__(self, start_timeout=30):
        self.start_timeout = start_timeout
        self.region = REGION
        self.access_key = "AKIDDYNALITE00000000"
        self.secret_key = "dynalite-secret-key-0123456789abcdefghij"
        self.proc = None
        self.port = None
        self.endpoint = None
        self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        """Starts dynalite; raises RuntimeError if it is not installed or does not answer."""
        cli = dynalite_cli()
        if cli is None:
            raise RuntimeError("dynalite is not installed (scripts/deps.sh --test installs it)")
        self.port = free_port()
        self.endpoint = "http://127.0.0.1:%d" % self.port
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            ["node", cli, "--host", "127.0.0.1", "--port", str(self.port), "--createTableMs", "0",
             "--deleteTableMs", "0", "--updateTableMs", "0"],
            env=clean_env(), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dynalite exited early:\n" + self.log())
            try:
                with contextlib.closing(socket.create_connection(("127.0.0.1", self.port), 1)):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("dynalite did not listen within %ds" % self.start_timeout)

    def client(self, service):
        import boto3
        from botocore.config import Config

        if service != "dynamodb":
            raise ValueError("dynalite serves DynamoDB only, not %r" % service)
        return boto3.client("dynamodb", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key,
                            config=Config(retries={"max_attempts": 2, "mode": "standard"}))

    create_status_tables = Moto.create_status_tables

    def env(self, base=None, **extra):
        """Environment for a dagy binary with DynamoDB pointing here (no other AWS service)."""
        env = clean_env(base)
        env.update({"AWS_ENDPOINT_URL_DYNAMODB": self.endpoint,
                    "AWS_ACCESS_KEY_ID": self.access_key,
                    "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region})
        env.update(extra)
        return env

    def log(self):
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class CredsServer(LoopbackServer):
    """A loopback stand-in for the ECS container credentials endpoint.

    Serves {"AccessKeyId","SecretAccessKey","Token","Expiration"} on any path when the request's
    Authorization header equals `token` (401 otherwise). set_creds() changes what it serves;
    `requests` counts successful fetches, `rejected` counts bad Authorization headers.
    Use .full_uri as AWS_CONTAINER_CREDENTIALS_FULL_URI."""

    def __init__(self, creds, token="test-auth-token", path="/v2/credentials/dagy"):
        self.token = token
        self.path = path
        self.requests = 0
        self.rejected = 0
        self._lock = threading.Lock()
        self._creds = None
        self.set_creds(creds)

    def set_creds(self, creds, expiration=None):
        """creds: dict with key, secret, token (as Moto.assume_role_creds returns). expiration:
        ISO 8601 string, or a number of seconds from now; default one hour from now."""
        if expiration is None:
            expiration = 3600
        if isinstance(expiration, (int, float)):
            expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + expiration))
        with self._lock:
            self._creds = {
                "AccessKeyId": creds["key"],
                "SecretAccessKey": creds["secret"],
                "Token": creds.get("token"),
                "Expiration": expiration,
            }

    def handler_class(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.headers.get("Authorization") != outer.token:
                    with outer._lock:
                        outer.rejected += 1
                    self._send(401, {"message": "bad authorization token"})
                    return
                with outer._lock:
                    outer.requests += 1
                    body = dict(outer._creds)
                self._send(200, body)

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler

    @property
    def full_uri(self):
        return self.endpoint + self.path

    def env(self):
        """The container-credentials variables pointing at this server."""
        return {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": self.full_uri,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": self.token,
        }


def tools_dir():
    """Directory of the test driver binaries (build/tools)."""
    d = os.environ.get("DAGY_TOOLS")
    if d:
        return d
    return os.path.join(os.environ.get("DAGY_TEST_BUILD", "build"), "tools")
