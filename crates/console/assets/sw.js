// leakwatch crew app service worker: keeps the app shell and the last job list so
// the app opens and reads offline. Steps taken offline are queued by the page
// (crew.js), not here: POSTs go straight to the network.
'use strict';
const CACHE = 'lw-crew-v1';
const SHELL = ['/crew', '/crew/app.js', '/console/assets/console.css',
  '/crew/manifest.webmanifest', '/console/assets/icon.svg'];

self.addEventListener('install', (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (e) => {
  e.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

// Network first; the cached copy when the network fails.
self.addEventListener('fetch', (e) => {
  const req = e.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin) return;
  if (!(SHELL.includes(url.pathname) || url.pathname === '/crew/' || url.pathname === '/crew/api/jobs')) return;
  e.respondWith(fetch(req).then((res) => {
    if (res.ok) {
      const copy = res.clone();
      caches.open(CACHE).then((c) => c.put(req, copy));
    }
    return res;
  }).catch(() => caches.match(req).then((hit) => {
    if (!hit) {
      return new Response(JSON.stringify({ error: 'offline and nothing cached' }),
        { status: 503, headers: { 'content-type': 'application/json' } });
    }
    // Say that this is the saved copy, so the page knows it is offline.
    const h = new Headers(hit.headers);
    h.set('x-lw-offline', '1');
    return new Response(hit.body, { status: hit.status, headers: h });
  })));
});
