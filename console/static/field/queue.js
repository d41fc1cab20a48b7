/* nonsite field app: the outbox on the phone (IndexedDB), shared by the page and the service worker.
 *
 * Every check-in and report is saved here first, with its idempotency key, then sent in the order it was made.
 * A network failure, a server error (5xx, 429) or an expired login stops the round and keeps the item; a refusal
 * (another 4xx: not an image, wrong status) marks it failed with the server's reason. The server stores a key
 * once, so an item sent twice (the answer lost, or the page and the service worker both sending) is one record.
 */
(function (g) {
  "use strict";
  var DB = "nonsite-field", OUTBOX = "outbox", META = "meta";

  function openDb() {
    return new Promise(function (resolve, reject) {
      var req = g.indexedDB.open(DB, 1);
      req.onupgradeneeded = function () {
        var db = req.result;
        if (!db.objectStoreNames.contains(OUTBOX)) db.createObjectStore(OUTBOX, { keyPath: "id", autoIncrement: true });
        if (!db.objectStoreNames.contains(META)) db.createObjectStore(META);
      };
      req.onsuccess = function () { resolve(req.result); };
      req.onerror = function () { reject(req.error); };
    });
  }

  function run(store, mode, work) {
    return openDb().then(function (db) {
      return new Promise(function (resolve, reject) {
        var t = db.transaction(store, mode);
        var result;
        var req = work(t.objectStore(store));
        if (req) req.onsuccess = function () { result = req.result; };
        t.oncomplete = function () { db.close(); resolve(result); };
        t.onerror = t.onabort = function () { db.close(); reject(t.error); };
      });
    });
  }

  function newKey() {
    if (g.crypto && g.crypto.randomUUID) return g.crypto.randomUUID();
    var b = new Uint8Array(16);
    g.crypto.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) { return ("0" + x.toString(16)).slice(-2); }).join("");
  }

  var listeners = [];
  var busy = null;

  var Q = {
    newKey: newKey,
    setMeta: function (name, value) { return run(META, "readwrite", function (s) { return s.put(value, name); }); },
    getMeta: function (name) { return run(META, "readonly", function (s) { return s.get(name); }); },
    add: function (item) {
      item.state = "queued";
      item.created = item.created || new Date().toISOString();
      return run(OUTBOX, "readwrite", function (s) { return s.add(item); }).then(function (id) {
        item.id = id;
        Q.emit({ type: "queued", item: item });
        return item;
      });
    },
    all: function () { return run(OUTBOX, "readonly", function (s) { return s.getAll(); }).then(function (v) { return v || []; }); },
    remove: function (id) { return run(OUTBOX, "readwrite", function (s) { return s.delete(id); }); },
    put: function (item) { return run(OUTBOX, "readwrite", function (s) { return s.put(item); }); },
    on: function (fn) { listeners.push(fn); },
    emit: function (event) { listeners.forEach(function (fn) { try { fn(event); } catch (e) { /* a listener's bug stops nothing */ } }); },

    /* One request for an item (with the current CSRF token); resolves to {outcome, status, data}. */
    send: function (item, csrf) {
      var init = { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf || "" } };
      if (item.kind === "checkin") {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(item.body);
      } else {
        var fd = new FormData();
        Object.keys(item.fields).forEach(function (k) { fd.append(k, item.fields[k]); });
        (item.files || []).forEach(function (f) { fd.append(f.field, f.blob, f.name); });
        init.body = fd;
      }
      return g.fetch(item.url, init).then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (data) {
          var code = data && data.error ? data.error.code : "";
          if (r.ok) return { outcome: "delivered", status: r.status, data: data };
          if (r.status === 401 || (r.status === 403 && code === "csrf")) return { outcome: "login", status: r.status, data: data };
          if (r.status >= 500 || r.status === 429 || r.status === 408) return { outcome: "retry", status: r.status, data: data };
          return { outcome: "refused", status: r.status, data: data };
        });
      }, function () { return { outcome: "offline", status: 0, data: null }; });
    },

    /* Send the queued items of the current user, oldest first; one round at a time per context. */
    flush: function () {
      if (busy) return busy;
      busy = Promise.all([Q.getMeta("csrf"), Q.getMeta("user")]).then(function (meta) {
        var csrf = meta[0], user = meta[1];
        return Q.all().then(function (items) {
          var mine = items.filter(function (i) { return i.state === "queued" && i.user === user; });
          var step = function (n) {
            if (n >= mine.length) return "done";
            var item = mine[n];
            Q.emit({ type: "sending", item: item });
            return Q.send(item, csrf).then(function (res) {
              if (res.outcome === "delivered") {
                return Q.remove(item.id).then(function () {
                  Q.emit({ type: "delivered", item: item, data: res.data });
                  return step(n + 1);
                });
              }
              if (res.outcome === "refused") {
                item.state = "failed";
                item.error = (res.data && res.data.error && (res.data.error.text || res.data.error.message)) || ("HTTP " + res.status);
                return Q.put(item).then(function () {
                  Q.emit({ type: "failed", item: item });
                  return step(n + 1);
                });
              }
              Q.emit({ type: res.outcome, item: item });
              return res.outcome;
            });
          };
          return step(0);
        });
      }).then(function (v) { busy = null; Q.emit({ type: "flushed" }); return v; },
        function (e) { busy = null; throw e; });
      return busy;
    }
  };
  g.FieldQueue = Q;
})(self);
