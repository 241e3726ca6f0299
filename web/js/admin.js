// The operator page: admin token, tenants with live counts and rates, keys, test tokens.
import { AdminApi } from './admin-api.js';
import { mintHs256 } from './hs256.js';
import { RateSeries, createSparkline, drawSparkline, formatRate } from './sparkline.js';

// sessionStorage only: the token goes when the tab does, and other tabs never see it.
const TOKEN_KEY = 'feedserver.adminToken';
const STATS_EVERY_MS = 1000;
// Tenants created or changed elsewhere (the CLI, another operator) show up this often.
const TENANTS_EVERY_MS = 10_000;

const $ = (testid, root = document) => root.querySelector(`[data-testid="${testid}"]`);

const ui = {
  tokenForm: $('admin-token-form'),
  tokenInput: $('admin-token'),
  status: $('admin-status'),
  statusLabel: $('admin-status-label'),
  error: $('admin-error'),
  hint: $('admin-hint'),
  createForm: $('create-tenant'),
  newTenantId: $('new-tenant-id'),
  table: $('tenants'),
  count: $('tenant-count'),
  empty: $('tenants-empty'),
  tenantTemplate: document.getElementById('tenant-template'),
  keyTemplate: document.getElementById('key-template'),
  secretBox: $('secret-box'),
  secretKid: $('secret-kid'),
  secretTenant: $('secret-tenant'),
  secretValue: $('secret-value'),
  secretCopied: $('secret-copied'),
  mintTtl: $('mint-ttl'),
  minted: $('minted'),
  mintedToken: $('minted-token'),
  mintedOpen: $('minted-open'),
};

const api = new AdminApi(() => sessionStorage.getItem(TOKEN_KEY) ?? '');
// Per tenant: its rate series (kept across redraws of the table) and its row's elements.
const series = new Map();
const rows = new Map();
// The key just created: its secret lives here (and in the box) until the box is dismissed.
let fresh = null;

// Exposed for end-to-end tests and for poking at the page from the console.
window.__admin = { api, series };

// ---------- notices ----------

function showError(error) {
  const text = error ? (error.text ?? String(error.message ?? error)) : '';
  ui.error.textContent = text;
  ui.error.hidden = !text;
}

function showState(state, label) {
  ui.status.dataset.state = state;
  ui.statusLabel.textContent = label;
}

/** Runs an API action; its refusal is shown as the API's message. */
async function attempt(action) {
  try {
    const result = await action();
    showError(null);
    return result;
  } catch (error) {
    showError(error);
    showFailure(error);
    return undefined;
  }
}

function showFailure(error) {
  if (error.status === 401 || error.status === 403) showState('offline', 'Not authorised');
  else showState('reconnecting', 'Server unavailable');
}

// ---------- tenants ----------

function tenantRow(tenant) {
  const body = ui.tenantTemplate.content.firstElementChild.cloneNode(true);
  body.dataset.tenant = tenant.id;
  body.dataset.status = tenant.status;
  $('tenant-id', body).textContent = tenant.id;
  $('tenant-status', body).textContent = tenant.status;
  const suspend = $('tenant-suspend', body);
  const suspended = tenant.status === 'suspended';
  suspend.textContent = suspended ? 'Resume' : 'Suspend';
  suspend.addEventListener('click', () => changeStatus(tenant.id, suspended ? 'active' : 'suspended'));
  $('tenant-new-key', body).addEventListener('click', () => createKey(tenant.id));
  $('tenant-delete', body).addEventListener('click', () => deleteTenant(tenant.id));
  const sparkline = createSparkline();
  body.querySelector('.rate-slot').replaceWith(sparkline);
  const keys = $('key-list', body);
  for (const key of tenant.keys) keys.append(keyItem(tenant.id, key));
  if (!series.has(tenant.id)) series.set(tenant.id, new RateSeries());
  rows.set(tenant.id, {
    body,
    sparkline,
    connections: $('tenant-connections', body),
    rate: $('tenant-rate', body),
  });
  return body;
}

function keyItem(tenantId, key) {
  const item = ui.keyTemplate.content.firstElementChild.cloneNode(true);
  item.dataset.kid = key.kid;
  item.dataset.status = key.status;
  $('key-kid', item).textContent = key.kid;
  $('key-alg', item).textContent = key.alg;
  $('key-status', item).textContent = key.status;
  const revoke = $('key-revoke', item);
  revoke.hidden = key.status !== 'active';
  revoke.addEventListener('click', () => revokeKey(tenantId, key.kid));
  return item;
}

function showTenants(tenants) {
  for (const old of [...ui.table.tBodies]) old.remove();
  rows.clear();
  for (const tenant of tenants) ui.table.append(tenantRow(tenant));
  for (const id of series.keys()) if (!rows.has(id)) series.delete(id);
  ui.count.textContent = String(tenants.length);
  ui.empty.hidden = tenants.length > 0;
}

// The list as last drawn: an unchanged list is not drawn again (the focus stays put).
let shownTenants = '';

async function refreshTenants() {
  const tenants = await attempt(() => api.tenants());
  if (tenants === undefined) return;
  const listed = JSON.stringify(tenants);
  if (listed !== shownTenants) showTenants(tenants);
  shownTenants = listed;
  showState('live', 'Live');
}

// ---------- live counts ----------

async function refreshStats() {
  if (document.hidden) return; // a background tab costs the server nothing
  let stats;
  try {
    stats = (await api.stats()).tenantStats;
  } catch (error) {
    showFailure(error);
    return;
  }
  // Back after a failure that was not a refusal (a refusal is only lifted by a new token).
  if (ui.status.dataset.state === 'reconnecting') showState('live', 'Live');
  const now = performance.now();
  for (const [id, row] of rows) {
    const tenantStats = stats[id];
    if (tenantStats === undefined) continue;
    row.connections.textContent = String(tenantStats.connections);
    row.body.dataset.connections = String(tenantStats.connections);
    const rates = series.get(id);
    rates.add(now, tenantStats.events);
    row.rate.textContent = formatRate(rates.latest);
    drawSparkline(row.sparkline, rates);
  }
}

// ---------- actions ----------

async function createTenant(event) {
  event.preventDefault();
  const id = ui.newTenantId.value.trim();
  const created = await attempt(() => api.createTenant(id));
  if (created === undefined) return;
  ui.newTenantId.value = '';
  await refreshTenants();
}

async function changeStatus(id, status) {
  if ((await attempt(() => api.setStatus(id, status))) !== undefined) await refreshTenants();
}

async function deleteTenant(id) {
  if (!window.confirm(`Delete tenant ${id}? Its events, keys and sockets go, and its id cannot be used again.`)) return;
  if ((await attempt(() => api.deleteTenant(id))) !== undefined) await refreshTenants();
}

async function revokeKey(id, kid) {
  if (!window.confirm(`Revoke key ${kid} of ${id}? Its tokens are refused from now on.`)) return;
  if ((await attempt(() => api.revokeKey(id, kid))) !== undefined) await refreshTenants();
}

async function createKey(id) {
  const key = await attempt(() => api.createHs256Key(id));
  if (key === undefined) return;
  showSecret(id, key);
  await refreshTenants();
}

// ---------- the secret, shown once ----------

function showSecret(tenant, key) {
  fresh = { tenant, kid: key.kid, secret: key.secret };
  ui.secretTenant.textContent = tenant;
  ui.secretKid.textContent = key.kid;
  ui.secretValue.textContent = key.secret;
  ui.secretCopied.textContent = '';
  ui.minted.hidden = true;
  ui.mintedToken.textContent = '';
  ui.secretBox.hidden = false;
}

function dismissSecret() {
  fresh = null;
  ui.secretValue.textContent = '';
  ui.mintedToken.textContent = '';
  ui.mintedOpen.removeAttribute('href');
  ui.secretBox.hidden = true;
}

async function copySecret() {
  try {
    await navigator.clipboard.writeText(ui.secretValue.textContent);
    ui.secretCopied.textContent = 'Copied.';
  } catch {
    ui.secretCopied.textContent = 'Copying was refused by the browser: select the secret and copy it.';
  }
}

async function mintToken() {
  if (fresh === null) return;
  const token = await mintHs256({ ...fresh, ttlSeconds: Number(ui.mintTtl.value) });
  ui.mintedToken.textContent = token;
  // The feed page reads a token from its fragment, which never reaches a server log.
  ui.mintedOpen.href = `/#token=${token}`;
  ui.minted.hidden = false;
}

// ---------- start ----------

function useToken(event) {
  event.preventDefault();
  const token = ui.tokenInput.value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  ui.tokenInput.value = '';
  ui.tokenInput.placeholder = token ? 'Token in use (this tab only)' : 'Paste an admin token';
  refreshTenants();
}

async function start() {
  ui.tokenForm.addEventListener('submit', useToken);
  ui.createForm.addEventListener('submit', createTenant);
  $('secret-dismiss').addEventListener('click', dismissSecret);
  $('secret-copy').addEventListener('click', copySecret);
  $('mint-token').addEventListener('click', mintToken);
  if (sessionStorage.getItem(TOKEN_KEY)) ui.tokenInput.placeholder = 'Token in use (this tab only)';
  const config = await attempt(() => api.config());
  if (config?.auth === 'none') {
    ui.hint.textContent = 'FEED_AUTH=none: admin calls are allowed from this host without a token.';
    ui.hint.hidden = false;
  }
  await refreshTenants();
  await refreshStats();
  setInterval(refreshStats, STATS_EVERY_MS);
  setInterval(refreshTenants, TENANTS_EVERY_MS);
}

start();
