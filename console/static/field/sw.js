/* nonsite field app: the service worker (served from this origin at /m/sw.js; scope /m/).
 * - the app's own files are cached at install; pages under /m/ network first, the last copy when offline;
 *   evidence stills and photos (named by content) from the cache once seen;
 * - the outbox (queue.js, IndexedDB) is sent on a background sync or when a page asks, and each delivery is
 *   told to the open pages. */
"use strict";
var ROOT = __ROOT__;
var SHELL_CACHE = "nonsite-field-shell-v1";
var PAGES_CACHE = "nonsite-field-pages";
var SHELL = ["/static/field/field.css", "/static/field/field.js", "/static/field/queue.js",
  "/static/field/icon.svg", "/static/field/offline.html"].map(function (p) { return ROOT + p; });

importScripts(ROOT + "/static/field/queue.js");

self.addEventListener("install", function (event) {
  event.waitUntil(caches.open(SHELL_CACHE).then(function (c) { return c.addAll(SHELL); })
    .then(function () { return self.skipWaiting(); }));
});

self.addEventListener("activate", function (event) {
  event.waitUntil(caches.keys().then(function (keys) {
    return Promise.all(keys.filter(function (k) { return k.indexOf("nonsite-field-shell-") === 0 && k !== SHELL_CACHE; })
      .map(function (k) { return caches.delete(k); }));
  }).then(function () { return self.clients.claim(); }));
});

function networkFirst(request) {
  return fetch(request).then(function (response) {
    if (response.ok && response.type === "basic" && !response.redirected) {
      var copy = response.clone();
      caches.open(PAGES_CACHE).then(function (c) { return c.put(request, copy); });
    }
    return response;
  }, function () {
    return caches.match(request, { cacheName: PAGES_CACHE }).then(function (hit) {
      return hit || caches.match(ROOT + "/static/field/offline.html");
    });
  });
}

function cacheFirst(request, cacheName) {
  return caches.match(request).then(function (hit) {
    if (hit) return hit;
    return fetch(request).then(function (response) {
      if (response.ok && response.type === "basic") {
        var copy = response.clone();
        caches.open(cacheName).then(function (c) { return c.put(request, copy); });
      }
      return response;
    });
  });
}

self.addEventListener("fetch", function (event) {
  var request = event.request;
  if (request.method !== "GET") return;
  var url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  var path = url.pathname;
  if (path.indexOf(ROOT + "/static/field/") === 0) {
    event.respondWith(cacheFirst(request, SHELL_CACHE));
  } else if (path.indexOf(ROOT + "/m/") === 0 && path !== ROOT + "/m/sw.js") {
    event.respondWith(networkFirst(request));
  } else if (path.indexOf(ROOT + "/evidence/") === 0 || /\/cases\/[^/]+\/feedback\/[0-9a-f]{64}\.jpg$/.test(path)) {
    event.respondWith(cacheFirst(request, PAGES_CACHE));
  }
});

function tell(message) {
  return self.clients.matchAll({ type: "window" }).then(function (clients) {
    clients.forEach(function (c) { c.postMessage(message); });
  });
}

self.FieldQueue.on(function (event) {
  if (event.type === "delivered") tell({ type: "delivered", item: { kind: event.item.kind, key: event.item.key, number: event.item.number }, data: event.data });
  if (event.type === "failed") tell({ type: "failed", item: { kind: event.item.kind, key: event.item.key, number: event.item.number, error: event.item.error } });
});

self.addEventListener("sync", function (event) {
  if (event.tag === "field-outbox") event.waitUntil(self.FieldQueue.flush());
});

self.addEventListener("message", function (event) {
  if (event.data && event.data.type === "flush") event.waitUntil(self.FieldQueue.flush());
});
