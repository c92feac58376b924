"""The cluster recipes under deploy/, checked as far as a machine without Slurm or Kubernetes allows.

Slurm: the batch script is valid bash, and run the way sbatch runs it (SLURM_* variables set here) it
starts a real worker with the allocation's GPUs on its command line. `srun` is replaced by a shim
that drops srun's own options and execs the rest (what srun does for a one-task step), recording
its arguments. Kubernetes: the manifests parse and are wired together (selectors, ports, secret keys,
GPU limits), and each container's command starts as a plain process with the environment the
manifest gives it, as tests/test_compose.py does for docker-compose.yml.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness import REPO, base_env, free_port, wait_for

SBATCH = REPO / "deploy" / "slurm" / "ganscope-worker.sbatch"
K8S = REPO / "deploy" / "k8s"
TINY = {"name": "cluster", "dataset": "ring8", "steps": 20, "batch_size": 16, "toy_hidden": 8, "toy_layers": 1,
        "checkpoint_every": 10, "sample_every": 10, "toy_every": 10, "flush_every": 5}


# --- processes ------------------------------------------------------------------------------------
@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for p in reversed(started):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def spawn(procs: list[subprocess.Popen], cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                         start_new_session=True)
    procs.append(p)
    return p


def tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-4000:]
    except OSError:
        return ""


def start_plain_server(procs: list[subprocess.Popen], home: Path, log: Path, **env: str) -> str:
    port = free_port()
    cmd = [sys.executable, "-m", "ganscope", "serve", "--port", str(port)]
    p = spawn(procs, cmd, base_env(home, **env), log)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: p.poll() is None and httpx.get(url + "/healthz", timeout=1).status_code == 200, timeout=60,
             what="the server:\n" + tail(log))
    return url


def succeeds(url: str, token: str | None, log: Path) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.post(url + "/api/jobs", json=TINY, headers=headers)
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    wait_for(lambda: httpx.get(f"{url}/api/runs/{run_id}").json()["status"] == "succeeded", timeout=180,
             what="the job to succeed:\n" + tail(log))
    return run_id


# --- Slurm ------------------------------------------------------------------------------------------
def sbatch_directives() -> dict[str, str]:
    out = {}
    for line in SBATCH.read_text().splitlines():
        m = re.match(r"^#SBATCH\s+--([\w-]+)(?:[= ](\S+))?", line)
        if m:
            out[m.group(1)] = m.group(2) or ""
    return out


@pytest.fixture
def slurm_env(tmp_path: Path) -> Any:
    """An environment like sbatch's: shims for srun and the ganscope command on PATH, SLURM_* set by the caller."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$SRUN_ARGS"\n'
                    'while [[ $# -gt 0 && "$1" == -* ]]; do shift; done\n'
                    '[[ -n "${SRUN_DRY_RUN:-}" ]] && exit 0\nexec "$@"\n')
    ganscope = bin_dir / "ganscope"
    ganscope.write_text(f'#!/usr/bin/env bash\nexec {sys.executable} -m ganscope "$@"\n')
    for f in (srun, ganscope):
        f.chmod(0o755)

    def make(home: Path, **slurm: str) -> dict[str, str]:
        env = base_env(home, SRUN_ARGS=str(tmp_path / "srun-args.txt"), HOME=str(home), **slurm)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
        for k in [k for k in env if k.startswith("SLURM_") and k not in slurm] + ["CUDA_VISIBLE_DEVICES"]:
            if k not in slurm:
                env.pop(k, None)
        return env

    make.args_file = tmp_path / "srun-args.txt"  # type: ignore[attr-defined]
    return make


def srun_args(slurm_env: Any) -> list[str]:
    return slurm_env.args_file.read_text().splitlines()


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_slurm_script_is_valid_and_asks_for_what_a_worker_needs() -> None:
    assert subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True).returncode == 0
    d = sbatch_directives()
    assert d["nodes"] == "1" and d["ntasks"] == "1", "one worker per allocation"
    assert d["gres"].startswith("gpu:") or "gpus" in d
    assert re.fullmatch(r"TERM@\d+", d["signal"]) and int(d["signal"].split("@")[1]) >= 60, \
        "SIGTERM to the worker step well before the time limit, so it can hand its job back"
    assert os.access(SBATCH, os.X_OK)


def test_slurm_gpus_reach_the_worker_command(tmp_path: Path, slurm_env: Any) -> None:
    home = tmp_path / "h"
    home.mkdir()
    cases = [  # (environment sbatch would set, expected --gpus, --device, worker id)
        ({"SLURM_JOB_ID": "11", "SLURM_GPUS_ON_NODE": "4", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, "4", "cuda:0",
         "slurm-11"),
        ({"SLURM_JOB_ID": "12", "CUDA_VISIBLE_DEVICES": "2,5"}, "2", "cuda:0", "slurm-12"),
        ({"SLURM_JOB_ID": "13"}, "0", "cpu", "slurm-13"),
        ({"SLURM_JOB_ID": "14", "SLURM_ARRAY_JOB_ID": "9", "SLURM_ARRAY_TASK_ID": "3", "SLURM_GPUS_ON_NODE": "1"},
         "1", "cuda:0", "slurm-9_3"),
    ]
    for slurm, gpus, device, wid in cases:
        env = slurm_env(home, GANSCOPE_SERVER="http://head-node:8000", SRUN_DRY_RUN="1", **slurm)
        out = subprocess.run(["bash", str(SBATCH), "--max-jobs", "3"], env=env, capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0, out.stderr
        args = srun_args(slurm_env)
        assert args[:2] == ["--ntasks=1", "--kill-on-bad-exit=1"]
        cmd = [a for a in args if not a.startswith("--ntasks") and not a.startswith("--kill")]
        assert cmd[:2] == ["ganscope", "worker"]
        assert (flag(cmd, "--gpus"), flag(cmd, "--device"), flag(cmd, "--worker-id")) == (gpus, device, wid), slurm
        assert flag(cmd, "--server") == "http://head-node:8000"
        assert flag(cmd, "--workdir") == f"{home}/.ganscope/slurm/{wid.removeprefix('slurm-')}"
        assert cmd[-2:] == ["--max-jobs", "3"], "arguments after the script reach the worker"
    env = slurm_env(home, SLURM_JOB_ID="15", SRUN_DRY_RUN="1")
    out = subprocess.run(["bash", str(SBATCH)], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "GANSCOPE_SERVER" in out.stderr


def test_slurm_script_runs_a_real_worker(tmp_path: Path, slurm_env: Any, procs: list[subprocess.Popen]) -> None:
    home = tmp_path / "h"
    home.mkdir()
    url = start_plain_server(procs, home / "server", tmp_path / "server.log", GANSCOPE_TOKEN="slurm-token")
    env = slurm_env(home, SLURM_JOB_ID="4242", SLURM_JOB_NAME="ganscope-worker", SLURM_NNODES="1",
                    GANSCOPE_SERVER=url, GANSCOPE_TOKEN="slurm-token")
    log = tmp_path / "worker.log"
    worker = spawn(procs, ["bash", str(SBATCH), "--poll", "0.2", "--heartbeat", "0.5"], env, log)
    wait_for(lambda: [w["id"] for w in httpx.get(url + "/api/workers").json()["workers"]] == ["slurm-4242"],
             timeout=120, what="the Slurm worker to register:\n" + tail(log))
    listed = httpx.get(url + "/api/workers").json()["workers"][0]
    assert listed["gpus"] == 0 and listed["devices"] == ["cpu"]
    succeeds(url, "slurm-token", log)
    assert (home / ".ganscope" / "slurm" / "4242").is_dir()
    # The time limit's warning (--signal=TERM@120) reaches the worker itself: it exits cleanly.
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0, tail(log)
    assert "SIGTERM" in tail(log) and "exiting after 1 job(s)" in tail(log)


def test_slurm_gpu_allocation_reaches_a_real_worker(tmp_path: Path, slurm_env: Any,
                                                    procs: list[subprocess.Popen]) -> None:
    """On this CPU machine the worker of a 2-GPU allocation gets cuda:0 and --gpus 2, and refuses in one line."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA devices")
    home = tmp_path / "h"
    home.mkdir()
    env = slurm_env(home, SLURM_JOB_ID="77", SLURM_GPUS_ON_NODE="2", CUDA_VISIBLE_DEVICES="0,1",
                    GANSCOPE_SERVER="http://127.0.0.1:9")
    out = subprocess.run(["bash", str(SBATCH)], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "'cuda:0' asked for, but no CUDA device" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "2 GPU(s), device cuda:0" in out.stdout
    args = srun_args(slurm_env)
    assert (flag(args, "--device"), flag(args, "--gpus")) == ("cuda:0", "2")


# --- Kubernetes ---------------------------------------------------------------------------------------
def k8s_docs() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def example_secret() -> dict[str, str]:
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "ganscope"
    return {k: str(v) for k, v in secret["stringData"].items()}


def by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    return c


def env_refs(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def test_k8s_manifests_are_wired_together() -> None:
    docs = k8s_docs()
    k = by_kind(docs)
    assert set(k) == {("PersistentVolumeClaim", "ganscope-server-data"), ("Deployment", "ganscope-server"),
                      ("Service", "ganscope-server"), ("Deployment", "ganscope-worker"),
                      ("StatefulSet", "ganscope-postgres"), ("Service", "ganscope-postgres")}
    secret = example_secret()
    for d in docs:  # every secret key a container reads exists in the example secret (or is optional)
        if d["kind"] in ("Deployment", "StatefulSet"):
            spec = d["spec"]
            assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
            for e in container(d).get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "ganscope" and ref["key"] in secret, e
    for svc, target in (("ganscope-server", ("Deployment", "ganscope-server")),
                        ("ganscope-postgres", ("StatefulSet", "ganscope-postgres"))):
        s = k[("Service", svc)]["spec"]
        assert s["selector"].items() <= k[target]["spec"]["template"]["metadata"]["labels"].items()
        ports = {p["name"]: p["containerPort"] for p in container(k[target])["ports"]}
        assert all(p["targetPort"] in ports for p in s["ports"])

    server = k[("Deployment", "ganscope-server")]
    sc = container(server)
    assert server["spec"]["replicas"] == 1 and server["spec"]["strategy"]["type"] == "Recreate"
    assert sc["command"][:2] == ["ganscope", "serve"]
    assert sc["readinessProbe"]["httpGet"]["path"] == "/healthz" == sc["livenessProbe"]["httpGet"]["path"]
    env = env_refs(sc)
    assert env["GANSCOPE_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "token"
    assert env["GANSCOPE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["optional"] is True  # absent: SQLite
    claim = server["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in k
    mount = sc["volumeMounts"][0]
    assert mount["mountPath"] == env["GANSCOPE_HOME"]["value"]

    worker = k[("Deployment", "ganscope-worker")]
    wc = container(worker)
    assert int(wc["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
    cmd = wc["command"]
    assert cmd[:2] == ["ganscope", "worker"] and flag(cmd, "--gpus") == "all"
    svc_port = k[("Service", "ganscope-server")]["spec"]["ports"][0]["port"]
    assert flag(cmd, "--server") == f"http://ganscope-server:{svc_port}"
    assert flag(cmd, "--worker-id") == "$(POD_NAME)"
    assert env_refs(wc)["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env_refs(wc)["GANSCOPE_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "token"

    pg = k[("StatefulSet", "ganscope-postgres")]
    assert pg["spec"]["serviceName"] == "ganscope-postgres" and pg["spec"]["volumeClaimTemplates"]
    pg_env = env_refs(container(pg))
    url = secret["database-url"]
    m = re.fullmatch(r"postgresql\+psycopg://(\w+):([^@]+)@([\w-]+):(\d+)/(\w+)", url)
    assert m, url
    assert m.group(1) == pg_env["POSTGRES_USER"]["value"] and m.group(5) == pg_env["POSTGRES_DB"]["value"]
    assert m.group(2) == secret["postgres-password"] and m.group(3) == "ganscope-postgres"
    assert int(m.group(4)) == k[("Service", "ganscope-postgres")]["spec"]["ports"][0]["port"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_k8s_kustomization_renders() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert set(by_kind(rendered)) == set(by_kind(k8s_docs()))
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ganscope" for d in rendered)


class PodMapper:
    """Pod-world names to this machine: /data under a temp folder, the Service's name and port to 127.0.0.1."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port

    def env(self, name: str, c: dict[str, Any], secret: dict[str, str], pod: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for e in c.get("env", []):
            if "value" in e:
                out[e["name"]] = str(e["value"])
                continue
            ref = e["valueFrom"]
            if "secretKeyRef" in ref:
                key = ref["secretKeyRef"]["key"]
                if key in secret:
                    out[e["name"]] = secret[key]
                else:
                    assert ref["secretKeyRef"].get("optional"), f"{e['name']}: secret key {key} missing"
            elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                out[e["name"]] = pod
        for key, value in out.items():
            if key == "GANSCOPE_HOME":
                out[key] = str(self.root / name / value.strip("/"))
                Path(out[key]).mkdir(parents=True, exist_ok=True)
        return out

    def command(self, c: dict[str, Any], env: dict[str, str]) -> list[str]:
        cmd = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in c["command"] + c.get("args", [])]
        cmd = [a.replace("http://ganscope-server:8000", f"http://127.0.0.1:{self.port}") for a in cmd]
        cmd = ["127.0.0.1" if a == "0.0.0.0" else a for a in cmd]
        for i, a in enumerate(cmd[:-1]):
            if a == "--port":
                cmd[i + 1] = str(self.port)
        assert cmd[0] == "ganscope"
        return [sys.executable, "-m", "ganscope", *cmd[1:]]


@pytest.fixture(params=["sqlite", "postgres"])
def k8s_database(request) -> str | None:
    return None if request.param == "sqlite" else request.getfixturevalue("pg_url")


def test_k8s_containers_start_and_work_together(tmp_path: Path, procs: list[subprocess.Popen],
                                                k8s_database: str | None) -> None:
    k = by_kind(k8s_docs())
    secret = example_secret()
    if k8s_database:
        secret["database-url"] = k8s_database  # the cluster's PostgreSQL is this machine's here
    else:
        del secret["database-url"]  # the optional key absent: SQLite on the server's volume
    port = free_port()
    mapper = PodMapper(tmp_path / "volumes", port)
    url = f"http://127.0.0.1:{port}"

    sc = container(k[("Deployment", "ganscope-server")])
    server_env = mapper.env("server", sc, secret, "ganscope-server-7d9f-x2x4q")
    server_log = tmp_path / "server.log"
    server = spawn(procs, mapper.command(sc, server_env), base_env(Path(server_env["GANSCOPE_HOME"]), **server_env),
                   server_log)
    wait_for(lambda: server.poll() is None and httpx.get(url + "/healthz", timeout=1).status_code == 200,
             timeout=60, what="the server container's command:\n" + tail(server_log))
    assert httpx.post(url + "/api/jobs", json=TINY).status_code == 401, "the token came from the secret"
    sqlite_file = tmp_path / "volumes" / "server" / "data" / "ganscope.db"
    assert sqlite_file.exists() is (k8s_database is None)

    wc = container(k[("Deployment", "ganscope-worker")])
    pod = "ganscope-worker-5c8b7d9f4-qz7lm"
    worker_env = mapper.env("worker", wc, secret, pod)
    worker_log = tmp_path / "worker.log"
    worker = spawn(procs, mapper.command(wc, worker_env) + ["--poll", "0.2"],
                   base_env(Path(worker_env["GANSCOPE_HOME"]), **worker_env), worker_log)
    wait_for(lambda: [w["id"] for w in httpx.get(url + "/api/workers").json()["workers"]] == [pod], timeout=120,
             what="the worker container to register under its pod name:\n" + tail(worker_log))
    run_id = succeeds(url, secret["token"], worker_log)
    assert worker.poll() is None
    if k8s_database:
        import psycopg

        with psycopg.connect(k8s_database.replace("postgresql+psycopg://", "postgresql://")) as conn:
            assert [r[0] for r in conn.execute("SELECT id FROM runs")] == [run_id]
    # A rollout or a drained node sends SIGTERM: the worker finishes cleanly within the grace period.
    worker.send_signal(signal.SIGTERM)
    grace = k[("Deployment", "ganscope-worker")]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert worker.wait(grace) == 0, tail(worker_log)
