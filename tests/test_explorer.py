"""The concept explorer page and ``/health`` of ``gears api``, on a real one-shard cluster
with FalkorDB, the NLP and QA pipelines and the demo QA model; the page is driven in a
real headless Chromium (Debian's ``chromium``, through Playwright's Python driver).

The browser test needs a ``chromium`` binary (``scripts/test.sh`` installs Debian's package
when it runs as root) and the ``playwright`` package (``test`` extra); it skips, saying
which is missing, otherwise. Its screenshot is saved under the test's tmp folder and the
path printed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

pytest.importorskip("falkordb")
pytest.importorskip("symspellpy")
pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import ROOT, cluster_with_graph, serving, wait_for  # noqa: E402
from gears_pipelines import qa  # noqa: E402
from gears_pipelines.api import STATIC_DIR, create_app  # noqa: E402
from gears_pipelines.corpus import write_corpus  # noqa: E402
from gears_pipelines.deploy import deploy_nlp, deploy_qa, load_qa_model, pipeline_status  # noqa: E402
from gears_pipelines.graph import GraphWriter  # noqa: E402
from gears_pipelines.ingest import ingest  # noqa: E402
from gears_pipelines.nlp.concepts import default_dictionary  # noqa: E402
from gears_pipelines.readiness import overall  # noqa: E402

ARTICLES = 6
#: Browsers to try, in order (``GEARS_CHROMIUM`` first when set).
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def explorer_cluster(tmp_path_factory):
    """1 shard + FalkorDB with the NLP and QA pipelines drained over a generated corpus
    and the demo QA model stored."""
    folder = tmp_path_factory.mktemp("explorer")
    with cluster_with_graph(folder, 11901, 1) as (state, graph):
        client = state.client()
        cluster = state.cluster_client(socket_timeout=120)
        deploy_nlp(client, graph)
        deploy_qa(client)
        ingest(cluster, write_corpus(folder / "corpus", ARTICLES))

        def processed() -> dict | None:
            s = pipeline_status(cluster, graph)
            done = s["articles"] == ARTICLES and s["sentences"] > 0 and s["edges_pending"] == 0
            done = done and s["tokenized_sentences"] == s["sentences"] == s["matched_sentences"]
            return s if done and s["executions_pending"] == 0 else None

        status = wait_for(processed, timeout=180, interval=0.2, what="corpus processed and tokenised")
        load_qa_model(cluster, batchsize=16)
        yield {"state": state, "cluster": cluster, "graph": graph, "status": status}
        cluster.close()
        client.close()


@pytest.fixture(scope="module")
def api(explorer_cluster):
    """``gears api``'s app served on a free port; yields its base URL."""
    app = create_app(explorer_cluster["cluster"], GraphWriter(*explorer_cluster["graph"]), default_dictionary())
    with serving(app, explorer_cluster["state"].ports[0] + 90) as base:
        yield base


def two_linked_terms(explorer_cluster) -> str:
    """A search text naming both ends of the graph's strongest link."""
    term = {cid: t for t, cid, _ in default_dictionary().entries()}
    graph = GraphWriter(*explorer_cluster["graph"])
    try:
        links = graph.neighbourhood(sorted(term), limit=1)["links"]
    finally:
        graph.close()
    return f"{term[links[0]['source']]} and {term[links[0]['target']]}"


def test_health_reports_cluster_graph_and_model(explorer_cluster, api):
    reply = httpx.get(f"{api}/health", timeout=30)
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "ok"
    assert body["cluster"] == {"ready": True, "detail": "1 shard, every worker alive", "shards": 1, "workers_alive": 1}
    status = explorer_cluster["status"]
    assert body["graph"]["ready"] is True
    assert (body["graph"]["nodes"], body["graph"]["edges"]) == (status["graph_nodes"], status["graph_edges"])
    assert body["model"]["ready"] is True and body["model"]["shards_with_model"] == 1
    assert body["model"]["detail"] == "on every shard (1)"
    assert body["model"]["description"]["notice"] == qa.DEMO_NOTICE


def test_health_is_503_naming_an_unreachable_graph(explorer_cluster):
    closed = explorer_cluster["state"].ports[0] + 97  # nothing listens there
    app = create_app(explorer_cluster["cluster"], GraphWriter("127.0.0.1", closed), default_dictionary())
    with serving(app, explorer_cluster["state"].ports[0] + 91) as base:
        reply = httpx.get(f"{base}/health", timeout=30)
    assert reply.status_code == 503
    body = reply.json()
    assert body["status"] == "unavailable"
    assert body["graph"]["ready"] is False and f"127.0.0.1:{closed}" in body["graph"]["detail"]
    assert body["cluster"]["ready"] is True


def test_overall_status_of_the_parts():
    ready, down = {"ready": True}, {"ready": False}
    assert overall({"cluster": ready, "graph": ready, "model": ready}) == "ok"
    assert overall({"cluster": ready, "graph": ready, "model": down}) == "degraded"
    assert overall({"cluster": down, "graph": ready, "model": ready}) == "unavailable"
    assert overall({"cluster": ready, "graph": down, "model": ready}) == "unavailable"


def test_page_and_its_vendored_library_are_served_locally(api):
    page = httpx.get(f"{api}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', page.text)
    assert sources == ["static/explorer.css", "static/force-graph.min.js", "static/explorer.js"]
    for source in sources:
        served = httpx.get(f"{api}/{source}")
        assert served.status_code == 200 and served.content == (STATIC_DIR / Path(source).name).read_bytes()
    assert "MIT License" in (STATIC_DIR / "force-graph.LICENSE").read_text()
    script = (STATIC_DIR / "explorer.js").read_text()
    assert "http://" not in script and "https://" not in script  # nothing fetched from elsewhere


def test_the_wheel_ships_the_page_and_the_library_with_its_licence(tmp_path):
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    source = tmp_path / "source"  # a copy: a build writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "tests", "docs"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("gears_fabric-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"gears_pipelines/static/{name}" for name in os.listdir(STATIC_DIR)}
    assert expected >= {f"gears_pipelines/static/{name}" for name in ("force-graph.min.js", "force-graph.LICENSE", "explorer.html")}
    assert expected <= names
    # the repository's cluster/, readers/ and pipelines/ install under the project's own names
    assert {"gears_cluster/launcher.py", "gears_readers/catalog.py", "gears_pipelines/api.py", "gears/py.typed"} <= names
    assert not {n.split("/")[0] for n in names} & {"cluster", "readers", "pipelines", "tests", "scripts"}


def chromium_binary() -> str:
    """The system Chromium, or skip saying how to get one."""
    candidates = [os.environ["GEARS_CHROMIUM"]] if os.environ.get("GEARS_CHROMIUM") else []
    for name in [*candidates, *CHROMIUM_NAMES]:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium binary on PATH (scripts/test.sh installs Debian's `chromium` when run as root; or set GEARS_CHROMIUM)")


def test_explorer_in_headless_chromium(explorer_cluster, api, tmp_path, capsys):
    binary = chromium_binary()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    text = two_linked_terms(explorer_cluster)
    expected = httpx.post(f"{api}/search", json={"search": text, "limit": 300}).json()
    question = f"what links {text}?"
    answers = httpx.post(f"{api}/qasearch", json={"search": question}, timeout=120).json()
    screenshot = tmp_path / "explorer.png"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{api}/")
            page.wait_for_function("document.getElementById('health').textContent === 'ok'", timeout=30_000)

            page.fill("#search", text)
            page.click("#search-button")
            page.wait_for_function("document.getElementById('graph').dataset.settled === '1'", timeout=60_000)
            graph = page.locator("#graph")
            assert int(graph.get_attribute("data-nodes")) == len(expected["nodes"]) > 0
            assert int(graph.get_attribute("data-links")) == len(expected["links"]) > 0
            drawn = page.evaluate("explorer.state.graph.graphData().nodes.map(n => n.id).sort()")
            assert drawn == sorted(n["id"] for n in expected["nodes"])

            # A real click on a link (the one whose middle lies farthest from every node)
            # shows its supporting sentences.
            source, target, x, y = page.evaluate(
                """() => {
                    const g = explorer.state.graph;
                    const box = document.getElementById('graph').getBoundingClientRect();
                    const screen = (x, y) => g.graph2ScreenCoords(x, y);
                    const nodes = g.graphData().nodes.map(n => screen(n.x, n.y));
                    let best = null;
                    for (const link of g.graphData().links) {
                        const at = screen((link.source.x + link.target.x) / 2, (link.source.y + link.target.y) / 2);
                        const clear = Math.min(...nodes.map(n => Math.hypot(n.x - at.x, n.y - at.y)));
                        if (!best || clear > best[0]) best = [clear, link.source.id, link.target.id, box.left + at.x, box.top + at.y];
                    }
                    return best.slice(1);
                }"""
            )
            page.mouse.move(x, y)
            page.wait_for_selector("#graph canvas.clickable", timeout=30_000)  # force-graph found a link under the pointer
            page.mouse.click(x, y)
            page.wait_for_selector(f"#edge-sentences[data-edge='{source}-{target}'] li", timeout=30_000)
            edge = httpx.get(f"{api}/edge/{source}/{target}", params={"limit": 10}).json()
            shown = page.locator("#edge-sentences li > div:first-child").all_text_contents()
            assert shown == [r["sentence"] for r in edge["results"]]

            page.fill("#question", question)
            page.click("#question-button")
            page.wait_for_selector("#answers[data-count]", timeout=120_000)
            assert page.locator("#answers li").count() == len(answers["results"]) > 0
            assert page.locator("#model-notice").text_content() == qa.DEMO_NOTICE
            page.screenshot(path=str(screenshot))
            assert errors == []
        finally:
            browser.close()
    assert screenshot.stat().st_size > 0
    with capsys.disabled():
        print(f"\nexplorer screenshot: {screenshot}")
