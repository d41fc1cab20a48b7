/* nonsite console keys: c confirm, d dismiss (focus the reason), j / k next / previous case, b boxes on/off.
   In the queue: j / k move the selection, Enter or o opens it. Keys are ignored while typing in a field. */
(function () {
  "use strict";

  function typing(target) {
    return !!target && (target.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName));
  }

  function go(url) {
    if (url) { window.location.assign(url); }
  }

  function toggleBoxes() {
    var button = document.getElementById("boxes-toggle");
    var off = document.body.classList.toggle("boxes-off");
    document.querySelectorAll("img[data-annotated]").forEach(function (img) {
      var src = off ? img.dataset.original : img.dataset.annotated;
      if (src) {
        img.src = src;
        if (img.parentElement && img.parentElement.tagName === "A") { img.parentElement.href = src; }
      }
    });
    if (button) {
      button.setAttribute("aria-pressed", off ? "false" : "true");
      button.textContent = off ? button.dataset.off : button.dataset.on;
    }
  }

  function submit(form) {
    if (typeof form.requestSubmit === "function") { form.requestSubmit(); } else { form.submit(); }
  }

  function casePage(e) {
    var body = document.body;
    switch (e.key) {
      case "c": {
        var confirmForm = document.getElementById("confirm-form");
        if (confirmForm) { e.preventDefault(); submit(confirmForm); }
        break;
      }
      case "d": {
        var reason = document.getElementById("dismiss-reason");
        if (reason) { e.preventDefault(); reason.focus(); }
        break;
      }
      case "j": go(body.dataset.next); break;
      case "k": go(body.dataset.prev); break;
      case "b": toggleBoxes(); break;
      case "u": go(body.dataset.back); break;
      default: return;
    }
  }

  var selected = -1;
  function queuePage(e) {
    var rows = document.querySelectorAll("tr.case-row");
    if (!rows.length) { return; }
    if (e.key === "j" || e.key === "k") {
      e.preventDefault();
      if (selected >= 0) { rows[selected].classList.remove("selected"); }
      selected = e.key === "j" ? Math.min(rows.length - 1, selected + 1) : Math.max(0, selected - 1);
      rows[selected].classList.add("selected");
      rows[selected].scrollIntoView({ block: "nearest" });
    } else if ((e.key === "Enter" || e.key === "o") && selected >= 0) {
      e.preventDefault();
      go(rows[selected].dataset.href);
    }
  }

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (typing(e.target)) {
      if (e.key === "Escape") { e.target.blur(); }
      return;
    }
    var page = document.body.dataset.page;
    if (page === "case") { casePage(e); } else if (page === "queue") { queuePage(e); }
  });

  document.addEventListener("DOMContentLoaded", function () {
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
        go(row.dataset.href);
      });
    });
  });
})();
