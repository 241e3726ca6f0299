// Text helpers shared by the feed and the composer. No DOM access here.

const NAMED_ENTITIES = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
const ENTITY = /&(?:#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6})|(lt|gt|amp|quot|apos));/g;

function fromCodePoint(code) {
  const valid = code > 0 && code <= 0x10ffff && (code < 0xd800 || code > 0xdfff);
  return valid ? String.fromCodePoint(code) : '\ufffd';
}

/**
 * Undo the server's HTML escaping so the original characters can be shown.
 *
 * One pass over the string, so "&amp;lt;" becomes "&lt;" and not "<". The result is
 * plain text: it must only ever be assigned to textContent, never parsed as HTML.
 */
export function decodeEntities(text) {
  return String(text).replace(ENTITY, (whole, dec, hex, name) => {
    if (name) return NAMED_ENTITIES[name];
    return fromCodePoint(dec ? Number.parseInt(dec, 10) : Number.parseInt(hex, 16));
  });
}

/** The length the server checks: Unicode code points after NFC and trimming. */
export function messageLength(text) {
  return [...text.normalize('NFC').trim()].length;
}
