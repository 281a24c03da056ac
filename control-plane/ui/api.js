// The console's only way to the admin API. The token lives in this tab's
// sessionStorage (gone when the tab closes) and goes only to this origin:
// every URL here is a relative `/v1/...` path, and CSP's connect-src 'self'
// refuses any other destination anyway.

const TOKEN = 'tollgate.admin-token';

export const session = {
  token: () => sessionStorage.getItem(TOKEN),
  signIn: (t) => sessionStorage.setItem(TOKEN, t),
  signOut: () => sessionStorage.removeItem(TOKEN),
};

/** An answer in the API's error shape: `{"error":{"code","message"}}`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  /** The field a 400 names first (`routes[0].path: must start with /`). */
  get field() {
    if (this.status !== 400) return null;
    const m = /^([A-Za-z0-9_$.[\]-]+): /.exec(this.message);
    return m ? m[1] : null;
  }
}

/** Called when the token is refused mid-session (set by app.js). */
let onUnauthenticated = () => {};
export function whenUnauthenticated(f) { onUnauthenticated = f; }

async function send(method, path, { body, token, raw } = {}) {
  if (!path.startsWith('/v1/')) throw new Error(`not an admin API path: ${path}`);
  const headers = { Authorization: `Bearer ${token ?? session.token() ?? ''}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
      redirect: 'error',
    });
  } catch (e) {
    throw new ApiError(0, 'unreachable', `the control plane did not answer (${e.message})`);
  }
  if (res.ok && raw) return res;
  const text = await res.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch { value = text; }
  if (!res.ok) {
    const err = value && value.error ? value.error : { code: 'error', message: String(text || res.statusText) };
    const e = new ApiError(res.status, err.code, err.message);
    if (res.status === 401 && token === undefined) onUnauthenticated();
    throw e;
  }
  return value;
}

export const api = {
  get: (path, opts) => send('GET', path, opts),
  put: (path, body) => send('PUT', path, { body }),
  post: (path, body) => send('POST', path, { body }),
  patch: (path, body) => send('PATCH', path, { body }),
  del: (path) => send('DELETE', path),
  /** The raw response (for a download). */
  fetch: (path) => send('GET', path, { raw: true }),
  /** Whether `token` is the admin token: any /v1 read answers 401 if not. */
  async check(token) {
    await send('GET', '/v1/cluster', { token });
  },
};

/** `encodeURIComponent` for ids in paths. */
export const enc = encodeURIComponent;
