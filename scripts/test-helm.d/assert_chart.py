#!/usr/bin/env python3
"""Assertions on the rendered Helm chart (run by scripts/test-helm after `helm template` of every ci values file).

Usage: assert_chart.py CHART_DIR RENDERED_DIR   (environment: HELM, the helm binary; API_VERSIONS, space-separated)

Checks, for each helm/portcullis/ci/*-values.yaml rendered into RENDERED_DIR/<name>.yaml: the kinds rendered, the
container and Service ports, the probes, the security context, the arguments, and that the RBAC rules are exactly
those of docs/kubernetes.md (compared as sets of (apiGroup, resource, verb, resourceName) per Role/ClusterRole).
Then renders that must fail (host ports with a surge, misspelt keys, ...) and checks that they do, with a message
that names the value to change.
"""

import os
import re
import subprocess
import sys

import yaml

CHART, RENDERED = sys.argv[1], sys.argv[2]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELM = os.environ["HELM"]
API_VERSIONS = os.environ.get("API_VERSIONS", "").split()
NAMESPACE = "portcullis-system"
FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)


def load(name):
    with open(os.path.join(RENDERED, f"{name}.yaml")) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(objs, kind, name=None, namespace=None):
    return [
        o
        for o in objs
        if o["kind"] == kind
        and (name is None or o["metadata"]["name"] == name)
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


def one(objs, kind, name=None, namespace=None):
    found = find(objs, kind, name, namespace)
    if len(found) != 1:
        raise AssertionError(f"expected one {kind} {namespace or ''}/{name or '*'}, found {len(found)}")
    return found[0]


def permissions(rules):
    """A rule list as a set of (apiGroup, resource, verb, resourceName or '*')."""
    out = set()
    for r in rules:
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r.get("verbs", []):
                    for n in r.get("resourceNames") or ["*"]:
                        out.add((g, res, v, n))
    return out


def documented(scope):
    """{('ClusterRole', name) or ('Role', name, namespace): permissions} of docs/kubernetes.md's block for scope."""
    with open(os.path.join(ROOT, "docs", "kubernetes.md")) as f:
        text = f.read()
    blocks = [
        b.split("```", 1)[0]
        for b in text.split("```yaml\n")[1:]
        if b.split("\n", 1)[0].strip() == f"# rbac.scope: {scope}"
    ]
    assert len(blocks) == 1, f"one '# rbac.scope: {scope}' block in docs/kubernetes.md, found {len(blocks)}"
    out = {}
    for o in yaml.safe_load_all(blocks[0]):
        if not o:
            continue
        key = (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))
        out[key] = permissions(o["rules"])
    return out


def rbac_diff(chart, docs):
    """What differs between two {role: permissions} maps, readably."""
    lines = []
    for k in sorted(set(chart) | set(docs), key=str):
        c, d = chart.get(k), docs.get(k)
        if c is None:
            lines.append(f"  {k}: only in the docs")
        elif d is None:
            lines.append(f"  {k}: only in the chart")
        elif c != d:
            lines.append(f"  {k}: chart has {sorted(c - d)} more, docs have {sorted(d - c)} more")
    return "\n".join(lines)


def rendered_rbac(objs):
    return {
        (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")): permissions(o["rules"])
        for o in objs
        if o["kind"] in ("ClusterRole", "Role")
    }


def workload(objs):
    found = [o for o in objs if o["kind"] in ("DaemonSet", "Deployment")]
    assert len(found) == 1, f"one workload, found {[o['kind'] for o in found]}"
    return found[0]


def container(w):
    cs = w["spec"]["template"]["spec"]["containers"]
    assert len(cs) == 1
    return cs[0]


def ports(w):
    return {p["name"]: p for p in container(w)["ports"]}


def args(w):
    return container(w)["args"]


def check_common(name, objs):
    """What every rendering must have: probes on the health port, the security context, the drain settings."""
    w = workload(objs)
    pod = w["spec"]["template"]["spec"]
    c = container(w)
    a = args(w)
    check(a[:2] == ["run", "--kubernetes"], f"{name}: args start with run --kubernetes: {a}")
    check(f"--namespace={NAMESPACE}" in a, f"{name}: --namespace")
    check("--admin-addr=127.0.0.1:9901" in a, f"{name}: the admin API stays on loopback")
    health = ports(w)["health"]
    check(health["containerPort"] == 10254 and "hostPort" not in health, f"{name}: health port {health}")
    check("--health-addr=0.0.0.0:10254" in a, f"{name}: --health-addr")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        check(get == {"path": path, "port": "health"}, f"{name}: {probe} {get}")
    psc = pod["securityContext"]
    check(psc.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot")
    check(psc.get("runAsUser", 0) > 0, f"{name}: numeric non-root user")
    check(psc.get("seccompProfile") == {"type": "RuntimeDefault"}, f"{name}: seccomp RuntimeDefault")
    sc = c["securityContext"]
    check(sc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem")
    check(sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation false")
    check(sc.get("runAsNonRoot") is True, f"{name}: container runAsNonRoot")
    check(sc.get("capabilities") == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}, f"{name}: capabilities {sc}")
    delay = int(next(x for x in a if x.startswith("--shutdown-delay=")).split("=")[1])
    grace = int(next(x for x in a if x.startswith("--shutdown-grace=")).split("=")[1])
    check(pod["terminationGracePeriodSeconds"] > delay + grace, f"{name}: terminationGracePeriodSeconds")
    env = {e["name"]: e for e in c["env"]}
    check(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", f"{name}: POD_NAME")
    check(w["spec"]["template"]["metadata"]["labels"].items() >= w["spec"]["selector"]["matchLabels"].items(),
          f"{name}: the selector matches the pod labels")
    sa = pod["serviceAccountName"]
    check(find(objs, "ServiceAccount", sa, NAMESPACE), f"{name}: the ServiceAccount {sa} is rendered")
    for b in find(objs, "ClusterRoleBinding") + find(objs, "RoleBinding"):
        check(b["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}],
              f"{name}: {b['kind']} {b['metadata']['name']} binds the service account")
        role = b["roleRef"]
        check(find(objs, role["kind"], role["name"], b["metadata"].get("namespace") if role["kind"] == "Role" else None),
              f"{name}: {b['kind']} {b['metadata']['name']} refers to a rendered {role['kind']}")
    ic = find(objs, "IngressClass")
    check(all(i["spec"] == {"controller": "portcullis.dev/ingress-controller"} for i in ic), f"{name}: IngressClass")
    gc = find(objs, "GatewayClass")
    check(all(g["spec"] == {"controllerName": "portcullis.dev/gateway-controller"} for g in gc), f"{name}: GatewayClass")
    check(not find(objs, "CustomResourceDefinition"), f"{name}: the chart installs no CRD")


def check_rolling(name, w, unavailable, surge):
    key = "updateStrategy" if w["kind"] == "DaemonSet" else "strategy"
    s = w["spec"][key]
    check(s["type"] == "RollingUpdate", f"{name}: RollingUpdate")
    check(s["rollingUpdate"] == {"maxUnavailable": unavailable, "maxSurge": surge}, f"{name}: rolling update {s}")


def check_default():
    objs = load("default")
    check_common("default", objs)
    kinds = sorted(o["kind"] for o in objs)
    check(kinds == sorted(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "DaemonSet",
                           "IngressClass", "GatewayClass"]), f"default: kinds {kinds}")
    w = workload(objs)
    check(w["kind"] == "DaemonSet", "default: a DaemonSet")
    check_rolling("default", w, 1, 0)
    p = ports(w)
    check(p["http"]["containerPort"] == 80 and p["http"]["hostPort"] == 80, f"default: http {p['http']}")
    check(p["https"]["containerPort"] == 443 and p["https"]["hostPort"] == 443, f"default: https {p['https']}")
    check(set(p) == {"http", "https", "health"}, f"default: ports {set(p)}")
    pod = w["spec"]["template"]["spec"]
    check("hostNetwork" not in pod and "dnsPolicy" not in pod, "default: no hostNetwork")
    a = args(w)
    check("--shutdown-delay=5" in a and "--shutdown-grace=20" in a, f"default: drain args {a}")
    check(not any(x.startswith(("--watch-namespace", "--publish", "--leader-elect")) for x in a), f"default: {a}")
    check(pod["terminationGracePeriodSeconds"] == 30, "default: terminationGracePeriodSeconds 30")
    check("annotations" not in one(objs, "IngressClass")["metadata"], "default: not the default IngressClass")
    check(not find(objs, "PodDisruptionBudget"), "default: no PDB for a DaemonSet")
    # RBAC: exactly docs/kubernetes.md, cluster scope.
    docs = documented("cluster")
    chart = rendered_rbac(objs)
    check(chart == docs, f"default: RBAC differs from docs/kubernetes.md (cluster scope):\n{rbac_diff(chart, docs)}")


def check_deployment():
    objs = load("deployment")
    check_common("deployment", objs)
    w = workload(objs)
    check(w["kind"] == "Deployment" and w["spec"]["replicas"] == 3, "deployment: a Deployment of 3")
    check_rolling("deployment", w, 1, 1)
    check(all("hostPort" not in p for p in ports(w).values()), "deployment: no host ports")
    svc = one(objs, "Service", "portcullis", NAMESPACE)
    check(svc["spec"]["type"] == "LoadBalancer", "deployment: LoadBalancer Service")
    check(svc["spec"]["externalTrafficPolicy"] == "Local", "deployment: externalTrafficPolicy Local")
    sp = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    check(sp == {"http": (80, "http"), "https": (443, "https")}, f"deployment: Service ports {sp}")
    check(svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items(),
          "deployment: the Service selects the pods")
    check(f"--publish-service={NAMESPACE}/portcullis" in args(w), "deployment: --publish-service")
    pdb = one(objs, "PodDisruptionBudget")
    check(pdb["spec"]["minAvailable"] == 2, "deployment: PDB minAvailable 2")
    check(rendered_rbac(objs) == documented("cluster"), "deployment: RBAC equals docs (cluster scope)")


def check_hostport():
    objs = load("hostport")
    check_common("hostport", objs)
    w = workload(objs)
    check_rolling("hostport", w, "10%", 0)
    p = ports(w)
    for n, port in (("http", 80), ("https", 443), ("gw-8443", 8443), ("gw-9000", 9000)):
        check(p[n]["containerPort"] == port and p[n]["hostPort"] == port, f"hostport: {n} {p.get(n)}")
    pod = w["spec"]["template"]["spec"]
    c = container(w)
    check(c["image"] == "registry.example.com/platform/portcullis:0.1.0-test", f"hostport: image {c['image']}")
    check(c["imagePullPolicy"] == "Always", "hostport: pullPolicy")
    check(pod["imagePullSecrets"] == [{"name": "registry-credentials"}], "hostport: imagePullSecrets")
    check(c["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}, "hostport: resources")
    check(pod["nodeSelector"]["node-role.example.com/edge"] == "true", "hostport: nodeSelector")
    check(pod["tolerations"][0]["key"] == "node-role.example.com/edge", "hostport: tolerations")
    check("nodeAffinity" in pod["affinity"], "hostport: affinity")
    check(pod["priorityClassName"] == "system-node-critical", "hostport: priorityClassName")
    check(w["spec"]["template"]["metadata"]["labels"]["team"] == "platform", "hostport: pod labels")
    check(w["spec"]["template"]["metadata"]["annotations"] == {"example.com/owner": "platform"},
          "hostport: pod annotations")
    a = args(w)
    check("--threads=4" in a, "hostport: extraArgs")
    check([x for x in a if x.startswith("--publish-status-address=")] ==
          ["--publish-status-address=203.0.113.10", "--publish-status-address=203.0.113.11"],
          "hostport: --publish-status-address")
    check("--shutdown-delay=10" in a and "--shutdown-grace=30" in a, "hostport: drain args")
    check(pod["terminationGracePeriodSeconds"] == 45, "hostport: terminationGracePeriodSeconds")
    env = {e["name"]: e for e in c["env"]}
    check(env["MIMALLOC_VERBOSE"]["value"] == "0" and env["RUST_LOG"]["value"] == "portcullis=debug,info",
          "hostport: env")
    ic = one(objs, "IngressClass")
    check(ic["metadata"]["annotations"] == {"ingressclass.kubernetes.io/is-default-class": "true"},
          "hostport: default IngressClass")


def check_hostnetwork():
    objs = load("hostnetwork")
    check_common("hostnetwork", objs)
    w = workload(objs)
    pod = w["spec"]["template"]["spec"]
    check(pod.get("hostNetwork") is True and pod.get("dnsPolicy") == "ClusterFirstWithHostNet",
          "hostnetwork: hostNetwork with ClusterFirstWithHostNet")
    check(all("hostPort" not in p for p in ports(w).values()), "hostnetwork: no explicit hostPort")
    check(ports(w)["gw-8080"]["containerPort"] == 8080, "hostnetwork: listener port 8080")
    check_rolling("hostnetwork", w, 1, 0)
    check("--leader-elect=false" in args(w), "hostnetwork: --leader-elect=false")
    docs = documented("cluster")
    chart = rendered_rbac(objs)
    check(chart == {k: v for k, v in docs.items() if k[0] == "ClusterRole"},
          "hostnetwork: the ClusterRole of the docs, no leader Role without leader election")


def check_namespaced():
    objs = load("namespaced")
    check_common("namespaced", objs)
    w = workload(objs)
    a = args(w)
    check([x for x in a if x.startswith("--watch-namespace")] ==
          ["--watch-namespace=shop", "--watch-namespace=team-b"], f"namespaced: --watch-namespace {a}")
    check(f"--publish-service={NAMESPACE}/portcullis" in a, "namespaced: --publish-service")
    docs = documented("namespace")
    chart = rendered_rbac(objs)
    # The documented Role of the watched namespace "shop" applies to every watched namespace.
    watched = next(v for k, v in docs.items() if k[0] == "Role" and k[2] == "shop")
    expected = {k: v for k, v in docs.items() if not (k[0] == "Role" and k[2] == "shop")}
    for ns in ("shop", "team-b"):
        expected[("Role", "portcullis", ns)] = watched
    check(chart == expected,
          f"namespaced: RBAC differs from docs/kubernetes.md (namespace scope):\n{rbac_diff(chart, expected)}")
    check(not any(k[0] == "ClusterRole" and ("", "secrets", "list", "*") in v for k, v in chart.items()),
          "namespaced: no cluster-wide Secret access")
    for ns in ("shop", "team-b"):
        check(find(objs, "RoleBinding", "portcullis", ns), f"namespaced: RoleBinding in {ns}")
    check(one(objs, "GatewayClass")["metadata"]["name"] == "portcullis-shop", "namespaced: GatewayClass name")


def check_servicemonitor():
    objs = load("servicemonitor")
    check_common("servicemonitor", objs)
    svc = one(objs, "Service", "portcullis-metrics", NAMESPACE)
    check(svc["spec"]["ports"] == [{"name": "metrics", "port": 10254, "targetPort": "health", "protocol": "TCP"}],
          f"servicemonitor: metrics Service ports {svc['spec']['ports']}")
    sm = one(objs, "ServiceMonitor", "portcullis", NAMESPACE)
    check(sm["apiVersion"] == "monitoring.coreos.com/v1", "servicemonitor: apiVersion")
    check(sm["metadata"]["labels"]["release"] == "prometheus", "servicemonitor: labels")
    check(sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(),
          "servicemonitor: selects the metrics Service")
    check(sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
          f"servicemonitor: endpoints {sm['spec']['endpoints']}")


def render(*extra, api_versions=True):
    cmd = [HELM, "template", "portcullis", CHART, "--namespace", NAMESPACE, *extra]
    if api_versions:
        for v in API_VERSIONS:
            cmd += ["--api-versions", v]
    return subprocess.run(cmd, capture_output=True, text=True)


def check_gatewayclass_needs_the_crds():
    r = render(api_versions=False)
    check(r.returncode == 0, f"render without the Gateway API: {r.stderr}")
    kinds = [d["kind"] for d in yaml.safe_load_all(r.stdout) if d]
    check("GatewayClass" not in kinds, "no GatewayClass when the cluster does not serve the Gateway API")
    check("IngressClass" in kinds, "the IngressClass does not depend on the Gateway API")


FAILING = [
    (["--set", "updateStrategy.maxSurge=1"], r"updateStrategy\.maxSurge is 1, but the pods use host ports"),
    (["--set", "network.hostNetwork=true,network.hostPort=false,updateStrategy.maxSurge=25%"],
     r"updateStrategy\.maxSurge is 25%, but the pods use host ports"),
    (["--set", "updateStrategy.maxUnavailable=0"], r"updateStrategy\.maxUnavailable must be at least 1"),
    (["--set", "network.hostport=true"], r"additional properties 'hostport' not allowed"),
    (["--set", "imagee.tag=x"], r"additional properties 'imagee' not allowed"),
    (["--set", "metrics.serviceMonitor.enable=true"], r"additional properties 'enable' not allowed"),
    (["--set", "kind=StatefulSet"], r"kind"),
    (["--set", "terminationGracePeriodSeconds=25"],
     r"terminationGracePeriodSeconds \(25\) must exceed drain\.shutdownDelaySeconds \+ drain\.shutdownGraceSeconds \(25\)"),
    (["--set", "rbac.scope=namespace"], r"rbac\.scope: namespace needs watchNamespaces"),
    (["--set", "rbac.scope=everything"], r"scope"),
    (["--set", "podDisruptionBudget.enabled=true"], r"podDisruptionBudget\.enabled is for kind: Deployment"),
    (["--set", "network.hostNetwork=true"], r"network\.hostNetwork and network\.hostPort are exclusive"),
    (["--set-json", 'listenerPorts=[{"name":"gw","port":443}]'], r"ports\.https and listenerPorts gw both use port 443"),
    (["--set-json", 'listenerPorts=[{"name":"http","port":8080}]'], r"the port name http is taken"),
    (["--set", "service.enabled=true", "--set-json", 'publishStatusAddresses=["192.0.2.1"]'],
     r"service\.publish and publishStatusAddresses are exclusive"),
]


def check_failing_renders():
    for extra, message in FAILING:
        r = render(*extra)
        what = " ".join(extra)
        if r.returncode == 0:
            FAILURES.append(f"render with {what} should fail")
        elif re.search(message, r.stderr) is None:
            FAILURES.append(f"render with {what}: message /{message}/ not in: {r.stderr.strip()}")
        else:
            print(f"   fails as it should: {what}")


def main():
    for name, fn in (("default", check_default), ("deployment", check_deployment), ("hostport", check_hostport),
                     ("hostnetwork", check_hostnetwork), ("namespaced", check_namespaced),
                     ("servicemonitor", check_servicemonitor)):
        try:
            fn()
            print(f"== {name}: assertions done")
        except (AssertionError, KeyError, StopIteration, TypeError) as e:
            FAILURES.append(f"{name}: {type(e).__name__}: {e}")
    rendered = {os.path.basename(f)[: -len(".yaml")] for f in os.listdir(RENDERED) if f.endswith(".yaml")}
    ci = {f[: -len("-values.yaml")] for f in os.listdir(os.path.join(CHART, "ci")) if f.endswith("-values.yaml")}
    check(ci <= rendered, f"every ci values file was rendered: {ci - rendered}")
    check(ci == {"default", "deployment", "hostport", "hostnetwork", "namespaced", "servicemonitor"},
          f"every ci values file has assertions here: {sorted(ci)}")
    check_gatewayclass_needs_the_crds()
    check_failing_renders()
    if FAILURES:
        print("chart assertions failed:", file=sys.stderr)
        for f in FAILURES:
            print(f"  - {f}", file=sys.stderr)
        sys.exit(1)
    print("chart assertions: all passed")


main()
