"""Schemathesis hooks of `cargo xtask harden api-fuzz` (loaded through SCHEMATHESIS_HOOKS).

- `error_body`: every error response (status >= 400) carries Berth's error body, a JSON object
  with exactly the string fields `code` (non-empty) and `message`.
- `before_load_schema`: adds request examples to the loaded spec (never to its rules), so that a
  share of the generated creates are ones the server accepts: the spec cannot say everything the
  server requires (an image the engine has, a quantity syntax, label syntax), and without real
  sandboxes every call on one would end in 404. Schemathesis sends the examples and mixes them
  into what it generates; the ids of the sandboxes made feed the calls on one.
- `after_call` and `filter_failure`: a dry run's 200 names a sandbox that is never made, which
  schemathesis' stateful checks would take for a created one that went missing.
- `before_call`: keeps the run on this machine. A create request that the server could accept
  would make the engine pull its image from the registry it names, and NFS or OSS volumes would
  connect to their server: every value that could pass the server's validation is pointed at
  loopback or at the local test image first. Values the server refuses anyway are sent as they
  are, so its validation is still fuzzed. Host volume paths are put under the server's allowed
  root for about half of the requests, so real mounts are made (and their cleanup checked).
"""

import datetime
import json
import os
import re
import zlib

import schemathesis

# The server's own rule for an image reference (core/src/validate.rs, check_image_uri): anything
# matching it may be pulled.
_PULLABLE_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/:@+]*")
# A superset of every host name and IP address the server accepts for an NFS server or an OSS
# endpoint (core/src/model/remote_storage.rs).
_REACHABLE_HOST = re.compile(r"[A-Za-z0-9._:\[\]-]+")

TEST_IMAGE = "berth-test/busybox:latest"
# The runtime of the server under test (`harden api-fuzz-k8s` sets it).
KUBERNETES = os.environ.get("API_FUZZ_RUNTIME") == "kubernetes"
# Loopback on a port nothing serves: the pull is refused at once and answered as image-not-found.
ABSENT_IMAGE = "127.0.0.1:9/berth-api-fuzz/absent:latest"
LOOPBACK = "127.0.0.1"
HOST_ROOT = os.environ.get("API_FUZZ_HOST_ROOT", "")


# Ids answered by dry runs (`POST /v1/sandboxes?dryRun=true`, 200): no sandbox has them.
_DRY_RUN_IDS = set()


def _is_create(case):
    return case.method.upper() == "POST" and case.operation.path.rstrip("/").endswith("/sandboxes")


def _stable_bit(text: str) -> int:
    # Python's own str hash changes per process; a run must be replayable from its seed.
    return zlib.crc32(text.encode("utf-8", "surrogatepass")) & 1


def _safe_image(image):
    if not isinstance(image, dict):
        return
    uri = image.get("uri")
    if uri in (TEST_IMAGE, ABSENT_IMAGE):
        return
    if isinstance(uri, str) and 0 < len(uri) <= 1024 and _PULLABLE_IMAGE.fullmatch(uri):
        image["uri"] = TEST_IMAGE if _stable_bit(uri) == 0 else ABSENT_IMAGE


def _safe_host(backend, field):
    if not isinstance(backend, dict):
        return
    value = backend.get(field)
    if isinstance(value, str) and _REACHABLE_HOST.fullmatch(value):
        backend[field] = LOOPBACK


def _rooted(backend):
    if not HOST_ROOT or not isinstance(backend, dict):
        return
    root = HOST_ROOT.rstrip("/")
    path = backend.get("path")
    # A case may be sent more than once (shrinking, checks' re-sends): rooted once only.
    if not isinstance(path, str) or path == root or path.startswith(root + "/"):
        return
    if path.startswith("/") and _stable_bit(path) == 0:
        backend["path"] = root + path


def _make_local(body):
    _safe_image(body.get("image"))
    volumes = body.get("volumes")
    if not isinstance(volumes, list):
        return
    for volume in volumes:
        if not isinstance(volume, dict):
            continue
        _safe_host(volume.get("nfs"), "server")
        _safe_host(volume.get("ossfs"), "endpoint")
        _rooted(volume.get("host"))
        _rooted(volume.get("hostPath"))


def _create_examples():
    base = {"image": {"uri": TEST_IMAGE}, "resourceLimits": {"cpu": "100m", "memory": "64Mi"}}
    examples = {
        "runs": {
            **base,
            "entrypoint": ["sleep", "600"],
            "timeout": 600,
            "metadata": {"berth-fuzz": "runs"},
        },
        "exits-at-once": {**base, "entrypoint": ["true"]},
        "image-not-pullable": {**base, "image": {"uri": ABSENT_IMAGE}, "entrypoint": ["true"]},
        "env-and-metadata": {
            **base,
            "entrypoint": ["sh", "-c", "sleep 300"],
            "env": {"GREETING": "hello"},
            "metadata": {"team": "fuzz", "tier": "a"},
            "timeout": 300,
        },
        "named-volume": {
            **base,
            "entrypoint": ["sleep", "300"],
            "timeout": 300,
            "volumes": [
                {
                    "name": "cache",
                    "pvc": {"claimName": "api-fuzz-cache", "deleteOnSandboxTermination": True},
                    "mountPath": "/cache",
                }
            ],
        },
    }
    if HOST_ROOT:
        root = HOST_ROOT.rstrip("/")
        examples["host-volume"] = {
            **base,
            "entrypoint": ["sleep", "300"],
            "timeout": 300,
            "volumes": [
                {"name": "data", "host": {"path": f"{root}/data"}, "mountPath": "/data"},
                {
                    "name": "sub",
                    "host": {"path": f"{root}/data"},
                    "mountPath": "/sub",
                    "subPath": "inner",
                    "readOnly": True,
                },
            ],
        }
        examples["kubernetes-form"] = {
            **base,
            "entrypoint": ["sleep", "300"],
            "timeout": 300,
            "volumes": [{"name": "work", "hostPath": {"path": f"{root}/work"}}],
            "mounts": [
                {"name": "work", "mountPath": "/work"},
                {"name": "work", "mountPath": "/again", "subPath": "inner", "readOnly": True},
            ],
        }
    return examples


def _add_examples(raw_schema, path, method, examples):
    operation = raw_schema.get("paths", {}).get(path, {}).get(method)
    if not isinstance(operation, dict):
        return
    media = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if isinstance(media, dict):
        media.setdefault("examples", {}).update(
            {name: {"value": value} for name, value in examples.items()}
        )


@schemathesis.hook
def before_load_schema(context, raw_schema):
    _add_examples(raw_schema, "/v1/sandboxes", "post", _create_examples())
    # Within the server's default `max_sandbox_timeout_seconds` (a day) for the whole run.
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)
    _add_examples(
        raw_schema,
        "/v1/sandboxes/{sandboxId}/renew-expiration",
        "post",
        {"two-hours-on": {"expiresAt": later.strftime("%Y-%m-%dT%H:%M:%SZ")}},
    )
    _add_examples(
        raw_schema,
        "/v1/sandboxes/{sandboxId}/metadata",
        "patch",
        {"set-and-delete": {"team": "patched", "tier": None}},
    )


@schemathesis.hook
def before_call(context, case, kwargs):
    # Every request of every phase passes here, stateful steps and checks' re-sends included.
    if _is_create(case) and isinstance(case.body, dict):
        _make_local(case.body)


@schemathesis.hook
def after_call(context, case, response):
    if _is_create(case) and response.status_code == 200:
        try:
            sandbox_id = json.loads(response.content)["sandbox"]["id"]
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(sandbox_id, str):
            _DRY_RUN_IDS.add(sandbox_id)


def _code_and_state(response):
    try:
        body = json.loads(response.content)
    except (ValueError, TypeError):
        return None, None
    if not isinstance(body, dict):
        return None, None
    status = body.get("status")
    return body.get("code"), status.get("state") if isinstance(status, dict) else None


@schemathesis.hook
def filter_failure(context, failure, case, response):
    kind = type(failure).__name__
    # Schemathesis takes a dry run's 200 for a creation and then misses the sandbox it names;
    # a dry run makes nothing, as documented.
    if kind == "EnsureResourceAvailability":
        return (case.path_parameters or {}).get("sandboxId") not in _DRY_RUN_IDS
    if KUBERNETES and response is not None:
        code, state = _code_and_state(response)
        # A create waits for its Pod: longer than the default response-time limit, and a Pod
        # the cluster cannot run (a claim nothing can bind here: the test cluster has no
        # provisioner) fails at kubernetes.start_timeout_seconds with the documented 504.
        if kind == "ResponseTimeExceeded" and _is_create(case):
            return False
        if kind == "ServerError" and response.status_code == 504 and code == "SANDBOX::START_TIMEOUT":
            return False
        # A deleted Pod goes gracefully: until it is gone the sandbox is answered as
        # Stopping (docs/kubernetes.md), then 404.
        if kind == "UseAfterFree" and state == "Stopping":
            return False
    return True


@schemathesis.check
def error_body(ctx, response, case):
    """Every error response has Berth's `{code, message}` body."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/json":
        raise AssertionError(
            f"{response.status_code} with Content-Type {content_type!r}, not application/json"
        )
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"{response.status_code} body is not JSON: {exc}") from None
    if not isinstance(body, dict) or set(body) != {"code", "message"}:
        raise AssertionError(
            f"{response.status_code} body is not exactly {{code, message}}: {response.content[:500]!r}"
        )
    if not isinstance(body["code"], str) or not body["code"]:
        raise AssertionError(f"{response.status_code} body's code is not a non-empty string")
    if not isinstance(body["message"], str):
        raise AssertionError(f"{response.status_code} body's message is not a string")
    return None
