// An HS256 JWT signed in the browser (WebCrypto HMAC-SHA-256), for testing a tenant's key.

const encoder = new TextEncoder();

function base64url(bytes) {
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const encodeJson = (value) => base64url(encoder.encode(JSON.stringify(value)));

/**
 * A token for `tenant`, valid `ttlSeconds`, signed with the HS256 `secret` of key `kid`.
 *
 * The claims are the ones `feedserver token` puts in (tenant, iat, exp); the secret's
 * UTF-8 bytes are the HMAC key, as PyJWT uses a string secret on the server.
 */
export async function mintHs256({ secret, kid, tenant, ttlSeconds, now = Date.now() }) {
  const iat = Math.floor(now / 1000);
  const signingInput = `${encodeJson({ alg: 'HS256', typ: 'JWT', kid })}.${encodeJson({ tenant, iat, exp: iat + ttlSeconds })}`;
  const key = await crypto.subtle.importKey(
    'raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign'],
  );
  const signature = await crypto.subtle.sign('HMAC', key, encoder.encode(signingInput));
  return `${signingInput}.${base64url(new Uint8Array(signature))}`;
}
