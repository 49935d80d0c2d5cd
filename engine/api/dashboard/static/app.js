// stepstream dashboard: small, no framework. Data is only ever put in the page with
// textContent (never innerHTML), so event data and step outputs stay text.
"use strict";

function $(sel, root) { return (root || document).querySelector(sel); }
function $all(sel, root) { return Array.from((root || document).querySelectorAll(sel)); }

async function postJSON(url, body) {
  const res = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? "" : JSON.stringify(body),
  });
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    const msg = data && data.error ? data.error : res.status + " " + res.statusText;
    throw new Error(msg);
  }
  return data;
}

function show(el, text) { if (el) { el.textContent = text; } }

// A form's JSON "data" field, or undefined (with the reason shown in `out`).
function formData(form, out) {
  try { return JSON.parse(form.elements.data.value || "{}"); } catch (e) {
    show(out, "Data is not valid JSON: " + e.message); return undefined;
  }
}

// --- waterfall: positions come from data attributes (no inline styles: CSP) ----------
function placeBars() {
  $all(".wf-bar").forEach(function (bar) {
    bar.style.left = bar.dataset.left + "%";
    bar.style.width = bar.dataset.width + "%";
  });
}

// --- run actions -------------------------------------------------------------------------
function runActions() {
  const err = $("#action-error");
  const cancel = $("#cancel");
  if (cancel) {
    cancel.addEventListener("click", async function () {
      cancel.disabled = true;
      try {
        await postJSON("/v1/runs/" + encodeURIComponent(cancel.dataset.run) + "/cancel",
                       { reason: "cancelled from the dashboard" });
        show(err, "");
        waitForStatus(cancel.dataset.run, "Cancelled");
      } catch (e) { show(err, "Cancel failed: " + e.message); cancel.disabled = false; }
    });
  }
  const rerun = $("#rerun");
  if (rerun) {
    rerun.addEventListener("click", async function () {
      rerun.disabled = true;
      try {
        const data = await postJSON("/v1/runs/" + encodeURIComponent(rerun.dataset.run) + "/rerun");
        if (data && data.run_id) { await goToRun(data.run_id); return; }
        show(err, "Re-run answered without a run id");
      } catch (e) { show(err, "Re-run failed: " + e.message); }
      rerun.disabled = false;
    });
  }
}

// A run just asked for (invoke, re-run) exists once the engine has folded its request:
// wait for it (bounded), then open its page.
async function goToRun(runId) {
  for (let i = 0; i < 40; i++) {
    try {
      const res = await fetch("/v1/runs/" + encodeURIComponent(runId), { credentials: "same-origin" });
      if (res.ok) { break; }
    } catch (e) { /* try again */ }
    await new Promise(function (r) { setTimeout(r, 250); });
  }
  window.location.assign("/runs/" + encodeURIComponent(runId));
}

// After a cancel: reload once the run says so (the engine folds the cancel shortly).
function waitForStatus(runId, status) {
  let tries = 0;
  const tick = async function () {
    tries += 1;
    try {
      const res = await fetch("/v1/runs/" + encodeURIComponent(runId), { credentials: "same-origin" });
      const body = await res.json();
      if (body.data && body.data.status === status) { window.location.reload(); return; }
    } catch (e) { /* try again */ }
    if (tries < 60) { setTimeout(tick, 500); }
  };
  tick();
}

// --- runs page: live refresh -----------------------------------------------------------
function statusCell(status) {
  const span = document.createElement("span");
  span.className = "status s-" + String(status || "").toLowerCase();
  span.textContent = status;
  return span;
}

function runRow(r) {
  const tr = document.createElement("tr");
  tr.dataset.run = r.run_id;
  const link = document.createElement("a");
  link.className = "mono";
  link.href = "/runs/" + encodeURIComponent(r.run_id);
  link.textContent = r.run_id;
  const cells = [link, r.function_id, statusCell(r.status), r.event_name, r.requested_at, r.duration];
  cells.forEach(function (c, i) {
    const td = document.createElement("td");
    if (i === 4) { td.className = "mono"; }
    if (c instanceof Node) { td.appendChild(c); } else { td.textContent = c == null ? "" : String(c); }
    tr.appendChild(td);
  });
  return tr;
}

function liveRuns() {
  const button = $("#live");
  const body = $("#runs tbody");
  if (!button || !body) { return; }
  let on = true;
  button.addEventListener("click", function () {
    on = !on;
    button.textContent = on ? "Live: on" : "Live: paused";
    button.dataset.live = on ? "on" : "off";
    button.setAttribute("aria-pressed", on ? "true" : "false");
  });
  const refresh = async function () {
    if (on && !document.hidden) {
      try {
        const res = await fetch("/ui/runs.json" + window.location.search, { credentials: "same-origin" });
        if (res.ok) {
          const data = await res.json();
          const rows = data.rows.map(runRow);
          if (rows.length === 0) {
            const tr = document.createElement("tr");
            tr.className = "empty";
            const td = document.createElement("td");
            td.colSpan = 6;
            td.textContent = "No runs match.";
            tr.appendChild(td);
            rows.push(tr);
          }
          body.replaceChildren.apply(body, rows);
        }
      } catch (e) { /* the next tick tries again */ }
    }
    setTimeout(refresh, 2000);
  };
  setTimeout(refresh, 2000);
}

// --- events page: send a test event --------------------------------------------------
function sendEvent() {
  const form = $("#send-event");
  if (!form) { return; }
  const out = $("#send-result");
  form.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    const data = formData(form, out);
    if (data === undefined) { return; }
    try {
      const res = await postJSON("/ui/send-event", { name: form.elements.name.value, data: data });
      show(out, "Sent " + res.ids.join(", "));
      setTimeout(function () { window.location.assign("/events"); }, 800);
    } catch (e) { show(out, "Not sent: " + e.message); }
  });
}

// --- functions page: invoke ------------------------------------------------------------
function invokeForms() {
  $all("form.invoke").forEach(function (form) {
    const out = $(".invoke-error", form);
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      const data = formData(form, out);
      if (data === undefined) { return; }
      try {
        const res = await postJSON("/v1/functions/" + encodeURIComponent(form.dataset.fn) + "/invoke", { data: data });
        await goToRun(res.run_id);
      } catch (e) { show(out, "Invoke failed: " + e.message); }
    });
  });
}

// A run that has not ended: reload its page when it changes (status, steps, timeline),
// checked every 2 s through the API; paused while the tab is hidden.
function liveRun() {
  const head = $("#run-id");
  const status = $("#run-status");
  if (!head || !status || $("#rerun")) { return; }
  let seen = null;
  const tick = async function () {
    if (!document.hidden) {
      try {
        const res = await fetch("/v1/runs/" + encodeURIComponent(head.textContent), { credentials: "same-origin" });
        if (res.ok) {
          const run = (await res.json()).data;
          const now = [run.status, run.steps.length, run.timeline.length].join("/");
          if (seen !== null && now !== seen) { window.location.reload(); return; }
          seen = now;
        }
      } catch (e) { /* try again */ }
    }
    setTimeout(tick, 2000);
  };
  tick();
}

function logout() {
  const button = $("[data-action=logout]");
  if (!button) { return; }
  button.addEventListener("click", async function () {
    try { await postJSON("/logout"); } catch (e) { /* already out */ }
    window.location.assign("/login");
  });
}

document.addEventListener("DOMContentLoaded", function () {
  placeBars();
  runActions();
  liveRuns();
  liveRun();
  sendEvent();
  invokeForms();
  logout();
});
