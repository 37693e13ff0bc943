// trainserve's dashboard: plain JavaScript over the API, charts by uPlot (service/static/vendor). Every URL is
// relative to the page, so it works behind an ingress path prefix; nothing is fetched from elsewhere.
"use strict";

const API = new URL("..", location.href);
const KEY = "trainserve-api-key";
const FINAL = ["succeeded", "failed", "cancelled", "pruned"];
const frame = document.getElementById("main");
// Each visit to a page renders into a container of its own, which the next visit replaces: a page still
// loading when the user moves on (its fetches slower than the next page's) renders into a detached node,
// never over the page the user went to. Each page function takes the container current when it starts.
let current = frame;
let cleanups = [];

// ---------------------------------------------------------------------------------------------- the API
function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  return headers;
}

async function api(path, options) {
  options = options || {};
  const response = await fetch(new URL(path, API), Object.assign({}, options, {headers: authHeaders(options.headers)}));
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!response.ok) {
    const error = new Error(body && body.error && body.error.message ? body.error.message : "HTTP " + response.status);
    error.status = response.status;
    error.details = (body && body.error && body.error.details) || [];
    throw error;
  }
  return body;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A job's Server-Sent Events through fetch (EventSource cannot send the API key), resumed with
// Last-Event-ID when the connection drops; ends after the final status.
async function* jobEvents(jobId, signal) {
  let last = 0, failures = 0;
  for (;;) {
    try {
      const response = await fetch(new URL("v1/jobs/" + jobId + "/events", API), {signal,
        headers: authHeaders({"Last-Event-ID": String(last), Accept: "text/event-stream"})});
      if (!response.ok) throw Object.assign(new Error("events: HTTP " + response.status), {final: true});
      failures = 0;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer = (buffer + value).replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (!data) continue;
          const event = JSON.parse(data);
          last = event.seq;
          yield event;
          if (event.kind === "status" && FINAL.includes(event.status)) return;
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error.final || ++failures > 5) throw error;
      await sleep(1000 * failures);
    }
  }
}

// ------------------------------------------------------------------------------------------ helpers
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.classList.add("show");
  clearTimeout(box.timer);
  box.timer = setTimeout(() => box.classList.remove("show"), 4000);
}

function fmt(value, digits) {
  return value === null || value === undefined ? "" : Number(value).toFixed(digits === undefined ? 4 : digits);
}

// A model version as people name it: "digits-mlp v2 (production)".
function modelLabel(m) {
  return m.name + " v" + m.version + (m.aliases && m.aliases.length ? " (" + m.aliases.join(", ") + ")" : "");
}

function every(ms, fn) {
  let stopped = false;
  (async () => { while (!stopped) { try { await fn(); } catch (e) { toast(e.message); } await sleep(ms); } })();
  cleanups.push(() => { stopped = true; });
}

function abortable() {
  const controller = new AbortController();
  cleanups.push(() => controller.abort());
  return controller.signal;
}

// ------------------------------------------------------------------------------------------ jobs
// A run as the runs table and the compare page show it.
function runName(job) {
  if (job.model) return job.model.name + " v" + job.model.version;
  return job.spec.name || job.spec.dataset + "-" + job.spec.architecture.type;
}

// The task's key test metric: [label, value, higher is better].
function keyMetric(job) {
  const r = job.result || {};
  if (r.test_accuracy !== undefined) return ["accuracy", r.test_accuracy, true];
  if (r.model && r.model.rmse !== undefined) return ["RMSE", r.model.rmse, false];
  return [job.spec.task === "forecast" ? "RMSE" : "accuracy", null, true];
}

function datasetHref(ref) {
  return "#/datasets/" + encodeURIComponent(ref.name + "@" + ref.version);
}

function seconds(job) {
  if (!job.started_at) return null;
  return ((job.finished_at ? Date.parse(job.finished_at) : Date.now()) - Date.parse(job.started_at)) / 1000;
}

function duration(s) {
  if (s === null) return "";
  return s < 60 ? s.toFixed(s < 10 ? 1 : 0) + " s" : Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
}

const RUN_COLUMNS = [  // key, header, the value it sorts by
  ["name", "Run", (j) => runName(j).toLowerCase()], ["status", "Status", (j) => j.status],
  ["dataset", "Dataset", (j) => j.spec.dataset], ["architecture", "Architecture", (j) => j.spec.architecture.type],
  ["metric", "Test metric", (j) => keyMetric(j)[1]], ["duration", "Duration", seconds],
  ["started", "Started", (j) => j.started_at || j.created_at]];

async function jobsPage() {
  const main = current;
  const view = {sort: "started", descending: true, offset: 0, limit: 50};
  const selected = new Set();
  const filter = el("select", {id: "status-filter", "aria-label": "status"},
    ["", "queued", "running", "succeeded", "failed", "cancelled", "pruned"].map((s) => el("option", {value: s}, s || "every status")));
  const search = el("input", {id: "run-filter", type: "search", placeholder: "name, dataset, architecture", "aria-label": "filter runs"});
  const compare = el("button", {id: "compare", class: "primary", disabled: true,
    onclick: () => { location.hash = "#/compare/" + [...selected].join(","); }}, "Compare");
  const pager = el("span", {id: "pager", class: "muted"});
  const previous = el("button", {id: "previous-page", onclick: () => { view.offset = Math.max(0, view.offset - view.limit); load(); }}, "Newer");
  const next = el("button", {id: "next-page", onclick: () => { view.offset += view.limit; load(); }}, "Older");
  const head = el("tr");
  const body = el("tbody");
  main.replaceChildren(el("h1", {}, "Jobs"),
    el("p", {class: "toolbar"}, el("label", {}, "Show ", filter), " ", search, " ", compare, " ", el("a", {href: "#/new"}, "New job")),
    el("div", {class: "scroll"}, el("table", {id: "jobs"}, el("thead", {}, head), body)),
    el("p", {}, previous, " ", pager, " ", next));
  let items = [];
  const header = () => head.replaceChildren(el("th", {}, el("span", {class: "visually-hidden"}, "select")),
    ...RUN_COLUMNS.map(([key, label], i) => el("th", {class: i === 6 || i === 3 ? "hide-narrow" : null,
      "aria-sort": view.sort === key ? (view.descending ? "descending" : "ascending") : "none"},
      el("button", {class: "sort", "data-sort": key, onclick: () => {
        view.descending = view.sort === key ? !view.descending : key === "metric" || key === "started";
        view.sort = key; render(); }}, label))), el("th", {}));
  const render = () => {
    header();
    const words = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const shown = items.filter((job) => words.every((w) => [runName(job), job.spec.dataset, job.spec.architecture.type, job.id]
      .some((v) => v.toLowerCase().includes(w))));
    const by = RUN_COLUMNS.find(([key]) => key === view.sort)[2];
    shown.sort((a, b) => {
      const x = by(a), y = by(b);
      if (x === null || x === undefined) return 1;  // runs without the value last, either way
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * (view.descending ? -1 : 1);
    });
    body.replaceChildren(...shown.map((job) => {
      const [label, value] = keyMetric(job);
      const box = el("input", {type: "checkbox", "aria-label": "compare " + runName(job), checked: selected.has(job.id),
        onchange: () => { box.checked ? selected.add(job.id) : selected.delete(job.id); compare.disabled = selected.size < 2; }});
      const cancel = FINAL.includes(job.status) ? "" : el("button", {class: "danger", onclick: async () => {
        try { await api("v1/jobs/" + job.id + "/cancel", {method: "POST"}); toast("cancelling " + runName(job)); load(); }
        catch (e) { toast(e.message); } }}, "Cancel");
      const p = job.progress;
      return el("tr", {"data-job": job.id},
        el("td", {}, box),
        el("td", {}, el("a", {href: "#/jobs/" + job.id, title: job.id}, runName(job))),
        el("td", {class: "status " + job.status}, job.status,
          FINAL.includes(job.status) ? "" : el("span", {class: "muted"}, " " + p.epoch + "/" + p.epochs)),
        el("td", {}, job.dataset ? el("a", {href: datasetHref(job.dataset)}, job.spec.dataset) : job.spec.dataset),
        el("td", {class: "hide-narrow"}, job.spec.architecture.type),
        el("td", {class: "metric"}, value === null ? "" : label + " " + fmt(value, label === "RMSE" ? 1 : 4)),
        el("td", {}, duration(seconds(job))),
        el("td", {class: "hide-narrow"}, new Date(job.started_at || job.created_at).toLocaleString()), el("td", {}, cancel));
    }));
    if (!shown.length) body.replaceChildren(el("tr", {}, el("td", {colspan: 9, class: "muted"}, items.length ? "No run matches." : "No jobs yet.")));
  };
  const load = async () => {
    const page = await api("v1/jobs?limit=" + view.limit + "&offset=" + view.offset + (filter.value ? "&status=" + filter.value : ""));
    items = page.items;
    pager.textContent = page.total ? (view.offset + 1) + "-" + (view.offset + items.length) + " of " + page.total : "";
    previous.disabled = view.offset === 0;
    next.disabled = view.offset + items.length >= page.total;
    render();
  };
  filter.addEventListener("change", () => { view.offset = 0; load(); });
  search.addEventListener("input", render);
  every(2000, load);
}

// ------------------------------------------------------------------------------------------ compare
const PALETTE = ["#1f6feb", "#e36209", "#2da44e", "#8250df", "#cf222e", "#bf8700", "#0a7ea4", "#6e7781"];

// {"training.epochs": 20, ...}: a spec's settings by their dotted names.
function flat(value, prefix, into) {
  into = into || {};
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flat(v, prefix ? prefix + "." + k : k, into);
  } else into[prefix] = JSON.stringify(value);
  return into;
}

async function comparePage(ids) {
  const main = current;
  const jobs = await Promise.all(ids.split(",").map((id) => api("v1/jobs/" + id)));
  const curves = await Promise.all(jobs.map((j) => api("v1/jobs/" + j.id + "/metrics")));
  const names = jobs.map(runName);
  const epochs = Array.from({length: Math.max(1, ...curves.map((c) => c.items.length))}, (_, i) => i + 1);
  const column = (items, key) => epochs.map((e) => { const m = items.find((x) => x.epoch === e); return m && m[key] !== undefined ? m[key] : null; });
  const lossBox = el("div", {class: "chart", id: "compare-loss"});
  const accBox = el("div", {class: "chart", id: "compare-accuracy"});
  const metricRows = [["test metric", (j) => { const [l, v] = keyMetric(j); return v === null ? "" : l + " " + fmt(v, l === "RMSE" ? 1 : 4); }],
    ["test macro F1", (j) => fmt((j.result || {}).test_macro_f1)], ["status", (j) => j.status],
    ["epochs", (j) => j.progress.epoch + "/" + j.progress.epochs], ["duration", (j) => duration(seconds(j))],
    ["model", (j) => j.model ? j.model.name + " v" + j.model.version : ""]];
  const specs = jobs.map((j) => flat(j.spec));
  const keys = [...new Set(specs.flatMap(Object.keys))].sort();
  const differs = (k) => new Set(specs.map((s) => s[k])).size > 1;
  const headRow = el("tr", {}, el("th", {}), names.map((n, i) => el("th", {}, el("a", {href: "#/jobs/" + jobs[i].id, style: "color: " + PALETTE[i % PALETTE.length]}, n))));
  const classification = jobs.some((j) => j.spec.task !== "forecast");
  main.replaceChildren(el("h1", {}, "Compare " + jobs.length + " runs"),
    el("div", {class: "row"}, el("div", {class: "card"}, lossBox), classification ? el("div", {class: "card"}, accBox) : ""),
    el("h2", {}, "Metrics"),
    el("div", {class: "scroll"}, el("table", {id: "compare-metrics"}, el("thead", {}, headRow.cloneNode(true)),
      el("tbody", {}, metricRows.map(([label, get]) => el("tr", {}, el("th", {}, label), jobs.map((j) => el("td", {}, get(j)))))))),
    el("h2", {}, "Specs"),
    el("p", {class: "muted"}, keys.filter(differs).length + " of " + keys.length + " settings differ (marked)."),
    el("div", {class: "scroll"}, el("table", {id: "compare-specs"}, el("thead", {}, headRow),
      el("tbody", {}, keys.map((k) => el("tr", {class: differs(k) ? "differs" : null, "data-key": k}, el("th", {}, (differs(k) ? "≠ " : "") + k),
        specs.map((s) => el("td", {}, s[k] === undefined ? "" : s[k]))))))));
  const series = (label) => names.map((n, i) => ({label: n + " " + label, color: PALETTE[i % PALETTE.length]}));
  const loss = lineChart(lossBox, "Validation loss", series("val"));
  loss.setData([epochs, ...curves.map((c) => column(c.items, "val_loss"))]);
  lossBox.dataset.series = String(jobs.length);
  if (classification) {
    const acc = lineChart(accBox, "Validation accuracy", series("val"));
    acc.setData([epochs, ...curves.map((c) => column(c.items, "val_accuracy"))]);
  }
}

function lineChart(container, title, series) {
  const width = () => Math.max(280, container.clientWidth - 8);
  const plot = new uPlot({title, width: width(), height: 240, scales: {x: {time: false}}, hooks: {setLegend: [showLatest]},
    axes: [{label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]}, {}],
    series: [{label: "epoch"}].concat(series.map((s) => ({label: s.label, stroke: s.color, width: 2, points: {show: true}})))},
    [[]].concat(series.map(() => [])), container);
  const resize = () => plot.setSize({width: width(), height: 240});
  window.addEventListener("resize", resize);
  cleanups.push(() => { window.removeEventListener("resize", resize); plot.destroy(); });
  return plot;
}

// The legend shows the values under the pointer; away from the chart, the last point's (not "--"). A
// setLegend hook: uPlot writes "--" whenever it updates the legend without a cursor.
function showLatest(plot) {
  if (plot.cursor.idx != null || !plot.data[0].length) return;
  // each series at its own last point: runs of different lengths, a forecast after the readings
  plot.setLegend({idxs: plot.data.map((column) => {
    let i = column.length - 1;
    while (i > 0 && column[i] == null) i--;
    return i;
  })}, false);  // false: no setLegend hook again
}

function heatmap(matrix) {
  const max = Math.max(1, ...matrix.flat());
  return el("table", {class: "heat", id: "confusion-matrix", "aria-label": "confusion matrix: rows are the true class, columns the predicted one"},
    el("thead", {}, el("tr", {}, el("th", {}, "true \\ predicted"), matrix.map((_, j) => el("th", {}, j)))),
    el("tbody", {}, matrix.map((row, i) => el("tr", {}, el("th", {}, i), row.map((v, j) => {
      const share = v / max;
      return el("td", {title: "true " + i + ", predicted " + j + ": " + v,
        style: "background: rgba(31,111,235," + share.toFixed(3) + "); color: " + (share > .55 ? "#fff" : "inherit")}, v);
    })))));
}

async function jobPage(id) {
  const main = current;
  const signal = abortable();
  const job = await api("v1/jobs/" + id);
  const status = el("span", {class: "status " + job.status, id: "job-status"}, job.status);
  const epochBar = el("progress", {max: job.progress.epochs, value: job.progress.epoch, "aria-label": "epochs"});
  const stepBar = el("progress", {max: 1, value: 0, "aria-label": "steps of this epoch"});
  const stepText = el("span", {class: "muted"});
  const cancel = el("button", {class: "danger", onclick: async () => {
    try { await api("v1/jobs/" + id + "/cancel", {method: "POST"}); toast("cancel asked"); } catch (e) { toast(e.message); } }}, "Cancel");
  const lossBox = el("div", {class: "chart", id: "loss-chart", "data-points": "0"});
  const accBox = el("div", {class: "chart", id: "accuracy-chart"});
  const epochRows = el("tbody");
  const result = el("div", {id: "result"});
  const forecaster = job.spec.task === "forecast";
  const links = el("p", {class: "muted", id: "job-links"}, "Job ", el("code", {}, id), " on ",
    job.dataset ? el("a", {href: datasetHref(job.dataset)}, job.dataset.name + " v" + job.dataset.version) : job.spec.dataset,
    job.sweep_id ? [" (trial " + job.trial_number + " of a ", el("a", {href: "#/sweeps/" + job.sweep_id}, "sweep"), ")"] : "");
  main.replaceChildren(
    el("h1", {}, runName(job), " ", status), links,
    el("div", {class: "card"}, el("div", {}, "Epoch ", epochBar, el("span", {id: "epoch-text"}, " " + job.progress.epoch + "/" + job.progress.epochs)),
      el("div", {}, "This epoch ", stepBar, " ", stepText), FINAL.includes(job.status) ? "" : cancel),
    el("div", {class: "row"}, el("div", {class: "card"}, lossBox), forecaster ? "" : el("div", {class: "card"}, accBox)),
    result,
    el("h2", {}, "Epochs"),
    el("div", {class: "scroll"}, el("table", {}, el("thead", {}, el("tr", {},
      ["epoch", "train loss", "val loss", "train accuracy", "val accuracy", "learning rate", "samples/s", "seconds"].map((h) => el("th", {}, h)))), epochRows)),
    el("h2", {}, "Spec"), el("pre", {}, JSON.stringify(job.spec, null, 2)));
  const loss = lineChart(lossBox, "Loss", [{label: "train", color: "#1f6feb"}, {label: "validation", color: "#e36209"}]);
  const acc = forecaster ? null : lineChart(accBox, "Accuracy", [{label: "train", color: "#1f6feb"}, {label: "validation", color: "#e36209"}]);
  const data = {epoch: [], train: [], val: [], trainAcc: [], acc: []};
  for await (const event of jobEvents(id, signal)) {
    if (event.kind === "progress") {
      stepBar.max = event.steps; stepBar.value = event.step; stepText.textContent = event.step + "/" + event.steps + " steps";
    } else if (event.kind === "epoch") {
      data.epoch.push(event.epoch); data.train.push(event.train_loss); data.val.push(event.val_loss); data.acc.push(event.val_accuracy); data.trainAcc.push(event.train_accuracy ?? null);
      loss.setData([data.epoch, data.train, data.val]);
      if (acc) acc.setData([data.epoch, data.trainAcc, data.acc]);
      lossBox.dataset.points = String(data.epoch.length);
      epochBar.value = event.epoch;
      stepBar.value = stepBar.max;  // the epoch is done, whatever the last progress report said
      stepText.textContent = "";
      document.getElementById("epoch-text").textContent = " " + event.epoch + "/" + job.progress.epochs;
      epochRows.append(el("tr", {}, [event.epoch, fmt(event.train_loss), fmt(event.val_loss), fmt(event.train_accuracy), fmt(event.val_accuracy),
        fmt(event.learning_rate, 5), Math.round(event.samples_per_second).toLocaleString(), fmt(event.seconds, 2)]
        .map((v) => el("td", {}, v))));
    } else if (event.kind === "status") {
      status.textContent = event.status; status.className = "status " + event.status;
      if (FINAL.includes(event.status)) cancel.remove();
      if (event.status === "failed") result.replaceChildren(el("p", {class: "error card"}, event.error));
      if (event.status === "succeeded") showResult(result, event.result || {}, await api("v1/jobs/" + id).then((j) => j.model));
    }
  }
}

function showResult(box, result, model) {
  const parts = [el("h2", {}, "Result")];
  if (result.test_accuracy !== undefined) parts.push(el("p", {}, "Test accuracy ", el("strong", {id: "test-accuracy"}, fmt(result.test_accuracy))));
  if (result.model && result.model.rmse !== undefined) parts.push(el("p", {}, "Test RMSE ", el("strong", {id: "test-rmse"}, fmt(result.model.rmse, 2)),
    result.persistence ? " (persistence " + fmt(result.persistence.rmse, 2) + ", seasonal naive " + fmt((result.seasonal_naive || {}).rmse, 2) + ")" : ""));
  if (model) parts.push(el("p", {}, "Model ", el("a", {id: "job-model", href: "#/models?name=" + encodeURIComponent(model.name)}, model.name + " v" + model.version)));
  if (result.promotion) parts.push(el("p", {id: "job-promotion"}, (result.promotion.moved ? "Promoted to " : "Not promoted to ") + result.promotion.alias + ": " + result.promotion.reason));
  if (result.confusion_matrix) parts.push(el("h2", {}, "Confusion matrix"), el("div", {class: "scroll"}, heatmap(result.confusion_matrix)));
  if (result.per_class) parts.push(el("h2", {}, "Per class"), el("div", {class: "scroll"}, el("table", {id: "per-class"},
    el("thead", {}, el("tr", {}, ["class", "precision", "recall", "F1", "support"].map((h) => el("th", {}, h)))),
    el("tbody", {}, result.per_class.map((c) => el("tr", {}, [c.class, fmt(c.precision, 3), fmt(c.recall, 3), fmt(c.f1, 3), c.support]
      .map((v) => el("td", {}, v))))))));
  box.replaceChildren(...parts);
}

// ------------------------------------------------------------------------------------------ new job
function resolve(schemas, node) {
  while (node && node.$ref) node = schemas[node.$ref.split("/").pop()];
  return node || {};
}

function inputFor(path, prop) {
  const attrs = {id: "f-" + path, name: path, "aria-describedby": "e-" + path};
  let input;
  if (prop.enum) input = el("select", attrs, prop.enum.map((v) => el("option", {value: v, selected: v === prop.default}, v)));
  else if (prop.type === "boolean") input = el("input", Object.assign(attrs, {type: "checkbox", checked: prop.default === true}));
  else if (prop.type === "integer" || prop.type === "number") {
    input = el("input", Object.assign(attrs, {type: "number", step: prop.type === "integer" ? "1" : "any",
      min: prop.minimum ?? prop.exclusiveMinimum, max: prop.maximum, value: prop.default ?? ""}));
  } else if (prop.type === "array") input = el("input", Object.assign(attrs, {value: (prop.default || []).join(", "), placeholder: "comma-separated"}));
  else input = el("input", Object.assign(attrs, {value: prop.default ?? ""}));
  input.dataset.kind = prop.type || (prop.enum ? "string" : "string");
  return el("div", {class: "field", "data-field": path}, el("label", {for: "f-" + path}, path.split(".").pop().replace(/_/g, " ")),
    input, el("span", {class: "error", id: "e-" + path}));
}

function simple(prop) {
  return prop.enum || ["integer", "number", "boolean", "string"].includes(prop.type) ||
    (prop.type === "array" && prop.items && ["integer", "number"].includes(prop.items.type));
}

function fieldsOf(schemas, node, prefix) {
  const props = resolve(schemas, node).properties || {};
  return Object.entries(props).filter(([name, p]) => name !== "type" && simple(flatten(schemas, p)))
    .map(([name, p]) => inputFor(prefix + "." + name, flatten(schemas, p)));
}

function flatten(schemas, prop) {
  prop = resolve(schemas, prop);
  if (prop.anyOf) {  // Optional[...]: the non-null option, with the default
    const option = prop.anyOf.map((o) => resolve(schemas, o)).find((o) => o.type !== "null");
    return Object.assign({}, option || {}, {default: prop.default});
  }
  return prop;
}

async function newJobPage() {
  const main = current;
  const [openapi, datasets] = await Promise.all([api("openapi.json"), api("v1/datasets?limit=200")]);
  const schemas = openapi.components.schemas;
  const spec = schemas.JobSpec.properties;
  const form = el("form", {id: "job-form", novalidate: true});
  const general = el("p", {class: "error", id: "form-error", role: "alert"});
  const dataset = el("div", {class: "field", "data-field": "dataset"}, el("label", {for: "f-dataset"}, "dataset"),
    // A dataset this server lacks (fashion-mnist without its package) is shown but cannot be picked; the form
    // starts on the course's digits, which every server has.
    el("select", {id: "f-dataset", name: "dataset"}, datasets.items.map((d) => el("option",
      {value: d.name, disabled: d.available === false, selected: d.name === "digits"},
      d.available === false ? `${d.name} (not installed)` : d.name))),
    el("span", {class: "error", id: "e-dataset"}));
  const union = (name) => {
    const mapping = spec[name].discriminator.mapping;
    const preferred = {architecture: "mlp", optimizer: "adam"}[name];
    const select = el("select", {id: "f-" + name + ".type", name: name + ".type"},
      Object.keys(mapping).map((t) => el("option", {value: t, selected: t === preferred}, t)));
    const options = el("div", {class: "grid"});
    const show = () => options.replaceChildren(...fieldsOf(schemas, {$ref: mapping[select.value]}, name));
    select.addEventListener("change", show);
    show();
    return el("fieldset", {class: "card"}, el("legend", {}, name),
      el("div", {class: "field", "data-field": name}, el("label", {for: "f-" + name + ".type"}, "type"), select,
        el("span", {class: "error", id: "e-" + name})), options);
  };
  const training = el("fieldset", {class: "card"}, el("legend", {}, "training"), el("div", {class: "grid"}, fieldsOf(schemas, spec.training, "training")));
  form.append(general, el("div", {class: "grid"}, dataset, inputFor("name", flatten(schemas, spec.name))), union("architecture"),
    union("optimizer"), training, el("button", {type: "submit", class: "primary"}, "Submit"));
  main.replaceChildren(el("h1", {}, "New job"), form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const box of form.querySelectorAll(".error")) box.textContent = "";
    const body = {};
    for (const input of form.querySelectorAll("[name]")) {
      let value = input.type === "checkbox" ? input.checked : input.value.trim();
      if (value === "") continue;
      if (input.dataset.kind === "integer" || input.dataset.kind === "number") value = Number(value);
      if (input.dataset.kind === "array") value = value.split(",").map((v) => Number(v.trim())).filter((v) => !Number.isNaN(v));
      const keys = input.name.split(".");
      let target = body;
      for (const key of keys.slice(0, -1)) target = target[key] = target[key] || {};
      target[keys[keys.length - 1]] = value;
    }
    try {
      const job = await api("v1/jobs", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
      location.hash = "#/jobs/" + job.id;
    } catch (error) {
      let placed = false;
      for (const d of error.details) {
        let path = (d.field || "").split(".");
        while (path.length) {  // the field, or the nearest part of the form that holds it
          const box = document.getElementById("e-" + path.join("."));
          if (box) { box.textContent = d.message; placed = true; break; }
          path = path.slice(0, -1);
        }
      }
      general.textContent = placed ? "" : error.message;
      (form.querySelector(".error:not(:empty)") || general).scrollIntoView({block: "center"});
    }
  });
}

// ------------------------------------------------------------------------------------------ draw a digit
async function drawPage() {
  const main = current;
  const models = await api("v1/models?limit=200");
  const classifiers = models.items.filter((m) => m.task === "classification");
  const select = el("select", {id: "model", "aria-label": "classifier"},
    classifiers.map((m) => el("option", {value: m.id}, modelLabel(m))));
  // The API's default route: the one classifier at production (docs/serving.md), else the newest.
  const production = classifiers.filter((m) => m.aliases.includes("production"));
  if (production.length === 1) select.value = production[0].id;
  const canvas = el("canvas", {id: "canvas", width: 280, height: 280, tabindex: 0, "aria-label": "drawing area: draw a digit with the mouse, a pen or a finger"});
  const bars = el("div", {class: "bars", id: "probabilities"});
  const label = el("p", {id: "prediction", "aria-live": "polite"});
  const clear = el("button", {type: "button", onclick: () => {
    reset(); bars.replaceChildren(); label.textContent = ""; delete label.dataset.label; }}, "Clear");
  main.replaceChildren(el("h1", {}, "Draw a digit"),
    classifiers.length ? "" : el("p", {class: "error"}, "No classifier yet: train one first (New job)."),
    el("div", {class: "row"}, el("div", {}, el("p", {}, el("label", {}, "Classifier ", select)), canvas, el("p", {}, clear)),
      el("div", {class: "card"}, label, bars)));
  const ctx = canvas.getContext("2d");
  const reset = () => { ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, 280, 280); };
  reset();
  ctx.lineWidth = 22; ctx.lineCap = "round"; ctx.lineJoin = "round"; ctx.strokeStyle = "#000";
  let drawing = false, timer = null;
  const at = (e) => { const r = canvas.getBoundingClientRect(); return [(e.clientX - r.left) * 280 / r.width, (e.clientY - r.top) * 280 / r.height]; };
  const classify = () => { clearTimeout(timer); timer = setTimeout(send, 250); };
  canvas.addEventListener("pointerdown", (e) => { drawing = true; canvas.setPointerCapture(e.pointerId); ctx.beginPath(); ctx.moveTo(...at(e)); });
  canvas.addEventListener("pointermove", (e) => { if (!drawing) return; ctx.lineTo(...at(e)); ctx.stroke(); classify(); });
  canvas.addEventListener("pointerup", () => { drawing = false; classify(); });
  async function send() {
    if (!select.value) return;
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    const body = new FormData();
    body.append("images", blob, "digit.png");
    body.append("model", select.value);
    body.append("top_k", "3");
    try {
      const answer = await api("predict", {method: "POST", body});
      const p = answer.predictions[0];
      label.textContent = "Predicted: " + p.label;
      label.dataset.label = String(p.label);
      bars.replaceChildren(...p.probabilities.flatMap((v, i) => [el("span", {}, i),
        el("div", {class: "bar" + (i === p.label ? " top" : ""), style: "width: " + (100 * v).toFixed(1) + "%", role: "img", "aria-label": i + ": " + (100 * v).toFixed(1) + "%"}),
        el("span", {}, (100 * v).toFixed(1) + "%")]));
    } catch (e) { toast(e.message); }
  }
}

// ------------------------------------------------------------------------------------------ datasets
function uploadWithProgress(form, bar) {
  // XMLHttpRequest, not fetch: only it reports an upload's progress.
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", new URL("v1/datasets", API));
    for (const [k, v] of Object.entries(authHeaders())) request.setRequestHeader(k, v);
    request.upload.onprogress = (e) => { if (e.lengthComputable) { bar.max = e.total; bar.value = e.loaded; } };
    request.onload = () => {
      let body = null;
      try { body = JSON.parse(request.responseText); } catch (_) { /* not JSON */ }
      if (request.status < 300) resolve(body);
      else reject(Object.assign(new Error(body && body.error ? body.error.message : "HTTP " + request.status),
        {details: (body && body.error && body.error.details) || []}));
    };
    request.onerror = () => reject(new Error("the upload did not reach the API"));
    request.send(form);
  });
}

async function datasetsPage() {
  const main = current;
  const page = await api("v1/datasets?limit=200");
  const bar = el("progress", {id: "upload-progress", max: 1, value: 0, "aria-label": "upload progress"});
  const message = el("p", {class: "error", id: "upload-error", role: "alert"});
  const form = el("form", {id: "upload-form", class: "card"},
    el("h2", {}, "Upload"),
    el("div", {class: "grid"},
      el("div", {class: "field"}, el("label", {for: "u-file"}, "file (two for MNIST IDX images and labels)"),
        el("input", {id: "u-file", name: "file", type: "file", multiple: true, required: true})),
      el("div", {class: "field"}, el("label", {for: "u-name"}, "name"), el("input", {id: "u-name", name: "name", required: true,
        pattern: "[a-z0-9._-]+", placeholder: "lowercase, digits, . _ -"})),
      el("div", {class: "field"}, el("label", {for: "u-description"}, "description"), el("input", {id: "u-description", name: "description"}))),
    el("p", {}, el("button", {type: "submit", class: "primary"}, "Upload"), " ", bar), message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.textContent = "";
    const body = new FormData();
    for (const file of form.querySelector("#u-file").files) body.append("file", file);
    body.append("name", form.querySelector("#u-name").value.trim());
    body.append("description", form.querySelector("#u-description").value);
    try {
      const row = await uploadWithProgress(body, bar);
      location.hash = "#/datasets/" + encodeURIComponent(row.ref);
    } catch (e) { message.textContent = e.message; }
  });
  main.replaceChildren(el("h1", {}, "Datasets"), el("div", {class: "scroll"}, el("table", {id: "datasets"},
    el("thead", {}, el("tr", {}, ["Dataset", "Task", "Format", "Samples", "Size", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, page.items.map((d) => el("tr", {"data-dataset": d.ref},
      el("td", {}, el("a", {href: "#/datasets/" + encodeURIComponent(d.ref)}, d.ref)), el("td", {}, d.task),
      el("td", {}, d.format || d.source), el("td", {}, (d.stats && (d.stats.samples || d.stats.readings)) || ""),
      el("td", {}, d.size_bytes ? (d.size_bytes / 1e6).toFixed(1) + " MB" : ""),
      el("td", {class: "muted"}, d.available ? "" : d.hint)))))), form);
}

function pixelCanvas(pixels, shape, range) {
  const [channels, height, width] = shape;
  const canvas = el("canvas", {width, height, class: "sample", role: "img", "aria-label": "sample image"});
  const image = canvas.getContext("2d").createImageData(width, height);
  const [lo, hi] = range;
  for (let i = 0; i < width * height; i++) {
    for (let c = 0; c < 3; c++) {
      const v = pixels[(channels === 3 ? c * width * height : 0) + i];
      image.data[4 * i + c] = Math.round(255 * (v - lo) / ((hi - lo) || 1));
    }
    image.data[4 * i + 3] = 255;
  }
  canvas.getContext("2d").putImageData(image, 0, 0);
  return canvas;
}

function timeChart(container, title, timestamps, columns, values, extra) {
  const xs = timestamps.map((t) => Date.parse(t.replace(" ", "T") + "Z") / 1000);
  const palette = ["#1f6feb", "#e36209", "#1b7f3b", "#8250df", "#bf3989", "#57606a"];
  const series = [{}].concat(columns.map((c, i) => ({label: c, stroke: palette[i % palette.length], width: 1.5})))
    .concat((extra && extra.series) || []);
  const width = () => Math.max(280, container.clientWidth - 8);
  const plot = new uPlot({title, width: width(), height: 300, series, bands: (extra && extra.bands) || [],
    scales: {x: {time: true}}, axes: [{}, {size: 64}], hooks: {setLegend: [showLatest]},
    // Readings are wall-clock times without a zone, as the API takes them: shown as they are, in any zone.
    tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1e3), "Etc/UTC")}, [xs].concat(columns.map((c) => values[c])).concat((extra && extra.data) || []), container);
  const resize = () => plot.setSize({width: width(), height: 300});
  window.addEventListener("resize", resize);
  cleanups.push(() => { window.removeEventListener("resize", resize); plot.destroy(); });
  container.dataset.points = String(xs.length);
  return plot;
}

async function datasetPage(ref) {
  const main = current;
  ref = decodeURIComponent(ref);
  const [row, preview] = await Promise.all([api("v1/datasets/" + encodeURIComponent(ref)),
    api("v1/datasets/" + encodeURIComponent(ref) + "/preview?per_class=8&last=500")]);
  const stats = row.stats || {};
  const statRows = Object.entries(stats).filter(([, v]) => typeof v !== "object" || v === null)
    .map(([k, v]) => el("tr", {}, el("th", {}, k.replace(/_/g, " ")), el("td", {}, typeof v === "number" ? +v.toFixed(4) : v)));
  if (stats.test) statRows.push(el("tr", {}, el("th", {}, "test samples (its own test set)"), el("td", {}, stats.test.samples)));
  const parts = [el("h1", {}, "Dataset " + row.ref), el("p", {class: "muted"}, row.description || ""),
    el("div", {class: "row"}, el("div", {class: "card"}, el("h2", {}, "Statistics"), el("table", {id: "dataset-stats"}, el("tbody", {}, statRows))))];
  if (preview.kind === "images") {
    parts.push(el("h2", {}, "Samples of each class"), el("div", {class: "card samples", id: "samples"},
      preview.classes.map((c) => el("div", {class: "sample-row", "data-class": c.label},
        el("span", {class: "sample-label"}, c.name), c.images.map((pixels) => pixelCanvas(pixels, preview.shape, preview.value_range))))));
    const test = stats.test ? stats.test.class_histogram : null;  // the dataset's own test set, per class
    if (stats.class_histogram) parts.push(el("h2", {}, "Images per class"), el("table", {id: "class-histogram"},
      test ? el("thead", {}, el("tr", {}, el("th", {}, "class"), el("th", {}, "training"), el("th", {}, "test"))) : null,
      el("tbody", {}, stats.class_histogram.map((n, i) => el("tr", {}, el("th", {}, (stats.classes || [])[i] ?? i),
        el("td", {}, n), test ? el("td", {}, test[i] ?? 0) : null)))));
  } else {
    const box = el("div", {class: "chart", id: "series-chart"});
    parts.push(el("h2", {}, "The newest " + preview.timestamps.length + " readings"), el("div", {class: "card"}, box));
    main.replaceChildren(...parts);
    timeChart(box, row.name, preview.timestamps, preview.columns, preview.values);
    return;
  }
  main.replaceChildren(...parts);
}

// ------------------------------------------------------------------------------------------ models
async function download(ref, format) {
  const response = await fetch(new URL("v1/models/" + ref + "/download?format=" + format, API), {headers: authHeaders()});
  if (!response.ok) { toast((await response.json()).error.message); return; }
  const link = el("a", {href: URL.createObjectURL(await response.blob()), download: ref + "." + ({pt: "pt", torchscript: "ts.pt", onnx: "onnx"}[format])});
  document.body.append(link); link.click(); link.remove();
}

async function modelsPage(name) {
  const main = current;
  name = name ? decodeURIComponent(name) : "";
  const page = await api("v1/models?limit=200" + (name ? "&name=" + encodeURIComponent(name) : ""));
  const headline = (m) => m.metrics.test_accuracy !== undefined ? "accuracy " + fmt(m.metrics.test_accuracy)
    : m.metrics.model && m.metrics.model.rmse !== undefined ? "RMSE " + fmt(m.metrics.model.rmse) : "";
  const rolloutsBox = el("section", {id: "rollouts"}), monitoringBox = el("section", {id: "monitoring"});
  main.replaceChildren(el("h1", {}, name ? "Model " + name : "Models"),
    name ? el("p", {}, el("a", {href: "#/models"}, "Every model")) : "", rolloutsBox, monitoringBox,
    el("div", {class: "scroll"}, el("table", {id: "models"},
    el("thead", {}, el("tr", {}, ["Model", "Task", "Test metric", "Gate's verdict", "Aliases", "Alias", "Downloads"].map((h) => el("th", {}, h)))),
    el("tbody", {}, page.items.map((m) => {
      const alias = el("input", {value: "production", size: 10, "aria-label": "alias for " + m.name + " version " + m.version});
      const promotion = m.metrics.promotion;
      return el("tr", {"data-model": m.id},
        el("td", {}, el("a", {href: "#/jobs/" + m.job_id, title: "the job that trained it"}, m.name + " v" + m.version),
          el("div", {class: "muted"}, el("a", {href: datasetHref(m.dataset)}, m.dataset.name + " v" + m.dataset.version))),
        el("td", {}, m.task), el("td", {}, headline(m)),
        el("td", {class: "gate"}, promotion ? (promotion.moved ? "passed: " : "refused: ") + promotion.reason : ""),
        el("td", {class: "aliases"}, m.aliases.join(", ")),
        el("td", {}, alias, " ", el("button", {title: m.task === "forecast" ? "promote only if its test RMSE beats both baselines and the version the alias points at" : "promote only if its test accuracy beats the version the alias points at",
          onclick: async () => {
            try {
              const verdict = await api("v1/models/" + encodeURIComponent(m.name) + "/versions/" + m.version + "/promote",
                {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({alias: alias.value.trim()})});
              toast((verdict.moved ? "promoted: " : "not promoted: ") + verdict.reason);
              m.metrics.promotion = verdict;
              await modelsPage(encodeURIComponent(name));
              const cell = document.querySelector("tr[data-model='" + m.id + "'] td.gate");
              if (cell) cell.textContent = (verdict.moved ? "passed: " : "refused: ") + verdict.reason;
            } catch (e) { toast(e.message); } }}, "Promote"), " ", el("button", {title: "point the alias here, without the gate", onclick: async () => {
          try {
            await api("v1/models/" + encodeURIComponent(m.name) + "/aliases/" + encodeURIComponent(alias.value.trim()),
              {method: "PUT", headers: {"Content-Type": "application/json"}, body: JSON.stringify({version: m.version})});
            toast(m.name + "@" + alias.value.trim() + " -> version " + m.version); modelsPage(encodeURIComponent(name));
          } catch (e) { toast(e.message); } }}, "Set")),
        el("td", {}, ["pt", "torchscript", "onnx"].filter((f) => f === "pt" || (m.exports[f] && m.exports[f].status === "ok"))
          .map((f) => el("button", {onclick: () => download(m.id, f)}, f))));
    })))));
  await rolloutsPanel(rolloutsBox, name);
  const watched = page.items.find((m) => m.aliases.includes("production"))
    || page.items.reduce((a, m) => (!a || m.version > a.version ? m : a), null);
  if (name && watched) await monitoringPanel(monitoringBox, name, watched.version);
}

// ------------------------------------------------------------------------------------------ forecast
// A day_total forecaster: the newest day's first readings (after the whole day before, which it reads for
// the day before's total), the day's total it forecasts with its interval, and what the day really made.
// Whether this pick is still the newest; if so the chart box is emptied for it.
function clear(box, setup, current) {
  if (!current()) return false;
  for (const stop of cleanups.splice(0)) stop();
  box.replaceChildren();
  box.dataset.framing = setup.framing;
  return true;
}

async function showDayTotal(model, setup, box, note, current) {
  const preview = await api("v1/datasets/" + model.dataset.id + "/preview?last=400");
  const days = new Map();
  preview.timestamps.forEach((t, i) => { const day = t.slice(0, 10); if (!days.has(day)) days.set(day, []); days.get(day).push(i); });
  // The newest whole day (as many readings as a usual day: the data may end mid-day) and the day before it.
  const counts = [...days.values()].map((rows) => rows.length).sort((a, b) => a - b);
  const usual = counts[Math.floor(counts.length / 2)];
  const order = [...days.keys()].filter((d) => days.get(d).length >= Math.max(3, usual));
  if (order.length < 2) throw new Error("this dataset's newest readings hold fewer than two whole days to forecast from");
  const today = days.get(order[order.length - 1]), before = days.get(order[order.length - 2]);
  const k = Math.max(2, Math.min(setup.lookback, today.length - 1));
  const rows = before.concat(today.slice(0, k));
  const body = {model: model.id, timestamps: rows.map((i) => preview.timestamps[i]),
    values: Object.fromEntries(Object.entries(preview.values).map(([c, v]) => [c, rows.map((i) => v[i])]))};
  const ahead = await api("forecast", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const target = ahead.target, total = ahead.forecast[0];
  const stamps = today.map((i) => preview.timestamps[i]);
  const end = total.timestamp.replace("T", " ").slice(0, 19);
  const axis = stamps[stamps.length - 1] < end ? stamps.concat([end]) : stamps;
  const extra = axis.length - stamps.length;
  const values = today.map((i) => preview.values[target][i]);
  const soFar = values.map((v, i) => (i < k ? v : null)).concat(Array(extra).fill(null));
  const rest = values.map((v, i) => (i >= k - 1 ? v : null)).concat(Array(extra).fill(null));
  const at = (v) => Array(axis.length - 1).fill(null).concat([v]);
  const actual = Math.max(...values);
  if (!clear(box, setup, current)) return;
  timeChart(box, target + " on " + order[order.length - 1] + ": the first " + k + " readings and the day's total forecast from them",
    axis, ["readings so far"], {"readings so far": soFar}, {
      series: [{label: "the rest of the day", stroke: "#57606a", width: 1, dash: [3, 3]},
        {label: "forecast total", stroke: "#e36209", width: 0, points: {show: true, size: 11, fill: "#e36209"}},
        {label: "lower", stroke: "#e36209", width: 0, points: {show: true, size: 7, fill: "#fff"}},
        {label: "upper", stroke: "#e36209", width: 0, points: {show: true, size: 7, fill: "#fff"}}],
      data: [rest, at(total.value), at(total.lower), at(total.upper)]});
  box.dataset.forecast = "1";
  note.textContent = "The day's total forecast from its first " + k + " readings of " + model.dataset.name + ": " + fmt(total.value, 0) +
    " (" + Math.round(100 * ahead.interval) + " % interval " + fmt(total.lower, 0) + " to " + fmt(total.upper, 0) + "); the day made " + fmt(actual, 0) + ".";
}

async function forecastPage() {
  const main = current;
  const page = await api("v1/models?limit=200");
  const forecasters = page.items.filter((m) => m.task === "forecast");
  const select = el("select", {id: "forecaster", "aria-label": "forecaster"}, forecasters.map((m) => el("option", {value: m.id}, modelLabel(m))));
  const box = el("div", {class: "chart", id: "forecast-chart"});
  const note = el("p", {id: "forecast-note", class: "muted"});
  main.replaceChildren(el("h1", {}, "Forecast"),
    forecasters.length ? el("p", {}, el("label", {}, "Forecaster ", select)) : el("p", {class: "error"}, "No forecaster yet: train one on a time series first."),
    note, el("div", {class: "card"}, box));
  let shown = 0;  // a later pick wins over one still loading: only the newest draws
  const show = async () => {
    const mine = ++shown, current = () => mine === shown;
    const model = forecasters.find((m) => m.id === select.value);
    const setup = (await api("v1/jobs/" + model.job_id)).spec.forecast;
    if (setup.framing === "day_total") return showDayTotal(model, setup, box, note, current);
    const all = await api("v1/datasets/" + model.dataset.id + "/preview?last=" + Math.max(96, model.input_shape[0] * 8));
    // The newest run of readings without a gap, at the series' usual step: what the model takes.
    const times = all.timestamps.map((t) => Date.parse(t.replace(" ", "T") + "Z"));
    const steps = new Map();
    times.slice(1).forEach((t, i) => steps.set(t - times[i], (steps.get(t - times[i]) || 0) + 1));
    const step = [...steps].sort((a, b) => b[1] - a[1])[0][0];
    let start = times.length - 1;
    while (start > 0 && times[start] - times[start - 1] === step) start--;
    const preview = {timestamps: all.timestamps.slice(start),
      values: Object.fromEntries(Object.entries(all.values).map(([k, v]) => [k, v.slice(start)]))};
    const body = {model: model.id, timestamps: preview.timestamps, values: preview.values};
    const [ahead, checked] = await Promise.all([api("forecast", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)}),
      api("forecast/anomalies", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)})]);
    const target = ahead.target;
    const axis = preview.timestamps.concat(ahead.forecast.map((p) => p.timestamp));
    const pad = (list, before) => Array(before).fill(null).concat(list);
    const n = preview.timestamps.length;
    const readings = preview.values[target].concat(Array(ahead.forecast.length).fill(null));
    const flagged = new Map(checked.readings.filter((r) => r.anomaly).map((r) => [r.timestamp, r.value]));
    const anomalies = preview.timestamps.map((t) => flagged.has(t) ? flagged.get(t) : null).concat(Array(ahead.forecast.length).fill(null));
    if (!clear(box, setup, current)) return;
    timeChart(box, target + ": readings, forecast and its " + Math.round(100 * ahead.interval) + " % interval", axis, ["readings"], {readings}, {
      series: [{label: "forecast", stroke: "#e36209", width: 2}, {label: "lower", stroke: "#e3620955", dash: [4, 4]},
        {label: "upper", stroke: "#e3620955", dash: [4, 4]}, {label: "anomalies", stroke: "#c62828", width: 0, points: {show: true, size: 9, fill: "#c62828"}}],
      bands: [{series: [4, 3], fill: "#e3620922"}],
      data: [pad(ahead.forecast.map((p) => p.value), n), pad(ahead.forecast.map((p) => p.lower), n), pad(ahead.forecast.map((p) => p.upper), n), anomalies]});
    box.dataset.forecast = String(ahead.forecast.length);
    box.dataset.anomalies = String(checked.anomalies);
    note.textContent = ahead.forecast.length + " steps ahead from the newest " + n + " readings of " + model.dataset.name + "; " + checked.anomalies + " anomalies marked.";
  };
  select.addEventListener("change", () => show().catch((e) => toast(e.message)));
  if (forecasters.length) await show();
}

// ------------------------------------------------------------------------------------------ sweeps
async function sweepsPage() {
  const main = current;
  const page = await api("v1/sweeps?limit=100");
  main.replaceChildren(el("h1", {}, "Sweeps"), el("div", {class: "scroll"}, el("table", {id: "sweeps"},
    el("thead", {}, el("tr", {}, ["Sweep", "Status", "Metric", "Trials", "Created"].map((h) => el("th", {}, h)))),
    el("tbody", {}, page.items.length ? page.items.map((w) => el("tr", {"data-sweep": w.id},
      el("td", {}, el("a", {href: "#/sweeps/" + w.id}, w.name)), el("td", {class: "status " + w.status}, w.status),
      el("td", {}, w.metric), el("td", {}, Object.entries(w.counts).filter(([, n]) => n).map(([k, n]) => n + " " + k).join(", ")),
      el("td", {}, new Date(w.created_at).toLocaleString())))
      : el("tr", {}, el("td", {colspan: 5, class: "muted"}, "No sweeps yet: POST /v1/sweeps (docs/sweeps.md)."))))));
}

// A scatter plot on uPlot: points only, x numeric.
function scatter(container, title, xLabel, points, yLabel) {
  const sorted = points.slice().sort((a, b) => a[0] - b[0]);
  const width = () => Math.max(280, container.clientWidth - 8);
  const plot = new uPlot({title, width: width(), height: 220, scales: {x: {time: false}}, hooks: {setLegend: [showLatest]},
    axes: [{label: xLabel, incrs: xLabel === "trial" ? [1, 2, 5, 10, 20, 50, 100] : undefined}, {label: yLabel}],
    series: [{label: xLabel}, {label: yLabel, stroke: "#1f6feb", width: 0, points: {show: true, size: 7, fill: "#1f6feb"}}]},
    [sorted.map((p) => p[0]), sorted.map((p) => p[1])], container);
  cleanups.push(() => plot.destroy());
  return plot;
}

async function sweepPage(id) {
  const main = current;
  const sweep = await api("v1/sweeps/" + id);
  const trials = sweep.trials;
  const params = [...new Set(trials.flatMap((t) => Object.keys(t.params)))];
  const best = sweep.best ? sweep.best.number : null;
  const overTrials = el("div", {class: "chart", id: "sweep-metric"});
  const byParam = el("div", {class: "row", id: "sweep-params"});
  const importances = sweep.importances ? Object.entries(sweep.importances).sort((a, b) => b[1] - a[1]) : [];
  main.replaceChildren(el("h1", {}, "Sweep " + sweep.name, " ", el("span", {class: "status " + sweep.status}, sweep.status)),
    el("p", {class: "muted"}, sweep.metric + ", " + (sweep.direction === "maximize" ? "higher" : "lower") + " is better; " +
      trials.length + " trials", sweep.model ? [", best model ", el("a", {href: "#/models?name=" + encodeURIComponent(sweep.model.name)},
        sweep.model.name + " v" + sweep.model.version)] : ""),
    el("div", {class: "card"}, overTrials),
    importances.length ? [el("h2", {}, "What mattered"), el("table", {id: "sweep-importances"}, el("tbody", {}, importances.map(([k, v]) =>
      el("tr", {}, el("th", {}, k), el("td", {}, el("div", {class: "bar", style: "width: " + Math.round(100 * v) + "px", role: "img", "aria-label": k + ": " + (100 * v).toFixed(0) + "%"})),
        el("td", {}, (100 * v).toFixed(0) + " %")))))] : "",
    el("h2", {}, "Each parameter against the metric"), byParam,
    el("h2", {}, "Trials"),
    el("div", {class: "scroll"}, el("table", {id: "trials"}, el("thead", {}, el("tr", {}, ["#", "Status", sweep.metric, "Epochs", ...params].map((h) => el("th", {}, h)))),
      el("tbody", {}, trials.map((t) => el("tr", {"data-trial": t.number, class: t.number === best ? "best" : null},
        el("td", {}, el("a", {href: "#/jobs/" + t.job_id}, t.number + (t.number === best ? " (best)" : ""))),
        el("td", {class: "status " + t.status}, t.status), el("td", {}, fmt(t.value)), el("td", {}, t.epochs_done),
        params.map((p) => el("td", {}, typeof t.params[p] === "number" ? Number(t.params[p].toPrecision(4)) : String(t.params[p] ?? "")))))))));
  const done = trials.filter((t) => t.value !== null);
  scatter(overTrials, sweep.metric + " over trials", "trial", done.map((t) => [t.number, t.value]), sweep.metric);
  overTrials.dataset.points = String(done.length);
  for (const p of params.filter((p) => done.some((t) => typeof t.params[p] === "number"))) {
    const box = el("div", {class: "card chart", "data-param": p});
    byParam.append(box);
    scatter(box, p, p, done.filter((t) => typeof t.params[p] === "number").map((t) => [t.params[p], t.value]), sweep.metric);
  }
}

// ------------------------------------------------------------------------------------------ routing
const routes = [[/^#\/jobs\/([0-9a-f-]{36})$/, jobPage], [/^#\/compare\/([0-9a-f,-]+)$/, comparePage],
  [/^#\/new$/, newJobPage], [/^#\/draw$/, drawPage],
  [/^#\/datasets\/(.+)$/, datasetPage], [/^#\/datasets$/, datasetsPage], [/^#\/models(?:\?name=(.*))?$/, modelsPage],
  [/^#\/sweeps\/([0-9a-f-]{36})$/, sweepPage], [/^#\/sweeps$/, sweepsPage],
  [/^#\/forecast$/, forecastPage], [/^(#\/jobs)?$/, jobsPage]];

async function route() {
  for (const stop of cleanups) stop();
  cleanups = [];
  const hash = location.hash || "#/jobs";
  for (const link of document.querySelectorAll("nav a")) link.toggleAttribute("aria-current", hash.startsWith(link.getAttribute("href")));
  for (const link of document.querySelectorAll("nav a[aria-current]")) link.setAttribute("aria-current", "page");
  for (const [pattern, page] of routes) {
    const match = hash.match(pattern);
    if (match) {
      const root = current = el("div", {class: "page"});
      frame.replaceChildren(root);
      try { await page(...match.slice(1)); } catch (e) { root.replaceChildren(el("p", {class: "error"}, e.message)); }
      if (current === root) frame.focus();
      return;
    }
  }
  current = frame;
  frame.replaceChildren(el("p", {}, "No such page. ", el("a", {href: "#/jobs"}, "Jobs")));
}

// The key box only where a key is needed: a server that needs none publishes a schema that asks for none.
api("openapi.json").then((schema) => {
  if (!(schema.components || {}).securitySchemes) document.getElementById("key-form").hidden = true;
}).catch(() => {});
const keyInput = document.getElementById("api-key");
keyInput.value = sessionStorage.getItem(KEY) || "";
document.getElementById("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (keyInput.value.trim()) sessionStorage.setItem(KEY, keyInput.value.trim()); else sessionStorage.removeItem(KEY);
  toast(keyInput.value.trim() ? "key kept for this tab" : "key forgotten");
  route();
});
window.addEventListener("hashchange", route);
route();
