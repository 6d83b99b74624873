// An OpenID provider for the tests: panva's oidc-provider (pinned in
// package.json / package-lock.json), issuing JWT access tokens (ES256)
// for any resource indicator asked, with the scopes `read` and `write`:
// by the client-credentials grant to client `svc` (secret `secret`), and
// by the authorization-code grant with PKCE to clients that register
// themselves (RFC 7591), for user `alice`. The user's part is headless:
// the interaction pages log `alice` in and consent to what the client
// asked, answering with the redirect a browser would follow.
//
//     node provider.mjs PORT KID
//
// Its signing key is made at start under `KID`: started again with
// another KID on the same port, the provider has rotated its key. Prints
// `ready` once it listens.

import http from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, kid] = process.argv.slice(2);
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const key = { ...privateKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' };

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [
    {
      client_id: 'svc',
      client_secret: 'secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      id_token_signed_response_alg: 'ES256',
    },
  ],
  jwks: { keys: [key] },
  // Its one key is ES256: so are the ID tokens of clients that register.
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  scopes: ['read', 'write'],
  // Every client may ask for every scope: a client registered with the
  // scope of a first challenge may step up to more later.
  extraClientMetadata: {
    properties: ['scope'],
    validator: (ctx, key, value, metadata) => {
      delete metadata.scope;
    },
  },
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    registration: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: 'read write',
        audience: resource,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
});

// The user at the login and consent pages: logs in as `alice`, then
// grants every scope the client asked for each resource.
async function interact(req, res) {
  const { prompt, params, grantId } = await provider.interactionDetails(req, res);
  let result;
  if (prompt.name === 'login') {
    result = { login: { accountId: 'alice' } };
  } else {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: 'alice', clientId: params.client_id });
    const missing = prompt.details.missingResourceScopes ?? {};
    for (const [resource, scopes] of Object.entries(missing)) {
      grant.addResourceScope(resource, scopes.join(' '));
    }
    if (prompt.details.missingOIDCScope) {
      grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (!req.url.startsWith('/interaction/')) {
    return callback(req, res);
  }
  interact(req, res).catch((error) => {
    res.statusCode = 500;
    res.end(String(error));
  });
});
// Idle connections kept longer than clients keep them (httpx: 5 s, as
// Node's default): a client never sends on one the provider is closing.
server.keepAliveTimeout = 60_000;
server.listen(Number(port), '127.0.0.1', () => {
  console.log('ready');
});
