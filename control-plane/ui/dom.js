// Elements built with textContent only (never innerHTML), so nothing the
// API returns can become markup; and no inline styles or handlers, which
// the console's Content-Security-Policy would refuse.

let ids = 0;
export const uid = (p) => `${p}-${++ids}`;

/** h('tag.class#id', {attrs, on: {event: f}}, ...children) */
export function h(spec, props, ...children) {
  if (props === null || typeof props !== 'object' || props instanceof Node || Array.isArray(props)) {
    if (props !== undefined && props !== null) children.unshift(props);
    props = {};
  }
  const [tagAndClasses, id] = spec.split('#');
  const [tag, ...classes] = tagAndClasses.split('.');
  const el = document.createElement(tag || 'div');
  if (id) el.id = id;
  if (classes.length) el.className = classes.join(' ');
  for (const [k, v] of Object.entries(props)) {
    if (k === 'on') for (const [ev, f] of Object.entries(v)) el.addEventListener(ev, f);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === false || v === null || v === undefined) continue;
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace `el`'s children. */
export function put(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A labelled input (or select/textarea): returns {wrap, input}. */
export function field(label, input, hint) {
  const id = input.id || uid('f');
  input.id = id;
  const err = h('p.field-error', { id: `${id}-error`, hidden: true, role: 'alert' });
  const hintEl = hint ? h('p.hint', { id: `${id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute('aria-describedby', hintEl.id);
  const wrap = h('div.field', h('label', { for: id }, label), input, hintEl, err);
  return wrap;
}

/** Show `message` at `input` (its field's error line), marking it invalid. */
export function fieldError(input, message) {
  const err = document.getElementById(`${input.id}-error`);
  input.setAttribute('aria-invalid', 'true');
  if (err) {
    err.textContent = message;
    err.hidden = false;
    const d = (input.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
    if (!d.includes(err.id)) input.setAttribute('aria-describedby', [...d, err.id].join(' '));
  }
  input.focus();
}

/** Clear every field error under `root`. */
export function clearErrors(root) {
  for (const el of root.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  for (const el of root.querySelectorAll('.field-error, .form-error')) {
    el.textContent = '';
    el.hidden = true;
  }
}

/** A table: headers and rows of cells (strings or nodes). */
export function table(caption, headers, rows, cls = '') {
  return h(`table${cls ? '.' + cls : ''}`,
    h('caption', caption),
    h('thead', h('tr', headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', rows.length
      ? rows.map((r) => h('tr', r.map((c) => h('td', c))))
      : h('tr', h('td.muted', { colspan: headers.length }, 'None yet.'))));
}

/** A status line that screen readers announce. */
export function status(cls = '') {
  return h(`p.status${cls ? '.' + cls : ''}`, { role: 'status', 'aria-live': 'polite' });
}

export const fmt = {
  num: (n, d = 0) => (n === null || n === undefined || Number.isNaN(n) ? '–'
    : Number(n).toLocaleString('en', { maximumFractionDigits: d, minimumFractionDigits: d })),
  pct: (x) => (x === null || x === undefined || Number.isNaN(x) ? '–' : `${(x * 100).toFixed(1)} %`),
};
