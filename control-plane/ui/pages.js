// The console's pages. Each reads and writes through the admin API only,
// so a write is validated exactly as `curl` or `tollgate apply` would be,
// and a 400 comes back naming its field, which the page shows at that field.

import { api, enc, ApiError } from './api.js';
import { h, put, field, fieldError, clearErrors, table, status, fmt, uid } from './dom.js';
import { lineChart } from './charts.js';

// ---------------------------------------------------------------- helpers

const items = async (path) => (await api.get(path)).items || [];

/** A route this control plane does not serve yet (not a missing document). */
const noRoute = (e) => e instanceof ApiError && e.status === 404 && /no such route/.test(e.message);

function heading(view, title, intro) {
  document.title = `${title} · Tollgate console`;
  view.append(h('h1', title));
  if (intro) view.append(h('p.intro', intro));
}

function section(view, title) {
  const id = uid('s');
  const s = h('section', { 'aria-labelledby': id }, h('h2', { id }, title));
  view.append(s);
  return s;
}

/**
 * Show an API error at the field it names: the input whose `data-field` is
 * that field, or its nearest named parent (`routes[0].path` → `routes[0]`
 * → `routes`); failing that, on the form's error line, field included.
 */
function showError(form, e) {
  const line = form.querySelector('.form-error');
  const f = e instanceof ApiError ? e.field : null;
  let name = f;
  while (name) {
    const input = [...form.querySelectorAll('[data-field]')].find((i) => i.dataset.field === name && !i.disabled);
    if (input) {
      fieldError(input, e.message);
      return;
    }
    const parent = name.replace(/(\.[^.[\]]+|\[\d+\])$/, '');
    name = parent === name ? null : parent;
  }
  if (line) {
    line.textContent = e.message;
    line.hidden = false;
    line.focus();
  }
}

/** A form whose submit runs `action`, with errors shown as `showError` does. */
function form(cls, children, action, submitLabel) {
  const err = h('p.form-error', { role: 'alert', hidden: true, tabindex: -1 });
  const done = status();
  const button = h('button', { type: 'submit' }, submitLabel);
  const f = h(`form.${cls}`, { novalidate: true }, children, err, h('div.actions', button, done));
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(f);
    done.textContent = '';
    button.disabled = true;
    try {
      const msg = await action(f);
      done.textContent = msg || 'Saved.';
    } catch (e) {
      showError(f, e);
    } finally {
      button.disabled = false;
    }
  });
  return f;
}

const input = (name, attrs = {}) => h('input', { name, type: 'text', dataset: { field: name }, ...attrs });
const csv = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
const num = (s) => (s.trim() === '' ? undefined : Number(s));

function select(name, options, attrs = {}) {
  return h('select', { name, dataset: { field: name }, ...attrs },
    options.map(([value, label]) => h('option', { value }, label)));
}

/** A button that asks once more before `action` (no native dialogs). */
function confirmButton(label, confirmLabel, action) {
  const b = h('button.danger', { type: 'button' }, label);
  let armed = false;
  b.addEventListener('click', async () => {
    if (!armed) {
      armed = true;
      b.textContent = confirmLabel;
      b.classList.add('armed');
      return;
    }
    b.disabled = true;
    await action();
  });
  b.addEventListener('blur', () => {
    armed = false;
    b.textContent = label;
    b.classList.remove('armed');
  });
  return b;
}

const today = () => new Date().toISOString().slice(0, 10);
const daysAgo = (n) => new Date(Date.now() - n * 86400000).toISOString().slice(0, 10);
const dayRange = (start, end) => {
  const out = [];
  for (let t = Date.parse(`${start}T00:00:00Z`); t <= Date.parse(`${end}T00:00:00Z`); t += 86400000) out.push(t / 1000);
  return out;
};

// ---------------------------------------------------------------- overview

export async function overview(view, _rest, ctx) {
  heading(view, 'Overview');
  const clusterS = section(view, 'Cluster');
  const dpS = section(view, 'Data planes');
  const trafficS = section(view, 'Traffic, last 15 minutes');
  const refresh = h('button.secondary', { type: 'button' }, 'Refresh now');
  const note = status();
  view.insertBefore(h('div.toolbar', refresh, note), clusterS);

  const draw = async () => {
    const [c, traffic] = await Promise.all([
      api.get('/v1/cluster'),
      api.get('/v1/traffic?window=15m').catch((e) => (noRoute(e) ? null : { error: e })),
    ]);
    if (ctx.stale()) return false;
    put(clusterS, h('h2', clusterS.querySelector('h2').textContent),
      h('p#leader', c.leader_id === null || c.leader_id === undefined
        ? 'No leader elected right now.'
        : `Leader: node ${c.leader_id} (term ${c.term}); this node: ${c.node_id}, applied index ${c.applied_index}.`),
      table('Control-plane nodes', ['Node', 'Admin address', 'gRPC address', 'Role'],
        c.members.map((m) => [String(m.id), m.admin_addr, m.grpc_addr,
          m.id === c.leader_id ? 'leader' : m.voter ? 'voter' : 'learner'])));
    put(dpS, h('h2', dpS.querySelector('h2').textContent),
      table('Data planes and their revision lag', ['Data plane', 'Address', 'Revision', 'Lag (entries)', 'Connected', 'Last seen'],
        (c.data_planes || []).map((d) => [d.id, d.addr || '–', String(d.revision),
          String(Math.max(0, c.applied_index - d.revision)), d.connected ? 'yes' : 'no',
          d.last_seen_ms ? new Date(d.last_seen_ms).toLocaleTimeString() : (d.last_seen || '–')]), 'data-planes'));
    const th = trafficS.querySelector('h2').textContent;
    if (traffic === null) {
      put(trafficS, h('h2', th), h('p.muted#traffic-unavailable', 'Live traffic is not available from this control plane (it has no /v1/traffic).'));
    } else if (traffic.error) {
      put(trafficS, h('h2', th), h('p.form-error', { role: 'alert' }, `Could not read traffic: ${traffic.error.message}`));
    } else {
      drawTraffic(trafficS, th, traffic);
    }
    note.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    return true;
  };
  refresh.addEventListener('click', () => draw());
  await draw();
  // Live: redrawn every 5 s while this page is the one shown.
  const tick = async () => {
    if (ctx.stale()) return;
    try { if (await draw() === false) return; } catch { /* shown next time */ }
    setTimeout(tick, 5000);
  };
  setTimeout(tick, 5000);
}

function drawTraffic(s, title, t) {
  const ids = Object.keys(t.apis || {}).sort();
  const window = t.window_s || 900;
  const step = t.step_s || 10;
  const rows = ids.map((id) => {
    const a = t.apis[id];
    const errors = (a.errors_4xx || 0) + (a.errors_5xx || 0);
    return [id, fmt.num(a.requests), fmt.num(a.requests / window, 2),
      a.requests ? fmt.pct(errors / a.requests) : '–',
      a.p99_ms === null || a.p99_ms === undefined ? '–' : `${fmt.num(a.p99_ms, 1)} ms`];
  });
  put(s, h('h2', title),
    table('Per API, across all data planes', ['API', 'Requests', 'Requests/s', 'Error rate (4xx+5xx)', 'p99'], rows, 'traffic'));
  const ts = [...new Set(ids.flatMap((id) => (t.apis[id].series || []).map((p) => p.t)))].sort((a, b) => a - b);
  const at = (id, f) => {
    const byT = new Map((t.apis[id].series || []).map((p) => [p.t, p]));
    return ts.map((x) => (byT.has(x) ? f(byT.get(x)) : null));
  };
  const charts = h('div.charts#traffic-charts');
  s.append(charts);
  lineChart(charts, { title: 'Requests per second', x: ts,
    series: ids.map((id) => ({ label: id, values: at(id, (p) => p.requests / step) })) });
  lineChart(charts, { title: 'Error rate', unit: ' %', x: ts,
    series: ids.map((id) => ({ label: id, values: at(id, (p) => (p.requests ? ((p.errors_4xx + p.errors_5xx) / p.requests) * 100 : null)) })) });
  lineChart(charts, { title: 'p99 latency', unit: ' ms', x: ts,
    series: ids.map((id) => ({ label: id, values: at(id, (p) => p.p99_ms) })) });
}

// ---------------------------------------------------------------- APIs

export async function apis(view, rest) {
  if (rest[0]) return apiEditor(view, rest[0] === 'new' ? null : rest[0]);
  heading(view, 'APIs', 'Every API the data planes serve at its base path.');
  view.append(h('p', h('a.button', { href: '#/apis/new' }, 'New API')));
  const list = h('div');
  view.append(list);
  const load = async () => {
    const all = await items('/v1/apis');
    put(list, table('APIs', ['Id', 'Base path', 'Protocol', 'Routes', 'Upstream', 'Actions'],
      all.map((a) => [
        h('a', { href: `#/apis/${enc(a.id)}` }, a.id), a.base_path, a.protocol || 'http',
        String((a.routes || []).length),
        ((a.upstream && a.upstream.targets) || []).map((t) => t.url).join(', ') || '–',
        h('span.row-actions',
          h('a.button.secondary', { href: `#/apis/${enc(a.id)}`, 'aria-label': `Edit ${a.id}` }, 'Edit'),
          confirmButton('Delete', `Delete ${a.id}?`, async () => {
            await api.del(`/v1/apis/${enc(a.id)}`).catch((e) => list.prepend(h('p.form-error', { role: 'alert' }, e.message)));
            await load();
          })),
      ]), 'apis'));
  };
  await load();
}

async function apiEditor(view, id) {
  let doc = id ? await api.get(`/v1/apis/${enc(id)}`) : {
    base_path: '/', upstream: { targets: [{ url: 'http://' }] }, auth: { api_key: true },
    routes: [{ id: 'all', path: '/{rest+}' }],
  };
  delete doc.revision;
  heading(view, id ? `API ${id}` : 'New API',
    'Edit as a form or as the JSON document the admin API takes; saving sends it with PUT /v1/apis/{id}.');
  view.append(h('p', h('a', { href: '#/apis' }, '← All APIs')));
  const tabs = h('div.tabs', { role: 'group', 'aria-label': 'Edit as' });
  const formTab = h('button.tab', { type: 'button', 'aria-pressed': 'true' }, 'Form');
  const jsonTab = h('button.tab', { type: 'button', 'aria-pressed': 'false' }, 'JSON');
  tabs.append(formTab, jsonTab);
  view.append(tabs);

  // --- the form: the usual fields over the loaded document, so fields it
  // does not show (cache, cors, ...) are kept as they were.
  const idIn = input('id', { value: id || '', required: true, disabled: !!id, autocomplete: 'off' });
  const base = input('base_path', { value: doc.base_path || '' });
  const hosts = input('hosts', { value: (doc.hosts || []).join(', ') });
  const targets = h('textarea', { name: 'targets', rows: 2, dataset: { field: 'upstream.targets' } });
  targets.value = ((doc.upstream && doc.upstream.targets) || []).map((t) => t.url).join('\n');
  const timeout = input('upstream.timeout_ms', { type: 'number', min: 1, value: doc.upstream && doc.upstream.timeout_ms });
  const keyReq = h('input', { type: 'checkbox', name: 'api_key', dataset: { field: 'auth' }, checked: !!(doc.auth && doc.auth.api_key) });
  const routesBox = h('fieldset.routes', h('legend', 'Routes'));
  const routeRows = h('div');
  const addRoute = h('button.secondary', { type: 'button' }, 'Add route');
  routesBox.append(routeRows, addRoute);
  const routeRow = (r, i) => {
    const rid = input(`routes[${i}].id`, { value: r.id || '' });
    const methods = input(`routes[${i}].methods`, { value: (r.methods || []).join(', ') });
    const path = input(`routes[${i}].path`, { value: r.path || '' });
    const remove = h('button.secondary', { type: 'button', 'aria-label': `Remove route ${i + 1}` }, 'Remove');
    const row = h('div.route', { dataset: { index: String(i) } },
      field(`Route ${i + 1} id`, rid), field(`Route ${i + 1} methods`, methods, 'Comma-separated; empty for any.'),
      field(`Route ${i + 1} path`, path, 'After the base path; {name} is one segment, {name+} the rest.'), remove);
    remove.addEventListener('click', () => {
      readForm();
      doc.routes.splice(i, 1);
      fillRoutes();
    });
    return row;
  };
  const fillRoutes = () => put(routeRows, (doc.routes || []).map(routeRow));
  fillRoutes();
  addRoute.addEventListener('click', () => {
    readForm();
    doc.routes = [...(doc.routes || []), { id: `route-${(doc.routes || []).length + 1}`, path: '/' }];
    fillRoutes();
    routeRows.lastElementChild.querySelector('input').focus();
  });
  const readForm = () => {
    doc.base_path = base.value.trim();
    const hs = csv(hosts.value);
    if (hs.length) doc.hosts = hs; else delete doc.hosts;
    const old = (doc.upstream && doc.upstream.targets) || [];
    doc.upstream = { ...(doc.upstream || {}),
      targets: targets.value.split('\n').map((x) => x.trim()).filter(Boolean)
        .map((url) => ({ ...(old.find((t) => t.url === url) || {}), url })) };
    const tm = num(timeout.value);
    if (tm === undefined) delete doc.upstream.timeout_ms; else doc.upstream.timeout_ms = tm;
    doc.auth = { ...(doc.auth || {}) };
    if (keyReq.checked) doc.auth.api_key = true; else delete doc.auth.api_key;
    doc.routes = [...routeRows.querySelectorAll('.route')].map((row) => {
      const i = Number(row.dataset.index);
      const [rid, methods, path] = row.querySelectorAll('input');
      const r = { ...((doc.routes || [])[i] || {}), id: rid.value.trim(), path: path.value.trim() };
      const ms = csv(methods.value.toUpperCase());
      if (ms.length) r.methods = ms; else delete r.methods;
      return r;
    });
  };
  const fillForm = () => {
    base.value = doc.base_path || '';
    hosts.value = (doc.hosts || []).join(', ');
    targets.value = ((doc.upstream && doc.upstream.targets) || []).map((t) => t.url).join('\n');
    timeout.value = (doc.upstream && doc.upstream.timeout_ms) || '';
    keyReq.checked = !!(doc.auth && doc.auth.api_key);
    fillRoutes();
  };
  const save = async () => {
    const theId = id || idIn.value.trim();
    if (!theId) throw new ApiError(400, 'invalid_argument', 'id: give the API an id ([a-z0-9-]{1,64})');
    const saved = await api.put(`/v1/apis/${enc(theId)}`, { ...doc, id: undefined });
    if (!id) {
      location.hash = `#/apis/${enc(theId)}`;
      return `Created at revision ${saved.revision}.`;
    }
    return `Saved at revision ${saved.revision}.`;
  };
  const theForm = form('api-form', [
    field('Id', idIn, 'Lower-case letters, digits and dashes.'),
    field('Base path', base, 'Requests under this prefix belong to the API.'),
    field('Hosts', hosts, 'Comma-separated; empty matches any Host.'),
    field('Upstream targets', targets, 'One URL per line.'),
    field('Upstream timeout (ms)', timeout),
    h('div.field.check', keyReq, h('label', { for: keyReq.id || (keyReq.id = uid('f')) }, 'Require an API key')),
    routesBox,
  ], async () => { readForm(); return save(); }, id ? 'Save API' : 'Create API');

  // --- the same document as JSON text.
  const text = h('textarea.code', { name: 'document', rows: 22, spellcheck: 'false', dataset: { field: 'body' } });
  const jsonForm = form('api-json', [field('API document (JSON)', text, 'The body of PUT /v1/apis/{id}; a 400 names the field.')],
    async (f) => {
      try {
        doc = JSON.parse(text.value);
      } catch (e) {
        fieldError(text, `body: not JSON: ${e.message}`);
        return '';
      }
      delete doc.revision;
      try {
        return await save();
      } catch (e) {
        // One text area: the message (it names the field) goes at it.
        if (e instanceof ApiError && e.status === 400) {
          fieldError(text, e.message);
          return '';
        }
        showError(f, e);
        return '';
      }
    }, id ? 'Save API' : 'Create API');
  jsonForm.hidden = true;
  const showTab = (json) => {
    if (json) {
      readForm();
      text.value = JSON.stringify({ ...doc, id: id || idIn.value.trim() || undefined }, null, 2);
    } else {
      try {
        doc = JSON.parse(text.value);
        fillForm();
      } catch { /* keep the form as it was */ }
    }
    theForm.hidden = json;
    jsonForm.hidden = !json;
    formTab.setAttribute('aria-pressed', String(!json));
    jsonTab.setAttribute('aria-pressed', String(json));
  };
  formTab.addEventListener('click', () => showTab(false));
  jsonTab.addEventListener('click', () => showTab(true));
  view.append(theForm, jsonForm);
}

// ---------------------------------------------------------------- keys

export async function keys(view) {
  heading(view, 'API keys', 'A key\'s value is shown once, when it is issued; the cluster keeps only its hash.');
  const [tenants, plans] = await Promise.all([items('/v1/tenants'), items('/v1/usage-plans')]);
  const issued = h('div#issued');
  const list = h('div');
  const tenant = select('tenant', tenants.map((t) => [t.id, t.name ? `${t.name} (${t.id})` : t.id]));
  const plan = select('plans', plans.map((p) => [p.id, p.id]), { multiple: true, size: Math.min(4, Math.max(2, plans.length)) });
  if (plan.options.length) plan.options[0].selected = true;
  const name = input('name', { autocomplete: 'off' });
  const issueS = section(view, 'Issue a key');
  issueS.append(form('key-form', [
    field('Tenant', tenant), field('Usage plans', plan, 'Ctrl or Shift for more than one.'), field('Name (optional)', name),
  ], async () => {
    const body = { tenant: tenant.value, plans: [...plan.selectedOptions].map((o) => o.value) };
    if (name.value.trim()) body.name = name.value.trim();
    const k = await api.post('/v1/keys', body);
    showIssued(issued, k);
    await load();
    return `Issued ${k.id}.`;
  }, 'Issue key'), issued);
  const listS = section(view, 'Keys');
  listS.append(list);
  const load = async () => {
    const all = await items('/v1/keys');
    put(list, table('Keys (values are never shown again)', ['Id', 'Name', 'Prefix', 'Tenant', 'Plans', 'State', 'Created', 'Actions'],
      all.map((k) => [k.id, k.name || '–', k.prefix, k.tenant, (k.plans || []).join(', '),
        k.enabled ? 'enabled' : 'disabled', new Date(k.created_at * 1000).toISOString().slice(0, 10),
        h('span.row-actions',
          (() => {
            const b = h('button.secondary', { type: 'button', 'aria-label': `${k.enabled ? 'Disable' : 'Enable'} ${k.id}` }, k.enabled ? 'Disable' : 'Enable');
            b.addEventListener('click', async () => {
              b.disabled = true;
              await api.patch(`/v1/keys/${enc(k.id)}`, { enabled: !k.enabled }).catch((e) => list.prepend(h('p.form-error', { role: 'alert' }, e.message)));
              await load();
            });
            return b;
          })(),
          confirmButton('Revoke', `Revoke ${k.id}?`, async () => {
            await api.del(`/v1/keys/${enc(k.id)}`).catch((e) => list.prepend(h('p.form-error', { role: 'alert' }, e.message)));
            await load();
          }))]), 'keys'));
    for (const [i, tr] of [...list.querySelectorAll('tbody tr')].entries()) if (all[i]) tr.dataset.key = all[i].id;
  };
  await load();
}

function showIssued(host, k) {
  const value = h('input.code#key-value', { type: 'text', readonly: true, value: k.value, 'aria-describedby': 'key-once' });
  const copy = h('button', { type: 'button' }, 'Copy');
  const done = status();
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(k.value);
    } catch {
      value.select();
      document.execCommand('copy');
    }
    done.textContent = 'Copied.';
  });
  put(host, h('div.card.issued', { role: 'region', 'aria-label': 'New key' },
    h('h3', `Key ${k.id}`),
    h('p#key-once', h('strong', 'This is the only time the value is shown.'), ' Copy it now.'),
    field('Key value', value), h('div.actions', copy, done)));
  value.focus();
  value.select();
}

// ---------------------------------------------------------------- tenants

export async function tenants(view) {
  heading(view, 'Tenants', 'Who keys and plans are issued to.');
  const list = h('div');
  const id = input('id', { autocomplete: 'off' });
  const name = input('name', { autocomplete: 'off' });
  section(view, 'Create or update a tenant').append(form('tenant-form', [field('Id', id), field('Name', name)], async () => {
    const r = await api.put(`/v1/tenants/${enc(id.value.trim() || '-')}`, { name: name.value.trim() });
    await load();
    return `Saved at revision ${r.revision}.`;
  }, 'Save tenant'));
  section(view, 'Tenants').append(list);
  const load = async () => {
    const all = await items('/v1/tenants');
    put(list, table('Tenants', ['Id', 'Name', 'Actions'], all.map((t) => [t.id, t.name || '–',
      h('span.row-actions',
        h('a.button.secondary', { href: `#/invoices/${enc(t.id)}` }, 'Invoice'),
        confirmButton('Delete', `Delete ${t.id}?`, async () => {
          await api.del(`/v1/tenants/${enc(t.id)}`).catch((e) => list.prepend(h('p.form-error', { role: 'alert' }, e.message)));
          await load();
        }))]), 'tenants'));
  };
  await load();
}

// ---------------------------------------------------------------- plans

export async function plans(view, rest) {
  heading(view, 'Usage plans', 'Throttle, quota and price per key, across the whole cluster.');
  const existing = rest[0] ? await api.get(`/v1/usage-plans/${enc(rest[0])}`) : {};
  const price = existing.price || {};
  const id = input('id', { value: existing.id || '', autocomplete: 'off', disabled: !!existing.id });
  const apisIn = input('apis', { value: (existing.apis || []).join(', ') });
  const rate = input('throttle.rate', { type: 'number', min: 0, step: 'any', value: existing.throttle && existing.throttle.rate });
  const burst = input('throttle.burst', { type: 'number', min: 0, value: existing.throttle && existing.throttle.burst });
  const limit = input('quota.limit', { type: 'number', min: 0, value: existing.quota && existing.quota.limit });
  const period = select('quota.period', [['day', 'day'], ['week', 'week'], ['month', 'month']]);
  if (existing.quota) period.value = existing.quota.period;
  const currency = input('price.currency', { value: price.currency || '', placeholder: 'USD', maxlength: 3 });
  const money = (k, label) => [k, field(label, input(`price.${k}`, { value: price[k] || '', inputmode: 'decimal', placeholder: '0.00' }))];
  const prices = [money('monthly_fee', 'Monthly fee'), money('per_million_requests', 'Per million requests'),
    money('per_million_messages', 'Per million messages'), money('per_million_connection_minutes', 'Per million connection-minutes')];
  const list = h('div');
  section(view, existing.id ? `Edit plan ${existing.id}` : 'Create a plan').append(form('plan-form', [
    field('Id', id), field('APIs', apisIn, 'Comma-separated API ids this plan grants.'),
    h('fieldset', h('legend', 'Throttle (per key, requests/second)'), field('Rate', rate), field('Burst', burst)),
    h('fieldset', h('legend', 'Quota (per key)'), field('Limit', limit, 'Empty for none.'), field('Period', period)),
    h('fieldset', h('legend', 'Price (decimal strings)'), field('Currency', currency, 'ISO 4217, e.g. USD; empty for no price.'),
      prices.map(([, f]) => f)),
  ], async () => {
    const body = { ...existing, apis: csv(apisIn.value) };
    delete body.revision;
    delete body.id;
    delete body.throttle;
    delete body.quota;
    delete body.price;
    if (rate.value.trim() !== '') body.throttle = { rate: num(rate.value), burst: num(burst.value) ?? num(rate.value) };
    if (limit.value.trim() !== '') body.quota = { limit: num(limit.value), period: period.value };
    if (currency.value.trim() !== '') {
      body.price = { currency: currency.value.trim() };
      for (const [k, f] of prices) {
        const v = f.querySelector('input').value.trim();
        if (v !== '') body.price[k] = v;
      }
    }
    const pid = existing.id || id.value.trim();
    const r = await api.put(`/v1/usage-plans/${enc(pid || '-')}`, body);
    await load();
    return `Saved at revision ${r.revision}.`;
  }, 'Save plan'));
  section(view, 'Plans').append(list);
  const load = async () => {
    const all = await items('/v1/usage-plans');
    const money$ = (p) => (p.price ? [
      p.price.monthly_fee && p.price.monthly_fee !== '0' ? `${p.price.monthly_fee}/month` : null,
      p.price.per_million_requests ? `${p.price.per_million_requests}/M requests` : null,
      p.price.per_million_messages ? `${p.price.per_million_messages}/M messages` : null,
      p.price.per_million_connection_minutes ? `${p.price.per_million_connection_minutes}/M conn-min` : null,
    ].filter(Boolean).map((x) => `${p.price.currency} ${x}`).join('; ') || p.price.currency : '–');
    put(list, table('Usage plans', ['Id', 'APIs', 'Throttle', 'Quota', 'Price', 'Actions'], all.map((p) => [
      p.id, (p.apis || []).join(', '),
      p.throttle ? `${p.throttle.rate}/s, burst ${p.throttle.burst}` : '–',
      p.quota ? `${fmt.num(p.quota.limit)} per ${p.quota.period}` : '–',
      money$(p),
      h('span.row-actions',
        h('a.button.secondary', { href: `#/plans/${enc(p.id)}`, 'aria-label': `Edit ${p.id}` }, 'Edit'),
        h('a.button.secondary', { href: `#/usage/${enc(p.id)}`, 'aria-label': `Usage of ${p.id}` }, 'Usage'),
        confirmButton('Delete', `Delete ${p.id}?`, async () => {
          await api.del(`/v1/usage-plans/${enc(p.id)}`).catch((e) => list.prepend(h('p.form-error', { role: 'alert' }, e.message)));
          await load();
        }))]), 'plans'));
  };
  await load();
}

// ---------------------------------------------------------------- usage

export async function usage(view, rest) {
  heading(view, 'Usage', 'Requests admitted per UTC day, from the replicated usage counters.');
  const [plansAll, keysAll] = await Promise.all([items('/v1/usage-plans'), items('/v1/keys')]);
  const plan = select('plan', plansAll.map((p) => [p.id, p.id]));
  if (rest[0]) plan.value = rest[0];
  const key = select('key', [['', 'None'], ...keysAll.map((k) => [k.id, `${k.id}${k.name ? ` (${k.name})` : ''}`])]);
  const start = input('start', { type: 'date', value: daysAgo(13) });
  const end = input('end', { type: 'date', value: today() });
  const out = h('div.charts#usage-charts');
  const download = h('button.secondary', { type: 'button' }, 'Download CSV');
  const dl = status();
  download.addEventListener('click', async () => {
    try {
      const res = await api.fetch(`/v1/usage/export?start=${start.value}&end=${end.value}&format=csv`);
      const url = URL.createObjectURL(await res.blob());
      const a = h('a', { href: url, download: `usage-${start.value}-${end.value}.csv` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      dl.textContent = 'Downloaded.';
    } catch (e) {
      dl.textContent = `Could not export: ${e.message}`;
    }
  });
  const show = async () => {
    put(out);
    const q = `start=${start.value}&end=${end.value}`;
    const x = dayRange(start.value, end.value);
    if (plan.value) {
      const u = await api.get(`/v1/usage-plans/${enc(plan.value)}/usage?${q}`);
      const series = Object.entries(u.items || {}).map(([k, days]) => ({ label: k, values: days.map((d) => d[0]) }));
      const total = series.reduce((a, s) => a + s.values.reduce((b, v) => b + v, 0), 0);
      out.append(h('p#usage-total', `Plan ${plan.value}: ${fmt.num(total)} requests in this period.`));
      lineChart(out, { title: `Requests per day on plan ${plan.value}, per key`, x, series, bars: true }).id = 'plan-chart';
    }
    if (key.value) {
      const u = await api.get(`/v1/keys/${enc(key.value)}/usage?${q}`);
      const series = Object.entries(u.plans || {}).map(([p, days]) => ({ label: p, values: days.map((d) => d[0]) }));
      lineChart(out, { title: `Requests per day by key ${key.value}, per plan`, x, series, bars: true }).id = 'key-chart';
    }
    return 'Shown.';
  };
  view.append(form('usage-form', [
    h('div.row', field('Plan', plan), field('Key', key), field('From', start), field('To', end)),
  ], show, 'Show usage'));
  view.append(h('div.toolbar', download, dl), out);
  if (plan.value) await show();
}

// ---------------------------------------------------------------- invoices

export async function invoices(view, rest) {
  heading(view, 'Invoices', 'What a tenant owes for a month, from its keys\' usage and their plans\' prices.');
  const all = await items('/v1/tenants');
  const tenant = select('tenant', all.map((t) => [t.id, t.name ? `${t.name} (${t.id})` : t.id]));
  if (rest[0]) tenant.value = rest[0];
  const month = input('month', { type: 'month', value: today().slice(0, 7) });
  const out = h('div#invoice');
  view.append(form('invoice-form', [h('div.row', field('Tenant', tenant), field('Month', month))], async () => {
    put(out);
    let inv;
    try {
      inv = await api.get(`/v1/tenants/${enc(tenant.value)}/invoice?month=${enc(month.value)}`);
    } catch (e) {
      if (noRoute(e)) {
        out.append(h('p.muted#invoice-unavailable', 'Invoices are not available from this control plane (it has no invoice route).'));
        return '';
      }
      throw e;
    }
    const totals = inv.totals || (inv.currency ? { [inv.currency]: inv.total } : {});
    out.append(
      h('h2', `Invoice for ${inv.tenant}, ${inv.month}`),
      table(`Lines (amounts rounded ${inv.rounding || 'half up'}, per line)`,
        ['Plan', 'Key', 'Item', 'From', 'To', 'Quantity', 'Unit price (per million)', 'Amount'],
        (inv.lines || []).map((l) => [l.plan, l.key_id || '–', l.item, l.from, l.to, fmt.num(l.quantity),
          `${l.currency || inv.currency || ''} ${l.unit_price}`.trim(), `${l.currency || inv.currency || ''} ${l.amount}`.trim()]), 'invoice-lines'),
      h('dl.totals', Object.entries(totals).flatMap(([c, t]) => [h('dt', `Total ${c}`), h('dd', { dataset: { currency: c } }, t)])));
    return 'Shown.';
  }, 'Show invoice'), out);
}

// ---------------------------------------------------------------- stages

export async function stages(view) {
  heading(view, 'Stages', 'Frozen deployments of an API served at a stage\'s path, with an optional canary.');
  const apisAll = await items('/v1/apis');
  const list = h('div');
  const apiOpts = apisAll.map((a) => [a.id, a.id]);

  const depApi = select('api', apiOpts);
  const desc = input('description', { autocomplete: 'off' });
  section(view, 'Deploy an API').append(form('deploy-form', [h('div.row', field('API', depApi), field('Description', desc))], async () => {
    const d = await api.post(`/v1/apis/${enc(depApi.value)}/deployments`, desc.value.trim() ? { description: desc.value.trim() } : {});
    await loadDeps();
    return `Deployed as ${d.id}.`;
  }, 'Deploy'));

  const sid = input('id', { autocomplete: 'off' });
  const sApi = select('api', apiOpts);
  const sDep = select('deployment', []);
  const sBase = input('base_path');
  const loadDeps = async () => {
    if (!sApi.value) return;
    const ds = await items(`/v1/apis/${enc(sApi.value)}/deployments`);
    put(sDep, ds.map((d) => h('option', { value: d.id }, `${d.id}${d.description ? ` – ${d.description}` : ''}`)));
    put(cDep, ds.map((d) => h('option', { value: d.id }, d.id)));
  };
  sApi.addEventListener('change', loadDeps);
  section(view, 'Create or update a stage').append(form('stage-form', [
    h('div.row', field('Stage id', sid), field('API', sApi), field('Deployment', sDep), field('Base path', sBase)),
  ], async () => {
    let old = {};
    try { old = await api.get(`/v1/stages/${enc(sid.value.trim() || '-')}`); } catch { /* a new stage */ }
    const body = { ...old, api: sApi.value, deployment: sDep.value, base_path: sBase.value.trim() };
    delete body.revision;
    delete body.id;
    const r = await api.put(`/v1/stages/${enc(sid.value.trim() || '-')}`, body);
    await load();
    return `Saved at revision ${r.revision}.`;
  }, 'Save stage'));

  const cStage = select('stage', []);
  const cDep = select('canary.deployment', []);
  const pct = input('canary.percent', { type: 'number', min: 0, max: 100, step: 'any', value: 10 });
  const sticky = select('canary.sticky', [['key', 'key'], ['ip', 'ip'], ['none', 'none']]);
  section(view, 'Canary').append(form('canary-form', [
    h('div.row', field('Stage', cStage), field('Canary deployment', cDep), field('Percent', pct), field('Sticky', sticky)),
  ], async () => {
    const st = await api.get(`/v1/stages/${enc(cStage.value)}`);
    delete st.revision;
    st.canary = { ...(st.canary || {}), deployment: cDep.value, percent: Number(pct.value), sticky: sticky.value };
    const r = await api.put(`/v1/stages/${enc(cStage.value)}`, { ...st, id: undefined });
    await load();
    return `Canary set at revision ${r.revision}.`;
  }, 'Set canary'));

  section(view, 'Stages').append(list);
  const load = async () => {
    const all = await items('/v1/stages');
    put(cStage, all.map((s) => h('option', { value: s.id }, s.id)));
    put(list, table('Stages', ['Id', 'API', 'Deployment', 'Base path', 'Canary', 'Actions'], all.map((s) => [
      s.id, s.api, s.deployment, s.base_path,
      s.canary ? `${s.canary.deployment} at ${s.canary.percent} % (sticky: ${s.canary.sticky})` : '–',
      h('span.row-actions',
        s.canary ? (() => {
          const b = h('button', { type: 'button', 'aria-label': `Promote the canary of ${s.id}` }, 'Promote');
          b.addEventListener('click', async () => {
            b.disabled = true;
            await api.post(`/v1/stages/${enc(s.id)}/promote`).catch((e) => list.prepend(h('p.form-error', { role: 'alert' }, e.message)));
            await load();
          });
          return b;
        })() : null,
        confirmButton('Delete', `Delete ${s.id}?`, async () => {
          await api.del(`/v1/stages/${enc(s.id)}`).catch((e) => list.prepend(h('p.form-error', { role: 'alert' }, e.message)));
          await load();
        }))]), 'stages'));
  };
  await Promise.all([load(), loadDeps()]);
}
