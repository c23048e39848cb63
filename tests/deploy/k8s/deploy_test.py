#!/usr/bin/env python3
"""Deployment tests of deploy/k8s and deploy/docker (see tests/deploy/k8s/CMakeLists.txt).

  deploy_test.py render            render both overlays, check what the manifests promise
  deploy_test.py validate          schema-validate the renders; broken copies must fail
  deploy_test.py probes OVERLAY    run the rendered pods' processes on loopback, probe them

Runs from the source root. Exit 0: passed; 1: failed; 77: skipped (a tool is missing; the
reason is printed). Tools: kubectl (Debian's kubernetes-client), PyYAML, node + the validator's
packages in $SPARSEFILL_K8S_VALIDATE_DEPS (tools/bootstrap installs all of them).
"""

import copy
import json
import os
import subprocess
import sys
import tempfile

from k8s_manifests import OVERLAYS, SKIP, Failures, Skip, make_secrets, need_tools, render, yaml
from loopback_pods import case_probes
from render_checks import case_render

VALIDATOR = os.path.join("tests", "deploy", "k8s", "validate", "validate.mjs")


def validator_env():
    need_tools("kubectl", "node")
    deps = os.environ.get("SPARSEFILL_K8S_VALIDATE_DEPS", os.path.join(".deps", "k8s-validate"))
    if not os.path.isdir(os.path.join(deps, "node_modules", "kubernetes-models")):
        raise Skip(f"{deps}/node_modules lacks the validator's packages (tools/bootstrap runs "
                   "npm ci for tests/deploy/k8s/validate/package-lock.json)")
    return dict(os.environ, SPARSEFILL_K8S_VALIDATE_DEPS=os.path.abspath(deps))


def breakages(objs):
    """Broken copies of a render, each with one error a real schema validation must catch."""
    def edit(kind, fn):
        o = copy.deepcopy(objs)
        fn(next(x for x in o if x["kind"] == kind))
        return o

    def first_container(w):
        return w["spec"]["template"]["spec"]["containers"][0]

    return {
        "replicas is a string": edit("StatefulSet",
                                     lambda w: w["spec"].__setitem__("replicas", "two")),
        "StatefulSet without selector": edit("StatefulSet", lambda w: w["spec"].pop("selector")),
        "containerPort is a string": edit("Deployment", lambda w: first_container(w)["ports"][0]
                                          .__setitem__("containerPort", "grpc")),
        "grpc probe without port": edit("Deployment", lambda w: first_container(w)
                                        ["livenessProbe"]["grpc"].pop("port")),
        "container without name": edit("Deployment", lambda w: first_container(w).pop("name")),
        "Service port is a name": edit("Service", lambda s: s["spec"]["ports"][0]
                                       .__setitem__("port", "grpc")),
        "imagePullPolicy not in its enum": edit("Deployment", lambda w: first_container(w)
                                                .__setitem__("imagePullPolicy", "Sometimes")),
        "unknown field in a container": edit("StatefulSet", lambda w: first_container(w)
                                             .__setitem__("readinesProbe", {"grpc": {"port": 1}})),
        "ServiceMonitor endpoints not a list": edit(
            "ServiceMonitor", lambda s: s["spec"].__setitem__("endpoints", {"port": "metrics"})),
        "PodMonitor relabel action unknown": edit(
            "PodMonitor", lambda p: p["spec"]["podMetricsEndpoints"][0]["relabelings"][0]
            .__setitem__("action", "rename")),
        "unknown kind": objs + [{"apiVersion": "apps/v1", "kind": "Deploymnet",
                                 "metadata": {"name": "x"}}],
    }


def case_validate():
    env = validator_env()
    f = Failures()
    with tempfile.TemporaryDirectory(prefix="sf-k8s-validate-") as tmp:
        good, broken = [], {}
        for overlay in OVERLAYS:
            text, objs = render(overlay)
            kinds = {o["kind"] for o in objs}
            f.check({"ServiceMonitor", "PodMonitor"} <= kinds, f"{overlay}: monitors rendered")
            path = os.path.join(tmp, f"{overlay}.yaml")
            with open(path, "w") as fh:
                fh.write(text)
            good.append(path)
            ns = objs[-1]["metadata"].get("namespace", "default")
            secrets_path = os.path.join(tmp, f"{overlay}-secrets.yaml")
            with open(secrets_path, "w") as fh:
                fh.write(make_secrets(ns)[0])
            good.append(secrets_path)
            for i, (what, objs_broken) in enumerate(breakages(objs).items()):
                p = os.path.join(tmp, f"{overlay}-broken-{i}.yaml")
                with open(p, "w") as fh:
                    yaml.safe_dump_all(objs_broken, fh)
                broken[p] = f"{overlay}: {what}"

        # The command the README gives: exit status 0 on the renders and the Secrets.
        r = subprocess.run(["node", VALIDATOR] + good, capture_output=True, text=True, env=env,
                           timeout=120)
        f.check(r.returncode == 0, f"rendered manifests are invalid:\n{r.stdout}{r.stderr}")
        print(r.stdout.strip())
        # Each broken copy on its own, in one run: every one must have errors.
        r = subprocess.run(["node", VALIDATOR, "--json"] + list(broken), capture_output=True,
                           text=True, env=env, timeout=120)
        if f.check(r.returncode == 0, f"validate.mjs --json: {r.returncode}: {r.stderr}"):
            report = json.loads(r.stdout)
            for p, what in broken.items():
                errors = report.get(p)
                if f.check(errors, f"the validator accepted a broken copy ({what})"):
                    print(f"rejected ({what}): {errors[0]['object']}: {errors[0]['error']}")
    for item in f.items:
        print("FAIL:", item)
    return 1 if f.items else 0


def main(argv):
    if len(argv) < 2 or argv[1] not in ("render", "validate", "probes") or (
            argv[1] == "probes" and (len(argv) != 3 or argv[2] not in OVERLAYS)):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if argv[1] == "render":
            return case_render()
        if argv[1] == "validate":
            return case_validate()
        return case_probes(argv[2])
    except Skip as e:
        print(f"SKIPPED: {e}")
        return SKIP
    except AssertionError as e:
        print(f"FAIL: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
