"""Reads each process's /metrics with prometheus-client's OpenMetrics parser and checks the naming
conventions: an `rlvr_` prefix, a known type, `_total` on counters, base units (seconds, bytes) in the
names of durations and sizes, histograms of durations in seconds, label values from small sets (never an
id), and the families each role must serve. Also checks /healthz and /readyz answer 200.

With --grafana DASHBOARD.json, also checks that every rlvr_ metric the Grafana dashboard queries is one
the processes serve.

Usage: check_metrics.py [--grafana JSON] ROLE=URL [ROLE=URL ...]   (ROLE: learner, actor or verifier)
Exits non-zero with every problem listed.
"""

import json

import re
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

# Families each role must serve (names as the parser reports them: counters without `_total`).
REQUIRED = {
    "learner": {
        "rlvr_step", "rlvr_weight_version", "rlvr_reward_mean", "rlvr_accuracy_ratio", "rlvr_response_length_mean_tokens",
        "rlvr_kl", "rlvr_entropy", "rlvr_clip_fraction_ratio", "rlvr_grad_norm", "rlvr_train_tokens_per_second",
        "rlvr_staleness_max_versions", "rlvr_phase_duration_seconds", "rlvr_trained_samples", "rlvr_run_state",
        "rlvr_queue_length", "rlvr_queue_pending", "rlvr_queue_lag", "rlvr_dead_letters", "rlvr_members",
    },
    "actor": {"rlvr_actor_weight_version", "rlvr_weight_syncs", "rlvr_weight_sync_bytes", "rlvr_weight_sync_duration_seconds", "rlvr_actor_groups"},
    "verifier": {"rlvr_verdicts", "rlvr_verify_group_duration_seconds", "rlvr_verified_groups", "rlvr_sandbox_timeouts"},
}
# Samples that must have a value by now (the run has trained a step and scored groups).
NONZERO = {
    "learner": ["rlvr_step", "rlvr_trained_samples_total"],
    "actor": ["rlvr_actor_groups_total", "rlvr_weight_syncs_total"],
    "verifier": ["rlvr_verified_groups_total"],
}
UNITS = ("seconds", "bytes", "ratio", "tokens", "versions")
# A label value that looks like an id (a long run of hex or digits, a uuid, a group key) is unbounded.
ID_LIKE = re.compile(r"[0-9a-f]{12,}|\d{5,}|/|:")


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


def check(role, base):
    problems = []
    for path in ("/healthz", "/readyz"):
        status, body = get(base + path)
        if status != 200:
            problems.append(f"{role}: {path} answered {status}: {body!r}")
    status, text = get(base + "/metrics")
    families = list(text_string_to_metric_families(text))
    names = {f.name for f in families}
    values = {}
    for f in families:
        if not f.name.startswith("rlvr_"):
            problems.append(f"{role}: {f.name} lacks the rlvr_ prefix")
        if f.type not in ("counter", "gauge", "histogram"):
            problems.append(f"{role}: {f.name} has type {f.type}")
        if f.type == "histogram" and "duration" in f.name and not f.name.endswith("_seconds"):
            problems.append(f"{role}: duration histogram {f.name} is not in seconds")
        if f.unit and not f.name.endswith("_" + f.unit):
            problems.append(f"{role}: {f.name} has unit {f.unit} but not in its name")
        if f.unit and f.unit not in UNITS:
            problems.append(f"{role}: {f.name} has unit {f.unit}, not a base unit")
        if any(w in f.name for w in ("_ms", "milli", "_kb", "_mb")):
            problems.append(f"{role}: {f.name} is not in a base unit")
        for s in f.samples:
            if f.type == "counter" and not (s.name.endswith("_total") or s.name.endswith("_created")):
                problems.append(f"{role}: counter sample {s.name} lacks _total")
            for k, v in s.labels.items():
                if k in ("le", "quantile"):
                    continue
                if len(v) > 32 or ID_LIKE.search(v):
                    problems.append(f"{role}: {s.name} label {k}={v!r} looks unbounded")
            values.setdefault(s.name, 0.0)
            values[s.name] += s.value
    for name in sorted(REQUIRED[role] - names):
        problems.append(f"{role}: {name} is missing")
    for name in NONZERO[role]:
        if values.get(name, 0.0) <= 0:
            problems.append(f"{role}: {name} is {values.get(name)} (expected > 0)")
    print(f"{role}: {len(families)} metric families, {sum(len(f.samples) for f in families)} samples", flush=True)
    SERVED.update(names)
    SERVED.update(values)
    return problems


# Every family and sample name served, over all roles checked.
SERVED = set()


def check_grafana(path):
    dash = json.load(open(path))
    queried = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"rlvr_\w+", t["expr"])}
    print(f"grafana: {len(queried)} metrics queried", flush=True)
    return [f"grafana: {path} queries {m}, which no process serves" for m in sorted(queried - SERVED)]


def main():
    problems = []
    args = sys.argv[1:]
    grafana = None
    if args[:1] == ["--grafana"]:
        grafana, args = args[1], args[2:]
    for arg in args:
        role, _, url = arg.partition("=")
        if role not in REQUIRED:
            sys.exit(f"unknown role {role!r}: learner, actor or verifier")
        problems += check(role, url.rstrip("/"))
    if grafana:
        problems += check_grafana(grafana)
    for p in problems:
        print("PROBLEM", p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
