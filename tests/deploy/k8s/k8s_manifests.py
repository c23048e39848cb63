"""Rendering deploy/k8s and reading the rendered objects as the kubelet would (env, $(VAR)
expansion, flags), shared by the deployment tests (deploy_test.py)."""

import base64
import os
import shutil
import subprocess

SKIP = 77
OVERLAYS = ("cpu-demo", "gpu")
K8S_DIR = os.path.join("deploy", "k8s")
DOCKER_DIR = os.path.join("deploy", "docker")
JOBS = {"coordinator": "sparsefill-coordinator", "worker": "sparsefill-worker"}

try:
    import yaml
except ImportError:  # reported per case, so that the skip names it
    yaml = None


class Skip(Exception):
    pass


class Failures:
    """Collects every failed check so that one run reports all of them."""

    def __init__(self):
        self.items = []

    def check(self, cond, what):
        if not cond:
            self.items.append(what)
        return cond


def need_tools(*tools):
    if yaml is None:
        raise Skip("PyYAML is not installed (Debian: python3-yaml; tools/bootstrap installs it)")
    for t in tools:
        if shutil.which(t) is None:
            pkg = {"kubectl": "kubernetes-client", "node": "nodejs"}.get(t, t)
            raise Skip(f"{t} is not on PATH (Debian: {pkg}; tools/bootstrap installs it)")


def render(overlay):
    path = os.path.join(K8S_DIR, "overlays", overlay)
    r = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{r.stderr}")
    objs = [o for o in yaml.safe_load_all(r.stdout) if o is not None]
    if not objs:
        raise AssertionError(f"kubectl kustomize {path} rendered nothing")
    return r.stdout, objs


def make_secrets(namespace):
    """The Secrets as deploy/k8s/create-secrets.sh makes them (its --dry-run output), and their
    decoded data: {name: {key: value}}."""
    r = subprocess.run([os.path.join(K8S_DIR, "create-secrets.sh"), namespace, "--dry-run"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"create-secrets.sh --dry-run failed:\n{r.stderr}")
    objs = [o for o in yaml.safe_load_all(r.stdout) if o is not None]
    data = {o["metadata"]["name"]: {k: base64.b64decode(v).decode()
                                    for k, v in o.get("data", {}).items()} for o in objs}
    return r.stdout, objs, data


def find(objs, kind, name=None):
    out = [o for o in objs if o.get("kind") == kind
           and (name is None or o.get("metadata", {}).get("name") == name)]
    return out


def one(objs, kind, name):
    found = find(objs, kind, name)
    if len(found) != 1:
        raise AssertionError(f"expected one {kind}/{name}, found {len(found)}")
    return found[0]


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def configmaps(objs):
    return {o["metadata"]["name"]: o.get("data", {}) for o in find(objs, "ConfigMap")}


def expand_k8s(s, env):
    """Kubernetes' $(VAR) expansion of command, args and env values: $$ is a literal $, and a
    reference to an undefined variable stays as written."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "$" and i + 1 < len(s):
            if s[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if s[i + 1] == "(":
                j = s.find(")", i + 2)
                if j != -1:
                    name = s[i + 2:j]
                    out.append(env[name] if name in env else s[i:j + 1])
                    i = j + 1
                    continue
        out.append(s[i])
        i += 1
    return "".join(out)


def container_env(container, cms, secret_values=None):
    """The environment the kubelet gives the container: envFrom in order, then env (whose values
    may refer to earlier variables). Raises on references to objects that were not rendered."""
    env = {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            name = src["configMapRef"]["name"]
            if name not in cms:
                raise AssertionError(f"envFrom: ConfigMap {name} is not rendered")
            env.update({src.get("prefix", "") + k: v for k, v in cms[name].items()})
        elif "secretRef" in src:
            name = src["secretRef"]["name"]
            env.update((secret_values or {}).get(name, {}))
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = expand_k8s(e["value"], env)
        elif "valueFrom" in e and "configMapKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["configMapKeyRef"]
            env[e["name"]] = cms[ref["name"]][ref["key"]]
        elif "valueFrom" in e and "secretKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = (secret_values or {})[ref["name"]][ref["key"]]
    return env


def flag_values(args, flag):
    """Values of --flag=V and --flag V in an argument list."""
    out = []
    for i, a in enumerate(args):
        if a.startswith(flag + "="):
            out.append(a[len(flag) + 1:])
        elif a == flag and i + 1 < len(args):
            out.append(args[i + 1])
    return out


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def all_containers(spec):
    return spec.get("initContainers", []) + spec.get("containers", [])


def under(path, mount):
    return path == mount or path.startswith(mount.rstrip("/") + "/")


