// leakwatch crew app. The job list is cached on the phone; each step is queued with
// a client action id and sent in order, once, when the server can be reached. The
// server recognises a repeated id and answers with the first answer, so a step whose
// answer was lost can be sent again safely.
'use strict';
(function () {
  const meta = (n) => (document.querySelector('meta[name="' + n + '"]') || {}).content || '';
  const crew = meta('crew');
  const csrf = meta('csrf-token');
  const JOBS = 'lw-jobs-' + crew;
  const QUEUE = 'lw-queue-' + crew;
  const NOTES = 'lw-conflicts-' + crew;
  const STEP_WORDS = { accept: 'accept', start_travel: 'en route', arrive: 'on site', complete: 'complete' };
  const AFTER = { accept: 'accepted', start_travel: 'en_route', arrive: 'on_site', complete: 'completed' };
  const NEXT = { assigned: 'accept', accepted: 'start_travel', en_route: 'arrive', on_site: 'complete' };
  const BUTTON = { accept: 'Accept job', start_travel: 'En route', arrive: 'On site', complete: 'Complete' };

  const load = (k, d) => { try { return JSON.parse(localStorage.getItem(k)) || d; } catch (e) { return d; } };
  const save = (k, v) => localStorage.setItem(k, JSON.stringify(v));
  let data = load(JOBS, null);
  let queue = load(QUEUE, []);
  let conflicts = load(NOTES, []);
  let online = true;
  let flushing = false;

  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? '' : v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  };

  const position = () => new Promise((resolve) => {
    if (!navigator.geolocation) return resolve(null);
    let done = false;
    const finish = (v) => { if (!done) { done = true; resolve(v); } };
    setTimeout(() => finish(null), 1500);
    navigator.geolocation.getCurrentPosition(
      (p) => finish({ lat: p.coords.latitude, lon: p.coords.longitude }),
      () => finish(null), { timeout: 1500, maximumAge: 60000 });
  });

  const statusOf = (job) => {
    let s = job.status;
    for (const q of queue) if (q.job_id === job.id) s = AFTER[q.action] || s;
    return s;
  };

  // The state the job cards were last drawn from.
  let drawn = null;
  // What was typed in each job's findings form, so that a redraw keeps it.
  const drafts = {};

  function render() {
    const box = document.getElementById('jobs');
    const net = document.getElementById('net');
    net.textContent = online ? 'online' : 'offline';
    net.className = 'net ' + (online ? 'on' : 'off');
    const qs = document.getElementById('queue-status');
    qs.textContent = queue.length ? queue.length + ' step(s) waiting to be sent' + (online ? '…' : ' when the connection returns') : '';
    qs.className = 'queue' + (queue.length ? ' pending' : '');
    const cf = document.getElementById('conflicts');
    cf.replaceChildren(...conflicts.map((c, i) => el('div', { class: 'conflict' }, c, ' ',
      el('button', { type: 'button', class: 'small', onclick: () => { conflicts.splice(i, 1); save(NOTES, conflicts); render(); } }, 'OK'))));
    if (!data) { drawn = null; box.replaceChildren(el('p', {}, online ? 'Loading…' : 'Offline, and no job list saved on this phone yet.')); return; }
    document.getElementById('updated').textContent = 'Job list as of ' + data.as_of + (online ? '' : ' (saved on this phone)');
    // Redraw the cards only when something they show changed: a redraw replaces the
    // findings form the crew member may be typing in (its draft is kept, see below).
    const sig = JSON.stringify([data.jobs, data.leak_classes, queue, online]);
    if (sig === drawn) return;
    drawn = sig;
    const jobs = data.jobs.filter((j) => statusOf(j) !== 'completed');
    if (!jobs.length) { box.replaceChildren(el('p', { id: 'no-jobs' }, 'No jobs for today.')); return; }
    box.replaceChildren(...jobs.map((job, i) => card(job, i + 1)));
  }

  function card(job, n) {
    const status = statusOf(job);
    const pending = queue.filter((q) => q.job_id === job.id);
    const next = NEXT[status];
    const c = el('article', { class: 'job prio-' + job.priority, id: 'job-' + job.id, 'data-status': status },
      el('h2', {}, n + '. ', job.summary),
      el('p', { class: 'suspicion' }, job.suspicion),
      el('p', {}, job.place, ' · ', el('a', { href: job.geo, class: 'geo' }, 'Navigate (' + job.lat.toFixed(5) + ', ' + job.lon.toFixed(5) + ')')),
      job.due ? el('p', { class: 'due' }, job.due) : null,
      job.survey ? surveyList(job) : null,
      el('p', { class: 'state' }, 'Status: ', el('strong', { class: 'status' }, status.replace('_', ' '))),
      pending.length ? el('p', { class: 'pending', id: 'pending-' + job.id },
        'Pending: ' + pending.map((q) => STEP_WORDS[q.action]).join(', ') + (online ? ' (sending…)' : ' (will be sent when back online)')) : null);
    if (next === 'complete' && job.needs_finding) c.append(findingForm(job));
    else if (next) c.append(el('button', { type: 'button', class: 'big step', id: 'step-' + job.id, 'data-action': next,
      onclick: () => take(job.id, next, {}) }, BUTTON[next]));
    return c;
  }

  // A leak survey's streets in walking order, each with its direction.
  function surveyList(job) {
    const legs = job.survey.legs || [];
    const at = (p) => p ? p[1].toFixed(5) + ', ' + p[0].toFixed(5) : '?';
    return el('div', { class: 'survey', id: 'survey-' + job.id },
      el('p', {}, 'Survey ' + legs.length + ' segments, ' + Math.round(job.survey.survey_m) + ' m (' +
        Math.round(job.survey.deadhead_m) + ' m between them):'),
      el('ol', { class: 'survey-legs' }, ...legs.map((l) => el('li', { 'data-segment': l.segment },
        l.segment + ' · ' + Math.round(l.length_m) + ' m · from ' + at(l.from) + ' to ' + at(l.to)))));
  }

  function findingForm(job) {
    const classes = (data.leak_classes || []);
    const deadline = el('span', { class: 'class-deadline', id: 'class-deadline-' + job.id });
    const sel = el('select', { name: 'leak_class', id: 'leak-class-' + job.id,
      onchange: () => { const k = classes.find((x) => x.code === sel.value); deadline.textContent = k ? k.name + ': ' + k.repair : ''; } },
      el('option', { value: '' }, '— class —'), ...classes.map((k) => el('option', { value: k.code }, k.code + ' · ' + k.repair)));
    const form = el('form', { class: 'finding', id: 'finding-' + job.id },
      el('label', { class: 'check' }, el('input', { type: 'checkbox', name: 'leak_found', id: 'leak-found-' + job.id }), ' Leak found'),
      el('label', {}, 'Class ', sel), deadline,
      el('label', {}, '%LEL readings ', el('input', { name: 'lel', id: 'lel-' + job.id, inputmode: 'decimal', placeholder: 'e.g. 12, 30' })),
      el('label', { class: 'check' }, el('input', { type: 'checkbox', name: 'repaired', id: 'repaired-' + job.id }), ' Repaired now'),
      el('label', {}, 'Notes ', el('textarea', { name: 'notes', id: 'notes-' + job.id, rows: 2 })),
      el('button', { type: 'submit', class: 'big step', id: 'step-' + job.id, 'data-action': 'complete' }, 'Complete with findings'));
    const draft = drafts[job.id];
    if (draft) {
      for (const [name, value] of Object.entries(draft)) {
        const field = form.elements.namedItem(name);
        if (!field) continue;
        if (field.type === 'checkbox') field.checked = value; else field.value = value;
      }
      sel.onchange();
    }
    form.addEventListener('input', () => {
      const d = {};
      for (const field of form.elements) if (field.name) d[field.name] = field.type === 'checkbox' ? field.checked : field.value;
      drafts[job.id] = d;
    });
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      delete drafts[job.id];
      const f = new FormData(form);
      const found = !!f.get('leak_found');
      const lel = String(f.get('lel') || '').split(/[ ,;]+/).filter((x) => x).map(Number).filter((x) => isFinite(x));
      take(job.id, 'complete', { finding: { leak_found: found, leak_class: found ? (f.get('leak_class') || null) : null,
        percent_lel: lel, repaired: !!f.get('repaired'), notes: String(f.get('notes') || '') } });
    });
    return form;
  }

  async function take(jobId, action, extra) {
    const pos = await position();
    const item = Object.assign({ client_action_id: crypto.randomUUID(), job_id: jobId, action: action,
      taken_at: new Date().toISOString() }, extra);
    if (pos) item.position = pos;
    queue.push(item);
    save(QUEUE, queue);
    render();
    flush();
  }

  // Sends one queued step; resolves to the server's answer (or throws when offline).
  async function send(item) {
    const body = { client_action_id: item.client_action_id, action: item.action, taken_at: item.taken_at };
    if (item.position) body.position = item.position;
    if (item.finding) body.finding = item.finding;
    const r = await fetch('/crew/api/jobs/' + item.job_id + '/action', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf }, body: JSON.stringify(body) });
    let j = {};
    try { j = await r.json(); } catch (e) { j = {}; }
    return { status: r.status, body: j };
  }
  window.lwCrewSend = send; // the browser tests replay a step with it

  async function flush() {
    if (flushing) return;
    flushing = true;
    try {
      while (queue.length) {
        const item = queue[0];
        let res;
        try { res = await send(item); } catch (e) { online = false; break; }
        if (res.status >= 500 || res.status === 0) { online = false; break; }
        online = true;
        queue.shift();
        save(QUEUE, queue);
        if (res.status === 200) {
          const o = res.body.order;
          if (data) data.jobs.forEach((j) => { if (j.id === o.id) j.status = o.status; });
        } else {
          conflicts.push('Job ' + item.job_id + ': "' + STEP_WORDS[item.action] + '" was not recorded: ' +
            (res.body.error || ('error ' + res.status)) + '.');
          save(NOTES, conflicts);
          // The rest of this job's queued steps depend on this one.
          queue = queue.filter((q) => q.job_id !== item.job_id);
          save(QUEUE, queue);
        }
        render();
      }
    } finally { flushing = false; }
    if (!queue.length && online) await refresh();
    render();
  }

  async function refresh() {
    try {
      const r = await fetch('/crew/api/jobs', { credentials: 'same-origin', headers: { accept: 'application/json' } });
      if (!r.ok) { if (r.status >= 500) online = false; return; }
      if (r.headers.get('x-lw-offline')) { online = false; return; }
      data = await r.json();
      online = true;
      save(JOBS, data);
    } catch (e) { online = false; }
  }

  window.addEventListener('online', flush);
  setInterval(() => { if (queue.length) flush(); else refresh().then(render); }, 2000);
  if ('serviceWorker' in navigator) navigator.serviceWorker.register('/crew/sw.js', { scope: '/crew' }).catch(() => {});
  render();
  (queue.length ? flush() : refresh().then(render));
})();
