// The concept explorer of `gears api`: search (POST /search) drawn with force-graph,
// a link's supporting sentences (GET /edge/{source}/{target}) and BERT answers
// (POST /qasearch). Data is put into the page with textContent only, never as HTML.
"use strict";

const explorer = (() => {
  const $ = (id) => document.getElementById(id);
  const graphBox = $("graph");
  const state = { graph: null, settled: false };
  const MAX_ZOOM = 2.5; // a small graph is not blown up to fill the panel

  function setStatus(text, isError) {
    $("status").textContent = text;
    $("status").classList.toggle("error", Boolean(isError));
  }

  async function call(method, path, body) {
    const options = { method, headers: {} };
    if (body !== undefined) {
      options.headers["content-type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const reply = await fetch(path, options);
    const data = await reply.json().catch(() => ({}));
    if (!reply.ok) {
      const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || data);
      throw new Error(`${method} ${path}: ${reply.status} ${detail}`);
    }
    return data;
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function sourceLine(title, year) {
    return element("div", [title || "(untitled)", year ? `(${year})` : ""].join(" ").trim(), "source");
  }

  function endId(end) {
    return typeof end === "object" ? end.id : end;
  }

  function makeGraph() {
    const names = new Map();
    const graph = ForceGraph()(graphBox)
      .width(graphBox.clientWidth)
      .height(graphBox.clientHeight)
      .nodeId("id")
      .nodeLabel((node) => `${node.name} (${node.id}, rank ${node.rank})`)
      .nodeRelSize(2)
      .nodeVal((node) => 1 + Math.log1p(node.rank))
      .nodeColor(() => "#4a90c2")
      .linkWidth((link) => 1 + Math.log1p(link.rank))
      .linkLabel((link) => `${names.get(endId(link.source))} — ${names.get(endId(link.target))}: ${link.rank} sentences`)
      .linkHoverPrecision(8)
      .cooldownTicks(120)
      .onEngineStop(() => {
        graph.zoomToFit(0, 60);
        if (graph.zoom() > MAX_ZOOM) graph.zoom(MAX_ZOOM, 0);
        state.settled = true;
        graphBox.dataset.settled = "1";
      })
      .onLinkClick((link) => showEdge(endId(link.source), endId(link.target)))
      .nodeCanvasObjectMode(() => "after")
      .nodeCanvasObject((node, ctx, scale) => {
        const size = 12 / scale;
        ctx.font = `${size}px sans-serif`;
        ctx.fillStyle = "#1d232b";
        ctx.textAlign = "center";
        ctx.textBaseline = "top";
        ctx.fillText(node.name, node.x, node.y + 6 / scale + 2);
      });
    graph.d3Force("link").distance(70);
    graph.d3Force("charge").strength(-220);
    graph.names = names;
    window.addEventListener("resize", () => graph.width(graphBox.clientWidth).height(graphBox.clientHeight));
    return graph;
  }

  function draw(result) {
    state.graph = state.graph || makeGraph();
    const nodes = result.nodes.map((n) => ({ ...n }));
    state.graph.names.clear();
    nodes.forEach((n) => state.graph.names.set(n.id, n.name));
    state.settled = false;
    graphBox.dataset.settled = "0";
    state.graph.graphData({ nodes, links: result.links.map((l) => ({ ...l })) });
    graphBox.dataset.nodes = String(nodes.length);
    graphBox.dataset.links = String(result.links.length);
  }

  function parseYears(text) {
    const years = text.split(/[\s,]+/).filter(Boolean).map(Number);
    if (years.some((y) => !Number.isInteger(y))) throw new Error(`years must be whole numbers, got "${text}"`);
    return years.length ? years : null;
  }

  async function search(text, yearsText) {
    setStatus("searching…");
    try {
      const years = parseYears(yearsText || "");
      const body = { search: text, limit: 300 };
      if (years) body.years = years;
      const result = await call("POST", "search", body);
      draw(result);
      const span = result.years.length ? `, years ${result.years[0]}–${result.years[result.years.length - 1]}` : "";
      setStatus(result.nodes.length
        ? `${result.nodes.length} concepts, ${result.links.length} links${span}. Click a link for its sentences.`
        : "No known concept in that text.");
      return result;
    } catch (error) {
      setStatus(error.message, true);
      throw error;
    }
  }

  async function showEdge(source, target) {
    const list = $("edge-sentences");
    list.replaceChildren();
    document.querySelector("#edge-panel .hint").hidden = true;
    const names = state.graph ? state.graph.names : new Map();
    $("edge-title").textContent = `Supporting sentences: ${names.get(source) || source} — ${names.get(target) || target}`;
    try {
      const edge = await call("GET", `edge/${encodeURIComponent(source)}/${encodeURIComponent(target)}?limit=10`);
      for (const result of edge.results) {
        const item = element("li");
        item.append(element("div", result.sentence), sourceLine(result.title, result.year));
        list.append(item);
      }
      list.dataset.edge = `${source}-${target}`;
      return edge;
    } catch (error) {
      list.append(element("li", error.message, "error-text"));
      throw error;
    }
  }

  function answerItem(result) {
    const item = element("li");
    const text = element("div");
    const at = result.answer ? result.sentence.toLowerCase().indexOf(result.answer.toLowerCase()) : -1;
    if (at >= 0) {
      text.append(
        result.sentence.slice(0, at),
        element("span", result.sentence.slice(at, at + result.answer.length), "answer"),
        result.sentence.slice(at + result.answer.length),
      );
    } else {
      text.textContent = result.sentence;
      if (result.answer) item.append(element("div", result.answer, "answer"));
    }
    item.append(text, sourceLine(result.title, result.year));
    if (result.error) item.append(element("div", result.error, "error-text"));
    return item;
  }

  async function ask(question) {
    const list = $("answers");
    const notice = $("model-notice");
    list.replaceChildren();
    notice.hidden = true;
    setStatus("asking…");
    try {
      const reply = await call("POST", "qasearch", { search: question });
      reply.results.forEach((result) => list.append(answerItem(result)));
      if (reply.model && reply.model.notice) {
        notice.textContent = reply.model.notice;
        notice.hidden = false;
      }
      setStatus(reply.results.length ? `${reply.results.length} answers` : "No known concept in that question.");
      list.dataset.count = String(reply.results.length);
      return reply;
    } catch (error) {
      list.append(element("li", error.message, "error-text"));
      setStatus(error.message, true);
      throw error;
    }
  }

  async function checkHealth() {
    const badge = $("health");
    try {
      const reply = await fetch("health");
      const health = await reply.json();
      badge.textContent = health.status;
      badge.className = `badge ${health.status}`;
      badge.title = ["cluster", "graph", "model"].map((part) => `${part}: ${health[part].detail}`).join("\n");
    } catch (error) {
      badge.textContent = "unreachable";
      badge.className = "badge unavailable";
    }
  }

  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search($("search").value, $("years").value).catch(() => {});
  });
  $("question-form").addEventListener("submit", (event) => {
    event.preventDefault();
    ask($("question").value).catch(() => {});
  });
  checkHealth();

  return { state, search, showEdge, ask, checkHealth };
})();
window.explorer = explorer;
