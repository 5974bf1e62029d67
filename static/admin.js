// Admin pages: confirmation for destructive forms, and the live progress poll.
"use strict";

document.addEventListener("submit", (event) => {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

function lookup(obj, path) {
  return path.split(".").reduce((o, k) => (o == null ? o : o[k]), obj);
}

function renderProgress(root, data) {
  root.querySelectorAll("[data-k]").forEach((el) => {
    const v = lookup(data, el.dataset.k);
    el.textContent = v == null ? "—" : String(v);
  });
  const state = document.getElementById("state");
  if (state && data.state) { state.textContent = data.state; state.className = "badge badge-" + data.state; }
  const rows = new Map(data.per_pair.map((r) => [String(r.pair_id), r]));
  root.querySelectorAll("#pairs-table tbody tr").forEach((tr) => {
    const r = rows.get(tr.dataset.pair);
    if (!r) return;
    tr.querySelector(".r").textContent = r.ratings;
    tr.querySelector("meter").value = r.ratings;
  });
}

function pollProgress() {
  const root = document.getElementById("progress");
  if (!root) return;
  const interval = Number(root.dataset.intervalMs) || 5000;
  const tick = async () => {
    if (!document.hidden) {
      try {
        const res = await fetch(root.dataset.url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (res.ok) renderProgress(root, await res.json());
      } catch (e) { /* keep the last numbers; the next tick retries */ }
    }
    setTimeout(tick, interval);
  };
  setTimeout(tick, interval);
}

document.addEventListener("DOMContentLoaded", pollProgress);

// Copy buttons: <button class="copy" data-copy="ID"> copies the value of the input with that id.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  source.select();
  try { await navigator.clipboard.writeText(source.value); } catch (e) { document.execCommand("copy"); }
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
});

// Pair page: lay the token map over the treatment image.
document.addEventListener("change", (event) => {
  if (event.target.id !== "toggle-overlay") return;
  const overlay = document.getElementById("map-overlay");
  if (overlay) overlay.hidden = !event.target.checked;
});
