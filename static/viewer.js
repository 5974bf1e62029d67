// The compare view: both images of a trial large, zoomed and panned together (wheel, pinch, drag,
// +/- and arrow keys, double-click or double-tap), or shown in the same place alternately
// ("flicker": toggle with F or the button, or hold Space; adjustable rate). It logs how it was
// used (see app/studies/comparing.py). Exposes window.CompareView(options).
(function () {
  "use strict";
  var MAX_ZOOM = 8, STEP = 1.25;

  function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }

  // Largest display scale that fits (w, h) into the box, never past maxUpscale x natural size.
  function fitScale(natW, natH, boxW, boxH, maxUpscale) {
    if (!natW || !natH) return 1;
    return Math.max(0, Math.min(boxW / natW, boxH / natH, maxUpscale));
  }
  // Crisp pixels once an image is shown at twice its natural size or more; smooth below.
  function rendering(scale) { return scale >= 2 ? "pixelated" : "auto"; }

  function CompareView(opts) {
    var el = function (id) { return document.getElementById(id); };
    var box = el("viewer"), stage = el("v-stage");
    var imgs = [el("v-left"), el("v-right")], panes = [el("v-pane-left"), el("v-pane-right")];
    var rateInput = el("v-rate"), modeButton = el("v-mode");
    var state = { z: 1, x: 0, y: 0, fit: 1 }, flicker = false, shownSide = 0, timer = null, held = false;
    var opener = null, log = null, openedAt = 0, flickerSince = 0;
    var pointers = {}, pinch = null, lastTap = { t: 0, x: 0, y: 0 }, moved = false;

    function resetLog() {
      log = { used_zoom: false, used_flicker: false, max_zoom: 1, compare_view_ms: 0, flicker_ms: 0 };
    }
    resetLog();

    function now() { return performance.now(); }
    function settleTime() {
      // Book the time since the last change to the mode it was spent in.
      if (box.hidden) return;
      var t = now();
      if (flicker) log.flicker_ms += t - flickerSince; else log.compare_view_ms += t - openedAt;
      openedAt = flickerSince = t;
    }

    function apply() {
      var w = imgs[0].naturalWidth, h = imgs[0].naturalHeight;
      var pane = panes[0].getBoundingClientRect();
      state.fit = fitScale(w, h, pane.width, pane.height, opts.maxUpscale);
      var maxX = Math.max(0, (w * state.fit * state.z - pane.width) / 2);
      var maxY = Math.max(0, (h * state.fit * state.z - pane.height) / 2);
      state.x = clamp(state.x, -maxX, maxX); state.y = clamp(state.y, -maxY, maxY);
      var scale = state.fit * state.z;
      imgs.forEach(function (img) {
        img.style.width = Math.round(w * state.fit) + "px";
        img.style.height = Math.round(h * state.fit) + "px";
        img.style.transform = "translate(" + state.x + "px," + state.y + "px) scale(" + state.z + ")";
        img.style.imageRendering = rendering(scale);
      });
      el("v-zoom").textContent = (Math.round(state.z * 10) / 10) + "×";
      if (state.z > 1.01) { log.used_zoom = true; log.max_zoom = Math.max(log.max_zoom, Math.round(state.z * 100) / 100); }
    }

    // Zoom to z, keeping the image point under (px, py) (relative to the pane centre) in place.
    function zoomTo(z, px, py) {
      z = clamp(z, 1, MAX_ZOOM);
      px = px || 0; py = py || 0;
      state.x = px - (px - state.x) * z / state.z;
      state.y = py - (py - state.y) * z / state.z;
      state.z = z;
      apply();
    }
    function pan(dx, dy) { state.x += dx; state.y += dy; apply(); }
    function reset() { state.z = 1; state.x = 0; state.y = 0; apply(); }

    function centreOffset(e) {
      var r = e.currentTarget.getBoundingClientRect();
      return [e.clientX - r.left - r.width / 2, e.clientY - r.top - r.height / 2];
    }

    function showSide(i) {
      shownSide = i;
      panes.forEach(function (p, k) { p.classList.toggle("off", flicker && k !== i); });
      el("v-shown").textContent = flicker ? (i === 0 ? "Showing: left" : "Showing: right") : "";
    }
    function restartTimer() {
      clearInterval(timer); timer = null;
      if (flicker) timer = setInterval(function () { showSide(1 - shownSide); }, 1000 / rate());
    }
    // Swaps per second; at most 6, so that even two very different images never flash fast.
    function rate() { return clamp(parseFloat(rateInput.value) || 2, 1, 6); }
    function setFlicker(on) {
      if (on === flicker) return;
      settleTime();
      setMode(on);
    }
    function setMode(on) {  // without booking time: open() starts the clock in its first mode
      flicker = on;
      if (on) log.used_flicker = true;
      stage.classList.toggle("flicker", on);
      modeButton.setAttribute("aria-pressed", on ? "true" : "false");
      modeButton.textContent = on ? "Side by side" : "Flicker";
      el("v-rate-box").hidden = !on;
      showSide(0); restartTimer(); apply();
    }
    function setRate(v) {
      rateInput.value = clamp(v, 1, 6);
      el("v-rate-out").textContent = rateInput.value + " per second";
      rateInput.setAttribute("aria-valuetext", rateInput.value + " per second");
      restartTimer();
    }

    function open(srcs, withFlicker, from) {
      opener = from || document.activeElement;
      imgs[0].src = srcs[0]; imgs[1].src = srcs[1];
      box.hidden = false;
      document.body.classList.add("viewer-open");
      openedAt = flickerSince = now();
      state.z = 1; state.x = 0; state.y = 0;
      setMode(!!withFlicker);
      var ready = function () { apply(); };
      imgs.forEach(function (img) { if (img.complete) ready(); else img.onload = ready; });
      stage.focus();
    }
    function close(note) {
      if (box.hidden) return;
      settleTime();
      setFlicker(false);
      clearInterval(timer); timer = null;
      box.hidden = true;
      document.body.classList.remove("viewer-open");
      if (opts.onClose) opts.onClose(note);
      if (opener && document.body.contains(opener) && !opener.disabled) opener.focus();
    }

    // ---- pointer input: drag to pan, pinch to zoom, double-tap / double-click to zoom
    panes.forEach(function (pane) {
      pane.addEventListener("wheel", function (e) {
        e.preventDefault();
        var c = centreOffset(e);
        zoomTo(state.z * Math.exp(-e.deltaY * 0.002), c[0], c[1]);
      }, { passive: false });
      pane.addEventListener("pointerdown", function (e) {
        pane.setPointerCapture(e.pointerId);
        pointers[e.pointerId] = [e.clientX, e.clientY];
        moved = false;
        var ids = Object.keys(pointers);
        if (ids.length === 2) {
          var a = pointers[ids[0]], b = pointers[ids[1]];
          pinch = { d: Math.hypot(a[0] - b[0], a[1] - b[1]), z: state.z };
        }
      });
      pane.addEventListener("pointermove", function (e) {
        var prev = pointers[e.pointerId];
        if (!prev) return;
        var ids = Object.keys(pointers);
        pointers[e.pointerId] = [e.clientX, e.clientY];
        if (Math.abs(e.clientX - prev[0]) + Math.abs(e.clientY - prev[1]) > 0) moved = true;
        if (ids.length === 2 && pinch) {
          var a = pointers[ids[0]], b = pointers[ids[1]];
          var r = pane.getBoundingClientRect();
          var mx = (a[0] + b[0]) / 2 - r.left - r.width / 2, my = (a[1] + b[1]) / 2 - r.top - r.height / 2;
          zoomTo(pinch.z * Math.hypot(a[0] - b[0], a[1] - b[1]) / pinch.d, mx, my);
        } else if (ids.length === 1) {
          pan(e.clientX - prev[0], e.clientY - prev[1]);
        }
      });
      function up(e) {
        var wasOne = Object.keys(pointers).length === 1;
        delete pointers[e.pointerId];
        if (Object.keys(pointers).length < 2) pinch = null;
        if (e.type !== "pointerup" || !wasOne || moved) return;
        var t = now();
        if (t - lastTap.t < 350 && Math.hypot(e.clientX - lastTap.x, e.clientY - lastTap.y) < 30) {
          var c = centreOffset(e);
          if (state.z > 1.01) reset(); else zoomTo(2.5, c[0], c[1]);
          lastTap.t = 0;
        } else {
          lastTap = { t: t, x: e.clientX, y: e.clientY };
        }
      }
      pane.addEventListener("pointerup", up);
      pane.addEventListener("pointercancel", up);
    });

    // ---- buttons
    el("v-close").addEventListener("click", function () { close(); });
    el("v-zoom-in").addEventListener("click", function () { zoomTo(state.z * STEP); });
    el("v-zoom-out").addEventListener("click", function () { zoomTo(state.z / STEP); });
    el("v-reset").addEventListener("click", reset);
    modeButton.addEventListener("click", function () { setFlicker(!flicker); });
    rateInput.addEventListener("input", function () { setRate(parseFloat(rateInput.value)); });
    window.addEventListener("resize", function () { if (!box.hidden) apply(); });

    // ---- keys (the page routes every key here while the view is open)
    function onKey(e) {
      var k = e.key;
      if (k === "Escape") { close(); }
      else if (k >= "1" && k <= "5") { close("answer-key"); }
      else if (k === "+" || k === "=") { zoomTo(state.z * STEP); }
      else if (k === "-" || k === "_") { zoomTo(state.z / STEP); }
      else if (k === "0") { reset(); }
      else if (k === "f" || k === "F") { setFlicker(!flicker); }
      else if (k === "[") { setRate(rate() - 1); }
      else if (k === "]") { setRate(rate() + 1); }
      else if (k === " " && !/^(BUTTON|INPUT|SELECT)$/.test(e.target.tagName)) {
        if (!held && !flicker) { held = true; setFlicker(true); }
      }
      else if (k.indexOf("Arrow") === 0 && e.target.tagName !== "INPUT") {
        var d = 40;
        pan(k === "ArrowLeft" ? d : k === "ArrowRight" ? -d : 0, k === "ArrowUp" ? d : k === "ArrowDown" ? -d : 0);
      }
      else if (k === "Tab") { trapFocus(e); return; }
      else { return; }
      e.preventDefault();
    }
    function onKeyUp(e) { if (e.key === " " && held) { held = false; setFlicker(false); } }
    function trapFocus(e) {
      var f = Array.prototype.filter.call(box.querySelectorAll("button, input, [tabindex='0']"),
        function (x) { return !x.disabled && x.offsetParent !== null; });
      if (!f.length) return;
      var i = f.indexOf(document.activeElement);
      if (e.shiftKey && i <= 0) { f[f.length - 1].focus(); e.preventDefault(); }
      else if (!e.shiftKey && i === f.length - 1) { f[0].focus(); e.preventDefault(); }
    }

    return {
      open: open,
      close: close,
      isOpen: function () { return !box.hidden; },
      onKey: onKey,
      onKeyUp: onKeyUp,
      // The log of the current trial (times settled up to now), then start a fresh one.
      takeLog: function () {
        settleTime();
        var out = {
          used_zoom: log.used_zoom, used_flicker: log.used_flicker, max_zoom: log.max_zoom,
          compare_view_ms: Math.round(log.compare_view_ms), flicker_ms: Math.round(log.flicker_ms)
        };
        resetLog();
        return out;
      }
    };
  }

  window.CompareView = CompareView;
  window.CompareView.fitScale = fitScale;
  window.CompareView.rendering = rendering;
})();
