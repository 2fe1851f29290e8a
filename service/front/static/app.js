// The try-it page: plain JavaScript, no build step, nothing fetched but this service's own API
// (relative URLs, so the page works behind a path prefix too). Every text from the service or
// the user is put in the page as text (textContent), never as HTML.

const KEY_STORE = "embedding-service-api-key";
const VIEWS = {
  dense: "texts-view",
  sparse: "texts-view",
  m3: "texts-view",
  rerank: "query-view",
  late: "query-view",
};
const RESULTS = ["dense-result", "sparse-result", "m3-late-result", "rerank-result", "late-result"];
const $ = (id) => document.getElementById(id);
let models = [];

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function requestHeaders() {
  const headers = { "content-type": "application/json" };
  const key = $("key").value.trim();
  if (key) headers.authorization = `Bearer ${key}`;
  return headers;
}

async function api(path, body) {
  const init = body === undefined
    ? { headers: requestHeaders() }
    : { method: "POST", headers: requestHeaders(), body: JSON.stringify(body) };
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = data.error ? data.error.message : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

function say(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

function fail(error) {
  if (error.status === 401) say("This service needs an API key: enter it above.", true);
  else say(error.message, true);
}

function lines(id) {
  return $(id).value.split("\n").map((line) => line.trim()).filter((line) => line);
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function short(text, length = 28) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

// --- models --------------------------------------------------------------------------------
async function loadModels() {
  const select = $("model");
  select.disabled = true;
  try {
    models = (await api("models")).models;
  } catch (error) {
    select.replaceChildren(element("option", "no models"));
    fail(error);
    return;
  }
  select.replaceChildren();
  for (const model of models) {
    const option = element("option", `${model.name} (${model.kind})`);
    option.value = model.name;
    option.disabled = !(model.kind in VIEWS);
    select.append(option);
  }
  const first = models.find((model) => model.kind in VIEWS);
  if (first) select.value = first.name;
  select.disabled = false;
  say(first ? "" : "No text model that this page shows is served.");
  showView();
}

function chosen() {
  return models.find((model) => model.name === $("model").value);
}

function showView() {
  const model = chosen();
  for (const id of new Set(Object.values(VIEWS))) $(id).hidden = !model || VIEWS[model.kind] !== id;
  for (const id of RESULTS) $(id).hidden = true;
  if (!model) return;
  const facts = [model.dim && `${model.dim} dimensions`, `${model.max_tokens} tokens`, model.provider];
  $("model-info").textContent = facts.filter((fact) => fact).join(" · ");
  $("rank").textContent = model.kind === "late" ? "Score with MaxSim" : "Rank";
}

// --- heat maps -----------------------------------------------------------------------------
function colour(value, low, high) {
  const t = high > low ? Math.min(1, Math.max(0, (value - low) / (high - low))) : 0.5;
  return [`hsl(215 75% ${Math.round(96 - 58 * t)}%)`, t > 0.55 ? "#fff" : "#111"];
}

// A table of values: rows by columns, each cell coloured on [low, high] and carrying its exact
// value in data-value (what the tests read back).
function heatMap(rowLabels, columnLabels, values, options = {}) {
  const flat = values.flat();
  const low = options.low ?? Math.min(...flat);
  const high = options.high ?? Math.max(...flat);
  const table = element("table", undefined, options.tokens ? "heat tokens" : "heat");
  const head = table.createTHead().insertRow();
  head.append(element("th"));
  for (const label of columnLabels) head.append(element("th", label, "column"));
  const body = table.createTBody();
  values.forEach((row, r) => {
    const tr = body.insertRow();
    tr.append(element("th", rowLabels[r], "row"));
    const best = options.markRowMax ? row.indexOf(Math.max(...row)) : -1;
    row.forEach((value, c) => {
      const cell = element("td", options.tokens ? "" : value.toFixed(3));
      const [background, ink] = colour(value, low, high);
      cell.style.background = background;
      cell.style.color = ink;
      cell.dataset.row = r;
      cell.dataset.col = c;
      cell.dataset.value = String(value);
      cell.title = `${rowLabels[r]} · ${columnLabels[c]}: ${value.toFixed(4)}`;
      if (c === best) cell.classList.add("best");
      tr.append(cell);
    });
  });
  return table;
}

function legend(texts) {
  const list = element("ol", undefined, "legend");
  for (const text of texts) list.append(element("li", text));
  return list;
}

const dot = (a, b) => a.reduce((sum, value, i) => sum + value * b[i], 0);
const cosine = (a, b) => dot(a, b) / Math.sqrt(dot(a, a) * dot(b, b));

// --- dense and sparse ----------------------------------------------------------------------
async function compare() {
  const model = chosen();
  const texts = lines("texts");
  if (!texts.length) return say("Type a text or two first.", true);
  say("Embedding…");
  try {
    if (model.kind === "dense") await compareDense(model, texts);
    else if (model.kind === "m3") await compareM3(model, texts);
    else await compareSparse(model, texts);
    say("");
  } catch (error) {
    fail(error);
  }
}

async function compareDense(model, texts) {
  const { embeddings } = await api("embed/dense", { model: model.name, inputs: texts });
  showDense(texts, embeddings);
}

function showDense(texts, embeddings) {
  const matrix = embeddings.map((a) => embeddings.map((b) => cosine(a, b)));
  const labels = texts.map((_, i) => String(i + 1));
  $("dense-matrix").replaceChildren(heatMap(labels, labels, matrix), legend(texts));
  $("dense-result").hidden = false;
}

function sparseDot(a, b) {
  const weights = new Map(a.indices.map((index, i) => [index, a.values[i]]));
  return b.indices.reduce((sum, index, i) => sum + (weights.get(index) ?? 0) * b.values[i], 0);
}

function tokenBars(text, vector, most = 12) {
  const block = element("div", undefined, "token-list");
  block.append(element("h3", short(text, 60)));
  const order = vector.values.map((_, i) => i).sort((a, b) => vector.values[b] - vector.values[a]);
  const top = vector.values[order[0]] || 1;
  for (const i of order.slice(0, most)) {
    const row = element("div", undefined, "bar-row");
    row.append(element("span", vector.tokens[i], "token"));
    const bar = element("span", undefined, "bar");
    bar.style.width = `${(100 * vector.values[i]) / top}%`;
    row.append(bar, element("span", vector.values[i].toFixed(3), "weight"));
    row.dataset.token = vector.tokens[i];
    row.dataset.value = String(vector.values[i]);
    block.append(row);
  }
  if (!order.length) block.append(element("p", "no tokens", "muted"));
  return block;
}

async function compareSparse(model, texts) {
  const body = { model: model.name, inputs: texts, return_tokens: true };
  const { embeddings } = await api("embed/sparse", body);
  showSparse(texts, embeddings);
}

function showSparse(texts, embeddings) {
  const matrix = embeddings.map((a) => embeddings.map((b) => sparseDot(a, b)));
  const labels = texts.map((_, i) => String(i + 1));
  $("sparse-matrix").replaceChildren(heatMap(labels, labels, matrix, { low: 0 }), legend(texts));
  $("sparse-tokens").replaceChildren(...texts.map((text, i) => tokenBars(text, embeddings[i])));
  $("sparse-result").hidden = false;
}

// --- BGE-M3: its three outputs from one call -----------------------------------------------
const maxsim = (query, document) =>
  query.reduce((sum, row) => sum + Math.max(...document.map((column) => dot(row, column))), 0);

async function compareM3(model, texts) {
  const body = { models: [model.name], inputs: texts, return_tokens: true };
  const { vectors } = await api("embed/hybrid", body);
  showDense(texts, vectors.map((named) => named.dense));
  showSparse(texts, vectors.map((named) => named.sparse));
  const matrix = vectors.map((a) => vectors.map((b) => maxsim(a.late, b.late)));
  const labels = texts.map((_, i) => String(i + 1));
  $("m3-late-matrix").replaceChildren(heatMap(labels, labels, matrix), legend(texts));
  $("m3-late-result").hidden = false;
}

// --- rerank and late interaction -----------------------------------------------------------
async function rank() {
  const model = chosen();
  const query = $("query").value.trim();
  const documents = lines("documents");
  if (!query || !documents.length) return say("Type a query and a document or two first.", true);
  say("Scoring…");
  try {
    if (model.kind === "rerank") await rerank(model, query, documents);
    else await lateInteraction(model, query, documents);
    say("");
  } catch (error) {
    fail(error);
  }
}

async function rerank(model, query, documents) {
  const { results } = await api("rerank", { model: model.name, query, documents });
  const best = Math.max(...results.map((result) => result.relevance_score), 1e-9);
  const items = results.map((result) => {
    const item = element("li");
    item.dataset.index = result.index;
    item.dataset.score = String(result.relevance_score);
    const bar = element("span", undefined, "bar");
    bar.style.width = `${Math.max(0, (100 * result.relevance_score) / best)}%`;
    item.append(element("span", result.relevance_score.toFixed(4), "weight"), bar);
    item.append(element("span", documents[result.index], "text"));
    return item;
  });
  $("ranking").replaceChildren(...items);
  $("rerank-result").hidden = false;
}

async function lateInteraction(model, query, documents) {
  const embed = (inputs, side) =>
    api("embed/late", { model: model.name, inputs, input_type: side, return_tokens: true });
  const [queries, docs] = await Promise.all([embed([query], "query"), embed(documents, "document")]);
  const q = queries.embeddings[0];
  const blocks = docs.embeddings.map((d, i) => {
    const matrix = q.embedding.map((row) => d.embedding.map((column) => dot(row, column)));
    const score = matrix.reduce((sum, row) => sum + Math.max(...row), 0);
    const block = element("div", undefined, "late-block");
    block.dataset.index = i;
    block.dataset.score = String(score);
    block.append(element("h3", `${score.toFixed(4)} · ${short(documents[i], 60)}`));
    const options = { tokens: true, markRowMax: true };
    const wrapper = element("div", undefined, "scroll");
    wrapper.append(heatMap(q.token_strings, d.token_strings, matrix, options));
    block.append(wrapper);
    return { score, block };
  });
  blocks.sort((a, b) => b.score - a.score);
  $("late-matrices").replaceChildren(...blocks.map((entry) => entry.block));
  $("late-result").hidden = false;
}

// --- start ---------------------------------------------------------------------------------
$("key").value = sessionStorage.getItem(KEY_STORE) ?? "";
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORE, $("key").value.trim());
  loadModels();
});
$("model").addEventListener("change", showView);
$("compare").addEventListener("click", compare);
$("rank").addEventListener("click", rank);
loadModels();
