// rbee queen live page: the Models view. Plain JavaScript, no build step, same-origin only.
//
// Models by hives, as GET /v1/models gives them (the queen answers from memory, kept current from
// every hive's stream): a row per model, a cell per hive (complete, partial with its percent of the
// largest complete copy, pinned), with pin / unpin and delete buttons, and a disk bar per hive.
// Live: app.js passes on the aggregated stream's `model` events (and every resync) as the document
// events `rbee:model` / `rbee:resync`; each asks GET /v1/models again (once per burst).
// Text from the server is only ever set with textContent.
'use strict';

(function () {
  const { api, el, errorText, humanBytes, buildBar, setBar } = window.rbee;
  const $ = (id) => document.getElementById(id);
  const REFRESH_MS = 150; // a burst of events: one GET
  const EVERY_MS = 10000; // and now and then anyway

  let timer = null;
  let busy = false;
  let again = false;

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(refresh, delay);
  }

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const r = await api('GET', '/v1/models');
      if (r.ok && r.data) render(r.data);
    } catch (e) {
      // (signed out, or the queen is down: app.js shows it; the next event or tick tries again)
    } finally {
      busy = false;
      schedule(again ? 0 : EVERY_MS);
      again = false;
    }
  }

  function modelPath(repoId) {
    return '/v1/models/' + repoId.split('/').map(encodeURIComponent).join('/');
  }

  function message(text) {
    const node = $('models-message');
    node.textContent = text || '';
    node.hidden = !text;
  }

  async function change(button, method, path, hiveIds, what) {
    button.disabled = true;
    try {
      const r = await api(method, `${path}?hives=${encodeURIComponent(hiveIds.join(','))}`);
      const failed = r.ok ? (r.data.results || []).filter((x) => !x.ok) : [];
      if (!r.ok) message(`${what} failed: ${errorText(r)}`);
      else if (failed.length) message(failed.map((x) => `${x.hive_id}: ${x.error ? `${x.error.code}: ${x.error.message}` : x.status}`).join(' · '));
      else message('');
    } catch (e) {
      message(`${what} failed: ${e.message}`);
    } finally {
      button.disabled = false;
      schedule(0);
    }
  }

  function button(cls, text, label, onClick) {
    const b = el('button', cls, text);
    b.type = 'button';
    b.setAttribute('aria-label', label);
    b.addEventListener('click', () => onClick(b));
    return b;
  }

  function cellFor(model, holder, whole) {
    const td = el('td', 'model-cell');
    td.dataset.hiveId = holder.hive_id;
    let state = 'partial';
    if (holder.complete) state = 'complete';
    else if (whole) state = `partial ${Math.min(99, Math.floor(holder.size_on_disk * 100 / whole))}%`;
    td.dataset.state = holder.complete ? 'complete' : 'partial';
    td.append(el('span', 'state', state), el('span', 'size muted', humanBytes(holder.size_on_disk)));
    if (holder.pinned) td.append(el('span', 'pinned', 'pinned'));
    if (holder.in_use) td.append(el('span', 'in-use muted', 'in use'));
    const path = modelPath(model.repo_id);
    const on = !holder.pinned;
    td.append(
      button('pin', on ? 'Pin' : 'Unpin', `${on ? 'pin' : 'unpin'} ${model.repo_id} on ${holder.hive_id}`,
        (b) => change(b, on ? 'PUT' : 'DELETE', `${path}/pin`, [holder.hive_id], on ? 'pin' : 'unpin')),
      button('cancel delete', 'Delete', `delete ${model.repo_id} from ${holder.hive_id}`, (b) => {
        if (window.confirm(`Delete ${model.repo_id} from ${holder.hive_id}?`)) {
          change(b, 'DELETE', path, [holder.hive_id], 'delete');
        }
      }),
    );
    return td;
  }

  function renderDisks(hives) {
    const list = $('disk-list');
    list.replaceChildren();
    for (const d of hives) {
      const li = el('li', 'disk');
      li.dataset.hiveId = d.hive_id;
      const limit = d.budget || d.used + d.free;
      const bar = buildBar();
      setBar(bar, limit > 0 ? (d.used * 100) / limit : null, false);
      const text = d.budget ? `${humanBytes(d.used)} of ${humanBytes(d.budget)} budget · ${humanBytes(d.free)} free`
        : `${humanBytes(d.used)} used · ${humanBytes(d.free)} free`;
      li.append(el('span', 'hive-id', d.hive_id), bar, el('span', 'disk-text muted', text));
      list.append(li);
    }
  }

  function render(fleet) {
    const hives = (fleet.hives || []).map((d) => d.hive_id);
    const head = el('tr');
    head.append(el('th', '', 'Model'), el('th', 'num', 'Size'));
    for (const h of hives) head.append(el('th', '', h));
    $('models-head').replaceChildren(head);
    const rows = [];
    for (const model of fleet.models || []) {
      const tr = el('tr', 'model');
      tr.dataset.repoId = model.repo_id;
      const byHive = new Map(model.hives.map((x) => [x.hive_id, x]));
      const sizes = model.hives.filter((x) => x.complete).map((x) => x.size_on_disk);
      const whole = sizes.length ? Math.max(...sizes) : null;
      tr.append(el('td', 'model-name', model.repo_id), el('td', 'num', whole ? humanBytes(whole) : '?'));
      for (const h of hives) tr.append(byHive.has(h) ? cellFor(model, byHive.get(h), whole) : el('td', 'muted', '–'));
      rows.push(tr);
    }
    $('model-rows').replaceChildren(...rows);
    $('models-empty').hidden = rows.length > 0;
    renderDisks(fleet.hives || []);
    const away = fleet.unreachable_hives || [];
    $('models-unreachable').textContent = away.length ? `Not shown (not answering): ${away.join(' · ')}` : '';
    $('models-unreachable').hidden = !away.length;
  }

  document.addEventListener('rbee:model', () => schedule(REFRESH_MS));
  document.addEventListener('rbee:resync', () => schedule(0));
  schedule(0);
})();
