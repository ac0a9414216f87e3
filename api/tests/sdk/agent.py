"""The official `opensandbox` SDK's high-level `Sandbox.create()` against a berth-server that
injects an agent (`runtime.execd_image`): the SDK waits for its health check (`GET /ping` on
execd's port 44772) before `create()` returns, so `create()` succeeding means the endpoint Berth
answered reaches the agent.

Run by api/tests/sdk_agent.rs with BERTH_ADDRESS (host:port), BERTH_API_KEY and BERTH_RUN.
Twice: once with the direct endpoints, once with `use_server_proxy=True`, where every execd
request goes through Berth's server proxy. Prints every request the SDK's own clients make and
what Berth answered (with the body when it is an error), then `SANDBOX <mode> <id>` for each
sandbox, and exits non-zero on the first failed check. With BERTH_KEEP=1 the last sandbox is
left running (for the CLI checks of the caller).
"""

import asyncio
import os
import sys
from datetime import timedelta

import httpx

from opensandbox import Sandbox
from opensandbox.config.connection import ConnectionConfig
from opensandbox.constants import DEFAULT_EGRESS_PORT, DEFAULT_EXECD_PORT
from opensandbox.exceptions import SandboxException

ADDRESS = os.environ["BERTH_ADDRESS"]
KEY = os.environ["BERTH_API_KEY"]
RUN = os.environ.get("BERTH_RUN", str(os.getpid()))
KEEP = os.environ.get("BERTH_KEEP") == "1"
IMAGE = "berth-test/busybox:latest"
PROXY_PREFIX = f"{ADDRESS}/v1/sandboxes/"


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


async def log_request(request: httpx.Request) -> None:
    print(f"  sdk -> {request.method} {request.url}", flush=True)


async def log_response(response: httpx.Response) -> None:
    line = f"  sdk <- {response.status_code} {response.request.method} {response.request.url}"
    if response.status_code >= 400:
        await response.aread()
        line += f" {response.text[:500]}"
    print(line, flush=True)


def config(use_server_proxy):
    return ConnectionConfig(
        api_key=KEY,
        domain=ADDRESS,
        protocol="http",
        use_server_proxy=use_server_proxy,
        # Fail on the first error instead of hiding it behind retries; no telemetry posts.
        request_timeout=timedelta(seconds=20),
        disable_metrics=True,
        event_hooks={"request": [log_request], "response": [log_response]},
    )


async def scenario(mode, use_server_proxy):
    print(f"== {mode}: Sandbox.create(use_server_proxy={use_server_proxy})", flush=True)
    try:
        sandbox = await Sandbox.create(
            IMAGE,
            entrypoint=["sleep", "600"],
            timeout=timedelta(minutes=10),
            ready_timeout=timedelta(seconds=60),
            resource={"cpu": "250m", "memory": "64Mi"},
            metadata={"berth-test-run": RUN, "mode": mode},
            connection_config=config(use_server_proxy),
        )
    except SandboxException as error:
        print(f"FAILED: {mode}: Sandbox.create raised {type(error).__name__}: {error}", flush=True)
        sys.exit(1)
    print(f"SANDBOX {mode} {sandbox.id}", flush=True)
    check(True, f"{mode}: Sandbox.create returned after its health check ({sandbox.id})")

    execd = await sandbox.get_endpoint(DEFAULT_EXECD_PORT)
    print(f"  execd endpoint: {execd.endpoint} headers={execd.headers}", flush=True)
    proxied = execd.endpoint.startswith(PROXY_PREFIX) or execd.endpoint.startswith(
        f"http://{PROXY_PREFIX}"
    )
    if use_server_proxy:
        check(proxied and execd.endpoint.endswith(f"/{sandbox.id}/proxy/{DEFAULT_EXECD_PORT}"),
              f"{mode}: the execd endpoint is Berth's proxy route ({execd.endpoint})")
    else:
        check(not proxied, f"{mode}: the execd endpoint is the direct one ({execd.endpoint})")
    check(await sandbox.is_healthy(), f"{mode}: is_healthy() after create")

    # The egress sidecar's port (18080): the SDK asked for its endpoint during create; nothing
    # listens there in a Berth sandbox, so only the answer to the endpoint request is reported.
    try:
        egress = await sandbox.get_endpoint(DEFAULT_EGRESS_PORT)
        print(f"  egress endpoint ({DEFAULT_EGRESS_PORT}): {egress.endpoint}", flush=True)
    except SandboxException as error:
        print(f"  egress endpoint ({DEFAULT_EGRESS_PORT}): {type(error).__name__}: {error}", flush=True)

    info = await sandbox.get_info()
    check(info.status.state == "Running", f"{mode}: the sandbox is Running ({info.status.state})")
    return sandbox


async def kill(sandbox, mode):
    await sandbox.kill()
    await sandbox.close()
    check(True, f"{mode}: killed {sandbox.id}")


async def main():
    direct = await scenario("direct", False)
    await kill(direct, "direct")
    proxied = await scenario("proxy", True)
    if KEEP:
        await proxied.close()
        print(f"KEPT {proxied.id}", flush=True)
    else:
        await kill(proxied, "proxy")


asyncio.run(main())
