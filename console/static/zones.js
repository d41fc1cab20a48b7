/* nonsite zone editor: draw zone polygons on the camera's latest snapshot and save them.

   Click on the snapshot to add a corner to the selected zone (a new zone when none is selected),
   drag a corner to move it, click another zone to select it. Coordinates are fractions of the image
   (0..1). "Save" sends every zone to the server, which checks them and applies them to the camera. */
(function () {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  var TEXT = {};
  var data = null;
  var zones = [];
  var current = -1;
  var W = 1;
  var H = 1;
  var svg = null;
  var img = null;
  var drag = null;

  function text(key, fields) {
    var s = Object.prototype.hasOwnProperty.call(TEXT, key) ? TEXT[key] : key;
    Object.keys(fields || {}).forEach(function (k) { s = s.split("{" + k + "}").join(String(fields[k])); });
    return s;
  }

  function clamp(v) { return Math.round(Math.min(1, Math.max(0, v)) * 10000) / 10000; }

  function toImage(evt) {
    var pt = svg.createSVGPoint();
    pt.x = evt.clientX;
    pt.y = evt.clientY;
    var p = pt.matrixTransform(svg.getScreenCTM().inverse());
    return [clamp(p.x / W), clamp(p.y / H)];
  }

  function newZone() {
    var n = zones.length + 1;
    var ids = zones.map(function (z) { return z.id; });
    while (ids.indexOf("zone-" + n) >= 0) { n += 1; }
    zones.push({ id: "zone-" + n, name: "", kind: data.kinds[0].value, polygon: [], dwell_s: null, schedule: [],
                 rules: null });
    current = zones.length - 1;
  }

  function el(name, attrs) {
    var node = document.createElementNS(SVG_NS, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }

  function draw() {
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var r = Math.max(W, H) / 110;
    zones.forEach(function (z, i) {
      var pts = z.polygon.map(function (p) { return (p[0] * W) + "," + (p[1] * H); }).join(" ");
      var shape = el(z.polygon.length >= 3 ? "polygon" : "polyline", {
        points: pts, "class": "zone kind-" + z.kind + (i === current ? " current" : ""), "data-zone": String(i)
      });
      svg.appendChild(shape);
      if (z.polygon.length) {
        var label = el("text", { x: z.polygon[0][0] * W + r * 1.5, y: z.polygon[0][1] * H - r, "class": "zone-label",
          "font-size": String(r * 2.6) });
        label.textContent = z.name || z.id;
        svg.appendChild(label);
      }
    });
    if (current >= 0 && zones[current]) {
      zones[current].polygon.forEach(function (p, j) {
        svg.appendChild(el("circle", { cx: p[0] * W, cy: p[1] * H, r: r, "class": "handle",
          "data-zone": String(current), "data-point": String(j) }));
      });
    }
  }

  function renderList() {
    var box = document.getElementById("zone-items");
    var tpl = document.getElementById("zone-template");
    while (box.firstChild) { box.removeChild(box.firstChild); }
    zones.forEach(function (z, i) {
      var node = tpl.content.firstElementChild.cloneNode(true);
      node.dataset.index = String(i);
      node.classList.toggle("current", i === current);
      node.querySelector(".zone-legend").textContent = text("js.zone_legend", { n: i + 1 });
      var id = node.querySelector(".zone-id");
      var name = node.querySelector(".zone-name");
      var kind = node.querySelector(".zone-kind");
      var dwell = node.querySelector(".zone-dwell");
      id.value = z.id;
      name.value = z.name;
      kind.value = z.kind;
      dwell.value = z.dwell_s === null || z.dwell_s === undefined ? "" : String(z.dwell_s);
      node.querySelector(".zone-points").textContent = text("js.zone_points", { n: z.polygon.length });
      var extra = [];
      if (z.schedule.length) { extra.push(text("js.zone_schedule", { windows: scheduleText(z.schedule) })); }
      var rules = z.rules ? rulesText(z.rules) : "";
      if (rules) { extra.push(text("js.zone_rules", { rules: rules })); }
      node.querySelector(".zone-extra").textContent = extra.join(" · ");
      id.addEventListener("input", function () { z.id = id.value.trim(); draw(); });
      name.addEventListener("input", function () { z.name = name.value; draw(); });
      kind.addEventListener("change", function () { z.kind = kind.value; draw(); });
      dwell.addEventListener("input", function () { z.dwell_s = dwell.value === "" ? null : Number(dwell.value); });
      node.querySelector(".zone-select").addEventListener("click", function () { current = i; renderList(); draw(); });
      node.querySelector(".zone-undo").addEventListener("click", function () {
        z.polygon.pop(); current = i; renderList(); draw();
      });
      node.querySelector(".zone-delete").addEventListener("click", function () {
        zones.splice(i, 1);
        current = Math.min(current, zones.length - 1);
        renderList(); draw();
      });
      box.appendChild(node);
    });
  }

  function onDown(evt) {
    if (evt.button !== 0) { return; }
    var target = evt.target;
    if (target.classList.contains("handle")) {
      drag = { zone: Number(target.dataset.zone), point: Number(target.dataset.point) };
      svg.setPointerCapture(evt.pointerId);
      evt.preventDefault();
      return;
    }
    if (target.dataset && target.dataset.zone !== undefined && Number(target.dataset.zone) !== current) {
      current = Number(target.dataset.zone);
      renderList(); draw();
      return;
    }
    if (current < 0 || !zones[current]) { newZone(); }
    zones[current].polygon.push(toImage(evt));
    renderList(); draw();
    evt.preventDefault();
  }

  function onMove(evt) {
    if (!drag) { return; }
    zones[drag.zone].polygon[drag.point] = toImage(evt);
    draw();
  }

  function onUp() {
    if (drag) { drag = null; renderList(); draw(); }
  }

  function result(kind, lines) {
    var box = document.getElementById("zone-result");
    box.className = "message " + kind;
    while (box.firstChild) { box.removeChild(box.firstChild); }
    lines.forEach(function (line, i) {
      var p = document.createElement(i === 0 ? "p" : "li");
      p.textContent = line;
      box.appendChild(p);
    });
  }

  function save() {
    document.querySelectorAll(".zone-item").forEach(function (n) { n.classList.remove("invalid"); });
    var payload = { zones: zones.map(function (z) {
      var out = { id: z.id, name: z.name, kind: z.kind, polygon: z.polygon };
      if (z.dwell_s !== null && z.dwell_s !== undefined && !isNaN(z.dwell_s)) { out.dwell_s = z.dwell_s; }
      // Schedule and rule settings are not edited here: sent back as they came, so saving keeps them.
      if (z.schedule && z.schedule.length) { out.schedule = z.schedule; }
      if (z.rules) { out.rules = z.rules; }
      return out;
    }) };
    fetch(data.save_url, {
      method: "PUT",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json",
                 "X-CSRF-Token": document.body.dataset.csrf || "" },
      body: JSON.stringify(payload)
    }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (body) {
        if (r.ok) {
          zones = (body.zones || []).map(normalize);
          current = -1;
          renderList(); draw();
          result("ok", [text(body.pending ? "js.zones_sent" : "js.zones_saved", { n: zones.length })]);
          return;
        }
        var e = (body && body.error) || {};
        var lines = [e.text || e.message || ("HTTP " + r.status)];
        (e.problems || []).forEach(function (p) {
          lines.push(p.text || p.message);
          if (p.zone !== null && p.zone !== undefined) {
            var node = document.querySelector('.zone-item[data-index="' + p.zone + '"]');
            if (node) { node.classList.add("invalid"); }
          }
        });
        result("error", lines);
      });
    }).catch(function (err) { result("error", [text("js.failed", { number: "", message: err.message })]); });
  }

  function normalize(z) {
    return {
      id: String(z.id || ""), name: String(z.name || ""), kind: String(z.kind || data.kinds[0].value),
      polygon: (z.polygon || []).map(function (p) { return [Number(p[0]), Number(p[1])]; }),
      dwell_s: z.dwell_s === null || z.dwell_s === undefined ? null : Number(z.dwell_s),
      schedule: Array.isArray(z.schedule) ? z.schedule : [],
      rules: z.rules && typeof z.rules === "object" ? z.rules : null
    };
  }

  function scheduleText(windows) {
    return windows.map(function (w) {
      return (w.days && w.days.length && w.days.length < 7 ? w.days.join(",") + " " : "") + w.start + "-" + w.end;
    }).join("; ");
  }

  function rulesText(rules) {
    var parts = [];
    Object.keys(rules).forEach(function (name) {
      var r = rules[name];
      if (!r) { return; }
      var set = Object.keys(r).filter(function (k) { return r[k] !== null && r[k] !== undefined; });
      if (set.length) { parts.push(name + " " + set.map(function (k) { return k + "=" + JSON.stringify(r[k]); }).join(", ")); }
    });
    return parts.join("; ");
  }

  function sized() {
    W = img.naturalWidth || 1;
    H = img.naturalHeight || 1;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    draw();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var source = document.getElementById("zones-data");
    if (!source) { return; }
    var textSource = document.getElementById("console-text");
    if (textSource) { try { TEXT = JSON.parse(textSource.textContent); } catch (err) { TEXT = {}; } }
    data = JSON.parse(source.textContent);
    zones = (data.zones || []).map(normalize);
    svg = document.getElementById("zone-svg");
    img = document.getElementById("snapshot");
    if (img.complete && img.naturalWidth) { sized(); } else { img.addEventListener("load", sized); }
    img.addEventListener("error", function () { result("error", [text("js.no_snapshot")]); });
    svg.addEventListener("pointerdown", onDown);
    svg.addEventListener("pointermove", onMove);
    svg.addEventListener("pointerup", onUp);
    svg.addEventListener("pointercancel", onUp);
    document.getElementById("zone-add").addEventListener("click", function () { newZone(); renderList(); draw(); });
    document.getElementById("zone-save").addEventListener("click", save);
    renderList();
    draw();
    document.body.dataset.editorReady = "1";
  });
})();
