// A model's page, after its rollouts (docs/monitoring.md): the watched version's live quality beside its test
// figures, its drift over the last day as a chart (the largest PSI of each hour against the threshold), and
// the name's retraining policy with its newest events. Loaded before app.js, whose helpers (api, el, fmt,
// cleanups, showLatest) it calls when a page renders.
"use strict";

function liveQualityCard(live) {
  const rows = live.task === "classification"
    ? [["Live accuracy", live.accuracy === null ? "no labels yet" : fmt(live.accuracy) + (live.accuracy_ci95
        ? " (95 %: " + fmt(live.accuracy_ci95[0]) + "\u2013" + fmt(live.accuracy_ci95[1]) + ")" : "")],
       ["Test accuracy", fmt(live.test_accuracy)], ["Labelled instances", live.labels],
       ["Logged requests", live.logged_requests]]
    : [["Live MAE", fmt(live.mae)], ["Test MAE", fmt(live.test_mae)], ["Live RMSE", fmt(live.rmse)],
       ["Test RMSE", fmt(live.test_rmse)], ["Readings fed back", live.labels]];
  return el("div", {class: "card", id: "live-quality"}, el("h2", {}, "Live quality, last 24 h"),
    el("table", {}, el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {class: "metric"}, String(v)))))));
}

function driftCard(drift) {
  const card = el("div", {class: "card", id: "drift"}, el("h2", {}, "Drift, last 24 h"));
  if (!drift.profile) return card.appendChild(el("p", {class: "muted"}, drift.reason)), card;
  const state = drift.drifting === null ? "not enough logged traffic for a verdict (" + drift.instances + " of "
    + drift.min_instances + " instances)" : drift.drifting ? "drifting: " + drift.worst + " PSI " + fmt(drift.max_psi)
    + " over " + drift.threshold : "stable: largest PSI " + fmt(drift.max_psi) + " (" + drift.worst + "), threshold " + drift.threshold;
  const filled = drift.series.filter((p) => p.instances > 0).length;
  const box = el("div", {class: "chart", id: "drift-chart", "data-points": String(filled),
    "data-drifting": String(drift.drifting)});
  card.append(el("p", {class: "status " + (drift.drifting ? "failed" : drift.drifting === false ? "succeeded" : "")}, state), box);
  const hours = drift.series.map((_, i) => i - drift.series.length + 1);
  const width = () => Math.max(280, box.clientWidth - 8);
  const plot = new uPlot({title: "Largest PSI per hour", width: width(), height: 200, scales: {x: {time: false}},
    hooks: {setLegend: [showLatest]}, axes: [{label: "hours ago"}, {}],
    series: [{label: "hour"}, {label: "PSI", stroke: "#c0392b", width: 2, points: {show: true}},
             {label: "threshold", stroke: "#888", dash: [4, 4]}]},
    [hours, drift.series.map((p) => p.max_psi), drift.series.map(() => drift.threshold)], box);
  const resize = () => plot.setSize({width: width(), height: 200});
  window.addEventListener("resize", resize);
  cleanups.push(() => { window.removeEventListener("resize", resize); plot.destroy(); });
  return card;
}

function retrainingCard(policy) {
  if (!policy) return el("div", {class: "card", id: "retraining"}, el("h2", {}, "Retraining"),
    el("p", {class: "muted"}, "No retraining policy: PUT v1/models/{name}/retraining, or trainserve retraining set."));
  const t = policy.policy.triggers;
  const when = [t.drift ? "on drift" : null, t.min_live_accuracy !== null ? "live accuracy under " + t.min_live_accuracy : null,
    t.every_hours !== null ? "every " + t.every_hours + " h" : null].filter(Boolean).join(", ");
  return el("div", {class: "card", id: "retraining", "data-enabled": String(policy.enabled)}, el("h2", {}, "Retraining"),
    el("p", {}, (policy.enabled ? "On: " : "Off: ") + when + "; cool-down " + policy.policy.cooldown_hours + " h; "
      + (policy.policy.rollout ? "rolled out in canary steps" : "no rollout")),
    policy.job_id ? el("p", {}, "Training now: ", el("a", {href: "#/jobs/" + policy.job_id}, policy.job_id)) : "",
    policy.last_reason ? el("p", {class: "muted"}, policy.last_reason) : "",
    el("ol", {class: "decisions"}, policy.history.slice(-10).map((e) => el("li", {"data-kind": e.kind},
      e.time.slice(0, 19).replace("T", " ") + " " + e.kind + (e.reason ? ": " + e.reason : e.trigger ? ": " + e.trigger
        : e.error ? ": " + e.error : "")))));
}

// Renders the cards for ``version`` of ``name`` into ``box`` (once: the page is rendered again to refresh).
async function monitoringPanel(box, name, version) {
  const base = "v1/models/" + encodeURIComponent(name);
  const [live, drift, policy] = await Promise.all([
    api(base + "/versions/" + version + "/monitoring?window=24h"),
    api(base + "/versions/" + version + "/drift?window=24h&points=24"),
    api(base + "/retraining").catch(() => null)]);
  box.replaceChildren(el("h2", {}, "v" + version + " in production"), el("div", {class: "cards"},
    liveQualityCard(live), live.task === "classification" ? driftCard(drift) : "", retrainingCard(policy)));
}
