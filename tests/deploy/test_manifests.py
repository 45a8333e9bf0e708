"""Deployment material under deploy/: render, schema-validate and cross-check.

Both kustomize overlays are rendered with `kubectl kustomize` (offline) and
every built-in object is validated by kubernetes-validate in strict mode; the
prometheus-operator objects (ServiceMonitor, PrometheusRule) have no schema
there and are checked structurally. The invariants tie the manifests to the
server: probe ports and health service names, metric names (read from
`slatewise.metrics.Metrics`), settings keys (parsed by `slatewise.config`).
Nothing here needs a cluster, a Docker engine or the network.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
OBSERVABILITY = DEPLOY / "observability"
RULES_FILE = OBSERVABILITY / "prometheus-rules.yaml"
RULES_COPY = K8S / "base" / "prometheus-rules.yaml"
DASHBOARD_FILE = OBSERVABILITY / "grafana-dashboard.json"
ADAPTER_RULES_FILE = K8S / "prometheus-adapter-rules.yaml"

OVERLAYS = ("cpu", "gpu")
KUBERNETES_VERSION = "1.37.0"
CRD_GROUPS = {"monitoring.coreos.com"}
# Minimum startup-probe budget (periodSeconds x failureThreshold) for model load.
STARTUP_BUDGET_SECONDS = {"cpu": 10 * 60, "gpu": 30 * 60}
RUN_AS_USER = 10001
APP_LABEL = ("app.kubernetes.io/name", "slatewise")
SERVER_CONTAINER = "slatewise"

# The metric contract of the service (README, "Metrics"); checked against the
# server's registry below, and used to check the dashboard covers it.
DOCUMENTED_METRICS = {
    "slatewise_requests_total", "slatewise_request_duration_seconds_bucket",
    "slatewise_time_to_first_item_seconds_bucket", "slatewise_fallbacks_total",
    "slatewise_slate_intra_list_diversity_bucket", "slatewise_slate_category_coverage_bucket",
    "slatewise_slate_redundancy_bucket", "slatewise_model_generated_tokens_bucket",
    "slatewise_inflight_requests", "slatewise_engine_ready", "slatewise_circuit_state",
    "slatewise_catalogue_items", "slatewise_catalogue_version", "slatewise_catalogue_info",
}


# --------------------------------------------------------------------------
# rendering and lookup helpers


@functools.cache
def _render(overlay: str) -> tuple[dict, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: cannot render the kustomize overlays")
    proc = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


@pytest.fixture(params=OVERLAYS)
def overlay(request) -> str:
    return request.param


@pytest.fixture
def docs(overlay) -> tuple[dict, ...]:
    return _render(overlay)


def of_kind(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind: str, name: str | None = None) -> dict:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(docs) -> dict:
    return one(docs, "Deployment", "slatewise")["spec"]["template"]["spec"]


def all_containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def server_container(docs) -> dict:
    (c,) = [c for c in pod_spec(docs)["containers"] if c["name"] == SERVER_CONTAINER]
    return c


def port_named(container: dict, name: str) -> int:
    (p,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return p


def settings_configmap(docs) -> dict:
    refs = [e["configMapRef"]["name"] for e in server_container(docs).get("envFrom", [])
            if "configMapRef" in e]
    assert len(refs) == 1, "the server container should take its settings from one ConfigMap"
    return one(docs, "ConfigMap", refs[0])


def matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are expected"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _effective(container: dict, pod: dict, key: str):
    return container.get("securityContext", {}).get(key, pod.get("securityContext", {}).get(key))


_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_FACTORS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value) -> float:
    m = _QUANTITY.match(str(value))
    assert m, f"unexpected quantity {value!r}"
    return float(m.group(1)) * _FACTORS[m.group(2)]


# --------------------------------------------------------------------------
# what the server exports and defaults to


@functools.cache
def exported_metric_names() -> frozenset[str]:
    """Every sample name the server's registry can expose."""
    from slatewise.metrics import Metrics

    names: set[str] = set()
    for family in Metrics().registry.collect():
        base = family.name
        if family.type == "counter":
            names |= {base, f"{base}_total"}
        elif family.type == "histogram":
            names |= {base, f"{base}_bucket", f"{base}_sum", f"{base}_count"}
        elif family.type == "info":
            names |= {f"{base}_info"}
        else:
            names.add(base)
    return frozenset(names)


def is_exported(name: str) -> bool:
    return name in exported_metric_names() or name.startswith("vllm:")


@functools.cache
def server_defaults() -> dict:
    from slatewise.config import Settings

    return {k: f.default for k, f in Settings.model_fields.items()}


# --------------------------------------------------------------------------
# PromQL: the metric names an expression selects


_PROMQL_TOKEN = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<duration>\d+(?:ms|s|m|h|d|w|y)\b)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<variable>\$\{?[A-Za-z_][A-Za-z0-9_]*\}?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<open>[({\[])
  | (?P<close>[)}\]])
  | (?P<space>\s+)
  | (?P<other>.)
""", re.X | re.S)
_PAIRS = {"(": ")", "{": "}", "[": "]"}
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                 "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
_KEYWORDS = _AGGREGATIONS | {"and", "or", "unless", "bool", "offset", "by", "without",
                             "on", "ignoring", "group_left", "group_right", "atan2"}
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (functions, keywords,
    label matchers, grouping labels and range durations excluded); also
    asserts that brackets balance."""
    tokens = [(m.lastgroup, m.group()) for m in _PROMQL_TOKEN.finditer(expr)
              if m.lastgroup != "space"]
    names: set[str] = set()
    stack: list[str] = []
    skip_depth: int | None = None  # inside a by(...)/on(...) label list
    for i, (kind, text) in enumerate(tokens):
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "open":
            stack.append(text)
            continue
        if kind == "close":
            assert stack and _PAIRS[stack[-1]] == text, f"unbalanced {text!r} in {expr!r}"
            stack.pop()
            if skip_depth is not None and len(stack) < skip_depth:
                skip_depth = None
            continue
        if kind != "ident" or skip_depth is not None or (stack and stack[-1] in "{["):
            continue
        if text in _LABEL_LISTS and nxt == "(":
            skip_depth = len(stack) + 1
        elif text in _KEYWORDS or nxt == "(":
            continue
        else:
            names.add(text)
    assert not stack, f"unclosed {stack!r} in {expr!r}"
    return names


def test_promql_extractor_finds_only_metric_names():
    expr = ('histogram_quantile(0.99, sum by (le, strategy) (rate(foo_bucket{a="b", c=~"x|y"}[5m])))'
            " / on (pod) group_left (reason) bar_total > 1e-3 and vllm:kv_cache_usage_perc"
            ' or max without (code) (baz[$__rate_interval] offset 1h)')
    assert promql_metric_names(expr) == {"foo_bucket", "bar_total", "vllm:kv_cache_usage_perc", "baz"}
    with pytest.raises(AssertionError):
        promql_metric_names("sum(rate(foo[5m])")


def dashboard_exprs(dashboard: dict) -> list[str]:
    exprs: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard.get("panels", []))
    return exprs


_LABEL_VALUES = re.compile(r"^label_values\((?:([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*,)?\s*\w+\s*\)$")


def dashboard_variable_metrics(dashboard: dict) -> set[str]:
    names: set[str] = set()
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = _LABEL_VALUES.match(query.strip())
        assert m, f"unexpected variable query {query!r}"
        if m.group(1):
            names.add(m.group(1))
    return names


def load_rules(path: Path = RULES_FILE) -> dict:
    return yaml.safe_load(path.read_text())


def alert_rules(rules: dict) -> dict[str, dict]:
    return {r["alert"]: r for g in rules["spec"]["groups"] for r in g["rules"] if "alert" in r}


# --------------------------------------------------------------------------
# schema validation


def test_every_builtin_object_validates_strictly(docs, overlay):
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate not installed (test extra)")
    failures = []
    for doc in docs:
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        if group in CRD_GROUPS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not failures, f"{overlay}:\n" + "\n".join(failures)


def test_expected_objects_are_rendered(docs, overlay):
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for expected in [("Deployment", "slatewise"), ("Service", "slatewise"),
                     ("Service", "slatewise-headless"), ("PodDisruptionBudget", "slatewise"),
                     ("HorizontalPodAutoscaler", "slatewise"), ("NetworkPolicy", "slatewise"),
                     ("ServiceMonitor", "slatewise"), ("PrometheusRule", "slatewise"),
                     ("ServiceAccount", "slatewise")]:
        assert expected in kinds, f"{overlay}: {expected} missing"
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert namespaces == {"slatewise"}


def test_common_label_on_every_object_and_pod(docs):
    key, value = APP_LABEL
    for doc in docs:
        assert doc["metadata"].get("labels", {}).get(key) == value, (doc["kind"], doc["metadata"]["name"])
    labels = one(docs, "Deployment", "slatewise")["spec"]["template"]["metadata"]["labels"]
    assert labels.get(key) == value


# --------------------------------------------------------------------------
# Deployment


def test_probes_are_grpc_health_checks_on_the_server_port(docs, overlay):
    c = server_container(docs)
    grpc_port = server_defaults()["grpc_port"]
    assert port_named(c, "grpc") == grpc_port
    assert port_named(c, "metrics") == server_defaults()["metrics_port"]
    expected_service = {"livenessProbe": "liveness", "readinessProbe": "", "startupProbe": ""}
    for probe_name, service in expected_service.items():
        probe = c[probe_name]
        assert set(probe) & {"grpc", "httpGet", "exec", "tcpSocket"} == {"grpc"}, probe_name
        assert probe["grpc"]["port"] == grpc_port, probe_name
        assert probe["grpc"].get("service", "") == service, probe_name
    startup = c["startupProbe"]
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    assert budget >= STARTUP_BUDGET_SECONDS[overlay], f"{overlay}: startup budget {budget}s"


def test_deployment_leaves_replicas_to_the_hpa(docs):
    spec = one(docs, "Deployment", "slatewise")["spec"]
    assert "replicas" not in spec
    selector = spec["selector"]
    assert matches(selector, spec["template"]["metadata"]["labels"])


def test_every_image_is_pinned(docs):
    for c in all_containers(pod_spec(docs)):
        image = c["image"]
        assert "@sha256:" in image or re.search(r":[\w][\w.-]*$", image.rsplit("/", 1)[-1]), \
            f"{c['name']}: image {image!r} has no tag"
        tag = image.rsplit(":", 1)[-1]
        assert tag != "latest", f"{c['name']}: image {image!r} uses :latest"


def test_every_container_has_cpu_and_memory_requests_and_limits(docs):
    for c in all_containers(pod_spec(docs)):
        res = c.get("resources", {})
        for resource in ("cpu", "memory"):
            request = res.get("requests", {}).get(resource)
            limit = res.get("limits", {}).get(resource)
            assert request is not None and limit is not None, f"{c['name']}: {resource}"
            assert quantity(request) <= quantity(limit), f"{c['name']}: {resource} request > limit"


def test_gpu_overlay_requests_a_gpu_on_gpu_nodes(docs, overlay):
    spec = pod_spec(docs)
    res = server_container(docs)["resources"]
    if overlay == "gpu":
        assert int(res["limits"]["nvidia.com/gpu"]) >= 1
        assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
        placement = json.dumps([spec.get("nodeSelector", {}), spec.get("tolerations", []),
                                spec.get("affinity", {})])
        assert "nvidia.com/gpu" in placement
        assert any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", []))
    else:
        assert "nvidia.com/gpu" not in json.dumps(spec)


def test_security_context(docs):
    spec = pod_spec(docs)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == RUN_AS_USER
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec.get("automountServiceAccountToken") is False
    for c in all_containers(spec):
        sc = c.get("securityContext", {})
        assert _effective(c, spec, "runAsNonRoot") is True, c["name"]
        assert _effective(c, spec, "runAsUser") == RUN_AS_USER, c["name"]
        assert _effective(c, spec, "seccompProfile")["type"] == "RuntimeDefault", c["name"]
        assert sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert sc.get("readOnlyRootFilesystem") is True, c["name"]
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], c["name"]
        assert not sc.get("capabilities", {}).get("add"), c["name"]
        assert not sc.get("privileged"), c["name"]


def test_writable_volumes(docs, overlay):
    spec = pod_spec(docs)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in server_container(docs)["volumeMounts"]}
    cache_dir = settings_configmap(docs)["data"]["SLATEWISE_CACHE_DIR"]

    tmp = volumes[mounts["/tmp"]["name"]]
    assert "emptyDir" in tmp and not mounts["/tmp"].get("readOnly")

    shm = volumes[mounts["/dev/shm"]["name"]]
    assert shm["emptyDir"]["medium"] == "Memory"

    cache_mount = mounts[cache_dir]
    assert not cache_mount.get("readOnly")
    cache = volumes[cache_mount["name"]]
    if overlay == "gpu":
        claim = cache["persistentVolumeClaim"]["claimName"]
        one(docs, "PersistentVolumeClaim", claim)
        assert "emptyDir" not in cache
    else:
        assert quantity(cache["emptyDir"]["sizeLimit"]) > 0

    # Every init container writing to the cache mounts the same volume there.
    for init in spec.get("initContainers", []):
        for m in init.get("volumeMounts", []):
            assert m["name"] in volumes


def test_settings_configmap_is_valid_server_configuration(docs, monkeypatch):
    import os

    from slatewise.config import Settings

    data = settings_configmap(docs)["data"]
    fields = set(Settings.model_fields)
    for key in data:
        assert key.startswith("SLATEWISE_"), key
        assert key.removeprefix("SLATEWISE_").lower() in fields, f"{key} is not a server setting"
    for key in list(os.environ):
        if key.startswith("SLATEWISE_"):
            monkeypatch.delenv(key)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings()

    c = server_container(docs)
    assert settings.grpc_port == port_named(c, "grpc")
    assert settings.metrics_port == port_named(c, "metrics")
    assert settings.host == "0.0.0.0" and settings.metrics_host == "0.0.0.0"
    assert 0 < settings.shutdown_grace_seconds < pod_spec(docs)["terminationGracePeriodSeconds"]
    assert str(settings.cache_dir) in {m["mountPath"] for m in c["volumeMounts"]}


def test_catalogue_configmap_is_mounted_and_loads(docs, tmp_path):
    from slatewise.catalogue.loader import load_jsonl

    path = PurePosixPath(settings_configmap(docs)["data"]["SLATEWISE_CATALOGUE_PATH"])
    mounts = {m["mountPath"]: m for m in server_container(docs)["volumeMounts"]}
    mount = mounts[str(path.parent)]
    assert mount.get("readOnly") is True
    volume = {v["name"]: v for v in pod_spec(docs)["volumes"]}[mount["name"]]
    catalogue = one(docs, "ConfigMap", volume["configMap"]["name"])
    local = tmp_path / path.name
    local.write_text(catalogue["data"][path.name])
    assert len(load_jsonl(local)) > 0


# --------------------------------------------------------------------------
# Services, ServiceMonitor, NetworkPolicy, PDB, HPA


def test_services(docs):
    labels = one(docs, "Deployment", "slatewise")["spec"]["template"]["metadata"]["labels"]
    grpc_port = server_defaults()["grpc_port"]
    cluster = one(docs, "Service", "slatewise")
    headless = one(docs, "Service", "slatewise-headless")

    assert cluster["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert cluster["spec"].get("clusterIP") != "None"
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"].get("publishNotReadyAddresses", False) is False
    for svc in (cluster, headless):
        assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), svc["metadata"]["name"]
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        assert ports["grpc"]["port"] == grpc_port and ports["grpc"]["targetPort"] == grpc_port
    ports = {p["name"]: p for p in cluster["spec"]["ports"]}
    assert set(ports) == {"grpc", "metrics"}


def test_servicemonitor_scrapes_the_metrics_port(docs):
    monitor = one(docs, "ServiceMonitor", "slatewise")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"], "ServiceMonitor must select by labels"
    selected = [s for s in of_kind(docs, "Service")
                if s["metadata"]["namespace"] == monitor["metadata"]["namespace"]
                and matches(spec["selector"], s["metadata"].get("labels", {}))]
    # Exactly one Service, or each pod would be scraped (and counted) twice.
    assert [s["metadata"]["name"] for s in selected] == ["slatewise"]
    service_ports = {p["name"]: p for p in selected[0]["spec"]["ports"]}
    container_metrics = port_named(server_container(docs), "metrics")
    assert spec["endpoints"], "no endpoints"
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout",
                                 "honorLabels", "relabelings", "metricRelabelings"}
        assert endpoint["port"] == "metrics"
        port = service_ports[endpoint["port"]]
        assert port["targetPort"] == 9464 == container_metrics == server_defaults()["metrics_port"]
        assert endpoint.get("path", "/metrics") == "/metrics"
        for key in ("interval", "scrapeTimeout"):
            if key in endpoint:
                assert re.fullmatch(r"\d+(ms|s|m)", endpoint[key]), endpoint[key]


def test_networkpolicy(docs):
    policy = one(docs, "NetworkPolicy", "slatewise")["spec"]
    labels = one(docs, "Deployment", "slatewise")["spec"]["template"]["metadata"]["labels"]
    assert matches(policy["podSelector"], labels)
    assert policy["policyTypes"] == ["Ingress"]
    by_port: dict[int, list[dict]] = {}
    for rule in policy["ingress"]:
        assert rule.get("ports"), "an ingress rule without ports opens every port"
        for port in rule["ports"]:
            by_port.setdefault(port["port"], []).extend(rule.get("from") or [{}])
    assert set(by_port) == {server_defaults()["grpc_port"], server_defaults()["metrics_port"]}
    # gRPC: any namespace (hence any pod in the cluster).
    assert {"namespaceSelector": {}} in by_port[server_defaults()["grpc_port"]]
    # Metrics: only Prometheus pods of the monitoring namespace (one peer, both selectors).
    for peer in by_port[server_defaults()["metrics_port"]]:
        assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
        assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}


def test_pdb(docs):
    pdb = one(docs, "PodDisruptionBudget", "slatewise")["spec"]
    labels = one(docs, "Deployment", "slatewise")["spec"]["template"]["metadata"]["labels"]
    assert matches(pdb["selector"], labels)
    assert "maxUnavailable" in pdb or "minAvailable" in pdb


def test_hpa_scales_on_an_exported_metric_served_by_the_adapter(docs):
    hpa = one(docs, "HorizontalPodAutoscaler", "slatewise")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "slatewise"}
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    (metric,) = spec["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    assert name == "slatewise_inflight_requests"
    assert name in exported_metric_names()
    assert quantity(metric["pods"]["target"]["averageValue"]) > 0

    adapter = yaml.safe_load(ADAPTER_RULES_FILE.read_text())
    served = {r["name"]["as"]: r for r in adapter["rules"]["custom"]}
    assert name in served, "prometheus-adapter-rules.yaml does not serve the HPA metric"
    rule = served[name]
    assert promql_metric_names(rule["seriesQuery"]) == {name}
    assert rule["resources"]["overrides"]["pod"]["resource"] == "pod"
    assert rule["resources"]["overrides"]["namespace"]["resource"] == "namespace"
    assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


# --------------------------------------------------------------------------
# observability: alert rules and dashboard


def test_prometheus_rule_copy_is_identical(docs):
    assert RULES_COPY.read_bytes() == RULES_FILE.read_bytes(), (
        "deploy/k8s/base/prometheus-rules.yaml must be a copy of deploy/observability/prometheus-rules.yaml")
    rendered = one(docs, "PrometheusRule", "slatewise")
    assert rendered["spec"] == load_rules()["spec"]


def test_prometheus_rule_structure_and_alerts():
    rules = load_rules()
    assert rules["apiVersion"] == "monitoring.coreos.com/v1"
    assert rules["kind"] == "PrometheusRule"
    assert rules["metadata"]["name"]
    groups = rules["spec"]["groups"]
    assert groups and len({g["name"] for g in groups}) == len(groups)
    for group in groups:
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            if "alert" in rule:
                assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
                assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
                assert rule["labels"]["severity"] in {"critical", "warning", "info"}
                assert rule["annotations"]["summary"]

    alerts = alert_rules(rules)
    assert {"SlatewiseHighFallbackRatio", "SlatewiseHighP99Latency",
            "SlatewiseEngineDown", "SlatewiseCircuitOpen"} <= set(alerts)
    assert alerts["SlatewiseEngineDown"]["expr"].strip() == "slatewise_engine_ready == 0"
    assert alerts["SlatewiseEngineDown"]["for"] == "5m"
    assert alerts["SlatewiseCircuitOpen"]["expr"].strip() == "slatewise_circuit_state == 2"
    assert alerts["SlatewiseCircuitOpen"]["for"] == "2m"
    assert "slatewise_fallbacks_total" in promql_metric_names(alerts["SlatewiseHighFallbackRatio"]["expr"])
    p99 = alerts["SlatewiseHighP99Latency"]["expr"]
    assert "histogram_quantile(0.99" in p99
    assert "slatewise_request_duration_seconds_bucket" in promql_metric_names(p99)


def test_documented_metrics_are_exported_by_the_server():
    missing = DOCUMENTED_METRICS - exported_metric_names()
    assert not missing, f"server no longer exports {sorted(missing)}"


def test_every_observability_metric_is_exported():
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    referenced: dict[str, set[str]] = {}
    for expr in dashboard_exprs(dashboard):
        names = promql_metric_names(expr)
        assert names, f"dashboard expression selects no metric: {expr!r}"
        for name in names:
            referenced.setdefault(name, set()).add("grafana-dashboard.json")
    for name in dashboard_variable_metrics(dashboard):
        referenced.setdefault(name, set()).add("grafana-dashboard.json (variables)")
    for alert, rule in alert_rules(load_rules()).items():
        names = promql_metric_names(rule["expr"])
        assert names, f"{alert} selects no metric"
        for name in names:
            referenced.setdefault(name, set()).add(f"prometheus-rules.yaml ({alert})")
    unknown = {n: sorted(w) for n, w in referenced.items() if not is_exported(n)}
    assert not unknown, f"metrics the service does not export: {unknown}"


def test_dashboard_covers_the_service():
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "namespace"}
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
    referenced = set().union(*(promql_metric_names(e) for e in dashboard_exprs(dashboard)))
    wanted = {
        "slatewise_requests_total", "slatewise_request_duration_seconds_bucket",
        "slatewise_request_duration_seconds_count", "slatewise_time_to_first_item_seconds_bucket",
        "slatewise_fallbacks_total", "slatewise_slate_intra_list_diversity_sum",
        "slatewise_slate_category_coverage_sum", "slatewise_slate_redundancy_sum",
        "slatewise_engine_ready", "slatewise_circuit_state", "slatewise_inflight_requests",
        "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total",
    }
    assert not wanted - referenced, f"dashboard lacks {sorted(wanted - referenced)}"
    exprs = "\n".join(dashboard_exprs(dashboard))
    for quantile in ("0.5", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le, strategy)" in exprs
