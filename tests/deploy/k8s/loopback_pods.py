"""deploy_test.py probes OVERLAY: the rendered pods' processes on loopback, probed as the
kubelet probes them."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from k8s_manifests import (
    Skip,
    Failures,
    need_tools,
    render,
    make_secrets,
    one,
    configmaps,
    expand_k8s,
    container_env,
    flag_values,
    pod_spec,
    OVERLAYS,
)

# The prompt of the prefill through the Service: the shared novel's token ids (a committed
# fixture), its first 1024 tokens.
PROMPT_TOKENS = os.path.join("tests", "fixtures", "tokenizer", "pride_and_prejudice.qwen3.u32")


class Pod:
    def __init__(self, name, ip, spec, role):
        self.name, self.ip, self.spec, self.role = name, ip, spec, role
        self.procs = []  # (container name, Popen, log path)


def http_get(url, timeout):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (urllib.error.URLError, OSError) as e:
        return None, str(e)


def run_probe(pod, container, probe):
    """One probe as the kubelet makes it, against the pod's address. Returns (ok, detail)."""
    timeout = probe.get("timeoutSeconds", 1)
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if "grpc" in probe:
        port = probe["grpc"]["port"]
        cmd = [os.environ["SPARSEFILL_K8S_HEALTH_PROBE"], f"--addr={pod.ip}:{port}",
               f"--timeout-ms={int(timeout * 1000)}"]
        if "service" in probe["grpc"]:
            cmd.append(f"--service={probe['grpc']['service']}")
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)
        return r.returncode == 0, r.stdout.strip() + r.stderr.strip()
    if "httpGet" in probe:
        g = probe["httpGet"]
        port = ports.get(g["port"], g["port"])
        status, _ = http_get(f"http://{pod.ip}:{port}{g.get('path', '/')}", timeout)
        return status is not None and 200 <= status < 400, f"HTTP {status}"
    if "tcpSocket" in probe:
        port = ports.get(probe["tcpSocket"]["port"], probe["tcpSocket"]["port"])
        try:
            socket.create_connection((pod.ip, port), timeout=timeout).close()
            return True, "connected"
        except OSError as e:
            return False, str(e)
    return False, f"unsupported probe {probe}"


def log_tail(path, n=40):
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-n:])
    except OSError:
        return "(no log)"


def prefill_through_service(f, objs, pods, secret_data, bin_dir, tmp):
    """A client's prefill through the coordinator Service, with a token of the client table:
    uses every rendered wire (client tokens, worker token, the workers' peer token and peer
    addresses, the model path) beyond what the probes touch. decode-sink streams the cache back
    and checks every block's checksum."""
    svc = one(objs, "Service", "sparsefill-coordinator")
    coord = pods[-1]
    ports = {p["name"]: p["containerPort"] for p in coord.spec["containers"][0]["ports"]}
    target = next(p["targetPort"] for p in svc["spec"]["ports"] if p["name"] == "grpc")
    address = f"{coord.ip}:{ports.get(target, target)}"
    worker = pods[0]
    c = worker.spec["containers"][0]
    cms = configmaps(objs)
    name, model_dir = flag_values([expand_k8s(a, container_env(c, cms)) for a in c["args"]],
                                  "--model")[0].split("=", 1)
    model_dir = worker.localize(c, model_dir)
    token_file = os.path.join(tmp, "client-token")
    with open(token_file, "w") as fh:
        fh.write(secret_data["sparsefill-client-tokens"]["tokens"].split()[0] + "\n")
    cmd = [os.path.join(bin_dir, "decode-sink"), "--coordinator", address, "--model", model_dir,
           "--model-name", name, "--tokens", PROMPT_TOKENS, "--max-tokens", "1024",
           "--token-file", token_file, "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if not f.check(r.returncode == 0, f"decode-sink through the coordinator Service: exit "
                   f"{r.returncode}:\n{r.stdout[-2000:]}{r.stderr[-2000:]}"):
        return
    try:
        out = json.loads(r.stdout)
    except json.JSONDecodeError:
        f.check(False, f"decode-sink --json printed no JSON:\n{r.stdout[-2000:]}")
        return
    stream = out.get("stream", {})
    f.check(str(out.get("state")).lower() == "ready" and out.get("tokens") == 1024 and
            stream.get("blocks", 0) > 0 and
            stream.get("checksums_verified") == stream.get("blocks") and
            stream.get("checksum_failures") == 0,
            f"decode-sink: cache {out.get('state')}, {out.get('tokens')} tokens, stream {stream}")
    print(f"prefill through the Service: {out.get('tokens')} tokens, {stream.get('blocks')} "
          f"blocks streamed and verified, cache {out.get('state')}")


def check_memory(f, pod, container, proc):
    """The process's peak resident memory so far stays under the container's memory limit (the
    pod would be OOM-killed otherwise); requests are not checked, they are scheduling hints."""
    limit = container.get("resources", {}).get("limits", {}).get("memory")
    if limit is None:
        return
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            hwm = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return  # not Linux, or already gone: nothing to compare
    f.check(hwm < quantity_bytes(limit), f"{pod.name}/{container['name']}: peak RSS "
            f"{hwm >> 20} MiB is over its memory limit {limit}")
    print(f"{pod.name}/{container['name']}: peak RSS {hwm >> 20} MiB (limit {limit})")


def quantity_bytes(q):
    """A Kubernetes memory quantity (512Mi, 2Gi, 1G, 1000) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6,
             "G": 10**9, "T": 10**12}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?|k)?", str(q))
    if not m:
        raise AssertionError(f"memory quantity {q!r} not understood")
    return int(float(m.group(1)) * units.get(m.group(2) or "", 1))


def case_probes(overlay):
    t_case = time.monotonic()
    need_tools("kubectl")
    probe_tool = os.environ.get("SPARSEFILL_K8S_HEALTH_PROBE", "")
    bin_dir = os.environ.get("SPARSEFILL_BIN_DIR", "")
    if not os.access(probe_tool, os.X_OK):
        raise Skip(f"k8s-health-probe is not built ({probe_tool!r}; ninja k8s_health_probe)")
    for b in ("sparsefill-coordinator", "sparsefill-worker", "make-model", "decode-sink"):
        if not os.access(os.path.join(bin_dir, b), os.X_OK):
            raise Skip(f"{bin_dir}/{b} is not built")
    _, objs = render(overlay)
    cms = configmaps(objs)
    coord = one(objs, "Deployment", "sparsefill-coordinator")
    sts = one(objs, "StatefulSet", "sparsefill-worker")
    svc = sts["spec"]["serviceName"]
    ns = sts["metadata"].get("namespace", "default")

    # Every pod gets its own loopback address, as it has its own network namespace in a cluster:
    # the workers' shared port then binds once per pod. One /24 per overlay and process, so that
    # the overlays' tests can run at the same time.
    net = f"127.{100 + os.getpid() % 100}.{OVERLAYS.index(overlay) + 1}"
    pods = [Pod(f"{sts['metadata']['name']}-{i}", f"{net}.{10 + i}", pod_spec(sts), "worker")
            for i in range(sts["spec"]["replicas"])]
    pods.append(Pod("sparsefill-coordinator-0", f"{net}.1", pod_spec(coord), "coordinator"))
    hosts = {}
    for p in pods:
        if p.role == "worker":
            for suffix in ("", f".{ns}", f".{ns}.svc", f".{ns}.svc.cluster.local"):
                hosts[f"{p.name}.{svc}{suffix}"] = p.ip
    for suffix in ("", f".{ns}", f".{ns}.svc", f".{ns}.svc.cluster.local"):
        hosts[f"sparsefill-coordinator{suffix}"] = pods[-1].ip

    tmp = tempfile.mkdtemp(prefix=f"sf-k8s-{overlay}-")
    _, _, secret_data = make_secrets(ns)
    shared_claims = {}  # claims shared by pods (ReadOnlyMany models): one directory
    f = Failures()
    try:
        for p in pods:
            mounts = {}
            for v in p.spec.get("volumes", []):
                d = os.path.join(tmp, p.name, v["name"])
                if "secret" in v:
                    name = v["secret"]["secretName"]
                    os.makedirs(d)
                    for k, val in secret_data[name].items():
                        with open(os.path.join(d, k), "w") as fh:
                            fh.write(val)
                        os.chmod(os.path.join(d, k), 0o440)
                elif "configMap" in v:
                    os.makedirs(d)
                    for k, val in cms[v["configMap"]["name"]].items():
                        with open(os.path.join(d, k), "w") as fh:
                            fh.write(val)
                elif "persistentVolumeClaim" in v:
                    claim = v["persistentVolumeClaim"]["claimName"]
                    d = shared_claims.setdefault(claim, os.path.join(tmp, "claims", claim))
                    os.makedirs(d, exist_ok=True)
                else:
                    os.makedirs(d)
                mounts[v["name"]] = d
            for t in (sts["spec"].get("volumeClaimTemplates", []) if p.role == "worker" else []):
                d = os.path.join(tmp, p.name, "claim-" + t["metadata"]["name"])
                os.makedirs(d)
                mounts[t["metadata"]["name"]] = d
            p.mounts = mounts
            p.localize = (lambda pod: lambda c, s: localize(pod, c, s))(p)

        def localize(p, container, s):
            # Mount paths -> this pod's directories; pod and Service names and 0.0.0.0 -> the
            # pods' loopback addresses. Nothing else of the rendered strings changes.
            # One pass over all mount paths (longest first), so that a replaced path is not
            # replaced again by a shorter mount path such as /tmp.
            by_path = {m["mountPath"].rstrip("/"): p.mounts[m["name"]]
                       for m in container.get("volumeMounts", [])}
            if by_path:
                alt = "|".join(re.escape(mp) for mp in sorted(by_path, key=len, reverse=True))
                s = re.sub(rf"(^|=)({alt})(?=/|$)",
                           lambda mm: mm.group(1) + by_path[mm.group(2)], s)
            s = re.sub(r"\b0\.0\.0\.0(?=:\d+$)", p.ip, s)
            for h, ip in sorted(hosts.items(), key=lambda kv: -len(kv[0])):
                s = re.sub(rf"(^|=|//){re.escape(h)}(?=:\d+$)", lambda mm: mm.group(1) + ip, s)
            return s

        def start(p, c):
            env = container_env(c, cms)
            argv = [expand_k8s(a, env) for a in c["command"] + c.get("args", [])]
            argv = [localize(p, c, a) for a in argv]
            binary = os.path.join(bin_dir, os.path.basename(argv[0]))
            penv = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": p.name}
            penv.update({k: localize(p, c, v) for k, v in env.items()})
            # Exactly the container's environment (plus PATH and HOSTNAME, as in the pod). TMPDIR
            # is unset there too: a library writing to /tmp gets the pod's /tmp volume there and
            # the host's /tmp here.
            log = os.path.join(tmp, f"{p.name}.{c['name']}.log")
            with open(log, "w") as fh:
                fh.write(" ".join([binary] + argv[1:]) + "\n")
            proc = subprocess.Popen([binary] + argv[1:], env=penv, stdin=subprocess.DEVNULL,
                                    stdout=open(log, "a"), stderr=subprocess.STDOUT,
                                    start_new_session=True)
            return proc, log

        # gpu: the operator fills the models claim; here, a tiny checkpoint where the config
        # says the model is (the shape differs, the path, flags and ports do not).
        for p in pods:
            if p.role != "worker" or p.spec.get("initContainers"):
                continue
            c = p.spec["containers"][0]
            for spec in flag_values([expand_k8s(a, container_env(c, cms)) for a in c["args"]],
                                    "--model"):
                d = localize(p, c, spec.split("=", 1)[1])
                if not os.path.exists(os.path.join(d, "config.json")):
                    r = subprocess.run([os.path.join(bin_dir, "make-model"), "--shape", "tiny",
                                        "--out", d, "--tokenizer", "none", "--threads", "1"],
                                       capture_output=True, text=True, timeout=120)
                    if r.returncode != 0:
                        raise AssertionError(f"make-model for the models claim: {r.stderr}")

        # Init containers run to completion, in order, before the pod's containers start; the
        # pods do this at the same time.
        depth = max(len(p.spec.get("initContainers", [])) for p in pods)
        for i in range(depth):
            running = [(p, c) + start(p, c) for p in pods
                       for c in p.spec.get("initContainers", [])[i:i + 1]]
            for p, c, proc, log in running:
                rc = proc.wait(timeout=120)
                f.check(rc == 0, f"{p.name}: init container {c['name']} exited {rc}:\n"
                        f"{log_tail(log)}")
            if f.items:
                raise AssertionError("init container failed")
        # Before anything listens, every probe must fail: an answering probe then means the
        # process answered, not that the probe cannot fail.
        for p in pods:
            for c in p.spec["containers"]:
                for name in ("startupProbe", "readinessProbe", "livenessProbe"):
                    ok, detail = run_probe(p, c, c[name])
                    f.check(not ok, f"{p.name}/{c['name']}: {name} passes with nothing "
                            f"listening ({detail})")
        for p in pods:
            for c in p.spec["containers"]:
                proc, log = start(p, c)
                p.procs.append((c, proc, log))

        print(f"pods started at {time.monotonic() - t_case:.1f} s", flush=True)
        t0 = time.monotonic()
        for p in pods:
            for c, proc, log in p.procs:
                where = f"{p.name}/{c['name']}"
                sp = c["startupProbe"]
                window = sp.get("initialDelaySeconds", 0) + sp.get(
                    "periodSeconds", 10) * sp.get("failureThreshold", 3)
                # The kubelet's window, capped: the tiny model loads in seconds here.
                deadline = time.monotonic() + min(window, 60)
                ok, detail = False, ""
                while time.monotonic() < deadline:
                    if proc.poll() is not None:
                        detail = f"exited {proc.returncode}"
                        break
                    ok, detail = run_probe(p, c, sp)
                    if ok:
                        break
                    time.sleep(0.2)
                if not f.check(ok, f"{where}: startupProbe never succeeded ({detail}):\n"
                               f"{log_tail(log)}"):
                    continue
                for name in ("readinessProbe", "livenessProbe"):
                    ok, detail = run_probe(p, c, c[name])
                    f.check(ok, f"{where}: {name}: {detail}")
                print(f"{where}: startup, readiness and liveness probes answer ({detail}) "
                      f"at {time.monotonic() - t0:.1f} s")
        if f.items:
            raise AssertionError("probes failed")

        # What the monitors scrape: the container port named "metrics", path /metrics.
        for p in pods:
            c = p.spec["containers"][0]
            port = {x["name"]: x["containerPort"] for x in c["ports"]}["metrics"]
            status, body = http_get(f"http://{p.ip}:{port}/metrics", 5)
            f.check(status == 200 and "sparsefill_build_info" in body,
                    f"{p.name}: GET /metrics on the metrics port: {status}")
        # The coordinator reaches every worker with the rendered token and addresses: each
        # worker is healthy in its health gauge (refreshed every 5 s by default).
        coord_pod = pods[-1]
        cport = {x["name"]: x["containerPort"]
                 for x in coord_pod.spec["containers"][0]["ports"]}["metrics"]
        want = {f"{p.ip}:{p.spec['containers'][0]['ports'][0]['containerPort']}"
                for p in pods if p.role == "worker"}
        deadline = time.monotonic() + 30
        healthy = set()
        while time.monotonic() < deadline:
            _, body = http_get(f"http://{coord_pod.ip}:{cport}/metrics", 5)
            healthy = set(re.findall(
                r'^sparsefill_coordinator_worker_healthy\{worker="([^"]+)"\} 1$', body or "",
                re.M))
            if healthy >= want:
                break
            time.sleep(0.5)
        f.check(healthy >= want, f"coordinator sees workers {sorted(healthy)} healthy, "
                f"want {sorted(want)}:\n{log_tail(coord_pod.procs[0][2])}")
        print(f"coordinator: workers healthy: {sorted(healthy)} at "
              f"{time.monotonic() - t_case:.1f} s", flush=True)
        if healthy >= want:
            prefill_through_service(f, objs, pods, secret_data, bin_dir, tmp)
            print(f"prefill through the coordinator Service done at "
                  f"{time.monotonic() - t_case:.1f} s", flush=True)
        for p in pods:
            for c, proc, _ in p.procs:
                check_memory(f, p, c, proc)

        # SIGTERM (what the kubelet sends): NOT_SERVING, then a clean exit within the grace
        # period. The coordinator first, so that its health probes of the workers (2 s timeout)
        # do not hold up its exit, as when the Deployment is deleted before the StatefulSet;
        # then the workers together.
        for group in ([pods[-1]], pods[:-1]):
            t_stop = time.monotonic()
            for p in group:
                for _, proc, _ in p.procs:
                    proc.send_signal(signal.SIGTERM)
            for p in group:
                grace = p.spec.get("terminationGracePeriodSeconds", 30)
                for c, proc, log in p.procs:
                    try:
                        rc = proc.wait(timeout=max(0.1, t_stop + grace - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        rc = None
                    f.check(rc == 0,
                            f"{p.name}/{c['name']}: SIGTERM: exit {rc}:\n{log_tail(log)}")
                    print(f"{p.name}/{c['name']}: SIGTERM: exit {rc} after "
                          f"{time.monotonic() - t_stop:.1f} s", flush=True)
    except AssertionError as e:
        if not f.items:
            f.items.append(str(e))
    finally:
        for p in pods:
            for _, proc, _ in p.procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if not f.items:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs and volumes kept in {tmp}")
    for item in f.items:
        print("FAIL:", item)
    return 1 if f.items else 0
