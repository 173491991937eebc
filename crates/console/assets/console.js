// leakwatch console: live inbox (server-sent events) and deadline countdowns.
// No inline script anywhere: the pages' CSP forbids it.
'use strict';
(function () {
  const inbox = document.getElementById('inbox');
  if (inbox && inbox.dataset.live && window.EventSource) {
    const live = document.getElementById('live');
    const refresh = () => {
      fetch(inbox.dataset.rows + window.location.search, { credentials: 'same-origin' })
        .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
        .then((html) => { inbox.innerHTML = html; })
        .catch(() => {});
    };
    const es = new EventSource(inbox.dataset.live);
    es.addEventListener('open', () => { if (live) { live.textContent = 'live'; live.className = 'live on'; } });
    es.addEventListener('error', () => { if (live) { live.textContent = 'reconnecting…'; live.className = 'live off'; } });
    es.addEventListener('alerts', refresh);
  }

  // Countdowns on the board: "in 42 min" / "late by 5 min", refreshed each 20 s.
  const words = (min) => {
    const m = Math.abs(min);
    if (m < 60) return m + ' min';
    if (m < 48 * 60) return Math.floor(m / 60) + ' h ' + String(m % 60).padStart(2, '0') + ' min';
    return Math.floor(m / 1440) + ' d ' + Math.floor(m / 60) % 24 + ' h';
  };
  const tick = () => {
    document.querySelectorAll('.deadline[data-due]').forEach((el) => {
      const cd = el.querySelector('.countdown');
      if (!cd || cd.textContent.startsWith('met')) return;
      const left = Math.floor((Date.parse(el.dataset.due) - Date.now()) / 60000);
      cd.textContent = left < 0 ? 'late by ' + words(left) : 'in ' + words(left);
      el.classList.toggle('breached', left < 0);
    });
  };
  if (document.querySelector('.deadline[data-due]')) setInterval(tick, 20000);
})();
