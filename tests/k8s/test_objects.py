"""The kubernetes runtime's pure parts: object names, manifests, drift,
pod-to-replica mapping, exec status and telemetry parsing (no cluster)."""

from __future__ import annotations

import re

from ecolink.runtime.base import ClusterSpec, ExecRequest
from ecolink.runtime.kubernetes import objects as ko
from ecolink.runtime.kubernetes.stream import LOGIN_SHELL, exec_path, exit_code_from_status
from ecolink.runtime.kubernetes.telemetry import parse_dcgm, parse_nvidia_smi

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def spec(**kw) -> ClusterSpec:
    base = dict(
        cluster_id="c1",
        account_id="a1",
        name="n",
        region="eu-west",
        gpu_type="H100",
        gpu_count=4,
        replicas=3,
        image="img:1",
    )
    base.update(kw)
    return ClusterSpec(**base)


def test_names_are_valid_and_distinct():
    ids = ["c1", "C1", "cl_ABC.def", "x" * 80, "x" * 81, "-", "0abc", "a--b"]
    names = [ko.object_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    for n in names:
        assert DNS1035.match(n) and len(n) <= 47, n
    assert ko.object_name("c1") == "eco-c1"
    for i in ids:
        v = ko.label_value(i)
        assert LABEL.match(v) and len(v) <= 63, v
    assert ko.label_value("c1") == "c1"


def test_deployment_manifest():
    s = spec(
        startup_command="serve --port 9000",
        endpoint_port=9000,
        shared_filesystems=("weights",),
        node_selector=(
            ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3"),
            ("topology.kubernetes.io/region", "eu-west"),
        ),
    )
    d = ko.deployment(s)
    assert d["metadata"]["labels"][ko.CLUSTER_LABEL] == "c1"
    assert d["metadata"]["labels"][ko.ACCOUNT_LABEL] == "a1"
    assert d["spec"]["replicas"] == 3
    pod = d["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["sh", "-c", "serve --port 9000"]
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    assert c["readinessProbe"]["tcpSocket"]["port"] == 9000
    assert c["volumeMounts"] == [
        {"name": ko.shared_volume_name("weights"), "mountPath": "/shared/weights"}
    ]
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "weights"}
    assert pod["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "topology.kubernetes.io/region": "eu-west",
    }
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    # No command: the image's entrypoint runs; no endpoint: no probe, no port.
    plain = ko.deployment(spec())["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in plain and "readinessProbe" not in plain and "ports" not in plain


def test_pods_get_the_termination_grace_period():
    pod = ko.deployment(spec(), termination_grace_s=45)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 45
    # Whole seconds, rounded up: a pod never gets less than was configured.
    assert (
        ko.pod_template(spec(), termination_grace_s=2.5)["spec"]["terminationGracePeriodSeconds"]
        == 3
    )
    assert (
        ko.pod_template(spec(), termination_grace_s=0)["spec"]["terminationGracePeriodSeconds"] == 0
    )
    assert "terminationGracePeriodSeconds" not in ko.pod_template(spec())["spec"]


def test_runtime_renders_pods_with_the_configured_grace():
    from kubernetes import client as k8s_client

    from ecolink.runtime.kubernetes import KubernetesRuntime
    from ecolink.runtime.kubernetes.client import KubeTarget

    cfg = k8s_client.Configuration()
    cfg.host = "https://127.0.0.1:1"
    target = KubeTarget(
        api_client=k8s_client.ApiClient(cfg),
        configuration=cfg,
        namespace="ns",
        context=None,
        source="test",
    )
    runtime = KubernetesRuntime(target, termination_grace_s=12)
    pod = runtime.applier.deployment(spec())["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 12


def test_serve_passes_the_grace_to_the_kubernetes_runtime(monkeypatch, tmp_path):
    import ecolink.cli as ecli
    from ecolink.runtime import kubernetes as kube
    from ecolink.runtime.base import RuntimeUnavailable

    seen: dict[str, object] = {}

    def fake(namespace, context, clock=None, termination_grace_s=None):
        seen["grace"] = termination_grace_s
        raise RuntimeUnavailable("stop here")

    monkeypatch.setattr(kube, "create_kubernetes_runtime", fake)
    rc = ecli.main(
        [
            "serve",
            "--state-dir",
            str(tmp_path),
            "--runtime",
            "kubernetes",
            "--termination-grace-seconds",
            "17",
        ]
    )
    assert rc != 0
    assert seen["grace"] == 17.0


def test_service_is_owned_and_headless():
    owner = {"metadata": {"name": "eco-c1", "uid": "u-1"}}
    svc = ko.service(spec(endpoint_port=8000), owner)
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"][0]["port"] == 8000
    ref = svc["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["uid"], ref["blockOwnerDeletion"]) == ("Deployment", "u-1", True)
    assert ko.service(spec(), owner)["spec"]["ports"] == []


def test_drift_ignores_server_defaults_and_sees_edits():
    desired = ko.deployment(spec(endpoint_port=80))
    live = ko.deployment(spec(endpoint_port=80))
    # What the API server adds.
    c = live["spec"]["template"]["spec"]["containers"][0]
    c["imagePullPolicy"] = "IfNotPresent"
    c["resources"]["requests"] = {"nvidia.com/gpu": "4"}
    c["readinessProbe"].update({"timeoutSeconds": 1, "successThreshold": 1})
    live["spec"]["template"]["spec"]["tolerations"].append(
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}
    )
    live["status"] = {"replicas": 3}
    assert ko.drift(desired, live) == []
    c["image"] = "other:2"
    live["spec"]["template"]["spec"]["nodeSelector"] = {"x": "y"}
    assert ko.drift(desired, live) == ["image", "nodeSelector"]


def test_spec_from_deployment_round_trip():
    s = spec(
        startup_command="run",
        endpoint_port=7000,
        shared_filesystems=("data",),
        node_selector=(("nvidia.com/gpu.product", "P"), ("topology.kubernetes.io/region", "r")),
    )
    back = ko.spec_from_deployment(ko.deployment(s))
    assert back is not None
    assert (
        back.cluster_id,
        back.account_id,
        back.gpu_count,
        back.replicas,
        back.image,
        back.startup_command,
        back.endpoint_port,
        back.shared_filesystems,
    ) == ("c1", "a1", 4, 3, "img:1", "run", 7000, ("data",))


def pod(**status) -> dict:
    return {
        "metadata": {"name": "p"},
        "spec": {"nodeName": status.pop("node", None)},
        "status": status,
    }


def test_replica_state_from_pods():
    pending = pod(
        phase="Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
            }
        ],
    )
    r = ko.replica_state(pending, 1)
    assert (r.phase, r.ready, r.index, r.node) == ("Pending", False, 1, None)
    assert "Insufficient nvidia.com/gpu" in r.reason
    running = pod(
        phase="Running",
        node="n1",
        conditions=[{"type": "Ready", "status": "True"}],
        containerStatuses=[{"restartCount": 2, "state": {"running": {}}}],
    )
    r = ko.replica_state(running, 0)
    assert (r.phase, r.ready, r.restarts, r.node, r.reason) == ("Running", True, 2, "n1", None)
    crash = pod(
        phase="Running",
        conditions=[{"type": "Ready", "status": "False"}],
        containerStatuses=[
            {
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
            }
        ],
    )
    assert ko.replica_state(crash, 0).reason == "CrashLoopBackOff: back-off"
    assert ko.replica_state(pod(phase="Weird"), 0).phase == "Unknown"


def test_exec_status_and_path():
    assert exit_code_from_status({"status": "Success"}).exit_code == 0
    assert (
        exit_code_from_status(
            {
                "status": "Failure",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "42"}]},
            }
        ).exit_code
        == 42
    )
    # KWOK's kubelet only says it in the message.
    assert (
        exit_code_from_status(
            {"status": "Failure", "message": "error executing command: exit status 3"}
        ).exit_code
        == 3
    )
    assert exit_code_from_status({"status": "Failure", "message": "boom"}).exit_code is None
    path = exec_path("ns", "pod-1", "main", ExecRequest(tty=True, stdin=True, env=(("A", "1"),)))
    assert path.startswith("/api/v1/namespaces/ns/pods/pod-1/exec?")
    assert "command=env&command=A%3D1&command=sh" in path
    assert "tty=true" in path and "stderr=false" in path and "stdin=true" in path
    assert LOGIN_SHELL[0] == "sh"


def test_parse_nvidia_smi():
    out = (
        "0, GPU-aaa, NVIDIA H100 80GB HBM3, 87, 40000, 81559, 61, 512.50, 700.00\n"
        "1, GPU-bbb, NVIDIA H100 80GB HBM3, [N/A], 0, 81559, 30, [Not Supported], 700\n"
        "garbage line\n"
    )
    a, b = parse_nvidia_smi(out)
    assert (a.index, a.uuid, a.utilization, a.memory_used_mib, a.power_w) == (
        0,
        "GPU-aaa",
        87.0,
        40000,
        512.5,
    )
    assert (b.utilization, b.power_w, b.temperature_c) == (0.0, 0.0, 30.0)


def test_parse_dcgm_maps_to_pods():
    text = (
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
        'DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-x",modelName="H100",namespace="ns",pod="p1"} 50\n'
        'DCGM_FI_DEV_FB_USED{gpu="1",UUID="GPU-x",namespace="ns",pod="p1"} 100\n'
        'DCGM_FI_DEV_FB_FREE{gpu="1",UUID="GPU-x",namespace="ns",pod="p1"} 900\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="2",UUID="GPU-y",modelName="H100"} 99\n'
    )
    got = parse_dcgm(text)
    assert list(got) == [("ns", "p1")]
    (g,) = got[("ns", "p1")]
    assert (g.index, g.uuid, g.utilization, g.memory_used_mib, g.memory_total_mib) == (
        1,
        "GPU-x",
        50.0,
        100,
        1000,
    )
