/* nonsite field app (外勤): the page side. Registers the service worker, checks in with the phone's position,
 * queues reports with before/after photos in the outbox (queue.js) and sends them when the phone is online. */
(function () {
  "use strict";
  var body = document.body;
  var root = body.dataset.root || "";
  var Q = window.FieldQueue;
  var TEXT = {};
  try { TEXT = JSON.parse(document.getElementById("console-text").textContent || "{}"); } catch (e) { TEXT = {}; }

  function t(key, fields) {
    var s = TEXT[key] || key;
    Object.keys(fields || {}).forEach(function (k) { s = s.split("{" + k + "}").join(String(fields[k])); });
    return s;
  }
  function $(id) { return document.getElementById(id); }
  function say(el, text, state) {
    if (!el) return;
    el.textContent = text;
    if (state) el.dataset.state = state;
  }
  function clock(iso) {
    var d = iso ? new Date(iso) : new Date();
    return d.toLocaleTimeString("zh-CN", { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  /* --- service worker, from this origin only ------------------------------------------------------------ */
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register(root + "/m/sw.js", { scope: root + "/m/" }).catch(function () { /* no offline shell */ });
    navigator.serviceWorker.addEventListener("message", function (event) {
      var m = event.data || {};
      if (m.type === "delivered") delivered(m.item, m.data);
      if (m.type === "failed") failed(m.item);
    });
  }

  /* --- online state and the outbox --------------------------------------------------------------------- */
  function showNet() {
    var el = $("net-state");
    var on = navigator.onLine;
    say(el, t(on ? "js.field_online" : "js.field_offline"), on ? "online" : "offline");
  }
  window.addEventListener("online", function () { showNet(); flush(); });
  window.addEventListener("offline", showNet);
  showNet();

  function renderOutbox() {
    return Q.all().then(function (items) {
      var mine = items.filter(function (i) { return i.user === body.dataset.user; });
      var queued = mine.filter(function (i) { return i.state === "queued"; });
      var count = $("queue-count");
      if (count) {
        count.hidden = queued.length === 0;
        count.dataset.count = String(queued.length);
        count.textContent = t("js.field_queue_count", { n: queued.length });
      }
      var box = $("outbox"), list = $("outbox-items");
      if (!box || !list) return;
      box.hidden = mine.length === 0;
      list.textContent = "";
      mine.forEach(function (i) {
        var li = document.createElement("li");
        li.className = "outbox-item state-" + i.state;
        li.dataset.key = i.key;
        li.dataset.state = i.state;
        li.textContent = i.number + " · " + t(i.kind === "checkin" ? "js.field_kind_checkin" : "js.field_kind_report") +
          " · " + clock(i.created) + " · " + (i.state === "failed" ? t("js.field_failed", { message: i.error || "" }) : t("js.field_queued"));
        if (i.state === "failed") {  // refused by the server: the officer reads why, then lets it go
          var drop = document.createElement("button");
          drop.type = "button";
          drop.className = "discard";
          drop.textContent = t("js.field_discard");
          drop.addEventListener("click", function () { Q.remove(i.id).then(renderOutbox); });
          li.appendChild(document.createTextNode(" "));
          li.appendChild(drop);
        }
        list.appendChild(li);
      });
    }).catch(function () { /* no IndexedDB (private mode): records are sent at once */ });
  }

  function flush() {
    return Q.flush().then(function (outcome) {
      if (outcome === "login") toast(t("js.field_login"));
      return renderOutbox();
    }, function () { return renderOutbox(); });
  }

  function toast(text) {
    var el = $("toast");
    if (!el) return;
    el.textContent = text;
    el.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { el.hidden = true; }, 4000);
  }

  var task = $("task");
  var number = task ? task.dataset.number : "";

  function delivered(item, data) {
    if (!item || item.number !== number || !data) { renderOutbox(); return; }
    var text = t(data.duplicate ? "js.field_duplicate" : "js.field_sent");
    if (item.kind === "checkin") {
      var parts = [t("js.field_checked_in", { time: clock(data.at) })];
      if (data.distance_m !== null && data.distance_m !== undefined) parts.push(t("js.field_distance", { m: data.distance_m }));
      say($("checkin-state"), parts.join(" · ") + " · " + text, "delivered");
    } else {
      say($("report-state"), text + " · " + t("js.field_status_now", { status: t("status." + data.status) }), "delivered");
    }
    if (data.status && task) {
      task.dataset.status = data.status;
      var badge = $("task-status");
      if (badge) {
        badge.textContent = t("status." + data.status);
        badge.className = "badge status-" + data.status;
      }
    }
    renderOutbox();
  }

  function failed(item) {
    if (!item || item.number !== number) { renderOutbox(); return; }
    var el = item.kind === "checkin" ? $("checkin-state") : $("report-state");
    say(el, t("js.field_failed", { message: item.error || "" }), "failed");
    renderOutbox();
  }

  Q.on(function (event) {
    if (event.type === "delivered") delivered(event.item, event.data);
    if (event.type === "failed") failed(event.item);
  });

  function enqueue(item, stateEl) {
    item.user = body.dataset.user;
    item.number = number;
    return Q.add(item).then(function () {
      say(stateEl, t("js.field_queued"), "queued");
      if ("serviceWorker" in navigator && navigator.serviceWorker.controller) {
        navigator.serviceWorker.ready.then(function (reg) {
          if (reg.sync) return reg.sync.register("field-outbox");
        }).catch(function () { /* no background sync: the page sends when online */ });
      }
      return renderOutbox();
    }).then(flush);
  }

  /* --- arrival check-in -------------------------------------------------------------------------------- */
  var checkin = $("checkin");
  if (checkin) {
    checkin.addEventListener("click", function () {
      var state = $("checkin-state");
      var deviceAt = new Date().toISOString();
      var key = Q.newKey();
      say(state, t("js.field_locating"), "locating");
      checkin.disabled = true;
      var done = function (position, reason) {
        var bodyJson = { key: key, device_at: deviceAt };
        if (position) {
          bodyJson.lat = position.coords.latitude;
          bodyJson.lon = position.coords.longitude;
          bodyJson.accuracy_m = position.coords.accuracy;
        } else {
          bodyJson.position_error = reason || "unavailable";
          say(state, t("js.field_no_position", { reason: bodyJson.position_error }), "no-position");
        }
        checkin.disabled = false;
        enqueue({ kind: "checkin", key: key, url: checkin.dataset.url, body: bodyJson }, state);
      };
      if (!navigator.geolocation) { done(null, "no geolocation"); return; }
      navigator.geolocation.getCurrentPosition(function (p) { done(p, ""); },
        function (e) { done(null, e && e.message ? e.message.slice(0, 120) : "denied"); },
        { enableHighAccuracy: true, timeout: 20000, maximumAge: 60000 });
    });
  }

  /* --- photos: previews, made smaller on the phone (the server checks and re-encodes them anyway) ------- */
  var MAX_SIDE = 1920;

  function shrink(file) {
    if (!window.createImageBitmap || !file.type || file.type.indexOf("image/") !== 0) return Promise.resolve(file);
    return createImageBitmap(file, { imageOrientation: "from-image" }).then(function (bmp) {
      var scale = Math.min(1, MAX_SIDE / Math.max(bmp.width, bmp.height));
      if (scale === 1 && file.size < 1.5 * 1024 * 1024) { bmp.close(); return file; }
      var canvas = document.createElement("canvas");
      canvas.width = Math.round(bmp.width * scale);
      canvas.height = Math.round(bmp.height * scale);
      canvas.getContext("2d").drawImage(bmp, 0, 0, canvas.width, canvas.height);
      bmp.close();
      return new Promise(function (resolve) {
        canvas.toBlob(function (blob) { resolve(blob || file); }, "image/jpeg", 0.88);
      });
    }).catch(function () { return file; });  // not decodable here: the server says why
  }

  function preview(input, box) {
    if (!input || !box) return;
    input.addEventListener("change", function () {
      box.textContent = "";
      Array.prototype.forEach.call(input.files || [], function (f) {
        if (!f.type || f.type.indexOf("image/") !== 0) return;
        var img = document.createElement("img");
        img.alt = f.name;
        img.src = URL.createObjectURL(f);
        img.onload = function () { URL.revokeObjectURL(img.src); };
        box.appendChild(img);
      });
    });
  }
  preview($("photo-before"), $("preview-before"));
  preview($("photo-after"), $("preview-after"));

  /* --- the result ------------------------------------------------------------------------------------- */
  var form = $("report-form");
  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var state = $("report-state");
      var picked = [];
      [["before", $("photo-before")], ["after", $("photo-after")]].forEach(function (pair) {
        Array.prototype.forEach.call(pair[1].files || [], function (f) { picked.push({ field: pair[0], file: f }); });
      });
      var note = $("report-note").value.trim();
      var checked = form.querySelector('input[name="result"]:checked');
      var max = Number(form.dataset.maxPhotos || 5);
      if (!picked.length && !note) { say(state, t("js.field_need_content"), "invalid"); return; }
      if (picked.length > max) { say(state, t("js.field_too_many", { n: max }), "invalid"); return; }
      var submit = $("report-submit");
      submit.disabled = true;
      var key = Q.newKey();
      Promise.all(picked.map(function (p) {
        return shrink(p.file).then(function (blob) {
          var name = (p.file.name || "photo").replace(/\.[^.]*$/, "") + ".jpg";
          return { field: p.field, name: blob === p.file ? p.file.name : name, blob: blob };
        });
      })).then(function (files) {
        var item = { kind: "report", key: key, url: form.dataset.url, files: files,
          fields: { key: key, result: checked ? checked.value : "rectified", note: note, device_at: new Date().toISOString() } };
        form.reset();
        $("preview-before").textContent = "";
        $("preview-after").textContent = "";
        submit.disabled = false;
        return enqueue(item, state);
      });
    });
  }

  /* --- log out: forget the pages kept on the phone (the outbox stays, sent only for this user) ---------- */
  var logout = $("field-logout");
  if (logout && window.caches) {
    logout.addEventListener("submit", function (event) {
      event.preventDefault();
      var go = function () { logout.submit(); };
      caches.delete("nonsite-field-pages").then(go, go);
    });
  }

  Promise.all([Q.setMeta("csrf", body.dataset.csrf || ""), Q.setMeta("user", body.dataset.user || "")])
    .then(renderOutbox).then(flush).catch(function () { /* no IndexedDB */ });
  setInterval(function () { if (navigator.onLine) flush(); }, 10000);
})();
