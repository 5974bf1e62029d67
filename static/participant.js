// Participant trial page: fetch the next trial, show it, send the answer (idempotent retries),
// preload the following pair. Keys 1-5 answer; clicking an image shows it large.
(function () {
  "use strict";
  var root = document.getElementById("study");
  var token = root.dataset.token, slug = root.dataset.slug;
  var buttons = Array.prototype.slice.call(document.querySelectorAll(".answer"));
  var el = function (id) { return document.getElementById(id); };
  var current = null, busy = false, shownAt = 0;

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var b = new Uint8Array(16); crypto.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
  }
  function setEnabled(on) { buttons.forEach(function (b) { b.disabled = !on; }); }
  function showError(msg) { var e = el("error"); e.textContent = msg; e.hidden = !msg; }
  function preload(urls) { if (urls) [urls.left, urls.right].forEach(function (u) { new Image().src = u; }); }

  function render(t) {
    current = t;
    el("prompt").textContent = t.prompt;
    el("practice").hidden = !t.practice;
    var p = t.progress, pct = p.total ? Math.round(100 * p.done / p.total) : 0;
    el("progress-bar").style.width = pct + "%";
    el("progress-text").textContent = "Pair " + Math.min(p.done + 1, p.total) + " of " + p.total;
    var loaded = 0;
    function ready() { if (++loaded === 2) { setEnabled(true); shownAt = performance.now(); busy = false; } }
    ["left", "right"].forEach(function (side) {
      var img = el(side);
      img.onload = ready; img.onerror = ready;
      img.src = t[side];
    });
    preload(t.preload);
  }

  function next() {
    setEnabled(false); busy = true;
    fetch("/api/next", { cache: "no-store", headers: { "X-Participant": token } })
      .then(function (r) { return r.json().then(function (body) { return { status: r.status, body: body }; }); })
      .then(function (res) {
        if (res.status === 409) {
          // No work left, or the study closed meanwhile (the run page then says so).
          window.location.href = "/s/" + slug + (res.body.reason === "not_open" ? "/run" : "/full");
          return;
        }
        if (res.status !== 200) { showError(res.body.detail || "Something went wrong; please reload."); return; }
        if (res.body.done) { window.location.href = "/s/" + slug + "/done"; return; }
        showError(""); render(res.body);
      })
      .catch(function () { showError("Connection problem; retrying…"); setTimeout(next, 2000); });
  }

  function answer(choice) {
    if (busy || !current) return;
    busy = true; setEnabled(false);
    var body = JSON.stringify({ choice: choice, request_id: uuid(), response_ms: Math.round(performance.now() - shownAt) });
    var trial = current.trial, tries = 0;
    (function send() {
      fetch("/api/trials/" + encodeURIComponent(trial) + "/answer", {
        method: "POST", headers: { "Content-Type": "application/json", "X-Participant": token }, body: body
      }).then(function (r) {
        if (r.ok || r.status === 409) { next(); return; }  // 409: expired or already answered; move on
        return r.json().then(function (b) { showError(b.detail || "Could not save the answer."); busy = false; setEnabled(true); });
      }).catch(function () {
        // Network error: resend the same request_id, so the server stores the answer once.
        if (++tries < 5) { setTimeout(send, 1000 * tries); } else { showError("Connection lost; please reload."); busy = false; setEnabled(true); }
      });
    })();
  }

  buttons.forEach(function (b) { b.addEventListener("click", function () { answer(parseInt(b.dataset.choice, 10)); }); });
  document.addEventListener("keydown", function (e) {
    var box = el("lightbox");
    if (e.key === "Escape" && !box.hidden) { box.hidden = true; return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key >= "1" && e.key <= "5") { e.preventDefault(); answer(parseInt(e.key, 10)); }
  });
  ["left", "right"].forEach(function (side) {
    var img = el(side);
    function enlarge() { el("lightbox-img").src = img.src; el("lightbox").hidden = false; }
    img.addEventListener("click", enlarge);
    img.addEventListener("keydown", function (e) { if (e.key === "Enter") enlarge(); });
  });
  el("lightbox").addEventListener("click", function () { el("lightbox").hidden = true; });
  next();
})();
