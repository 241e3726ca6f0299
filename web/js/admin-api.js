// The admin REST API as the operator page uses it. No DOM access here.

/** A refusal from the API: the JSON error's code and message (and details, per field). */
export class ApiError extends Error {
  constructor(status, { code = 'http_error', message = `HTTP ${status}`, details = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }

  /** The message, then what each field was refused for ("Invalid request (id: …)"). */
  get text() {
    const fields = Object.entries(this.details ?? {}).map(([name, why]) => `${name}: ${why}`);
    return fields.length ? `${this.message} (${fields.join('; ')})` : this.message;
  }
}

const tenantPath = (id) => `/api/admin/tenants/${encodeURIComponent(id)}`;

export class AdminApi {
  /** `token()` gives the admin token to send, or '' for none (`FEED_AUTH=none` on this host). */
  constructor(token) {
    this.token = token;
  }

  async request(method, path, body) {
    const headers = { Accept: 'application/json' };
    const token = this.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      // Not ours (a proxy's page): the status says enough.
    }
    if (!response.ok) throw new ApiError(response.status, data?.error);
    return data;
  }

  config() { return this.request('GET', '/api/config'); }

  stats() { return this.request('GET', '/api/events/stats'); }

  async tenants() { return (await this.request('GET', '/api/admin/tenants')).tenants; }

  createTenant(id) { return this.request('POST', '/api/admin/tenants', { id }); }

  setStatus(id, status) { return this.request('PATCH', tenantPath(id), { status }); }

  deleteTenant(id) { return this.request('DELETE', tenantPath(id)); }

  createHs256Key(id) { return this.request('POST', `${tenantPath(id)}/keys`, { alg: 'HS256' }); }

  revokeKey(id, kid) {
    return this.request('DELETE', `${tenantPath(id)}/keys/${encodeURIComponent(kid)}`);
  }
}
