// The event list: newest first, one item per seq, message shown as text only.
import { decodeEntities } from './text.js';

const MAX_SHOWN = 500;
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

export class FeedView {
  #list;
  #template;
  #empty;
  #count;
  #items = new Map(); // seq -> <li>

  constructor({ list, template, empty, count }) {
    this.#list = list;
    this.#template = template;
    this.#empty = empty;
    this.#count = count;
  }

  clear() {
    this.#list.replaceChildren();
    this.#items.clear();
    this.#refreshSummary();
  }

  /** Insert events in seq order (newest first); a seq already shown is left alone. */
  add(events, { own = false, highlight = true } = {}) {
    for (const event of events) {
      if (this.#items.has(event.seq)) continue;
      const item = this.#render(event);
      if (own) item.classList.add('event-own');
      if (highlight) item.classList.add('event-new');
      this.#insert(item, event.seq);
      this.#items.set(event.seq, item);
    }
    this.#trim();
    this.#refreshSummary();
  }

  markOwn(seq) {
    this.#items.get(seq)?.classList.add('event-own');
  }

  showLatency(seq, latencyMs) {
    const item = this.#items.get(seq);
    if (!item) return;
    const label = item.querySelector('.event-latency');
    label.textContent = `delivered in ${formatMs(latencyMs)}`;
    label.dataset.ms = String(Math.round(latencyMs));
    label.hidden = false;
  }

  #render(event) {
    const item = this.#template.content.firstElementChild.cloneNode(true);
    item.dataset.seq = String(event.seq);
    item.querySelector('.event-seq').textContent = `#${event.seq}`;
    const time = item.querySelector('.event-time');
    const when = new Date(event.timestamp);
    if (Number.isNaN(when.getTime())) {
      time.textContent = String(event.timestamp ?? '');
    } else {
      time.dateTime = when.toISOString();
      time.textContent = timeFormat.format(when);
      time.title = dateTimeFormat.format(when);
    }
    // The server sends HTML-escaped text; decode it and show it as text, never as markup.
    item.querySelector('.event-message').textContent = decodeEntities(event.message ?? '');
    return item;
  }

  #insert(item, seq) {
    // Newest first: place before the first item with a smaller seq. Live events are
    // newer than everything shown, so the scan usually stops at the first child.
    for (const child of this.#list.children) {
      if (Number(child.dataset.seq) < seq) {
        this.#list.insertBefore(item, child);
        return;
      }
    }
    this.#list.append(item);
  }

  #trim() {
    while (this.#list.children.length > MAX_SHOWN) {
      const oldest = this.#list.lastElementChild;
      this.#items.delete(Number(oldest.dataset.seq));
      oldest.remove();
    }
  }

  #refreshSummary() {
    const n = this.#items.size;
    this.#empty.hidden = n > 0;
    this.#count.textContent = n ? `(${n})` : '';
  }
}

export function formatMs(ms) {
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}
