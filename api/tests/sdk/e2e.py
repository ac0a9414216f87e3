"""End to end: the official `opensandbox` SDK (PyPI) against a running berth-server.

Run by api/tests/sdk_e2e.rs with BERTH_ADDRESS (host:port), BERTH_API_KEY and BERTH_HOST_ROOT
(a directory the server allows for host volumes). Exits non-zero on the first failed check.

SDK_E2E_RUNTIME=kubernetes (set by api/tests/k8s_servers.rs) runs the same scenario against a
server on the Kubernetes runtime, where two things differ by contract (ARCHITECTURE.md,
"Lifecycle"): a plain Pod cannot pause, so pause and resume answer 400 SANDBOX::UNSUPPORTED_FEATURE;
and a deleted sandbox answers Stopping until its Pod is gone, then 404.
"""

import asyncio
import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone

from opensandbox.api.lifecycle.client import AuthenticatedClient
from opensandbox.api.lifecycle.api.sandboxes import (
    delete_sandboxes_sandbox_id,
    get_sandboxes,
    get_sandboxes_sandbox_id,
    get_sandboxes_sandbox_id_endpoints_port,
    patch_sandboxes_sandbox_id_metadata,
    post_sandboxes,
    post_sandboxes_sandbox_id_pause,
    post_sandboxes_sandbox_id_renew_expiration,
    post_sandboxes_sandbox_id_resume,
)
from opensandbox.api.lifecycle.models import (
    CreateSandboxRequest,
    Host,
    ImageSpec,
    PVC,
    RenewSandboxExpirationRequest,
    ResourceLimits,
    Volume,
)
from opensandbox.api.lifecycle.models.create_sandbox_request_metadata import CreateSandboxRequestMetadata
from opensandbox.api.lifecycle.models.patch_sandbox_metadata_request import PatchSandboxMetadataRequest
from opensandbox.config.connection import ConnectionConfig
from opensandbox.exceptions import SandboxApiException
from opensandbox.manager import SandboxManager
from opensandbox.models.sandboxes import SandboxFilter

ADDRESS = os.environ["BERTH_ADDRESS"]
KEY = os.environ["BERTH_API_KEY"]
HOST_ROOT = os.environ["BERTH_HOST_ROOT"]
IMAGE = "berth-test/busybox:latest"
RUN = os.environ.get("BERTH_RUN", str(os.getpid()))
RUNTIME = os.environ.get("SDK_E2E_RUNTIME", "docker")
if RUNTIME not in ("docker", "kubernetes"):
    sys.exit(f"SDK_E2E_RUNTIME={RUNTIME!r}: expected docker or kubernetes")
ON_KUBERNETES = RUNTIME == "kubernetes"
UNSUPPORTED = "SANDBOX::UNSUPPORTED_FEATURE"

client = AuthenticatedClient(base_url=f"http://{ADDRESS}/v1", token=KEY, auth_header_name="OPEN-SANDBOX-API-KEY", prefix="")


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def create(script, sub_path, metadata, extra_volumes=()):
    limits = ResourceLimits.from_dict({"cpu": "250m", "memory": "64Mi"})
    volumes = [
        Volume(name="work", mount_path="/workspace", sub_path=sub_path,
               pvc=PVC(claim_name=f"sdk-sessions-{RUN}", create_if_not_exists=True, delete_on_sandbox_termination=False)),
        Volume(name="shared", mount_path="/shared", read_only=True, host=Host(path=HOST_ROOT)),
        *extra_volumes,
    ]
    body = CreateSandboxRequest(
        image=ImageSpec(uri=IMAGE), entrypoint=["sh", "-c", script], timeout=600, resource_limits=limits,
        metadata=CreateSandboxRequestMetadata.from_dict(metadata), volumes=volumes,
    )
    response = post_sandboxes.sync_detailed(client=client, body=body)
    check(response.status_code == 202, f"create answers 202 (got {response.status_code}: {response.content[:300]!r})")
    return response.parsed


def error_code(response):
    try:
        return json.loads(response.content).get("code")
    except ValueError:
        return None


def deleted(sandbox_id):
    """Deletes a sandbox and checks it is gone: at once on Docker; on Kubernetes it may answer
    Stopping (and nothing else) until its Pod is gone, so poll (bounded) until 404."""
    check(delete_sandboxes_sandbox_id.sync_detailed(client=client, sandbox_id=sandbox_id).status_code == 204, f"delete {sandbox_id}")
    if not ON_KUBERNETES:
        check(get_sandboxes_sandbox_id.sync_detailed(client=client, sandbox_id=sandbox_id).status_code == 404, f"{sandbox_id} gone after delete")
        return
    seen = []
    start = time.monotonic()
    while True:
        got = get_sandboxes_sandbox_id.sync_detailed(client=client, sandbox_id=sandbox_id)
        if got.status_code == 404:
            break
        if got.status_code != 200:
            check(False, f"get while {sandbox_id} goes answers 200 or 404 (got {got.status_code})")
        state = str(got.parsed.status.state)
        if not seen or seen[-1] != state:
            seen.append(state)
        if time.monotonic() - start > 120:
            check(False, f"{sandbox_id} gone within 120 s of its delete (seen {seen})")
        time.sleep(0.2)
    took = time.monotonic() - start
    check(seen in ([], ["Stopping"]), f"{sandbox_id} answers Stopping, then 404 after {took:.1f} s (seen {seen})")


def host_file(path):
    """The content of a file a sandbox writes on a host volume, once it has some (bounded)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with open(path) as f:
                text = f.read()
            if text:
                return text
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            check(False, f"{path} written within 30 s")
        time.sleep(0.2)


def main():
    # Create with a pvc subPath and a read-only host volume; the response carries the volumes.
    a = create("echo 'from session 1' > /workspace/note; sleep 600", "uid-1-session-1", {"owner": "sdk", "step": "a"})
    check(str(a.status.state) == "Running", "the created sandbox runs")
    volumes = a.additional_properties.get("volumes") or []
    check(any(v["backend"] == "pvc" and v["subPath"] == "uid-1-session-1" for v in volumes), "the response reports the pvc subPath")

    got = get_sandboxes_sandbox_id.sync_detailed(client=client, sandbox_id=a.id)
    check(got.status_code == 200 and got.parsed.image.uri == IMAGE, "get returns the sandbox with its image")

    # Lists: filters and pages.
    b = create("sleep 600", "uid-2-session-1", {"owner": "sdk", "step": "b"})
    listed = get_sandboxes.sync_detailed(client=client, metadata="owner=sdk&step=b")
    check(listed.status_code == 200 and [s.id for s in listed.parsed.items] == [b.id], "metadata filter selects one")
    paged = get_sandboxes.sync_detailed(client=client, state=["running", "Paused"], metadata="owner=sdk", page=1, page_size=1)
    check(paged.parsed.pagination.total_items == 2 and paged.parsed.pagination.has_next_page, "pages of one, two items")
    check(paged.parsed.items[0].id == b.id, "newest first")

    # Renew, metadata, pause/resume, endpoint through the low-level client.
    later = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(microsecond=0)
    renewed = post_sandboxes_sandbox_id_renew_expiration.sync_detailed(
        client=client, sandbox_id=a.id, body=RenewSandboxExpirationRequest(expires_at=later))
    check(renewed.status_code == 200 and renewed.parsed.expires_at == later, "renew sets the new expiry")
    patch = PatchSandboxMetadataRequest.from_dict({"step": None, "team": "ml"})
    patched = patch_sandboxes_sandbox_id_metadata.sync_detailed(client=client, sandbox_id=a.id, body=patch)
    check(patched.status_code == 200 and patched.parsed.metadata.to_dict() == {"owner": "sdk", "team": "ml"}, "metadata merge patch")
    if ON_KUBERNETES:
        for name, call in (("pause", post_sandboxes_sandbox_id_pause), ("resume", post_sandboxes_sandbox_id_resume)):
            refused = call.sync_detailed(client=client, sandbox_id=a.id)
            check(refused.status_code == 400 and error_code(refused) == UNSUPPORTED,
                  f"{name} is refused as unsupported (got {refused.status_code}: {refused.content[:300]!r})")
        still = get_sandboxes_sandbox_id.sync_detailed(client=client, sandbox_id=a.id)
        check(str(still.parsed.status.state) == "Running", "a refused pause leaves the sandbox running")
    else:
        check(post_sandboxes_sandbox_id_pause.sync_detailed(client=client, sandbox_id=a.id).status_code == 202, "pause")
        check(post_sandboxes_sandbox_id_pause.sync_detailed(client=client, sandbox_id=a.id).status_code == 409, "pause twice is 409")
        check(post_sandboxes_sandbox_id_resume.sync_detailed(client=client, sandbox_id=a.id).status_code == 202, "resume")
    endpoint = get_sandboxes_sandbox_id_endpoints_port.sync_detailed(client=client, sandbox_id=a.id, port=8080)
    check(endpoint.status_code == 200 and "://" not in endpoint.parsed.endpoint, f"endpoint without scheme ({endpoint.content!r})")

    # The manager API.
    asyncio.run(manager_checks(a.id, b.id))

    # Session resume: A wrote a note; after A is gone, B' on the same subPath finds it, C on another does not.
    deleted(a.id)
    resumed = create("cat /workspace/note > /shared-out/seen 2>&1; sleep 600", "uid-1-session-1", {"owner": "sdk", "step": "resume"},
                     [Volume(name="out", mount_path="/shared-out", host=Host(path=os.path.join(HOST_ROOT, "out-resumed")))])
    other = create("cat /workspace/note > /shared-out/seen 2>&1; sleep 600", "uid-1-session-2", {"owner": "sdk", "step": "other"},
                   [Volume(name="out", mount_path="/shared-out", host=Host(path=os.path.join(HOST_ROOT, "out-other")))])
    check(host_file(os.path.join(HOST_ROOT, "out-resumed", "seen")) == "from session 1\n", "the resumed session finds its files")
    check("No such file" in host_file(os.path.join(HOST_ROOT, "out-other", "seen")), "another session does not see them")

    for sandbox in (b, resumed, other):
        deleted(sandbox.id)
    remaining = get_sandboxes.sync_detailed(client=client, metadata="owner=sdk")
    check(remaining.parsed.pagination.total_items == 0, "nothing left")


async def manager_checks(a_id, b_id):
    config = ConnectionConfig(domain=ADDRESS, api_key=KEY, protocol="http", disable_metrics=True)
    manager = await SandboxManager.create(config)
    try:
        infos = await manager.list_sandbox_infos(SandboxFilter(metadata={"owner": "sdk"}, states=["Running"]))
        check(sorted(i.id for i in infos.sandbox_infos) == sorted([a_id, b_id]), "manager lists by metadata and state")
        info = await manager.get_sandbox_info(b_id)
        check(str(info.status.state) == "Running", "manager gets a sandbox")
        await manager.patch_sandbox_metadata(b_id, {"note": "via-manager"})
        check((await manager.get_sandbox_info(b_id)).metadata.get("note") == "via-manager", "manager patches metadata")
        await manager.renew_sandbox(b_id, timedelta(minutes=30))
        if ON_KUBERNETES:
            for name, call in (("pause", manager.pause_sandbox), ("resume", manager.resume_sandbox)):
                try:
                    await call(b_id)
                    check(False, f"manager {name} raises on kubernetes")
                except SandboxApiException as e:
                    # The SDK parses no 400 body for pause/resume (the OpenSandbox spec lists no
                    # 400 there): its error is UNEXPECTED_RESPONSE, Berth's answer in the body.
                    code = json.loads(e.response_body or b"{}").get("code")
                    check(e.status_code == 400 and code == UNSUPPORTED, f"manager {name} raises 400 {UNSUPPORTED} (got {e.status_code} {code})")
            check(str((await manager.get_sandbox_info(b_id)).status.state) == "Running", "still running after the refused pause")
            return
        await manager.pause_sandbox(b_id)
        check(str((await manager.get_sandbox_info(b_id)).status.state) == "Paused", "manager pauses")
        await manager.resume_sandbox(b_id)
        check(str((await manager.get_sandbox_info(b_id)).status.state) == "Running", "manager resumes")
    finally:
        await manager.close()


if __name__ == "__main__":
    main()
    print("SDK end-to-end: all checks passed")
