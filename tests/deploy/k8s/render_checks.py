"""deploy_test.py render: what the rendered manifests and the Dockerfiles promise."""

import json
import os
import re

from k8s_manifests import (
    Failures,
    need_tools,
    render,
    make_secrets,
    find,
    one,
    labels_match,
    configmaps,
    expand_k8s,
    container_env,
    flag_values,
    pod_spec,
    all_containers,
    under,
    OVERLAYS,
    DOCKER_DIR,
    JOBS,
)


def check_workload(f, objs, workload, cms, role, secret_keys):
    kind, name = workload["kind"], workload["metadata"]["name"]
    where = f"{kind}/{name}"
    spec = pod_spec(workload)
    psc = spec.get("securityContext", {})
    f.check(psc.get("runAsNonRoot") is True, f"{where}: pod securityContext.runAsNonRoot")
    f.check(isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0,
            f"{where}: pod securityContext.runAsUser must be a non-zero uid")
    f.check(psc.get("fsGroup") == psc.get("runAsGroup") and psc.get("fsGroup"),
            f"{where}: fsGroup (volume ownership) must be the process's group")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
    for c in all_containers(spec):
        cw = f"{where}/{c['name']}"
        sc = c.get("securityContext", {})
        f.check(sc.get("readOnlyRootFilesystem") is True, f"{cw}: readOnlyRootFilesystem")
        f.check(sc.get("allowPrivilegeEscalation") is False, f"{cw}: allowPrivilegeEscalation")
        f.check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{cw}: drop ALL")
        res = c.get("resources", {})
        for r in ("cpu", "memory"):
            f.check(r in res.get("requests", {}), f"{cw}: resources.requests.{r}")
        f.check("memory" in res.get("limits", {}), f"{cw}: resources.limits.memory")
        f.check(c.get("image", "").startswith("sparsefill-"), f"{cw}: image {c.get('image')}")
        mounts = c.get("volumeMounts", [])
        for m in mounts:
            f.check(m["name"] in volumes or m["name"] in claims,
                    f"{cw}: volumeMount {m['name']} has no volume")
        try:
            env = container_env(c, cms)
        except (AssertionError, KeyError) as e:
            f.check(False, f"{cw}: {e}")
            env = {}
        args = [expand_k8s(a, env) for a in c.get("command", []) + c.get("args", [])]
        for a in args:
            f.check("$(" not in a, f"{cw}: {a!r} refers to a variable the container lacks")
        # Failure drills never ship: the worker injects RocksDB write errors when asked.
        f.check(not flag_values(args, "--inject-write-errors") and
                "SPARSEFILL_INJECT_WRITE_ERRORS" not in env, f"{cw}: fault injection is on")
        # What the binaries write must be on a writable mount (the root filesystem is not).
        writable = [m["mountPath"] for m in mounts if not m.get("readOnly")]
        for flag in ("--store", "--registry", "--out"):
            for path in flag_values(args, flag):
                f.check(any(under(path, w) for w in writable),
                        f"{cw}: {flag} {path} is not on a writable volume")
        # Files the flags name must be on a mount (secret, config or model volumes).
        for flag in ("--tokens", "--worker-token-file", "--peer-token-file", "--tls-cert",
                     "--tls-key", "--tls-client-ca"):
            for path in flag_values(args, flag):
                m = [m for m in mounts if under(path, m["mountPath"])]
                ok = f.check(m, f"{cw}: {flag} {path} is on no volume")
                if ok and "secret" in volumes.get(m[0]["name"], {}):
                    sec = volumes[m[0]["name"]]["secret"]["secretName"]
                    key = os.path.relpath(path, m[0]["mountPath"])
                    f.check(key in secret_keys.get(sec, ()),
                            f"{cw}: {flag}: create-secrets.sh gives Secret {sec} no key {key}")
        for path in flag_values(args, "--model"):
            d = path.split("=", 1)[-1]
            f.check(any(under(d, m["mountPath"]) for m in mounts),
                    f"{cw}: --model {path}: not on a volume")
    main = spec["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in main.get("ports", [])}
    f.check("grpc" in ports and "metrics" in ports, f"{where}: ports named grpc and metrics")
    env = container_env(main, cms)
    args = [expand_k8s(a, env) for a in main.get("args", [])]
    listen = flag_values(args, "--listen")
    f.check(listen == [f"0.0.0.0:{ports.get('grpc')}"], f"{where}: --listen {listen} vs port")
    mlisten = flag_values(args, "--metrics-listen")
    f.check(mlisten == [f"0.0.0.0:{ports.get('metrics')}"],
            f"{where}: --metrics-listen {mlisten} vs port")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = main.get(probe)
        if not f.check(p is not None, f"{where}: {probe} missing"):
            continue
        port = (p.get("grpc") or p.get("httpGet") or {}).get("port")
        f.check(port in (ports.get("grpc"), ports.get("metrics"), "grpc", "metrics"),
                f"{where}: {probe} port {port} is not a served port")
    labels = workload["spec"]["template"]["metadata"]["labels"]
    f.check(labels.get("app.kubernetes.io/name") == "sparsefill" and
            labels.get("app.kubernetes.io/component") == role,
            f"{where}: pod labels (deploy/prometheus selects name=sparsefill, component={role})")
    f.check(labels_match(workload["spec"]["selector"]["matchLabels"], labels),
            f"{where}: selector does not match its pods")
    return labels, ports, args


def check_render(f, overlay, objs):
    cms = configmaps(objs)
    coord = one(objs, "Deployment", "sparsefill-coordinator")
    sts = one(objs, "StatefulSet", "sparsefill-worker")
    _, _, secret_data = make_secrets(sts["metadata"].get("namespace", "default"))
    secret_keys = {k: set(v) for k, v in secret_data.items()}
    clabels, cports, cargs = check_workload(f, objs, coord, cms, "coordinator", secret_keys)
    wlabels, wports, _ = check_workload(f, objs, sts, cms, "worker", secret_keys)

    f.check(coord["spec"].get("replicas") == 1 and
            coord["spec"].get("strategy", {}).get("type") == "Recreate",
            "coordinator: one replica, Recreate (its registry is one RocksDB directory)")
    csvc = one(objs, "Service", "sparsefill-coordinator")
    f.check(labels_match(csvc["spec"]["selector"], clabels), "coordinator Service selector")
    wsvc = one(objs, "Service", sts["spec"]["serviceName"])
    f.check(wsvc["spec"].get("clusterIP") == "None", "worker Service must be headless")
    f.check(labels_match(wsvc["spec"]["selector"], wlabels), "worker Service selector")
    for svc, ports in ((csvc, cports), (wsvc, wports)):
        for p in svc["spec"]["ports"]:
            f.check(p.get("targetPort") in ports or p.get("targetPort") in ports.values(),
                    f"Service/{svc['metadata']['name']}: targetPort {p.get('targetPort')}")

    # The coordinator names every worker pod through the headless Service.
    replicas = sts["spec"]["replicas"]
    want = [f"{sts['metadata']['name']}-{i}.{wsvc['metadata']['name']}:{wports['grpc']}"
            for i in range(replicas)]
    f.check(flag_values(cargs, "--worker") == want,
            f"coordinator --worker {flag_values(cargs, '--worker')} != the {replicas} pods {want}")
    templates = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    f.check("store" in templates, "worker: volumeClaimTemplate 'store' for RocksDB")

    pdbs = [p for p in find(objs, "PodDisruptionBudget")
            if labels_match(p["spec"]["selector"]["matchLabels"], wlabels)]
    f.check(len(pdbs) == 1, "worker PodDisruptionBudget")

    # Prometheus Operator objects: the job names deploy/prometheus and deploy/grafana select.
    def job_of(endpoint):
        jobs = [r.get("replacement") for r in endpoint.get("relabelings", [])
                if r.get("targetLabel") == "job"]
        return jobs[-1] if jobs else None

    sms = [s for s in find(objs, "ServiceMonitor")
           if labels_match(s["spec"]["selector"]["matchLabels"], csvc["metadata"]["labels"])]
    f.check(len(sms) == 1, "a ServiceMonitor selecting the coordinator Service")
    for s in sms:
        for e in s["spec"]["endpoints"]:
            f.check(e.get("port") == "metrics", "ServiceMonitor scrapes the port named metrics")
            f.check(job_of(e) == JOBS["coordinator"], f"ServiceMonitor job {job_of(e)}")
    pms = [p for p in find(objs, "PodMonitor")
           if labels_match(p["spec"]["selector"]["matchLabels"], wlabels)]
    f.check(len(pms) == 1, "a PodMonitor selecting the worker pods")
    for p in pms:
        for e in p["spec"]["podMetricsEndpoints"]:
            f.check(e.get("port") == "metrics", "PodMonitor scrapes the port named metrics")
            f.check(job_of(e) == JOBS["worker"], f"PodMonitor job {job_of(e)}")

    # No Secret is rendered: they are references only (create-secrets.sh makes them).
    f.check(not find(objs, "Secret"), f"{overlay}: a Secret is committed in the manifests")
    referenced = set()
    for w in (coord, sts):
        for v in pod_spec(w).get("volumes", []):
            if "secret" in v:
                referenced.add(v["secret"]["secretName"])
    f.check(referenced == set(secret_keys),
            f"{overlay}: Secrets referenced {sorted(referenced)}, create-secrets.sh makes "
            f"{sorted(secret_keys)}")

    worker = pod_spec(sts)["containers"][0]
    gpus = worker["resources"].get("limits", {}).get("nvidia.com/gpu")
    models = {v["name"]: v for v in pod_spec(sts)["volumes"]}.get("models", {})
    if overlay == "gpu":
        f.check(gpus is not None and int(gpus) >= 1, "gpu: worker limits nvidia.com/gpu")
        f.check("persistentVolumeClaim" in models and "emptyDir" not in models,
                "gpu: models volume is a claim")
        vols = {v["name"]: v for v in pod_spec(coord)["volumes"]}
        claim = vols["registry"].get("persistentVolumeClaim", {}).get("claimName")
        f.check(claim is not None and "emptyDir" not in vols["registry"],
                "gpu: coordinator registry on a claim")
        f.check(len(find(objs, "PersistentVolumeClaim", claim)) == 1,
                f"gpu: PersistentVolumeClaim {claim} rendered")
    else:
        f.check("nvidia.com/gpu" not in json.dumps(objs), "cpu-demo asks for no GPU")
        f.check("emptyDir" in models and "persistentVolumeClaim" not in models,
                "cpu-demo: models volume is an emptyDir")
        inits = pod_spec(sts).get("initContainers", [])
        f.check(any(os.path.basename(c["command"][0]) == "make-model" and
                    any(under(p, "/models") for p in flag_values(c["args"], "--out"))
                    for c in inits), "cpu-demo: an init container writes the model")
    return [c["image"] for w in (coord, sts) for c in all_containers(pod_spec(w))]


def dockerignore_patterns():
    path = ".dockerignore"
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [l.strip() for l in fh if l.strip() and not l.startswith("#")]


def check_dockerfile(f, path, images_binaries):
    """COPY sources exist in the build context (the source root) and are not .dockerignored;
    the runtime stage runs as the manifests' non-root uid and holds the binaries they start."""
    if not f.check(os.path.exists(path), f"{path}: missing"):
        return ""
    with open(path) as fh:
        text = fh.read()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    ignored = dockerignore_patterns()
    stages = []
    for line in lines:
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        op = words[0].upper()
        if op == "FROM":
            stages.append({"user": None, "lines": []})
        if stages:
            stages[-1]["lines"].append(line)
        if op == "USER":
            stages[-1]["user"] = words[1]
        if op in ("COPY", "ADD") and not any(w.startswith("--from") for w in words[1:]):
            srcs = [w for w in words[1:] if not w.startswith("--")][:-1]
            for s in srcs:
                s = s.rstrip("/") or "."
                f.check(os.path.exists(s), f"{path}: COPY {s}: not in the source tree")
                f.check(not any(s == p.strip("/") or s.startswith(p.strip("/") + "/")
                                for p in ignored if not p.startswith("!")),
                        f"{path}: COPY {s}: excluded by .dockerignore")
    f.check(stages and stages[-1]["user"] == "10001:10001",
            f"{path}: the runtime stage must end as USER 10001:10001 (the manifests' runAsUser)")
    final = "\n".join(stages[-1]["lines"]) if stages else ""
    for b in images_binaries:
        f.check(b in text, f"{path}: does not install {b}")
    return final


def case_render():
    need_tools("kubectl")
    f = Failures()
    images = set()
    for overlay in OVERLAYS:
        _, objs = render(overlay)
        for img in check_render(f, overlay, objs):
            images.add(img)
    # Every image the manifests use has its Dockerfile, with the binaries the manifests run.
    dockerfiles = {"sparsefill-cpu": "Dockerfile.cpu", "sparsefill-cuda": "Dockerfile.cuda"}
    for img in sorted(images):
        name = img.split(":")[0]
        if not f.check(name in dockerfiles, f"image {img} has no Dockerfile in {DOCKER_DIR}"):
            continue
        check_dockerfile(f, os.path.join(DOCKER_DIR, dockerfiles[name]),
                         ["/opt/sparsefill/bin", "sparsefill-coordinator", "sparsefill-worker",
                          "make-model"])
    f.check(os.path.exists(".dockerignore"), ".dockerignore at the source root")
    for item in f.items:
        print("FAIL:", item)
    print(f"render: {len(OVERLAYS)} overlays, {len(f.items)} failed checks")
    return 1 if f.items else 0
