// The labeling page. Everything the server sends is shown with textContent (never innerHTML),
// so a response containing markup or script is displayed as the text it is.
"use strict";

const FLAGS = [["wrong", "wrong"], ["harmful", "harmful"], ["ignores_instruction", "ignores the instruction"]];
const $ = (id) => document.getElementById(id);
let current = null; // the task being ranked

function token() { return sessionStorage.getItem("rlhf-token"); }

async function api(path, body) {
  const opts = { headers: { "Authorization": "Bearer " + token() } };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error((data.error && data.error.message) || ("HTTP " + resp.status));
    err.status = resp.status;
    throw err;
  }
  return data;
}

function show(view) {
  for (const v of ["login-view", "task-view", "done-view"]) $(v).hidden = v !== view;
  $("logout").hidden = view === "login-view";
}

function showProgress(p) {
  $("progress").textContent =
    `you: ${p.mine} done, ${p.available} to go · all: ${p.submissions} of ${p.needed} rankings`;
}

function el(tag, props, children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children || []) e.appendChild(c);
  return e;
}

function renderTask(task) {
  current = task;
  $("prompt").textContent = task.prompt;
  $("comment").value = "";
  $("task-error").textContent = "";
  const list = $("responses");
  list.replaceChildren();
  const k = task.responses.length;
  task.responses.forEach((r, pos) => {
    const select = el("select", { className: "rank", id: "rank-" + pos });
    select.appendChild(el("option", { value: "", textContent: "rank…" }));
    for (let i = 1; i <= k; i++) select.appendChild(el("option", { value: String(i), textContent: String(i) }));
    select.dataset.index = String(r.index);
    const flags = FLAGS.map(([value, label]) => {
      const box = el("input", { type: "checkbox", className: "flag", value });
      box.dataset.index = String(r.index);
      return el("label", {}, [box, document.createTextNode(" " + label)]);
    });
    const text = el("pre", { className: "text" });
    text.textContent = r.text;
    list.appendChild(el("li", { className: "response" }, [text, el("div", { className: "controls" }, [select, ...flags])]));
  });
  show("task-view");
}

async function loadNext() {
  const data = await api("/api/next");
  showProgress(data.progress);
  if (data.task) renderTask(data.task); else { current = null; show("done-view"); }
}

function collect() {
  const byRank = new Map();
  for (const s of document.querySelectorAll("select.rank")) {
    if (!s.value) throw new Error("give every response a rank");
    const r = Number(s.value);
    if (!byRank.has(r)) byRank.set(r, []);
    byRank.get(r).push(Number(s.dataset.index));
  }
  const ranking = [...byRank.keys()].sort((a, b) => a - b).map((r) => byRank.get(r));
  const flags = {};
  for (const b of document.querySelectorAll("input.flag:checked")) {
    (flags[b.dataset.index] = flags[b.dataset.index] || []).push(b.value);
  }
  return { task_id: current.id, ranking, flags, comment: $("comment").value };
}

async function submit() {
  $("task-error").textContent = "";
  let body;
  try { body = collect(); } catch (e) { $("task-error").textContent = e.message; return; }
  $("submit").disabled = true;
  try {
    await api("/api/submit", body);
    await loadNext();
  } catch (e) {
    $("task-error").textContent = "not saved: " + e.message + " (try again)";
  } finally {
    $("submit").disabled = false;
  }
}

async function login() {
  const t = $("token").value.trim();
  if (!t) return;
  sessionStorage.setItem("rlhf-token", t);
  try { await start(); } catch (e) {
    sessionStorage.removeItem("rlhf-token");
    $("login-error").textContent = e.status === 401 ? "unknown token" : e.message;
    show("login-view");
  }
}

async function start() {
  const me = await api("/api/me");
  $("who").textContent = me.name;
  await loadNext();
}

function logout() {
  sessionStorage.removeItem("rlhf-token");
  $("who").textContent = "";
  $("progress").textContent = "";
  show("login-view");
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("click", login);
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") login(); });
  $("submit").addEventListener("click", submit);
  $("logout").addEventListener("click", logout);
  if (token()) start().catch(() => logout()); else show("login-view");
});
