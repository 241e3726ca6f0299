// Page wiring: configuration, who we are (tenant or token), status, composer, banners.
import { FeedClient } from './feed-client.js';
import { FeedView, formatMs } from './feed-view.js';
import { decodeEntities, messageLength } from './text.js';

const CONFIG_RETRY_MS = 3000;
const SYNC_NOTE_MS = 8000;
const STATE_LABELS = { connecting: 'Connecting', live: 'Live', reconnecting: 'Reconnecting', offline: 'Offline' };
const ERROR_TEXT = {
  offline: 'You are offline: the message was not sent.',
  rate_limited: 'Rate limited: too many posts. Wait a moment and try again.',
  payload_too_large: 'The message is too large to send.',
  unauthorized: 'Not authorised: your token was refused. Paste a new one.',
  forbidden_tenant: 'This tenant is not allowed.',
};

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

const ui = {
  status: $('status'),
  statusLabel: $('status-label'),
  currentTenant: $('current-tenant'),
  tenantForm: $('tenant-form'),
  tenantSelect: $('tenant-select'),
  tokenForm: $('token-form'),
  tokenInput: $('token-input'),
  pageError: $('page-error'),
  banners: $('banners'),
  bannerTemplate: document.getElementById('banner-template'),
  composer: $('composer'),
  input: $('message-input'),
  counter: $('counter'),
  counterValue: $('counter-value'),
  counterLimit: $('counter-limit'),
  postButton: $('post-button'),
  postError: $('post-error'),
  latency: $('latency'),
  latencyValue: $('latency-value'),
  syncNote: $('sync-note'),
};

const client = new FeedClient();
const feed = new FeedView({
  list: $('feed'),
  template: document.getElementById('event-template'),
  empty: $('feed-empty'),
  count: $('feed-count'),
});
const page = { config: null, maxLength: 500, ownSeqs: new Set(), posting: false, gapThisConnection: false };

// Exposed for end-to-end tests and for poking at the page from the console.
window.__feed = {
  client,
  get socket() { return client.socket; },
  get config() { return page.config; },
};

// ---------- status and notices ----------

function showState(state) {
  const offlineBrowser = state !== 'live' && !navigator.onLine;
  const shown = offlineBrowser ? 'offline' : state;
  ui.status.dataset.state = shown;
  ui.statusLabel.textContent = STATE_LABELS[shown] ?? shown;
  refreshComposer();
}

function showPageError(text, kind = 'error') {
  ui.pageError.textContent = text;
  ui.pageError.dataset.kind = kind;
  ui.pageError.hidden = !text;
}

function showHint(text) {
  showPageError(text, 'hint');
}

let syncNoteTimer = null;

function showSyncNote(text, kind = 'info') {
  clearTimeout(syncNoteTimer);
  ui.syncNote.textContent = text;
  ui.syncNote.dataset.kind = kind;
  ui.syncNote.hidden = !text;
  // Good news fades; a warning about lost events stays until the next connection.
  if (text && kind === 'info') syncNoteTimer = setTimeout(() => { ui.syncNote.hidden = true; }, SYNC_NOTE_MS);
}

function addBanner({ message, level, timestamp }) {
  const banner = ui.bannerTemplate.content.firstElementChild.cloneNode(true);
  banner.dataset.level = level === 'warning' ? 'warning' : 'info';
  banner.querySelector('.banner-text').textContent = decodeEntities(message ?? '');
  if (timestamp) banner.title = String(timestamp);
  banner.querySelector('.banner-close').addEventListener('click', () => banner.remove());
  ui.banners.prepend(banner);
}

// ---------- composer ----------

function refreshComposer() {
  const length = messageLength(ui.input.value);
  const over = length > page.maxLength;
  ui.counterValue.textContent = String(length);
  ui.counter.dataset.over = String(over);
  ui.input.setAttribute('aria-invalid', String(over));
  ui.postButton.disabled = page.posting;
  ui.composer.dataset.connected = String(client.connected);
}

function showPostError(text) {
  ui.postError.textContent = text;
  ui.postError.hidden = !text;
}

function describeRefusal(error) {
  if (error.code === 'validation_error') {
    const why = typeof error.details?.message === 'string' ? error.details.message : '';
    return why ? `Not posted: the message ${why}.` : `Not posted: ${error.message || 'the message is not valid.'}`;
  }
  return ERROR_TEXT[error.code] ?? `Not posted: ${error.message || 'the server refused the message.'}`;
}

async function post() {
  if (page.posting) return;
  const text = ui.input.value;
  const length = messageLength(text);
  if (length === 0) {
    showPostError('Write something first.');
    return;
  }
  if (length > page.maxLength) {
    showPostError(`Too long: ${length} characters, the limit is ${page.maxLength}. Nothing was sent.`);
    return;
  }
  if (!client.connected) {
    showPostError(ERROR_TEXT.offline);
    return;
  }
  showPostError('');
  page.posting = true;
  refreshComposer();
  try {
    const reply = await client.publish(text);
    if (!reply.ok) {
      showPostError(describeRefusal(reply.error));
      return;
    }
    page.ownSeqs.add(reply.event.seq);
    feed.markOwn(reply.event.seq);
    // Keep anything typed while the post was in flight.
    if (ui.input.value === text) ui.input.value = '';
  } finally {
    page.posting = false;
    refreshComposer();
    ui.input.focus();
  }
}

ui.input.addEventListener('input', () => {
  refreshComposer();
  if (messageLength(ui.input.value) <= page.maxLength && ui.postError.textContent.startsWith('Too long')) showPostError('');
});
ui.input.addEventListener('keydown', (event) => {
  if (event.key !== 'Enter' || event.shiftKey || event.isComposing) return;
  event.preventDefault();
  post();
});
ui.composer.addEventListener('submit', (event) => {
  event.preventDefault();
  post();
});

// ---------- feed client events ----------

client.addEventListener('state', (e) => {
  showState(e.detail.state);
  if (e.detail.state === 'live') {
    showPageError('');
    if (ui.postError.textContent === ERROR_TEXT.offline) showPostError('');
  }
});
client.addEventListener('established', (e) => {
  page.gapThisConnection = false;
  const tenant = e.detail?.tenantId;
  if (tenant) {
    ui.currentTenant.textContent = tenant;
    document.title = `Feed · ${tenant}`;
  }
});
client.addEventListener('events', (e) => {
  const { events, source } = e.detail;
  feed.add(events, { highlight: source !== 'initial' });
  for (const event of events) if (page.ownSeqs.has(event.seq)) feed.markOwn(event.seq);
});
client.addEventListener('delivered', (e) => {
  const { seq, latencyMs } = e.detail;
  feed.markOwn(seq);
  feed.showLatency(seq, latencyMs);
  ui.latency.dataset.ms = String(Math.round(latencyMs));
  ui.latency.dataset.seq = String(seq);
  ui.latencyValue.textContent = `${formatMs(latencyMs)} (#${seq})`;
});
client.addEventListener('resynced', (e) => {
  const { added } = e.detail;
  if (page.gapThisConnection) return;
  showSyncNote(added ? `Reconnected: ${added} missed ${added === 1 ? 'event' : 'events'} recovered.` : 'Reconnected: nothing was missed.');
});
client.addEventListener('gap', () => {
  page.gapThisConnection = true;
  showSyncNote('Reconnected, but some events missed while disconnected could not be recovered (no longer held by the server).', 'warning');
});
client.addEventListener('reset', () => {
  feed.clear();
  page.ownSeqs.clear();
  showSyncNote('The server\u2019s history was reset; showing the current feed.', 'warning');
});
client.addEventListener('refused', (e) => {
  const { code, message } = e.detail;
  const text = ERROR_TEXT[code] ?? `Connection refused: ${message}`;
  showPageError(page.config?.auth === 'token' ? `${text} (${message})` : text);
  if (page.config?.auth === 'token') ui.tokenForm.hidden = false;
});
client.addEventListener('refresh-failed', (e) => {
  const { code, message } = e.detail;
  const text = ERROR_TEXT[code] ?? 'The token could not be renewed.';
  showPageError(`${text} (${message}; this connection lasts until the current token expires)`);
});
client.addEventListener('system', (e) => addBanner(e.detail ?? {}));

window.addEventListener('online', () => { client.retry(); showState(client.state); });
window.addEventListener('offline', () => showState(client.state));

// ---------- who we are: tenant (auth none) or token ----------

function connectAs(credentials) {
  feed.clear();
  page.ownSeqs.clear();
  showSyncNote('');
  showPageError('');
  showPostError('');
  ui.latency.dataset.ms = '';
  ui.latencyValue.textContent = '–';
  client.connect(credentials);
}

function chooseTenant(tenant, { updateUrl = true } = {}) {
  if (updateUrl) {
    const url = new URL(window.location.href);
    if (tenant) url.searchParams.set('tenant', tenant);
    else url.searchParams.delete('tenant');
    window.history.replaceState(null, '', url);
  }
  ui.currentTenant.textContent = tenant ?? '';
  document.title = tenant ? `Feed · ${tenant}` : 'Feed';
  if (!tenant) {
    client.disconnect();
    feed.clear();
    showHint('Choose a tenant to see its feed.');
    return;
  }
  connectAs({ tenant });
}

function setUpTenantPicker(tenants) {
  for (const tenant of tenants) ui.tenantSelect.append(new Option(tenant, tenant));
  ui.tenantForm.hidden = false;
  ui.tenantSelect.addEventListener('change', () => chooseTenant(ui.tenantSelect.value || null));
  ui.tenantForm.addEventListener('submit', (event) => event.preventDefault());

  const wanted = new URL(window.location.href).searchParams.get('tenant');
  if (wanted && !tenants.includes(wanted)) {
    showState('offline');
    showPageError(`Unknown tenant \u201c${wanted}\u201d. Choose one of: ${tenants.join(', ')}.`);
    return;
  }
  const tenant = wanted ?? (tenants.length === 1 ? tenants[0] : null);
  if (!tenant) {
    showState('offline');
    showHint('Choose a tenant to see its feed.');
    return;
  }
  ui.tenantSelect.value = tenant;
  chooseTenant(tenant, { updateUrl: false });
}

function tokenFromHash() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const token = params.get('token');
  if (token) {
    // Keep the token out of the address bar, history and screenshots.
    const url = new URL(window.location.href);
    url.hash = '';
    window.history.replaceState(null, '', url);
  }
  return token;
}

// The page cannot mint tokens: a site that can (a sign-in of its own) defines
// `window.feedTokenProvider`, an async function returning a fresh token, in a script that
// runs before this module. Then the connection renews its token before it expires, and a
// token from the link or the form is only the first one. Without it, an expired token ends
// the connection and the page asks for another.
function tokenProvider() {
  const provider = window.feedTokenProvider;
  return typeof provider === 'function' ? () => provider() : null;
}

function setUpTokenForm() {
  ui.tokenForm.hidden = false;
  ui.tokenForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const token = ui.tokenInput.value.trim();
    if (!token) {
      showHint('Paste an access token to connect.');
      return;
    }
    connectAs({ token, tokenProvider: tokenProvider() });
  });
  const token = tokenFromHash();
  const provider = tokenProvider();
  if (token) {
    ui.tokenInput.value = token;
    connectAs({ token, tokenProvider: provider });
  } else if (provider) {
    connectAs({ tokenProvider: provider });
  } else {
    showState('offline');
    showHint('Paste an access token to connect.');
  }
}

// ---------- start ----------

async function loadConfig() {
  const response = await fetch('api/config', { headers: { Accept: 'application/json' } });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

async function start() {
  showState('connecting');
  refreshComposer();
  let config;
  try {
    config = await loadConfig();
  } catch (err) {
    showState('offline');
    showPageError(`Cannot load the server configuration (${err.message}); retrying\u2026`);
    setTimeout(start, CONFIG_RETRY_MS);
    return;
  }
  page.config = config;
  if (Number.isInteger(config.maxMessageLength) && config.maxMessageLength > 0) page.maxLength = config.maxMessageLength;
  ui.counterLimit.textContent = String(page.maxLength);
  refreshComposer();
  if (config.auth === 'token') setUpTokenForm();
  else setUpTenantPicker(Array.isArray(config.tenants) ? config.tenants : []);
}

start();
