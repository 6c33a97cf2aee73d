// Gateway console. Every number on these pages comes from the REST API,
// called with the session's CSRF token; the server decides what each person
// may see and do, and its refusals are shown as it words them.
'use strict';

(function () {
  const body = document.body;
  const csrf = body.dataset.csrf || '';
  const offset = Number(body.dataset.offset || 0); // seconds east of UTC
  const L = JSON.parse(body.dataset.messages || '{}');
  const t = (k) => L[k] || k;

  // ---- calling the API ----------------------------------------------------

  class Refusal extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  async function send(method, path, payload, extra) {
    const headers = Object.assign({ 'X-CSRF-Token': csrf, Accept: 'application/json' }, (extra && extra.headers) || {});
    let bodyText;
    if (payload !== undefined) { headers['Content-Type'] = 'application/json'; bodyText = JSON.stringify(payload); }
    const resp = await fetch(path, { method, headers, body: bodyText, credentials: 'same-origin', cache: 'no-store' });
    if (!resp.ok) { throw await refusal(resp); }
    return resp;
  }

  async function refusal(resp) {
    const text = await resp.text();
    let code = '', message = text || resp.statusText;
    try { const e = JSON.parse(text).error; if (e) { code = e.code; message = e.message; } } catch (_) { /* not JSON */ }
    if (resp.status === 401) { message = message + ' — ' + t('session_ended'); }
    return new Refusal(resp.status, code, message);
  }

  async function api(method, path, payload) {
    const resp = await send(method, path, payload);
    return resp.json();
  }
  const get = (path) => api('GET', path);

  // ---- notices ------------------------------------------------------------

  const noticeEl = document.getElementById('notice');
  function notice(message, kind) {
    noticeEl.textContent = message;
    noticeEl.className = kind || 'error';
    noticeEl.dataset.code = '';
    noticeEl.hidden = false;
  }
  function fail(err) {
    notice(err.message || String(err), 'error');
    if (err.code) { noticeEl.dataset.code = err.code; }
  }
  // A fault in the page itself is shown too, rather than lost in the console.
  window.addEventListener('error', (e) => fail(e.error || { message: e.message }));
  window.addEventListener('unhandledrejection', (e) => fail(e.reason || { message: 'unhandled rejection' }));

  // guarded runs fn, showing any refusal; it resolves to fn's result or undefined.
  async function guarded(fn) {
    try { return await fn(); } catch (err) { fail(err); return undefined; }
  }

  // ---- small DOM helpers --------------------------------------------------

  function el(tag, attrs, ...kids) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') n.textContent = v;
      else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
      else n.setAttribute(k, v === true ? '' : v);
    }
    for (const k of kids) { if (k !== null && k !== undefined) n.append(k); }
    return n;
  }

  function pad(n) { return String(n).padStart(2, '0'); }
  // when shows an API time in the server's zone, as YYYY-MM-DD HH:MM.
  function when(s) {
    if (!s) return '';
    const d = new Date(new Date(s).getTime() + offset * 1000);
    if (isNaN(d) || d.getUTCFullYear() < 1900) return '';
    return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) + ' ' + pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes());
  }
  // zoned turns a date or datetime-local input's value, read in the server's zone, into RFC 3339.
  function zoned(v, endOfDay) {
    if (!v) return '';
    if (v.length === 10) v += endOfDay ? 'T23:59:59' : 'T00:00:00';
    if (v.length === 16) v += ':00';
    const sign = offset < 0 ? '-' : '+', a = Math.abs(offset);
    return v + sign + pad(Math.floor(a / 3600)) + ':' + pad(Math.floor(a % 3600 / 60));
  }
  function num(v, digits) {
    if (typeof v !== 'number') return v === null || v === undefined ? '' : String(v);
    return digits === undefined ? String(Math.round(v * 1e4) / 1e4) : v.toFixed(digits);
  }
  function list(v) { return Array.isArray(v) ? v.join(', ') : (v || ''); }

  // ---- tables that page and sort -----------------------------------------

  // table fills host with rows under cols ({key, label, num, value(row), cell(row)}),
  // ten to a page, sorted by a click on a column's heading.
  function table(host, cols, rows, pageSize) {
    pageSize = pageSize || 10;
    const state = { key: null, dir: 1, page: 0 };
    const valueOf = (c, r) => (c.value ? c.value(r) : r[c.key]);
    function draw() {
      let sorted = rows.slice();
      if (state.key !== null) {
        const c = cols[state.key];
        sorted.sort((a, b) => {
          const x = valueOf(c, a), y = valueOf(c, b);
          if (typeof x === 'number' && typeof y === 'number') return (x - y) * state.dir;
          return String(x ?? '').localeCompare(String(y ?? '')) * state.dir;
        });
      }
      const pages = Math.max(1, Math.ceil(sorted.length / pageSize));
      state.page = Math.min(state.page, pages - 1);
      const shown = sorted.slice(state.page * pageSize, (state.page + 1) * pageSize);
      const head = el('tr', {}, ...cols.map((c, i) => el('th', {
        scope: 'col',
        'aria-sort': state.key === i ? (state.dir > 0 ? 'ascending' : 'descending') : null,
      }, c.sort === false ? c.label : el('button', {
        type: 'button', text: c.label,
        onclick: () => { state.dir = state.key === i ? -state.dir : 1; state.key = i; draw(); },
      }))));
      const tbody = el('tbody');
      if (shown.length === 0) {
        tbody.append(el('tr', {}, el('td', { colspan: cols.length, class: 'empty', text: t('no_rows') })));
      }
      for (const r of shown) {
        tbody.append(el('tr', { 'data-id': r.id || r.query_id || r.grant_id || r.seq || null },
          ...cols.map((c) => {
            const v = c.cell ? c.cell(r) : valueOf(c, r);
            const td = el('td', { class: c.num ? 'num' : null, 'data-col': c.key || null, 'data-label': c.label || null });
            td.append(v instanceof Node ? v : (typeof v === 'number' ? num(v) : (v ?? '')));
            return td;
          })));
      }
      const pager = el('div', { class: 'pager' },
        el('button', { type: 'button', class: 'prev', text: t('prev'), disabled: state.page === 0, onclick: () => { state.page--; draw(); } }),
        el('span', { class: 'page-of', text: t('page') + ' ' + (state.page + 1) + ' / ' + pages + ' · ' + sorted.length }),
        el('button', { type: 'button', class: 'next', text: t('next'), disabled: state.page >= pages - 1, onclick: () => { state.page++; draw(); } }));
      host.replaceChildren(el('table', {}, el('thead', {}, head), tbody), pager);
      host.dataset.rows = String(rows.length);
    }
    draw();
  }

  // action is a button that runs fn, then reloads the page's data. When fn
  // resolves to a string, that is the notice shown; otherwise "done".
  function action(label, fn, cls) {
    return el('button', {
      type: 'button', text: label, class: cls || null, 'data-action': cls || label,
      onclick: async (e) => {
        e.target.disabled = true;
        const out = await guarded(async () => { const r = await fn(); return typeof r === 'string' ? r : t('done'); });
        e.target.disabled = false;
        if (out !== undefined) { notice(out, 'ok'); refresh(); }
      },
    });
  }

  // withReason is an input for a reason (or another text, named by
  // placeholder) and a button that sends it.
  function withReason(label, fn, cls, placeholder) {
    const hint = placeholder || t('reason');
    const input = el('input', { placeholder: hint, 'aria-label': hint, class: 'reason' });
    const btn = action(label, () => fn(input.value), cls);
    return el('span', { class: 'row-actions' }, input, btn);
  }

  // proposed words what a grade or policy proposal did: applied at once,
  // or pending an approver's verification.
  function proposed(out) {
    if (out && out.change) return t('done') + ': ' + out.change.id + ' · ' + out.change.state;
    return t('done') + ': ' + ((out && out.name) || '') + ' · ' + ((out && out.grade) || '');
  }

  // ---- SVG charts ---------------------------------------------------------

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...kids) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) { if (v !== undefined && v !== null) n.setAttribute(k, v); }
    for (const k of kids) { if (k !== null && k !== undefined) n.append(k); }
    return n;
  }
  function title(text) { return svg('title', {}, text); }

  // barChart draws one bar a group with its 95% interval as an error bar.
  function barChart(labels, values, intervals, caption) {
    const W = 640, H = 260, left = 60, bottom = 40, top = 10;
    const highs = values.map((v, i) => Math.max(v, intervals[i] ? intervals[i][1] : v));
    const lows = values.map((v, i) => Math.min(0, v, intervals[i] ? intervals[i][0] : v));
    const max = Math.max(1e-9, ...highs), min = Math.min(0, ...lows);
    const y = (v) => top + (H - top - bottom) * (max - v) / (max - min);
    const bw = (W - left - 10) / Math.max(1, values.length);
    const g = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': caption, class: 'bar-chart' });
    g.append(svg('line', { class: 'axis', x1: left, x2: W - 5, y1: y(0), y2: y(0) }));
    g.append(svg('line', { class: 'axis', x1: left, x2: left, y1: top, y2: H - bottom }));
    for (const v of [max, (max + min) / 2, min]) {
      g.append(svg('text', { x: left - 4, y: y(v) + 4, 'text-anchor': 'end' }, num(v, v > 100 ? 0 : 2)));
    }
    values.forEach((v, i) => {
      const x = left + i * bw + bw * 0.15, w = bw * 0.7;
      const bar = svg('rect', { class: 'bar', x, width: w, y: Math.min(y(v), y(0)), height: Math.abs(y(0) - y(v)),
        'data-label': labels[i], 'data-value': v }, title(`${labels[i]}: ${num(v)}`));
      g.append(bar);
      const iv = intervals[i];
      if (iv) {
        const cx = x + w / 2;
        g.append(svg('line', { class: 'err', x1: cx, x2: cx, y1: y(iv[1]), y2: y(iv[0]), 'data-low': iv[0], 'data-high': iv[1] },
          title(`${t('interval')}: [${num(iv[0])}, ${num(iv[1])}]`)));
        g.append(svg('line', { class: 'err', x1: cx - 5, x2: cx + 5, y1: y(iv[1]), y2: y(iv[1]) }));
        g.append(svg('line', { class: 'err', x1: cx - 5, x2: cx + 5, y1: y(iv[0]), y2: y(iv[0]) }));
      }
      g.append(svg('text', { x: x + w / 2, y: H - bottom + 14, 'text-anchor': 'middle' }, String(labels[i]).slice(0, 14)));
    });
    return el('figure', { class: 'chart' }, g, el('figcaption', { text: caption }));
  }

  // lineChart draws points ({x: ms, y}) as a step line from x0 to x1, with
  // horizontal lines ({y, cls, label}); yFmt formats the axis.
  function lineChart(points, x0, x1, yMax, lines, yFmt, caption, attrs) {
    const W = 640, H = 240, left = 56, right = 12, top = 10, bottom = 30;
    const x = (v) => left + (W - left - right) * (v - x0) / Math.max(1, x1 - x0);
    const y = (v) => top + (H - top - bottom) * (1 - v / yMax);
    const g = svg('svg', Object.assign({ viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': caption, class: 'line-chart' }, attrs || {}));
    g.append(svg('line', { class: 'axis', x1: left, x2: W - right, y1: y(0), y2: y(0) }));
    g.append(svg('line', { class: 'axis', x1: left, x2: left, y1: top, y2: H - bottom }));
    for (const v of [0, yMax / 2, yMax]) { g.append(svg('text', { x: left - 4, y: y(v) + 4, 'text-anchor': 'end' }, yFmt(v))); }
    g.append(svg('text', { x: left, y: H - 8 }, when(new Date(x0).toISOString()).slice(0, 10)));
    g.append(svg('text', { x: W - right, y: H - 8, 'text-anchor': 'end' }, when(new Date(x1).toISOString()).slice(0, 10)));
    for (const l of lines) {
      g.append(svg('line', { class: l.cls, x1: left, x2: W - right, y1: y(l.y), y2: y(l.y), 'data-y': l.y }, title(l.label)));
      g.append(svg('text', { x: W - right - 2, y: y(l.y) - 3, 'text-anchor': 'end' }, l.label));
    }
    if (points.length) {
      let d = `M${x(points[0].x)},${y(points[0].y)}`;
      for (let i = 1; i < points.length; i++) { d += ` H${x(points[i].x)} V${y(points[i].y)}`; }
      g.append(svg('path', { class: 'series', d }));
      for (const p of points) {
        g.append(svg('circle', { class: 'dot', cx: x(p.x), cy: y(p.y), r: 3, 'data-y': p.y }, title(`${when(new Date(p.x).toISOString())}: ${yFmt(p.y)}`)));
      }
    }
    return el('figure', { class: 'chart' }, g, el('figcaption', { text: caption }));
  }
  const pct = (v) => (Math.round(v * 1000) / 10) + '%';

  // ---- pages --------------------------------------------------------------

  const pages = {};
  let refresh = () => {};

  async function datasetSelects() {
    const ds = await get('/v1/datasets');
    for (const s of document.querySelectorAll('.dataset-select')) {
      s.replaceChildren(...ds.datasets.map((d) => el('option', { value: d.name, text: d.name })));
    }
    return ds.datasets;
  }

  pages.signin = function () {
    document.getElementById('signin-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const token = document.getElementById('token').value.trim();
      const ok = await guarded(() => send('POST', '/v1/session', { token }));
      if (ok) { location.assign('/'); }
    });
  };

  pages.steward = async function () {
    let datasets = [];
    const load = async () => {
      datasets = await guarded(datasetSelects) || [];
      table(document.getElementById('datasets'), [
        { key: 'name', label: t('dataset'), cell: (d) => el('a', { href: '#', text: d.name, onclick: (e) => { e.preventDefault(); showDataset(d); } }), value: (d) => d.name },
        { key: 'grade', label: t('grade') },
        { key: 'category', label: t('category') },
        { key: 'purpose', label: t('purpose') },
        { key: 'responsible_party', label: t('responsible') },
        { key: 'cross_border', label: t('cross_border') },
        { key: 'rows', label: t('rows'), num: true },
        { key: 'needs_regrade', label: t('needs_regrade'), value: (d) => (d.needs_regrade ? '⚑' : '') },
      ], datasets);
      fillPolicy();
      const rs = await guarded(() => get('/v1/access-requests'));
      if (!rs) return;
      const reqs = rs.access_requests;
      const base = [
        { key: 'id', label: t('id') },
        { key: 'researcher', label: t('researcher') },
        { key: 'datasets', label: t('datasets'), value: (r) => list(r.datasets) + (r.columns ? ' (' + list(r.columns) + ')' : '') },
        { key: 'purpose', label: t('purpose') },
        { key: 'epsilon', label: t('epsilon'), num: true },
        { key: 'expires_at', label: t('expires'), value: (r) => when(r.expires_at) },
        { key: 'created_at', label: t('created'), value: (r) => when(r.created_at) },
      ];
      table(document.getElementById('pending-requests'), base.concat([{
        key: 'act', label: '', sort: false, cell: (r) => el('span', { class: 'row-actions' },
          action(t('approve'), () => api('POST', `/v1/access-requests/${r.id}/approve`), 'approve'),
          withReason(t('reject'), (reason) => api('POST', `/v1/access-requests/${r.id}/reject`, { reason }), 'reject')),
      }]), reqs.filter((r) => r.state === 'pending'));
      table(document.getElementById('all-requests'), base.concat([
        { key: 'state', label: t('state') },
        { key: 'grant_id', label: t('grant') },
        { key: 'act', label: '', sort: false, cell: (r) => (r.state === 'granted' ? action(t('revoke'), () => api('POST', `/v1/grants/${r.grant_id}/revoke`), 'revoke') : '') },
      ]), reqs);
      const pc = await guarded(() => get('/v1/protection-changes'));
      if (pc) {
        table(document.getElementById('protection-changes'), [
          { key: 'id', label: t('id') }, { key: 'dataset', label: t('dataset') },
          { key: 'lowers', label: t('lowers'), value: (c) => list(c.lowers) }, { key: 'reason', label: t('reason') },
          { key: 'proposed_by', label: t('proposed_by') }, { key: 'state', label: t('state') },
          { key: 'created_at', label: t('created'), value: (c) => when(c.created_at) },
          { key: 'act', label: '', sort: false, cell: (c) => (c.state === 'pending' ? withReason(t('reject'), (reason) => api('POST', `/v1/protection-changes/${c.id}/reject`, { reason }), 'reject') : '') },
        ], pc.protection_changes || pc.changes || []);
      }
    };
    function showDataset(d) {
      const host = document.getElementById('dataset-detail');
      const cols = [];
      for (const tb of (d.policy && d.policy.tables) || []) {
        for (const c of tb.columns || []) { cols.push(Object.assign({ table: tb.name }, c)); }
      }
      host.replaceChildren(el('h3', { text: d.name }),
        el('dl', {}, el('dt', { text: t('protection') }), el('dd', { text: d.protection_measures || '' }),
          el('dt', { text: t('units') }), el('dd', { text: num(d.units) })),
        el('div', { class: 'table', id: 'dataset-columns' }));
      table(document.getElementById('dataset-columns'), [
        { key: 'table', label: t('table_name') }, { key: 'name', label: t('columns') }, { key: 'type', label: t('kind') },
        { key: 'role', label: t('roles') }, { key: 'min', label: 'min', num: true }, { key: 'max', label: 'max', num: true },
      ], cols, 20);
    }
    const policyForm = document.getElementById('policy-form');
    function fillPolicy() {
      const d = datasets.find((x) => x.name === policyForm.dataset.value);
      policyForm.policy.value = d ? JSON.stringify(d.policy, null, 2) : '';
    }
    policyForm.dataset.addEventListener('change', fillPolicy);
    policyForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      const f = e.target;
      await guarded(async () => {
        const out = await api('POST', `/v1/datasets/${encodeURIComponent(f.dataset.value)}/policy`, { policy: JSON.parse(f.policy.value), reason: f.reason.value });
        notice(proposed(out), 'ok');
        load();
      });
    });
    document.getElementById('grade-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const f = e.target;
      await guarded(async () => {
        const out = await api('POST', `/v1/datasets/${encodeURIComponent(f.dataset.value)}/grade`, { grade: f.grade.value, reason: f.reason.value });
        notice(proposed(out), 'ok');
        load();
      });
    });
    document.getElementById('upload-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const f = e.target;
      const form = new FormData();
      form.append('manifest', f.manifest.value);
      form.append('table:' + f.table.value, f.file.files[0]);
      const bar = document.getElementById('upload-progress');
      const submit = f.querySelector('button[type=submit]');
      bar.hidden = false; bar.value = 0; bar.dataset.events = '0';
      submit.disabled = true;
      const xhr = new XMLHttpRequest();
      xhr.open('POST', '/v1/datasets/upload');
      xhr.setRequestHeader('X-CSRF-Token', csrf);
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.upload.addEventListener('progress', (ev) => {
        if (ev.lengthComputable) bar.value = 100 * ev.loaded / ev.total;
        bar.dataset.events = String(Number(bar.dataset.events) + 1);
      });
      // Sent: the gateway now checks, encrypts and loads the files.
      xhr.upload.addEventListener('load', () => { bar.value = 100; notice(t('working'), 'ok'); });
      xhr.addEventListener('load', () => {
        submit.disabled = false;
        let msg = xhr.statusText, code = '';
        try {
          const j = JSON.parse(xhr.responseText);
          if (j.error) { msg = j.error.message; code = j.error.code; } else { msg = (j.dataset && j.dataset.name) || t('done'); }
        } catch (_) { /* keep the status */ }
        if (xhr.status >= 200 && xhr.status < 300) { notice(t('uploaded_dataset') + ': ' + msg, 'ok'); load(); } else { fail({ message: msg, code }); }
      });
      xhr.addEventListener('error', () => { submit.disabled = false; fail({ message: xhr.statusText || 'upload failed' }); });
      notice(t('working'), 'ok');
      xhr.send(form);
    });
    refresh = load;
    await load();
  };

  pages.approver = async function () {
    const load = async () => {
      guarded(datasetSelects);
      const rs = await guarded(() => get('/v1/access-requests'));
      if (rs) {
        const reqs = rs.access_requests;
        const base = [
          { key: 'id', label: t('id') }, { key: 'researcher', label: t('researcher') },
          { key: 'datasets', label: t('datasets'), value: (r) => list(r.datasets) },
          { key: 'purpose', label: t('purpose') }, { key: 'epsilon', label: t('epsilon'), num: true },
          { key: 'approved_by', label: t('approved_by') },
        ];
        table(document.getElementById('approved-requests'), base.concat([{
          key: 'act', label: '', sort: false, cell: (r) => el('span', { class: 'row-actions' },
            action(t('verify'), async () => {
              const out = await api('POST', `/v1/access-requests/${r.id}/verify`);
              return t('grant') + ' ' + out.grant_id;
            }, 'verify'),
            withReason(t('reject'), (reason) => api('POST', `/v1/access-requests/${r.id}/reject`, { reason }), 'reject')),
        }]), reqs.filter((r) => r.state === 'approved'));
        table(document.getElementById('granted-requests'), base.concat([
          { key: 'verified_by', label: t('verified_by') }, { key: 'grant_id', label: t('grant') },
          { key: 'act', label: '', sort: false, cell: (r) => action(t('revoke'), () => api('POST', `/v1/grants/${r.grant_id}/revoke`), 'revoke') },
        ]), reqs.filter((r) => r.state === 'granted'));
      }
      const pc = await guarded(() => get('/v1/protection-changes'));
      if (pc) {
        table(document.getElementById('pending-protection'), [
          { key: 'id', label: t('id') }, { key: 'dataset', label: t('dataset') },
          { key: 'grade', label: t('grade'), value: (c) => (c.proposed && c.proposed.grade) || '' },
          { key: 'lowers', label: t('lowers'), value: (c) => list(c.lowers) }, { key: 'reason', label: t('reason') },
          { key: 'proposed_by', label: t('proposed_by') }, { key: 'created_at', label: t('created'), value: (c) => when(c.created_at) },
          { key: 'act', label: '', sort: false, cell: (c) => el('span', { class: 'row-actions' },
            action(t('verify'), () => api('POST', `/v1/protection-changes/${c.id}/verify`), 'verify'),
            withReason(t('reject'), (reason) => api('POST', `/v1/protection-changes/${c.id}/reject`, { reason }), 'reject')) },
        ], (pc.protection_changes || pc.changes || []).filter((c) => c.state === 'pending'));
      }
      const ch = await guarded(() => get('/v1/person-changes'));
      if (ch) {
        table(document.getElementById('person-changes'), [
          { key: 'id', label: t('id') }, { key: 'person', label: t('person') }, { key: 'kind', label: t('kind') },
          { key: 'roles', label: t('roles'), value: (c) => list(c.roles) }, { key: 'requested_by', label: t('by') },
          { key: 'created_at', label: t('created'), value: (c) => when(c.created_at) },
          { key: 'act', label: '', sort: false, cell: (c) => el('span', { class: 'row-actions' },
            action(t('confirm'), async () => {
              const out = await api('POST', `/v1/person-changes/${c.id}/confirm`);
              return out.confirmation_code ? t('confirmation_code') + ': ' + out.confirmation_code : t('done');
            }, 'confirm'),
            withReason(t('reject'), (reason) => api('POST', `/v1/person-changes/${c.id}/reject`, { reason }), 'reject')) },
        ], (ch.person_changes || ch.changes || []).filter((c) => c.state === 'pending'));
      }
    };
    document.getElementById('assessment-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const f = e.target;
      await guarded(async () => {
        const st = await api('POST', '/v1/quota/risk-assessments', { dataset: f.dataset.value, threshold: Number(f.threshold.value), reference: f.reference.value });
        notice(t('done') + ': ' + t('threshold') + ' ' + pct(st.threshold), 'ok');
      });
    });
    refresh = load;
    await load();
  };

  pages.auditor = async function () {
    const auditForm = document.getElementById('audit-form');
    async function searchAudit() {
      const f = auditForm;
      const q = new URLSearchParams({ limit: '1000' });
      for (const k of ['actor', 'dataset', 'action', 'outcome']) { if (f[k].value) q.set(k, f[k].value.trim()); }
      if (f.from.value) q.set('from', zoned(f.from.value));
      if (f.to.value) q.set('to', zoned(f.to.value));
      const out = await guarded(() => get('/v1/audit?' + q));
      if (!out) return;
      table(document.getElementById('audit'), [
        { key: 'seq', label: '#', num: true }, { key: 'time', label: t('time'), value: (e) => when(e.time) },
        { key: 'actor', label: t('person') }, { key: 'role', label: t('roles') }, { key: 'action', label: t('action') },
        { key: 'dataset', label: t('dataset') }, { key: 'outcome', label: t('outcome') },
        { key: 'detail', label: t('detail'), value: (e) => (e.detail ? JSON.stringify(e.detail).slice(0, 160) : '') },
      ], (out.entries || []).slice().reverse(), 15);
    }
    auditForm.addEventListener('submit', (e) => { e.preventDefault(); searchAudit(); });

    document.getElementById('export-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const f = e.target;
      const q = new URLSearchParams({ from: zoned(f.from.value), to: zoned(f.to.value, true), format: f.format.value });
      await guarded(async () => {
        const resp = await send('GET', '/v1/audit/export?' + q);
        const blob = await resp.blob();
        const a = el('a', { href: URL.createObjectURL(blob), download: `audit-export-${f.from.value}-${f.to.value}.${f.format.value}` });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(a.href), 10000);
        notice(t('done') + ': ' + a.download, 'ok');
      });
    });
    const today = new Date(Date.now() + offset * 1000).toISOString().slice(0, 10);
    document.querySelector('#export-form [name=to]').value = today;
    document.querySelector('#export-form [name=from]').value = today.slice(0, 4) + '-01-01';

    async function verify() {
      const status = document.getElementById('verify-status');
      const v = await guarded(() => get('/v1/audit/verify'));
      if (!v) { status.textContent = '?'; return; }
      status.textContent = (v.intact ? t('intact') : t('broken')) + ' · ' + num(v.report && v.report.entries) + ' ' + t('rows');
      status.className = 'status ' + (v.intact ? 'ok' : 'bad');
      status.dataset.intact = String(v.intact);
    }

    async function quota() {
      const host = document.getElementById('quota-charts');
      const ds = await guarded(() => get('/v1/datasets'));
      if (!ds) return;
      host.replaceChildren();
      for (const d of ds.datasets.filter((x) => x.grade === 'core')) {
        const st = await guarded(() => get('/v1/quota?dataset=' + encodeURIComponent(d.name)));
        if (!st) continue;
        const x0 = Date.UTC(st.year, 0, 1) - offset * 1000, x1 = Date.UTC(st.year + 1, 0, 1) - offset * 1000;
        const share = (provided) => (st.static_total > 0 ? provided / st.static_total : 0);
        const events = (st.recent_events || []).slice().sort((a, b) => new Date(a.at) - new Date(b.at));
        const points = [{ x: x0, y: events.length ? share(events[0].provided_after - events[0].added) : 0 }];
        for (const ev of events) { points.push({ x: new Date(ev.at).getTime(), y: share(ev.provided_after) }); }
        points.push({ x: Math.min(Date.now(), x1), y: st.ratio });
        const lines = [{ y: st.threshold, cls: 'limit', label: t('line').replace('30%', pct(st.threshold)) }];
        for (const w of st.warnings || []) { lines.push({ y: w, cls: 'warnline', label: t('warning') + ' ' + pct(w) }); }
        const yMax = Math.max(st.threshold * 1.2, st.ratio * 1.1, 0.05);
        const fig = lineChart(points, x0, x1, yMax, lines, pct,
          `${d.name} ${st.year}: ${pct(st.ratio)} (${num(st.provided)} / ${num(st.static_total)}) · ${st.state}`,
          { 'data-dataset': d.name, 'data-ratio': st.ratio, 'data-threshold': st.threshold, 'data-provided': st.provided, 'data-state': st.state });
        const evHost = el('div', { class: 'table' });
        host.append(el('h3', { text: d.name }), fig, el('h3', { text: t('releases') }), evHost);
        table(evHost, [
          { key: 'at', label: t('time'), value: (e) => when(e.at) }, { key: 'query_id', label: 'query' },
          { key: 'org', label: t('org') }, { key: 'counted', label: t('counted'), value: (e) => (e.counted ? '✓' : '') },
          { key: 'units', label: t('units'), num: true }, { key: 'added', label: t('added'), num: true },
          { key: 'provided_after', label: t('provided_after'), num: true },
          { key: 'share', label: t('share'), value: (e) => share(e.provided_after), cell: (e) => pct(share(e.provided_after)) },
        ], events.slice().reverse(), 5);
      }
    }

    async function budgets() {
      const out = await guarded(() => get('/v1/budgets'));
      if (!out) return;
      const bs = out.budgets;
      table(document.getElementById('budgets'), [
        { key: 'grant_id', label: t('grant') }, { key: 'researcher', label: t('researcher') }, { key: 'dataset', label: t('dataset') },
        { key: 'epsilon_total', label: t('total'), num: true }, { key: 'epsilon_spent', label: t('spent'), num: true },
        { key: 'epsilon_remaining', label: t('remaining'), num: true },
        { key: 'expires_at', label: t('expires'), value: (b) => when(b.expires_at) },
        { key: 'live', label: t('live'), value: (b) => (b.live ? '✓' : '') },
      ], bs);
      const host = document.getElementById('burn-down');
      host.replaceChildren();
      for (const b of bs) {
        const h = await guarded(() => get(`/v1/grants/${b.grant_id}/history`));
        if (!h) continue;
        const hist = (h.history || h.queries || h.points || []).filter((q) => !q.cached);
        const start = hist.length ? new Date(hist[0].time).getTime() - 3600e3 : Date.now() - 86400e3;
        const end = Math.max(Date.now(), start + 3600e3);
        const points = [{ x: start, y: b.epsilon_total }];
        for (const q of hist) { points.push({ x: new Date(q.time).getTime(), y: b.epsilon_total - (q.epsilon_spent_after ?? q.epsilon_cumulative) }); }
        points.push({ x: end, y: b.epsilon_remaining });
        host.append(lineChart(points, start, end, Math.max(b.epsilon_total, 1e-9), [], (v) => num(v, 2),
          `${b.grant_id} · ${b.researcher} · ${t('remaining')} ${num(b.epsilon_remaining)} / ${num(b.epsilon_total)}`,
          { 'data-grant': b.grant_id, 'data-remaining': b.epsilon_remaining, 'data-total': b.epsilon_total }));
      }
    }

    async function alerts() {
      const out = await guarded(() => get('/v1/alerts'));
      if (!out) return;
      table(document.getElementById('alerts'), [
        { key: 'created_at', label: t('time'), value: (a) => when(a.created_at) }, { key: 'kind', label: t('kind') },
        { key: 'person', label: t('person') }, { key: 'dataset', label: t('dataset') }, { key: 'message', label: t('message') },
        { key: 'state', label: t('state') }, { key: 'handled_by', label: t('by') },
        { key: 'act', label: '', sort: false, cell: (a) => (a.state === 'open' ? el('span', { class: 'row-actions' },
          action(t('acknowledge'), () => api('POST', `/v1/alerts/${a.id}/ack`), 'ack'),
          withReason(t('incident'), (summary) => api('POST', `/v1/alerts/${a.id}/incident`, { summary }), 'incident', t('summary'))) : '') },
      ], out.alerts || []);
    }

    refresh = () => Promise.all([verify(), alerts()]);
    await Promise.all([verify(), quota(), budgets(), alerts(), searchAudit()]);
    body.dataset.loaded = 'true';
  };

  pages.researcher = async function () {
    let answers = 0;
    const load = async () => {
      guarded(datasetSelects);
      const out = await guarded(() => get('/v1/budgets'));
      if (!out) return;
      table(document.getElementById('budgets'), [
        { key: 'grant_id', label: t('grant') }, { key: 'dataset', label: t('dataset') },
        { key: 'epsilon_total', label: t('total'), num: true }, { key: 'epsilon_spent', label: t('spent'), num: true },
        { key: 'epsilon_remaining', label: t('remaining'), num: true },
        { key: 'expires_at', label: t('expires'), value: (b) => when(b.expires_at) },
        { key: 'live', label: t('live'), value: (b) => (b.live ? '✓' : '') },
      ], out.budgets);
      const hist = [];
      for (const b of out.budgets) {
        const h = await guarded(() => get(`/v1/grants/${b.grant_id}/history`));
        if (h) hist.push(...(h.history || h.queries || h.points || []));
      }
      const show = (q) => guarded(async () => {
        showAnswer(await get('/v1/queries/' + encodeURIComponent(q.query_id)));
        document.getElementById('answer-meta').scrollIntoView({ block: 'nearest' });
      });
      table(document.getElementById('history'), [
        { key: 'time', label: t('time'), value: (q) => when(q.time) }, { key: 'grant_id', label: t('grant') },
        { key: 'sql', label: t('sql'), value: (q) => q.sql,
          cell: (q) => (q.answer_id ? el('a', { href: '#', class: 'past', text: q.sql, onclick: (e) => { e.preventDefault(); show(q); } }) : q.sql) },
        { key: 'epsilon', label: t('epsilon'), num: true }, { key: 'outcome', label: t('outcome'), value: (q) => q.outcome + (q.cached ? ' ↺' : '') },
        { key: 'act', label: '', sort: false, cell: (q) => el('span', { class: 'row-actions' },
          q.answer_id ? el('button', { type: 'button', class: 'secondary show-answer', text: t('show_answer'), onclick: () => show(q) }) : null,
          el('button', { type: 'button', class: 'secondary use', text: t('use'),
            onclick: () => { document.getElementById('sql').value = q.sql; document.getElementById('epsilon').value = q.epsilon || 0.1; } })) },
      ], hist.slice().reverse());
      const rs = await guarded(() => get('/v1/access-requests'));
      if (rs) {
        table(document.getElementById('my-requests'), [
          { key: 'id', label: t('id') }, { key: 'datasets', label: t('datasets'), value: (r) => list(r.datasets) },
          { key: 'purpose', label: t('purpose') }, { key: 'epsilon', label: t('epsilon'), num: true },
          { key: 'state', label: t('state') }, { key: 'grant_id', label: t('grant') },
        ], rs.access_requests, 5);
      }
    };

    function showAnswer(a) {
      const meta = document.getElementById('answer-meta');
      const p = a.privacy || {};
      const bits = [`${t('mechanism')}: ${p.mechanism || ''}`, `ε ${num(p.epsilon)}`, `k ${p.k ?? ''}`, `${t('suppressed')}: ${p.suppressed_groups ?? 0}`];
      if (a.budget) bits.push(`${t('budget_left')}: ${num(a.budget.epsilon_remaining)}`);
      if (a.cost) bits.push(`${t('cost')}: ε ${num(a.cost.epsilon)}`);
      const parts = [];
      if (a.history) {
        parts.push(el('p', { id: 'answer-past' }, `${t('past_answer')} ${when(a.history.time)} · `, el('code', { text: a.history.sql })));
      }
      parts.push(el('p', { id: 'answer-privacy', text: bits.join(' · ') }));
      if (a.receipt) {
        parts.push(el('p', { id: 'answer-receipt', class: 'note', title: a.receipt.signature,
          'data-digest': a.receipt.digest, text: `${t('receipt')}: ${a.receipt.query_id} · ${when(a.receipt.issued_at)} · SM3 ${a.receipt.digest}` }));
      }
      meta.replaceChildren(...parts);
      const answerHost = document.getElementById('answer');
      const chartHost = document.getElementById('answer-chart');
      if (a.dry_run) {
        const rows = Object.entries(p.columns || {}).map(([name, c]) => ({ name, noise_scale: c.noise_scale, ci95: c.ci95 }));
        table(answerHost, [{ key: 'name', label: t('columns') }, { key: 'noise_scale', label: 'noise scale', num: true }, { key: 'ci95', label: '± 95%', num: true }], rows);
        chartHost.replaceChildren();
        return;
      }
      const cols = a.columns || [];
      const rows = a.rows || [];
      // The answer's own intervals when it carries them; otherwise each
      // protected column's 95% half-width (privacy.columns[name].ci95).
      const perColumn = p.columns || {};
      const aggregate = cols.map((c) => perColumn[c.name] !== undefined);
      const intervals = a.intervals || rows.map((v) => cols.map((c, i) => {
        const ci = perColumn[c.name] && perColumn[c.name].ci95;
        return typeof ci === 'number' && typeof v[i] === 'number' ? [v[i] - ci, v[i] + ci] : null;
      }));
      const specs = [];
      cols.forEach((c, i) => {
        specs.push({ key: c.name, label: c.name, num: aggregate[i], value: (r) => r.v[i] });
        if (aggregate[i]) {
          specs.push({ key: c.name + '_ci', label: c.name + ' ' + t('interval'), sort: false,
            value: (r) => (r.iv && r.iv[i] ? `[${num(r.iv[i][0])}, ${num(r.iv[i][1])}]` : '') });
        }
      });
      const objs = rows.map((v, r) => ({ v, iv: intervals[r] }));
      table(answerHost, specs, objs, 20);
      answerHost.dataset.queryId = a.query_id || '';
      answerHost.dataset.historyId = a.history ? a.history.query_id : '';
      const yi = aggregate.indexOf(true);
      const keys = cols.map((_, i) => i).filter((i) => !aggregate[i]);
      if (yi >= 0 && rows.length > 0) {
        const labels = rows.map((v) => keys.map((k) => v[k]).join(' · ') || cols[yi].name);
        chartHost.replaceChildren(barChart(labels, rows.map((v) => Number(v[yi])), rows.map((_, r) => (intervals[r] ? intervals[r][yi] : null)),
          `${cols[yi].name} (${t('interval')})`));
      } else {
        chartHost.replaceChildren();
      }
      answers++;
      body.dataset.answers = String(answers);
    }

    async function ask(dry) {
      const payload = { sql: document.getElementById('sql').value };
      const eps = Number(document.getElementById('epsilon').value);
      if (eps > 0) payload.epsilon = eps;
      if (dry) payload.dry_run = true;
      notice(t('working'), 'ok');
      const a = await guarded(() => api('POST', '/v1/queries', payload));
      if (!a) return;
      noticeEl.hidden = true;
      showAnswer(a);
      if (!dry) load();
    }
    document.getElementById('query-form').addEventListener('submit', (e) => { e.preventDefault(); ask(false); });
    document.getElementById('dry-run').addEventListener('click', () => ask(true));
    document.getElementById('apply-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const f = e.target;
      await guarded(async () => {
        const out = await api('POST', '/v1/access-requests', { datasets: [f.dataset.value], purpose: f.purpose.value,
          epsilon: Number(f.epsilon.value), expires_at: zoned(f.expires.value, true) });
        notice(t('done') + ': ' + out.id + ' · ' + out.state, 'ok');
        load();
      });
    });
    const exp = document.querySelector('#apply-form [name=expires]');
    exp.value = new Date(Date.now() + 180 * 86400e3).toISOString().slice(0, 10);
    refresh = load;
    await load();
  };

  pages.account = function () {};

  // ---- start --------------------------------------------------------------

  const out = document.getElementById('sign-out');
  if (out) {
    out.addEventListener('click', async () => {
      await guarded(() => send('DELETE', '/v1/session'));
      location.assign('/');
    });
  }
  const page = pages[body.dataset.page];
  Promise.resolve(page ? page() : undefined).finally(() => { body.dataset.ready = 'true'; });
})();
