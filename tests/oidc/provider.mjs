// An OpenID provider for the tests: panva's oidc-provider (pinned in
// package.json / package-lock.json), issuing JWT access tokens (ES256)
// for the client-credentials grant to client `svc` (secret `secret`) for
// any resource indicator asked, with the scopes `read` and `write`.
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
      scope: 'read write',
      id_token_signed_response_alg: 'ES256',
    },
  ],
  jwks: { keys: [key] },
  scopes: ['read', 'write'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
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

http.createServer(provider.callback()).listen(Number(port), '127.0.0.1', () => {
  console.log('ready');
});
