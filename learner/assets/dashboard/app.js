// The rlvr dashboard: history from /api/history, live updates over server-sent events from /api/events,
// run controls through POST /api/control/ACTION with the bearer token. Nothing here talks to another host.
"use strict";

// Charts, each over training/global_step, under verl's metric names.
const CHARTS = [
  { title: "Reward", keys: ["critic/score/mean", "critic/accuracy/mean"] },
  { title: "Response length (tokens)", keys: ["response_length/mean"] },
  { title: "Policy loss and KL", keys: ["actor/pg_loss", "actor/kl_loss"] },
  { title: "Entropy", keys: ["actor/entropy"] },
  { title: "Clip fraction", keys: ["actor/pg_clipfrac"] },
  { title: "Grad norm", keys: ["actor/grad_norm"] },
  { title: "Timing (s)", keys: ["timing_s/gen", "timing_s/update_actor", "timing_s/sync_weights"] },
  { title: "Throughput (tokens/s)", keys: ["perf/throughput"] },
];
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"];
const X = "training/global_step";

const $ = (id) => document.getElementById(id);
const charts = [];
let steps = [];
let announced = false; // weights announced by a weight server (a distributed run)

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function chartData(keys) {
  return [steps.map((s) => s[X]), ...keys.map((k) => steps.map((s) => (k in s ? s[k] : null)))];
}

function buildCharts() {
  const root = $("charts");
  for (const spec of CHARTS) {
    const box = el("div", { class: "chart", "data-title": spec.title, "data-points": "0" }, el("h3", {}, spec.title));
    root.append(box);
    const width = Math.max(360, box.clientWidth || 420);
    const opts = {
      width, height: 200,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, {}],
      series: [{ label: "step" }, ...spec.keys.map((k, i) => ({ label: k, stroke: COLORS[i % COLORS.length], width: 1.5, points: { show: true, size: 4 } }))],
    };
    const plot = new uPlot(opts, chartData(spec.keys), box);
    charts.push({ spec, plot, box });
  }
}

function redraw() {
  for (const c of charts) {
    c.plot.setData(chartData(c.spec.keys));
    c.box.dataset.points = String(steps.length);
  }
  if (steps.length) {
    const last = steps[steps.length - 1];
    $("step").textContent = last[X];
    if (!announced) $("weights").textContent = "v" + last["training/weight_version"];
  }
}

function addStep(s) {
  if (steps.length && steps[steps.length - 1][X] >= s[X]) return; // already shown (history raced the stream)
  steps.push(s);
  redraw();
}

function cell(v) { return el("td", {}, v === null || v === undefined ? "-" : String(v)); }

function showStatus(s) {
  $("run-name").textContent = s.run || "";
  const state = $("state");
  state.textContent = s.state;
  state.className = "badge " + s.state;
  document.body.dataset.state = s.state;
  announced = Boolean(s.weights);
  if (s.weights) $("weights").textContent = "v" + s.weights.version;
  else $("sync").textContent = "in process: the actor shares the learner's memory (embedded run)";
  const members = $("members").tBodies[0];
  members.replaceChildren(...(s.members || []).map((m) => el("tr", {},
    cell(m.id), cell(String(m.role).toLowerCase()), cell(m.host), cell(m.weight_version),
    cell(m.groups_done), cell(Number(m.groups_per_s).toFixed(2)), cell(m.seen_s_ago + " s ago"))));
  const queues = $("queues").tBodies[0];
  queues.replaceChildren(...(s.queues || []).map((q) => el("tr", {}, cell(q.name), cell(q.length), cell(q.pending), cell(q.lag))));
  $("dead").textContent = s.dead_letters;
  if (s.weights) {
    const actors = (s.members || []).filter((m) => String(m.role).toLowerCase() === "actor");
    const synced = actors.filter((m) => m.weight_version === s.weights.version).length;
    $("sync").textContent = `version ${s.weights.version}, ${(s.weights.bytes / 1e6).toFixed(1)} MB, checksum ${String(s.weights.checksum || "").slice(0, 12)}… — ${synced}/${actors.length} actors on it`;
  }
}

let groups = [];
function showGroups(list) {
  groups = list;
  const select = $("group-select");
  const keep = select.value;
  select.replaceChildren(...groups.map((g, i) => el("option", { value: String(i) }, `step ${g.step} · ${g.group} · ${g.kind}`)));
  if (keep && Number(keep) < groups.length) select.value = keep;
  showGroup();
}

function rewardClass(r) { return r > 0 ? "reward-pos" : r < 0 ? "reward-neg" : "reward-zero"; }

function showGroup() {
  const g = groups[Number($("group-select").value || 0)];
  const root = $("rollout");
  if (!g) { root.replaceChildren(el("p", { class: "muted" }, "no rollouts yet")); return; }
  root.replaceChildren(
    el("p", {}, `group ${g.group} (${g.kind}) · actor ${g.actor} · verifier ${g.verifier} · ground truth: `, el("code", {}, g.ground_truth)),
    el("div", { class: "prompt" }, g.prompt),
    ...g.samples.map((s, i) => el("div", { class: "sample" },
      el("div", {}, `#${i} · `, el("span", { class: rewardClass(s.reward) }, `reward ${s.reward}`),
        ` · ${s.outcome} · finish ${s.finish_reason} · ${s.tokens} tokens · weights v${s.weight_version}`),
      el("pre", {}, s.text),
      s.detail ? el("div", { class: "detail" }, s.detail) : "")));
  document.body.dataset.groups = String(groups.length);
}

async function refreshGroups() {
  const r = await fetch("/api/rollouts");
  if (r.ok) showGroups(await r.json());
}

async function control(action) {
  const token = $("token").value;
  sessionStorage.setItem("rlvr-token", token);
  const r = await fetch("/api/control/" + action, { method: "POST", headers: token ? { Authorization: "Bearer " + token } : {} });
  const text = r.ok ? `${action}: done` : `${action}: refused (${r.status}) ${(await r.text()).trim()}`;
  $("control-result").textContent = text;
  $("control-result").dataset.status = String(r.status);
}

async function start() {
  buildCharts();
  $("token").value = sessionStorage.getItem("rlvr-token") || "";
  for (const b of document.querySelectorAll("button[data-action]")) b.addEventListener("click", () => control(b.dataset.action));
  $("group-select").addEventListener("change", showGroup);
  const events = new EventSource("/api/events");
  events.addEventListener("step", (e) => addStep(JSON.parse(e.data)));
  events.addEventListener("status", (e) => showStatus(JSON.parse(e.data)));
  events.addEventListener("rollouts", () => refreshGroups());
  events.addEventListener("eval", (e) => { const v = JSON.parse(e.data); $("eval").textContent = `eval ${v.when}: pass@1 ${v.pass_at_1.toFixed(3)}`; });
  events.onopen = () => { $("live").textContent = "live"; };
  events.onerror = () => { $("live").textContent = "reconnecting…"; };
  const h = await (await fetch("/api/history")).json();
  $("run-name").textContent = h.run;
  for (const s of h.steps) addStep(s);
  document.body.dataset.ready = "1";
  const status = await fetch("/api/status");
  if (status.ok) showStatus(await status.json());
  await refreshGroups();
}

document.addEventListener("DOMContentLoaded", () => { start().catch((e) => { $("live").textContent = "error: " + e; }); });
