// Events per second from a tenant's event counter, and the sparkline drawn from them.

const SVG = 'http://www.w3.org/2000/svg';

/** The last `capacity` rates of one counter, each from two successive samples. */
export class RateSeries {
  constructor(capacity = 60) {
    this.capacity = capacity;
    this.rates = [];
    this.last = null;
  }

  /** A sample: the counter's value at `timeMs`. Returns the rate since the last sample. */
  add(timeMs, count) {
    const last = this.last;
    if (last !== null && timeMs <= last.timeMs) return null; // no time passed: no rate
    this.last = { timeMs, count };
    if (last === null) return null;
    // A counter that went down started again (the tenant was deleted and created anew).
    const rate = Math.max(0, count - last.count) / ((timeMs - last.timeMs) / 1000);
    this.rates.push(rate);
    if (this.rates.length > this.capacity) this.rates.shift();
    return rate;
  }

  get latest() {
    return this.rates.length ? this.rates[this.rates.length - 1] : 0;
  }
}

/** SVG polyline points for `rates` in a `width` x `height` box; the newest at the right. */
export function sparklinePoints(rates, capacity, width, height) {
  const top = Math.max(1, ...rates);
  const step = width / Math.max(1, capacity - 1);
  const offset = capacity - rates.length;
  return rates
    .map((rate, i) => `${((offset + i) * step).toFixed(1)},${(height - (rate / top) * height).toFixed(1)}`)
    .join(' ');
}

/** A sparkline element: an inline SVG with one polyline, styled by the stylesheet only. */
export function createSparkline(width = 120, height = 24) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  svg.setAttribute('class', 'sparkline');
  svg.setAttribute('role', 'img');
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('class', 'sparkline-line');
  svg.append(line);
  return svg;
}

export function drawSparkline(svg, series) {
  const { width, height } = svg.viewBox.baseVal;
  svg.firstElementChild.setAttribute('points', sparklinePoints(series.rates, series.capacity, width, height));
  svg.setAttribute('aria-label', `${formatRate(series.latest)} events per second`);
}

export function formatRate(rate) {
  return rate >= 10 ? rate.toFixed(0) : rate.toFixed(1);
}
