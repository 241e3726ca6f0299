// No modules, no build step: the global `io` that /socket.io/socket.io.js defines.
/* global io */
const server = document.documentElement.dataset.server || undefined; // undefined: this origin
const socket = io(server, { query: { tenant: 'tenant_a' } });
const status = document.querySelector('[data-testid="status"]');
const events = document.querySelector('[data-testid="events"]');

function show(event) {
  const item = document.createElement('li');
  item.textContent = event.message;
  events.append(item);
}

socket.on('connection_established', () => {
  status.dataset.state = 'live';
  status.textContent = 'live';
});
socket.on('initial_events', (initial) => initial.forEach(show));
socket.on('event_created', show);
socket.on('disconnect', () => {
  status.dataset.state = 'reconnecting';
});
