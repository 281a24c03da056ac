// The console's shell: sign-in, the navigation and a hash router
// (`#/apis/orders`), so every page is a real link and the back button works.

import { api, session, whenUnauthenticated, ApiError } from './api.js';
import { h, put, field } from './dom.js';
import * as pages from './pages.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const signout = document.getElementById('signout');

const routes = {
  overview: pages.overview,
  apis: pages.apis,
  keys: pages.keys,
  tenants: pages.tenants,
  plans: pages.plans,
  usage: pages.usage,
  invoices: pages.invoices,
  stages: pages.stages,
};

// A render that a newer navigation has replaced must not draw over it.
let generation = 0;

function signInPage(message) {
  nav.hidden = true;
  signout.hidden = true;
  const input = h('input#token', { type: 'password', name: 'token', autocomplete: 'current-password', required: true });
  const err = h('p.form-error#signin-error', { role: 'alert', hidden: !message }, message || '');
  const form = h('form.card.signin', { novalidate: true },
    h('h1', 'Sign in'),
    h('p', 'Use the cluster\'s admin token. It is kept in this browser tab only, and sent only to this control plane.'),
    field('Admin token', input),
    err,
    h('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const t = input.value.trim();
    err.hidden = true;
    if (!t) {
      err.textContent = 'Enter the admin token.';
      err.hidden = false;
      input.focus();
      return;
    }
    try {
      await api.check(t);
    } catch (x) {
      err.textContent = x instanceof ApiError && x.status === 401
        ? 'That token was refused.' : `Could not sign in: ${x.message}`;
      err.hidden = false;
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    session.signIn(t);
    if (location.hash.startsWith('#/') && !location.hash.startsWith('#/signin')) render();
    else location.hash = '#/overview';
  });
  put(main, form);
  document.title = 'Sign in · Tollgate console';
  input.focus();
}

async function render() {
  const gen = ++generation;
  if (!session.token()) {
    signInPage();
    return;
  }
  nav.hidden = false;
  signout.hidden = false;
  const [name, ...rest] = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const page = routes[name] ? name : 'overview';
  for (const a of nav.querySelectorAll('a')) {
    if (a.getAttribute('href') === `#/${page}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const view = h('div.page', { dataset: { page } });
  put(main, view);
  main.dataset.page = page;
  try {
    await routes[page](view, rest, { stale: () => gen !== generation });
  } catch (e) {
    if (gen !== generation) return;
    view.append(h('p.form-error', { role: 'alert' }, `Could not load this page: ${e.message}`));
  }
}

whenUnauthenticated(() => {
  session.signOut();
  signInPage('Your session ended: the token was refused. Sign in again.');
});

signout.addEventListener('click', () => {
  session.signOut();
  generation++;
  location.hash = '#/signin';
  signInPage();
});

window.addEventListener('hashchange', render);
// Moving focus to the page on navigation tells keyboard and screen-reader
// users that the content changed.
window.addEventListener('hashchange', () => main.focus({ preventScroll: true }));
render();
