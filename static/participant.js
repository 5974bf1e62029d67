// Participant trial page: fetch the next trial, show it as large as the screen allows, unlock the
// answers after the study's minimum time (countdown), send the answer with the compare view's log
// (idempotent retries), preload the following pair. Keys: 1-5 answer, C compare view, F flicker.
// While the compare view is open every key goes to it: 1-5 close it and answer nothing.
// Several questions per trial (issue 24): keys 1-5 answer the question in focus (else the first
// unanswered one) and move to the next; a click or tap does the same; Next or Enter sends every
// answer in one request once all are given.
(function () {
  "use strict";
  var root = document.getElementById("study");
  var d = root.dataset, token = d.token, slug = d.slug;
  var minMs = parseInt(d.minMs, 10) || 0, maxUpscale = parseFloat(d.maxUpscale) || 1;
  var tools = d.tools === "1";
  var buttons = Array.prototype.slice.call(document.querySelectorAll(".answer"));
  var el = function (id) { return document.getElementById(id); };
  var current = null, busy = true, unlocked = false, arrivedAt = 0, unlockedAt = 0, countdown = null;
  var viewer = tools ? window.CompareView({ maxUpscale: maxUpscale, onClose: viewerClosed }) : null;
  var groups = Array.prototype.slice.call(document.querySelectorAll(".criterion"));
  var several = groups.length > 1, sendButton = el("send"), picked = {}, active = 0;

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var b = new Uint8Array(16); crypto.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
  }
  function setEnabled(on) {
    buttons.forEach(function (b) { b.disabled = !on; });
    if (sendButton) sendButton.disabled = !(on && allPicked());
  }
  // ---- several questions: what is picked, which question keys go to
  function keyOf(i) { return groups[i].dataset.key; }
  function allPicked() { return groups.every(function (g) { return picked[g.dataset.key] !== undefined; }); }
  function setActive(i) {
    active = i;
    groups.forEach(function (g, j) { g.classList.toggle("current", j === i && !allPicked()); });
  }
  function resetPicks() {
    picked = {};
    buttons.forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
    setActive(0);
    if (sendButton) sendButton.disabled = true;
    el("send-hint").textContent = "Answer every question to go on.";
  }
  function pick(i, choice, moveFocus) {
    var key = keyOf(i), label = "";
    picked[key] = choice;
    groups[i].querySelectorAll(".answer").forEach(function (b) {
      var on = parseInt(b.dataset.choice, 10) === choice;
      b.setAttribute("aria-pressed", on ? "true" : "false");
      if (on) label = b.querySelector("span").textContent;
    });
    var done = allPicked();
    sendButton.disabled = !(done && unlocked && !busy);
    el("send-hint").textContent = done ? "All answered: Next sends them." : "Answer every question to go on.";
    el("sr-status").textContent = groups[i].querySelector("legend").textContent.replace(/^\s*\d+\.\s*/, "") + ": " + label +
      (done ? ". All answered: press Next." : "");
    // The next question without an answer (after this one first), or Next when all are answered.
    var nextIndex = -1;
    for (var k = 1; k <= groups.length; k++) {
      var j = (i + k) % groups.length;
      if (picked[keyOf(j)] === undefined) { nextIndex = j; break; }
    }
    setActive(nextIndex < 0 ? Math.min(i + 1, groups.length - 1) : nextIndex);
    if (!moveFocus) return;
    var target = nextIndex < 0 ? sendButton : groups[nextIndex].querySelector(".answer");
    target.focus({ preventScroll: true });
    target.scrollIntoView({ block: "nearest" });
  }
  function focusedGroup() {
    var g = document.activeElement && document.activeElement.closest ? document.activeElement.closest(".criterion") : null;
    return g ? groups.indexOf(g) : -1;
  }
  function showError(msg) { var e = el("error"); e.textContent = msg; e.hidden = !msg; }
  function note(msg) { var n = el("note"); n.textContent = msg || ""; n.hidden = !msg; }
  function preload(urls) { if (urls) [urls.left, urls.right].forEach(function (u) { new Image().src = u; }); }

  // ---- layout: images as large as the screen allows, never past maxUpscale x natural size
  function layout() {
    var left = el("left"), w = left.naturalWidth, h = left.naturalHeight;
    if (!w || !h) return;
    var pair = el("pair"), stacked = getComputedStyle(pair).flexDirection === "column";
    var gap = parseFloat(getComputedStyle(pair).columnGap) || 12;
    var boxW = stacked ? pair.clientWidth : (pair.clientWidth - gap) / 2;
    var boxH = boxW * h / w;
    if (!stacked) {
      // Side by side: the whole trial fits on one screen (answers included).
      var below = el("below").getBoundingClientRect().height + 16;
      var top = pair.getBoundingClientRect().top + window.scrollY;
      var caption = left.closest("figure").querySelector("figcaption").getBoundingClientRect().height;
      boxH = Math.max(120, window.innerHeight - top - below - caption - 8);
    }
    var scale = window.CompareView.fitScale(w, h, boxW, boxH, maxUpscale);
    ["left", "right"].forEach(function (side) {
      var img = el(side);
      img.style.width = Math.floor(w * scale) + "px";
      img.style.height = Math.floor(h * scale) + "px";
      img.style.imageRendering = window.CompareView.rendering(scale);
    });
  }
  window.addEventListener("resize", layout);

  // ---- unlocking the answers after the minimum time, with a visible countdown
  function startCountdown() {
    var until = performance.now() + minMs, lock = el("lock");
    clearInterval(countdown);
    function tick() {
      var left = until - performance.now();
      if (left <= 0) {
        clearInterval(countdown); countdown = null;
        lock.style.visibility = "hidden";  // keeps its line: the answers never jump
        unlocked = true; unlockedAt = performance.now(); setEnabled(true);
        if (minMs) el("sr-status").textContent = "You can answer now.";
        return;
      }
      lock.style.visibility = "visible";
      lock.textContent = "Answers open in " + (Math.ceil(left / 100) / 10).toFixed(1) + " s: look at both images";
    }
    // Screen readers hear the wait once, not every tenth of a second.
    el("sr-status").textContent = minMs ? "Answers open in " + (minMs / 1000).toFixed(1) + " seconds." : "";
    tick();
    if (!unlocked) countdown = setInterval(tick, 100);
  }

  function render(t) {
    if (viewer) viewer.close();
    current = t; unlocked = false; arrivedAt = performance.now();
    // A new trial starts at its top (on a phone the answer buttons sit below the fold, and the
    // browser would otherwise keep the previous trial's scroll position).
    window.scrollTo(0, 0);
    note(""); el("warning").hidden = true;
    if (several) resetPicks();
    el("prompt").textContent = t.prompt;
    el("instruction").textContent = t.instruction || "";
    el("instruction").hidden = !t.instruction;
    var p = t.progress;
    el("practice").hidden = !t.practice;
    var done = t.practice ? p.practice_done : p.done, total = t.practice ? p.practice_total : p.total;
    var pct = total ? Math.round(100 * done / total) : 0;
    el("progress-bar").style.width = pct + "%";
    el("progress").setAttribute("aria-valuenow", String(pct));
    el("progress-text").textContent = (t.practice ? "Practice " : "Pair ") + Math.min(done + 1, total) + " of " + total;
    var loaded = 0;
    function ready() {
      if (++loaded !== 2) return;
      layout(); window.scrollTo(0, 0); busy = false;
      startCountdown();
    }
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
    if (busy || !current || !unlocked) return;
    if (several && !allPicked()) return;
    busy = true; setEnabled(false);
    var compared = viewer ? viewer.takeLog() : { used_zoom: false, used_flicker: false, max_zoom: 1, compare_view_ms: 0, flicker_ms: 0 };
    compared.unlock_ms = Math.round(unlockedAt - arrivedAt);
    var fields = { request_id: uuid(), response_ms: Math.round(performance.now() - arrivedAt), compared: compared };
    if (several) { fields.answers = {}; Object.keys(picked).forEach(function (k) { fields.answers[k] = picked[k]; }); }
    else { fields.choice = choice; }
    var body = JSON.stringify(fields);
    var trial = current.trial, tries = 0;
    (function send() {
      fetch("/api/trials/" + encodeURIComponent(trial) + "/answer", {
        method: "POST", headers: { "Content-Type": "application/json", "X-Participant": token }, body: body
      }).then(function (r) {
        return r.json().then(function (b) {
          if (r.ok || r.status === 409) {  // 409: expired or already answered; move on
            if (b.too_fast) { el("warning").hidden = false; }
            next(); return;
          }
          showError(b.detail || "Could not save the answer."); busy = false; setEnabled(true);
        });
      }).catch(function () {
        // Network error: resend the same request_id, so the server stores the answer once.
        if (++tries < 5) { setTimeout(send, 1000 * tries); } else { showError("Connection lost; please reload."); busy = false; setEnabled(true); }
      });
    })();
  }

  function openViewer(flicker, from) {
    if (!viewer || !current) return;
    viewer.open([el("left").src, el("right").src], flicker, from);
  }
  function viewerClosed(why) {
    if (why === "answer-key") note("The compare view is closed. Press the key again to answer.");
  }

  buttons.forEach(function (b) {
    b.addEventListener("click", function (e) {
      if (several) {
        if (busy || !unlocked) return;
        pick(groups.indexOf(b.closest(".criterion")), parseInt(b.dataset.choice, 10), true);
        return;
      }
      if (e.detail > 0) b.blur();  // a tap or click leaves no highlight on the next pair
      answer(parseInt(b.dataset.choice, 10));
    });
  });
  if (several) {
    sendButton.addEventListener("click", function (e) { if (e.detail > 0) sendButton.blur(); answer(null); });
    groups.forEach(function (g, i) { g.addEventListener("focusin", function () { setActive(i); }); });
  }
  document.addEventListener("keydown", function (e) {
    if (viewer && viewer.isOpen()) { viewer.onKey(e); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (several && e.key >= "1" && e.key <= "5") {
      e.preventDefault();
      if (busy || !current || !unlocked) return;
      var i = focusedGroup();
      pick(i >= 0 ? i : active, parseInt(e.key, 10), true);
    }
    else if (several && e.key === "Enter") {
      // Enter sends once every question has an answer (it never re-picks the focused button).
      if (allPicked() || focusedGroup() >= 0) e.preventDefault();
      if (allPicked()) answer(null);
    }
    else if (e.key >= "1" && e.key <= "5") { e.preventDefault(); answer(parseInt(e.key, 10)); }
    else if (viewer && (e.key === "c" || e.key === "C")) { e.preventDefault(); openViewer(false); }
    else if (viewer && (e.key === "f" || e.key === "F")) { e.preventDefault(); openViewer(true); }
  });
  document.addEventListener("keyup", function (e) { if (viewer && viewer.isOpen()) viewer.onKeyUp(e); });
  if (viewer) {
    ["left", "right"].forEach(function (side) {
      var b = el(side + "-open");
      b.addEventListener("click", function () { openViewer(false, b); });
    });
    el("open-compare").addEventListener("click", function (e) { openViewer(false, e.currentTarget); });
    el("open-flicker").addEventListener("click", function (e) { openViewer(true, e.currentTarget); });
  }
  next();
})();
