// rbee queen live page. Plain JavaScript, no build step, same-origin only.
//
// Data flow: GET /v1/downloads (the whole list) + EventSource('/v1/downloads/stream') (live events),
// merged per download_id. A whole model's row opens to its files, fetched from GET /v1/downloads/{id}
// when opened, and again while it is open: whenever another file is done or the download ends, and
// every FILES_EVERY_MS while it runs. Text from the server is only ever set with textContent.
//
// A fleet pull (one model onto many hives) is one row: a bar per hive and the total. Its hives'
// downloads (each state names its `pull_id`) get no rows of their own; they are followed on the same
// stream and drawn as the pull's bars. Which hives a pull has, its commit and its status come from
// GET /v1/pulls (on every resync) and GET /v1/pulls/{id} (a pull first seen, a hive's download that
// ended); the total is summed from the hives' downloads as the queen sums it.
//
// The Models view is models.js: this file passes it the stream's `model` events and every resync.
'use strict';

(function () {
  const TOKEN_KEY = 'rbee-api-token';
  const ACTIVE = new Set(['queued', 'starting', 'downloading']);
  const TERMINAL = new Set(['complete', 'failed', 'cancelled']);
  const RANK = { queued: 0, starting: 1, downloading: 2 };
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const HIVES_EVERY_MS = 2000;
  const FILES_EVERY_MS = 2000;

  const $ = (id) => document.getElementById(id);
  const rowsEl = $('download-rows');
  const downloads = new Map(); // download_id -> {state fields..., row: HTMLTableRowElement}
  const pulls = new Map(); // pull_id -> {pull_id, model_ref, commit, status, hives: Map hive_id -> download_id, row}
  const knownHives = new Set();

  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let needLogin = false;
  let source = null;
  let retryTimer = null;
  let backoff = BACKOFF_MIN_MS;
  let hivesTimer = null;
  let attempts = 0;

  // ------------------------------------------------------------------ formatting (as rbee-keeper prints)

  const UNITS = ['kB', 'MB', 'GB', 'TB', 'PB'];

  function humanBytes(n) {
    if (n === null || n === undefined) return '?';
    let v = Number(n);
    if (Math.abs(v) < 1000) return `${Math.trunc(v)} B`;
    for (let i = 0; i < UNITS.length; i++) {
      v /= 1000;
      if (Math.abs(v) < 999.95 || i === UNITS.length - 1) return `${v.toFixed(1)} ${UNITS[i]}`;
    }
    return '?';
  }

  function humanEta(secs) {
    if (secs === null || secs === undefined || secs < 0) return '-';
    let s = Math.round(secs);
    if (s < 60) return `${s}s`;
    let m = Math.floor(s / 60); s %= 60;
    if (m < 60) return `${m}m${String(s).padStart(2, '0')}s`;
    let h = Math.floor(m / 60); m %= 60;
    if (h < 24) return `${h}h${String(m).padStart(2, '0')}m`;
    const d = Math.floor(h / 24); h %= 24;
    return `${d}d${String(h).padStart(2, '0')}h`;
  }

  function displayName(ref) {
    if (!ref) return '…';
    if (ref.startsWith('hf:') && !ref.includes('::file=')) return ref.slice(3) || ref; // a whole model
    let path = ref;
    if (ref.startsWith('hf:') && ref.includes('::file=')) path = ref.split('::file=')[1];
    else if (/^https?:\/\//.test(ref)) {
      try { path = decodeURIComponent(new URL(ref).pathname); } catch (e) { path = ref; }
    }
    const name = path.replace(/\/+$/, '').split('/').pop();
    return name || ref;
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ------------------------------------------------------------------ API calls

  class AuthError extends Error {}

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method, headers, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (response.status === 401) {
      showLogin(token ? 'The token was refused. Enter the queen\'s RBEE_API_TOKEN.' : null);
      throw new AuthError('unauthorized');
    }
    return { ok: response.ok, status: response.status, data };
  }

  function errorText(result) {
    const err = result.data && result.data.error;
    if (err && typeof err === 'object') return `${err.code || 'ERROR'}: ${err.message || ''}`;
    return `HTTP ${result.status}`;
  }

  // ------------------------------------------------------------------ login

  function showLogin(message) {
    needLogin = true;
    if (token) { token = ''; sessionStorage.removeItem(TOKEN_KEY); }
    stopStream();
    setConn('auth', 'sign in needed');
    $('login').hidden = false;
    if (message) $('login-message').textContent = message;
    $('token').focus();
  }

  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = $('token').value.trim();
    if (!value) return;
    token = value;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token').value = '';
    $('login').hidden = true;
    needLogin = false;
    backoff = BACKOFF_MIN_MS;
    refreshHives();
    resyncThenStream();
  });

  // ------------------------------------------------------------------ connection indicator

  function setConn(state, text) {
    const node = $('conn-state');
    node.dataset.state = state;
    node.textContent = text || state;
  }

  // ------------------------------------------------------------------ download model

  function fromState(s) {
    return {
      download_id: s.download_id,
      model_ref: s.model_ref,
      hive_id: s.hive_id,
      status: s.status,
      bytes: s.bytes_downloaded || 0,
      total: s.total_bytes,
      speed_bps: s.speed_bps,
      eta_secs: s.eta_secs,
      percent: s.percent,
      queue_position: s.queue_position,
      error: s.error,
      code: s.error_code,
      path: s.path,
      sha256: s.sha256,
      started_at: s.started_at,
      completed_at: s.completed_at,
      files_total: s.files_total,
      files_done: s.files_done,
      pull_id: s.pull_id,
    };
  }

  function mergeState(s) {
    if (!s || typeof s.download_id !== 'string') return;
    const incoming = fromState(s);
    const d = downloads.get(s.download_id);
    if (!d) { addDownload(incoming); return; }
    const startedBefore = d.started_at;
    // A list answer may be older than what the stream already told us: never step back.
    const stale = (TERMINAL.has(d.status) && !TERMINAL.has(incoming.status))
      || (!TERMINAL.has(incoming.status) && (incoming.bytes < d.bytes
        || (incoming.bytes === d.bytes && RANK[incoming.status] < RANK[d.status])));
    if (stale) {
      for (const key of ['model_ref', 'hive_id', 'pull_id']) if (!d[key] && incoming[key]) d[key] = incoming[key];
      if (d.provisional && incoming.started_at) d.started_at = incoming.started_at;
    } else {
      for (const [key, value] of Object.entries(incoming)) if (value !== undefined && value !== null) d[key] = value;
      for (const key of ['queue_position', 'eta_secs', 'error', 'code']) d[key] = incoming[key];
    }
    if (incoming.started_at) d.provisional = false;
    render(d);
    if (d.started_at !== startedBefore) place(d);
  }

  function addDownload(fields) {
    const d = Object.assign({ status: 'queued', bytes: 0, total: null }, fields);
    if (!d.started_at) {
      d.started_at = new Date().toISOString(); // until the real one is known
      d.provisional = true;
    }
    d.row = buildRow(d);
    downloads.set(d.download_id, d);
    if (d.hive_id) noteHive(d.hive_id);
    render(d);
    place(d);
    return d;
  }

  function pullOf(d) { return d.pull_id ? pulls.get(d.pull_id) : undefined; }

  function applyEvent(type, data) {
    if (!data || typeof data.download_id !== 'string') return;
    let d = downloads.get(data.download_id);
    if (!d) {
      d = addDownload({ download_id: data.download_id });
      fetchOne(d.download_id); // events carry no started_at, and only progress carries model_ref
    }
    if (TERMINAL.has(d.status) && type === 'progress') return; // a late progress after the end
    if (data.hive_id) { d.hive_id = data.hive_id; noteHive(data.hive_id); }
    if (data.model_ref) d.model_ref = data.model_ref;
    if (typeof data.bytes === 'number') d.bytes = Math.max(d.bytes || 0, data.bytes);
    if (data.total !== undefined && data.total !== null) d.total = data.total;
    if (typeof data.files_total === 'number') {
      d.files_total = data.files_total;
      d.files_done = Math.max(d.files_done || 0, data.files_done || 0);
    }
    if (type === 'progress') {
      d.status = data.status || d.status;
      d.speed_bps = data.speed_bps;
      d.eta_secs = data.eta_secs;
      d.percent = data.percent;
      d.queue_position = data.queue_position === undefined ? null : data.queue_position;
    } else if (type === 'complete') {
      d.status = 'complete';
      d.sha256 = data.sha256; d.path = data.path; d.duration_secs = data.duration_secs;
      d.speed_bps = 0; d.eta_secs = null; d.percent = d.total !== null && d.total !== undefined ? 100 : null;
    } else if (type === 'error') {
      d.status = 'failed'; d.error = data.error; d.code = data.code; d.speed_bps = 0; d.eta_secs = null;
    } else if (type === 'cancelled') {
      d.status = 'cancelled'; d.speed_bps = 0; d.eta_secs = null;
    }
    render(d);
    const p = pullOf(d);
    if (p && type !== 'progress') fetchPull(p.pull_id); // a hive's part ended: has the pull?
  }

  async function fetchOne(id) {
    try {
      const r = await api('GET', `/v1/downloads/${encodeURIComponent(id)}`);
      if (r.ok) mergeState(r.data);
      return r.ok ? r.data : null;
    } catch (e) { return null; /* the stream keeps the row current anyway */ }
  }

  // ------------------------------------------------------------------ a whole model's files

  function isModel(d) { return d.files_total !== null && d.files_total !== undefined; }

  function filesKey(d) { return `${d.files_done || 0}:${d.status}`; }

  // While the list is open: at once, then every FILES_EVERY_MS as long as the model runs.
  function followFiles(d, details) {
    clearInterval(d.filesTimer);
    if (!details.open) return;
    fetchFiles(d);
    d.filesTimer = setInterval(() => {
      if (!details.open || !ACTIVE.has(d.status)) { clearInterval(d.filesTimer); return; }
      fetchFiles(d);
    }, FILES_EVERY_MS);
  }

  // One request at a time per row; a change meanwhile asks once more when it is back.
  async function fetchFiles(d) {
    d.filesKey = filesKey(d);
    if (d.filesLoading) { d.filesAgain = true; return; }
    d.filesLoading = true;
    const list = d.row.querySelector('.file-list');
    if (!list.children.length) list.append(el('li', 'muted', 'loading…'));
    try {
      const state = await fetchOne(d.download_id);
      if (state) renderFiles(list, Array.isArray(state.files) ? state.files : null);
    } finally {
      d.filesLoading = false;
    }
    if (d.filesAgain) { d.filesAgain = false; fetchFiles(d); }
  }

  function renderFiles(list, files) {
    list.replaceChildren();
    if (!files) { list.append(el('li', 'muted', 'the hive sent no file list')); return; }
    for (const f of files) {
      const li = el('li', 'file');
      li.dataset.status = f.status || 'unknown';
      const size = typeof f.size === 'number' ? f.size : null;
      const bytes = f.status === 'complete' && size !== null ? humanBytes(size)
        : `${humanBytes(f.bytes || 0)} / ${humanBytes(size)}`;
      li.append(el('span', 'file-path', f.path || '?'), el('span', 'file-status', f.status || '?'),
        el('span', 'file-bytes', bytes));
      list.append(li);
    }
  }

  // ------------------------------------------------------------------ rendering

  function buildBar() {
    const bar = el('div', 'bar');
    bar.setAttribute('role', 'progressbar');
    bar.setAttribute('aria-valuemin', '0');
    bar.setAttribute('aria-valuemax', '100');
    bar.append(el('div', 'fill'));
    return bar;
  }

  function setBar(bar, pct, running) {
    bar.querySelector('.fill').style.width = `${pct === null ? 0 : Math.max(0, Math.min(100, pct))}%`;
    bar.classList.toggle('indeterminate', pct === null && running);
    if (pct === null) bar.removeAttribute('aria-valuenow');
    else bar.setAttribute('aria-valuenow', pct.toFixed(1));
  }

  function buildRow(d) {
    const tr = el('tr', 'download');
    tr.dataset.downloadId = d.download_id;
    const model = el('td', 'model');
    const files = el('details', 'files');
    files.hidden = true; // shown once the download is known to be a whole model
    files.append(el('summary', 'files-summary'), el('ul', 'file-list'));
    files.addEventListener('toggle', () => followFiles(d, files));
    model.append(el('span', 'name'), el('span', 'ref'), files);
    const progress = el('td', 'col-progress');
    progress.append(buildBar());
    return fillRow(tr, model, progress, `/v1/downloads/${encodeURIComponent(d.download_id)}`, mergeState);
  }

  // A row's cells after its model and its bar: hive, %, bytes, speed, ETA, status, and a Cancel button
  // that DELETEs `path` and shows the answer with `merge`.
  function fillRow(tr, model, progress, path, merge) {
    const status = el('td', 'state');
    status.append(el('span', 'status'), el('span', 'error-code'), el('span', 'error-message'), el('span', 'path'));
    const actions = el('td', 'actions');
    const cancel = el('button', 'cancel', 'Cancel');
    cancel.type = 'button';
    cancel.addEventListener('click', () => cancelVia(path, merge, cancel));
    actions.append(cancel);
    tr.append(model, el('td', 'hive'), progress, el('td', 'percent num'), el('td', 'bytes num'),
      el('td', 'speed num'), el('td', 'eta num'), status, actions);
    return tr;
  }

  function percentOf(d) {
    if (d.percent !== null && d.percent !== undefined) return Number(d.percent);
    if (d.status === 'complete' && d.total !== null && d.total !== undefined) return 100;
    if (d.total) return Math.min(100, (d.bytes * 100) / d.total);
    return null;
  }

  function statusText(d) {
    if (d.status === 'queued' && d.queue_position !== null && d.queue_position !== undefined) {
      return `queued #${d.queue_position}`;
    }
    return d.status || 'unknown';
  }

  function render(d) {
    const tr = d.row;
    const q = (sel) => tr.querySelector(sel);
    tr.dataset.status = d.status || 'unknown';
    tr.dataset.hiveId = d.hive_id || '';
    q('.name').textContent = displayName(d.model_ref);
    q('.ref').textContent = d.model_ref || d.download_id;
    q('.model').title = `${d.download_id}${d.started_at ? ` · started ${d.started_at}` : ''}`;
    q('.hive').textContent = d.hive_id || '-';
    const files = q('.files');
    files.hidden = !isModel(d);
    if (isModel(d)) {
      q('.files-summary').textContent = `${d.files_done || 0}/${d.files_total} files`;
      if (files.open && filesKey(d) !== d.filesKey) fetchFiles(d);
    }
    const pct = percentOf(d);
    const running = d.status === 'downloading';
    setBar(q('.bar'), pct, running || d.status === 'starting');
    q('.percent').textContent = pct === null ? '-' : `${pct.toFixed(1)}%`;
    q('.bytes').textContent = d.total === null || d.total === undefined
      ? humanBytes(d.bytes) : `${humanBytes(d.bytes)} / ${humanBytes(d.total)}`;
    q('.speed').textContent = running && d.speed_bps ? `${humanBytes(d.speed_bps)}/s` : '-';
    q('.eta').textContent = running ? humanEta(d.eta_secs) : '-';
    q('.status').textContent = statusText(d);
    const failed = d.status === 'failed';
    q('.error-code').textContent = failed ? (d.code || 'ERROR') : '';
    q('.error-message').textContent = failed ? (d.error || '') : '';
    q('.path').textContent = d.status === 'complete' && d.path ? d.path : '';
    q('.path').title = d.sha256 ? `sha256 ${d.sha256}` : '';
    const cancel = q('.cancel');
    cancel.hidden = !ACTIVE.has(d.status);
    if (d.pull_id) joinPull(d);
    else applyFilter(d);
    summarize();
  }

  function sortKey(d) { return d.started_at || ''; }

  function modelOf(row) {
    return row.dataset.pullId ? pulls.get(row.dataset.pullId) : downloads.get(row.dataset.downloadId);
  }

  // A download's or a pull's row: newest first, by started_at (RFC 3339 in UTC sorts as text).
  function place(d) {
    if (d.download_id && d.pull_id) return; // a pull's download: drawn in its pull's row
    const key = sortKey(d);
    let before = null;
    for (const other of rowsEl.children) {
      if (other === d.row) continue;
      const o = modelOf(other);
      if (o && sortKey(o) < key) { before = other; break; }
    }
    if (d.row.parentNode !== rowsEl || d.row.nextSibling !== before) rowsEl.insertBefore(d.row, before);
  }

  function applyFilter(d) {
    const hive = $('filter-hive').value;
    const status = $('filter-status').value;
    const statusOk = !status || (status === 'active' ? ACTIVE.has(d.status) : d.status === status);
    d.row.hidden = !(statusOk && (!hive || d.hive_id === hive));
  }

  // A pull shows when one of its hives is the hive asked for; `active` while it runs, a download
  // status when one of its hives' downloads has it, else the pull's own (complete, failed, cancelled).
  function applyPullFilter(p) {
    const hive = $('filter-hive').value;
    const status = $('filter-status').value;
    const parts = pullParts(p);
    const statusOk = !status || (status === 'active' ? p.status === 'running'
      : p.status === status || (p.status === 'running' && parts.some((d) => d.status === status)));
    p.row.hidden = !(statusOk && (!hive || p.hives.has(hive)));
  }

  function summarize() {
    const counts = {};
    const count = (k) => { counts[k] = (counts[k] || 0) + 1; };
    for (const d of downloads.values()) if (!d.pull_id) count(ACTIVE.has(d.status) ? 'active' : d.status);
    for (const p of pulls.values()) count(p.status === 'running' ? 'active' : p.status);
    const parts = ['active', 'complete', 'failed', 'cancelled'].filter((k) => counts[k]).map((k) => `${counts[k]} ${k}`);
    $('summary').textContent = parts.length ? `· ${parts.join(' · ')}` : '';
    $('empty').hidden = downloads.size + pulls.size > 0;
  }

  for (const id of ['filter-hive', 'filter-status']) {
    $(id).addEventListener('change', () => {
      for (const d of downloads.values()) if (!d.pull_id) applyFilter(d);
      for (const p of pulls.values()) applyPullFilter(p);
    });
  }

  // ------------------------------------------------------------------ fleet pulls

  function addPull(pullId) {
    const p = { pull_id: pullId, model_ref: null, commit: null, status: 'running', failed_hives: [], hives: new Map() };
    p.started_at = new Date().toISOString(); // until its downloads' are known
    p.row = buildPullRow(p);
    pulls.set(pullId, p);
    return p;
  }

  // A download that is a hive's part of a pull: no row of its own, a bar in the pull's.
  function joinPull(d) {
    let p = pulls.get(d.pull_id);
    if (!p) {
      p = addPull(d.pull_id);
      fetchPull(d.pull_id); // every hive of it, its commit and status
    }
    if (d.row.parentNode) d.row.remove();
    if (d.hive_id && p.hives.get(d.hive_id) !== d.download_id) {
      p.hives.set(d.hive_id, d.download_id);
      buildPullHives(p);
    }
    if (!p.model_ref && d.model_ref) p.model_ref = d.model_ref;
    renderPull(p);
  }

  // GET /v1/pulls/{id} (or one of GET /v1/pulls): every hive's part becomes (or updates) a download.
  function mergePull(body) {
    if (!body || typeof body.pull_id !== 'string') return;
    const p = pulls.get(body.pull_id) || addPull(body.pull_id);
    p.model_ref = body.model_ref || p.model_ref;
    p.commit = body.commit || p.commit;
    if (body.status !== 'running' || !TERMINAL.has(p.status)) p.status = body.status || p.status;
    p.failed_hives = Array.isArray(body.failed_hives) ? body.failed_hives : p.failed_hives;
    for (const part of Array.isArray(body.hives) ? body.hives : []) {
      if (p.hives.get(part.hive_id) !== part.download_id) p.hives.set(part.hive_id, part.download_id);
      mergeState({
        download_id: part.download_id,
        model_ref: p.model_ref,
        hive_id: part.hive_id,
        pull_id: p.pull_id,
        status: part.status,
        bytes_downloaded: part.bytes,
        total_bytes: part.total,
        percent: part.percent,
        speed_bps: part.speed_bps,
        eta_secs: part.eta_secs,
        files_total: part.files_total,
        files_done: part.files_done,
        error: part.error,
        error_code: part.error_code,
      });
    }
    buildPullHives(p);
    renderPull(p);
  }

  // One request at a time per pull; a change meanwhile asks once more when it is back.
  async function fetchPull(pullId) {
    const p = pulls.get(pullId);
    if (!p) return;
    if (p.fetching) { p.fetchAgain = true; return; }
    p.fetching = true;
    try {
      const r = await api('GET', `/v1/pulls/${encodeURIComponent(pullId)}`);
      if (r.ok) mergePull(r.data);
    } catch (e) {
      /* the stream keeps its hives current anyway */
    } finally {
      p.fetching = false;
    }
    if (p.fetchAgain) { p.fetchAgain = false; fetchPull(pullId); }
  }

  function pullParts(p) {
    return [...p.hives.values()].map((id) => downloads.get(id)).filter(Boolean);
  }

  // The pull's sums, as the queen makes them (services/queen/pulls/plan.py): every hive takes the same
  // files, so a hive whose total is not known yet counts with the largest total another reports.
  function pullTotals(p) {
    const parts = pullParts(p);
    const known = parts.map((d) => d.total).filter((t) => t !== null && t !== undefined);
    const each = known.length ? Math.max(...known) : null;
    const total = each === null ? null
      : [...p.hives.values()].reduce((sum, id) => {
        const d = downloads.get(id);
        return sum + (d && d.total !== null && d.total !== undefined ? d.total : each);
      }, 0);
    const bytes = parts.reduce((sum, d) => sum + (d.bytes || 0), 0);
    const speed = parts.reduce((sum, d) => sum + (d.status === 'downloading' ? d.speed_bps || 0 : 0), 0);
    let percent = null;
    if (total !== null) percent = total === 0 ? 100 : Math.min(100, (bytes * 100) / total);
    const eta = total !== null && speed > 0 ? Math.max(0, total - bytes) / speed : null;
    return { bytes, total, percent, speed, eta, done: parts.filter((d) => d.status === 'complete').length };
  }

  function buildPullRow(p) {
    const tr = el('tr', 'pull');
    tr.dataset.pullId = p.pull_id;
    const model = el('td', 'model');
    model.append(el('span', 'name'), el('span', 'ref'), el('span', 'pull-note'), el('ul', 'pull-hives'));
    const progress = el('td', 'col-progress');
    const total = buildBar();
    total.classList.add('pull-total');
    total.setAttribute('aria-label', 'the pull in total');
    progress.append(total);
    fillRow(tr, model, progress, `/v1/pulls/${encodeURIComponent(p.pull_id)}`, mergePull);
    tr.querySelector('.cancel').title = 'cancel the pull on every hive';
    return tr;
  }

  // Below the model's name, one line per hive (by hive id, hive-2 before hive-10): its id, a bar, its
  // percent and status (and code when it failed).
  function buildPullHives(p) {
    const list = p.row.querySelector('.pull-hives');
    const ids = [...p.hives.keys()].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    if ([...list.children].map((li) => li.dataset.hiveId).join('\n') === ids.join('\n')) return;
    list.replaceChildren();
    for (const hiveId of ids) {
      const li = el('li', 'pull-hive');
      li.dataset.hiveId = hiveId;
      const bar = buildBar();
      bar.setAttribute('aria-label', hiveId);
      li.append(el('span', 'pull-hive-id', hiveId), bar, el('span', 'pull-hive-percent'), el('span', 'pull-hive-status'));
      list.append(li);
      noteHive(hiveId);
    }
  }

  function renderPull(p) {
    const tr = p.row;
    const q = (sel) => tr.querySelector(sel);
    const parts = pullParts(p);
    const t = pullTotals(p);
    const running = p.status === 'running';
    tr.dataset.status = p.status;
    q('.name').textContent = displayName(p.model_ref);
    q('.ref').textContent = p.model_ref || p.pull_id;
    q('.pull-note').textContent = `pull onto ${p.hives.size} hive${p.hives.size === 1 ? '' : 's'}`
      + (p.commit ? ` · commit ${p.commit.slice(0, 12)}` : '');
    q('.model').title = p.pull_id;
    q('.hive').textContent = `${t.done}/${p.hives.size} done`;
    setBar(q('.pull-total'), t.percent, running);
    for (const li of q('.pull-hives').children) {
      const d = downloads.get(p.hives.get(li.dataset.hiveId));
      const status = d ? d.status || 'unknown' : 'unknown';
      const pct = d ? percentOf(d) : null;
      li.dataset.status = status;
      setBar(li.querySelector('.bar'), pct, status === 'downloading' || status === 'starting');
      li.querySelector('.pull-hive-percent').textContent = pct === null ? '-' : `${pct.toFixed(1)}%`;
      const failed = status === 'failed' && d && d.code ? ` ${d.code}` : '';
      li.querySelector('.pull-hive-status').textContent = statusText(d || { status }) + failed;
      li.title = d && d.error ? d.error : '';
    }
    q('.percent').textContent = t.percent === null ? '-' : `${t.percent.toFixed(1)}%`;
    q('.bytes').textContent = t.total === null ? humanBytes(t.bytes) : `${humanBytes(t.bytes)} / ${humanBytes(t.total)}`;
    q('.speed').textContent = running && t.speed ? `${humanBytes(t.speed)}/s` : '-';
    q('.eta').textContent = running && t.eta !== null ? humanEta(t.eta) : '-';
    q('.status').textContent = p.status;
    const failed = p.status === 'failed';
    q('.error-code').textContent = failed ? `on ${p.failed_hives.join(', ') || '?'}` : '';
    const failures = parts.filter((d) => d.status === 'failed').map((d) => `${d.hive_id}: ${d.code || 'ERROR'}: ${d.error || ''}`);
    q('.error-message').textContent = failed ? failures.join('; ') : '';
    q('.cancel').hidden = !running;
    const started = parts.filter((d) => !d.provisional && d.started_at).map((d) => d.started_at).sort();
    if (started.length) p.started_at = started[0]; // when its first hive started, as the queen sorts pulls
    place(p);
    applyPullFilter(p);
    summarize();
  }

  // ------------------------------------------------------------------ hives

  function noteHive(hiveId) {
    if (knownHives.has(hiveId)) return;
    knownHives.add(hiveId);
    for (const id of ['filter-hive', 'hive-select']) {
      const select = $(id);
      const option = el('option', '', hiveId);
      option.value = hiveId;
      select.append(option);
    }
  }

  function hiveList(data) {
    if (Array.isArray(data)) return data;
    if (data && Array.isArray(data.hives)) return data.hives;
    return [];
  }

  async function refreshHives() {
    clearTimeout(hivesTimer);
    try {
      const r = await api('GET', '/v1/hives');
      if (r.ok) renderHives(hiveList(r.data));
    } catch (e) {
      if (e instanceof AuthError) return;
    }
    hivesTimer = setTimeout(refreshHives, HIVES_EVERY_MS);
  }

  function renderHives(hives) {
    const list = $('hive-list');
    list.replaceChildren();
    if (!hives.length) list.append(el('li', 'muted', 'no hives registered'));
    for (const h of hives) {
      const health = h.health || (h.healthy === true ? 'healthy' : h.healthy === false ? 'unhealthy' : 'unknown');
      const li = el('li', 'hive');
      li.dataset.hiveId = h.hive_id;
      li.dataset.health = health;
      li.append(el('span', 'dot'), el('span', 'hive-id', h.hive_id), el('span', 'health', health));
      const active = h.active_downloads ?? h.active ?? null;
      if (active !== null) li.append(el('span', 'active muted', `${active} active`));
      li.title = [h.url, h.last_error].filter(Boolean).join(' · ');
      list.append(li);
      noteHive(h.hive_id);
      const option = [...$('hive-select').options].find((o) => o.value === h.hive_id);
      if (option) option.textContent = health === 'healthy' ? h.hive_id : `${h.hive_id} (${health})`;
    }
  }

  // ------------------------------------------------------------------ start and cancel

  function formMessage(text, kind) {
    const node = $('form-message');
    node.textContent = text || '';
    node.dataset.kind = kind || '';
    node.hidden = !text;
  }

  $('start-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const ref = $('model-ref').value.trim();
    if (!ref) return;
    const body = { model_ref: ref };
    const hive = $('hive-select').value;
    if (hive) body.hive_id = hive;
    const button = ev.target.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const r = await api('POST', '/v1/downloads', body);
      if (r.ok) {
        mergeState(r.data);
        $('model-ref').value = '';
        const where = r.data.hive_id || 'a hive';
        formMessage(r.status === 202 ? `started on ${where}` : `already ${r.data.status} on ${where}`, 'ok');
      } else {
        formMessage(errorText(r), 'error');
      }
    } catch (e) {
      if (!(e instanceof AuthError)) formMessage(`could not reach the queen (${e.message})`, 'error');
    } finally {
      button.disabled = false;
    }
  });

  // A Cancel button: DELETE a download (or a pull, on every hive), then show the answer.
  async function cancelVia(path, merge, button) {
    button.disabled = true;
    try {
      const r = await api('DELETE', path);
      if (r.ok) merge(r.data);
      else formMessage(`cancel failed: ${errorText(r)}`, 'error');
    } catch (e) {
      if (!(e instanceof AuthError)) formMessage(`could not reach the queen (${e.message})`, 'error');
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------------ list + live stream

  function renderUnreachable(list) {
    const node = $('unreachable');
    const items = (list || []).map((u) => (typeof u === 'string' ? u
      : [u.hive_id, u.error && (u.error.message || u.error), u.message].filter(Boolean).join(': ')));
    node.textContent = items.length ? `Not answering, their downloads may be missing: ${items.join(' · ')}` : '';
    node.hidden = !items.length;
  }

  async function resync() {
    const r = await api('GET', '/v1/downloads');
    if (!r.ok) throw new Error(errorText(r));
    const list = Array.isArray(r.data) ? r.data : (r.data.downloads || []);
    for (const s of list) mergeState(s);
    renderUnreachable(r.data.unreachable_hives);
    document.dispatchEvent(new CustomEvent('rbee:resync'));
    const found = await api('GET', '/v1/pulls');
    if (found.ok && found.data && Array.isArray(found.data.pulls)) for (const body of found.data.pulls) mergePull(body);
  }

  function stopStream() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (source) { source.close(); source = null; }
  }

  function scheduleReconnect() {
    stopStream();
    if (needLogin) return;
    setConn('reconnecting', `reconnecting in ${(backoff / 1000).toFixed(1)}s…`);
    retryTimer = setTimeout(resyncThenStream, backoff);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  }

  // Reload the list (which also tells a 401 apart from a queen that is down), then open the stream.
  async function resyncThenStream() {
    stopStream();
    if (needLogin) return;
    const attempt = ++attempts; // a newer attempt (a login meanwhile) wins
    try {
      await resync();
    } catch (e) {
      if (!(e instanceof AuthError) && attempt === attempts) scheduleReconnect();
      return;
    }
    if (attempt === attempts && !needLogin) openStream();
  }

  function openStream() {
    stopStream();
    const url = '/v1/downloads/stream' + (token ? `?access_token=${encodeURIComponent(token)}` : '');
    const es = new EventSource(url);
    source = es;
    es.addEventListener('open', () => {
      if (es !== source) return;
      backoff = BACKOFF_MIN_MS;
      setConn('live', 'live');
      // Catch what ended while we were away; the stream itself replays only active downloads.
      resync().catch(() => {});
    });
    for (const type of ['progress', 'complete', 'cancelled']) {
      es.addEventListener(type, (ev) => onMessage(type, ev));
    }
    // a model added to or gone from a hive: the Models view (models.js) asks for the matrix again
    es.addEventListener('model', () => document.dispatchEvent(new CustomEvent('rbee:model')));
    // 'error' is two things: a failed download (a MessageEvent with data, sent as `event: error`)
    // and the EventSource's own connection error (a plain Event, no data).
    es.addEventListener('error', (ev) => {
      if (es !== source) return;
      if (ev instanceof MessageEvent && typeof ev.data === 'string' && ev.data !== '') {
        onMessage('error', ev);
        return;
      }
      // Connection lost or refused (closed for good after a non-200 answer, or the browser is about
      // to retry on its own): take over with our own backoff, and resynchronise before streaming again.
      scheduleReconnect();
    });
  }

  function onMessage(type, ev) {
    let data;
    try { data = JSON.parse(ev.data); } catch (e) { return; }
    applyEvent(type, data);
  }

  // ------------------------------------------------------------------ start

  // what models.js (the Models view) shares with this page
  window.rbee = { api, el, errorText, humanBytes, buildBar, setBar };
  summarize();
  refreshHives();
  resyncThenStream();
})();
