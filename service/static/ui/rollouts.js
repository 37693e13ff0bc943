// The models page's rollouts (docs/rollouts.md): each running or paused rollout of the page's model (every
// model's, on the page of all models), live: its weights, this step's numbers per version, each gate against
// its bound, the decisions so far, and pause, resume, promote and abort. Loaded before app.js, whose helpers
// (api, el, fmt, toast, cleanups) it calls when a page renders.
"use strict";

const GATE_NAMES = {error_rate: "Error rate", p99_latency_ms: "p99 latency (ms)", agreement: "Agreement",
  difference: "Forecast difference"};

function rolloutCard(r, refresh) {
  const base = "v1/models/" + encodeURIComponent(r.name) + "/rollouts/" + r.id + "/";
  const act = (action) => el("button", {"data-action": action, class: action === "abort" ? "danger" : null, onclick: async () => {
    try { const after = await api(base + action, {method: "POST"}); toast(r.name + "@" + r.alias + ": " + after.status); await refresh(); }
    catch (e) { toast(e.message); } }}, action[0].toUpperCase() + action.slice(1));
  const arms = ["stable", "candidate"].map((arm) => {
    const s = r.live[arm] || {};
    const version = arm === "stable" ? r.stable.version : r.candidate.version;
    const share = r.mode === "shadow" ? (arm === "stable" ? 100 : 0) : (arm === "stable" ? 100 - r.weight : r.weight);
    return el("tr", {"data-arm": arm}, el("td", {}, arm + " (v" + version + ")"), el("td", {}, share + " %"),
      el("td", {}, s.requests ?? 0), el("td", {}, s.errors ?? 0), el("td", {}, fmt(s.p50_ms)), el("td", {}, fmt(s.p99_ms)),
      el("td", {}, s.compared ?? 0));
  });
  const gates = r.checks.map((c) => el("tr", {"data-gate": c.gate, class: c.passed === false ? "differs" : null},
    el("td", {}, GATE_NAMES[c.gate] || c.gate), el("td", {class: "metric"}, fmt(c.value)), el("td", {class: "metric"}, fmt(c.bound)),
    el("td", {class: "metric"}, fmt(c.stable)),
    el("td", {class: "status " + (c.passed === false ? "failed" : c.passed ? "succeeded" : "")}, c.passed === null ? "waiting" : c.passed ? "passing" : "failing"),
    el("td", {class: "muted"}, c.reason)));
  const decisions = r.history.filter((e) => e.kind !== "status" || e.reason).map((e) => el("li", {"data-kind": e.kind},
    e.time.slice(11, 19) + " ",
    e.kind === "step" ? "step " + (e.step + 1) + " begins: " + e.weight + " %"
      : e.kind === "verdict" ? "step " + (e.step + 1) + " " + (e.verdict === "pass" ? "passed" : "failed")
      : e.status + ": " + e.reason));
  const active = r.status === "running" || r.status === "paused";
  return el("div", {class: "card rollout", "data-rollout": r.id, "data-status": r.status},
    el("h2", {}, r.name + "@" + r.alias + ": v" + r.stable.version + " \u2192 v" + r.candidate.version + " (" + r.mode + ")"),
    el("p", {}, el("span", {class: "status " + ({succeeded: "succeeded", rolled_back: "failed"}[r.status] || "")}, r.status),
      active ? ", step " + (r.step + 1) + " of " + r.steps.length + " at " + r.weight + " % (steps: " + r.steps.map((s) => s.weight + " %").join(", ") + ")" : "",
      r.reason ? el("span", {class: "muted"}, " \u2014 " + r.reason) : ""),
    active ? el("div", {class: "toolbar"}, r.status === "running" ? act("pause") : act("resume"), act("promote"), act("abort")) : "",
    el("div", {class: "scroll"}, el("table", {class: "rollout-arms"},
      el("thead", {}, el("tr", {}, ["Version", "Traffic", "Requests", "Errors", "p50 ms", "p99 ms", "Compared"].map((h) => el("th", {}, h)))),
      el("tbody", {}, arms))),
    gates.length ? el("div", {class: "scroll"}, el("table", {class: "rollout-gates"},
      el("thead", {}, el("tr", {}, ["Gate", "Candidate", "Bound", "Stable", "Now", "Why"].map((h) => el("th", {}, h)))),
      el("tbody", {}, gates))) : "",
    decisions.length ? el("ol", {class: "decisions"}, decisions) : "");
}

// Renders the rollouts into ``box`` and keeps them live while the page is shown (every 2 s).
async function rolloutsPanel(box, name) {
  let timer = null, stopped = false;
  const refresh = async () => {
    const path = name ? "v1/models/" + encodeURIComponent(name) + "/rollouts?limit=5" : "v1/rollouts?status=running&limit=20";
    const page = await api(path);
    const shown = page.items.filter((r, i) => r.status === "running" || r.status === "paused" || (name && i === 0));
    box.replaceChildren(...(shown.length ? [el("h2", {}, "Rollouts"), ...shown.map((r) => rolloutCard(r, refresh))] : []));
  };
  const tick = async () => {
    if (stopped || !box.isConnected) return;
    try { await refresh(); } catch (_) { /* the next tick tries again */ }
    if (!stopped) timer = setTimeout(tick, 2000);
  };
  cleanups.push(() => { stopped = true; clearTimeout(timer); });
  await refresh();
  timer = setTimeout(tick, 2000);
}
