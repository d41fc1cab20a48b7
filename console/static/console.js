/* nonsite console: keyboard triage, live queue, reason picker, boxes toggle. No frameworks, no CDN.

   Queue:  j / k select the next / previous alert (the preview shows it), Enter or o opens it,
           c confirms it, d dismisses it (pick the reason with 1-4; "other" asks for a note),
           b shows the still with or without boxes. New alerts and status changes arrive live.
   Case:   c confirm, d dismiss (same picker), j / k next / previous case, b boxes, u back to the queue.
   Keys are ignored while typing in a field (Esc leaves the field). */
(function () {
  "use strict";

  var TEXT = {};
  var body;

  function text(key, fields) {
    var s = Object.prototype.hasOwnProperty.call(TEXT, key) ? TEXT[key] : key;
    Object.keys(fields || {}).forEach(function (k) { s = s.split("{" + k + "}").join(String(fields[k])); });
    return s;
  }

  function typing(target) {
    return !!target && (target.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName));
  }

  function go(url) { if (url) { window.location.assign(url); } }

  var toastTimer = null;
  function toast(message, kind) {
    var el = document.getElementById("toast");
    if (!el) { return; }
    el.textContent = message;
    el.className = kind === "error" ? "toast error" : "toast ok";
    el.hidden = false;
    if (toastTimer) { clearTimeout(toastTimer); }
    toastTimer = setTimeout(function () { el.hidden = true; }, kind === "error" ? 8000 : 4000);
  }

  function api(method, path, payload) {
    return fetch(body.dataset.root + path, {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": body.dataset.csrf || "" },
      body: payload === undefined ? undefined : JSON.stringify(payload)
    }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (data) {
        if (!r.ok) {
          var e = (data && data.error) || {};
          throw new Error(e.text || e.message || ("HTTP " + r.status));
        }
        return data;
      });
    });
  }

  /* --- boxes on / off ------------------------------------------------------------------------------ */

  var boxesOff = false;
  function showBoxes(img) {
    var src = boxesOff ? img.dataset.original : img.dataset.annotated;
    if (src) {
      img.src = src;
      if (img.parentElement && img.parentElement.tagName === "A") { img.parentElement.href = src; }
    }
  }
  function toggleBoxes() {
    boxesOff = !boxesOff;
    body.classList.toggle("boxes-off", boxesOff);
    document.querySelectorAll("img[data-annotated]").forEach(showBoxes);
    var button = document.getElementById("boxes-toggle");
    if (button) {
      button.setAttribute("aria-pressed", boxesOff ? "false" : "true");
      button.textContent = boxesOff ? button.dataset.off : button.dataset.on;
    }
  }

  function submit(form) {
    if (typeof form.requestSubmit === "function") { form.requestSubmit(); } else { form.submit(); }
  }

  /* --- the dismiss reason picker ------------------------------------------------------------------- */

  var picker = { el: null, target: null, pending: null };

  function openPicker(target, number) {
    picker.el = document.getElementById("reason-picker");
    if (!picker.el) { return; }
    picker.target = target;
    picker.pending = null;
    document.getElementById("picker-case").textContent = number || "";
    var note = document.getElementById("picker-note");
    note.value = "";
    picker.el.querySelectorAll("button[data-reason]").forEach(function (b) { b.classList.remove("chosen"); });
    picker.el.hidden = false;
  }

  function closePicker() {
    if (picker.el) { picker.el.hidden = true; }
    picker.target = null;
    picker.pending = null;
  }

  function choose(reason) {
    var note = document.getElementById("picker-note");
    picker.el.querySelectorAll("button[data-reason]").forEach(function (b) {
      b.classList.toggle("chosen", b.dataset.reason === reason);
    });
    if (reason === "other" && !note.value.trim()) {
      picker.pending = reason;
      note.focus();
      toast(text("js.note_required"), "error");
      return;
    }
    var target = picker.target;
    var noteText = note.value.trim();
    closePicker();
    if (target) { target(reason, noteText); }
  }

  function pickerKey(e) {
    if (e.key === "Escape") { e.preventDefault(); closePicker(); return true; }
    if (typing(e.target)) {
      if (e.key === "Enter") { e.preventDefault(); choose(picker.pending || "other"); }
      return true;
    }
    var buttons = picker.el.querySelectorAll("button[data-reason]");
    var n = parseInt(e.key, 10);
    if (n >= 1 && n <= buttons.length) { e.preventDefault(); choose(buttons[n - 1].dataset.reason); }
    return true;
  }

  /* --- the queue ----------------------------------------------------------------------------------- */

  var selected = -1;
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("tr.case-row")); }

  function cellText(row, cls) {
    var cell = row.querySelector("." + cls);
    return cell ? cell.textContent.trim() : "";
  }

  function showPreview(row) {
    var img = document.getElementById("preview-image");
    var link = document.getElementById("preview-number");
    if (!img || !link) { return; }
    document.getElementById("preview-empty").hidden = true;
    document.getElementById("preview-facts").hidden = false;
    link.textContent = row.dataset.number;
    link.href = row.dataset.href;
    img.alt = row.dataset.number;
    img.dataset.annotated = row.dataset.annotated || "";
    img.dataset.original = row.dataset.original || row.dataset.annotated || "";
    img.hidden = !row.dataset.annotated;
    showBoxes(img);
    document.getElementById("preview-type").textContent = cellText(row, "c-type");
    document.getElementById("preview-camera").textContent = cellText(row, "c-camera");
    document.getElementById("preview-zone").textContent = cellText(row, "c-zone");
    document.getElementById("preview-time").textContent = cellText(row, "c-time");
    document.getElementById("preview-plate").textContent = row.dataset.plate || "-";
    document.getElementById("preview-status").textContent = cellText(row, "c-status");
  }

  function select(index) {
    var all = rows();
    if (!all.length) { return; }
    if (selected >= 0 && all[selected]) { all[selected].classList.remove("selected"); }
    selected = Math.max(0, Math.min(all.length - 1, index));
    all[selected].classList.add("selected");
    all[selected].scrollIntoView({ block: "nearest" });
    showPreview(all[selected]);
  }

  var RECHECK_STATES = ["pending", "clear", "present", "unavailable"];

  /* A case's status badge, then its camera re-check badge as the server renders it (docs/recheck.md).
     ``recheck`` (a live event's recheck_state / _label / _title) replaces the row's re-check; left out, the row
     keeps the one it has. Values are text, never markup; an unknown state shows no badge. */
  function setStatus(row, status, label, recheck) {
    row.dataset.status = status;
    row.className = row.className.replace(/\bstatus-[a-z_]+/g, "").trim() + " status-" + status;
    if (recheck !== undefined) {
      if (recheck && recheck.state) {
        row.dataset.recheck = String(recheck.state);
        row.dataset.recheckLabel = String(recheck.label || recheck.state);
        if (recheck.title) { row.dataset.recheckTitle = String(recheck.title); }
      } else {
        delete row.dataset.recheck;
        delete row.dataset.recheckLabel;
      }
    }
    var cell = row.querySelector(".c-status");
    if (cell) {
      cell.textContent = "";
      var badge = document.createElement("span");
      badge.className = "badge status-" + status;
      badge.textContent = label || text("status." + status);
      cell.appendChild(badge);
      var state = row.dataset.recheck;
      if (state && RECHECK_STATES.indexOf(state) >= 0) {
        var rc = document.createElement("span");
        rc.className = "badge recheck-" + state;
        rc.title = row.dataset.recheckTitle || "";
        rc.textContent = row.dataset.recheckLabel || state;
        cell.appendChild(document.createTextNode(" "));
        cell.appendChild(rc);
      }
    }
    if (selected >= 0 && rows()[selected] === row) { showPreview(row); }
  }

  function flash(row) {
    row.classList.remove("flash");
    void row.offsetWidth;
    row.classList.add("flash");
  }

  function selectedRow() {
    var all = rows();
    if (selected < 0 || !all[selected]) { toast(text("js.select_first"), "error"); return null; }
    return all[selected];
  }

  function act(row, action, payload, doneKey) {
    var number = row.dataset.number;
    return api("POST", "/api/cases/" + encodeURIComponent(number) + "/" + action, payload).then(function (c) {
      setStatus(row, c.status);
      flash(row);
      toast(text(doneKey, { number: number }), "ok");
      if (rows()[selected] === row) { select(selected + 1); }
    }).catch(function (err) {
      toast(text("js.failed", { number: number, message: err.message }), "error");
    });
  }

  function queueKey(e) {
    var all = rows();
    if (!all.length) { return; }
    var row;
    switch (e.key) {
      case "j": e.preventDefault(); select(selected + 1); break;
      case "k": e.preventDefault(); select(selected < 0 ? 0 : selected - 1); break;
      case "Enter":
      case "o":
        row = selectedRow();
        if (row) { e.preventDefault(); go(row.dataset.href); }
        break;
      case "c":
        row = selectedRow();
        if (row) { e.preventDefault(); act(row, "confirm", {}, "js.confirmed"); }
        break;
      case "d":
        row = selectedRow();
        if (row) {
          e.preventDefault();
          openPicker(function (reason, note) {
            act(row, "dismiss", { reason: reason, note: note }, "js.dismissed");
          }, row.dataset.number);
        }
        break;
      case "b": toggleBoxes(); break;
      default: return;
    }
  }

  function cell(tr, cls, value) {
    var td = document.createElement("td");
    td.className = cls;
    td.textContent = value || "";
    tr.appendChild(td);
    return td;
  }

  function buildRow(c) {
    var tr = document.createElement("tr");
    tr.className = "case-row status-" + c.status;
    tr.dataset.href = c.url;
    tr.dataset.number = c.number;
    tr.dataset.status = c.status;
    if (c.annotated) { tr.dataset.annotated = c.annotated; }
    if (c.original) { tr.dataset.original = c.original; }
    if (c.plate) { tr.dataset.plate = c.plate; }
    var thumb = document.createElement("td");
    thumb.className = "thumb";
    if (c.thumbnail) {
      var img = document.createElement("img");
      img.src = c.thumbnail;
      img.alt = c.number;
      thumb.appendChild(img);
    }
    tr.appendChild(thumb);
    var num = document.createElement("td");
    var a = document.createElement("a");
    a.className = "case-link";
    a.href = c.url;
    a.textContent = c.number;
    num.appendChild(a);
    tr.appendChild(num);
    cell(tr, "type c-type type-" + c.type, c.type_label);
    cell(tr, "c-camera", c.camera).title = c.camera_id;
    cell(tr, "c-zone", c.zone);
    cell(tr, "time c-time", c.time);
    cell(tr, "c-dwell", c.dwell);
    cell(tr, "c-status", "");
    tr.addEventListener("click", function (e) { if (!e.target.closest("a")) { select(rows().indexOf(tr)); } });
    tr.addEventListener("dblclick", function () { go(tr.dataset.href); });
    setStatus(tr, c.status, c.status_label, liveRecheck(c));
    return tr;
  }

  function liveRecheck(c) {
    return { state: c.recheck_state || null, label: c.recheck_label || "", title: c.recheck_title || "" };
  }

  function applyLive(c) {
    var existing = rows().filter(function (r) { return r.dataset.number === c.number; })[0];
    if (existing) {
      setStatus(existing, c.status, c.status_label, liveRecheck(c));
      existing.classList.toggle("off-filter", !c.matches);
      flash(existing);
      return;
    }
    if (!c.matches) { return; }
    var tbody = document.querySelector("#queue-table tbody");
    if (!tbody) { return; }
    var row = buildRow(c);
    tbody.insertBefore(row, tbody.firstChild);
    row.classList.add("new");
    flash(row);
    if (selected >= 0) { selected += 1; }
    var empty = document.getElementById("queue-empty");
    if (empty) { empty.hidden = true; }
    toast(text("js.new_case", { number: c.number, type: c.type_label }), "ok");
  }

  function startLive() {
    var url = body.dataset.live;
    var status = document.getElementById("live-status");
    if (!url || typeof EventSource === "undefined") { return; }
    var source = new EventSource(url);
    source.addEventListener("open", function () {
      if (status) { status.dataset.state = "on"; status.textContent = text("js.live_on"); }
    });
    source.addEventListener("error", function () {
      if (status) { status.dataset.state = "off"; status.textContent = text("js.live_off"); }
    });
    source.addEventListener("case", function (ev) {
      try { applyLive(JSON.parse(ev.data)); } catch (err) { /* a malformed event changes nothing */ }
    });
    source.addEventListener("end", function () {  /* logged out (here or elsewhere): stop listening */
      source.close();
      if (status) { status.dataset.state = "off"; status.textContent = text("js.live_ended"); }
    });
  }

  /* --- the case page ------------------------------------------------------------------------------- */

  function casePage(e) {
    switch (e.key) {
      case "c": {
        var confirmForm = document.getElementById("confirm-form");
        if (confirmForm) { e.preventDefault(); submit(confirmForm); }
        break;
      }
      case "d": {
        var form = document.getElementById("dismiss-form");
        if (form) {
          e.preventDefault();
          openPicker(function (reason, note) {
            document.getElementById("dismiss-reason").value = reason;
            document.getElementById("dismiss-note").value = note;
            submit(form);
          }, "");
        }
        break;
      }
      case "j": go(body.dataset.next); break;
      case "k": go(body.dataset.prev); break;
      case "b": toggleBoxes(); break;
      case "u": go(body.dataset.back); break;
      default: return;
    }
  }

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (picker.el && !picker.el.hidden) { pickerKey(e); return; }
    if (typing(e.target)) {
      if (e.key === "Escape") { e.target.blur(); }
      return;
    }
    var page = body.dataset.page;
    if (page === "case") { casePage(e); } else if (page === "queue") { queueKey(e); }
  });

  document.addEventListener("DOMContentLoaded", function () {
    body = document.body;
    var data = document.getElementById("console-text");
    if (data) { try { TEXT = JSON.parse(data.textContent); } catch (err) { TEXT = {}; } }
    var button = document.getElementById("boxes-toggle");
    if (button) { button.addEventListener("click", toggleBoxes); }
    var reason = document.getElementById("dismiss-reason");
    var note = document.getElementById("dismiss-note");
    if (reason && note) {
      reason.addEventListener("change", function () { if (reason.value === "other") { note.focus(); } });
    }
    document.querySelectorAll("tr.case-row").forEach(function (row) {
      row.addEventListener("click", function (e) {
        if (e.target.closest("a")) { return; }
        if (body.dataset.page === "queue") { select(rows().indexOf(row)); } else { go(row.dataset.href); }
      });
      row.addEventListener("dblclick", function () { go(row.dataset.href); });
    });
    document.querySelectorAll("#reason-picker button[data-reason]").forEach(function (b) {
      b.addEventListener("click", function () { choose(b.dataset.reason); });
    });
    document.querySelectorAll("form[data-max-bytes]").forEach(function (form) {
      form.addEventListener("submit", function (e) {
        var max = parseInt(form.dataset.maxBytes, 10);
        var total = 0;
        form.querySelectorAll("input[type=file]").forEach(function (input) {
          Array.prototype.forEach.call(input.files || [], function (f) { total += f.size; });
        });
        if (total > max) {
          e.preventDefault();
          toast(text("js.too_large", { mb: (max / 1048576).toFixed(0) }), "error");
        }
      });
    });
    if (body.dataset.page === "queue") {
      startLive();
      if (rows().length) { select(0); }
    }
  });
})();
