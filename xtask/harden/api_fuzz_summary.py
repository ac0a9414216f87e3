"""Summary of a `cargo xtask harden api-fuzz` run, from the reports in its directory.

usage: api_fuzz_summary.py REPORT_DIR OPENAPI_YAML

Prints the operations tested, the requests sent (per operation and status), the failures by
check, schemathesis' errors and warnings, and what the server logged at ERROR level. Exits 1
when a check failed, schemathesis had an error, the server panicked, or a report is missing.
"""

import collections
import json
import os
import pathlib
import re
import sys
import urllib.parse

import yaml


def operation_matchers(spec_path):
    """(method, regex, label) for each operation of the spec, most literal paths first."""
    spec = yaml.safe_load(pathlib.Path(spec_path).read_text())
    matchers = []
    for path, item in spec.get("paths", {}).items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"
        for method in item:
            if method in {"get", "put", "post", "delete", "patch", "head", "options", "trace"}:
                matchers.append((method.upper(), re.compile(pattern), f"{method.upper()} {path}"))
    matchers.sort(key=lambda m: m[2].count("{"))
    return matchers


def label_of(matchers, method, url):
    path = urllib.parse.urlsplit(url).path
    for wanted, pattern, label in matchers:
        if wanted == method and pattern.match(path):
            return label
    return f"{method} (not in the spec)"


def main():
    report_dir = pathlib.Path(sys.argv[1])
    matchers = operation_matchers(sys.argv[2])
    failed = False
    report_path = report_dir / "report.json"
    if not report_path.exists():
        print(f"api-fuzz: no report at {report_path}: schemathesis did not finish")
        return 1
    report = json.loads(report_path.read_text())

    print("=" * 72)
    print("api-fuzz summary")
    operations = report["operations"]
    print(
        f"  operations: {operations['tested']} tested of {operations['selected']} selected"
        f" ({operations['errored']} errored, {operations['skipped']} skipped)"
    )
    phases = ", ".join(
        f"{name} {phase['status']}" + (f" ({phase['skip_reason']})" if phase.get("skip_reason") else "")
        for name, phase in report["phases"].items()
    )
    print(f"  phases: {phases}")
    cases = report["test_cases"]
    print(
        f"  test cases: {cases['generated']} generated, {cases['with_failures']} with failures,"
        f" {cases['errored']} errored; {report['running_time']:.0f} s, stopped by {report['stop_reason']}"
    )
    print(f"  seed: {report['seed']} (API_FUZZ_SEED={report['seed']} replays it)")

    har_path = report_dir / "requests.har"
    if har_path.exists():
        entries = json.loads(har_path.read_text())["log"]["entries"]
        statuses = collections.Counter()
        per_operation = collections.defaultdict(collections.Counter)
        for entry in entries:
            status = entry["response"]["status"]
            statuses[status] += 1
            label = label_of(matchers, entry["request"]["method"], entry["request"]["url"])
            per_operation[label][status] += 1
        print(f"  requests: {len(entries)}; by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
        for label in sorted(per_operation):
            counts = per_operation[label]
            print(f"    {label}: {sum(counts.values())} (" + ", ".join(f"{s}: {n}" for s, n in sorted(counts.items())) + ")")
        # With the Kubernetes runtime, a create whose Pod the cluster cannot run in time (a claim
        # nothing binds: the test cluster has no provisioner) is the documented 504
        # SANDBOX::START_TIMEOUT; counted apart, not as a failure.
        start_timeouts = 0
        if os.environ.get("API_FUZZ_RUNTIME") == "kubernetes":
            start_timeouts = sum(
                1
                for entry in entries
                if entry["response"]["status"] == 504
                and entry["request"]["method"] == "POST"
                and urllib.parse.urlsplit(entry["request"]["url"]).path == "/v1/sandboxes"
                and "SANDBOX::START_TIMEOUT" in entry["response"].get("content", {}).get("text", "")
            )
            if start_timeouts:
                print(f"  504 SANDBOX::START_TIMEOUT of creates (documented): {start_timeouts}")
        server_errors = sum(n for s, n in statuses.items() if s >= 500) - start_timeouts
        if server_errors:
            print(f"  5xx responses: {server_errors}")
            failed = True
    else:
        print(f"  requests: no HAR at {har_path}")
        failed = True

    if report["failures"]:
        failed = True
        print("  failures by check:")
        for failure in report["failures"]:
            print(
                f"    {failure['code']} {failure['title']}: {failure['count']}"
                f" ({'; '.join(failure['operations'])})"
            )
    else:
        print("  failures: none")
    if report["errors"]:
        failed = True
        print("  errors:")
        for error in report["errors"]:
            print(f"    {json.dumps(error)[:400]}")
    for name, items in report.get("warnings", {}).items():
        if items:
            print(f"  warning {name}: {json.dumps(items)[:400]}")

    log_path = report_dir / "server.log"
    if log_path.exists():
        # Without a terminal the log may still be coloured: the escapes are dropped.
        text = re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text(errors="replace"))
        lines = text.splitlines()
        errors = [line for line in lines if " ERROR " in line]
        panics = [line for line in lines if "panicked" in line]
        print(f"  server log: {len(errors)} ERROR line(s), {len(panics)} panic(s)")
        for line in (panics + errors)[:10]:
            print(f"    {line[:300]}")
        if panics:
            failed = True
    print("=" * 72)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
